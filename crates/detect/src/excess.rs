//! Night excess: a big leak found in its first night wherever it is, from each meter's
//! night hours normalised for temperature.
//!
//! In the night window (`start_h`..`end_h` local, default 00:00-05:00) nobody cooks:
//! what a meter draws is its floor (nothing, a pilot flame, a business's base load)
//! plus heating when it is cold. Heating follows the gas temperature in a straight
//! line (degrees below `base_temp_c`) once it is on; a leak adds the same litres to
//! every hour, whatever the temperature. Per meter, the detector learns
//!
//! - the **floor**: the lowest night hour, followed down fast (half-way each night),
//!   up with a half-life of `half_life_nights` when the night rested near it, and
//!   eight times slower after a night that heated throughout; and how far the hours
//!   at the floor stray from it;
//! - the **heating line**: a least-squares line of the *heating hours* (more than
//!   `heating_above_l` / `heating_above_rel` above the floor) against the degree
//!   deficit, with the same forgetting, and the hours' mean absolute relative residual
//!   (noise grows with the load: a boiler's ±20 %, a bakery's ±30 %);
//! - the coldest hour learned.
//!
//! An hour's expected flow is the floor, or the line where it lies above the floor
//! (once `min_heating_hours` heating hours are learned); its σ is the larger of the
//! floor's spread, the relative residual × the expected flow, and `min_sigma_l`. An
//! hour colder than the coldest learned by more than `max_extrapolation_c` is not
//! judged (a straight line is only trusted a little beyond what it has seen).
//!
//! **Judgement**, every hour of the night once `min_nights` nights are learned: the
//! night's judged hours so far, but the one furthest above its expectation (one odd
//! hour cannot make a finding alone), are over when, with at least `need_hours`
//! judged, their mean is at least `min_excess_l` L/h and at least `z` times its σ (the hours of
//! a night share the night's error: their correlation `hour_corr` widens it), and
//! the hours judged against the floor, `steady_hours` of them at least, are steady
//! (within `steady_l` / `steady_rel` of each other), as a leak is and heating that
//! switched on is not. A meter with a heating line is not judged where the line is
//! under half its mean heating hour: there heating turns on or off from one night to
//! the next, and a σ from the line says nothing about it (its mild nights are
//! continuous flow's and quiet hours' business). The
//! bigger the excess, the fewer hours it takes. A finding is a `continuous_flow`
//! (warning) repeated every further such hour. A night with a finding, or whose judged
//! hours ran `learn_below_l` (and 2 σ) above their expectation on average, is not
//! learned: a leak growing from a litre or two an hour is not taken, night by night,
//! for the meter's heating (after `max_hold_nights` such nights in a row it is, so a
//! lasting change of habit fades). Hours masked by the engine (absences, a magnetic field, a closed valve)
//! are neither judged nor learned.
//!
//! Blind spots: leaks under `min_excess_l` (the other detectors' business); a meter's
//! first `min_nights` nights (a leak present from the start is its floor); hours
//! colder than it has learned by more than the margin (the season's first cold
//! snap); a meter whose nights are as noisy as the leak is large (a big business's
//! base load: σ of the mean grows with it).
//!
//! Off by default (`enabled`): on the standard scenario it raised 4-88 false alarms
//! per seed on homes heating at night (see docs/detection.md).
//!
//! State: about 70 bytes.

use crate::MeterCtx;
use crate::common::{decay_per_step, finding, round6};
use crate::hours::Hour;
use leakwatch_core::{AlertKind, Evidence, Finding, Severity};
use serde::{Deserialize, Serialize};

