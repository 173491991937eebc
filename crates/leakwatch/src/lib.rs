//! The leakwatch application: configuration, the embedded broker, and the wiring of
//! store, ingestor, detectors, dispatcher and HTTP server into one process.
//!
//! `main.rs` is the command line around it; the end-to-end tests start the same
//! [`app::start`] in-process with ports 0 and their own database.

pub mod accounts;
pub mod app;
pub mod backtest;
pub mod broker;
pub mod config;
pub mod detection;
pub mod devices;
pub mod evaluate;
pub mod survey;
pub mod survey_sim;
// Scale-out (issue 14): `bridge` and `worker`.
pub mod scaleout;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
