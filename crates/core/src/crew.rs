//! Field crews.

use crate::{CrewId, GeoPoint, Timestamp};
use serde::{Deserialize, Serialize};

/// A crew as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crew {
    pub id: CrewId,
    pub name: String,
    /// e.g. `emergency`, `repair`, `meter`.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Where the crew's shift starts (the crew starts from home).
    pub home: GeoPoint,
    /// Last known position, from the field app or MQTT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<GeoPoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_at: Option<Timestamp>,
    #[serde(default)]
    pub on_shift: bool,
}

/// A crew's availability, derived from its shift and its active work orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrewStatus {
    OffShift,
    Available,
    Busy,
}

impl CrewStatus {
    pub fn derive(on_shift: bool, active_orders: i64) -> CrewStatus {
        match (on_shift, active_orders) {
            (false, _) => CrewStatus::OffShift,
            (true, 0) => CrewStatus::Available,
            (true, _) => CrewStatus::Busy,
        }
    }
}

impl Crew {
    /// Where the crew is best believed to be: its last position, else its home base.
    pub fn believed_position(&self) -> GeoPoint {
        self.position.unwrap_or(self.home)
    }
}
