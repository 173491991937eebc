//! The consumption model: the weather, the kinds of homes and how much gas each burns
//! in an hour. `docs/simulator.md` describes it with its numbers; this module is the
//! reference.
//!
//! - [`Weather`]: outdoor temperature = a seasonal and daily climate
//!   ([`climate_temp_c`], roughly Florence) plus a seeded, smooth weather anomaly (an
//!   AR(1) series of daily values, σ ≈ 3 °C, and cold snaps of 3-7 days), the same for
//!   every district. The gas temperature reported by the meters follows it, pulled
//!   toward the ground temperature ([`Weather::gas_temp_c`]).
//! - [`HomeClass`] and [`HouseholdMix`]: the kinds of homes and their shares (setback
//!   homes resting at night, homes heated through cold nights, vacant homes, pilot
//!   flames, commercial users, cooking-only homes).
//! - [`Household`]: one home's habits, drawn once per meter, and
//!   [`Household::hour_litres`], its consumption in an hour: space heating in
//!   proportion to the deficit below the home's base temperature, on the home's
//!   schedule (morning and evening peaks, away on weekdays or not, at home on weekends),
//!   plus cooking and hot-water events at meal times.
//!
//! Local time is a fixed UTC offset ([`LOCAL_UTC_OFFSET_H`], Central European Time;
//! daylight saving is ignored). Everything here is pure: randomness comes from the
//! caller's generator, so a seed gives the same consumption.

use chrono::{Datelike, Duration, Timelike, Weekday};
use leakwatch_core::Timestamp;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::f64::consts::{PI, TAU};

/// Hours added to UTC to get the homes' local time (CET, no daylight saving).
pub const LOCAL_UTC_OFFSET_H: i64 = 1;

/// Ground temperature (°C) toward which the gas in the pipes is pulled.
pub const GROUND_TEMP_C: f64 = 12.0;

/// Default share of the gas entering a district that never reaches a customer meter
/// (the network's loss baseline, about 1 %; see `FleetConfig::network_loss`).
pub const NETWORK_LOSS: f64 = 0.01;

/// Default relative standard deviation of a station meter's hourly measurement
/// (0.3 %; see `FleetConfig::station_noise`).
pub const STATION_NOISE: f64 = 0.003;

/// Correlation of the weather anomaly from one day to the next (AR(1)).
const WEATHER_PHI: f64 = 0.8;
/// Standard deviation of the AR(1) part of the weather anomaly, °C.
const WEATHER_SIGMA_C: f64 = 3.0;
/// Terms of the AR(1) sum (0.8^40 ≈ 1e-4: the rest does not matter).
const WEATHER_TERMS: i64 = 40;
/// Cold snaps: at most one starts in each block of this many days...
const SNAP_BLOCK_DAYS: i64 = 10;
/// ... with this probability.
const SNAP_P: f64 = 0.35;

/// Outdoor temperature (°C) below which vacant homes run frost protection.
pub const FROST_PROTECTION_C: f64 = 1.0;
/// Outdoor temperature (°C) below which setback homes with a frost guard heat a little
/// at night.
pub const SETBACK_NIGHT_GUARD_C: f64 = 2.0;

/// `t` in local time (still typed UTC: only the wall-clock fields are meaningful).
fn local(t: Timestamp) -> Timestamp {
    t + Duration::hours(LOCAL_UTC_OFFSET_H)
}

/// The local hour of day (0..24) of a UTC time.
pub fn local_hour(t: Timestamp) -> u32 {
    local(t).hour()
}

/// Whether `t` falls on a Saturday or a Sunday, local time.
pub fn is_weekend(t: Timestamp) -> bool {
    matches!(local(t).weekday(), Weekday::Sat | Weekday::Sun)
}

/// The climate without weather (°C): a seasonal trend (coldest mid-January at about
/// 6 °C, warmest mid-July at about 24 °C, roughly Florence) plus a daily sinusoid of
/// ±4 °C peaking at 15:00 local. [`Weather::outdoor_temp_c`] adds the weather.
pub fn climate_temp_c(t: Timestamp) -> f64 {
    let local = local(t);
    let hour = f64::from(local.hour()) + f64::from(local.minute()) / 60.0;
    let day_of_year = f64::from(local.ordinal0()) + hour / 24.0;
    let seasonal = 15.0 - 9.0 * ((day_of_year - 15.0) / 365.25 * TAU).cos();
    let daily = 4.0 * ((hour - 15.0) / 24.0 * TAU).cos();
    seasonal + daily
}

