//! Work orders and their lifecycle, as a pure state machine.
//!
//! ```text
//! created -> assigned -> accepted -> en_route -> on_site -> completed
//!    ^          |  ^         |           |           |
//!    +-unassign-+  +-assign--+-----------+           +--> unable_to_complete
//! any non-final state --cancel--> cancelled;  en_route/on_site --> unable_to_complete
//! ```

use crate::{AlertKind, CrewId, DistrictId, GeoPoint, MeterId, Severity, SiteFinding, Timestamp};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

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
    pub const ALL: &'static [WorkOrderStatus] = <WorkOrderStatus as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
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
        crate::names::parse("work-order status", s)
    }
}

/// What a dispatcher, the dispatcher service or a field worker asks of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
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
    /// The job is done; leak jobs (see [`WorkOrderKind::requires_finding`]) carry the
    /// crew's finding.
    Complete {
        #[serde(default)]
        notes: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        finding: Option<SiteFinding>,
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
pub enum WorkOrderKind {
    Emergency,
    LeakInvestigation,
    Repair,
    MeterCheck,
    PlannedInspection,
    /// Programmed leak search along a set of pipe segments (issue 16): a survey crew
    /// walks or drives the segments with a methane detector and reports coverage and
    /// findings (`POST /api/v1/survey/orders/{id}/report`).
    LeakSurvey,
}

impl WorkOrderKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The skill a crew needs for this kind of job.
    pub fn required_skill(self) -> &'static str {
        match self {
            WorkOrderKind::Emergency | WorkOrderKind::LeakInvestigation => "emergency",
            WorkOrderKind::Repair => "repair",
            WorkOrderKind::MeterCheck => "meter",
            WorkOrderKind::PlannedInspection => "inspection",
            WorkOrderKind::LeakSurvey => "survey",
        }
    }

    /// The default mapping from an escalated alert to a job (a deployment configures
    /// its own with [`crate::mapping::EscalationMapping`]).
    pub fn for_alert(kind: AlertKind, severity: Severity) -> (WorkOrderKind, Priority) {
        match (kind, severity) {
            (_, Severity::Critical) => (WorkOrderKind::Emergency, Priority::Emergency),
            (k, _) if k.is_leak() => (WorkOrderKind::LeakInvestigation, Priority::High),
            _ => (WorkOrderKind::MeterCheck, Priority::Normal),
        }
    }

    /// Jobs sent to look for a leak: completing one needs the crew's finding, and the
    /// finding flows back to the alerts as confirmed leak or false positive.
    pub fn requires_finding(self) -> bool {
        matches!(
            self,
            WorkOrderKind::Emergency | WorkOrderKind::LeakInvestigation
        )
    }

    /// What the deadline of this kind of job asks for: being on site (emergencies and
    /// investigations: the crew must get there in time) or the job done (repairs,
    /// meter work, inspections).
    pub fn deadline_is_arrival(self) -> bool {
        self.requires_finding()
    }
}

impl FromStr for WorkOrderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::names::parse("work-order kind", s)
    }
}

/// Priority of a job; `Emergency` is the 60-minute class.
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
pub enum Priority {
    Emergency,
    High,
    Normal,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::names::parse("priority", s)
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
    /// The order this one follows up (a repair after an investigation found a leak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<i64>,
    /// When the current crew was given the order (acceptance is timed from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<Timestamp>,
    /// When a crew first got on site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_at: Option<Timestamp>,
    /// When the order was first found past its deadline (never cleared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breached_at: Option<Timestamp>,
    /// What the crew found on site, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<SiteFinding>,
}

/// Where an order stands against its deadline at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeadlineView {
    pub due_at: Timestamp,
    /// `arrival` (on site) or `completion`.
    pub measures: &'static str,
    /// When the deadline's condition was met, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met_at: Option<Timestamp>,
    /// Whole minutes from `now` to `due_at` (negative once past); frozen at `met_at`
    /// once met.
    pub minutes_left: i64,
    /// Met late, or not met and past due.
    pub breached: bool,
}

impl WorkOrder {
    /// When the deadline's condition was met: on site for arrival deadlines, completed
    /// for the others; `None` while not met (or the order ended without meeting it).
    pub fn deadline_met_at(&self) -> Option<Timestamp> {
        if self.kind.deadline_is_arrival() {
            self.reached_at
        } else if self.status == WorkOrderStatus::Completed {
            Some(self.updated_at)
        } else {
            None
        }
    }

