//! Night-flow rise: the meter's minimum night flow (MNF) above its own leak-free
//! baseline, after LeakDB (Vrachimis et al. 2018). This is what finds leaks at meters
//! that never stop: a pilot flame's night minimum is steady at the pilot's rate, and
//! a leak lifts it.
//!
//! Each local night, the MNF is the smallest measured hourly flow in the night window
//! (`start_h`..`end_h` local, default 01:00-05:00). The night is judged once its last
//! window hour closes, if every window hour was measured (a gap leaves the night out).
//! The baseline is the smallest MNF of comparable learned nights; the night is over
//! if `MNF - baseline > max(min(rel_rise * baseline, spread_factor * range),
//! min_rise_l_per_h)`, where `range` is the spread (highest - lowest) of the last
//! `window_nights` learned MNFs: a meter whose nights vary little (a pilot flame) is
//! allowed less than `rel_rise`, and a relative rule alone means nothing on a
//! baseline of 0. `k_nights` nights over in a row raise a finding, repeated every
//! night while it lasts.
//!
//! **Temperature.** Homes that heat at night use more on colder nights, and gas
//! temperature is what the meters report, so when the night has a mean gas
//! temperature the comparable nights are the learned nights at least
//! `colder_by_c` colder than tonight (among the last `temp_window_nights`): a home
//! that heats at night burns at least as much on a colder night, so their smallest
//! MNF bounds tonight's from above; exceeding it is more than the weather. The margin
//! absorbs the noise of the temperature and a heating that switches on at a
//! threshold. A night colder than every learned night cannot be judged this way and
//! is skipped (learned, unless nights are already over the baseline): the first cold
//! nights of a season are blind spots, the nights after them are not. Nights without
//! temperature compare with the last `window_nights` learned nights, as LeakDB does.
//!
//! **Flagged nights** (over the baseline, even before `k_nights` is reached) are
//! never learned, so a leak does not become the baseline. A meter whose night use
//! rises for good (a new pilot flame, a new tenant) therefore keeps its finding until
//! someone looks. A meter learns its first `min_nights` complete nights without
//! judging them (a leak present from the start is learned as normal).
//!
//! **Learning mask.** After a magnetic field or a closed valve the engine masks the
//! meter's hours (not measured: the night is left out) and calls
//! [`NightFlow::forget_since`]: a night without flow because the register or the gas
//! stopped would otherwise become the baseline of every colder night after it.

use crate::MeterCtx;
use crate::common::{Mean, finding, fmt_temp, round6};
use crate::hours::Hour;

use leakwatch_core::{AlertKind, Evidence, Finding, Severity};
use serde::{Deserialize, Serialize};

/// Nights the baseline ring holds.
pub const NIGHT_CAPACITY: usize = 16;

/// Settings of the night-flow detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NightFlowConfig {
    /// First local hour of the night window (default 1, 01:00).
    pub start_h: u32,
    /// Local hour the window ends, exclusive; may wrap past midnight (default 5,
    /// 05:00). Equal to `start_h` disables the detector.
    pub end_h: u32,
    /// Learned nights the baseline looks at when the night has no temperature, at
    /// most 16 (default 10, as LeakDB).
    pub window_nights: u32,
    /// Learned nights searched for colder ones when temperatures are known, at most
    /// 16 (default 16).
    pub temp_window_nights: u32,
    /// Relative rise over the baseline that counts (lambda; default 0.5: LeakDB used
    /// 0.1-0.3 on district flows, single homes are noisier).
    pub rel_rise: f64,
    /// A meter whose learned nights vary little is allowed less than `rel_rise`: this
    /// many times the range (highest - lowest MNF) of its last `window_nights` learned
    /// nights (default 3; 0 disables). A pilot flame burns the same every night, so a
    /// leak of a fraction of it shows.
    pub spread_factor: f64,
    /// Smallest rise that counts whatever the baseline, litres/hour (default 4: a
    /// 5 L/h leak clears it at the meters' 1 L resolution).
    pub min_rise_l_per_h: f64,
    /// Nights over the baseline in a row before a finding (default 2).
    pub k_nights: u32,
    /// Complete nights learned before the first judgement (default 5).
    pub min_nights: u32,
    /// Compare with colder nights when the night has a gas temperature (default true).
    pub use_temp: bool,
    /// How much colder a learned night must be to be comparable, °C of gas
    /// temperature (default 1.0: on the standard scenario's seed 1, 0.5 gave 18
    /// false alarms, 1.0 gave 14 at the same recall).
    pub colder_by_c: f64,
    /// Comparable nights needed to judge (default 1).
    pub min_comparable_nights: u32,
}

