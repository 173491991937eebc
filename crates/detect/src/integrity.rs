//! Integrity: what the meter says about itself, and readings that cannot be right.
//!
//! Each condition is its own alert kind, found once per event (the alert book merges
//! repeats and resolves the alert `detect.resolve_after_h` (72 h) after the last one;
//! "end" codes are not needed for that and are ignored, as are unknown codes):
//!
//! | event (named / UNI/TS 11291)          | kind               | severity |
//! |---------------------------------------|--------------------|----------|
//! | `reverse_flow` / 42                    | `ReverseFlow`      | Warning  |
//! | `tamper` / 80                          | `Tamper`           | Warning  |
//! | `magnetic_field` / 116                 | `MagneticField`    | Warning  |
//! | `leak_suspected`                       | `MeterLeakAlarm`   | Warning  |
//! | 102 (closed for leak), 113 (closed with leak present) | `ValveClosedLeak` | Critical |
//! | `valve_closed` within `valve_leak_window_h` of a `leak_suspected` (either order) | `ValveClosedLeak` | Critical |
//! | `battery_low` / 74                     | `BatteryLow`       | Info     |
//! | `battery_critical` / 94                | `BatteryCritical`  | Critical |
//! | `clock_error`                          | `ClockError`       | Warning  |
//!
//! A named `valve_closed` alone says nothing about why (a remote close, arrears, a
//! lost link: 107 is "closed for lack of communication"), so it is a leak only next
//! to the meter's own leak alarm. Ignored: end codes 43, 81, 117, 75, 95, other codes.
//!
//! Readings: a counter regression (the index went backwards by at least
//! `min_regression_m3`) is `CounterRegression` (Warning); a reading stamped more than
//! `clock_tolerance_h` ahead of the watermark is `ClockError` (Warning). Readings
//! behind the watermark are late pushes, not clock errors.

use crate::MeterCtx;
use crate::common::{finding, round6};
use leakwatch_core::{AlertKind, EventCode, Evidence, Finding, MeterEvent, Severity, Timestamp};
use serde::{Deserialize, Serialize};

/// Settings of the integrity detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrityConfig {
    /// A reading stamped this many hours ahead of the watermark is a clock error
    /// (default 6).
    pub clock_tolerance_h: u32,
    /// Smallest backwards step of the index reported as a regression, m³ (default
    /// 0.0005: half the meters' 1 L resolution; less is floating-point noise).
    pub min_regression_m3: f64,
    /// A named `valve_closed` is a valve closed for a leak when it is this close in
    /// time to a `leak_suspected`, hours (default 24).
    pub valve_leak_window_h: u32,
    /// After a `magnetic_field` event (116), the meter's hours are not learned by
    /// continuous flow, night flow and level shift for this many hours, and what they
    /// learned since the start of that local day is forgotten: the register may have
    /// stopped counting, and nights of zero flow in a cold spell would teach them that
    /// the home stops when it is cold (default 72; 0 disables; an end code 117 ends it
    /// sooner).
    pub magnetic_mask_h: u32,
    /// The same after a closed valve (`valve_closed`, 102, 107, 113), until
    /// `valve_opened` or at most this many hours (default 168; 0 disables).
    pub valve_mask_h: u32,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        Self {
            clock_tolerance_h: 6,
            min_regression_m3: 0.0005,
            valve_leak_window_h: 24,
            magnetic_mask_h: 72,
            valve_mask_h: 168,
        }
    }
}

/// Per-meter state: when the meter last raised its leak alarm and last closed its
/// valve (Unix seconds), to pair them, until when its hours are not learned, and the
/// time of the latest event seen (a replay after a restart skips what was seen).
/// About 30 bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Integrity {
    last_event: Option<i64>,
    last_leak_suspected: Option<i64>,
    last_valve_closed: Option<i64>,
    /// Hours starting before this (Unix seconds) are masked from learning.
    mask_until: Option<i64>,
    /// The mask is a closed valve's (a `valve_opened` ends it).
    mask_valve: bool,
}

