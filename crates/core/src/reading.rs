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

/// Quality flags the ingestor attaches to a reading it stores (a bitmask; the store keeps
/// it as an integer column `flags`). Bits not known here are kept as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReadingFlags(pub u16);

impl ReadingFlags {
    /// Older than the meter's latest stored reading when it arrived.
    pub const LATE: u16 = 1;
    /// The volume index went down compared with the previous reading.
    pub const COUNTER_REGRESSION: u16 = 2;
    /// The volume index rose faster than the meter's capacity allows.
    pub const JUMP: u16 = 4;

    const NAMES: [(u16, &'static str); 3] = [
        (Self::LATE, "late"),
        (Self::COUNTER_REGRESSION, "counter_regression"),
        (Self::JUMP, "jump"),
    ];

    /// Whether every bit of `bits` is set.
    pub fn contains(&self, bits: u16) -> bool {
        self.0 & bits == bits
    }

    /// These flags with `bits` also set.
    #[must_use]
    pub fn with(self, bits: u16) -> Self {
        ReadingFlags(self.0 | bits)
    }

    /// The names of the known flags that are set, in bit order: `"late"`,
    /// `"counter_regression"`, `"jump"`.
    pub fn names(&self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, name)| *name)
            .collect()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_flags_name_their_bits() {
        assert!(ReadingFlags::default().names().is_empty());
        let f = ReadingFlags(ReadingFlags::LATE).with(ReadingFlags::JUMP);
        assert_eq!(f.names(), vec!["late", "jump"]);
        assert!(f.contains(ReadingFlags::JUMP));
        assert!(!f.contains(ReadingFlags::COUNTER_REGRESSION));
        assert_eq!(
            ReadingFlags(0xffff).names(),
            vec!["late", "counter_regression", "jump"]
        );
        assert_eq!(serde_json::to_value(f).unwrap(), serde_json::json!(5));
    }
}