impl Default for NightFlowConfig {
    fn default() -> Self {
        Self {
            start_h: 1,
            end_h: 5,
            window_nights: 10,
            temp_window_nights: NIGHT_CAPACITY as u32,
            rel_rise: 0.5,
            spread_factor: 3.0,
            min_rise_l_per_h: 4.0,
            k_nights: 2,
            min_nights: 5,
            use_temp: true,
            colder_by_c: 1.0,
            min_comparable_nights: 1,
        }
    }
}

impl NightFlowConfig {
    /// Hours in the window (0: disabled).
    fn window_len(&self) -> u32 {
        (i64::from(self.end_h) - i64::from(self.start_h)).rem_euclid(24) as u32
    }
}

/// Learned nights: MNF (L/h) and mean gas temperature (tenths of °C, `i16::MIN` when
/// unknown).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct NightRing {
    len: u8,
    head: u8,
    mnf_l: [u32; NIGHT_CAPACITY],
    temp_dc: [i16; NIGHT_CAPACITY],
    /// Local day of each night's window start, modulo 256.
    days: [u8; NIGHT_CAPACITY],
}

const NO_TEMP: i16 = i16::MIN;

impl NightRing {
    fn push(&mut self, mnf_l: u32, temp: Option<f32>, day: i64) {
        let i = usize::from(self.head);
        self.mnf_l[i] = mnf_l;
        self.days[i] = day.rem_euclid(256) as u8;
        self.temp_dc[i] = temp.map_or(NO_TEMP, |t| {
            (t * 10.0).round().clamp(-32_000.0, 32_000.0) as i16
        });
        self.head = ((i + 1) % NIGHT_CAPACITY) as u8;
        self.len = (usize::from(self.len) + 1).min(NIGHT_CAPACITY) as u8;
    }

    /// Takes out the newest nights whose window started on local day `day` or later.
    fn forget_since(&mut self, day: i64) {
        while self.len > 0 {
            let i = (usize::from(self.head) + NIGHT_CAPACITY - 1) % NIGHT_CAPACITY;
            if !crate::common::day_on_or_after(self.days[i], day) {
                break;
            }
            self.head = i as u8;
            self.len -= 1;
        }
    }

    /// The last `n` nights, newest first: (MNF L/h, temperature °C).
    fn recent(&self, n: usize) -> impl Iterator<Item = (u32, Option<f32>)> + '_ {
        let head = usize::from(self.head);
        (0..n.min(usize::from(self.len))).map(move |k| {
            let i = (head + NIGHT_CAPACITY - 1 - k) % NIGHT_CAPACITY;
            let t = self.temp_dc[i];
            (self.mnf_l[i], (t != NO_TEMP).then(|| f32::from(t) / 10.0))
        })
    }
}

/// Per-meter state (65-110 bytes serialised: the ring's varints grow with the night
/// flow; 16 bytes of day stamps).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NightFlow {
    /// The night being measured: its window start (Unix seconds).
    night: Option<i64>,
    /// Smallest measured hourly flow of the night so far, litres.
    min_l: u32,
    /// Measured window hours seen.
    hours: u8,
    temp: Mean,
    /// Nights over the baseline in a row.
    over: u8,
    /// Window start of the first of them (Unix seconds).
    over_since: Option<i64>,
    ring: NightRing,
}

/// The baseline of one night.
struct Baseline {
    litres: u32,
    nights: usize,
    /// Compared with colder nights (rather than the last ones).
    by_temp: bool,
}

impl NightFlow {
    /// Learned nights, newest first: (MNF L/h, mean gas temperature °C).
    pub fn learned(&self) -> Vec<(u32, Option<f32>)> {
        self.ring.recent(NIGHT_CAPACITY).collect()
    }