/// A volume in m³ rounded to the litre, as an integer number of litres.
pub fn litres(m3: f64) -> u64 {
    (m3.max(0.0) * 1000.0).round() as u64
}

/// SplitMix64: a fast, well-mixed hash of a 64-bit value.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform number in (0, 1] from a hash.
fn unit(h: u64) -> f64 {
    ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

/// A standard normal number (Box-Muller on two uniforms).
pub fn std_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

/// A log-uniform number in `lo..=hi` (both positive).
pub fn log_uniform<R: Rng + ?Sized>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    if hi <= lo {
        return lo;
    }
    (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp()
}

/// The weather: outdoor temperature as the climate plus a seeded, smooth anomaly.
///
/// The anomaly has one value per local day (at local noon), interpolated smoothly
/// (half-cosine) between noons, so the temperature never jumps from one hour to the
/// next. A day's value is the sum of:
/// - an AR(1) series with a day-to-day correlation of 0.8 and a standard deviation of
///   3 °C (spells of mild or cold weather of several days);
/// - cold snaps: in each block of 10 days, with probability 0.35, a snap of 3-7 days
///   that lowers the temperature by 3-8 °C (ramping in over a day and out over two).
///
/// Every value is a hash of the seed and the day, so the weather is the same for a
/// given seed whatever the order of the questions; the days of the run are computed
/// once in advance ([`Weather::new`]) and other days on demand.
#[derive(Debug, Clone)]
pub struct Weather {
    key: u64,
    /// Local day number (days since 1970-01-01, local time) of `anomalies[0]`.
    first_day: i64,
    /// The anomaly at local noon of each day from `first_day`.
    anomalies: Vec<f64>,
}

impl Weather {
    /// The weather of `seed`, with the anomalies of the `days` days from `from`
    /// computed in advance (any other day is computed when asked for).
    pub fn new(seed: u64, from: Timestamp, days: u32) -> Weather {
        let mut w = Weather {
            key: splitmix(seed ^ 0x5745_4154_4845_5221), // "WEATHER!"
            first_day: 0,
            anomalies: Vec::new(),
        };
        let first = Weather::local_day(from) - 2;
        let anomalies = (first..first + i64::from(days) + 5)
            .map(|d| w.daily_anomaly(d))
            .collect();
        w.first_day = first;
        w.anomalies = anomalies;
        w
    }

    fn local_day(t: Timestamp) -> i64 {
        local(t).timestamp().div_euclid(86_400)
    }

    fn hash(&self, stream: u64, n: i64) -> u64 {
        splitmix(self.key ^ splitmix(stream.wrapping_mul(0x1000_0000_01B3) ^ n as u64))
    }

    /// The daily innovation of the AR(1) series: a standard normal number.
    fn innovation(&self, day: i64) -> f64 {
        let u1 = unit(self.hash(1, day));
        let u2 = unit(self.hash(2, day));
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }

    /// How much the cold snaps lower local noon of `day`, °C (positive).
    fn cold_snaps(&self, day: i64) -> f64 {
        let block = day.div_euclid(SNAP_BLOCK_DAYS);
        let mut total = 0.0;
        for b in block - 1..=block {
            if unit(self.hash(3, b)) >= SNAP_P {
                continue;
            }
            let h = self.hash(4, b);
            let start = b * SNAP_BLOCK_DAYS + (h % SNAP_BLOCK_DAYS as u64) as i64;
            let days = 3 + ((h >> 16) % 5) as i64; // 3..=7
            let depth = 3.0 + 5.0 * unit(self.hash(5, b));
            let p = day - start;
            if (0..days).contains(&p) {
                let shape = (0.6 + 0.4 * p as f64)
                    .min(0.5 + 0.5 * (days - 1 - p) as f64)
                    .min(1.0);
                total += depth * shape;
            }
        }
        total
    }

    /// The anomaly at local noon of `day`, computed from the hashes.
    fn daily_anomaly(&self, day: i64) -> f64 {
        let scale = WEATHER_SIGMA_C * (1.0 - WEATHER_PHI * WEATHER_PHI).sqrt();
        let mut ar = 0.0;
        let mut weight = 1.0;
        for j in 0..WEATHER_TERMS {
            ar += weight * self.innovation(day - j);
            weight *= WEATHER_PHI;
        }
        scale * ar - self.cold_snaps(day)
    }

    fn anomaly_of_day(&self, day: i64) -> f64 {
        usize::try_from(day - self.first_day)
            .ok()
            .and_then(|i| self.anomalies.get(i).copied())
            .unwrap_or_else(|| self.daily_anomaly(day))
    }

    /// The weather's departure from the climate at `t`, °C.
    pub fn anomaly_c(&self, t: Timestamp) -> f64 {
        // Days since local noon of day 0: whole at noon, where the daily values sit.
        let x = (local(t).timestamp() as f64 - 43_200.0) / 86_400.0;
        let day = x.floor();
        let s = (1.0 - (PI * (x - day)).cos()) / 2.0;
        let d = day as i64;
        self.anomaly_of_day(d) * (1.0 - s) + self.anomaly_of_day(d + 1) * s
    }

    /// Outdoor temperature at `t`, °C: [`climate_temp_c`] plus [`Weather::anomaly_c`].
    /// Deterministic: the same seed and `t` always give the same value.
    pub fn outdoor_temp_c(&self, t: Timestamp) -> f64 {
        climate_temp_c(t) + self.anomaly_c(t)
    }

    /// The gas temperature at the meters, °C, before each meter's own offset and noise:
    /// half the outdoor temperature, half the ground's ([`GROUND_TEMP_C`]).
    pub fn gas_temp_c(&self, t: Timestamp) -> f64 {
        0.5 * self.outdoor_temp_c(t) + 0.5 * GROUND_TEMP_C
    }
}

/// The kinds of gas customers, each with its own rhythm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HomeClass {
    /// Heating off (or set back) at night: zero flow most nights; a quarter of them
    /// have a frost guard and heat a little on nights below 2 °C.
    Setback,
    /// Heats through the night when it is colder outside than the home's threshold
    /// (6-10 °C): no zero hour on cold nights, zero hours in mild weather.
    NightHeating,
    /// Nobody lives there: nothing, except frost protection below 1 °C and a rare visit.
    Vacant,
    /// A setback home with a pilot flame (old boiler or gas fire) burning 8-30 L/h
    /// day and night: never a zero hour.
    Pilot,
    /// A bakery, restaurant or small process: a base load every hour, noisy and larger,
    /// plus its opening hours.
    Commercial,
    /// Gas for cooking and hot water only (heated otherwise): no heating at all.
    Plain,
}