    /// The order against its deadline at `now`; `None` without a deadline, or for an
    /// order cancelled before it was due.
    pub fn deadline(&self, now: Timestamp) -> Option<DeadlineView> {
        let due = self.due_at?;
        let met = self.deadline_met_at();
        if met.is_none() && self.status == WorkOrderStatus::Cancelled && self.updated_at <= due {
            // Cancelled in time: there is nothing left to be late for.
            return None;
        }
        // The clock stops when the condition is met, or when the order ends without it.
        let clock = match met {
            Some(m) => m,
            None if self.status.is_final() => self.updated_at,
            None => now,
        };
        let breached = clock > due;
        Some(DeadlineView {
            due_at: due,
            measures: if self.kind.deadline_is_arrival() {
                "arrival"
            } else {
                "completion"
            },
            met_at: met,
            minutes_left: (due - clock).num_minutes(),
            breached,
        })
    }
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
    /// Where the actor was, when the field app or the crew's MQTT location says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<GeoPoint>,
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
            A::Complete {
                notes: None,
                finding: None,
            },
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
            A::Complete {
                notes: None,
                finding: None,
            },
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
        assert_eq!(
            a,
            A::Complete {
                notes: None,
                finding: None,
            }
        );
        assert!(serde_json::from_str::<OrderAction>(r#"{"action":"fly"}"#).is_err());
    }

    fn order(kind: WorkOrderKind, status: S, due_in_min: i64) -> WorkOrder {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .unwrap()
            .to_utc();
        WorkOrder {
            id: 1,
            kind,
            priority: Priority::Emergency,
            status,
            alert_id: None,
            meter_id: None,
            district_id: None,
            location: GeoPoint::new(43.0, 11.0).unwrap(),
            crew_id: None,
            summary: String::new(),
            created_at: t0,
            updated_at: t0,
            due_at: Some(t0 + chrono::Duration::minutes(due_in_min)),
            parent_id: None,
            assigned_at: None,
            reached_at: None,
            breached_at: None,
            finding: None,
        }
    }

    #[test]
    fn an_emergency_deadline_is_met_by_arriving() {
        let min = chrono::Duration::minutes;
        let mut o = order(WorkOrderKind::Emergency, S::EnRoute, 60);
        let t0 = o.created_at;
        let d = o.deadline(t0 + min(45)).unwrap();
        assert_eq!(
            (d.minutes_left, d.breached, d.measures),
            (15, false, "arrival")
        );
        let d = o.deadline(t0 + min(75)).unwrap();
        assert_eq!((d.minutes_left, d.breached), (-15, true));
        // On site at 50 minutes: met, and the clock stops there.
        o.status = S::OnSite;
        o.reached_at = Some(t0 + min(50));
        let d = o.deadline(t0 + min(300)).unwrap();
        assert_eq!((d.minutes_left, d.breached), (10, false));
        assert_eq!(d.met_at, Some(t0 + min(50)));
        // Arriving late is a breach even once met.
        o.reached_at = Some(t0 + min(61));
        assert!(o.deadline(t0 + min(300)).unwrap().breached);
    }

    #[test]
    fn a_repair_deadline_is_met_by_completing() {
        let min = chrono::Duration::minutes;
        let mut o = order(WorkOrderKind::Repair, S::OnSite, 120);
        let t0 = o.created_at;
        o.reached_at = Some(t0 + min(10));
        assert_eq!(o.deadline(t0 + min(30)).unwrap().measures, "completion");
        assert!(o.deadline(t0 + min(130)).unwrap().breached);
        o.status = S::Completed;
        o.updated_at = t0 + min(100);
        let d = o.deadline(t0 + min(500)).unwrap();
        assert_eq!((d.minutes_left, d.breached), (20, false));
    }

    #[test]
    fn cancelled_in_time_has_no_deadline_and_no_deadline_has_none() {
        let min = chrono::Duration::minutes;
        let mut o = order(WorkOrderKind::Emergency, S::Cancelled, 60);
        o.updated_at = o.created_at + min(5);
        assert_eq!(o.deadline(o.created_at + min(90)), None);
        o.updated_at = o.created_at + min(70);
        assert!(o.deadline(o.created_at + min(90)).unwrap().breached);
        o.due_at = None;
        assert_eq!(o.deadline(o.created_at), None);
    }
}