/// Settings of the night-excess detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NightExcessConfig {
    /// Run it at all (default false: on the standard scenario it found big leaks
    /// sooner but raised 4-88 false alarms per seed on homes heating at night, whose
    /// cause is not understood yet; see docs/detection.md).
    pub enabled: bool,
    /// First local hour of the night window (default 0).
    pub start_h: u32,
    /// Local hour the window ends, exclusive, after `start_h` (default 5).
    pub end_h: u32,
    /// Degree deficit reference, °C of gas temperature (default 15.5; only moves the
    /// line's intercept).
    pub base_temp_c: f64,
    /// Half-life of what is learned, nights (default 14).
    pub half_life_nights: f64,
    /// Learned nights before the first judgement (default 7).
    pub min_nights: u32,
    /// Heating hours (exponentially weighted) before the heating line is used
    /// (default 8).
    pub min_heating_hours: f64,
    /// An hour this many litres above the floor ... (default 5)
    pub heating_above_l: f64,
    /// ... or this share of it, whichever is more, is a heating hour (default 0.1).
    pub heating_above_rel: f64,
    /// Hours colder than the coldest learned one by more than this, °C, are not
    /// judged (default 1.0).
    pub max_extrapolation_c: f64,
    /// Smallest mean excess that counts, L/h (default 60).
    pub min_excess_l: f64,
    /// The mean excess must be at least this many of its σ (default 5).
    pub z: f64,
    /// Correlation assumed between the residuals of one night's hours (default 0.5).
    pub hour_corr: f64,
    /// Floor of an hour's σ, L/h (default 3).
    pub min_sigma_l: f64,
    /// Judged hours of a night before a finding (default 3).
    pub need_hours: u32,
    /// Nights with a finding (or above `learn_below_l`) in a row after which nights
    /// are learned again (default 14).
    pub max_hold_nights: u32,
    /// A night whose judged hours run above their expectation by this much on
    /// average, L/h (and 2 σ), is not learned (default 15).
    pub learn_below_l: f64,
    /// Hours judged against the floor must lie within this many litres of each
    /// other ... (default 4)
    pub steady_l: f64,
    /// ... or this share of the lowest, whichever is more (default 0.05).
    pub steady_rel: f64,
    /// Hours judged against the floor needed for a finding on them (default 4: three
    /// hours of heating at ±20 % lie within 8 % of each other on one night in 15).
    pub steady_hours: u32,
}

impl Default for NightExcessConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            start_h: 0,
            end_h: 5,
            base_temp_c: 15.5,
            half_life_nights: 14.0,
            min_nights: 7,
            min_heating_hours: 8.0,
            heating_above_l: 5.0,
            heating_above_rel: 0.1,
            max_extrapolation_c: 1.0,
            min_excess_l: 60.0,
            z: 5.0,
            hour_corr: 0.5,
            min_sigma_l: 3.0,
            need_hours: 3,
            max_hold_nights: 14,
            learn_below_l: 15.0,
            steady_l: 4.0,
            steady_rel: 0.05,
            steady_hours: 4,
        }
    }
}

impl NightExcessConfig {
    fn window_len(&self) -> u32 {
        self.end_h.min(24).saturating_sub(self.start_h)
    }
}

/// Most night hours buffered until the night is learned.
const MAX_HOURS: usize = 12;

/// Per-meter state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NightExcess {
    /// Learned nights.
    nights: u16,
    /// Floor (L/h) and the mean absolute deviation of the floor hours from it.
    floor: f32,
    floor_dev: f32,
    /// Heating line: weighted sums of x (degree deficit), y (L/h), xx, xy.
    w: f32,
    sx: f32,
    sy: f32,
    sxx: f32,
    sxy: f32,
    /// Mean absolute relative residual of heating hours (and its weight).
    rel: f32,
    rel_w: f32,
    /// Largest degree deficit learned (the coldest hour).
    x_max: Option<f32>,
    /// The night being watched: its window start (Unix seconds).
    night: Option<i64>,
    /// Its measured hours: litres and gas temperature (half degrees).
    hours_l: Vec<u16>,
    hours_t: Vec<i8>,
    /// Its judged hours: sum of capped residuals, of σ, of σ², and how many.
    sum_r: f32,
    sum_s: f32,
    n: u8,
    /// The largest residual of the night (left out of the mean).
    max_r: f32,
    /// The night's hours judged against the floor: how many, lowest and highest, L.
    floor_n: u8,
    floor_lo: u16,
    floor_hi: u16,
    /// The night has a finding.
    flagged: bool,
    /// Nights with a finding in a row.
    held: u8,
}

