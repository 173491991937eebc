//! Bursts: flow beyond what the meter can measure, or a sudden sustained jump far
//! above anything the meter normally draws (a broken pipe or hose behind the meter).
//!
//! - **Beyond capacity** (Critical): an hour whose mean flow (`m3` over the hour; a
//!   gap's average too, which can only understate) exceeds `capacity_factor` × the
//!   meter's rated capacity (`max_flow_m3h` of the registry), or whose reported
//!   `flow_max` does. Repeated every such hour. Skipped when the capacity is unknown.
//! - **Sustained jump** (Warning, Critical from `critical_after_h` hours): at least
//!   `min_hours` consecutive hours above `max(jump_factor × peak, min_jump_m3h)`,
//!   where `peak` is the meter's typical peak: the largest measured hourly flow,
//!   forgotten with a half-life of `peak_half_life_h`. A single big hour (a cooking
//!   session, a cold morning's warm-up) does not last long enough. Judged once
//!   `learn_h` measured hours have been learned; repeated every hour of the run.
//! - **Flagged hours**: hours above the jump threshold are held back from the peak
//!   until their run ends; a run that became a finding is never learned, a shorter
//!   one is (a new, higher normal raises the peak). Hours beyond capacity are never
//!   learned.

use crate::MeterCtx;
use crate::common::{decay_per_step, finding, round6};
use crate::hours::Hour;

use leakwatch_core::{AlertKind, Evidence, Finding, Severity};
use serde::{Deserialize, Serialize};

/// Settings of the burst detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BurstConfig {
    /// An hour above this share of the rated capacity is beyond capacity
    /// (default 1.0).
    pub capacity_factor: f64,
    /// Multiple of the learned peak a jump must exceed (default 3.0).
    pub jump_factor: f64,
    /// A jump must also exceed this flow, m³/h (default 0.5, against tiny peaks of
    /// vacant homes).
    pub min_jump_m3h: f64,
    /// Consecutive hours above the jump threshold before a finding (default 3).
    pub min_hours: u32,
    /// A jump lasting this many hours becomes Critical (default 6).
    pub critical_after_h: u32,
    /// Half-life of the learned peak, hours (default 720, 30 days).
    pub peak_half_life_h: f64,
    /// Measured hours learned before jumps are judged (default 168, a week).
    pub learn_h: u32,
}

impl Default for BurstConfig {
    fn default() -> Self {
        Self {
            capacity_factor: 1.0,
            jump_factor: 3.0,
            min_jump_m3h: 0.5,
            min_hours: 3,
            critical_after_h: 6,
            peak_half_life_h: 720.0,
            learn_h: 168,
        }
    }
}

/// Per-meter state (about 20 bytes serialised).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Burst {
    /// Learned typical peak, m³/h.
    peak_m3h: f32,
    /// Measured hours learned (saturating).
    learned_h: u16,
    /// Current run of hours above the jump threshold.
    run_h: u16,
    /// Start of the run (Unix seconds).
    run_since: Option<i64>,
    /// Highest and lowest flow of the run, m³/h.
    run_max: f32,
    run_min: f32,
    /// Threshold when the run began, m³/h (the peak does not move during a run).
    run_threshold: f32,
}

impl Burst {
    /// The learned typical peak, m³/h.
    pub fn peak_m3h(&self) -> f64 {
        f64::from(self.peak_m3h)
    }

