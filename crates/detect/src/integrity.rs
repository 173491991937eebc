//! Stub: replaced by the detector implementation.

use crate::MeterCtx;
use leakwatch_core::{Finding, MeterEvent, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrityConfig {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Integrity {}

impl Integrity {
    pub fn on_event(
        &mut self,
        _cfg: &IntegrityConfig,
        _ctx: &MeterCtx<'_>,
        _e: &MeterEvent,
        _out: &mut Vec<Finding>,
    ) {
    }

    pub fn on_regression(
        &mut self,
        _cfg: &IntegrityConfig,
        _ctx: &MeterCtx<'_>,
        _at: Timestamp,
        _by_m3: f64,
        _previous: Timestamp,
        _out: &mut Vec<Finding>,
    ) {
    }

    pub fn on_reading_time(
        &mut self,
        _cfg: &IntegrityConfig,
        _ctx: &MeterCtx<'_>,
        _t: Timestamp,
        _watermark: Timestamp,
        _out: &mut Vec<Finding>,
    ) {
    }
}