/// What an event does to the learning mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MaskChange {
    Magnetic,
    Valve,
    MagneticEnd,
    ValveOpened,
}

fn mask_change(code: &EventCode) -> Option<MaskChange> {
    let numeric = match code {
        EventCode::Numeric(n) => Some(*n),
        EventCode::Named(s) => s.trim().parse::<u32>().ok(),
    };
    if let Some(n) = numeric {
        return match n {
            116 => Some(MaskChange::Magnetic),
            117 => Some(MaskChange::MagneticEnd),
            102 | 107 | 113 => Some(MaskChange::Valve),
            _ => None,
        };
    }
    let EventCode::Named(name) = code else {
        return None;
    };
    match name.trim().to_ascii_lowercase().as_str() {
        "magnetic_field" => Some(MaskChange::Magnetic),
        "valve_closed" => Some(MaskChange::Valve),
        "valve_opened" => Some(MaskChange::ValveOpened),
        _ => None,
    }
}

/// What an event code means here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning {
    Kind(AlertKind, Severity),
    /// A named `valve_closed`: a leak only next to a `leak_suspected`.
    ValveClosed,
    Ignored,
}

fn meaning(code: &EventCode) -> Meaning {
    use AlertKind as K;
    use Severity as S;
    let numeric = match code {
        EventCode::Numeric(n) => Some(*n),
        EventCode::Named(s) => s.trim().parse::<u32>().ok(),
    };
    if let Some(n) = numeric {
        return match n {
            42 => Meaning::Kind(K::ReverseFlow, S::Warning),
            80 => Meaning::Kind(K::Tamper, S::Warning),
            116 => Meaning::Kind(K::MagneticField, S::Warning),
            102 | 113 => Meaning::Kind(K::ValveClosedLeak, S::Critical),
            74 => Meaning::Kind(K::BatteryLow, S::Info),
            94 => Meaning::Kind(K::BatteryCritical, S::Critical),
            _ => Meaning::Ignored,
        };
    }
    let EventCode::Named(name) = code else {
        return Meaning::Ignored;
    };
    match name.trim().to_ascii_lowercase().as_str() {
        "reverse_flow" => Meaning::Kind(K::ReverseFlow, S::Warning),
        "tamper" => Meaning::Kind(K::Tamper, S::Warning),
        "magnetic_field" => Meaning::Kind(K::MagneticField, S::Warning),
        "leak_suspected" => Meaning::Kind(K::MeterLeakAlarm, S::Warning),
        "valve_closed" => Meaning::ValveClosed,
        "battery_low" => Meaning::Kind(K::BatteryLow, S::Info),
        "battery_critical" => Meaning::Kind(K::BatteryCritical, S::Critical),
        "clock_error" => Meaning::Kind(K::ClockError, S::Warning),
        _ => Meaning::Ignored,
    }
}

fn event_finding(
    ctx: &MeterCtx<'_>,
    kind: AlertKind,
    severity: Severity,
    e: &MeterEvent,
    why: &str,
) -> Finding {
    let code = e.code.to_text();
    finding(
        ctx,
        kind,
        severity,
        e.t,
        Evidence {
            rule: format!("meter event {kind}"),
            observed: 1.0,
            expected: Some(0.0),
            threshold: 1.0,
            unit: "events".into(),
            window_start: e.t,
            window_end: e.t,
            explanation: format!("The meter reported event {code:?} at {}{why}.", e.t),
            known: None,
        },
    )
}

impl Integrity {
    /// Updates the learning mask with an event; returns the event's time (Unix
    /// seconds) when it starts a masked span, for the detectors to forget what they
    /// learned since.
    pub fn on_mask_event(&mut self, cfg: &IntegrityConfig, e: &MeterEvent) -> Option<i64> {
        let t = e.t.timestamp();
        let (hours, valve) = match mask_change(&e.code)? {
            MaskChange::Magnetic => (cfg.magnetic_mask_h, false),
            MaskChange::Valve => (cfg.valve_mask_h, true),
            end @ (MaskChange::MagneticEnd | MaskChange::ValveOpened) => {
                let valve_end = end == MaskChange::ValveOpened;
                if self.mask_valve == valve_end && self.mask_until.is_some_and(|u| u > t) {
                    self.mask_until = Some(t);
                }
                return None;
            }
        };
        if hours == 0 {
            return None;
        }
        let until = t + i64::from(hours) * 3600;
        if self.mask_until.is_none_or(|u| u < until) {
            self.mask_until = Some(until);
            self.mask_valve = valve;
        }
        Some(t)
    }

