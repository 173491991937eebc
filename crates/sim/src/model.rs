//! The consumption model: how much gas a simulated home burns in an hour.
//!
//! Deliberately simple (the walking skeleton); a later issue makes it richer. What it
//! guarantees, because the detectors and the tests rely on it:
//!
//! - a home burns nothing while it sleeps: every local hour from midnight to 05:00 is
//!   a zero-consumption hour, so a meter without a leak always has at least five
//!   zero hours per night;
//! - while awake, a home heats in proportion to how far the outdoor temperature
//!   ([`outdoor_temp_c`]) is below [`HEATING_BASE_C`], and cooks or runs hot water in
//!   the morning, at midday and in the evening (events of 0.05..0.4 m³);
//! - vacant homes burn almost nothing (an occasional few litres during the day).
//!
//! Local time is a fixed UTC offset ([`LOCAL_UTC_OFFSET_H`], Central European Time;
//! daylight saving is ignored).

use chrono::{Datelike, Duration, Timelike};
use leakwatch_core::Timestamp;
use rand::Rng;
use std::f64::consts::TAU;

/// Hours added to UTC to get the homes' local time (CET, no daylight saving).
pub const LOCAL_UTC_OFFSET_H: i64 = 1;

/// Outdoor temperature (°C) below which homes heat.
pub const HEATING_BASE_C: f64 = 18.0;

/// Share of the gas entering a district that never reaches a customer meter
/// (station inflow = customer sum × (1 + `NETWORK_LOSS`)).
pub const NETWORK_LOSS: f64 = 0.01;

/// Share of homes that are vacant.
pub const VACANT_SHARE: f64 = 0.05;

/// The local hour of day (0..24) of a UTC time.
pub fn local_hour(t: Timestamp) -> u32 {
    (t + Duration::hours(LOCAL_UTC_OFFSET_H)).hour()
}

/// Outdoor temperature (°C) at `t`: a seasonal trend (coldest mid-January at about
/// 6 °C, warmest mid-July at about 24 °C, roughly Florence) plus a daily sinusoid of
/// ±4 °C peaking at 15:00 local. Deterministic: the same `t` always gives the same value.
pub fn outdoor_temp_c(t: Timestamp) -> f64 {
    let local = t + Duration::hours(LOCAL_UTC_OFFSET_H);
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

/// A district station's inflow (litres) for an hour in which its customers
/// consumed `customer_litres`: the sum plus [`NETWORK_LOSS`], rounded to the litre.
pub fn station_litres(customer_litres: u64) -> u64 {
    (customer_litres as f64 * (1.0 + NETWORK_LOSS)).round() as u64
}

/// One home's habits, drawn once per meter.
#[derive(Debug, Clone, PartialEq)]
pub struct Household {
    /// Nobody lives there: almost no consumption.
    pub vacant: bool,
    /// Space heating, m³ per hour per °C below [`HEATING_BASE_C`].
    pub heating_k: f64,
    /// Local hour the home wakes up (first hour that may consume), 5..=7.
    pub wake_h: u32,
    /// Local hour the home goes quiet (first hour that consumes nothing), 22..=24.
    pub sleep_h: u32,
    /// Probability of a cooking / hot-water event in a morning or evening hour.
    pub event_p: f64,
}

impl Household {
    /// Draws a home's habits.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> Household {
        Household {
            vacant: rng.random_bool(VACANT_SHARE),
            heating_k: rng.random_range(0.01..0.04),
            wake_h: rng.random_range(5..=7),
            sleep_h: rng.random_range(22..=24),
            event_p: rng.random_range(0.3..0.6),
        }
    }

    /// Whether the home may consume in this local hour.
    pub fn is_awake(&self, local_hour: u32) -> bool {
        (self.wake_h..self.sleep_h).contains(&local_hour)
    }

    /// Gas burnt (m³, not rounded) in the hour that starts at `hour_start`.
    pub fn hour_m3<R: Rng + ?Sized>(&self, hour_start: Timestamp, rng: &mut R) -> f64 {
        let h = local_hour(hour_start);
        if !self.is_awake(h) {
            return 0.0;
        }
        if self.vacant {
            return if rng.random_bool(0.02) {
                rng.random_range(0.005..0.02)
            } else {
                0.0
            };
        }
        let mid = hour_start + Duration::minutes(30);
        let deficit = (HEATING_BASE_C - outdoor_temp_c(mid)).max(0.0);
        let heating = self.heating_k * deficit * rng.random_range(0.8..1.2);
        let p = match h {
            6..=9 | 18..=21 => self.event_p,
            12..=13 => self.event_p / 2.0,
            _ => 0.05,
        };
        let event = if rng.random_bool(p) {
            rng.random_range(0.05..=0.4)
        } else {
            0.0
        };
        heating + event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn temperature_follows_season_and_day() {
        let jan = Utc.with_ymd_and_hms(2027, 1, 15, 14, 0, 0).unwrap();
        let jul = Utc.with_ymd_and_hms(2027, 7, 15, 14, 0, 0).unwrap();
        assert!(outdoor_temp_c(jan) < outdoor_temp_c(jul) - 10.0);
        let night = Utc.with_ymd_and_hms(2026, 11, 1, 3, 0, 0).unwrap();
        let afternoon = Utc.with_ymd_and_hms(2026, 11, 1, 14, 0, 0).unwrap();
        assert!(outdoor_temp_c(night) < outdoor_temp_c(afternoon));
        let nov = outdoor_temp_c(night);
        assert!((0.0..20.0).contains(&nov), "{nov}");
    }

    #[test]
    fn nobody_consumes_between_midnight_and_five() {
        let mut rng = StdRng::seed_from_u64(7);
        let day = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        for _ in 0..200 {
            let home = Household::random(&mut rng);
            for h in 0..24 {
                let start = day + Duration::hours(h);
                let v = home.hour_m3(start, &mut rng);
                assert!(v >= 0.0);
                if local_hour(start) < 5 {
                    assert_eq!(v, 0.0);
                }
            }
        }
    }

    #[test]
    fn station_adds_the_network_loss() {
        assert_eq!(station_litres(1000), 1010);
        assert_eq!(station_litres(0), 0);
        assert_eq!(litres(1.2344), 1234);
        assert_eq!(litres(-1.0), 0);
    }
}
