//! Inflow night flow: the station's smallest hourly inflow in the local night window,
//! night after night, against the district's own leak-free nights (minimum night flow,
//! as on LeakDB), corrected for temperature.
//!
//! Per night: the minimum of the measured station hours in `[start_h, end_h)` local
//! time (hours spread from a gap are skipped; at least `min_hours` are needed) and the
//! mean gas temperature the station reported for them.
//!
//! Night inflow follows the weather, and not linearly (homes that heat through the
//! night switch on below their own threshold), so the expected minimum is taken
//! locally: among the last `history_nights` accepted nights, the `baseline_nights`
//! nearest in temperature, a straight line fitted through them (its slope never
//! positive: colder nights burn more gas) read at tonight's temperature. A night colder
//! or warmer than any of them by more than a degree cannot be judged and is learned
//! as it is. Without temperatures, the expectation is the lowest of the last
//! `baseline_nights` accepted nights (classic minimum night flow, as on LeakDB).
//!
//! A night whose minimum exceeds the expectation by more than `lambda × expected +
//! max(min_excess_m3h, min_excess_share × mean hourly inflow)` is flagged and not learned; `consecutive` flagged nights raise an
//! alert, repeated every further flagged night. The first `baseline_nights` nights
//! are learned without being judged.
//!
//! **A known leak does not hide the next one.** Once an alert is raised, the
//! detector re-baselines: the run's mean excess over the expectation becomes the
//! *known* level, added to the expectation from then on (nights are learned with the
//! known level taken off, so the leak-free baseline keeps following the weather). A
//! night above the expectation plus the known level by the same margin is flagged
//! again, and `consecutive` such nights raise a `leak_growth` finding, whose evidence
//! says what was known (`known`: since when, how much), then the known level grows by
//! the new step. Nights still above the leak-free threshold repeat the first alert
//! (it stays open while its leak flows); a night back below the expectation plus half
//! the known level means the leak was repaired: the known level is forgotten.
//!
//! This sees leaks that are a sizeable share of the night inflow (with customers
//! heating through cold nights, a leak of 1 % of the daily inflow is only a few % of
//! the night minimum); it works from the station alone, whoever reports.

use super::InflowNightConfig;
use crate::hours::Hour;
use crate::{MeterCtx, local_day, local_hour};
use chrono::TimeDelta;
use leakwatch_core::{AlertKind, Evidence, Finding, Severity};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The night being measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Night {
    day: i64,
    min_m3h: f32,
    temp_sum: f32,
    temps: u8,
    hours: u8,
}

/// Per district: the station's night-flow detector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct InflowNight {
    night: Option<Night>,
    /// Accepted nights, oldest first: minimum inflow (m³/h) and mean gas temperature.
    base: VecDeque<(f32, Option<f32>)>,
    /// The station's mean hourly inflow (EW over about a month), m³/h, for the
    /// absolute margin.
    mean_m3h: f32,
    mean_n: u16,
    /// Flagged nights in a row, and the first of them (local day).
    flagged: u8,
    run_start: Option<i64>,
    /// Sum of the excess over the expectation of the current run's nights, m³/h.
    run_excess: f32,
    /// The known level (m³/h above the leak-free expectation) and the local day its
    /// first alert's run began.
    known_m3h: f32,
    known_since: Option<i64>,
    /// The local day `known_m3h` was last anchored on, and the growth since then
    /// (m³/h per day): a growing leak is followed along its trend, so it is reported
    /// once, not at every step of its growth.
    known_day: i64,
    trend_m3h_day: f32,
    /// Nights in a row below the known level's trend.
    below: u8,
}

impl InflowNight {
    pub fn on_hour(
        &mut self,
        cfg: &InflowNightConfig,
        ctx: &MeterCtx<'_>,
        h: &Hour,
        out: &mut Vec<Finding>,
    ) {
        let off = ctx.local_utc_offset_h;
        let (start, end) = cfg.window();
        let day = local_day(h.start, off);
        let lh = local_hour(h.start, off);
        if h.m3.is_finite() && h.m3 >= 0.0 {
            self.mean_n = self.mean_n.saturating_add(1);
            let a = (1.0 / f64::from(self.mean_n)).max(1.0 / 720.0);
            let m = f64::from(self.mean_m3h);
            self.mean_m3h = (m + a * (h.m3 - m)) as f32;
        }
        // A night is over once an hour past its window arrives.
        if let Some(n) = &self.night
            && (day > n.day || (day == n.day && lh >= end))
            && let Some(n) = self.night.take()
        {
            self.finish(cfg, ctx, n, out);
        }
        if !(start..end).contains(&lh) || !h.measured() || !h.m3.is_finite() {
            return;
        }
        if self.night.as_ref().is_some_and(|n| n.day != day) {
            // An older night that never saw its end (cannot happen with hours in order).
            self.night = None;
        }
        let n = self.night.get_or_insert(Night {
            day,
            min_m3h: f32::INFINITY,
            temp_sum: 0.0,
            temps: 0,
            hours: 0,
        });
        n.min_m3h = n.min_m3h.min(h.m3.max(0.0) as f32);
        n.hours = n.hours.saturating_add(1);
        if let Some(t) = h.temp.filter(|t| t.is_finite()) {
            n.temp_sum += t;
            n.temps = n.temps.saturating_add(1);
        }
        if lh + 1 == end
            && let Some(n) = self.night.take()
        {
            self.finish(cfg, ctx, n, out);
        }
    }

