//! Work orders and crews: turning an escalated alert into a job, choosing the crew,
//! and walking the job through its lifecycle.
//!
//! The decisions are pure functions ([`choose_crew`], [`due_at`], and the lifecycle in
//! `leakwatch_core::workorder`); [`Dispatcher`] is the thin service that reads and
//! writes the store around them. This crate does not speak HTTP or MQTT: the API and
//! the crews' channels call it.

pub mod plan;

use chrono::{Duration, Utc};
use leakwatch_core::workorder::next_status;
use leakwatch_core::{
    Alert, AlertAction, AlertStatus, CrewId, GeoPoint, OrderAction, Priority, Timestamp,
    TransitionRecord, WorkOrder, WorkOrderKind, WorkOrderStatus,
};
use leakwatch_store::{CrewRow, NewWorkOrder, Store, StoreError};
use serde::{Deserialize, Serialize};

/// Settings of the work-order service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Escalate new leak alerts to work orders without waiting for an engineer
    /// (off in production; the demo turns it on).
    pub auto_escalate: bool,
    /// Assign new work orders to the nearest available crew automatically.
    pub auto_assign: bool,
    /// Minutes to be on site for an emergency (60: the Italian regulator's standard).
    pub emergency_arrival_min: u32,
    /// Hours to be on site for a leak investigation.
    pub investigation_arrival_h: u32,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            auto_escalate: false,
            auto_assign: true,
            emergency_arrival_min: 60,
            investigation_arrival_h: 24,
        }
    }
}

/// Why a dispatch request failed.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("{0}")]
    NotFound(String),
    /// The request breaks a rule (illegal transition, unknown crew, ...).
    #[error("{0}")]
    Rejected(String),
    /// Someone else changed the record first; the request may be retried.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for DispatchError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => DispatchError::NotFound(m),
            StoreError::Conflict(m) => DispatchError::Conflict(m),
            other => DispatchError::Store(other),
        }
    }
}

/// A crew considered for a job, with its straight-line distance to the job.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub crew_id: CrewId,
    pub distance_km: f64,
}

/// The nearest crew that is on shift, has no active job and has `skill`.
/// Ties go to the smaller crew id, so the choice is deterministic.
pub fn choose_crew(crews: &[CrewRow], at: GeoPoint, skill: &str) -> Option<Candidate> {
    crews
        .iter()
        .filter(|c| c.crew.on_shift && c.active_orders == 0)
        .filter(|c| c.crew.skills.iter().any(|s| s == skill))
        .map(|c| Candidate {
            crew_id: c.crew.id.clone(),
            distance_km: c.crew.believed_position().distance_km(&at),
        })
        .min_by(|a, b| {
            a.distance_km
                .total_cmp(&b.distance_km)
                .then_with(|| a.crew_id.cmp(&b.crew_id))
        })
}

/// When a new order must be reached, from its priority.
pub fn due_at(cfg: &DispatchConfig, priority: Priority, created: Timestamp) -> Option<Timestamp> {
    match priority {
        Priority::Emergency => {
            Some(created + Duration::minutes(i64::from(cfg.emergency_arrival_min)))
        }
        Priority::High => Some(created + Duration::hours(i64::from(cfg.investigation_arrival_h))),
        Priority::Normal | Priority::Low => None,
    }
}

/// The work-order service.
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    cfg: DispatchConfig,
}

impl Dispatcher {
    pub fn new(store: Store, cfg: DispatchConfig) -> Self {
        Self { store, cfg }
    }

    pub fn config(&self) -> &DispatchConfig {
        &self.cfg
    }

    /// Applies an engineer's review action (acknowledge, dismiss, resolve) to an alert.
    /// Escalation goes through [`Dispatcher::escalate`], which also creates the order.
    pub async fn review(
        &self,
        alert_id: i64,
        action: &AlertAction,
    ) -> Result<Alert, DispatchError> {
        if matches!(action, AlertAction::Escalate) {
            return self.escalate(alert_id, "api").await.map(|(a, _)| a);
        }
        let alert = self.alert(alert_id).await?;
        let to = alert
            .status
            .apply(action)
            .map_err(DispatchError::Rejected)?;
        let reason = match action {
            AlertAction::Dismiss { reason } => Some(reason.as_str()),
            _ => None,
        };
        Ok(self
            .store
            .set_alert_status(alert_id, alert.status, to, reason, None)
            .await?)
    }

    async fn alert(&self, id: i64) -> Result<Alert, DispatchError> {
        self.store
            .get_alert(id)
            .await?
            .ok_or_else(|| DispatchError::NotFound(format!("alert {id} does not exist")))
    }