    fn baseline(&self, cfg: &NightFlowConfig, temp: Option<f32>) -> Option<Baseline> {
        let (nights, by_temp): (Vec<u32>, bool) = match temp.filter(|_| cfg.use_temp) {
            Some(t) => {
                let limit = t - cfg.colder_by_c as f32;
                let n = cfg.temp_window_nights as usize;
                let colder = self
                    .ring
                    .recent(n)
                    .filter_map(|(l, nt)| nt.filter(|&nt| nt <= limit).map(|_| l));
                (colder.collect(), true)
            }
            None => {
                let n = cfg.window_nights as usize;
                (self.ring.recent(n).map(|(l, _)| l).collect(), false)
            }
        };
        let litres = *nights.iter().min()?;
        (nights.len() >= (cfg.min_comparable_nights as usize).max(1)).then_some(Baseline {
            litres,
            nights: nights.len(),
            by_temp,
        })
    }

    /// The rise allowed over a baseline of `b` L/h: `rel_rise` of it, or less for a
    /// meter whose nights barely vary (`spread_factor` times the range of the last
    /// `window_nights` learned nights), but never below `min_rise_l_per_h`.
    fn allowed_rise(&self, cfg: &NightFlowConfig, b: f64) -> f64 {
        let mut relative = cfg.rel_rise * b;
        if cfg.spread_factor > 0.0 {
            let n = cfg.window_nights as usize;
            let (lo, hi) = self
                .ring
                .recent(n)
                .fold((u32::MAX, 0), |(lo, hi), (l, _)| (lo.min(l), hi.max(l)));
            if usize::from(self.ring.len).min(n) >= cfg.min_nights as usize && hi >= lo {
                relative = relative.min(cfg.spread_factor * f64::from(hi - lo));
            }
        }
        relative.max(cfg.min_rise_l_per_h)
    }

    /// Forgets the nights whose window started on local day `day` or later (the
    /// meter reported a magnetic field or a closed valve: its register or its gas
    /// stopped), and leaves the night being measured out if it is one of them.
    pub fn forget_since(&mut self, day: i64, local_utc_offset_h: i32) {
        self.ring.forget_since(day);
        if let Some(n) = self.night
            && crate::local_day(crate::ts(n), local_utc_offset_h) >= day
        {
            self.hours = 0;
        }
    }

