//! Work orders and their lifecycle, as a pure state machine.
//!
//! ```text
//! created -> assigned -> accepted -> en_route -> on_site -> completed
//!    ^          |  ^         |           |           |
//!    +-unassign-+  +-assign--+-----------+           +--> unable_to_complete
//! any non-final state --cancel--> cancelled;  en_route/on_site --> unable_to_complete
//! ```

use crate::{AlertKind, CrewId, DistrictId, GeoPoint, MeterId, Severity, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkOrderStatus {
    Created,
    Assigned,
    Accepted,
    EnRoute,
    OnSite,
    Completed,
    Cancelled,
    UnableToComplete,
}

impl WorkOrderStatus {
    pub const ALL: &'static [WorkOrderStatus] = &[
        WorkOrderStatus::Created,
        WorkOrderStatus::Assigned,
        WorkOrderStatus::Accepted,
        WorkOrderStatus::EnRoute,
        WorkOrderStatus::OnSite,
        WorkOrderStatus::Completed,
        WorkOrderStatus::Cancelled,
        WorkOrderStatus::UnableToComplete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkOrderStatus::Created => "created",
            WorkOrderStatus::Assigned => "assigned",
            WorkOrderStatus::Accepted => "accepted",
            WorkOrderStatus::EnRoute => "en_route",
            WorkOrderStatus::OnSite => "on_site",
            WorkOrderStatus::Completed => "completed",
            WorkOrderStatus::Cancelled => "cancelled",
            WorkOrderStatus::UnableToComplete => "unable_to_complete",
        }
    }

    /// No transition leaves a final state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            WorkOrderStatus::Completed
                | WorkOrderStatus::Cancelled
                | WorkOrderStatus::UnableToComplete
        )
    }

    /// A crew holding an order in this state is busy with it.
    pub fn occupies_crew(self) -> bool {
        matches!(
            self,
            WorkOrderStatus::Assigned
                | WorkOrderStatus::Accepted
                | WorkOrderStatus::EnRoute
                | WorkOrderStatus::OnSite
        )
    }
}

impl FromStr for WorkOrderStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        WorkOrderStatus::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown work-order status {s:?}"))
    }
}

impl fmt::Display for WorkOrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a dispatcher, the dispatcher service or a field worker asks of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum OrderAction {
    /// Give the order to a crew (or move it to another crew).
    Assign { crew_id: CrewId },
    /// Take the order back from its crew.
    Unassign,
    /// The crew takes the job.
    Accept,
    /// The crew sets off.
    StartTravel,
    /// The crew is on site.
    Arrive,
    /// The job is done.
    Complete {
        #[serde(default)]
        notes: Option<String>,
    },
    /// Nobody will do it.
    Cancel { reason: String },
    /// The crew could not do it.
    UnableToComplete { reason: String },
}

impl OrderAction {
    pub fn name(&self) -> &'static str {
        match self {
            OrderAction::Assign { .. } => "assign",
            OrderAction::Unassign => "unassign",
            OrderAction::Accept => "accept",
            OrderAction::StartTravel => "start_travel",
            OrderAction::Arrive => "arrive",
            OrderAction::Complete { .. } => "complete",
            OrderAction::Cancel { .. } => "cancel",
            OrderAction::UnableToComplete { .. } => "unable_to_complete",
        }
    }
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a work order that is {from}{detail}")]
pub struct IllegalTransition {
    pub from: WorkOrderStatus,
    pub action: &'static str,
    pub detail: String,
}

/// The lifecycle: where `action` takes an order that is `from`, or why it may not.
pub fn next_status(
    from: WorkOrderStatus,
    action: &OrderAction,
) -> Result<WorkOrderStatus, IllegalTransition> {
    use OrderAction as A;
    use WorkOrderStatus as S;
    let illegal = |detail: &str| IllegalTransition {
        from,
        action: action.name(),
        detail: detail.to_owned(),
    };
    match action {
        A::Cancel { reason } | A::UnableToComplete { reason } if reason.trim().is_empty() => {
            return Err(illegal(" without a reason"));
        }
        _ => {}
    }
    let to = match (from, action) {
        (S::Created | S::Assigned | S::Accepted | S::EnRoute, A::Assign { .. }) => S::Assigned,
        (S::Assigned | S::Accepted | S::EnRoute, A::Unassign) => S::Created,
        (S::Assigned, A::Accept) => S::Accepted,
        (S::Accepted, A::StartTravel) => S::EnRoute,
        (S::EnRoute, A::Arrive) => S::OnSite,
        (S::OnSite, A::Complete { .. }) => S::Completed,
        (s, A::Cancel { .. }) if !s.is_final() => S::Cancelled,
        (S::EnRoute | S::OnSite, A::UnableToComplete { .. }) => S::UnableToComplete,
        _ => return Err(illegal("")),
    };
    Ok(to)
}

/// What kind of job an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkOrderKind {
    Emergency,
    LeakInvestigation,
    Repair,
    MeterCheck,
    PlannedInspection,
}