    fn accept(&mut self, cfg: &InflowNightConfig, y: f64, temp: Option<f64>) {
        self.base.push_back((y as f32, temp.map(|t| t as f32)));
        while self.base.len() > cfg.history().max(1) {
            self.base.pop_front();
        }
    }

    /// The expected night minimum at `temp` (m³/h) and the local slope (m³/h per °C),
    /// or `None` if tonight is beyond the temperatures seen.
    fn expected(&self, cfg: &InflowNightConfig, temp: Option<f64>) -> Option<(f64, f64)> {
        let n = cfg.baseline_nights.max(2) as usize;
        let with_t: Vec<(f64, f64)> = self
            .base
            .iter()
            .filter_map(|&(y, t)| t.map(|t| (f64::from(y), f64::from(t))))
            .collect();
        let Some(t) = temp.filter(|_| cfg.temp_adjust && with_t.len() >= n) else {
            // Classic minimum night flow: the lowest of the last nights.
            let min = self
                .base
                .iter()
                .rev()
                .take(n)
                .map(|&(y, _)| f64::from(y))
                .fold(f64::INFINITY, f64::min);
            return Some((min, 0.0));
        };
        let mut near = with_t;
        near.sort_by(|a, b| (a.1 - t).abs().total_cmp(&(b.1 - t).abs()));
        // The nearest nights, widened until their temperatures spread enough (σ of
        // half a degree) for a slope.
        let fit = |k: usize| {
            let pts = &near[..k];
            let kf = k as f64;
            let (my, mt) = pts
                .iter()
                .fold((0.0, 0.0), |(y, x), p| (y + p.0 / kf, x + p.1 / kf));
            let (sxy, sxx) = pts.iter().fold((0.0, 0.0), |(sxy, sxx), p| {
                (sxy + (p.1 - mt) * (p.0 - my), sxx + (p.1 - mt).powi(2))
            });
            (my, mt, sxy, sxx, kf)
        };
        let mut k = n;
        let (mut my, mut mt, mut sxy, mut sxx, mut kf) = fit(k);
        while sxx < 0.25 * kf && k < near.len() {
            k += 1;
            (my, mt, sxy, sxx, kf) = fit(k);
        }
        let (lo, hi) = near[..k]
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p.1), hi.max(p.1))
            });
        if t < lo - 1.0 || t > hi + 1.0 {
            return None;
        }
        let slope = if sxx >= 0.25 * kf {
            (sxy / sxx).min(0.0)
        } else {
            0.0
        };
        // A line through a bend (heating switching on) can dive below anything seen.
        let lowest = near[..k].iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        Some(((my + slope * (t - mt)).max(lowest).max(0.0), slope))
    }

    fn finish(
        &mut self,
        cfg: &InflowNightConfig,
        ctx: &MeterCtx<'_>,
        n: Night,
        out: &mut Vec<Finding>,
    ) {
        if u32::from(n.hours) < cfg.min_hours.max(1) || !n.min_m3h.is_finite() {
            return;
        }
        let y = f64::from(n.min_m3h);
        let temp = (n.temps > 0).then(|| f64::from(n.temp_sum) / f64::from(n.temps));
        if self.base.len() < cfg.baseline_nights.max(1) as usize {
            self.accept(cfg, y, temp);
            return;
        }
        let Some((baseline, slope)) = self.expected(cfg, temp) else {
            // Colder or warmer than anything seen: learned, not judged.
            self.accept(cfg, y, temp);
            return;
        };
        let margin = cfg
            .min_excess_m3h
            .max(cfg.min_excess_share * f64::from(self.mean_m3h));
        let leak_free_threshold = baseline * (1.0 + cfg.lambda) + margin;
        let mut known = self.known_at(n.day);
        if known > 0.0 && y < baseline + known - margin {
            self.below = self.below.saturating_add(1);
        } else {
            self.below = 0;
        }
        if known > 0.0 && u32::from(self.below) >= cfg.consecutive.max(1) {
            self.below = 0;
            if self.trend_m3h_day > 0.0 {
                // It stopped growing: anchor on the level it reached.
                self.known_m3h = (y - baseline).max(0.0) as f32;
                self.known_day = n.day;
                self.trend_m3h_day = 0.0;
            } else if y < baseline + 0.5 * known {
                // Back near the leak-free level: the known leak was repaired.
                self.known_m3h = 0.0;
                self.known_since = None;
                self.trend_m3h_day = 0.0;
            }
            known = self.known_at(n.day);
        }
        // Beyond a known leak, a step must also be a share of it: a growing leak's
        // wobble along its trend is not a new one.
        let threshold = leak_free_threshold + known * (1.0 + cfg.growth_min_share);
        if y <= threshold {
            self.flagged = 0;
            self.run_start = None;
            self.run_excess = 0.0;
            self.accept(cfg, y - known, temp);
            if known > 0.0 && y > leak_free_threshold {
                // The known leak still flows: its alert stays open.
                self.report(cfg, ctx, &n, y, baseline, slope, temp, threshold, None, out);
            }
            return;
        }
        self.flagged = self.flagged.saturating_add(1);
        self.run_excess += (y - baseline - known) as f32;
        self.run_start.get_or_insert(n.day);
        if u32::from(self.flagged) < cfg.consecutive.max(1) {
            if known > 0.0 {
                // The known leak flows on: its alert stays open.
                self.report(cfg, ctx, &n, y, baseline, slope, temp, threshold, None, out);
            }
            return;
        }
        let known_before = self
            .known_since
            .map(|since| (since, known, f64::from(self.trend_m3h_day)));
        self.report(
            cfg,
            ctx,
            &n,
            y,
            baseline,
            slope,
            temp,
            threshold,
            known_before,
            out,
        );
        // Re-baseline on the new level; a step soon after the last one is growth.
        let step = f64::from(self.run_excess / f32::from(self.flagged.max(1))).max(0.0);
        let run_start = self.run_start.take().unwrap_or(n.day);
        let level = known + step;
        if self.known_since.is_some() {
            let days = (n.day - self.known_day).max(1);
            if days <= i64::from(cfg.growth_window_days) {
                self.trend_m3h_day =
                    ((level - f64::from(self.known_m3h)) / days as f64).max(0.0) as f32;
            }
        }
        self.known_since.get_or_insert(run_start);
        self.known_m3h = level as f32;
        self.known_day = n.day;
        self.flagged = 0;
        self.run_excess = 0.0;
    }

    /// The known level on local day `day`, m³/h (along its trend).
    fn known_at(&self, day: i64) -> f64 {
        if self.known_since.is_none() {
            return 0.0;
        }
        f64::from(self.known_m3h)
            + f64::from(self.trend_m3h_day) * (day - self.known_day).max(0) as f64
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        cfg: &InflowNightConfig,
        ctx: &MeterCtx<'_>,
        n: &Night,
        y: f64,
        baseline: f64,
        slope: f64,
        temp: Option<f64>,
        threshold: f64,
        known: Option<(i64, f64, f64)>,
        out: &mut Vec<Finding>,
    ) {
        let run_start = self.run_start.or(self.known_since).unwrap_or(n.day);
        let (start, end) = cfg.window();
        let off = i64::from(ctx.local_utc_offset_h);
        let day_start = |d: i64| crate::ts(d * 86_400 - off * 3600);
        let window_start = day_start(run_start) + TimeDelta::hours(i64::from(start));
        let window_end = day_start(n.day) + TimeDelta::hours(i64::from(end));
        let above = if baseline > 0.0 {
            format!("{:.0} %", (y / baseline - 1.0) * 100.0)
        } else {
            "∞ %".into()
        };
        let at = match temp {
            Some(t) if cfg.temp_adjust => format!(
                " at {t:.1} °C gas temperature (the {} nearest nights in temperature, \
                 slope {:.2} m³/h per °C)",
                cfg.baseline_nights, slope
            ),
            Some(t) => format!(" at {t:.1} °C gas temperature"),
            None => String::new(),
        };
        let day_start_known = |d: i64| crate::ts(d * 86_400 - off * 3600);
        let trend = known.map_or(0.0, |(_, _, tr)| tr);
        let known_evidence = known.map(|(since, m, _)| leakwatch_core::Known {
            kind: AlertKind::InflowNightFlow,
            since: day_start_known(since),
            magnitude: round(m, 4),
        });
        let growth = known_evidence.is_some();
        let expected = baseline + known.map_or(self.known_at(n.day), |(_, m, _)| m);
        out.push(Finding {
            kind: if growth {
                AlertKind::LeakGrowth
            } else {
                AlertKind::InflowNightFlow
            },
            severity: Severity::Warning,
            meter_id: None,
            district_id: Some(ctx.district.clone()),
            detected_at: window_end,
            evidence: Evidence {
                rule: format!(
                    "station night minimum ({start:02}-{end:02} local) above what the {} \
                     unflagged nights nearest in temperature predict by more than \
                     {:.0} % + max({} m3/h, {:.0} % of the mean hourly inflow), {} nights \
                     in a row",
                    cfg.baseline_nights,
                    cfg.lambda * 100.0,
                    cfg.min_excess_m3h,
                    cfg.min_excess_share * 100.0,
                    cfg.consecutive
                ),
                observed: round(y, 4),
                expected: Some(round(expected, 4)),
                threshold: round(threshold, 4),
                unit: "m3/h".into(),
                window_start,
                window_end,
                explanation: match &known_evidence {
                    Some(k) => format!(
                        "Minimum night inflow {y:.2} m³/h for {} nights in a row: beyond the \
                         leak known since {} ({:.2} m³/h above the leak-free {baseline:.2} \
                         m³/h{at}, growing {trend:.3} m³/h a day), threshold {threshold:.2} \
                         m³/h: a new leak, or the known one growing faster.",
                        self.flagged,
                        k.since.format("%Y-%m-%d"),
                        k.magnitude
                    ),
                    None => format!(
                        "Minimum night inflow {y:.2} m³/h, {above} above the {baseline:.2} \
                         m³/h expected{at} (threshold {threshold:.2} m³/h)."
                    ),
                },
                known: known_evidence,
            },
        });
    }
}

