//! What fleet and scenario to simulate: [`FleetConfig`] and its parts.

use crate::model::{HouseholdMix, NETWORK_LOSS, STATION_NOISE};
use chrono::{TimeZone, Utc};
use leakwatch_core::{GeoPoint, Timestamp};
use serde::{Deserialize, Serialize};

/// What fleet to simulate. Everything random is drawn from `seed`.
///
/// [`FleetConfig::default`] is the demo's fleet (small, open-ended, leaks early, no
/// faults); [`FleetConfig::standard`] is the scenario leak detectors are judged on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetConfig {
    /// Seed of every random choice: layout, homes, weather, leaks, faults, crews and
    /// consumption.
    pub seed: u64,
    /// Number of districts, named `D01`, `D02`, ...
    pub districts: u32,
    /// Customer meters per district (each district also has one station meter).
    pub meters_per_district: u32,
    /// Customer meters with a leak behind the meter (at most all of them).
    pub leaks: u32,
    /// Simulation epoch: the time of the first (baseline) reading. A whole hour;
    /// `Fleet::generate` truncates anything else to the hour.
    pub start: Timestamp,
    /// Centre of the grid of districts.
    pub center: GeoPoint,
    /// Length of the scenario in hours from `start`; `None`: open-ended. It is the
    /// truth's `end`, the default length of `publish`, and the span faults are placed
    /// in (open-ended runs place them in the first [`OPEN_ENDED_FAULT_SPAN_H`] hours).
    pub hours: Option<u32>,
    /// Each customer meter pushes every this many hours (at its own phase), carrying
    /// the hourly readings since its previous push. At least 1 (0 counts as 1).
    /// Station meters push every hour.
    pub push_every_h: u32,
    /// Shares of the kinds of homes.
    pub households: HouseholdMix,
    /// Behind-the-meter leaks: when they start, how big, how they grow.
    pub leak: LeakConfig,
    /// Leaks in the network, seen only by a district's balance.
    pub network_leaks: NetworkLeakConfig,
    /// Network loss baseline as a share of the customers' consumption (about 1 %, it
    /// drifts ±25 % over weeks).
    pub network_loss: f64,
    /// Relative standard deviation of a station meter's hourly measurement.
    pub station_noise: f64,
    /// Device and transport faults; all zero by default.
    pub faults: FaultRates,
    /// Changes of how homes use gas (holidays, move-ins, homes vacated): not leaks,
    /// and a detector should not take them for leaks. None by default.
    pub usage: UsageChangeRates,
}

/// Changes of usage, as shares of the customer meters over the run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UsageChangeRates {
    /// Share of occupied homes away for `away_min_days..=away_max_days` (frost
    /// protection and pilot flames only), then back to their old level.
    pub away: f64,
    pub away_min_days: u32,
    pub away_max_days: u32,
    /// Share of customer meters that are vacant homes becoming occupied (a new
    /// household with its own habits from then on); taken from the vacant homes.
    pub move_in: f64,
    /// Share of customer meters that are occupied homes vacated (vacant from then on).
    pub vacated: f64,
    /// Changes start at a whole hour in `from_h..=to_h` after `start`.
    pub from_h: u32,
    pub to_h: u32,
}

impl UsageChangeRates {
    /// The standard scenario's: 5 % of homes away 7-21 days, 2 % of meters vacant
    /// homes becoming occupied, 1 % vacated, from day 3 to day 110.
    pub fn standard() -> UsageChangeRates {
        UsageChangeRates {
            away: 0.05,
            away_min_days: 7,
            away_max_days: 21,
            move_in: 0.02,
            vacated: 0.01,
            from_h: 3 * 24,
            to_h: 110 * 24,
        }
    }
}

/// Faults of an open-ended run (`hours: None`) are placed in its first 30 days.
pub const OPEN_ENDED_FAULT_SPAN_H: u32 = 30 * 24;

/// Florence, where the simulated districts are.
fn florence() -> GeoPoint {
    GeoPoint {
        lat: 43.7696,
        lon: 11.2558,
    }
}

impl Default for FleetConfig {
    /// The demo's fleet: 10 districts × 100 customer meters from
    /// 2026-11-01T00:00:00Z around Florence, open-ended, a push every 6 hours, the
    /// default household mix, 5 leaks of 20-200 L/h starting in the first 12 hours,
    /// no network leak, no faults.
    fn default() -> Self {
        FleetConfig {
            seed: 42,
            districts: 10,
            meters_per_district: 100,
            leaks: 5,
            start: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            center: florence(),
            hours: None,
            push_every_h: 6,
            households: HouseholdMix::default(),
            leak: LeakConfig::default(),
            network_leaks: NetworkLeakConfig::default(),
            network_loss: NETWORK_LOSS,
            station_noise: STATION_NOISE,
            faults: FaultRates::default(),
            usage: UsageChangeRates::default(),
        }
    }
}

