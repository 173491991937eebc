//! Continuous flow: a customer meter that has not had a single zero-flow hour over a
//! window (24 h by default) is probably feeding a leak behind the meter, unless the
//! meter is one that legitimately never stops (a pilot flame, a business, a home
//! heating through cold nights).
//!
//! Works on measured clock hours ([`crate::hours::Hour`]): an hour below
//! `zero_threshold_m3` ends the run of flow; an hour spread from a gap breaks it (we
//! cannot know whether flow stopped inside the gap).
//!
//! **Learning each meter's own pattern.** Every closed local day is learned into a
//! ring of the last 28 days: whether it had a zero-flow hour, whether it was a
//! weekend day, and its lowest hourly gas temperature (nights decide whether a home
//! heats through them). Once the meter has `min_history_days` learned days, a run of
//! `window_h` hours alerts only if the meter *normally stops at this temperature*:
//! among the learned days comparable in temperature, at least `min_zero_day_share`
//! had a zero-flow hour. The run's temperature is the lowest of today and yesterday.
//! "Comparable" is one-sided, because heating only ever adds flow as it gets colder:
//! - a learned day **with** a zero hour counts if it was at most `temp_margin_c`
//!   warmer than now (it stopped although it was as cold or colder);
//! - a learned day **without** one counts if it was at most `temp_margin_c` colder
//!   than now (it ran through although it was as warm or warmer).
//!
//! Weekdays and weekend days are judged apart (a home away on weekdays stops every
//! weekday whatever the weather, which says nothing about its weekends): every kind
//! of day the run's last `window_h` hours touched must say "it should have stopped".
//! With fewer than `min_comparable_days` comparable zero days of a kind (now is
//! colder than the days the meter was seen to stop on), there is no evidence either
//! way and the detector stays quiet: a leak that starts in the coldest spell of the
//! last four weeks is found when it gets milder (the night-flow detector is blind
//! there too). Meters without temperatures compare with every learned day of the
//! kind (a plain share).
//!
//! **Steady floor.** A leak adds the same litres to every hour, so the hours in which
//! nobody uses gas (the night, the hours away) sit on a flat floor, whatever the
//! weather; a home heating through a cold night burns more in some hours than in
//! others. The detector keeps the run's last 24 hourly volumes; a 24-hour window is
//! *steady* when at least `steady_hours` of its hours lie within
//! `max(steady_tolerance_l, steady_tolerance_rel × lowest)` of its lowest hour. Once
//! `steady_hold_h` windows in a row were steady, on a meter with a mature history
//! that stopped on at least `steady_min_zero_share` of its learned days, the run
//! alerts even where the temperature comparison cannot judge (the coldest spell so
//! far), and its days are held out like any flagged day.
//!
//! **A new meter** (fewer than `min_history_days` learned days) is learning: a run
//! alerts only when the evidence is strong on its own, a steady floor (as above) held
//! for `steady_hold_h` hours at `learning_min_floor_l` litres an hour or more, a
//! constant flow that neither a pilot flame nor heating (which varies from hour to
//! hour) explains. It learns every day, alerting or not; otherwise a pilot flame
//! would alert from its first day and never build a history. The price: a smaller
//! leak present from a meter's first days is learned as its normal after
//! `min_history_days` days, and this detector then falls silent.
//!
//! **Flagged days.** Once a meter's history has matured, the days of an alerting run
//! (including those of the run learned before it alerted) are held out of the
//! history, so a leak is not learned as "this meter never stops", nor does it push
//! the learned days out. When an alerting run ends by itself (a zero-flow hour comes
//! back), the run was the meter's own pattern (a cold weekend of a home heating day
//! and night), and with `learn_ended_runs` its last 7 held days are learned as days
//! without a zero hour. A repaired leak is learned the same way, which can hide a new
//! leak at similar temperatures for up to 28 days. A gap or a counter regression
//! breaks the run and drops its held days. After a magnetic field or a closed valve
//! the engine masks the meter's hours (not measured) and calls
//! [`ContinuousFlow::forget_since`].

use crate::MeterCtx;
use crate::common::{finding, fmt_temp, is_zero_flow, round6, temp_from_i8, temp_to_i8};
use crate::hours::Hour;
use chrono::TimeDelta;
use leakwatch_core::{AlertKind, Evidence, Finding, Severity};
use serde::{Deserialize, Serialize};

/// Days the history ring holds.
pub const HISTORY_CAPACITY: usize = 28;