    /// Escalates an alert: marks it escalated, creates its work order (kind, priority
    /// and deadline from the alert) and assigns it to the nearest available crew.
    #[tracing::instrument(skip(self), err(level = "warn"))]
    pub async fn escalate(
        &self,
        alert_id: i64,
        actor: &str,
    ) -> Result<(Alert, WorkOrder), DispatchError> {
        let alert = self.alert(alert_id).await?;
        alert
            .status
            .apply(&AlertAction::Escalate)
            .map_err(DispatchError::Rejected)?;
        let location = match &alert.meter_id {
            Some(m) => {
                self.store
                    .get_meter(m)
                    .await?
                    .ok_or_else(|| {
                        DispatchError::Rejected(format!(
                            "alert {alert_id} names meter {m}, which is not in the registry"
                        ))
                    })?
                    .location
            }
            None => {
                return Err(DispatchError::Rejected(format!(
                    "alert {alert_id} has no meter to send a crew to"
                )));
            }
        };
        // Claim the alert first, so two engineers escalating at once make one order.
        self.store
            .set_alert_status(alert_id, alert.status, AlertStatus::Escalated, None, None)
            .await?;
        let (kind, priority) = WorkOrderKind::for_alert(alert.kind, alert.severity);
        let order = self
            .store
            .create_work_order(&NewWorkOrder {
                kind,
                priority,
                alert_id: Some(alert_id),
                meter_id: alert.meter_id.clone(),
                district_id: alert.district_id.clone(),
                location,
                summary: format!("{}: {}", alert.kind, alert.evidence.explanation),
                due_at: due_at(&self.cfg, priority, Utc::now()),
                actor: actor.to_owned(),
            })
            .await?;
        let alert = self
            .store
            .set_alert_status(
                alert_id,
                AlertStatus::Escalated,
                AlertStatus::Escalated,
                None,
                Some(order.id),
            )
            .await?;
        metrics::counter!("leakwatch_work_orders_created_total", "kind" => kind.as_str())
            .increment(1);
        tracing::info!(
            alert_id,
            order_id = order.id,
            kind = kind.as_str(),
            "alert escalated"
        );
        let order = if self.cfg.auto_assign {
            self.assign_nearest(order.id).await?.unwrap_or(order)
        } else {
            order
        };
        Ok((alert, order))
    }

    /// Assigns an unassigned order to the nearest available, qualified crew on shift.
    /// Returns `None` when no crew can take it now (it stays `created`).
    pub async fn assign_nearest(&self, order_id: i64) -> Result<Option<WorkOrder>, DispatchError> {
        let order = self.order(order_id).await?;
        let crews = self.store.list_crews().await?;
        let Some(choice) = choose_crew(&crews, order.location, order.kind.required_skill()) else {
            metrics::counter!("leakwatch_dispatch_no_crew_total").increment(1);
            tracing::warn!(
                order_id,
                skill = order.kind.required_skill(),
                "no crew available"
            );
            return Ok(None);
        };
        tracing::info!(order_id, crew_id = %choice.crew_id, distance_km = choice.distance_km, "crew chosen");
        let note = format!("nearest available crew, {:.2} km", choice.distance_km);
        self.apply(
            order,
            OrderAction::Assign {
                crew_id: choice.crew_id,
            },
            "dispatcher",
            Some(note),
        )
        .await
        .map(Some)
    }

    async fn order(&self, id: i64) -> Result<WorkOrder, DispatchError> {
        self.store
            .get_work_order(id)
            .await?
            .ok_or_else(|| DispatchError::NotFound(format!("work order {id} does not exist")))
    }

    /// Moves an order through its lifecycle on someone's request.
    #[tracing::instrument(skip(self, action), fields(action = action.name()), err(level = "warn"))]
    pub async fn transition(
        &self,
        order_id: i64,
        action: OrderAction,
        actor: &str,
    ) -> Result<WorkOrder, DispatchError> {
        let order = self.order(order_id).await?;
        let note = match &action {
            OrderAction::Complete { notes } => notes.clone(),
            OrderAction::Cancel { reason } | OrderAction::UnableToComplete { reason } => {
                Some(reason.clone())
            }
            _ => None,
        };
        self.apply(order, action, actor, note).await
    }