impl FleetConfig {
    /// The standard evaluation scenario (issue 13's, richer than the first one, which
    /// [`FleetConfig::standard_v1`] keeps for comparison): 5,000 customer meters in 10
    /// districts (500 each), 120 days from 2026-10-01T00:00:00Z (autumn into winter),
    /// daily pushes; 15 % of homes heating through cold nights, 5 % businesses with a
    /// noisy base load, 3 % pilot flames, 5 % vacant; 100 behind-the-meter leaks of
    /// 5-500 L/h (30 % incipient: from 1-2 L/h over 7-21 days; 20 % of the rest growing
    /// from 20 %; 10 % on a meter whose first leak started 3-20 days before), starting
    /// between day 14 and day 105; 9 network leaks in 4 districts (two or three
    /// overlapping in each, half repaired after 10-30 days); usage changes at
    /// [`UsageChangeRates::standard`]; faults at [`FaultRates::standard`].
    pub fn standard(seed: u64) -> FleetConfig {
        FleetConfig {
            households: HouseholdMix {
                setback: 0.67,
                night_heating: 0.15,
                vacant: 0.05,
                pilot: 0.03,
                commercial: 0.05,
                plain: 0.05,
            },
            leak: LeakConfig {
                incipient_share: 0.3,
                growing_share: 0.2,
                second_share: 0.1,
                ..LeakConfig::standard()
            },
            network_leaks: NetworkLeakConfig {
                count: 9,
                districts: 4,
                repaired_share: 0.5,
                ..NetworkLeakConfig::default()
            },
            usage: UsageChangeRates::standard(),
            ..FleetConfig::standard_v1(seed)
        }
    }

    /// The first standard scenario (issue 4's): the default household mix, 100 leaks
    /// of 5-500 L/h (log-uniform, half growing from 20 % over 2-14 days) starting
    /// between day 14 and day 105, 5 network leaks in distinct districts, faults at
    /// [`FaultRates::standard`], no usage changes.
    pub fn standard_v1(seed: u64) -> FleetConfig {
        FleetConfig {
            seed,
            districts: 10,
            meters_per_district: 500,
            leaks: 100,
            start: Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap(),
            center: florence(),
            hours: Some(120 * 24),
            push_every_h: 24,
            households: HouseholdMix::default(),
            leak: LeakConfig::standard(),
            network_leaks: NetworkLeakConfig {
                count: 5,
                ..NetworkLeakConfig::default()
            },
            network_loss: NETWORK_LOSS,
            station_noise: STATION_NOISE,
            faults: FaultRates::standard(),
            usage: UsageChangeRates::default(),
        }
    }
}

/// Behind-the-meter leaks. A leak lasts until the end of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeakConfig {
    /// Leaks (and network leaks) start at a whole hour drawn uniformly in
    /// `from_h..=to_h` hours after `start`.
    pub from_h: u32,
    pub to_h: u32,
    /// Final rates are log-uniform in `min_rate_l_per_h..=max_rate_l_per_h`.
    pub min_rate_l_per_h: f64,
    pub max_rate_l_per_h: f64,
    /// Share of leaks that grow (the others are abrupt: the final rate from the start).
    pub growing_share: f64,
    /// A growing leak starts at this share of its final rate...
    pub initial_share: f64,
    /// ... and reaches it linearly over a ramp of `min_ramp_h..=max_ramp_h` hours.
    pub min_ramp_h: u32,
    pub max_ramp_h: u32,
    /// Share of leaks that are incipient: from `incipient_from_l_per_h` (1-2 L/h)
    /// growing linearly to their final rate over `incipient_min_ramp_h..=max` hours
    /// (drawn before `growing_share`, which applies to the rest).
    pub incipient_share: f64,
    pub incipient_from_l_per_h: (f64, f64),
    pub incipient_min_ramp_h: u32,
    pub incipient_max_ramp_h: u32,
    /// Share of leaks placed on a meter that already has a leak, starting
    /// `second_after_h` (min, max) hours after that one: a leak on top of a known one.
    pub second_share: f64,
    pub second_after_h: (u32, u32),
}

