//! The ground truth of a simulated run: what was injected, where and when, for scoring
//! detectors. Serialised as JSON by `leakwatch sim --truth-out`.

use crate::config::FleetConfig;
use crate::model::HomeClass;
use leakwatch_core::{DistrictId, MeterId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything injected into a run, decided when the fleet is generated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    /// The configuration the fleet was generated from (`start` on the whole hour,
    /// `push_every_h` at least 1).
    pub scenario: FleetConfig,
    /// Time of the baseline readings.
    pub start: Timestamp,
    /// `start + hours`; `None` for an open-ended run.
    pub end: Option<Timestamp>,
    /// Customer meters (station meters excluded).
    pub customer_meters: u32,
    /// Station meters (one per district).
    pub station_meters: u32,
    /// How many customer meters of each class.
    pub meter_classes: BTreeMap<HomeClass, u32>,
    /// The class of every customer meter.
    pub classes: BTreeMap<MeterId, HomeClass>,
    /// Behind-the-meter leaks (a meter may have a second one, on top of its first).
    pub leaks: Vec<LeakTruth>,
    /// Network leaks (a district may have several, overlapping).
    pub network_leaks: Vec<NetworkLeakTruth>,
    /// Changes of usage that are not leaks (holidays, move-ins, homes vacated).
    #[serde(default)]
    pub usage_changes: Vec<UsageChange>,
    /// Device and transport faults, by kind then start.
    pub faults: Vec<FaultTruth>,
    /// Customer meters whose gas flows every hour without a leak (pilot flames and
    /// commercial users): a continuous-flow alarm on them is a false alarm that no
    /// threshold on flow alone can avoid.
    pub never_stop_meters: Vec<MeterId>,
}

/// How a leak develops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakGrowth {
    /// At its final rate from the first hour.
    Abrupt,
    /// Linear from `initial_rate_l_per_h` to `rate_l_per_h` over `ramp_h` hours.
    Growing,
}

/// Ground truth of one leak behind a customer meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeakTruth {
    /// The customer meter the leak is behind.
    pub meter: MeterId,
    /// Its district (the station there sees the leak too).
    pub district: DistrictId,
    /// Whole hour from which the leak flows: every hour starting at or after it
    /// carries the leak on top of the home's own consumption, to the end of the run.
    pub start: Timestamp,
    /// Final leak rate, litres per hour (to 0.1 L/h).
    pub rate_l_per_h: f64,
    /// The class of the home it leaks in.
    pub class_of_home: HomeClass,
    /// Rate in the first hour: `rate_l_per_h` for abrupt leaks.
    pub initial_rate_l_per_h: f64,
    pub growth: LeakGrowth,
    /// Hours from `start` to the final rate; 0 for abrupt leaks.
    pub ramp_h: u32,
    /// A leak on a meter that already leaked (the earlier one still flowing).
    #[serde(default)]
    pub on_top: bool,
}

impl LeakTruth {
    /// The leak's flow (litres) in the hour that starts at `hour_start`: 0 before
    /// `start`, then `initial + (rate - initial) * i / ramp_h` in the `i`-th hour
    /// (`i` from 0) until the ramp ends, then `rate_l_per_h`.
    pub fn litres_in_hour(&self, hour_start: Timestamp) -> f64 {
        if hour_start < self.start {
            return 0.0;
        }
        let i = (hour_start - self.start).num_hours();
        if self.ramp_h == 0 || i >= i64::from(self.ramp_h) {
            self.rate_l_per_h
        } else {
            self.initial_rate_l_per_h
                + (self.rate_l_per_h - self.initial_rate_l_per_h) * i as f64
                    / f64::from(self.ramp_h)
        }
    }
}

/// Ground truth of one leak in a district's network (upstream of every customer
/// meter): the station meter counts it, no customer meter does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkLeakTruth {
    pub district: DistrictId,
    /// Whole hour from which it flows, to the end of the run.
    pub start: Timestamp,
    /// Its flow as a share of the district's customer consumption averaged over the
    /// last week (an exponential average with a one-week time constant): nearly
    /// constant through the day, so it shows at night too.
    pub fraction: f64,
    /// Whole hour it was repaired (stops flowing), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired: Option<Timestamp>,
}

impl NetworkLeakTruth {
    /// Whether it flows in the hour starting at `hour_start`.
    pub fn flows(&self, hour_start: Timestamp) -> bool {
        hour_start >= self.start && self.repaired.is_none_or(|r| hour_start < r)
    }
}

/// What kind of usage change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageKind {
    /// Away from `start` to `end` (frost protection and pilot flame only), then back
    /// to the home's usual use.
    Away,
    /// A vacant home occupied from `start` (a new household's habits).
    MoveIn,
    /// An occupied home vacant from `start`.
    Vacated,
}

