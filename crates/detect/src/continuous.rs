//! Continuous flow: a customer meter that has not had a single zero-flow hour over a
//! window (24 h by default) is probably feeding a leak behind the meter.
//!
//! How an hour is judged from cumulative indexes: the detector keeps the reading that
//! opened the current segment; once a reading is at least one hour later, the segment
//! closes. If the index grew by less than `zero_threshold_m3` over the segment, gas
//! stopped for (at least) an hour: the run of flow ends. Otherwise the run goes on and
//! the segment's hourly flow counts toward the minimum observed. A gap longer than
//! `max_gap_h` between readings breaks the run (we cannot know whether flow stopped
//! inside it), and so does a reading that goes backwards in time or in index: those
//! are for the integrity detectors, not for this one.

use chrono::Duration;
use leakwatch_core::{AlertKind, DistrictId, Evidence, Finding, Reading, Severity, Timestamp};
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
    /// A gap between readings longer than this breaks the run (default 6 h).
    pub max_gap_h: u32,
}

impl Default for ContinuousFlowConfig {
    fn default() -> Self {
        Self {
            window_h: 24,
            zero_threshold_m3: 0.001,
            max_gap_h: 6,
        }
    }
}

/// Per-meter state (a few dozen bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct ContinuousFlow {
    cfg: ContinuousFlowConfig,
    /// Latest reading seen, (t, index).
    last: Option<(Timestamp, f64)>,
    /// Reading that opened the current segment.
    segment_start: Option<(Timestamp, f64)>,
    /// Start of the current run of flow (no zero hour since).
    flowing_since: Option<Timestamp>,
    /// Smallest hourly flow seen during the run, m³/h.
    min_hourly_m3: f64,
}

impl ContinuousFlow {
    pub fn new(cfg: ContinuousFlowConfig) -> Self {
        Self {
            cfg,
            last: None,
            segment_start: None,
            flowing_since: None,
            min_hourly_m3: f64::INFINITY,
        }
    }

    fn reset(&mut self, t: Timestamp, vol: f64) {
        self.segment_start = Some((t, vol));
        self.flowing_since = None;
        self.min_hourly_m3 = f64::INFINITY;
    }

    /// Start of the current run of flow, if gas is flowing without a break.
    pub fn flowing_since(&self) -> Option<Timestamp> {
        self.flowing_since
    }

    /// Feeds one reading of this meter; returns a finding while the condition holds.
    pub fn observe(&mut self, district: &DistrictId, r: &Reading) -> Option<Finding> {
        let Some((last_t, last_vol)) = self.last else {
            self.last = Some((r.t, r.vol));
            self.reset(r.t, r.vol);
            return None;
        };
        if r.t <= last_t {
            // Late or repeated: stored elsewhere, not used to judge flow.
            return None;
        }
        self.last = Some((r.t, r.vol));
        if r.vol < last_vol || r.t - last_t > Duration::hours(i64::from(self.cfg.max_gap_h)) {
            self.reset(r.t, r.vol);
            return None;
        }
        let (seg_t, seg_vol) = self.segment_start.unwrap_or((last_t, last_vol));
        let seg_len = r.t - seg_t;
        if seg_len < Duration::hours(1) {
            return None;
        }
        let used = r.vol - seg_vol;
        self.segment_start = Some((r.t, r.vol));
        if used < self.cfg.zero_threshold_m3 {
            self.flowing_since = None;
            self.min_hourly_m3 = f64::INFINITY;
            return None;
        }
        let hours = seg_len.num_seconds() as f64 / 3600.0;
        self.min_hourly_m3 = self.min_hourly_m3.min(used / hours);
        let since = *self.flowing_since.get_or_insert(seg_t);
        let window = Duration::hours(i64::from(self.cfg.window_h));
        if r.t - since < window {
            return None;
        }
        let hours_flowing = (r.t - since).num_hours();
        Some(Finding {
            kind: AlertKind::ContinuousFlow,
            severity: Severity::Warning,
            meter_id: Some(r.meter.clone()),
            district_id: Some(district.clone()),
            detected_at: r.t,
            evidence: Evidence {
                rule: format!("no zero-flow hour in {} h", self.cfg.window_h),
                observed: round6(self.min_hourly_m3),
                expected: Some(0.0),
                threshold: self.cfg.zero_threshold_m3,
                unit: "m3/h".into(),
                window_start: since,
                window_end: r.t,
                explanation: format!(
                    "Gas has flowed for {hours_flowing} h without a single hour below {:.0} L; \
                     the lowest hourly flow was {:.0} L/h.",
                    self.cfg.zero_threshold_m3 * 1000.0,
                    self.min_hourly_m3 * 1000.0
                ),
            },
        })
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use leakwatch_core::MeterId;

    fn t0() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
    }

