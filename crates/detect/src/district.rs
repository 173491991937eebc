//! Stub: replaced by the detector implementation.

use crate::MeterCtx;
use crate::hours::Hour;
use leakwatch_core::{DistrictId, Finding, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceConfig {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InflowNightConfig {}

/// Per customer meter: what the balance needs to impute it when it has not reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerProfile {}

/// Per district.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DistrictState {
    #[serde(skip)]
    members: usize,
}

impl DistrictState {
    /// A customer meter joins the district; its member index is the count before.
    pub fn add_member(&mut self) {
        self.members += 1;
    }

    /// After a restore: how many members the registry gave the district.
    pub fn set_members(&mut self, n: usize) {
        self.members = n;
    }

    pub fn on_customer_hour(
        &mut self,
        _cfg: &BalanceConfig,
        _member: u32,
        _profile: &mut CustomerProfile,
        _h: &Hour,
    ) {
    }

    pub fn on_station_hour(
        &mut self,
        _balance: &BalanceConfig,
        _night: &InflowNightConfig,
        _ctx: &MeterCtx<'_>,
        _h: &Hour,
        _out: &mut Vec<Finding>,
    ) {
    }

    /// Closes what the watermark allows; returns whether the state changed.
    pub fn on_watermark(
        &mut self,
        _cfg: &BalanceConfig,
        _id: &DistrictId,
        _watermark: Timestamp,
        _profiles: &[&CustomerProfile],
        _out: &mut Vec<Finding>,
    ) -> bool {
        false
    }
}