    /// Whether the hour starting at `start_s` is masked from learning.
    pub fn masks(&self, start_s: i64) -> bool {
        self.mask_until.is_some_and(|u| start_s < u)
    }

    pub fn on_event(
        &mut self,
        cfg: &IntegrityConfig,
        ctx: &MeterCtx<'_>,
        e: &MeterEvent,
        out: &mut Vec<Finding>,
    ) {
        let t = e.t.timestamp();
        self.last_event = Some(self.last_event.map_or(t, |o| o.max(t)));
        let window = i64::from(cfg.valve_leak_window_h) * 3600;
        let near = |other: Option<i64>| other.is_some_and(|o| (t - o).abs() <= window);
        let valve_leak =
            |why: &str| event_finding(ctx, AlertKind::ValveClosedLeak, Severity::Critical, e, why);
        match meaning(&e.code) {
            Meaning::Ignored => {}
            Meaning::ValveClosed => {
                if near(self.last_leak_suspected) {
                    out.push(valve_leak(&format!(
                        ", within {} h of its own leak alarm",
                        cfg.valve_leak_window_h
                    )));
                }
                self.last_valve_closed = Some(self.last_valve_closed.map_or(t, |o| o.max(t)));
            }
            Meaning::Kind(kind, severity) => {
                out.push(event_finding(ctx, kind, severity, e, ""));
                if kind == AlertKind::MeterLeakAlarm {
                    if near(self.last_valve_closed) {
                        out.push(valve_leak(&format!(
                            ": the valve closed within {} h of this leak alarm",
                            cfg.valve_leak_window_h
                        )));
                    }
                    self.last_leak_suspected =
                        Some(self.last_leak_suspected.map_or(t, |o| o.max(t)));
                }
            }
        }
    }

    /// Whether an event at `t` is after every event this meter has shown (a replay
    /// feeds only those).
    pub fn is_new_event(&self, t: Timestamp) -> bool {
        self.last_event.is_none_or(|last| t.timestamp() > last)
    }

    pub fn on_regression(
        &mut self,
        cfg: &IntegrityConfig,
        ctx: &MeterCtx<'_>,
        at: Timestamp,
        by_m3: f64,
        previous: Timestamp,
        out: &mut Vec<Finding>,
    ) {
        if by_m3 < cfg.min_regression_m3 {
            return;
        }
        out.push(finding(
            ctx,
            AlertKind::CounterRegression,
            Severity::Warning,
            at,
            Evidence {
                rule: "volume index below the previous reading's".into(),
                observed: round6(-by_m3),
                expected: Some(0.0),
                threshold: 0.0,
                unit: "m3".into(),
                window_start: previous,
                window_end: at,
                explanation: format!(
                    "The index went back by {:.3} m³ between the readings of {previous} \
                     and {at}: a replaced or reset meter, or a wrong reading.",
                    by_m3
                ),
                known: None,
            },
        ));
    }