impl HomeClass {
    /// Every class, in the order of [`HouseholdMix`]'s fields.
    pub const ALL: [HomeClass; 6] = [
        HomeClass::Setback,
        HomeClass::NightHeating,
        HomeClass::Vacant,
        HomeClass::Pilot,
        HomeClass::Commercial,
        HomeClass::Plain,
    ];

    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            HomeClass::Setback => "setback",
            HomeClass::NightHeating => "night_heating",
            HomeClass::Vacant => "vacant",
            HomeClass::Pilot => "pilot",
            HomeClass::Commercial => "commercial",
            HomeClass::Plain => "plain",
        }
    }

    /// Whether gas flows every hour, whatever the weather (without any leak).
    pub fn never_stops(self) -> bool {
        matches!(self, HomeClass::Pilot | HomeClass::Commercial)
    }
}

impl std::fmt::Display for HomeClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The share of customer meters of each [`HomeClass`]; each meter's class is drawn
/// with these weights (they need not sum to 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HouseholdMix {
    pub setback: f64,
    pub night_heating: f64,
    pub vacant: f64,
    pub pilot: f64,
    pub commercial: f64,
    pub plain: f64,
}

impl Default for HouseholdMix {
    /// 70 % setback, 15 % night heating, 5 % vacant, 3 % pilot flame, 2 % commercial,
    /// 5 % cooking only.
    fn default() -> Self {
        HouseholdMix {
            setback: 0.70,
            night_heating: 0.15,
            vacant: 0.05,
            pilot: 0.03,
            commercial: 0.02,
            plain: 0.05,
        }
    }
}

impl HouseholdMix {
    /// Every meter of one class.
    pub fn only(class: HomeClass) -> HouseholdMix {
        let mut mix = HouseholdMix {
            setback: 0.0,
            night_heating: 0.0,
            vacant: 0.0,
            pilot: 0.0,
            commercial: 0.0,
            plain: 0.0,
        };
        *mix.share_mut(class) = 1.0;
        mix
    }