/// Settings of the continuous-flow detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContinuousFlowConfig {
    /// Hours without a zero-flow hour before an alert (default 24).
    pub window_h: u32,
    /// Consumption over an hour below which the hour counts as zero flow, m³
    /// (default 0.001 = one litre, the meter's resolution).
    pub zero_threshold_m3: f64,
    /// Learned days looked at, at most 28 (default 28).
    pub history_days: u32,
    /// Learned days before the meter's own pattern is used; below this, every run of
    /// `window_h` hours alerts (default 7).
    pub min_history_days: u32,
    /// Share of comparable learned days that must have had a zero-flow hour for a run
    /// to alert (default 0.8).
    pub min_zero_day_share: f64,
    /// Comparable learned days with a zero-flow hour needed to judge at all, for each
    /// kind of day (weekdays, weekend days) the run covers; fewer (now is colder than
    /// the days the meter stopped on) and the detector stays quiet (default 3).
    pub min_comparable_days: u32,
    /// A day without a zero-flow hour is learned only with at least this many measured
    /// hours (default 20).
    pub min_day_hours: u32,
    /// Compare with days of similar gas temperature when temperatures are reported
    /// (default true).
    pub use_temp: bool,
    /// Gas temperature margin of the comparison, °C (default -1: a zero-flow day counts
    /// only if its coldest hour was at least 1 °C colder than now's; each 0.5 °C more
    /// doubled the false alarms of homes heating through cold nights in simulation,
    /// and -1 removed them from the standard scenario's seed 1 at no loss of recall).
    pub temp_margin_c: f64,
    /// When an alerting run ends by itself, learn its days as the meter's own pattern
    /// (default true).
    pub learn_ended_runs: bool,
    /// **Steady floor**: a run also alerts, whatever the temperature, once at least
    /// this many hours of each of its last `steady_hold_h` sliding 24-hour windows
    /// sat on the window's lowest hourly flow (within `steady_tolerance_l` litres or
    /// `steady_tolerance_rel` of it), on a meter that stopped on at least
    /// `steady_min_zero_share` of its learned days. A leak adds the same litres to
    /// every hour, so the hours without use (nights, away hours) sit on a flat
    /// floor; heating through a cold night varies from hour to hour with the boiler
    /// and the weather. Default 6 (0 disables): on the standard scenario's seeds 1-3,
    /// 5 raised false alarms on homes heating at night, 7 missed leaks in homes with
    /// short nights.
    pub steady_hours: u32,
    /// Litres an hour may lie above the window's lowest and still be on the floor
    /// (default 1: the meters' resolution).
    pub steady_tolerance_l: f64,
    /// ... or this share of the lowest, whichever is more (default 0.05).
    pub steady_tolerance_rel: f64,
    /// Consecutive hours the floor must hold before the steady rule alerts (default
    /// 24: the run is then at least `window_h` + 24 hours long; 12 doubled the false
    /// alarms of homes heating through cold nights in simulation).
    pub steady_hold_h: u32,
    /// Share of the learned days that must have had a zero-flow hour for the steady
    /// rule to apply (default 0.5): meters that never stop (pilot flames, businesses)
    /// have a steady floor of their own.
    pub steady_min_zero_share: f64,
    /// While learning (fewer than `min_history_days` days), a run alerts only on a
    /// steady floor held `steady_hold_h` hours at this many litres an hour or more
    /// (default 40: above a pilot flame's 8-30 L/h).
    pub learning_min_floor_l: f64,
    /// **A known leak does not hide the next one.** While a run alerts, the floor it
    /// alerted on (the lowest hour of the last 24) is its *known* level; a steady
    /// floor (at least `steady_hours` of the last 24 on it) above the known level by
    /// `growth_min_share` of it plus `growth_min_l` litres an hour raises
    /// `leak_growth`, saying what was known, and becomes the known level (default
    /// 30; 0 disables).
    pub growth_min_l: f64,
    /// See `growth_min_l` (default 0.5).
    pub growth_min_share: f64,
}

impl Default for ContinuousFlowConfig {
    fn default() -> Self {
        Self {
            window_h: 24,
            zero_threshold_m3: 0.001,
            history_days: HISTORY_CAPACITY as u32,
            min_history_days: 7,
            min_zero_day_share: 0.8,
            min_comparable_days: 3,
            min_day_hours: 20,
            use_temp: true,
            temp_margin_c: -1.0,
            learn_ended_runs: true,
            steady_hours: 6,
            steady_tolerance_l: 1.0,
            steady_tolerance_rel: 0.05,
            steady_hold_h: 24,
            steady_min_zero_share: 0.5,
            learning_min_floor_l: 40.0,
            growth_min_l: 30.0,
            growth_min_share: 0.5,
        }
    }
}

/// The last learned days: whether each had a zero-flow hour, whether it was a
/// weekend day, and its lowest gas temperature.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct DayRing {
    len: u8,
    /// Slot the next day goes to.
    head: u8,
    /// Bit `i`: slot `i` had a zero-flow hour.
    zero: u32,
    /// Bit `i`: slot `i` is a Saturday or a Sunday.
    weekend: u32,
    /// Lowest gas temperature of each slot's day, half degrees
    /// ([`crate::common::NO_TEMP_I8`] when unknown).
    temps: [i8; HISTORY_CAPACITY],
    /// Local day each slot was learned on, modulo 256 (to forget days after a fault).
    days: [u8; HISTORY_CAPACITY],
}

impl DayRing {
    fn push(&mut self, zero: bool, weekend: bool, temp: i8, day: i64) {
        let i = usize::from(self.head);
        let bit = 1u32 << i;
        let set = |mask: u32, on: bool| if on { mask | bit } else { mask & !bit };
        self.zero = set(self.zero, zero);
        self.weekend = set(self.weekend, weekend);
        self.temps[i] = temp;
        self.days[i] = day.rem_euclid(256) as u8;
        self.head = ((i + 1) % HISTORY_CAPACITY) as u8;
        self.len = (usize::from(self.len) + 1).min(HISTORY_CAPACITY) as u8;
    }

    /// Takes out the newest days learned on local day `day` or later.
    fn forget_since(&mut self, day: i64) {
        while self.len > 0 {
            let i = (usize::from(self.head) + HISTORY_CAPACITY - 1) % HISTORY_CAPACITY;
            if !crate::common::day_on_or_after(self.days[i], day) {
                break;
            }
            self.head = i as u8;
            self.len -= 1;
        }
    }

    /// Takes the newest day back out: (weekend, temperature) of a day without a zero
    /// hour; `None` if the newest day had one (or there is none).
    fn pop_flowing(&mut self) -> Option<(bool, i8)> {
        let i = self.recent(1).next()?;
        if self.is_zero(i) {
            return None;
        }
        self.head = i as u8;
        self.len -= 1;
        Some((self.is_weekend(i), self.temps[i]))
    }