    async fn apply(
        &self,
        order: WorkOrder,
        action: OrderAction,
        actor: &str,
        note: Option<String>,
    ) -> Result<WorkOrder, DispatchError> {
        let to = next_status(order.status, &action)
            .map_err(|e| DispatchError::Rejected(format!("work order {}: {e}", order.id)))?;
        let crew_change = match &action {
            OrderAction::Assign { crew_id } => {
                if self.store.get_crew(crew_id).await?.is_none() {
                    return Err(DispatchError::Rejected(format!(
                        "crew {crew_id} does not exist"
                    )));
                }
                Some(Some(crew_id))
            }
            OrderAction::Unassign => Some(None),
            _ => None,
        };
        let rec = TransitionRecord {
            order_id: order.id,
            from: order.status,
            to,
            action: action.name().to_owned(),
            actor: actor.to_owned(),
            at: Utc::now(),
            crew_id: match &action {
                OrderAction::Assign { crew_id } => Some(crew_id.clone()),
                _ => order.crew_id.clone(),
            },
            note,
        };
        let updated = self
            .store
            .apply_transition(order.id, &rec, crew_change)
            .await?;
        metrics::counter!("leakwatch_work_order_transitions_total", "to" => to.as_str())
            .increment(1);
        if to.is_final()
            && let Some(alert_id) = updated.alert_id
        {
            self.close_alert(alert_id, &updated).await?;
        }
        Ok(updated)
    }

    /// When an order ends, its alert is resolved with the outcome as the reason.
    async fn close_alert(&self, alert_id: i64, order: &WorkOrder) -> Result<(), DispatchError> {
        let Some(alert) = self.store.get_alert(alert_id).await? else {
            return Ok(());
        };
        if alert.status == AlertStatus::Escalated {
            let reason = format!("work order {} {}", order.id, order.status);
            self.store
                .set_alert_status(
                    alert_id,
                    AlertStatus::Escalated,
                    AlertStatus::Resolved,
                    Some(&reason),
                    Some(order.id),
                )
                .await?;
        }
        Ok(())
    }

    /// Is this order one a crew is currently working on?
    pub fn is_active(order: &WorkOrder) -> bool {
        order.status != WorkOrderStatus::Created && !order.status.is_final()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use leakwatch_core::Crew;

    fn crew(id: &str, lat: f64, lon: f64, on_shift: bool, active: i64, skills: &[&str]) -> CrewRow {
        CrewRow {
            crew: Crew {
                id: CrewId::parse(id).unwrap(),
                name: id.into(),
                skills: skills.iter().map(|s| s.to_string()).collect(),
                home: GeoPoint::new(lat, lon).unwrap(),
                position: None,
                position_at: None,
                on_shift,
            },
            active_orders: active,
        }
    }

    #[test]
    fn picks_the_nearest_available_qualified_crew_on_shift() {
        let job = GeoPoint::new(43.77, 11.25).unwrap();
        let crews = vec![
            crew("C-near-off", 43.7701, 11.2501, false, 0, &["emergency"]),
            crew("C-near-busy", 43.7702, 11.2502, true, 1, &["emergency"]),
            crew("C-near-unskilled", 43.7703, 11.2503, true, 0, &["meter"]),
            crew("C-mid", 43.78, 11.25, true, 0, &["emergency", "repair"]),
            crew("C-far", 43.90, 11.25, true, 0, &["emergency"]),
        ];
        let c = choose_crew(&crews, job, "emergency").unwrap();
        assert_eq!(c.crew_id.as_str(), "C-mid");
        assert!((c.distance_km - 1.11).abs() < 0.02, "{}", c.distance_km);
        assert!(choose_crew(&crews, job, "welding").is_none());
    }

    #[test]
    fn a_fresh_position_beats_the_home_base() {
        let job = GeoPoint::new(43.77, 11.25).unwrap();
        let mut a = crew("A", 43.90, 11.25, true, 0, &["emergency"]);
        a.crew.position = Some(GeoPoint::new(43.771, 11.25).unwrap());
        let b = crew("B", 43.78, 11.25, true, 0, &["emergency"]);
        assert_eq!(
            choose_crew(&[a, b], job, "emergency")
                .unwrap()
                .crew_id
                .as_str(),
            "A"
        );
    }

    #[test]
    fn ties_go_to_the_smaller_id() {
        let job = GeoPoint::new(0.0, 0.0).unwrap();
        let crews = vec![
            crew("B", 0.1, 0.0, true, 0, &["emergency"]),
            crew("A", -0.1, 0.0, true, 0, &["emergency"]),
        ];
        assert_eq!(
            choose_crew(&crews, job, "emergency")
                .unwrap()
                .crew_id
                .as_str(),
            "A"
        );
    }

    #[test]
    fn deadlines_follow_priority() {
        let cfg = DispatchConfig::default();
        let t = Utc.with_ymd_and_hms(2026, 11, 26, 23, 30, 0).unwrap();
        assert_eq!(
            due_at(&cfg, Priority::Emergency, t),
            Some(Utc.with_ymd_and_hms(2026, 11, 27, 0, 30, 0).unwrap())
        );
        assert_eq!(
            due_at(&cfg, Priority::High, t),
            Some(Utc.with_ymd_and_hms(2026, 11, 27, 23, 30, 0).unwrap())
        );
        assert_eq!(due_at(&cfg, Priority::Low, t), None);
    }
}
