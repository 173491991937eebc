//! What meters measure and report.

use crate::{MeterId, Timestamp};
use serde::{Deserialize, Serialize};

/// One measurement: the cumulative volume index at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub meter: MeterId,
    /// Measurement time (event time), not the time it reached us.
    pub t: Timestamp,
    /// Cumulative volume index in m³ at base conditions (15 °C, 1.01325 bar).
    pub vol: f64,
    /// Gas temperature, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp: Option<f64>,
    /// Highest flow in the interval, m³/h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_max: Option<f64>,
    /// Pressure, kPa (pressure points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure: Option<f64>,
}

/// A device event code: one of the named codes of the v1 contract, or a UNI/TS 11291
/// number (unknown numbers are kept as they are).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventCode {
    Named(String),
    Numeric(u32),
}

impl EventCode {
    /// The named codes of the v1 wire contract.
    pub const NAMED: &'static [&'static str] = &[
        "tamper",
        "magnetic_field",
        "reverse_flow",
        "leak_suspected",
        "valve_closed",
        "valve_opened",
        "battery_low",
        "battery_critical",
        "comm_fault",
        "clock_error",
        "temperature_fault",
    ];

    /// The code as stored: the name, or the number in decimal.
    pub fn to_text(&self) -> String {
        match self {
            EventCode::Named(s) => s.clone(),
            EventCode::Numeric(n) => n.to_string(),
        }
    }

    /// Reads a stored code back.
    pub fn from_text(s: &str) -> EventCode {
        match s.parse::<u32>() {
            Ok(n) => EventCode::Numeric(n),
            Err(_) => EventCode::Named(s.to_owned()),
        }
    }
}

/// A device event (tamper, valve closed, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterEvent {
    pub meter: MeterId,
    pub t: Timestamp,
    pub code: EventCode,
}