impl UsageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageKind::Away => "away",
            UsageKind::MoveIn => "move_in",
            UsageKind::Vacated => "vacated",
        }
    }
}

/// Ground truth of one usage change (not a leak).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageChange {
    pub meter: MeterId,
    pub kind: UsageKind,
    pub start: Timestamp,
    /// End of an absence; `None` for the others (they last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
}

impl UsageChange {
    /// When the home's use changes in a way a detector may notice as a rise: the
    /// return from an absence, or the move-in; `None` for a home vacated.
    pub fn rise_at(&self) -> Option<Timestamp> {
        match self.kind {
            UsageKind::Away => self.end,
            UsageKind::MoveIn => Some(self.start),
            UsageKind::Vacated => None,
        }
    }
}

/// The kinds of faults injected into customer meters and their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `tamper` event at `start` (= `end`).
    Tamper,
    /// `magnetic_field` event at `start`; the register counts nothing in the hours
    /// `start..end` (6-72 h), though the gas flows (the station counts it).
    MagneticField,
    /// `reverse_flow` event at `start` (= `end`).
    ReverseFlow,
    /// `valve_closed` event at `start`, `valve_opened` at `end` (1-5 days later); no
    /// gas flows in between (leak included) and pushes report `"valve": "closed"`.
    ValveClosed,
    /// `battery_low` event at `start`; from then on pushes report a battery of 5-9 %.
    /// `end` is the end of the run.
    BatteryLow,
    /// `battery_critical` event at `start`; from then on pushes report 1-3 %. `end` is
    /// the end of the run.
    BatteryCritical,
    /// The reading at `start` (= `end`) is `litres` lower than the one an hour
    /// before (meter reset or replaced); counting goes on from there.
    CounterRegression,
    /// Readings taken in `start..end` (24 h) are stamped `offset_h` hours off; a
    /// `clock_error` event at `end` (correct time) says the clock was set right.
    ClockError,
    /// No message is sent at the pushes due in `start..end` (2-10 days). With
    /// `backlog`, the first push from `end` carries everything since the last one;
    /// without, readings of `start..end` are never sent.
    Silent,
    /// Readings of the hours `start..end` (1-6 h) are never sent.
    Gap,
    /// The push at `start` (= `end`) arrives twice in a row.
    Duplicate,
    /// The push due at `start` arrives at `end` (24-72 h later), after later pushes.
    Late,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 12] = [
        FaultKind::Tamper,
        FaultKind::MagneticField,
        FaultKind::ReverseFlow,
        FaultKind::ValveClosed,
        FaultKind::BatteryLow,
        FaultKind::BatteryCritical,
        FaultKind::CounterRegression,
        FaultKind::ClockError,
        FaultKind::Silent,
        FaultKind::Gap,
        FaultKind::Duplicate,
        FaultKind::Late,
    ];

    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Tamper => "tamper",
            FaultKind::MagneticField => "magnetic_field",
            FaultKind::ReverseFlow => "reverse_flow",
            FaultKind::ValveClosed => "valve_closed",
            FaultKind::BatteryLow => "battery_low",
            FaultKind::BatteryCritical => "battery_critical",
            FaultKind::CounterRegression => "counter_regression",
            FaultKind::ClockError => "clock_error",
            FaultKind::Silent => "silent",
            FaultKind::Gap => "gap",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Late => "late",
        }
    }

    /// The wire event code the meter reports at `start` (or at `end` for clock
    /// errors), if any.
    pub fn event_code(self) -> Option<&'static str> {
        match self {
            FaultKind::Tamper => Some("tamper"),
            FaultKind::MagneticField => Some("magnetic_field"),
            FaultKind::ReverseFlow => Some("reverse_flow"),
            FaultKind::ValveClosed => Some("valve_closed"),
            FaultKind::BatteryLow => Some("battery_low"),
            FaultKind::BatteryCritical => Some("battery_critical"),
            FaultKind::ClockError => Some("clock_error"),
            FaultKind::CounterRegression
            | FaultKind::Silent
            | FaultKind::Gap
            | FaultKind::Duplicate
            | FaultKind::Late => None,
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ground truth of one fault. What `start` and `end` mean depends on the kind
/// ([`FaultKind`]); times are measurement (true) times, `end` is exclusive for spans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultTruth {
    pub meter: MeterId,
    pub district: DistrictId,
    pub kind: FaultKind,
    pub start: Timestamp,
    pub end: Timestamp,
    /// Counter regressions: how many litres the index went back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub litres: Option<u64>,
    /// Clock errors: hours added to the readings' times (±1..=12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_h: Option<i32>,
    /// Silent meters: whether the readings of the silence were sent afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<bool>,
    /// Battery faults: the level reported from `start` on, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<u8>,
}

impl FaultTruth {
    /// Whether `t` lies in `start..end`.
    pub fn covers(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}
