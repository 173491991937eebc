//! Leak detectors as pure state machines on event time.
//!
//! A detector takes a reading and returns zero or more [`Finding`]s; it never does
//! I/O and never reads the clock: its "now" is the time of the readings it has seen,
//! so replaying history at full speed raises the same findings, at the same
//! `detected_at`, as living through it. This crate owns detection rules and their
//! per-meter state; storing alerts and deciding what to do with them belongs to
//! others.
//!
//! Families present: [`continuous::ContinuousFlow`]. The rest of the families of the
//! design (night flow, level shift, burst, integrity, silence, district balance) come
//! with the detection issue.

pub mod continuous;

use leakwatch_core::{DistrictId, Finding, MeterKind, Reading};
use std::collections::HashMap;

pub use continuous::{ContinuousFlow, ContinuousFlowConfig};

/// Settings of every detector, with documented defaults.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    pub continuous_flow: ContinuousFlowConfig,
}

/// What the engine needs to know about a meter.
#[derive(Debug, Clone)]
pub struct MeterInfo {
    pub kind: MeterKind,
    pub district: DistrictId,
}

/// Runs every detector over readings, keeping one state per meter.
#[derive(Debug, Default)]
pub struct Engine {
    cfg: DetectConfig,
    continuous: HashMap<leakwatch_core::MeterId, ContinuousFlow>,
}

impl Engine {
    pub fn new(cfg: DetectConfig) -> Self {
        Self {
            cfg,
            continuous: HashMap::new(),
        }
    }

    /// Feeds one stored reading; findings are pushed to `out`.
    pub fn observe(&mut self, meter: &MeterInfo, reading: &Reading, out: &mut Vec<Finding>) {
        if meter.kind == MeterKind::Customer {
            let state = self
                .continuous
                .entry(reading.meter.clone())
                .or_insert_with(|| ContinuousFlow::new(self.cfg.continuous_flow.clone()));
            if let Some(f) = state.observe(&meter.district, reading) {
                out.push(f);
            }
        }
    }

    /// How many meters have detector state.
    pub fn meters(&self) -> usize {
        self.continuous.len()
    }
}
