//! Suppressions: what an engineer asks for when dismissing an alert so the same
//! condition does not come back at once (issue 12, "dismissals that stick"). A
//! suppression covers one alert kind on one meter or one district, until a date
//! (event time) or until revoked, and gives way when the detector's new evidence
//! exceeds the dismissed evidence by a margin: a pattern that changes beyond what
//! the engineer saw raises an alert again.
//!
//! The decision (raise, suppress, break through) is pure: `leakwatch_detect::suppress`.

use crate::{AlertKind, DistrictId, MeterId, Timestamp};
use serde::{Deserialize, Serialize};

/// What a suppression covers: one meter, or every subject of one district.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "scope", content = "scope_id", rename_all = "snake_case")]
pub enum SuppressionScope {
    Meter(MeterId),
    District(DistrictId),
}

impl SuppressionScope {
    pub fn as_str(&self) -> &'static str {
        match self {
            SuppressionScope::Meter(_) => "meter",
            SuppressionScope::District(_) => "district",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            SuppressionScope::Meter(m) => m.as_str(),
            SuppressionScope::District(d) => d.as_str(),
        }
    }
}

impl std::fmt::Display for SuppressionScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.as_str(), self.id())
    }
}

/// The default margin: new evidence more than 25 % above the dismissed evidence
/// breaks through.
pub const DEFAULT_MARGIN: f64 = 0.25;

/// Largest margin accepted (a suppression that nothing can break through is what
/// `until` and revoking are for, not a huge margin).
pub const MARGIN_MAX: f64 = 10.0;

/// What the reviewer asks for with a dismissal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuppressRequest {
    /// `meter` (the alert's meter; the default when it has one) or `district`.
    #[serde(default)]
    pub scope: Option<String>,
    /// Quiet until this time (compared with the detection's event time); none:
    /// until revoked or broken through.
    #[serde(default)]
    pub until: Option<Timestamp>,
    /// Fraction by which new evidence must exceed the dismissed one to raise an
    /// alert again (default [`DEFAULT_MARGIN`]).
    #[serde(default)]
    pub margin: Option<f64>,
}

/// A suppression to store, made from a dismissed alert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSuppression {
    pub kind: AlertKind,
    pub scope: SuppressionScope,
    pub alert_id: i64,
    pub reason: String,
    pub until: Option<Timestamp>,
    /// The dismissed evidence's observed value, and its unit.
    pub observed: f64,
    pub unit: String,
    pub margin: f64,
}

/// A suppression as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suppression {
    pub id: i64,
    pub kind: AlertKind,
    #[serde(flatten)]
    pub scope: SuppressionScope,
    /// The dismissed alert it was made from.
    pub alert_id: i64,
    pub reason: String,
    pub created_by: String,
    /// Wall clock.
    pub created_at: Timestamp,
    /// Event time it lapses; none: until revoked or broken through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    pub observed: f64,
    pub unit: String,
    pub margin: f64,
    /// Findings it kept quiet, and the event time of the latest.
    pub suppressed: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_suppressed_at: Option<Timestamp>,
    /// When it stopped holding (wall clock), by whom (`detector` when new evidence
    /// broke through) and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// The alert raised when new evidence broke through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken_by_alert: Option<i64>,
}

impl Suppression {
    /// The observed value above which new evidence breaks through.
    pub fn break_above(&self) -> f64 {
        self.observed + self.margin * self.observed.abs()
    }

    /// Neither revoked nor broken through (it may have lapsed by its `until`).
    pub fn is_active(&self) -> bool {
        self.ended_at.is_none()
    }
}

/// What to do with a finding that would open a new alert.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// No suppression holds: raise the alert.
    Raise,
    /// Suppression `id` holds: no alert; count it.
    Suppressed { id: i64 },
    /// The evidence exceeds what suppression `id` was made on by more than its
    /// margin: raise the alert and end the suppression, saying why.
    BreaksThrough { id: i64, reason: String },
}
