//! Quiet hours: a big leak found within hours, from the hours in which this meter is
//! reliably quiet.
//!
//! Per local hour of the day, the meter's usual flow in that hour (`level`, litres) and
//! the share of days on which the hour sat at that level (within `max(tolerance_l,
//! tolerance_rel × level)`) are learned, exponentially weighted (`half_life_days`).
//! An hour is *reliably quiet* when that share is at least `min_quiet_share` and its
//! level at most `max_level_l`: the nights of a home that rests at night, the pilot
//! flame's floor; not the nights of a home heating through cold nights (it sits at its
//! level only on mild nights), nor a business's noisy base load.
//!
//! A leak adds the same litres to every hour. Reliably quiet hours in which the flow
//! stands at least `min_excess_l` above their level, all within `max(tolerance_l,
//! tolerance_rel × flow)` of each other (steady, as a leak's flow is, unlike a boiler
//! or a kettle), `need_hours` of them in a row (hours that are not reliably quiet do
//! not break the run; a quiet hour at its level does), raise a `continuous_flow`
//! finding, repeated every further such hour. The bigger the excess, the sooner it
//! clears the hours' noise: a leak of 100 L/h or more in a home that rests at night is
//! found in its first night. Flagged hours are not learned. Judged only after
//! `min_days` learned days (learning honestly).
//!
//! State: 24 × 3 bytes and a few more.

use crate::MeterCtx;
use crate::common::{decay_per_step, finding, round6};
use crate::hours::Hour;
use leakwatch_core::{AlertKind, Evidence, Finding, Severity};
use serde::{Deserialize, Serialize};

/// Settings of the quiet-hours detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuietHoursConfig {
    /// Run it at all (default true).
    pub enabled: bool,
    /// Learned days before judging (default 10).
    pub min_days: u32,
    /// Half-life of what is learned per hour of the day, days (default 10).
    pub half_life_days: f64,
    /// Share of days an hour must sit at its level to be reliably quiet (default 0.9).
    pub min_quiet_share: f64,
    /// Highest level of a reliably quiet hour, litres (default 40: a pilot flame).
    pub max_level_l: f64,
    /// Litres above the level a quiet hour must carry to count (default 60).
    pub min_excess_l: f64,
    /// Steadiness: litres ... (default 2)
    pub tolerance_l: f64,
    /// ... or this share, whichever is more (default 0.02).
    pub tolerance_rel: f64,
    /// Quiet hours in a row, over the level and steady, for a finding (default 5: with
    /// 3 and a 5 % tolerance, homes heating through cold nights raised thousands of
    /// false alarms in simulation).
    pub need_hours: u32,
}

impl Default for QuietHoursConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_days: 10,
            half_life_days: 10.0,
            min_quiet_share: 0.9,
            max_level_l: 40.0,
            min_excess_l: 60.0,
            tolerance_l: 2.0,
            tolerance_rel: 0.02,
            need_hours: 5,
        }
    }
}

/// Per-meter state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuietHours {
    /// Per local hour: learned level, litres.
    level: Vec<u16>,
    /// Per local hour: share of days at the level, 0..=255.
    quiet: Vec<u8>,
    /// Local days seen (the first hour of each).
    days: u16,
    last_day: Option<i32>,
    /// The current run: hours, lowest and highest flow (litres), its first hour
    /// (Unix seconds).
    run: u8,
    run_low: u16,
    run_high: u16,
    run_since: i64,
}

fn litres(m3: f64) -> u16 {
    (m3.max(0.0) * 1000.0).round().min(f64::from(u16::MAX)) as u16
}

impl QuietHours {
    pub fn on_hour(
        &mut self,
        cfg: &QuietHoursConfig,
        ctx: &MeterCtx<'_>,
        h: &Hour,
        out: &mut Vec<Finding>,
    ) {
        if !cfg.enabled || !h.measured() {
            return;
        }
        if self.level.len() != 24 {
            self.level = vec![0; 24];
            self.quiet = vec![0; 24];
        }
        let day = crate::local_day(h.start, ctx.local_utc_offset_h) as i32;
        if self.last_day != Some(day) {
            self.last_day = Some(day);
            self.days = self.days.saturating_add(1);
        }
        let b = crate::local_hour(h.start, ctx.local_utc_offset_h) as usize;
        let flow = litres(h.m3);
        let level = f64::from(self.level[b]);
        let tol = cfg.tolerance_l.max(cfg.tolerance_rel * level);
        let at_level = (f64::from(flow) - level).abs() <= tol;
        let quiet_share = f64::from(self.quiet[b]) / 255.0;
        let reliable = u32::from(self.days) > cfg.min_days
            && quiet_share >= cfg.min_quiet_share
            && level <= cfg.max_level_l;
        let excess = f64::from(flow) - level;
        let mut flagged = false;
        if reliable {
            if excess >= cfg.min_excess_l {
                let (low, high) = if self.run == 0 {
                    (flow, flow)
                } else {
                    (self.run_low.min(flow), self.run_high.max(flow))
                };
                let spread_ok = f64::from(high - low)
                    <= cfg.tolerance_l.max(cfg.tolerance_rel * f64::from(low));
                if self.run == 0 || !spread_ok {
                    self.run = 1;
                    self.run_low = flow;
                    self.run_high = flow;
                    self.run_since = h.start_s;
                } else {
                    self.run = self.run.saturating_add(1);
                    self.run_low = low;
                    self.run_high = high;
                }
                flagged = true;
                if u32::from(self.run) >= cfg.need_hours.max(1) {
                    self.report(cfg, ctx, h, level, out);
                }
            } else {
                self.run = 0;
            }
        }
        if flagged {
            return;
        }
        // Learn the hour.
        let a = 1.0 - decay_per_step(cfg.half_life_days);
        if self.days <= 1 {
            // The first day: each hour starts at its own level.
            self.level[b] = flow;
            self.quiet[b] = 255;
            return;
        } else {
            // At the level: follow it; away from it: barely (one party does not move it).
            let w = if at_level { a } else { a / 4.0 };
            self.level[b] = (level + w * (f64::from(flow) - level)).round().max(0.0) as u16;
        }
        let q = quiet_share + a * (f64::from(u8::from(at_level)) - quiet_share);
        self.quiet[b] = (q * 255.0).round().clamp(0.0, 255.0) as u8;
    }

