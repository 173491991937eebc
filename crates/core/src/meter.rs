//! The meter registry's record.

use crate::{DistrictId, GeoPoint, MeterId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a meter measures for the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterKind {
    /// A customer's delivery point.
    Customer,
    /// A district's inflow (city gate / reduction station).
    Station,
    /// A pressure measurement point.
    Pressure,
}

impl MeterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MeterKind::Customer => "customer",
            MeterKind::Station => "station",
            MeterKind::Pressure => "pressure",
        }
    }
}

impl FromStr for MeterKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "customer" => Ok(MeterKind::Customer),
            "station" => Ok(MeterKind::Station),
            "pressure" => Ok(MeterKind::Pressure),
            other => Err(format!(
                "unknown meter kind {other:?}; expected customer, station or pressure"
            )),
        }
    }
}

impl fmt::Display for MeterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the meter is in service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterStatus {
    Active,
    Inactive,
}

impl MeterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MeterStatus::Active => "active",
            MeterStatus::Inactive => "inactive",
        }
    }
}

impl FromStr for MeterStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(MeterStatus::Active),
            "inactive" => Ok(MeterStatus::Inactive),
            other => Err(format!("unknown meter status {other:?}")),
        }
    }
}

/// A meter as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meter {
    pub id: MeterId,
    pub district: DistrictId,
    pub kind: MeterKind,
    pub location: GeoPoint,
    /// How often the meter is expected to push, in hours (silence is judged against it).
    pub report_every_h: u32,
    pub status: MeterStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_text() {
        for k in [MeterKind::Customer, MeterKind::Station, MeterKind::Pressure] {
            assert_eq!(k.as_str().parse::<MeterKind>().unwrap(), k);
        }
        assert!("house".parse::<MeterKind>().is_err());
    }
}
