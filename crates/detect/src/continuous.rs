//! Continuous flow: a customer meter that has not had a single zero-flow hour over a
//! window (24 h by default) is probably feeding a leak behind the meter.
//!
//! Works on measured clock hours ([`crate::hours::Hour`]): an hour below
//! `zero_threshold_m3` ends the run of flow; an hour spread from a gap breaks it (we
//! cannot know whether flow stopped inside the gap).

use crate::MeterCtx;
use crate::hours::Hour;
use chrono::TimeDelta;
use leakwatch_core::{AlertKind, Evidence, Finding, Severity};
use serde::{Deserialize, Serialize};

/// Settings of the continuous-flow detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContinuousFlowConfig {
    /// Hours without a zero-flow hour before an alert (default 24).
    pub window_h: u32,
    /// Consumption over an hour below which the hour counts as zero flow, m³
    /// (default 0.001 = one litre, the meter's resolution).
    pub zero_threshold_m3: f64,
}

impl Default for ContinuousFlowConfig {
    fn default() -> Self {
        Self {
            window_h: 24,
            zero_threshold_m3: 0.001,
        }
    }
}

/// Per-meter state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContinuousFlow {
    /// Start of the current run of flow (Unix seconds), if flowing.
    flowing_since: Option<i64>,
    /// Smallest hourly flow during the run, m³/h.
    min_hourly_m3: f32,
}

impl ContinuousFlow {
    /// Forgets the current run (gap, counter regression).
    pub fn reset(&mut self) {
        self.flowing_since = None;
    }

    /// Start of the current run of flow, if gas is flowing without a break.
    pub fn flowing_since(&self) -> Option<leakwatch_core::Timestamp> {
        self.flowing_since.map(crate::ts)
    }

    pub fn on_hour(
        &mut self,
        cfg: &ContinuousFlowConfig,
        ctx: &MeterCtx<'_>,
        h: &Hour,
        out: &mut Vec<Finding>,
    ) {
        if !h.measured() {
            self.reset();
            return;
        }
        if h.m3 < cfg.zero_threshold_m3 {
            self.reset();
            return;
        }
        let start = h.start.timestamp();
        let since = match self.flowing_since {
            Some(s) => {
                self.min_hourly_m3 = self.min_hourly_m3.min(h.m3 as f32);
                s
            }
            None => {
                self.flowing_since = Some(start);
                self.min_hourly_m3 = h.m3 as f32;
                start
            }
        };
        let end = h.start + TimeDelta::hours(1);
        let hours = (end.timestamp() - since) / 3600;
        if hours < i64::from(cfg.window_h) {
            return;
        }
        let min = f64::from(self.min_hourly_m3);
        out.push(Finding {
            kind: AlertKind::ContinuousFlow,
            severity: Severity::Warning,
            meter_id: Some(ctx.id.clone()),
            district_id: Some(ctx.district.clone()),
            detected_at: end,
            evidence: Evidence {
                rule: format!("no zero-flow hour in {} h", cfg.window_h),
                observed: (min * 1e6).round() / 1e6,
                expected: Some(0.0),
                threshold: cfg.zero_threshold_m3,
                unit: "m3/h".into(),
                window_start: crate::ts(since),
                window_end: end,
                explanation: format!(
                    "Gas has flowed for {hours} h without a single hour below {:.0} L; \
                     the lowest hourly flow was {:.0} L/h.",
                    cfg.zero_threshold_m3 * 1000.0,
                    min * 1000.0
                ),
            },
        });
    }
}
