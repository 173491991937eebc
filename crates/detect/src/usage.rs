//! Usage changes that are not leaks: a home away (days far below its usual use, then
//! back), a vacant home occupied (a quiet meter that starts using gas with the daily
//! pattern of a household, quiet hours included), a home left vacant for good.
//!
//! Per meter, the usual daily use is learned (exponentially weighted, `half_life_days`)
//! from the days that look normal. Each closed local day is judged:
//! - **absence**: after `min_days` learned days, on a meter whose usual use is at least
//!   `min_usual_m3`, a day below `absent_share` of the usual (and, when
//!   `absent_excess_m3` is set, with at most that above its lowest hour times 24:
//!   nobody cooks), is an absent day. While
//!   absent, the engine masks the meter's hours from the consumption detectors (neither
//!   learned nor judged, as after a closed valve), so the absence is not learned as the
//!   new normal and the return is not a rise. The first day of an absence is seen
//!   before it is known. Back to at least `absent_share` of the usual after
//!   `report_after_days` absent days or more: an informational `usage_change` finding.
//!   Absent for more than `max_absent_days` days: the home was vacated; the low level
//!   becomes the usual, and the detectors re-learn from there.
//! - **move-in**: on a quiet meter (usual below `min_usual_m3`, after `min_days`), a
//!   day using at least `occupied_factor` times the usual and `2 × min_usual_m3`, with
//!   a zero-flow hour (a household's pattern; a leak never stops): a `usage_change`
//!   finding, and the consumption detectors start learning afresh (learning honestly:
//!   no leak-kind alert from them until they have learned, unless the evidence is
//!   strong on its own).
//!
//! State: about 24 bytes.

use crate::MeterCtx;
use crate::common::{decay_per_step, finding, round6};
use crate::hours::Hour;
use leakwatch_core::{AlertKind, Evidence, Finding, Severity};
use serde::{Deserialize, Serialize};

/// Settings of the usage-change recogniser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Recognise usage changes at all (default true).
    pub enabled: bool,
    /// A day below this share of the usual daily use is an absent day (default 0.3).
    pub absent_share: f64,
    /// An absent day uses at most this much above its lowest hour × 24, m³ (default
    /// 0: not checked; 0.15 left absences of homes with frost protection or a
    /// business's reduced load unrecognised in simulation, and their returns raised
    /// night-flow alarms).
    pub absent_excess_m3: f64,
    /// Usual daily use (m³) a meter needs for its absences to be judged, and below
    /// which it is quiet (default 0.5).
    pub min_usual_m3: f64,
    /// Learned days before judging (default 5).
    pub min_days: u32,
    /// Half-life of the usual daily use, days (default 10).
    pub half_life_days: f64,
    /// An absence of at least this many days is reported when it ends (default 3).
    pub report_after_days: u32,
    /// Absent longer than this, the home was vacated: its low use becomes the usual
    /// and the detectors re-learn (default 24).
    pub max_absent_days: u32,
    /// A quiet meter using this many times its usual in a day, with a zero-flow hour,
    /// was moved into (default 4).
    pub occupied_factor: f64,
    /// Below this an hour counts as zero flow, m³ (default 0.001).
    pub zero_threshold_m3: f64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            absent_share: 0.3,
            absent_excess_m3: 0.0,
            min_usual_m3: 0.5,
            min_days: 5,
            half_life_days: 10.0,
            report_after_days: 3,
            max_absent_days: 24,
            occupied_factor: 4.0,
            zero_threshold_m3: 0.001,
        }
    }
}

/// What a closed day changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// The detectors learning the meter's consumption start afresh.
    Relearn,
    /// The first day of an absence was this local day: it was seen before it was
    /// known, so what the detectors learned from it on should be forgotten.
    Absent {
        day: i32,
    },
}

/// Per-meter state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    day: Option<i32>,
    day_m3: f32,
    /// The day's lowest hour, m³.
    day_min: f32,
    day_hours: u8,
    day_zero: bool,
    /// Usual daily use, m³ (weighted sum / weight).
    usual_sum: f32,
    usual_w: f32,
    days: u16,
    /// Absent days in a row (0: present).
    absent: u16,
}

impl Usage {
    /// Whether the meter is absent (its hours are masked from the detectors).
    pub fn absent(&self) -> bool {
        self.absent > 0
    }

    /// Learned days.
    pub fn days(&self) -> u32 {
        u32::from(self.days)
    }

    fn usual(&self) -> Option<f64> {
        (self.usual_w > 0.0).then(|| f64::from(self.usual_sum / self.usual_w))
    }

    fn learn(&mut self, cfg: &UsageConfig, m3: f64) {
        let d = decay_per_step(cfg.half_life_days) as f32;
        self.usual_sum = self.usual_sum * d + m3 as f32;
        self.usual_w = self.usual_w * d + 1.0;
        self.days = self.days.saturating_add(1);
    }

    fn restart(&mut self, cfg: &UsageConfig, m3: f64) {
        *self = Usage::default();
        self.learn(cfg, m3);
    }

