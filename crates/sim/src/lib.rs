//! The simulated fleet behind `leakwatch demo`, `leakwatch sim`, the end-to-end tests
//! and the evaluation of the detectors: districts of gas meters whose consumption looks
//! like gas, with injected leaks and faults whose ground truth is known, publishing
//! the v1 wire format over MQTT. `docs/simulator.md` describes the model and the
//! standard scenario.
//!
//! What this crate owns:
//! - [`model`]: the weather ([`Weather`]), the kinds of homes ([`HomeClass`],
//!   [`HouseholdMix`]) and how much gas a home burns in an hour ([`Household`]);
//! - [`FleetConfig`]: what to simulate, with [`FleetConfig::standard`], the scenario
//!   detectors are judged on;
//! - [`Fleet`]: the registry (stations and customer meters, [`Fleet::to_csv`] in the
//!   import format), the crews, the ground truth ([`Truth`]: classes, leaks, network
//!   leaks, faults) and the message stream, one simulated hour at a time
//!   ([`Fleet::step`], [`Fleet::finish`]), pure and deterministic from
//!   [`FleetConfig::seed`];
//! - [`network`]: a plausible pipe network (streets per district) for the programmed
//!   leak survey, exported as GeoJSON;
//! - [`publish`] and [`Publisher`]: that same stream sent over MQTT at QoS 1, paced in
//!   wall time, waiting for the broker's acks.
//!
//! What it does not touch: it never reads the store or the detectors, and it speaks
//! to the rest of leakwatch only through the broker (or, replayed in process, through
//! the same [`leakwatch_wire::Uplink`]s), exactly as real meters do. The payload format
//! belongs to `leakwatch-wire` ([`leakwatch_wire::encode`]).

mod config;
pub mod eval;
mod fleet;
pub mod model;
pub mod network;
mod publish;
mod truth;

pub use config::{
    FaultRates, FleetConfig, LeakConfig, NetworkLeakConfig, OPEN_ENDED_FAULT_SPAN_H,
    UsageChangeRates,
};
pub use fleet::{Fleet, MAX_READINGS_PER_MESSAGE, district_center};
pub use model::{HomeClass, Household, HouseholdMix, Weather};
pub use publish::{
    CONNECT_TIMEOUT, FINAL_FLUSH_TIMEOUT, PublishConfig, PublishStats, Publisher, SimError, publish,
};
pub use truth::{
    FaultKind, FaultTruth, LeakGrowth, LeakTruth, NetworkLeakTruth, Truth, UsageChange, UsageKind,
};