/// What an hour is expected to draw: L/h and σ, or `None` when not judged.
struct Expect {
    litres: f64,
    sigma: f64,
    /// From the floor (not the heating line).
    floor: bool,
}

impl NightExcess {
    /// Learned nights.
    pub fn nights(&self) -> u32 {
        u32::from(self.nights)
    }

    fn line(&self) -> Option<(f64, f64)> {
        if self.w <= 0.0 {
            return None;
        }
        let w = f64::from(self.w);
        let mx = f64::from(self.sx) / w;
        let my = f64::from(self.sy) / w;
        let vx = (f64::from(self.sxx) / w - mx * mx).max(0.0);
        let cxy = f64::from(self.sxy) / w - mx * my;
        // A little ridge: a line from hours at one temperature is flat.
        let b = (cxy / (vx + 0.05)).max(0.0);
        Some((my - b * mx, b))
    }

    fn expect(&self, cfg: &NightExcessConfig, x: f64) -> Option<Expect> {
        if u32::from(self.nights) < cfg.min_nights {
            return None;
        }
        let x_max = f64::from(self.x_max?);
        if x > x_max + cfg.max_extrapolation_c {
            return None;
        }
        let floor = f64::from(self.floor);
        let mut litres = floor;
        let mut on_floor = true;
        let mut sigma =
            (f64::from(self.floor_dev) * std::f64::consts::FRAC_PI_2.sqrt()).max(cfg.min_sigma_l);
        if f64::from(self.w) >= cfg.min_heating_hours
            && let Some((a, b)) = self.line()
        {
            let on_line = a + b * x;
            // Where the line comes down to the floor (under half the meter's mean
            // heating hour), heating turns on or off from one night to the next: a
            // meter that heats at night is not judged there (continuous flow and
            // quiet hours watch its mild nights).
            if on_line < 0.5 * f64::from(self.sy / self.w) {
                return None;
            }
            if on_line > floor {
                litres = on_line;
                on_floor = false;
                let rel = if self.rel_w > 0.0 {
                    f64::from(self.rel / self.rel_w)
                } else {
                    0.0
                };
                sigma = sigma.max(rel * std::f64::consts::FRAC_PI_2.sqrt() * on_line);
            }
        }
        Some(Expect {
            litres,
            sigma,
            floor: on_floor,
        })
    }

    pub fn on_hour(
        &mut self,
        cfg: &NightExcessConfig,
        ctx: &MeterCtx<'_>,
        h: &Hour,
        out: &mut Vec<Finding>,
    ) {
        let len = cfg.window_len();
        if !cfg.enabled || len == 0 {
            return;
        }
        let local = crate::local_hour(h.start, ctx.local_utc_offset_h);
        if local < cfg.start_h || local >= cfg.start_h + len {
            return;
        }
        let night = h.start_s - i64::from(local - cfg.start_h) * 3600;
        if self.night != Some(night) {
            self.start_night(night);
        }
        if h.measured()
            && let Some(temp) = h.temp.filter(|t| t.is_finite())
        {
            let litres = (h.m3.max(0.0) * 1000.0).round().min(f64::from(u16::MAX));
            if self.hours_l.len() < MAX_HOURS {
                self.hours_l.push(litres as u16);
                self.hours_t.push(crate::common::temp_to_i8(Some(temp)));
            }
            let x = cfg.base_temp_c - f64::from(temp);
            if let Some(e) = self.expect(cfg, x) {
                let r = litres - e.litres;
                self.max_r = if self.n == 0 {
                    r as f32
                } else {
                    self.max_r.max(r as f32)
                };
                self.sum_r += r as f32;
                if e.floor {
                    let y = litres as u16;
                    let first = self.floor_n == 0;
                    self.floor_lo = if first { y } else { self.floor_lo.min(y) };
                    self.floor_hi = if first { y } else { self.floor_hi.max(y) };
                    self.floor_n = self.floor_n.saturating_add(1);
                }
                self.sum_s += e.sigma as f32;
                self.n = self.n.saturating_add(1);
                self.judge(cfg, ctx, h, e.litres, out);
            }
        }
        if local + 1 == cfg.start_h + len {
            self.end_night(cfg);
        }
    }