pub(crate) fn round(x: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (x * p).round() / p
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use leakwatch_core::{DistrictId, MeterId, MeterKind};

    #[test]
    fn a_new_leak_on_top_of_a_known_one_is_a_leak_growth_with_what_was_known() {
        let cfg = InflowNightConfig::default();
        let id = MeterId::parse("ST-1").unwrap();
        let district = DistrictId::parse("D1").unwrap();
        let ctx = MeterCtx {
            id: &id,
            district: &district,
            kind: MeterKind::Station,
            report_every_h: 1,
            max_flow_m3h: None,
            local_utc_offset_h: 0,
        };
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut d = InflowNight::default();
        let mut out = vec![];
        for h in 0..24 * 60 {
            let day = h / 24;
            // 10 m³/h at night (a little noise), 30 by day; a leak of 3 m³/h from day
            // 15, another of 6 from day 35.
            let base = if (1..5).contains(&(h % 24)) {
                10.0
            } else {
                30.0
            };
            let noise = 0.1 * ((h * 7) % 3) as f64;
            let leak = if day >= 35 {
                9.0
            } else if day >= 15 {
                3.0
            } else {
                0.0
            };
            let hour = Hour::new(t0 + TimeDelta::hours(h), base + noise + leak, 1, None, None);
            d.on_hour(&cfg, &ctx, &hour, &mut out);
        }
        let first = out
            .iter()
            .find(|f| f.kind == AlertKind::InflowNightFlow)
            .expect("the first leak");
        assert!(first.detected_at < t0 + TimeDelta::days(20), "{first:?}");
        let growth: Vec<_> = out
            .iter()
            .filter(|f| f.kind == AlertKind::LeakGrowth)
            .collect();
        assert_eq!(growth.len(), 1, "{growth:?}");
        let g = growth[0];
        assert!(g.detected_at >= t0 + TimeDelta::days(35));
        assert!(g.detected_at < t0 + TimeDelta::days(40), "{g:?}");
        let known = g.evidence.known.as_ref().expect("what was known");
        assert_eq!(known.kind, AlertKind::InflowNightFlow);
        assert!((known.magnitude - 3.0).abs() < 0.5, "{known:?}");
        assert!(known.since < t0 + TimeDelta::days(16));
        // The first leak's alert is repeated every night it flows (it stays open).
        let repeats = out
            .iter()
            .filter(|f| f.kind == AlertKind::InflowNightFlow && f.detected_at > g.detected_at)
            .count();
        assert!(repeats >= 15, "{repeats}");
    }
}
