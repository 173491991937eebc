//! Alerts: what detectors find, and what engineers do with it.

use crate::{DistrictId, MeterId, Timestamp};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// The kind of condition an alert reports. Each detector family raises its own kinds.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum AlertKind {
    /// A customer meter with no zero-flow hour over the configured window.
    ContinuousFlow,
    /// A customer meter's minimum night flow above its own leak-free baseline.
    NightFlowRise,
    /// A sustained rise of consumption against a temperature-normalised baseline.
    LevelShift,
    /// Flow beyond the meter's rated capacity, or a sudden sustained jump.
    Burst,
    /// The district's unaccounted-for gas rose against its own history.
    DistrictBalance,
    /// The district station's minimum night inflow above its leak-free baseline.
    InflowNightFlow,
    /// A pressure point's pressure dropped below its baseline.
    PressureDrop,
    /// The meter's own leak alarm (`leak_suspected` event).
    MeterLeakAlarm,
    /// The volume index went backwards.
    CounterRegression,
    /// The meter reported gas flowing backwards.
    ReverseFlow,
    /// The meter reported tampering.
    Tamper,
    /// The meter reported an external magnetic field.
    MagneticField,
    /// The meter closed its valve because of a leak.
    ValveClosedLeak,
    /// Battery low.
    BatteryLow,
    /// Battery critical: the meter may stop soon.
    BatteryCritical,
    /// The meter's clock is wrong (event, or readings stamped far from the others).
    ClockError,
    /// No reading beyond the meter's reporting interval plus a grace.
    Silence,
    /// The meter's use changed in a way that is not a leak (back from an absence, a
    /// vacant home occupied): informational; the detectors re-learn.
    UsageChange,
    /// A further step or growth beyond an anomaly already known on the subject (the
    /// evidence's `known` says what was known).
    LeakGrowth,
}

impl AlertKind {
    pub const ALL: &'static [AlertKind] = <AlertKind as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether this kind suggests gas escaping (as opposed to a device condition).
    pub fn is_leak(self) -> bool {
        matches!(
            self,
            AlertKind::ContinuousFlow
                | AlertKind::NightFlowRise
                | AlertKind::LevelShift
                | AlertKind::Burst
                | AlertKind::DistrictBalance
                | AlertKind::InflowNightFlow
                | AlertKind::PressureDrop
                | AlertKind::MeterLeakAlarm
                | AlertKind::ValveClosedLeak
                | AlertKind::LeakGrowth
        )
    }

    /// Whether the subject of this kind is a district (rather than a meter; a
    /// pressure drop's subject is its pressure point).
    pub fn is_district(self) -> bool {
        matches!(
            self,
            AlertKind::DistrictBalance | AlertKind::InflowNightFlow
        )
    }
}

impl FromStr for AlertKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::names::parse("alert kind", s)
    }
}

/// How urgently someone should look.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::names::parse("severity", s)
    }
}

/// Where an alert is in its review.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum AlertStatus {
    /// Raised, nobody has looked yet.
    Open,
    /// An engineer has seen it and is looking.
    Acknowledged,
    /// Turned into a work order.
    Escalated,
    /// Judged not worth a job (false positive, known cause).
    Dismissed,
    /// The condition cleared, or the work order closed it.
    Resolved,
}

impl AlertStatus {
    pub const ALL: &'static [AlertStatus] = <AlertStatus as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// An alert that still stands for its (subject, kind): repeats update it.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            AlertStatus::Open | AlertStatus::Acknowledged | AlertStatus::Escalated
        )
    }

    /// What an engineer's action does to the status, or why it is refused.
    pub fn apply(self, action: &AlertAction) -> Result<AlertStatus, String> {
        use AlertStatus::*;
        let next = match (self, action) {
            (Open, AlertAction::Acknowledge) => Acknowledged,
            (Open | Acknowledged, AlertAction::Escalate) => Escalated,
            (Open | Acknowledged, AlertAction::Dismiss { reason }) => {
                if reason.trim().is_empty() {
                    return Err("a dismissal needs a reason".into());
                }
                Dismissed
            }
            (Open | Acknowledged | Escalated, AlertAction::Resolve) => Resolved,
            (from, action) => {
                return Err(format!(
                    "cannot {} an alert that is {}",
                    action.verb(),
                    from.as_str()
                ));
            }
        };
        Ok(next)
    }
}

impl FromStr for AlertStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::names::parse("alert status", s)
    }
}

/// What an engineer does with an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AlertAction {
    Acknowledge,
    Escalate,
    Dismiss { reason: String },
    Resolve,
}

impl AlertAction {
    pub fn verb(&self) -> &'static str {
        match self {
            AlertAction::Acknowledge => "acknowledge",
            AlertAction::Escalate => "escalate",
            AlertAction::Dismiss { .. } => "dismiss",
            AlertAction::Resolve => "resolve",
        }
    }
}