    pub fn on_hour(
        &mut self,
        cfg: &BurstConfig,
        ctx: &MeterCtx<'_>,
        h: &Hour,
        out: &mut Vec<Finding>,
    ) {
        let flow = h.m3.max(0.0);
        let end = h.end;
        let capacity = ctx
            .max_flow_m3h
            .filter(|c| *c > 0.0)
            .map(|c| c * cfg.capacity_factor);
        let flow_max = h.flow_max.map(f64::from).filter(|f| f.is_finite());
        let beyond = capacity.filter(|&c| flow > c || flow_max.is_some_and(|f| f > c));
        if let Some(cap) = beyond {
            let (observed, what) = if flow > cap {
                (flow, "mean flow over the hour")
            } else {
                (flow_max.unwrap_or(flow), "highest flow the meter reported")
            };
            out.push(finding(
                ctx,
                AlertKind::Burst,
                Severity::Critical,
                end,
                Evidence {
                    rule: format!(
                        "hourly flow above {} x the meter's rated capacity",
                        cfg.capacity_factor
                    ),
                    observed: round6(observed),
                    expected: Some(round6(self.peak_m3h())),
                    threshold: round6(cap),
                    unit: "m3/h".into(),
                    window_start: h.start,
                    window_end: end,
                    explanation: format!(
                        "The {what} was {observed:.2} m³/h, beyond the meter's rated \
                         capacity of {cap:.2} m³/h (its usual peak is {:.2} m³/h).",
                        self.peak_m3h
                    ),
                    known: None,
                },
            ));
        }

        let decay = decay_per_step(cfg.peak_half_life_h) as f32;
        let judging = u32::from(self.learned_h) >= cfg.learn_h;
        let threshold = if self.run_h > 0 {
            f64::from(self.run_threshold)
        } else {
            (cfg.jump_factor * self.peak_m3h()).max(cfg.min_jump_m3h)
        };
        if judging && flow > threshold {
            if self.run_h == 0 {
                self.run_since = Some(h.start_s);
                self.run_max = flow as f32;
                self.run_min = flow as f32;
                self.run_threshold = threshold as f32;
            }
            self.run_h = self.run_h.saturating_add(1);
            self.run_max = self.run_max.max(flow as f32);
            self.run_min = self.run_min.min(flow as f32);
            self.peak_m3h *= decay;
            if u32::from(self.run_h) >= cfg.min_hours.max(1) {
                self.report(cfg, ctx, threshold, end, out);
            }
            return;
        }
        // The run (if any) is over: a short one was a new normal, learn its peak.
        if self.run_h > 0 && u32::from(self.run_h) < cfg.min_hours.max(1) {
            self.peak_m3h = self.peak_m3h.max(self.run_max);
        }
        self.run_h = 0;
        self.run_since = None;
        self.peak_m3h *= decay;
        if h.measured() && beyond.is_none() {
            self.peak_m3h = self.peak_m3h.max(flow as f32);
            self.learned_h = self.learned_h.saturating_add(1);
        }
    }