    fn share_mut(&mut self, class: HomeClass) -> &mut f64 {
        match class {
            HomeClass::Setback => &mut self.setback,
            HomeClass::NightHeating => &mut self.night_heating,
            HomeClass::Vacant => &mut self.vacant,
            HomeClass::Pilot => &mut self.pilot,
            HomeClass::Commercial => &mut self.commercial,
            HomeClass::Plain => &mut self.plain,
        }
    }

    /// The weight of `class` (negative and non-finite weights count as 0).
    pub fn share(&self, class: HomeClass) -> f64 {
        let w = match class {
            HomeClass::Setback => self.setback,
            HomeClass::NightHeating => self.night_heating,
            HomeClass::Vacant => self.vacant,
            HomeClass::Pilot => self.pilot,
            HomeClass::Commercial => self.commercial,
            HomeClass::Plain => self.plain,
        };
        if w.is_finite() { w.max(0.0) } else { 0.0 }
    }

    /// Draws a class with these weights; all zero means [`HomeClass::Setback`].
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> HomeClass {
        let total: f64 = HomeClass::ALL.iter().map(|&c| self.share(c)).sum();
        if total <= 0.0 {
            return HomeClass::Setback;
        }
        let mut x = rng.random::<f64>() * total;
        for c in HomeClass::ALL {
            x -= self.share(c);
            if x < 0.0 {
                return c;
            }
        }
        HomeClass::ALL
            .into_iter()
            .rev()
            .find(|&c| self.share(c) > 0.0)
            .unwrap_or(HomeClass::Setback)
    }
}

/// What the model needs to know about an hour, computed once for the whole fleet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourContext {
    /// Local hour of day (0..24) of the hour's start.
    pub local_hour: u32,
    /// Local day of the week.
    pub weekday: Weekday,
    /// Outdoor temperature at the middle of the hour, °C.
    pub outdoor_c: f64,
}

impl HourContext {
    /// The context of the hour that starts at `hour_start`.
    pub fn new(weather: &Weather, hour_start: Timestamp) -> HourContext {
        HourContext {
            local_hour: local_hour(hour_start),
            weekday: local(hour_start).weekday(),
            outdoor_c: weather.outdoor_temp_c(hour_start + Duration::minutes(30)),
        }
    }

    /// Saturday or Sunday.
    pub fn weekend(&self) -> bool {
        matches!(self.weekday, Weekday::Sat | Weekday::Sun)
    }
}

/// A commercial customer's business: a base load every hour and its opening hours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Business {
    /// Load every hour, day and night (ovens kept warm, process, hot water), litres/hour.
    pub base_l_per_h: f64,
    /// Extra load while open, litres/hour.
    pub open_l_per_h: f64,
    /// Local hours `open_h..close_h` are open.
    pub open_h: u32,
    pub close_h: u32,
    /// The day of the week it is closed.
    pub closed_on: Weekday,
}

/// One home's habits, drawn once per meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Household {
    pub class: HomeClass,
    /// Space heating, litres per hour per °C below `base_c` (0 for cooking-only homes).
    pub heating_l_per_c: f64,
    /// Base temperature of the heating degree deficit, 15.5..18 °C.
    pub base_c: f64,
    /// Local hour the home wakes up on weekdays (an hour later on weekends), 5..=7.
    pub wake_h: u32,
    /// Local hour the home goes to bed (first hour at night), 22..=24.
    pub sleep_h: u32,
    /// Out from 09:00 to 17:00 on weekdays (heating off, no cooking).
    pub away_weekdays: bool,
    /// Probability of a cooking or hot-water event in a busy hour (morning, evening).
    pub event_p: f64,
    /// Heats at night when the outdoor temperature is below this (°C): night-heating
    /// homes (6-10 °C) and setback homes with a frost guard (2 °C).
    pub night_heat_below_c: Option<f64>,
    /// Pilot flame, litres per hour, burning every hour (0 without one).
    pub pilot_l_per_h: f64,
    /// Commercial customers only.
    pub business: Option<Business>,
}