/// What an engineer needs to check a finding: the rule, what was seen, what was
/// expected, the threshold crossed and the window looked at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The rule, e.g. `no zero-flow hour in 24 h`.
    pub rule: String,
    /// The value observed (in `unit`).
    pub observed: f64,
    /// The value expected of a meter without the condition, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<f64>,
    /// The threshold the observed value was judged against.
    pub threshold: f64,
    /// Unit of `observed`, `expected` and `threshold`.
    pub unit: String,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    /// A one-line explanation an engineer can read.
    pub explanation: String,
    /// What was already known on the subject when this was found (a leak alerted
    /// before, re-baselined on): a `leak_growth` finding is beyond it. Dispatch folds
    /// a new alert into an open repair only when it is within `magnitude`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known: Option<Known>,
}

/// A known anomaly a finding was judged on top of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Known {
    /// The kind of the alert that made it known.
    pub kind: AlertKind,
    /// When it started (the first night, hour or day of it).
    pub since: Timestamp,
    /// Its magnitude, in the evidence's `unit` (the excess re-baselined on).
    pub magnitude: f64,
}

/// A detector's output: a condition on a subject at an event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: AlertKind,
    pub severity: Severity,
    pub meter_id: Option<MeterId>,
    pub district_id: Option<DistrictId>,
    /// Event time at which the condition was established.
    pub detected_at: Timestamp,
    pub evidence: Evidence,
}

/// What an alert is about, as one key (one open alert per subject and kind).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Meter(MeterId),
    District(DistrictId),
}

impl Subject {
    pub fn key(&self) -> String {
        match self {
            Subject::Meter(m) => format!("meter:{m}"),
            Subject::District(d) => format!("district:{d}"),
        }
    }
}

impl Finding {
    pub fn subject(&self) -> Subject {
        match (&self.meter_id, &self.district_id) {
            (Some(m), _) => Subject::Meter(m.clone()),
            (None, Some(d)) => Subject::District(d.clone()),
            (None, None) => Subject::District(DistrictId::parse("unknown").expect("valid")),
        }
    }
}

/// An alert as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: i64,
    pub kind: AlertKind,
    pub severity: Severity,
    pub status: AlertStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_id: Option<MeterId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district_id: Option<DistrictId>,
    /// Event time of the first detection.
    pub detected_at: Timestamp,
    /// Event time of the latest repeat.
    pub last_seen: Timestamp,
    /// How many times the detector has reported it.
    pub count: i64,
    pub evidence: Evidence,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_order_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// What the crew found on site for the alert's work order: confirmed leak or
    /// false positive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<crate::AlertOutcome>,
    /// Wall-clock time the alert was first stored.
    pub created_at: Timestamp,
    /// Who acknowledged it (the credential's name) and when (wall clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<Timestamp>,
    /// Who dismissed it, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dismissed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dismissed_at: Option<Timestamp>,
    /// Who resolved it by hand, and when (an alert that resolves itself has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_actions_follow_the_rules() {
        use AlertStatus::*;
        assert_eq!(Open.apply(&AlertAction::Acknowledge), Ok(Acknowledged));
        assert_eq!(Acknowledged.apply(&AlertAction::Escalate), Ok(Escalated));
        assert_eq!(Open.apply(&AlertAction::Escalate), Ok(Escalated));
        assert!(Escalated.apply(&AlertAction::Escalate).is_err());
        assert!(Dismissed.apply(&AlertAction::Acknowledge).is_err());
        assert!(
            Open.apply(&AlertAction::Dismiss { reason: " ".into() })
                .is_err()
        );
        assert_eq!(
            Open.apply(&AlertAction::Dismiss {
                reason: "pilot flame".into()
            }),
            Ok(Dismissed)
        );
        assert_eq!(Escalated.apply(&AlertAction::Resolve), Ok(Resolved));
        assert!(Resolved.apply(&AlertAction::Resolve).is_err());
    }

    #[test]
    fn kinds_and_statuses_parse_back() {
        for k in AlertKind::ALL {
            assert_eq!(k.as_str().parse::<AlertKind>().unwrap(), *k);
        }
        for s in AlertStatus::ALL {
            assert_eq!(s.as_str().parse::<AlertStatus>().unwrap(), *s);
        }
        assert!("nope".parse::<AlertKind>().is_err());
    }

    #[test]
    fn actions_read_from_json() {
        let a: AlertAction = serde_json::from_str(r#"{"action":"dismiss","reason":"x"}"#).unwrap();
        assert_eq!(a, AlertAction::Dismiss { reason: "x".into() });
    }
}