    /// Feeds one hour; at the end of a local day, judges it.
    pub fn on_hour(
        &mut self,
        cfg: &UsageConfig,
        ctx: &MeterCtx<'_>,
        h: &Hour,
        out: &mut Vec<Finding>,
    ) -> Change {
        if !cfg.enabled {
            return Change::None;
        }
        let day = crate::local_day(h.start, ctx.local_utc_offset_h) as i32;
        if self.day != Some(day) {
            self.day = Some(day);
            self.day_m3 = 0.0;
            self.day_min = f32::INFINITY;
            self.day_hours = 0;
            self.day_zero = false;
        }
        self.day_m3 += h.m3.max(0.0) as f32;
        self.day_min = self.day_min.min(h.m3.max(0.0) as f32);
        self.day_hours = self.day_hours.saturating_add(1);
        if h.measured() && h.m3 < cfg.zero_threshold_m3 {
            self.day_zero = true;
        }
        if crate::local_hour(h.start, ctx.local_utc_offset_h) != 23 {
            return Change::None;
        }
        self.day = None;
        if self.day_hours < 24 {
            return Change::None;
        }
        let used = f64::from(self.day_m3);
        let Some(usual) = self.usual().filter(|_| self.days() >= cfg.min_days) else {
            self.learn(cfg, used);
            return Change::None;
        };
        let end = h.end;
        let excess = used - 24.0 * f64::from(self.day_min);
        if usual >= cfg.min_usual_m3
            && used < cfg.absent_share * usual
            && (cfg.absent_excess_m3 <= 0.0 || excess <= cfg.absent_excess_m3)
        {
            self.absent = self.absent.saturating_add(1);
            if self.absent == 1 {
                return Change::Absent { day };
            }
            if u32::from(self.absent) > cfg.max_absent_days {
                let days = self.absent;
                self.restart(cfg, used);
                out.push(self.report(
                    ctx,
                    end,
                    used,
                    usual,
                    format!(
                        "Daily use below {:.0} % of the usual {usual:.2} m³ for {days} days: \
                         the home looks vacated; its detectors learn the new level.",
                        cfg.absent_share * 100.0
                    ),
                    "vacated",
                ));
                return Change::Relearn;
            }
            return Change::None;
        }
        if self.absent > 0 {
            let days = self.absent;
            self.absent = 0;
            self.learn(cfg, used);
            if u32::from(days) >= cfg.report_after_days {
                out.push(self.report(
                    ctx,
                    end,
                    used,
                    usual,
                    format!(
                        "Back to {used:.2} m³ a day (usual {usual:.2} m³) after {days} days \
                         below {:.0} % of it: an absence, not a leak; the days away were \
                         not learned.",
                        cfg.absent_share * 100.0
                    ),
                    "return after an absence",
                ));
            }
            return Change::None;
        }
        if usual < cfg.min_usual_m3
            && used >= (cfg.occupied_factor * usual).max(2.0 * cfg.min_usual_m3)
            && self.day_zero
        {
            self.restart(cfg, used);
            out.push(self.report(
                ctx,
                end,
                used,
                usual,
                format!(
                    "A quiet meter (usual {usual:.2} m³ a day) used {used:.2} m³ with quiet \
                     hours, a household's pattern: the home looks occupied; its detectors \
                     learn afresh."
                ),
                "move-in",
            ));
            return Change::Relearn;
        }
        self.learn(cfg, used);
        Change::None
    }

    fn report(
        &self,
        ctx: &MeterCtx<'_>,
        end: leakwatch_core::Timestamp,
        used: f64,
        usual: f64,
        explanation: String,
        what: &str,
    ) -> Finding {
        finding(
            ctx,
            AlertKind::UsageChange,
            Severity::Info,
            end,
            Evidence {
                rule: format!("usage change: {what}"),
                observed: round6(used),
                expected: Some(round6(usual)),
                threshold: round6(usual),
                unit: "m3/day".into(),
                window_start: end - chrono::TimeDelta::days(1),
                window_end: end,
                explanation,
                known: None,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testing::{at, ctx, hour};

    #[test]
    fn the_first_day_of_an_absence_is_named_once_when_it_is_known() {
        let cfg = UsageConfig::default();
        let mut u = Usage::default();
        let mut out = vec![];
        let mut changes = vec![];
        for d in 0..20 {
            // 2.4 m³ a day at home, 0.1 m³ away from day 12.
            let litres = if d < 12 { 100.0 } else { 4.0 };
            for l in 0..24 {
                let c = u.on_hour(&cfg, &ctx(), &hour(at(d, l), litres, Some(8.0)), &mut out);
                if c != Change::None {
                    changes.push((d, c));
                }
            }
        }
        let day = crate::local_day(crate::common::testing::t(at(12, 0)), 1) as i32;
        assert_eq!(changes, vec![(12, Change::Absent { day })]);
        assert!(u.absent());
    }
}