    /// Slots of the last `n` days, newest first.
    fn recent(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        let head = usize::from(self.head);
        (0..n.min(usize::from(self.len)))
            .map(move |k| (head + HISTORY_CAPACITY - 1 - k) % HISTORY_CAPACITY)
    }

    fn is_zero(&self, i: usize) -> bool {
        self.zero & (1 << i) != 0
    }

    fn is_weekend(&self, i: usize) -> bool {
        self.weekend & (1 << i) != 0
    }
}

/// Days held out of the history while the detector alerts (at most the last 7), to be
/// learned if the run ends by itself: weekend flags and lowest temperatures, oldest
/// first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct HeldDays {
    n: u8,
    weekend: u8,
    temps: [i8; HELD_CAPACITY],
}

const HELD_CAPACITY: usize = 7;

impl HeldDays {
    fn push(&mut self, weekend: bool, temp: i8) {
        if usize::from(self.n) == HELD_CAPACITY {
            // Forget the oldest.
            self.temps.copy_within(1.., 0);
            self.weekend >>= 1;
            self.n -= 1;
        }
        let i = usize::from(self.n);
        self.temps[i] = temp;
        if weekend {
            self.weekend |= 1 << i;
        } else {
            self.weekend &= !(1 << i);
        }
        self.n += 1;
    }

    /// Held days, oldest first.
    fn days(&self) -> impl Iterator<Item = (bool, i8)> + '_ {
        (0..usize::from(self.n)).map(|i| (self.weekend & (1 << i) != 0, self.temps[i]))
    }
}

/// Hours of the run the steady-floor rule looks at.
const STEADY_WINDOW: usize = 24;

/// The current run's last hours, litres (saturating), oldest overwritten first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct LastHours {
    len: u8,
    head: u8,
    litres: [u16; STEADY_WINDOW],
}

impl LastHours {
    fn push(&mut self, litres: u16) {
        let i = usize::from(self.head);
        self.litres[i] = litres;
        self.head = ((i + 1) % STEADY_WINDOW) as u8;
        self.len = (usize::from(self.len) + 1).min(STEADY_WINDOW) as u8;
    }

    /// Lowest hour of a full window and how many hours lie within the tolerance of
    /// it; `None` until the window is full.
    fn floor(&self, cfg: &ContinuousFlowConfig) -> Option<(u16, u32)> {
        if usize::from(self.len) < STEADY_WINDOW {
            return None;
        }
        let low = *self.litres.iter().min()?;
        let tol = cfg
            .steady_tolerance_l
            .max(cfg.steady_tolerance_rel * f64::from(low));
        let limit = f64::from(low) + tol + 1e-9;
        let on = self
            .litres
            .iter()
            .filter(|&&l| f64::from(l) <= limit)
            .count();
        Some((low, on as u32))
    }
}

/// What the history says about a run at the current temperature.
#[derive(Debug, Clone, Copy)]
struct Judgement {
    alert: bool,
    /// Learned days looked at.
    learned: usize,
    /// Comparable days with and without a zero-flow hour (mature history only).
    zero_days: usize,
    flowing_days: usize,
    mature: bool,
}

/// Per-meter state (about 100-150 bytes serialised: the ring with its day stamps, and
/// the run's last 24 hours for the steady floor, whose varints grow with the flow).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContinuousFlow {
    /// Start of the current run of flow (Unix seconds), if flowing.
    flowing_since: Option<i64>,
    /// Smallest hourly flow during the run, m³/h.
    min_hourly_m3: f32,
    /// The current run has alerted.
    alerting: bool,
    /// Days learned without a zero hour during the current run (held out if it
    /// alerts).
    run_days: u8,
    /// Days of the current alerting run, held out of the history.
    held: HeldDays,
    /// Lowest gas temperature of the previous local day, °C.
    prev_day_min: Option<f32>,
    /// Local day being accumulated (days since the epoch).
    day: Option<i32>,
    day_zero: bool,
    day_measured: u8,
    /// The detector alerted during the day.
    day_flagged: bool,
    /// Lowest gas temperature of the day so far, °C.
    day_min: Option<f32>,
    ring: DayRing,
    /// The history reached `min_history_days` once: from then on flagged days are
    /// kept out.
    matured: bool,
    /// The run's last 24 hours, for the steady-floor rule.
    last: LastHours,
    /// Consecutive hours the steady floor has held.
    steady_h: u16,
    /// While alerting: the floor known (L/h; 0: not yet) and since when (the run's
    /// start, Unix seconds).
    known_l: u16,
}

impl ContinuousFlow {
    /// Days learned into the history that judges runs (at most `history_days`).
    pub fn learned_days(&self, cfg: &ContinuousFlowConfig) -> u32 {
        let n = (cfg.history_days as usize).min(HISTORY_CAPACITY);
        usize::from(self.ring.len).min(n) as u32
    }

    /// Forgets the current run (gap, counter regression).
    pub fn reset(&mut self) {
        self.flowing_since = None;
        self.alerting = false;
        self.run_days = 0;
        self.held = HeldDays::default();
        self.last = LastHours::default();
        self.steady_h = 0;
        self.known_l = 0;
    }

    /// Forgets what was learned from local day `day` on (the meter reported a
    /// magnetic field or a closed valve then: its register or its gas stopped, so its
    /// zero hours say nothing about the home): learned days of that day or later are
    /// taken out, and the day being summed is not learned.
    pub fn forget_since(&mut self, day: i64) {
        self.ring.forget_since(day);
        if self.day.is_some_and(|d| i64::from(d) >= day) {
            self.day_zero = false;
            self.day_measured = 0;
        }
    }