    fn report(
        &self,
        cfg: &BurstConfig,
        ctx: &MeterCtx<'_>,
        threshold: f64,
        end: leakwatch_core::Timestamp,
        out: &mut Vec<Finding>,
    ) {
        let severity = if u32::from(self.run_h) >= cfg.critical_after_h {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let since = self.run_since.map_or(end, crate::ts);
        let peak = f64::from(self.run_threshold) / cfg.jump_factor.max(f64::MIN_POSITIVE);
        out.push(finding(
            ctx,
            AlertKind::Burst,
            severity,
            end,
            Evidence {
                rule: format!(
                    "hourly flow above max({} x learned peak, {} m3/h) for {} h or more",
                    cfg.jump_factor,
                    cfg.min_jump_m3h,
                    cfg.min_hours.max(1)
                ),
                observed: round6(f64::from(self.run_min)),
                expected: Some(round6(peak)),
                threshold: round6(threshold),
                unit: "m3/h".into(),
                window_start: since,
                window_end: end,
                explanation: format!(
                    "Flow has stayed between {:.2} and {:.2} m³/h for {} h, above the \
                     {:.2} m³/h threshold ({} x the usual peak of {:.2} m³/h, at least \
                     {} m³/h).",
                    self.run_min,
                    self.run_max,
                    self.run_h,
                    threshold,
                    cfg.jump_factor,
                    peak,
                    cfg.min_jump_m3h
                ),
                known: None,
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testing::{at, ctx, feed_days, hour, round_trip, size, t};

    /// A home: 300 L/h in the morning and evening, 100 L/h in between, quiet nights.
    fn home(_d: i64, l: i64) -> f64 {
        match l {
            6..=8 | 18..=21 => 300.0,
            9..=17 | 22 => 100.0,
            _ => 0.0,
        }
    }

    fn feed(
        s: &mut Burst,
        cfg: &BurstConfig,
        days: std::ops::Range<i64>,
        litres: impl Fn(i64, i64) -> f64,
    ) -> Vec<Finding> {
        feed_days(
            days,
            litres,
            |_| None,
            |ctx, h, out| s.on_hour(cfg, ctx, h, out),
        )
    }

    #[test]
    fn a_burst_is_found_after_three_hours_and_turns_critical() {
        let cfg = BurstConfig::default();
        let mut s = Burst::default();
        assert!(feed(&mut s, &cfg, 0..14, home).is_empty());
        assert!((s.peak_m3h() - 0.3).abs() < 0.01);
        // A broken hose: 1.5 m³/h more from 10:00 local of day 14.
        let burst = |d: i64, l: i64| {
            home(d, l)
                + if d * 24 + l >= 14 * 24 + 10 {
                    1500.0
                } else {
                    0.0
                }
        };
        let out = feed(&mut s, &cfg, 14..15, burst);
        let f = &out[0];
        assert_eq!(f.kind, AlertKind::Burst);
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.detected_at, t(at(14, 13)));
        assert_eq!(f.evidence.window_start, t(at(14, 10)));
        assert!((f.evidence.observed - 1.6).abs() < 1e-6);
        assert!((f.evidence.threshold - 0.9).abs() < 0.01);
        assert_eq!(out[3].severity, Severity::Critical);
        assert_eq!(out.len(), 14 - 2);
        // The burst's hours did not become the peak.
        assert!(s.peak_m3h() < 0.31);
        round_trip(&s);
    }

    #[test]
    fn a_big_cooking_hour_is_not_a_burst() {
        let cfg = BurstConfig::default();
        let mut s = Burst::default();
        feed(&mut s, &cfg, 0..14, home);
        // A Sunday lunch: 2 m³ in one hour, then 1.2 m³ the next.
        let lunch = |d: i64, l: i64| match (d, l) {
            (14, 12) => 2000.0,
            (14, 13) => 1200.0,
            _ => home(d, l),
        };
        assert!(feed(&mut s, &cfg, 14..20, lunch).is_empty());
        // The short run was learned as a new high (forgotten slowly since).
        assert!(s.peak_m3h() > 1.7, "{}", s.peak_m3h());
    }

    #[test]
    fn flow_beyond_capacity_is_critical_at_once() {
        let cfg = BurstConfig::default();
        let mut s = Burst::default();
        let mut out = vec![];
        // A new meter (nothing learned): capacity needs no history.
        s.on_hour(&cfg, &ctx(), &hour(at(0, 3), 6500.0, None), &mut out);
        let mut h = hour(at(0, 4), 800.0, None);
        h.flow_max = Some(7.2);
        s.on_hour(&cfg, &ctx(), &h, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|f| f.severity == Severity::Critical));
        assert_eq!(out[0].detected_at, t(at(0, 4)));
        assert_eq!(out[0].evidence.threshold, 6.0);
        assert!((out[1].evidence.observed - 7.2).abs() < 1e-5);
        // Neither hour was learned as a peak.
        assert!(s.peak_m3h() < 0.01);
    }

    #[test]
    fn a_new_meter_does_not_judge_jumps() {
        let cfg = BurstConfig::default();
        let mut s = Burst::default();
        // Its first nights are quiet, then it heats: not a burst.
        let out = feed(&mut s, &cfg, 0..3, |_, l| if l < 6 { 0.0 } else { 1200.0 });
        assert!(out.is_empty());
    }

    #[test]
    fn state_is_small() {
        let cfg = BurstConfig::default();
        let mut s = Burst::default();
        feed(&mut s, &cfg, 0..30, home);
        round_trip(&s);
        assert!(size(&s) <= 40, "{}", size(&s));
    }
}
