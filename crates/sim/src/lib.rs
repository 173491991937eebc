//! The simulated fleet behind `leakwatch demo`, `leakwatch sim` and the end-to-end
//! tests: districts of gas meters with injected leaks whose ground truth is known,
//! publishing the v1 wire format over MQTT.
//!
//! What this crate owns:
//! - [`model`]: how much gas a simulated home burns in an hour (heating driven by a
//!   deterministic outdoor temperature, cooking and hot water, vacant homes, quiet
//!   nights);
//! - [`Fleet`]: the registry (stations and customer meters, [`Fleet::to_csv`] in the
//!   import format), the crews, the injected leaks ([`LeakTruth`]) and an hourly clock
//!   ([`Fleet::advance_hour`]); everything follows from [`FleetConfig::seed`];
//! - [`publish`] and [`Publisher`]: each meter pushes its buffered hourly readings as
//!   one v1 message at QoS 1, paced in wall time, and waits for the broker's acks.
//!
//! What it does not touch: it never reads the store or the detectors, and it speaks
//! to the rest of leakwatch only through the broker, exactly as real meters do. The
//! payload format belongs to `leakwatch-wire` ([`leakwatch_wire::encode`]).

mod fleet;
pub mod model;
mod publish;

pub use fleet::{Fleet, FleetConfig, LeakTruth};
pub use publish::{
    CONNECT_TIMEOUT, FINAL_FLUSH_TIMEOUT, PublishConfig, PublishStats, Publisher, SimError, publish,
};