impl Household {
    /// Draws the habits of a home of `class`.
    pub fn random<R: Rng + ?Sized>(class: HomeClass, rng: &mut R) -> Household {
        let mut home = Household {
            class,
            heating_l_per_c: rng.random_range(15.0..50.0),
            base_c: rng.random_range(15.5..18.0),
            wake_h: rng.random_range(5..=7),
            sleep_h: rng.random_range(22..=24),
            away_weekdays: rng.random_bool(0.6),
            event_p: rng.random_range(0.3..0.6),
            night_heat_below_c: None,
            pilot_l_per_h: 0.0,
            business: None,
        };
        match class {
            HomeClass::Setback => {
                if rng.random_bool(0.25) {
                    home.night_heat_below_c = Some(SETBACK_NIGHT_GUARD_C);
                }
            }
            HomeClass::NightHeating => {
                home.night_heat_below_c = Some(rng.random_range(6.0..10.0));
            }
            HomeClass::Pilot => {
                home.pilot_l_per_h = (rng.random_range(8.0..=30.0_f64) * 10.0).round() / 10.0;
            }
            HomeClass::Plain => home.heating_l_per_c = 0.0,
            HomeClass::Vacant => {}
            HomeClass::Commercial => {
                home.heating_l_per_c *= 2.0;
                home.business = Some(Business {
                    base_l_per_h: log_uniform(rng, 40.0, 250.0),
                    open_l_per_h: log_uniform(rng, 300.0, 2500.0),
                    open_h: rng.random_range(5..=8),
                    close_h: rng.random_range(19..=23),
                    closed_on: [Weekday::Sun, Weekday::Mon, Weekday::Wed][rng.random_range(0..3)],
                });
            }
        }
        home
    }

    /// The heating schedule's factor in local hour `h` while the home is awake.
    fn day_factor(&self, ctx: &HourContext, wake: u32) -> f64 {
        let h = ctx.local_hour;
        if self.away_weekdays && !ctx.weekend() && (9..17).contains(&h) {
            0.0
        } else if h < wake + 2 {
            1.5 // warming the home up after the night
        } else if (18..=21).contains(&h) {
            1.2
        } else {
            1.0
        }
    }

    /// Probability of a cooking / hot-water event in local hour `h` while awake and at
    /// home, and how big it is relative to the usual (weekend lunches are bigger).
    fn event_chance(&self, ctx: &HourContext, wake: u32) -> (f64, f64) {
        let h = ctx.local_hour;
        let weekend = ctx.weekend();
        if self.away_weekdays && !weekend && (9..17).contains(&h) {
            return (0.0, 1.0);
        }
        if (wake..wake + 3).contains(&h) || (18..=21).contains(&h) {
            (self.event_p, 1.0)
        } else if (12..=13).contains(&h) {
            if weekend {
                (self.event_p, 1.5)
            } else {
                (self.event_p * 0.4, 1.0)
            }
        } else {
            (0.05, 1.0)
        }
    }

    /// A cooking or hot-water event's volume, litres (50..400, log-uniform).
    fn event_litres<R: Rng + ?Sized>(rng: &mut R) -> f64 {
        log_uniform(rng, 50.0, 400.0)
    }

    /// Gas burnt (litres) in an hour while nobody is at home (away, or the home
    /// vacated): the pilot flame, and frost protection below 1 °C.
    pub fn empty_litres<R: Rng + ?Sized>(&self, ctx: &HourContext, rng: &mut R) -> f64 {
        let mut l = self.pilot_l_per_h;
        if let Some(b) = &self.business {
            // A business closed for its holidays keeps a small base load.
            l += 0.2 * b.base_l_per_h * rng.random_range(0.7..1.3);
        }
        let t_out = ctx.outdoor_c;
        if t_out < FROST_PROTECTION_C && self.heating_l_per_c > 0.0 {
            l += self.heating_l_per_c * (4.0 - t_out) * 0.2 * rng.random_range(0.8..1.2);
        }
        l
    }