    /// Start of the current run of flow, if gas is flowing without a break.
    pub fn flowing_since(&self) -> Option<leakwatch_core::Timestamp> {
        self.flowing_since.map(crate::ts)
    }

    /// Learned days in the history and how many of them had a zero-flow hour.
    pub fn history(&self, cfg: &ContinuousFlowConfig) -> (usize, usize) {
        let n = cfg.history_days as usize;
        self.ring.recent(n).fold((0, 0), |(all, zero), i| {
            (all + 1, zero + usize::from(self.ring.is_zero(i)))
        })
    }

    /// The run's temperature: the lowest of today and yesterday (night temperatures
    /// decide whether a home heats through the night).
    fn now_temp(&self) -> Option<f32> {
        match (self.day_min, self.prev_day_min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn close_day(&mut self, cfg: &ContinuousFlowConfig) {
        let Some(day) = self.day.take() else {
            return;
        };
        let temp = temp_to_i8(self.day_min);
        self.prev_day_min = self.day_min;
        let weekend = is_weekend(i64::from(day));
        if self.day_zero {
            self.ring.push(true, weekend, temp, i64::from(day));
        } else if u32::from(self.day_measured) >= cfg.min_day_hours {
            if self.day_flagged && self.matured {
                self.held.push(weekend, temp);
            } else {
                self.ring.push(false, weekend, temp, i64::from(day));
                if self.flowing_since.is_some() {
                    self.run_days = self.run_days.saturating_add(1);
                }
            }
        }
        let n = (cfg.history_days as usize).min(HISTORY_CAPACITY);
        if usize::from(self.ring.len).min(n) >= cfg.min_history_days as usize {
            self.matured = true;
        }
    }

    /// Whether the history says the meter should have stopped during a run whose last
    /// `window_h` hours touched weekdays and/or weekend days: each kind of day touched
    /// must say so.
    fn judge(&self, cfg: &ContinuousFlowConfig, weekday: bool, weekend: bool) -> Judgement {
        let n = (cfg.history_days as usize).min(HISTORY_CAPACITY);
        let learned = usize::from(self.ring.len).min(n);
        let mature = learned >= cfg.min_history_days as usize;
        let mut worst = Judgement {
            alert: true,
            learned,
            zero_days: 0,
            flowing_days: 0,
            mature,
        };
        if !mature {
            return worst;
        }
        let mut worst_share = f64::INFINITY;
        for (_, kind) in [(weekday, false), (weekend, true)]
            .into_iter()
            .filter(|k| k.0)
        {
            // Each kind of day on its own: a home away on weekdays stops every weekday
            // whatever the weather, which says nothing about its weekends.
            let (z, f) = self.count(cfg, n, Some(kind));
            let share = if z + f == 0 {
                0.0
            } else {
                z as f64 / (z + f) as f64
            };
            let alert =
                z >= (cfg.min_comparable_days as usize).max(1) && share >= cfg.min_zero_day_share;
            if share < worst_share || !alert {
                worst_share = worst_share.min(share);
                worst = Judgement {
                    alert: alert && worst.alert,
                    learned,
                    zero_days: z,
                    flowing_days: f,
                    mature,
                };
            }
        }
        worst
    }

    /// Comparable learned days with and without a zero-flow hour among the last `n`
    /// (only weekend days with `Some(true)`, only weekdays with `Some(false)`).
    fn count(&self, cfg: &ContinuousFlowConfig, n: usize, weekend: Option<bool>) -> (usize, usize) {
        let now = if cfg.use_temp { self.now_temp() } else { None };
        let margin = cfg.temp_margin_c as f32;
        let (mut zero_days, mut flowing_days) = (0, 0);
        let days = self
            .ring
            .recent(n)
            .filter(|&i| weekend.is_none_or(|w| self.ring.is_weekend(i) == w));
        for i in days {
            let zero = self.ring.is_zero(i);
            let (colder, warmer) = match (now, temp_from_i8(self.ring.temps[i])) {
                (Some(now), Some(day)) => (day <= now + margin, day >= now - margin),
                _ => (true, true),
            };
            if zero && colder {
                zero_days += 1;
            } else if !zero && warmer {
                flowing_days += 1;
            }
        }
        (zero_days, flowing_days)
    }

    /// Whether the steady-floor rule holds: the floor held for `steady_hold_h` hours
    /// on a meter that stopped on at least `steady_min_zero_share` of its learned
    /// days.
    fn steady_holds(&self, cfg: &ContinuousFlowConfig) -> bool {
        if cfg.steady_hours == 0 || u32::from(self.steady_h) < cfg.steady_hold_h.max(1) {
            return false;
        }
        let (learned, zero) = self.history(cfg);
        learned > 0 && zero as f64 >= cfg.steady_min_zero_share * learned as f64
    }

    pub fn on_hour(
        &mut self,
        cfg: &ContinuousFlowConfig,
        ctx: &MeterCtx<'_>,
        h: &Hour,
        out: &mut Vec<Finding>,
    ) {
        let day = crate::local_day(h.start, ctx.local_utc_offset_h) as i32;
        if self.day != Some(day) {
            self.close_day(cfg);
            self.day = Some(day);
            self.day_zero = false;
            self.day_measured = 0;
            self.day_flagged = false;
            self.day_min = None;
        }
        if let Some(t) = h.temp.filter(|t| t.is_finite()) {
            self.day_min = Some(self.day_min.map_or(t, |m| m.min(t)));
        }
        if !h.measured() {
            self.reset();
            return;
        }
        self.day_measured = self.day_measured.saturating_add(1);
        if is_zero_flow(h.m3, cfg.zero_threshold_m3) {
            self.day_zero = true;
            if self.alerting && cfg.learn_ended_runs {
                // The run stopped by itself: it was the meter's own pattern.
                for (weekend, temp) in self.held.clone().days() {
                    self.ring.push(false, weekend, temp, i64::from(day));
                }
            }
            self.reset();
            return;
        }
        let start = h.start_s;
        let since = match self.flowing_since {
            Some(s) => {
                self.min_hourly_m3 = self.min_hourly_m3.min(h.m3 as f32);
                s
            }
            None => {
                self.flowing_since = Some(start);
                self.min_hourly_m3 = h.m3 as f32;
                self.run_days = 0;
                start
            }
        };
        let litres = (h.m3.max(0.0) * 1000.0).round().min(f64::from(u16::MAX)) as u16;
        self.last.push(litres);
        let floor = self.last.floor(cfg);
        let steady_now =
            cfg.steady_hours > 0 && floor.is_some_and(|(_, on)| on >= cfg.steady_hours);
        self.steady_h = if steady_now {
            self.steady_h.saturating_add(1)
        } else {
            0
        };
        let end = h.end;
        let hours = (end.timestamp() - since) / 3600;
        if hours < i64::from(cfg.window_h) {
            return;
        }
        let window = TimeDelta::hours(i64::from(cfg.window_h.max(1)));
        let first = crate::local_day(end - window, ctx.local_utc_offset_h);
        let (weekday, weekend) = day_kinds(first, i64::from(day));
        let j = self.judge(cfg, weekday, weekend);
        if !j.mature {
            // Learning: only a steady floor above what a pilot flame burns.
            let strong = cfg.steady_hours > 0
                && u32::from(self.steady_h) >= cfg.steady_hold_h.max(1)
                && floor.is_some_and(|(low, _)| f64::from(low) >= cfg.learning_min_floor_l);
            if !strong {
                return;
            }
        }
        let steady = !j.alert && j.mature && self.steady_holds(cfg);
        if !j.alert && !steady {
            return;
        }
        if !self.alerting && self.matured {
            // Days of this run learned before it alerted are held out too.
            let mut taken = vec![];
            for _ in 0..self.run_days {
                match self.ring.pop_flowing() {
                    Some(day) => taken.push(day),
                    None => break,
                }
            }
            for (weekend, temp) in taken.into_iter().rev() {
                self.held.push(weekend, temp);
            }
            self.run_days = 0;
        }
        self.alerting = true;
        self.day_flagged = true;
        let min = f64::from(self.min_hourly_m3);
        let history = if steady {
            let (low, on) = floor.unwrap_or_default();
            let (learned, zero) = self.history(cfg);
            format!(
                "it stopped on {zero} of its {learned} learned days, and for {} h \
                 every 24 h held at least {} hours on a steady floor (in the last 24 h, \
                 {on} hours within {} L of {low} L/h), as a leak's flow does whatever \
                 the weather (gas {} now).",
                self.steady_h,
                cfg.steady_hours,
                cfg.steady_tolerance_l
                    .max(cfg.steady_tolerance_rel * f64::from(low))
                    .round(),
                fmt_temp(self.now_temp())
            )
        } else if j.mature {
            format!(
                "it had one on {} of its {} learned days comparable in temperature \
                 (gas {} now).",
                j.zero_days,
                j.zero_days + j.flowing_days,
                fmt_temp(self.now_temp())
            )
        } else {
            let (low, on) = floor.unwrap_or_default();
            format!(
                "the meter is still learning ({} learned days of the {} needed), but \
                 for {} h every 24 h held at least {} hours on a steady floor of {low} \
                 L/h or more ({on} in the last 24 h), above what a pilot flame burns.",
                j.learned, cfg.min_history_days, self.steady_h, cfg.steady_hours
            )
        };
        out.push(finding(
            ctx,
            AlertKind::ContinuousFlow,
            Severity::Warning,
            end,
            Evidence {
                rule: if steady {
                    format!(
                        "no zero-flow hour in {} h, and at least {} hours of every 24 on a \
                         steady floor for {} h",
                        cfg.window_h,
                        cfg.steady_hours,
                        cfg.steady_hold_h.max(1)
                    )
                } else {
                    format!("no zero-flow hour in {} h", cfg.window_h)
                },
                observed: round6(min),
                expected: Some(0.0),
                threshold: cfg.zero_threshold_m3,
                unit: "m3/h".into(),
                window_start: crate::ts(since),
                window_end: end,
                explanation: format!(
                    "Gas has flowed for {hours} h without a single hour below {:.0} L; \
                     the lowest hourly flow was {:.0} L/h; {history}",
                    cfg.zero_threshold_m3 * 1000.0,
                    min * 1000.0
                ),
                known: None,
            },
        ));
        self.growth(cfg, ctx, floor, since, end, out);
    }

    /// While alerting: a steady floor well above the known one is a further leak.
    fn growth(
        &mut self,
        cfg: &ContinuousFlowConfig,
        ctx: &MeterCtx<'_>,
        floor: Option<(u16, u32)>,
        since: i64,
        end: leakwatch_core::Timestamp,
        out: &mut Vec<Finding>,
    ) {
        let Some((low, on)) = floor else { return };
        if self.known_l == 0 {
            self.known_l = low.max(1);
            return;
        }
        if cfg.growth_min_l <= 0.0 || cfg.steady_hours == 0 || on < cfg.steady_hours {
            return;
        }
        let known = f64::from(self.known_l);
        let threshold = known * (1.0 + cfg.growth_min_share) + cfg.growth_min_l;
        if f64::from(low) <= threshold {
            return;
        }
        out.push(finding(
            ctx,
            AlertKind::LeakGrowth,
            Severity::Warning,
            end,
            Evidence {
                rule: format!(
                    "while a continuous flow is known, a steady floor ({} of the last 24 \
                     hours on it) above the known floor by {:.0} % + {} L/h",
                    cfg.steady_hours,
                    cfg.growth_min_share * 100.0,
                    cfg.growth_min_l
                ),
                observed: round6(f64::from(low) / 1000.0),
                expected: Some(round6(known / 1000.0)),
                threshold: round6(threshold / 1000.0),
                unit: "m3/h".into(),
                window_start: end - TimeDelta::hours(24),
                window_end: end,
                explanation: format!(
                    "The flow known since {} never fell below {known:.0} L/h; over the \
                     last 24 h it never fell below {low} L/h ({on} hours on that floor): \
                     more gas is escaping than the known leak explains.",
                    crate::ts(since).format("%Y-%m-%d %H:%M UTC"),
                ),
                known: Some(leakwatch_core::Known {
                    kind: AlertKind::ContinuousFlow,
                    since: crate::ts(since),
                    magnitude: round6(known / 1000.0),
                }),
            },
        ));
        self.known_l = low;
    }
}

/// Whether a local day (days since the epoch, which was a Thursday) is a Saturday or
/// a Sunday.
fn is_weekend(day: i64) -> bool {
    (day + 3).rem_euclid(7) >= 5
}

/// Whether the local days `from..=to` include weekdays, weekend days.
fn day_kinds(from: i64, to: i64) -> (bool, bool) {
    (from..=to.min(from + 6)).fold((false, false), |(wd, we), d| {
        if is_weekend(d) {
            (wd, true)
        } else {
            (true, we)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testing::{at, ctx, feed_days, hour, round_trip, size, t};

    /// Feeds `days` local days from day `from` with `litres(day, local hour)` and a gas
    /// temperature per day.
    fn feed(
        s: &mut ContinuousFlow,
        cfg: &ContinuousFlowConfig,
        days: std::ops::Range<i64>,
        litres: impl Fn(i64, i64) -> f64,
        temp: impl Fn(i64) -> Option<f32>,
    ) -> Vec<Finding> {
        feed_days(days, litres, temp, |ctx, h, out| {
            s.on_hour(cfg, ctx, h, out)
        })
    }

    /// A home resting at night (01:00-05:00 local) and using 100 L/h otherwise.
    fn home(_d: i64, l: i64) -> f64 {
        if (1..5).contains(&l) { 0.0 } else { 100.0 }
    }

    #[test]
    fn a_new_meter_alerts_only_on_a_strong_steady_floor() {
        let cfg = ContinuousFlowConfig::default();
        // A 30 L/h leak from local noon of day 1: a pilot flame could explain it, and
        // the meter is still learning: nothing.
        let mut s = ContinuousFlow::default();
        let small = feed(
            &mut s,
            &cfg,
            0..3,
            |d, l| home(d, l) + if d * 24 + l >= 36 { 30.0 } else { 0.0 },
            |_| None,
        );
        assert!(small.is_empty(), "{small:?}");
        // A 60 L/h leak in a home resting 00:00-07:00: found once the floor has held
        // for `steady_hold_h` hours.
        let mut s = ContinuousFlow::default();
        let long_nights = |d: i64, l: i64| {
            let home = if (0..7).contains(&l) { 0.0 } else { 100.0 };
            home + if d * 24 + l >= 36 { 60.0 } else { 0.0 }
        };
        let out = feed(&mut s, &cfg, 0..4, long_nights, |_| None);
        let first = &out[0];
        // The run starts after the last zero hour (06:00-07:00 local of day 1); the
        // 24-hour window is full 24 h later, then the floor holds 24 h.
        assert_eq!(first.evidence.window_start, t(at(1, 7)));
        assert_eq!(first.detected_at, t(at(1, 7) + 24 + 23));
        assert_eq!(first.kind, AlertKind::ContinuousFlow);
        assert_eq!(first.meter_id.as_ref().unwrap().as_str(), "PDR-T-1");
        assert!((first.evidence.observed - 0.06).abs() < 1e-6, "{first:?}");
        assert!(first.evidence.explanation.contains("still learning"));
        // It keeps being found every hour while the leak flows.
        assert_eq!(out.len(), (at(4, 0) - at(1, 7) - 24 - 23 + 1) as usize);
    }

    #[test]
    fn a_home_with_quiet_nights_is_not_flagged() {
        let cfg = ContinuousFlowConfig::default();
        let mut s = ContinuousFlow::default();
        assert!(feed(&mut s, &cfg, 0..40, home, |_| Some(10.0)).is_empty());
        assert_eq!(s.history(&cfg), (28, 28));
    }

    #[test]
    fn a_pilot_flame_is_learned_and_then_quiet() {
        let cfg = ContinuousFlowConfig::default();
        let mut s = ContinuousFlow::default();
        let pilot = |d, l| home(d, l) + 15.0;
        let out = feed(&mut s, &cfg, 0..60, pilot, |_| Some(9.0));
        // Learning, a floor of 15 L/h is not strong evidence (a pilot flame burns
        // that); once learned, the pilot is the meter's pattern: never an alert.
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(s.history(&cfg), (28, 0));
    }

    #[test]
    fn a_leak_in_a_home_with_history_is_found_and_not_learned() {
        // Constant temperatures: compare with days exactly as cold as now.
        let cfg = ContinuousFlowConfig {
            temp_margin_c: 0.0,
            ..ContinuousFlowConfig::default()
        };
        let mut s = ContinuousFlow::default();
        assert!(feed(&mut s, &cfg, 0..20, home, |_| Some(10.0)).is_empty());
        let leak = |d, l| home(d, l) + 20.0;
        let out = feed(&mut s, &cfg, 20..50, leak, |_| Some(10.0));
        // The run began after the last quiet night hour (04:00-05:00 of day 19).
        assert_eq!(out[0].detected_at, t(at(19, 5) + 24));
        // The leak keeps being found after a month: its days stay out of the history.
        assert_eq!(out.last().unwrap().detected_at, t(at(50, 0)));
        assert_eq!(out.len(), (at(50, 0) - at(19, 5) - 23) as usize);
        let (learned, zero) = s.history(&cfg);
        assert_eq!(learned, zero, "no flowing day learned");
        round_trip(&s);
    }

    #[test]
    fn a_second_leak_on_top_of_a_known_one_is_reported_as_growth() {
        let cfg = ContinuousFlowConfig {
            temp_margin_c: 0.0,
            ..ContinuousFlowConfig::default()
        };
        let mut s = ContinuousFlow::default();
        assert!(feed(&mut s, &cfg, 0..20, home, |_| Some(10.0)).is_empty());
        let first = |d, l| home(d, l) + 40.0;
        let out = feed(&mut s, &cfg, 20..30, first, |_| Some(10.0));
        assert!(!out.is_empty());
        assert!(
            out.iter().all(|f| f.kind == AlertKind::ContinuousFlow),
            "{out:?}"
        );
        // A second leak of 100 L/h from day 30.
        let both = |d, l| home(d, l) + 140.0;
        let out = feed(&mut s, &cfg, 30..40, both, |_| Some(10.0));
        let growth: Vec<_> = out
            .iter()
            .filter(|f| f.kind == AlertKind::LeakGrowth)
            .collect();
        assert_eq!(growth.len(), 1, "{growth:?}");
        let g = growth[0];
        // Once the lowest hours of a whole 24 h window (the quiet night) are on the new
        // floor.
        assert!(
            g.detected_at >= t(at(30, 1)) && g.detected_at <= t(at(31, 6)),
            "{g:?}"
        );
        let known = g.evidence.known.as_ref().unwrap();
        assert_eq!(known.kind, AlertKind::ContinuousFlow);
        assert!((known.magnitude - 0.04).abs() < 0.002, "{known:?}");
        assert!((g.evidence.observed - 0.14).abs() < 0.002, "{g:?}");
        // The first alert keeps being repeated.
        assert!(
            out.iter()
                .filter(|f| f.kind == AlertKind::ContinuousFlow)
                .count()
                > 200
        );
        round_trip(&s);
    }

    #[test]
    fn a_home_heating_through_a_cold_snap_is_not_flagged() {
        let cfg = ContinuousFlowConfig::default();
        let mut s = ContinuousFlow::default();
        // Mild weeks (gas 12 °C), quiet nights.
        assert!(feed(&mut s, &cfg, 0..21, home, |_| Some(12.0)).is_empty());
        // A cold snap (gas 6 °C): the home heats day and night for five days, more in
        // some hours than in others.
        let snap = |d: i64, l: i64| 120.0 + ((d * 5 + l * 11) % 60) as f64;
        let out = feed(&mut s, &cfg, 21..26, snap, |_| Some(6.0));
        assert!(out.is_empty(), "{:?}", out.first());
        // Back to mild: nights are quiet again; the snap's days were learned.
        assert!(feed(&mut s, &cfg, 26..30, home, |_| Some(12.0)).is_empty());
        // The same meter heating through a cold weekend after having done so before.
        let out = feed(&mut s, &cfg, 30..33, snap, |_| Some(5.5));
        assert!(out.is_empty());
    }

    #[test]
    fn weekdays_do_not_vouch_for_weekends() {
        let cfg = ContinuousFlowConfig {
            temp_margin_c: 0.0,
            ..ContinuousFlowConfig::default()
        };
        let mut s = ContinuousFlow::default();
        let weekend = |d: i64| is_weekend(20_727 + d);
        // Away 09:00-17:00 on weekdays (a zero hour every weekday, whatever the
        // weather); heats through the night below 8 °C.
        let home = move |d: i64, l: i64, temp: f32| {
            let night = if temp < 8.0 {
                80.0 + ((d * 7 + l * 17) % 40) as f64
            } else {
                0.0
            };
            match l {
                23 | 0..=5 => night,
                6..=8 if !weekend(d) => 300.0,
                9..=16 if !weekend(d) => 0.0,
                _ => 300.0,
            }
        };
        // Three weeks of cold weekdays (5 °C) and mild weekends (12 °C).
        let temp = move |d: i64| if weekend(d) { 12.0 } else { 5.0 };
        let out = feed(
            &mut s,
            &cfg,
            0..21,
            |d, l| home(d, l, temp(d)),
            |d| Some(temp(d)),
        );
        assert!(out.is_empty());
        // A cold weekend (6 °C): gas flows from Friday 17:00 to Monday 09:00. The
        // weekdays stopped at 5 °C, but no weekend day this cold ever did.
        let temp = move |d: i64| if weekend(d) { 6.0 } else { 5.0 };
        let out = feed(
            &mut s,
            &cfg,
            21..26,
            |d, l| home(d, l, temp(d)),
            |d| Some(temp(d)),
        );
        assert!(out.is_empty(), "{:?}", out.first());
        // A leak on the following weekdays is found.
        let leak = move |d: i64, l: i64| home(d, l, temp(d)) + 30.0;
        assert!(!feed(&mut s, &cfg, 26..28, leak, |d| Some(temp(d))).is_empty());
    }

    #[test]
    fn an_alerting_run_that_ends_by_itself_is_learned() {
        let cfg = ContinuousFlowConfig::default();
        let mut s = ContinuousFlow::default();
        // A home with quiet nights at 8-12 °C...
        feed(&mut s, &cfg, 0..20, home, |d| Some(8.0 + (d % 5) as f32));
        // ... heats through a cold weekend at 9 °C: within what it was seen to stop
        // at, so it alerts.
        let out = feed(&mut s, &cfg, 20..23, |_, _| 150.0, |_| Some(9.0));
        assert!(!out.is_empty());
        let (learned_during, _) = s.history(&cfg);
        // The run ends: its three days (20, 21, 22) are learned as the meter's own
        // pattern.
        feed(&mut s, &cfg, 23..24, home, |_| Some(9.0));
        let (learned_after, zero) = s.history(&cfg);
        assert_eq!(learned_after, learned_during + 3);
        assert_eq!(learned_after - zero, 3);
    }

    #[test]
    fn flagged_days_do_not_pass_as_the_meters_pattern() {
        // Without learning ended runs, a meter whose history matured keeps its
        // flagged days out for good.
        let cfg = ContinuousFlowConfig {
            learn_ended_runs: false,
            ..ContinuousFlowConfig::default()
        };
        let mut s = ContinuousFlow::default();
        feed(&mut s, &cfg, 0..10, home, |_| None);
        feed(&mut s, &cfg, 10..14, |_, _| 50.0, |_| None);
        feed(&mut s, &cfg, 14..15, home, |_| None);
        assert_eq!(s.history(&cfg), (10, 10), "days 10-13 stay out");
    }

    #[test]
    fn gaps_break_a_run() {
        let cfg = ContinuousFlowConfig::default();
        let mut s = ContinuousFlow::default();
        let mut out = vec![];
        for h in 0..30 {
            let mut hr = hour(h, 50.0, None);
            if h == 12 {
                hr.spread_h = 3;
            }
            s.on_hour(&cfg, &ctx(), &hr, &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(s.flowing_since(), Some(t(13)));
    }

    /// A home heating by day (more when colder) and resting at night (23:00-06:00).
    fn heated_home(temp: f32) -> impl Fn(i64, i64) -> f64 {
        move |_d, l| {
            if l == 23 || l < 6 {
                0.0
            } else {
                100.0 + f64::from((12.0 - temp).max(0.0)) * 20.0
            }
        }
    }

    #[test]
    fn a_steady_leak_in_the_coldest_spell_so_far_is_found() {
        let cfg = ContinuousFlowConfig::default();
        let mut s = ContinuousFlow::default();
        // Three mild weeks (gas 10-12 °C), quiet nights.
        for d in 0..21 {
            let temp = 10.0 + (d % 3) as f32;
            let out = feed(&mut s, &cfg, d..d + 1, heated_home(temp), |_| Some(temp));
            assert!(out.is_empty());
        }
        // A 6 L/h leak starts with the coldest spell so far (gas 6 °C): no learned day
        // stopped at this temperature, but the nights sit on a steady floor.
        let leak = |d, l| heated_home(6.0)(d, l) + 6.0;
        let out = feed(&mut s, &cfg, 21..25, leak, |_| Some(6.0));
        let first = out.first().expect("found");
        // The run starts with the first hour of the leak (23:00 of day 20 is still
        // quiet); its first 24-hour window is full at the end of its 24th hour, and
        // the floor must hold for that window and the 23 after it.
        assert_eq!(first.detected_at, t(at(21, 0) + 47));
        assert!(first.evidence.rule.contains("steady floor"), "{first:?}");
        assert!(
            first.evidence.explanation.contains("within 1 L of 6 L/h"),
            "{}",
            first.evidence.explanation
        );
        round_trip(&s);
    }

    #[test]
    fn heating_through_the_coldest_nights_so_far_is_not_a_steady_floor() {
        let cfg = ContinuousFlowConfig::default();
        let mut s = ContinuousFlow::default();
        for d in 0..21 {
            let temp = 10.0 + (d % 3) as f32;
            feed(&mut s, &cfg, d..d + 1, heated_home(temp), |_| Some(temp));
        }
        // A frost guard: 10-30 L/h at night, varying with the boiler from hour to hour.
        let guard = |d: i64, l: i64| {
            let night = 10.0 + ((d * 7 + l * 13) % 20) as f64;
            if l == 23 || l < 6 {
                night
            } else {
                heated_home(5.0)(d, l)
            }
        };
        let out = feed(&mut s, &cfg, 21..28, guard, |_| Some(5.0));
        assert!(out.is_empty(), "{:?}", out.first());
        // A pilot flame's floor is steady too, but it never stopped: quiet.
        let cfg = ContinuousFlowConfig::default();
        let mut s = ContinuousFlow::default();
        let pilot = |d, l| home(d, l) + 15.0;
        let out = feed(&mut s, &cfg, 0..40, pilot, |_| Some(9.0));
        assert!(out.iter().all(|f| f.detected_at <= t(at(8, 0))));
    }

    #[test]
    fn state_is_small_and_survives_serde() {
        let cfg = ContinuousFlowConfig::default();
        let mut s = ContinuousFlow::default();
        feed(
            &mut s,
            &cfg,
            0..40,
            |d, l| home(d, l) + 5.0,
            |d| Some(d as f32 / 3.0),
        );
        round_trip(&s);
        let n = size(&s);
        assert!(n <= 150, "{n} bytes");
    }
}