    fn start_night(&mut self, night: i64) {
        self.night = Some(night);
        self.hours_l.clear();
        self.hours_t.clear();
        self.sum_r = 0.0;
        self.sum_s = 0.0;
        self.n = 0;
        self.max_r = 0.0;
        self.floor_n = 0;
        self.floor_lo = 0;
        self.floor_hi = 0;
        self.flagged = false;
    }

    fn judge(
        &mut self,
        cfg: &NightExcessConfig,
        ctx: &MeterCtx<'_>,
        h: &Hour,
        expected: f64,
        out: &mut Vec<Finding>,
    ) {
        if u32::from(self.n) < cfg.need_hours.max(2) {
            return;
        }
        // The largest residual is left out: one odd hour cannot make a finding.
        let n = f64::from(self.n) - 1.0;
        let mean = (f64::from(self.sum_r) - f64::from(self.max_r)) / n;
        // σ of the mean of n hours whose errors share `hour_corr`.
        let mean_sigma = f64::from(self.sum_s) / f64::from(self.n);
        let spread = mean_sigma * ((1.0 + cfg.hour_corr * (n - 1.0)) / n).sqrt();
        if mean < cfg.min_excess_l || mean < cfg.z * spread {
            return;
        }
        // Above the floor, a leak is steady; heating that switched on (at a
        // temperature the meter did not heat at before) is not.
        let (lo, hi) = (f64::from(self.floor_lo), f64::from(self.floor_hi));
        if self.floor_n > 0
            && (u32::from(self.floor_n) < cfg.steady_hours
                || hi - lo > cfg.steady_l.max(cfg.steady_rel * lo))
        {
            return;
        }
        self.flagged = true;
        let start = crate::ts(self.night.unwrap_or(h.start_s));
        out.push(finding(
            ctx,
            AlertKind::ContinuousFlow,
            Severity::Warning,
            h.end,
            Evidence {
                rule: format!(
                    "night hours ({:02}:00-{:02}:00 local) above the meter's own night for \
                     their gas temperature (floor, or heating line) by at least {} L/h and \
                     {} σ",
                    cfg.start_h, cfg.end_h, cfg.min_excess_l, cfg.z
                ),
                observed: round6((expected + mean) / 1000.0),
                expected: Some(round6(expected / 1000.0)),
                threshold: round6((expected + cfg.min_excess_l.max(cfg.z * spread)) / 1000.0),
                unit: "m3/h".into(),
                window_start: start,
                window_end: h.end,
                explanation: format!(
                    "In {} of the last {} night hours this meter drew on average {mean:.0} L/h more \
                     than its floor ({:.0} L/h) and heating at these temperatures explain \
                     (the last hour: {expected:.0} L/h expected), {:.1} σ of the night's mean; \
                     a leak adds the same litres to every hour.",
                    self.n - 1,
                    self.n,
                    self.floor,
                    mean / spread.max(1e-9)
                ),
                known: None,
            },
        ));
    }