    pub fn on_hour(
        &mut self,
        cfg: &NightFlowConfig,
        ctx: &MeterCtx<'_>,
        h: &Hour,
        out: &mut Vec<Finding>,
    ) {
        let len = cfg.window_len();
        if len == 0 {
            return;
        }
        // Position of the hour in the night that starts at `start_h` local.
        let shifted =
            h.start_s + (i64::from(ctx.local_utc_offset_h) - i64::from(cfg.start_h)) * 3600;
        let pos = (shifted.rem_euclid(86_400) / 3600) as u32;
        if pos >= len {
            return;
        }
        let night = h.start_s - i64::from(pos) * 3600;
        if self.night != Some(night) {
            self.night = Some(night);
            self.min_l = u32::MAX;
            self.hours = 0;
            self.temp = Mean::default();
        }
        if h.measured() {
            let litres = (h.m3.max(0.0) * 1000.0)
                .round()
                .min(f64::from(u32::MAX - 1)) as u32;
            self.min_l = self.min_l.min(litres);
            self.hours = self.hours.saturating_add(1);
            self.temp.add(h.temp);
        }
        if pos + 1 < len {
            return;
        }
        self.night = None;
        if u32::from(self.hours) < len {
            return; // Not every hour measured: the night is left out.
        }
        let mnf = self.min_l;
        let temp = self.temp.get();
        let day = crate::local_day(crate::ts(night), ctx.local_utc_offset_h);
        let learned = usize::from(self.ring.len);
        if learned < cfg.min_nights as usize {
            self.ring.push(mnf, temp, day);
            return;
        }
        let Some(base) = self.baseline(cfg, temp) else {
            // No comparable night (the coldest so far): not judged.
            if self.over == 0 {
                self.ring.push(mnf, temp, day);
            }
            return;
        };
        let b = f64::from(base.litres);
        let allowed = self.allowed_rise(cfg, b);
        let rise = f64::from(mnf) - b;
        if rise <= allowed {
            self.over = 0;
            self.over_since = None;
            self.ring.push(mnf, temp, day);
            return;
        }
        self.over = self.over.saturating_add(1);
        let since = *self.over_since.get_or_insert(night);
        if u32::from(self.over) < cfg.k_nights.max(1) {
            return;
        }
        let end = h.end;
        let compared = if base.by_temp {
            format!(
                "the lowest of {} learned nights at least {:.1} °C colder",
                base.nights, cfg.colder_by_c
            )
        } else {
            format!("the lowest of the last {} learned nights", base.nights)
        };
        out.push(finding(
            ctx,
            AlertKind::NightFlowRise,
            Severity::Warning,
            end,
            Evidence {
                rule: format!(
                    "night minimum ({:02}:00-{:02}:00) above its baseline by more than \
                     max(min({} x baseline, {} x range of recent nights), {} L/h) on {} \
                     nights in a row",
                    cfg.start_h % 24,
                    cfg.end_h % 24,
                    cfg.rel_rise,
                    cfg.spread_factor,
                    cfg.min_rise_l_per_h,
                    cfg.k_nights.max(1)
                ),
                observed: round6(f64::from(mnf) / 1000.0),
                expected: Some(round6(b / 1000.0)),
                threshold: round6((b + allowed) / 1000.0),
                unit: "m3/h".into(),
                window_start: crate::ts(since),
                window_end: end,
                explanation: format!(
                    "The night minimum was {mnf} L/h (gas {}) against a baseline of \
                     {} L/h ({compared}): {:.0} L/h more, over the {:.0} L/h allowed, \
                     for {} nights in a row.",
                    fmt_temp(temp),
                    base.litres,
                    rise,
                    allowed,
                    self.over
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

    /// Feeds local days with `litres(day, local hour)` and a gas temperature per day.
    fn feed(
        s: &mut NightFlow,
        cfg: &NightFlowConfig,
        days: std::ops::Range<i64>,
        litres: impl Fn(i64, i64) -> f64,
        temp: impl Fn(i64) -> Option<f32>,
    ) -> Vec<Finding> {
        feed_days(days, litres, temp, |ctx, h, out| {
            s.on_hour(cfg, ctx, h, out)
        })
    }

    /// A pilot flame of 12 L/h with day-time use.
    fn pilot(_d: i64, l: i64) -> f64 {
        12.0 + if (6..23).contains(&l) { 200.0 } else { 0.0 }
    }

    #[test]
    fn a_leak_at_a_pilot_flame_is_found_on_the_second_night() {
        let cfg = NightFlowConfig::default();
        let mut s = NightFlow::default();
        assert!(feed(&mut s, &cfg, 0..14, pilot, |_| Some(10.0)).is_empty());
        // A 10 L/h leak from day 14 (the continuous-flow rule cannot see it).
        let leak = |d, l| pilot(d, l) + 10.0;
        let out = feed(&mut s, &cfg, 14..20, leak, |d| Some(10.0 + d as f32 / 10.0));
        let f = &out[0];
        assert_eq!(f.kind, AlertKind::NightFlowRise);
        // End of the second night's window: 05:00 local of day 15.
        assert_eq!(f.detected_at, t(at(15, 5)));
        assert_eq!(f.evidence.window_start, t(at(14, 1)));
        assert!((f.evidence.observed - 0.022).abs() < 1e-9);
        assert_eq!(f.evidence.expected, Some(0.012));
        // A pilot burns the same every night: only the 4 L/h floor is allowed.
        assert!((f.evidence.threshold - 0.016).abs() < 1e-9);
        assert!(
            f.evidence.explanation.contains("22 L/h"),
            "{}",
            f.evidence.explanation
        );
        // Found every night while it lasts; the leak's nights are not learned.
        assert_eq!(out.len(), 5);
        assert!(s.learned().iter().all(|&(l, _)| l == 12));
        round_trip(&s);
    }

    #[test]
    fn a_quiet_home_is_not_flagged_and_one_night_of_use_is_not_enough() {
        let cfg = NightFlowConfig::default();
        let mut s = NightFlow::default();
        let home = |d: i64, l: i64| {
            let night_use = if d == 9 && l == 3 { 300.0 } else { 0.0 };
            if (6..23).contains(&l) {
                150.0
            } else {
                night_use
            }
        };
        assert!(feed(&mut s, &cfg, 0..30, home, |_| None).is_empty());
        // One night of use everywhere in the window: flagged once, never twice.
        let one_night = |d: i64, l: i64| if d == 31 { 30.0 } else { home(d, l) };
        assert!(feed(&mut s, &cfg, 30..40, one_night, |_| None).is_empty());
        // It was kept out of the baseline.
        assert!(s.learned().iter().all(|&(l, _)| l == 0));
    }

    /// A home heating through nights colder than 11 °C (gas), 20 L/h per °C below.
    fn night_heater(temp: f32) -> impl Fn(i64, i64) -> f64 {
        move |_d, l| {
            let heat = (f64::from(11.0 - temp)).max(0.0) * 20.0;
            heat + if (6..23).contains(&l) { 300.0 } else { 0.0 }
        }
    }

    #[test]
    fn a_cold_snap_is_not_a_leak_but_a_leak_in_it_is() {
        // Half-degree comparisons, so the learned nights below are comparable.
        let cfg = NightFlowConfig {
            colder_by_c: 0.5,
            ..NightFlowConfig::default()
        };
        let mut s = NightFlow::default();
        let mut out = vec![];
        // Autumn: nights between 8 and 13 °C.
        for d in 0..20 {
            let temp = 8.0 + (d % 6) as f32;
            out.extend(feed(&mut s, &cfg, d..d + 1, night_heater(temp), |_| {
                Some(temp)
            }));
        }
        // A cold snap down to 4 °C and back: the minimum rises by 140 L/h, more
        // than any learned night, but no colder night says it should not.
        for (d, temp) in (20..).zip([6.0, 5.0, 4.0, 4.0, 5.0, 7.0, 9.0]) {
            out.extend(feed(&mut s, &cfg, d..d + 1, night_heater(temp), |_| {
                Some(temp)
            }));
        }
        assert!(out.is_empty(), "{:?}", out.first());
        // A 100 L/h leak on mild nights is found (against the 7 °C night's 80 L/h,
        // then an 8 °C night's 60 L/h)...
        for (d, temp) in (27..).zip([8.0, 8.5]) {
            let leak = move |dd, l| night_heater(temp)(dd, l) + 100.0;
            out.extend(feed(&mut s, &cfg, d..d + 1, leak, |_| Some(temp)));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].detected_at, t(at(28, 5)));
        assert_eq!(out[0].evidence.expected, Some(0.06));
        // ... and on a cold night too, against the learned 4 °C nights (140 L/h).
        let leak = |dd, l| night_heater(4.5)(dd, l) + 100.0;
        let out = feed(&mut s, &cfg, 29..30, leak, |_| Some(4.5));
        assert_eq!(out.len(), 1, "learned: {:?}", s.learned());
        assert_eq!(out[0].evidence.expected, Some(0.14));
    }

    #[test]
    fn gaps_leave_a_night_out_and_wrapping_windows_work() {
        let cfg = NightFlowConfig {
            start_h: 23,
            end_h: 3,
            ..NightFlowConfig::default()
        };
        let mut s = NightFlow::default();
        let mut out = vec![];
        for h in at(0, 0)..at(10, 0) {
            let mut hr = hour(h, 5.0, None);
            if h == at(3, 1) {
                hr.spread_h = 2;
            }
            s.on_hour(&cfg, &ctx(), &hr, &mut out);
        }
        // Nights start at 23:00 of days 0..9; the one over day 3's 01:00 had a gap,
        // and the last one (day 9, 23:00) is not over yet.
        assert_eq!(s.learned().len(), 8);
        assert!(out.is_empty());
    }

    #[test]
    fn state_is_small() {
        let cfg = NightFlowConfig::default();
        let mut s = NightFlow::default();
        feed(
            &mut s,
            &cfg,
            0..30,
            |_, l| 180.0 + l as f64,
            |d| Some(d as f32 - 5.0),
        );
        round_trip(&s);
        let n = size(&s);
        assert!(n <= 110, "{n} bytes");
    }
}
