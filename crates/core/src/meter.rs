//! The meter registry's record.

use crate::{DistrictId, GeoPoint, MeterId, Timestamp};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// What a meter measures for the network.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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
        self.into()
    }
}

impl FromStr for MeterKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::names::parse("meter kind", s)
    }
}

/// Whether the meter is in service.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum MeterStatus {
    Active,
    Inactive,
}

impl MeterStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl FromStr for MeterStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::names::parse("meter status", s)
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
    /// When the meter was installed, if the registry knows.
    #[serde(default)]
    pub installed_at: Option<Timestamp>,
    /// Rated capacity in m³/h (e.g. 6.0 for a G4), if the registry knows.
    #[serde(default)]
    pub max_flow_m3h: Option<f64>,
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

/// A meter as registries exchange it: one CSV row of
/// `meter_id,district_id,kind,lat,lon,report_every_h` (plus the optional columns
/// `status`, `installed_at` and `max_flow_m3h`), or one JSON object of
/// `POST /api/v1/meters` with the same fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterRecord {
    pub meter_id: String,
    pub district_id: String,
    pub kind: String,
    pub lat: f64,
    pub lon: f64,
    /// Hours between pushes; 24 when absent.
    #[serde(default)]
    pub report_every_h: Option<u32>,
    /// `active` when absent.
    #[serde(default)]
    pub status: Option<String>,
    /// Installation date, RFC 3339 (e.g. `2021-03-04T00:00:00Z`); unknown when absent.
    #[serde(default)]
    pub installed_at: Option<String>,
    /// Rated capacity in m³/h, > 0 (e.g. 6.0 for a G4); unknown when absent.
    #[serde(default)]
    pub max_flow_m3h: Option<f64>,
}

impl MeterRecord {
    /// Validates the record into a [`Meter`], saying which field is wrong.
    pub fn to_meter(&self) -> Result<Meter, String> {
        let id = MeterId::parse(self.meter_id.as_str()).map_err(|e| format!("meter_id: {e}"))?;
        let district = DistrictId::parse(self.district_id.as_str())
            .map_err(|e| format!("district_id: {e}"))?;
        let kind = self.kind.parse().map_err(|e| format!("kind: {e}"))?;
        let location = GeoPoint::new(self.lat, self.lon).map_err(|e| format!("lat/lon: {e}"))?;
        let report_every_h = self.report_every_h.unwrap_or(24);
        if !(1..=24 * 31).contains(&report_every_h) {
            return Err(format!(
                "report_every_h: {report_every_h} is outside 1..744 hours"
            ));
        }
        let status = match &self.status {
            None => MeterStatus::Active,
            Some(s) => s.parse().map_err(|e| format!("status: {e}"))?,
        };
        let installed_at = match self.installed_at.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(
                chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|e| format!("installed_at: {s:?} is not an RFC 3339 time: {e}"))?
                    .with_timezone(&chrono::Utc),
            ),
        };
        if let Some(q) = self.max_flow_m3h
            && !(q.is_finite() && q > 0.0)
        {
            return Err(format!("max_flow_m3h: {q} is not a positive number"));
        }
        Ok(Meter {
            id,
            district,
            kind,
            location,
            report_every_h,
            status,
            installed_at,
            max_flow_m3h: self.max_flow_m3h,
        })
    }
}

impl From<&Meter> for MeterRecord {
    fn from(m: &Meter) -> Self {
        MeterRecord {
            meter_id: m.id.to_string(),
            district_id: m.district.to_string(),
            kind: m.kind.as_str().to_owned(),
            lat: m.location.lat,
            lon: m.location.lon,
            report_every_h: Some(m.report_every_h),
            status: Some(m.status.as_str().to_owned()),
            installed_at: m
                .installed_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            max_flow_m3h: m.max_flow_m3h,
        }
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    fn rec() -> MeterRecord {
        MeterRecord {
            meter_id: "PDR1".into(),
            district_id: "D1".into(),
            kind: "customer".into(),
            lat: 43.7,
            lon: 11.2,
            report_every_h: None,
            status: None,
            installed_at: None,
            max_flow_m3h: None,
        }
    }

    #[test]
    fn a_good_record_becomes_a_meter_and_back() {
        let m = rec().to_meter().unwrap();
        assert_eq!(m.report_every_h, 24);
        assert_eq!(m.status, MeterStatus::Active);
        let back = MeterRecord::from(&m);
        assert_eq!(back.to_meter().unwrap(), m);
    }

    #[test]
    fn a_bad_record_names_its_field() {
        let mut r = rec();
        r.kind = "house".into();
        assert!(r.to_meter().unwrap_err().starts_with("kind:"));
        let mut r = rec();
        r.lat = 95.0;
        assert!(r.to_meter().unwrap_err().starts_with("lat/lon:"));
        let mut r = rec();
        r.meter_id = "a b".into();
        assert!(r.to_meter().unwrap_err().starts_with("meter_id:"));
        let mut r = rec();
        r.report_every_h = Some(0);
        assert!(r.to_meter().unwrap_err().starts_with("report_every_h:"));
        let mut r = rec();
        r.installed_at = Some("2021-13-01".into());
        assert!(r.to_meter().unwrap_err().starts_with("installed_at:"));
        for bad in [0.0, -6.0, f64::NAN, f64::INFINITY] {
            let mut r = rec();
            r.max_flow_m3h = Some(bad);
            assert!(
                r.to_meter().unwrap_err().starts_with("max_flow_m3h:"),
                "{bad}"
            );
        }
    }

    #[test]
    fn installation_date_and_capacity_round_trip() {
        let mut r = rec();
        r.installed_at = Some("2021-03-04T05:06:07+01:00".into());
        r.max_flow_m3h = Some(6.0);
        let m = r.to_meter().unwrap();
        assert_eq!(
            m.installed_at,
            Some(chrono::DateTime::from_timestamp(1_614_830_767, 0).unwrap())
        );
        assert_eq!(m.max_flow_m3h, Some(6.0));
        let back = MeterRecord::from(&m);
        assert_eq!(back.installed_at.as_deref(), Some("2021-03-04T04:06:07Z"));
        assert_eq!(back.to_meter().unwrap(), m);
        // An empty CSV cell means unknown.
        let mut r = rec();
        r.installed_at = Some(String::new());
        assert_eq!(r.to_meter().unwrap().installed_at, None);
    }

    #[test]
    fn the_new_columns_are_optional_in_json() {
        let r: MeterRecord = serde_json::from_str(
            r#"{"meter_id":"M1","district_id":"D1","kind":"customer","lat":1.0,"lon":2.0}"#,
        )
        .unwrap();
        assert_eq!(r.installed_at, None);
        assert_eq!(r.max_flow_m3h, None);
        let m: Meter = serde_json::from_value(serde_json::json!({
            "id": "M1", "district": "D1", "kind": "customer",
            "location": {"lat": 1.0, "lon": 2.0}, "report_every_h": 24, "status": "active"
        }))
        .unwrap();
        assert_eq!((m.installed_at, m.max_flow_m3h), (None, None));
    }
}
