//! Programmed leak survey ("ricerca programmata delle dispersioni"): the network's
//! pipe segments and their survey records ([`network`]), the regulator's survey
//! obligations per pressure class ([`obligation`]: US 49 CFR 192.723 and Italian
//! presets, the latter unconfirmed and configurable), a risk score per segment from
//! what leakwatch knows ([`risk`]: open network-leak alerts in the district, leak
//! history, material, age), and the program that decides what to survey each working
//! day so that every obligation is met and the riskiest segments go first
//! ([`program`]), and the crews' routes along their segments ([`route`]).
//!
//! Pure code: no I/O, no clock (every function takes the date). It must not touch the
//! store, MQTT or HTTP.

pub mod config;
pub mod geojson;
pub mod network;
pub mod obligation;
pub mod program;
pub mod report;
pub mod risk;
pub mod route;

pub use config::SurveyConfig;
pub use network::{Material, Segment, SurveyRecord};
pub use obligation::{Obligation, ObligationTable};
pub use program::{Policy, Program, Reason, Visit, working_days};
pub use risk::{DistrictSignal, LeakRecord, Risk, RiskWeights};
