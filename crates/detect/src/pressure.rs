//! Stub: replaced by the detector implementation.

use crate::MeterCtx;
use leakwatch_core::{Finding, Reading};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PressureConfig {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PressureDrop {}

impl PressureDrop {
    pub fn on_reading(
        &mut self,
        _cfg: &PressureConfig,
        _ctx: &MeterCtx<'_>,
        _r: &Reading,
        _out: &mut Vec<Finding>,
    ) {
    }
}