    fn report(
        &self,
        cfg: &QuietHoursConfig,
        ctx: &MeterCtx<'_>,
        h: &Hour,
        level: f64,
        out: &mut Vec<Finding>,
    ) {
        let low = f64::from(self.run_low);
        out.push(finding(
            ctx,
            AlertKind::ContinuousFlow,
            Severity::Warning,
            h.end,
            Evidence {
                rule: format!(
                    "{} reliably quiet hours in a row at least {} L above their level, steady",
                    cfg.need_hours, cfg.min_excess_l
                ),
                observed: round6(low / 1000.0),
                expected: Some(round6(level / 1000.0)),
                threshold: round6((level + cfg.min_excess_l) / 1000.0),
                unit: "m3/h".into(),
                window_start: crate::ts(self.run_since),
                window_end: h.end,
                explanation: format!(
                    "In {} hours this meter is quiet on at least {:.0} % of days (about {level:.0} \
                     L/h), it carried {low:.0} to {} L/h, steady, as a leak's flow is.",
                    self.run,
                    cfg.min_quiet_share * 100.0,
                    self.run_high
                ),
                known: None,
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone, Utc};
    use leakwatch_core::{DistrictId, MeterId, MeterKind};

    fn run(litres: impl Fn(i64, i64) -> f64, days: i64) -> Vec<Finding> {
        let cfg = QuietHoursConfig::default();
        let id = MeterId::parse("M1").unwrap();
        let district = DistrictId::parse("D1").unwrap();
        let ctx = MeterCtx {
            id: &id,
            district: &district,
            kind: MeterKind::Customer,
            report_every_h: 24,
            max_flow_m3h: None,
            local_utc_offset_h: 0,
        };
        let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let mut q = QuietHours::default();
        let mut out = vec![];
        for h in 0..days * 24 {
            let hour = Hour::new(
                t0 + TimeDelta::hours(h),
                litres(h / 24, h % 24) / 1000.0,
                1,
                None,
                None,
            );
            q.on_hour(&cfg, &ctx, &hour, &mut out);
        }
        out
    }

    /// A home resting 00:00-06:00, using 80-200 L/h by day.
    fn home(d: i64, l: i64) -> f64 {
        if l < 6 {
            0.0
        } else {
            80.0 + ((d * 13 + l * 7) % 11) as f64 * 11.0
        }
    }

    #[test]
    fn a_big_leak_is_found_in_its_first_night() {
        // 100 L/h from day 20, 14:00.
        let start = 20 * 24 + 14;
        let out = run(
            |d, l| home(d, l) + if d * 24 + l >= start { 100.0 } else { 0.0 },
            25,
        );
        let first = out.first().expect("found");
        let hours = (first.detected_at
            - (Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + TimeDelta::hours(start)))
        .num_hours();
        // Its first night: the fifth quiet hour (04:00-05:00 the next day).
        assert_eq!(hours, 15, "{first:?}");
        assert_eq!(first.kind, AlertKind::ContinuousFlow);
        assert!((first.evidence.observed - 0.1).abs() < 1e-9);
    }

    #[test]
    fn heating_through_cold_nights_and_small_leaks_are_not_found() {
        // Nights heated one night in three, 70-130 L/h, never steady.
        let heated = |d: i64, l: i64| {
            if l < 6 {
                if d % 3 == 0 {
                    70.0 + ((d + l * 5) % 7) as f64 * 10.0
                } else {
                    0.0
                }
            } else {
                home(d, l)
            }
        };
        assert!(run(heated, 40).is_empty());
        // A 30 L/h leak: below the excess this detector looks for.
        let small = |d: i64, l: i64| home(d, l) + if d >= 20 { 30.0 } else { 0.0 };
        assert!(run(small, 30).is_empty());
    }
}