impl Default for LeakConfig {
    /// The demo's leaks: abrupt, 20-200 L/h, starting in the first 12 hours.
    fn default() -> Self {
        LeakConfig {
            from_h: 0,
            to_h: 12,
            min_rate_l_per_h: 20.0,
            max_rate_l_per_h: 200.0,
            growing_share: 0.0,
            initial_share: 0.2,
            min_ramp_h: 2 * 24,
            max_ramp_h: 14 * 24,
            incipient_share: 0.0,
            incipient_from_l_per_h: (1.0, 2.0),
            incipient_min_ramp_h: 7 * 24,
            incipient_max_ramp_h: 21 * 24,
            second_share: 0.0,
            second_after_h: (3 * 24, 20 * 24),
        }
    }
}

impl LeakConfig {
    /// The standard scenario's leaks: 5-500 L/h log-uniform (about 30 % are 5-20 L/h),
    /// half abrupt, half growing from 20 % over 2-14 days, starting between day 14 and
    /// day 105.
    pub fn standard() -> LeakConfig {
        LeakConfig {
            from_h: 14 * 24,
            to_h: 105 * 24,
            min_rate_l_per_h: 5.0,
            max_rate_l_per_h: 500.0,
            growing_share: 0.5,
            ..LeakConfig::default()
        }
    }
}

/// Network leaks: extra gas into a district that passes no customer meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkLeakConfig {
    /// How many. They start in the same window as behind-the-meter leaks
    /// ([`LeakConfig::from_h`]..=`to_h`); a district's later ones start 5-20 days
    /// after its first (overlapping it).
    pub count: u32,
    /// In how many distinct districts (0: as many as leaks, one each).
    pub districts: u32,
    /// Share of network leaks repaired 10-30 days after they start (the others flow to
    /// the end of the run).
    pub repaired_share: f64,
    /// The leak's flow as a share of the district's customer consumption (averaged
    /// over a week), log-uniform in `min_fraction..=max_fraction`.
    pub min_fraction: f64,
    pub max_fraction: f64,
}

impl Default for NetworkLeakConfig {
    /// None; when asked for, 0.5 %..5 % of the district's consumption.
    fn default() -> Self {
        NetworkLeakConfig {
            count: 0,
            districts: 0,
            repaired_share: 0.0,
            min_fraction: 0.005,
            max_fraction: 0.05,
        }
    }
}

/// How many faults of each kind, per 1,000 customer meters over the run (the count is
/// the rate × meters / 1,000, rounded). Faults go to distinct customer meters while
/// there are enough of them. All zero by default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultRates {
    pub tamper: f64,
    pub magnetic_field: f64,
    pub reverse_flow: f64,
    pub valve_closed: f64,
    pub battery_low: f64,
    pub battery_critical: f64,
    pub counter_regression: f64,
    pub clock_error: f64,
    pub silent: f64,
    pub gap: f64,
    pub duplicate: f64,
    pub late: f64,
}

impl FaultRates {
    /// Realistic rates per 1,000 meters over 120 days: 20 tamper, 10 magnetic field,
    /// 5 reverse flow, 5 valve closed, 10 battery low, 3 battery critical, 10 counter
    /// regressions, 10 clock errors, 10 silent meters, 30 gappy pushes, 20 duplicated
    /// pushes, 50 late pushes.
    pub fn standard() -> FaultRates {
        FaultRates {
            tamper: 20.0,
            magnetic_field: 10.0,
            reverse_flow: 5.0,
            valve_closed: 5.0,
            battery_low: 10.0,
            battery_critical: 3.0,
            counter_regression: 10.0,
            clock_error: 10.0,
            silent: 10.0,
            gap: 30.0,
            duplicate: 20.0,
            late: 50.0,
        }
    }

    /// The same rate for every kind (tests).
    pub fn all(per_1000: f64) -> FaultRates {
        FaultRates {
            tamper: per_1000,
            magnetic_field: per_1000,
            reverse_flow: per_1000,
            valve_closed: per_1000,
            battery_low: per_1000,
            battery_critical: per_1000,
            counter_regression: per_1000,
            clock_error: per_1000,
            silent: per_1000,
            gap: per_1000,
            duplicate: per_1000,
            late: per_1000,
        }
    }

    /// The rate of one kind.
    pub fn rate(&self, kind: crate::FaultKind) -> f64 {
        use crate::FaultKind as K;
        match kind {
            K::Tamper => self.tamper,
            K::MagneticField => self.magnetic_field,
            K::ReverseFlow => self.reverse_flow,
            K::ValveClosed => self.valve_closed,
            K::BatteryLow => self.battery_low,
            K::BatteryCritical => self.battery_critical,
            K::CounterRegression => self.counter_regression,
            K::ClockError => self.clock_error,
            K::Silent => self.silent,
            K::Gap => self.gap,
            K::Duplicate => self.duplicate,
            K::Late => self.late,
        }
    }
}