    pub fn on_reading_time(
        &mut self,
        cfg: &IntegrityConfig,
        ctx: &MeterCtx<'_>,
        t: Timestamp,
        watermark: Timestamp,
        out: &mut Vec<Finding>,
    ) {
        let ahead_s = (t - watermark).num_seconds();
        let tolerance_s = i64::from(cfg.clock_tolerance_h) * 3600;
        if ahead_s <= tolerance_s {
            return;
        }
        let ahead_h = ahead_s as f64 / 3600.0;
        out.push(finding(
            ctx,
            AlertKind::ClockError,
            Severity::Warning,
            watermark,
            Evidence {
                rule: format!(
                    "reading stamped more than {} h ahead of the watermark",
                    cfg.clock_tolerance_h
                ),
                observed: (ahead_h * 100.0).round() / 100.0,
                expected: Some(0.0),
                threshold: f64::from(cfg.clock_tolerance_h),
                unit: "h".into(),
                window_start: watermark,
                window_end: t,
                explanation: format!(
                    "A reading is stamped {t}, {ahead_h:.1} h ahead of the other meters' \
                     time ({watermark}): the meter's clock is probably wrong."
                ),
                known: None,
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testing::{ID, ctx, round_trip, size, t};

    fn event(h: i64, code: EventCode) -> MeterEvent {
        MeterEvent {
            meter: ID.clone(),
            t: t(h),
            code,
        }
    }

    fn named(s: &str) -> EventCode {
        EventCode::Named(s.into())
    }

    fn kinds(s: &mut Integrity, events: &[MeterEvent]) -> Vec<(AlertKind, Severity)> {
        let cfg = IntegrityConfig::default();
        let mut out = vec![];
        for e in events {
            s.on_event(&cfg, &ctx(), e, &mut out);
        }
        out.iter().map(|f| (f.kind, f.severity)).collect()
    }

    #[test]
    fn events_map_to_their_kinds() {
        use AlertKind as K;
        use Severity as S;
        let mut s = Integrity::default();
        let cases = [
            (named("reverse_flow"), K::ReverseFlow, S::Warning),
            (EventCode::Numeric(42), K::ReverseFlow, S::Warning),
            (named("tamper"), K::Tamper, S::Warning),
            (EventCode::Numeric(80), K::Tamper, S::Warning),
            (named("magnetic_field"), K::MagneticField, S::Warning),
            (EventCode::Numeric(116), K::MagneticField, S::Warning),
            (EventCode::Numeric(102), K::ValveClosedLeak, S::Critical),
            (EventCode::Numeric(113), K::ValveClosedLeak, S::Critical),
            (named("battery_low"), K::BatteryLow, S::Info),
            (EventCode::Numeric(74), K::BatteryLow, S::Info),
            (named("battery_critical"), K::BatteryCritical, S::Critical),
            (EventCode::Numeric(94), K::BatteryCritical, S::Critical),
            (named("clock_error"), K::ClockError, S::Warning),
        ];
        for (code, kind, severity) in cases {
            let got = kinds(&mut s, &[event(5, code.clone())]);
            assert_eq!(got, vec![(kind, severity)], "{code:?}");
        }
        // End codes, unknown codes and other named events are ignored.
        for code in [43, 81, 117, 75, 95, 107, 84, 200].map(EventCode::Numeric) {
            assert!(kinds(&mut s, &[event(5, code)]).is_empty());
        }
        for name in [
            "valve_opened",
            "comm_fault",
            "temperature_fault",
            "whatever",
        ] {
            assert!(kinds(&mut s, &[event(5, named(name))]).is_empty());
        }
        // A numeric code sent as text counts as the number.
        assert_eq!(
            kinds(&mut s, &[event(5, named("80"))]),
            vec![(K::Tamper, S::Warning)]
        );
    }

    #[test]
    fn a_finding_carries_the_event_time_and_evidence() {
        let cfg = IntegrityConfig::default();
        let mut s = Integrity::default();
        let mut out = vec![];
        s.on_event(&cfg, &ctx(), &event(7, named("tamper")), &mut out);
        let f = &out[0];
        assert_eq!(f.detected_at, t(7));
        assert_eq!(f.meter_id.as_ref(), Some(&*ID));
        assert_eq!(f.evidence.rule, "meter event tamper");
        assert_eq!(f.evidence.window_start, t(7));
        assert!(f.evidence.explanation.contains("\"tamper\""));
    }

    #[test]
    fn a_valve_closed_is_a_leak_only_next_to_the_meters_leak_alarm() {
        use AlertKind as K;
        let mut s = Integrity::default();
        // Alone: a remote close, not a leak.
        assert!(kinds(&mut s, &[event(0, named("valve_closed"))]).is_empty());
        // After its leak alarm, within a day.
        let mut s = Integrity::default();
        let got = kinds(
            &mut s,
            &[
                event(10, named("leak_suspected")),
                event(11, named("valve_closed")),
            ],
        );
        assert_eq!(
            got.iter().map(|k| k.0).collect::<Vec<_>>(),
            vec![K::MeterLeakAlarm, K::ValveClosedLeak]
        );
        // The other way round (events of one push need not come in order).
        let mut s = Integrity::default();
        let got = kinds(
            &mut s,
            &[
                event(11, named("valve_closed")),
                event(10, named("leak_suspected")),
            ],
        );
        assert_eq!(
            got.iter().map(|k| k.0).collect::<Vec<_>>(),
            vec![K::MeterLeakAlarm, K::ValveClosedLeak]
        );
        // Two days later: not related.
        let got = kinds(&mut s, &[event(60, named("valve_closed"))]);
        assert!(got.is_empty());
        round_trip(&s);
        assert!(size(&s) <= 20, "{}", size(&s));
    }

    #[test]
    fn counter_regressions_are_reported() {
        let cfg = IntegrityConfig::default();
        let mut s = Integrity::default();
        let mut out = vec![];
        s.on_regression(&cfg, &ctx(), t(5), 1.234, t(4), &mut out);
        // Floating-point noise is not a regression.
        s.on_regression(&cfg, &ctx(), t(6), 1e-9, t(5), &mut out);
        assert_eq!(out.len(), 1);
        let f = &out[0];
        assert_eq!(f.kind, AlertKind::CounterRegression);
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.detected_at, t(5));
        assert_eq!(f.evidence.window_start, t(4));
        assert_eq!(f.evidence.observed, -1.234);
    }

    #[test]
    fn readings_far_ahead_are_clock_errors_and_late_ones_are_not() {
        let cfg = IntegrityConfig::default();
        let mut s = Integrity::default();
        let mut out = vec![];
        let wm = t(100);
        s.on_reading_time(&cfg, &ctx(), t(106), wm, &mut out);
        s.on_reading_time(&cfg, &ctx(), t(10), wm, &mut out);
        assert!(out.is_empty());
        s.on_reading_time(&cfg, &ctx(), t(130), wm, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, AlertKind::ClockError);
        assert_eq!(out[0].detected_at, wm);
        assert_eq!(out[0].evidence.observed, 30.0);
        assert_eq!(out[0].evidence.window_end, t(130));
    }

    #[test]
    fn a_magnetic_field_or_a_closed_valve_masks_learning() {
        let cfg = IntegrityConfig::default();
        let mut s = Integrity::default();
        assert!(!s.masks(t(0).timestamp()));
        let since = s.on_mask_event(&cfg, &event(10, EventCode::Numeric(116)));
        assert_eq!(since, Some(t(10).timestamp()));
        assert!(s.masks(t(81).timestamp()));
        assert!(!s.masks(t(82).timestamp()));
        // The end code ends it sooner; a valve's opening does not end a magnetic mask.
        assert_eq!(
            s.on_mask_event(&cfg, &event(20, EventCode::Named("valve_opened".into()))),
            None
        );
        assert!(s.masks(t(30).timestamp()));
        s.on_mask_event(&cfg, &event(30, EventCode::Numeric(117)));
        assert!(!s.masks(t(30).timestamp()));
        // A closed valve masks until it opens.
        s.on_mask_event(&cfg, &event(40, EventCode::Named("valve_closed".into())));
        assert!(s.masks(t(100).timestamp()));
        s.on_mask_event(&cfg, &event(100, EventCode::Named("valve_opened".into())));
        assert!(!s.masks(t(100).timestamp()) && s.masks(t(99).timestamp()));
        // Other events do nothing.
        assert_eq!(
            s.on_mask_event(&cfg, &event(120, EventCode::Named("tamper".into()))),
            None
        );
        round_trip(&s);
    }
}
