//! Stub: replaced by the detector implementation.

use crate::MeterCtx;
use crate::hours::Hour;
use leakwatch_core::Finding;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LevelShiftConfig {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LevelShift {}

impl LevelShift {
    pub fn on_hour(
        &mut self,
        _cfg: &LevelShiftConfig,
        _ctx: &MeterCtx<'_>,
        _h: &Hour,
        _out: &mut Vec<Finding>,
    ) {
    }
}