impl WorkOrderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkOrderKind::Emergency => "emergency",
            WorkOrderKind::LeakInvestigation => "leak_investigation",
            WorkOrderKind::Repair => "repair",
            WorkOrderKind::MeterCheck => "meter_check",
            WorkOrderKind::PlannedInspection => "planned_inspection",
        }
    }

    /// The skill a crew needs for this kind of job.
    pub fn required_skill(self) -> &'static str {
        match self {
            WorkOrderKind::Emergency | WorkOrderKind::LeakInvestigation => "emergency",
            WorkOrderKind::Repair => "repair",
            WorkOrderKind::MeterCheck => "meter",
            WorkOrderKind::PlannedInspection => "inspection",
        }
    }

    /// The default mapping from an escalated alert to a job.
    pub fn for_alert(kind: AlertKind, severity: Severity) -> (WorkOrderKind, Priority) {
        match (kind, severity) {
            (_, Severity::Critical) => (WorkOrderKind::Emergency, Priority::Emergency),
            (k, _) if k.is_leak() => (WorkOrderKind::LeakInvestigation, Priority::High),
            _ => (WorkOrderKind::MeterCheck, Priority::Normal),
        }
    }
}

impl FromStr for WorkOrderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            WorkOrderKind::Emergency,
            WorkOrderKind::LeakInvestigation,
            WorkOrderKind::Repair,
            WorkOrderKind::MeterCheck,
            WorkOrderKind::PlannedInspection,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("unknown work-order kind {s:?}"))
    }
}

/// Priority of a job; `Emergency` is the 60-minute class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Emergency,
    High,
    Normal,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Emergency => "emergency",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "emergency" => Ok(Priority::Emergency),
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => Err(format!("unknown priority {other:?}")),
        }
    }
}

/// A job for a crew.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrder {
    pub id: i64,
    pub kind: WorkOrderKind,
    pub priority: Priority,
    pub status: WorkOrderStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_id: Option<MeterId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district_id: Option<DistrictId>,
    pub location: GeoPoint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crew_id: Option<CrewId>,
    pub summary: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When the crew must be on site (emergencies) or the job done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Timestamp>,
}

/// One step of an order's audit trail; never edited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitionRecord {
    pub order_id: i64,
    pub from: WorkOrderStatus,
    pub to: WorkOrderStatus,
    pub action: String,
    /// Who asked: a user, a crew, or `dispatcher` for the automatic dispatcher.
    pub actor: String,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crew_id: Option<CrewId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderAction as A;
    use WorkOrderStatus as S;

    fn all_actions() -> Vec<OrderAction> {
        vec![
            A::Assign {
                crew_id: CrewId::parse("C1").unwrap(),
            },
            A::Unassign,
            A::Accept,
            A::StartTravel,
            A::Arrive,
            A::Complete { notes: None },
            A::Cancel { reason: "r".into() },
            A::UnableToComplete { reason: "r".into() },
        ]
    }

    #[test]
    fn the_happy_path_walks_to_completed() {
        let mut s = S::Created;
        for a in [
            A::Assign {
                crew_id: CrewId::parse("C1").unwrap(),
            },
            A::Accept,
            A::StartTravel,
            A::Arrive,
            A::Complete { notes: None },
        ] {
            s = next_status(s, &a).unwrap();
        }
        assert_eq!(s, S::Completed);
    }

    #[test]
    fn the_full_transition_table() {
        // Every (state, action) pair: exactly these are allowed.
        let allowed: &[(S, &str, S)] = &[
            (S::Created, "assign", S::Assigned),
            (S::Created, "cancel", S::Cancelled),
            (S::Assigned, "assign", S::Assigned),
            (S::Assigned, "unassign", S::Created),
            (S::Assigned, "accept", S::Accepted),
            (S::Assigned, "cancel", S::Cancelled),
            (S::Accepted, "assign", S::Assigned),
            (S::Accepted, "unassign", S::Created),
            (S::Accepted, "start_travel", S::EnRoute),
            (S::Accepted, "cancel", S::Cancelled),
            (S::EnRoute, "assign", S::Assigned),
            (S::EnRoute, "unassign", S::Created),
            (S::EnRoute, "arrive", S::OnSite),
            (S::EnRoute, "cancel", S::Cancelled),
            (S::EnRoute, "unable_to_complete", S::UnableToComplete),
            (S::OnSite, "complete", S::Completed),
            (S::OnSite, "cancel", S::Cancelled),
            (S::OnSite, "unable_to_complete", S::UnableToComplete),
        ];
        for from in S::ALL {
            for action in all_actions() {
                let expected = allowed
                    .iter()
                    .find(|(f, a, _)| f == from && *a == action.name())
                    .map(|(_, _, to)| *to);
                match (next_status(*from, &action), expected) {
                    (Ok(to), Some(exp)) => assert_eq!(to, exp, "{from} {}", action.name()),
                    (Err(_), None) => {}
                    (got, exp) => panic!("{from} {}: got {got:?}, expected {exp:?}", action.name()),
                }
            }
        }
    }

    #[test]
    fn final_states_refuse_everything() {
        for s in [S::Completed, S::Cancelled, S::UnableToComplete] {
            for a in all_actions() {
                assert!(next_status(s, &a).is_err());
            }
        }
    }

    #[test]
    fn cancel_needs_a_reason_and_says_so() {
        let err = next_status(S::Created, &A::Cancel { reason: "".into() }).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot cancel a work order that is created without a reason"
        );
        let err = next_status(S::Created, &A::Arrive).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot arrive a work order that is created"
        );
    }

    #[test]
    fn actions_read_from_json() {
        let a: OrderAction = serde_json::from_str(r#"{"action":"assign","crew_id":"C7"}"#).unwrap();
        assert_eq!(a.name(), "assign");
        let a: OrderAction = serde_json::from_str(r#"{"action":"complete"}"#).unwrap();
        assert_eq!(a, A::Complete { notes: None });
        assert!(serde_json::from_str::<OrderAction>(r#"{"action":"fly"}"#).is_err());
    }
}