    /// Gas burnt (litres, not rounded) in the hour described by `ctx`, without leaks.
    pub fn hour_litres<R: Rng + ?Sized>(&self, ctx: &HourContext, rng: &mut R) -> f64 {
        let h = ctx.local_hour;
        let t_out = ctx.outdoor_c;
        match self.class {
            HomeClass::Vacant => {
                let mut l = 0.0;
                if t_out < FROST_PROTECTION_C {
                    l += self.heating_l_per_c * (4.0 - t_out) * 0.2 * rng.random_range(0.8..1.2);
                }
                if (9..20).contains(&h) && rng.random_bool(0.003) {
                    l += rng.random_range(10.0..50.0);
                }
                l
            }
            HomeClass::Commercial => {
                let Some(b) = &self.business else {
                    return 0.0;
                };
                let mut l = b.base_l_per_h * rng.random_range(0.7..1.3);
                if (b.open_h..b.close_h).contains(&h) && ctx.weekday != b.closed_on {
                    let deficit = (self.base_c - t_out).max(0.0);
                    l += b.open_l_per_h * rng.random_range(0.5..1.5)
                        + self.heating_l_per_c * deficit * rng.random_range(0.8..1.2);
                }
                l
            }
            HomeClass::Setback | HomeClass::NightHeating | HomeClass::Pilot | HomeClass::Plain => {
                let wake = self.wake_h + u32::from(ctx.weekend());
                let awake = (wake..self.sleep_h).contains(&h);
                let mut l = self.pilot_l_per_h;
                let deficit = (self.base_c - t_out).max(0.0);
                if awake {
                    let factor = self.day_factor(ctx, wake);
                    if factor > 0.0 && deficit > 0.0 {
                        l += self.heating_l_per_c * deficit * factor * rng.random_range(0.8..1.2);
                    }
                    let (p, size) = self.event_chance(ctx, wake);
                    if p > 0.0 && rng.random_bool(p) {
                        l += Household::event_litres(rng) * size;
                    }
                } else if let Some(below) = self.night_heat_below_c
                    && t_out < below
                    && self.heating_l_per_c > 0.0
                {
                    let night = if self.class == HomeClass::NightHeating {
                        // A night setpoint 2 °C below the day's.
                        (self.base_c - 2.0 - t_out).max(0.0) * 0.7
                    } else {
                        // A frost guard: a little, only on very cold nights.
                        (6.0 - t_out).max(0.0) * 0.15
                    };
                    l += self.heating_l_per_c * night * rng.random_range(0.8..1.2);
                }
                l
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn climate_follows_season_and_day() {
        let jan = Utc.with_ymd_and_hms(2027, 1, 15, 14, 0, 0).unwrap();
        let jul = Utc.with_ymd_and_hms(2027, 7, 15, 14, 0, 0).unwrap();
        assert!(climate_temp_c(jan) < climate_temp_c(jul) - 10.0);
        let night = Utc.with_ymd_and_hms(2026, 11, 1, 3, 0, 0).unwrap();
        let afternoon = Utc.with_ymd_and_hms(2026, 11, 1, 14, 0, 0).unwrap();
        assert!(climate_temp_c(night) < climate_temp_c(afternoon));
        let nov = climate_temp_c(night);
        assert!((0.0..20.0).contains(&nov), "{nov}");
    }

    #[test]
    fn weather_is_seeded_smooth_and_about_three_degrees() {
        let from = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();
        let a = Weather::new(3, from, 30);
        let b = Weather::new(3, from, 400);
        let c = Weather::new(4, from, 30);
        let mut anomalies = Vec::new();
        let mut differs = false;
        let mut last = a.outdoor_temp_c(from);
        for h in 0..(3 * 365 * 24) {
            let t = from + Duration::hours(h);
            let x = a.outdoor_temp_c(t);
            // Cached and computed days agree.
            assert!((x - b.outdoor_temp_c(t)).abs() < 1e-9, "{t}");
            differs |= (x - c.outdoor_temp_c(t)).abs() > 0.5;
            // No jumps from one hour to the next beyond the daily cycle's.
            assert!((x - last).abs() < 2.5, "{t}: {last} -> {x}");
            last = x;
            if h % 24 == 11 {
                anomalies.push(a.anomaly_c(t));
            }
        }
        assert!(differs, "another seed, other weather");
        let n = anomalies.len() as f64;
        let mean = anomalies.iter().sum::<f64>() / n;
        let sd = (anomalies.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        // The AR(1) part has σ 3 °C; cold snaps add a negative mean and spread.
        assert!((-3.0..0.0).contains(&mean), "mean anomaly {mean}");
        assert!((2.5..4.5).contains(&sd), "sd {sd}");
        // Persistence: neighbouring days are alike.
        let lag1 = anomalies
            .windows(2)
            .map(|w| (w[0] - mean) * (w[1] - mean))
            .sum::<f64>()
            / (n - 1.0)
            / sd.powi(2);
        assert!(lag1 > 0.6, "day-to-day correlation {lag1}");
        // Some cold snaps: a few days at least 5 °C below the climate.
        let cold = anomalies.iter().filter(|&&x| x < -5.0).count();
        assert!(cold > 10, "{cold} cold days in three years");
    }

    #[test]
    fn gas_is_between_outdoor_and_ground() {
        let w = Weather::new(1, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(), 30);
        for h in 0..(30 * 24) {
            let t = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + Duration::hours(h);
            let (o, g) = (w.outdoor_temp_c(t), w.gas_temp_c(t));
            assert!((g - (o + GROUND_TEMP_C) / 2.0).abs() < 1e-9);
        }
    }

    #[test]
    fn classes_draw_with_their_shares() {
        let mut rng = StdRng::seed_from_u64(1);
        let mix = HouseholdMix::default();
        let n = 100_000;
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..n {
            *counts.entry(mix.draw(&mut rng)).or_insert(0u32) += 1;
        }
        for c in HomeClass::ALL {
            let share = f64::from(counts[&c]) / f64::from(n);
            assert!((share - mix.share(c)).abs() < 0.01, "{c}: {share}");
        }
        let only = HouseholdMix::only(HomeClass::Pilot);
        assert!((0..100).all(|_| only.draw(&mut rng) == HomeClass::Pilot));
        assert_eq!(
            serde_json::to_string(&HomeClass::NightHeating).unwrap(),
            "\"night_heating\""
        );
    }

    fn ctx(local_hour: u32, weekday: Weekday, outdoor_c: f64) -> HourContext {
        HourContext {
            local_hour,
            weekday,
            outdoor_c,
        }
    }

    #[test]
    fn setback_homes_rest_at_night_unless_very_cold() {
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..500 {
            let home = Household::random(HomeClass::Setback, &mut rng);
            for h in 0..5 {
                assert_eq!(home.hour_litres(&ctx(h, Weekday::Tue, 5.0), &mut rng), 0.0);
                let cold = home.hour_litres(&ctx(h, Weekday::Tue, -3.0), &mut rng);
                assert_eq!(cold > 0.0, home.night_heat_below_c.is_some());
            }
            // Awake on a cold morning: heating.
            let morning = home.hour_litres(&ctx(8, Weekday::Sat, 3.0), &mut rng);
            assert!(morning > 100.0, "{morning}");
        }
    }

    #[test]
    fn night_heating_depends_on_the_weather() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..500 {
            let home = Household::random(HomeClass::NightHeating, &mut rng);
            for h in 0..5 {
                assert!(home.hour_litres(&ctx(h, Weekday::Wed, 5.0), &mut rng) > 10.0);
                assert_eq!(home.hour_litres(&ctx(h, Weekday::Wed, 11.0), &mut rng), 0.0);
            }
        }
    }

    #[test]
    fn pilots_and_businesses_never_stop_and_vacant_homes_barely_use_gas() {
        let mut rng = StdRng::seed_from_u64(4);
        for _ in 0..200 {
            let pilot = Household::random(HomeClass::Pilot, &mut rng);
            let shop = Household::random(HomeClass::Commercial, &mut rng);
            let vacant = Household::random(HomeClass::Vacant, &mut rng);
            let plain = Household::random(HomeClass::Plain, &mut rng);
            let mut vacant_total = 0.0;
            for h in 0..24 * 7 {
                let day = [Weekday::Mon, Weekday::Sat, Weekday::Sun][h as usize % 3];
                let c = ctx(h % 24, day, 14.0);
                let p = pilot.hour_litres(&c, &mut rng);
                assert!(p >= 8.0, "pilot {p}");
                assert!(shop.hour_litres(&c, &mut rng) >= 25.0);
                vacant_total += vacant.hour_litres(&c, &mut rng);
                if h % 24 < 5 {
                    assert_eq!(plain.hour_litres(&ctx(h % 24, day, -5.0), &mut rng), 0.0);
                }
            }
            assert!(
                vacant_total < 200.0,
                "a vacant home used {vacant_total} L in a week"
            );
            // Frost protection in a cold snap.
            assert!(vacant.hour_litres(&ctx(3, Weekday::Mon, -4.0), &mut rng) > 0.0);
        }
    }

    #[test]
    fn litres_round() {
        assert_eq!(litres(1.2344), 1234);
        assert_eq!(litres(-1.0), 0);
    }
}