    fn reading(h: i64, vol: f64) -> Reading {
        Reading {
            meter: MeterId::parse("M1").unwrap(),
            t: t0() + Duration::hours(h),
            vol,
            temp: None,
            flow_max: None,
            pressure: None,
        }
    }

    /// Feeds hourly consumptions (m³ per hour) and returns the findings' hours.
    fn run(hourly: &[f64]) -> Vec<(i64, Finding)> {
        let d = DistrictId::parse("D1").unwrap();
        let mut det = ContinuousFlow::new(ContinuousFlowConfig::default());
        let mut vol = 100.0;
        let mut out = vec![];
        assert!(det.observe(&d, &reading(0, vol)).is_none());
        for (i, used) in hourly.iter().enumerate() {
            vol += used;
            if let Some(f) = det.observe(&d, &reading(i as i64 + 1, vol)) {
                out.push((i as i64 + 1, f));
            }
        }
        out
    }

    #[test]
    fn a_constant_leak_alarms_after_the_window() {
        let found = run(&[0.03; 30]);
        assert_eq!(found.first().map(|(h, _)| *h), Some(24));
        let f = &found[0].1;
        assert_eq!(f.detected_at, t0() + Duration::hours(24));
        assert_eq!(f.evidence.window_start, t0());
        assert!((f.evidence.observed - 0.03).abs() < 1e-9);
        assert_eq!(f.evidence.threshold, 0.001);
        assert_eq!(f.kind, AlertKind::ContinuousFlow);
        // It keeps reporting while the condition holds (the store merges repeats).
        assert_eq!(found.len(), 7);
    }

    #[test]
    fn a_household_with_quiet_nights_never_alarms() {
        let mut day = vec![0.0; 6];
        day.extend([0.2; 17]);
        day.push(0.0);
        let week: Vec<f64> = day.iter().cycle().take(24 * 7).copied().collect();
        assert!(run(&week).is_empty());
    }

    #[test]
    fn one_quiet_hour_restarts_the_window() {
        let mut hours = vec![0.02; 20];
        hours.push(0.0005); // below one litre: a zero-flow hour
        hours.extend([0.02; 23]);
        assert!(run(&hours).is_empty());
        hours.push(0.02);
        assert_eq!(run(&hours).first().map(|(h, _)| *h), Some(45));
    }

    #[test]
    fn sub_hourly_readings_are_grouped_into_hours() {
        let d = DistrictId::parse("D1").unwrap();
        let mut det = ContinuousFlow::new(ContinuousFlowConfig::default());
        let mut first = None;
        let mut vol = 5.0;
        for q in 0..(26 * 4) {
            let r = Reading {
                t: t0() + Duration::minutes(15 * q),
                vol,
                ..reading(0, 0.0)
            };
            vol += 0.005;
            if let Some(f) = det.observe(&d, &r) {
                first.get_or_insert(f.detected_at);
            }
        }
        assert_eq!(first, Some(t0() + Duration::hours(24)));
    }

    #[test]
    fn gaps_regressions_and_late_readings_break_or_skip() {
        let d = DistrictId::parse("D1").unwrap();
        let mut det = ContinuousFlow::new(ContinuousFlowConfig::default());
        det.observe(&d, &reading(0, 1.0));
        det.observe(&d, &reading(1, 1.1));
        assert_eq!(det.flowing_since(), Some(t0()));
        // A late reading does not change anything.
        det.observe(&d, &reading(0, 1.05));
        assert_eq!(det.flowing_since(), Some(t0()));
        // A gap of 10 h breaks the run.
        det.observe(&d, &reading(11, 2.0));
        assert_eq!(det.flowing_since(), None);
        det.observe(&d, &reading(12, 2.1));
        assert_eq!(det.flowing_since(), Some(t0() + Duration::hours(11)));
        // The index going backwards breaks it too.
        det.observe(&d, &reading(13, 1.0));
        assert_eq!(det.flowing_since(), None);
    }

    #[test]
    fn state_is_small() {
        assert!(std::mem::size_of::<ContinuousFlow>() < 1024);
    }
}