    /// Learns the night that just ended, unless it had a finding.
    fn end_night(&mut self, cfg: &NightExcessConfig) {
        self.night = None;
        let hours = std::mem::take(&mut self.hours_l);
        let temps = std::mem::take(&mut self.hours_t);
        if hours.len() < cfg.window_len() as usize {
            return; // Not every hour measured: left out.
        }
        // A night above its expectation by more than `learn_below_l` (and 2 σ) is
        // held out even without a finding: a leak growing from a litre or two an
        // hour is not learned, night by night, as the meter's heating.
        let suspect = self.n >= 2 && {
            let n = f64::from(self.n) - 1.0;
            let mean = (f64::from(self.sum_r) - f64::from(self.max_r)) / n;
            let sigma = f64::from(self.sum_s) / f64::from(self.n);
            let spread = sigma * ((1.0 + cfg.hour_corr * (n - 1.0)) / n).sqrt();
            mean >= cfg.learn_below_l.max(2.0 * spread)
        };
        if self.flagged || suspect {
            self.held = self.held.saturating_add(1);
            if u32::from(self.held) < cfg.max_hold_nights {
                return;
            }
        } else {
            self.held = 0;
        }
        let decay = decay_per_step(cfg.half_life_nights) as f32;
        let a = 1.0 - decay;
        let lowest = f32::from(*hours.iter().min().unwrap_or(&0));
        let first = self.nights == 0;
        let heating_above = |floor: f32| {
            cfg.heating_above_l
                .max(cfg.heating_above_rel * f64::from(floor)) as f32
        };
        if first {
            self.floor = lowest;
        } else if lowest < self.floor {
            // Down fast: a night that rested lower shows the floor.
            self.floor += 0.5 * (lowest - self.floor);
        } else if lowest <= self.floor + heating_above(self.floor) {
            self.floor += a * (lowest - self.floor);
        } else {
            // A night that heated throughout says little about the floor: up slowly
            // (a new pilot flame is still followed).
            self.floor += a / 8.0 * (lowest - self.floor);
        }
        let heating_above = heating_above(self.floor);
        let line = self.line();
        let usable = f64::from(self.w) >= cfg.min_heating_hours;
        self.w *= decay;
        self.sx *= decay;
        self.sy *= decay;
        self.sxx *= decay;
        self.sxy *= decay;
        self.rel *= decay;
        self.rel_w *= decay;
        let mut dev = 0.0f32;
        let mut dev_n = 0u32;
        for (&l, &t) in hours.iter().zip(&temps) {
            let y = f32::from(l);
            let Some(temp) = crate::common::temp_from_i8(t) else {
                continue;
            };
            let x = (cfg.base_temp_c - f64::from(temp)) as f32;
            self.x_max = Some(self.x_max.map_or(x, |m| m.max(x)));
            if y > self.floor + heating_above {
                if usable && let Some((la, lb)) = line {
                    let e = (la + lb * f64::from(x)).max(1.0);
                    let r = ((f64::from(y) - e) / e).abs().min(1.0) as f32;
                    self.rel += r;
                    self.rel_w += 1.0;
                }
                self.w += 1.0;
                self.sx += x;
                self.sy += y;
                self.sxx += x * x;
                self.sxy += x * y;
            } else {
                dev += (y - self.floor).abs();
                dev_n += 1;
            }
        }
        if dev_n > 0 {
            let d = dev / dev_n as f32;
            self.floor_dev = if first {
                d
            } else {
                self.floor_dev + a * (d - self.floor_dev)
            };
        }
        self.nights = self.nights.saturating_add(1);
        self.hours_l = hours;
        self.hours_l.clear();
        self.hours_t = temps;
        self.hours_t.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testing::{feed_days, round_trip, size};

    fn run(
        s: &mut NightExcess,
        days: std::ops::Range<i64>,
        litres: impl Fn(i64, i64) -> f64,
        temp: impl Fn(i64) -> Option<f32>,
    ) -> Vec<Finding> {
        let cfg = NightExcessConfig {
            enabled: true,
            ..NightExcessConfig::default()
        };
        feed_days(days, litres, temp, |ctx, h, out| {
            s.on_hour(&cfg, ctx, h, out)
        })
    }

    /// A deterministic wobble in -1..1.
    fn wobble(k: i64) -> f64 {
        let mut x = (k as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    /// Gas temperature wandering between 5 and 11 °C.
    fn temp(d: i64) -> Option<f32> {
        Some((8.0 + 3.0 * wobble(d + 500)) as f32)
    }

    /// A home heating through the night below 10 °C gas: 40 L/h per degree, ±20 %,
    /// plus a busy day.
    fn night_heating(d: i64, l: i64) -> f64 {
        let t = f64::from(temp(d).unwrap());
        if (0..6).contains(&l) {
            (40.0 * (10.0 - t)).max(0.0) * (1.0 + 0.2 * wobble(d * 24 + l))
        } else {
            300.0 + 200.0 * wobble(d * 24 + l).abs()
        }
    }

    #[test]
    fn a_home_heating_at_night_is_quiet_and_its_big_leak_found_in_one_night() {
        let mut s = NightExcess::default();
        assert!(run(&mut s, 0..60, night_heating, temp).is_empty());
        assert!(s.nights() >= 50);
        // 150 L/h from local noon of day 60: found in the first night cold enough to
        // heat (mild nights are left to continuous flow), on the heating line.
        let at_6 = |d: i64, l: i64| {
            let home = if (0..6).contains(&l) {
                160.0 * (1.0 + 0.2 * wobble(d * 24 + l))
            } else {
                night_heating(d, l)
            };
            home + if d > 60 || l >= 12 { 150.0 } else { 0.0 }
        };
        let out = run(&mut s, 60..62, at_6, |_| Some(6.0));
        let f = out.first().expect("found");
        assert_eq!(f.kind, AlertKind::ContinuousFlow);
        assert!(f.detected_at <= crate::common::testing::t(crate::common::testing::at(61, 5)));
        assert!(f.evidence.expected.unwrap() > 0.1, "{:?}", f.evidence);
        assert!(f.evidence.observed > f.evidence.expected.unwrap());
        round_trip(&s);
        assert!(size(&s) <= 90, "{}", size(&s));
    }

    #[test]
    fn a_noisy_business_base_is_quiet_and_a_big_leak_found() {
        let base = |d: i64, l: i64| 80.0 * (1.0 + 0.3 * wobble(d * 24 + l));
        let mut s = NightExcess::default();
        assert!(run(&mut s, 0..40, base, temp).is_empty());
        let out = run(&mut s, 40..42, |d, l| base(d, l) + 120.0, temp);
        assert!(!out.is_empty());
    }

    #[test]
    fn small_leaks_and_the_first_nights_are_left_to_others() {
        let mut s = NightExcess::default();
        // A leak of 150 L/h from the start is the floor.
        assert!(run(&mut s, 0..20, |d, l| night_heating(d, l) + 150.0, temp).is_empty());
        let mut s = NightExcess::default();
        run(&mut s, 0..30, night_heating, temp);
        assert!(run(&mut s, 30..40, |d, l| night_heating(d, l) + 20.0, temp).is_empty());
    }

    #[test]
    fn heating_that_switches_on_within_the_learned_temperatures_is_not_a_leak() {
        let mut s = NightExcess::default();
        let mild = |d: i64| Some((11.0 + wobble(d)) as f32);
        run(&mut s, 0..30, |_, l| if l < 6 { 0.0 } else { 300.0 }, mild);
        // Heating through the night at 10.5 °C gas (learned: 10-12 °C, never heated),
        // 150 L/h ± 20 %: not steady, not a leak.
        let heats = |d: i64, l: i64| 150.0 * (1.0 + 0.2 * wobble(d * 24 + l));
        assert!(run(&mut s, 30..33, heats, |_| Some(10.5)).is_empty());
        // A steady 80 L/h is.
        assert!(
            !run(
                &mut s,
                33..35,
                |_, l| if l < 6 { 80.0 } else { 380.0 },
                mild
            )
            .is_empty()
        );
    }

    #[test]
    fn a_night_colder_than_learned_is_not_judged() {
        let mut s = NightExcess::default();
        run(&mut s, 0..30, night_heating, |_| Some(12.0));
        // 6 °C colder: heating 160 L/h more than ever seen.
        assert!(run(&mut s, 30..32, night_heating, |_| Some(6.0)).is_empty());
    }
}
