//! The work-order service: reads and writes the store around the pure decisions and
//! tells the crews' channel what changed.

use crate::choose::{self, CrewState, CurrentJob};
use crate::grouping::{self, GroupDecision, OpenOrder};
use crate::plan::{self, DayPlan, PlanCrew, PlanInput, PlanJob};
use crate::travel::TravelTime;
use crate::{DispatchConfig, DispatchError};
use chrono::{Duration, NaiveDate, Utc};
use leakwatch_core::workorder::next_status;
use leakwatch_core::{
    Alert, AlertAction, AlertKind, AlertOutcome, AlertStatus, CrewId, GeoPoint, LeakClassTable,
    MeterKind, OrderAction, Priority, SiteFinding, Timestamp, TransitionRecord, WorkOrder,
    WorkOrderKind, WorkOrderStatus,
};
use leakwatch_store::{NewWorkOrder, OrderChange, OutcomeStat, Store};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What happened to a crew's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobChange {
    /// The job is now the crew's.
    Assigned,
    /// The job changed (status, priority, deadline).
    Updated,
    /// The job was taken from the crew (reassigned, pre-empted, unassigned).
    Withdrawn,
}

/// A message for one crew's devices about one job.
#[derive(Debug, Clone, Serialize)]
pub struct JobNotice {
    pub crew_id: CrewId,
    pub change: JobChange,
    pub order: WorkOrder,
}

/// Escalated alerts of one kind and what the crews found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutcomeRow {
    pub kind: AlertKind,
    pub escalated: i64,
    pub confirmed: i64,
    pub false_positive: i64,
    /// Escalated, no finding yet.
    pub pending: i64,
    /// Confirmed share of the alerts with a finding; absent without findings.
    pub precision: Option<f64>,
}

/// What one supervisor pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TickReport {
    pub acceptance_timeouts: u32,
    pub assigned: u32,
    pub breaches: u32,
}

/// Marks an audit record as an acceptance timeout (and names its crew).
const TIMEOUT_NOTE: &str = "acceptance timeout";

/// The work-order service. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    cfg: Arc<DispatchConfig>,
    travel: Arc<TravelTime>,
    leak_table: Arc<LeakClassTable>,
    notify: Option<mpsc::UnboundedSender<JobNotice>>,
}

impl Dispatcher {
    /// A dispatcher on `store`; `cfg` must have passed [`DispatchConfig::validate`]
    /// (an invalid leak-class setting falls back to the Italian preset, logged).
    pub fn new(store: Store, cfg: DispatchConfig) -> Self {
        let leak_table = cfg.leak_table().unwrap_or_else(|e| {
            tracing::error!(error = %e, "leak classes: using the Italian preset");
            LeakClassTable::italian()
        });
        Self {
            store,
            travel: Arc::new(cfg.travel.build().unwrap_or_else(|e| {
                tracing::error!(error = %e, "travel times: using the built-in model");
                TravelTime::Builtin(cfg.travel.builtin.clone())
            })),
            cfg: Arc::new(cfg),
            leak_table: Arc::new(leak_table),
            notify: None,
        }
    }

    /// Sends a [`JobNotice`] for every new or changed job to `tx` (the crews' MQTT
    /// channel).
    pub fn with_notifier(mut self, tx: mpsc::UnboundedSender<JobNotice>) -> Self {
        self.notify = Some(tx);
        self
    }

    pub fn config(&self) -> &DispatchConfig {
        &self.cfg
    }

    /// The leak classes crews record.
    pub fn leak_classes(&self) -> &LeakClassTable {
        &self.leak_table
    }

    fn tell(&self, crew_id: &CrewId, change: JobChange, order: &WorkOrder) {
        if let Some(tx) = &self.notify {
            let _ = tx.send(JobNotice {
                crew_id: crew_id.clone(),
                change,
                order: order.clone(),
            });
        }
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

    async fn order(&self, id: i64) -> Result<WorkOrder, DispatchError> {
        self.store
            .get_work_order(id)
            .await?
            .ok_or_else(|| DispatchError::NotFound(format!("work order {id} does not exist")))
    }

    /// Where a crew goes for an alert: its meter, or for a district alert the
    /// district's station.
    async fn location_of(&self, alert: &Alert) -> Result<GeoPoint, DispatchError> {
        if let Some(m) = &alert.meter_id {
            let meter = self.store.get_meter(m).await?.ok_or_else(|| {
                DispatchError::Rejected(format!(
                    "alert {} names meter {m}, which is not in the registry",
                    alert.id
                ))
            })?;
            return Ok(meter.location);
        }
        if let Some(d) = &alert.district_id {
            let station = self
                .store
                .all_meters()
                .await?
                .into_iter()
                .filter(|m| m.kind == MeterKind::Station && &m.district == d)
                .min_by(|a, b| a.id.cmp(&b.id));
            if let Some(s) = station {
                return Ok(s.location);
            }
        }
        Err(DispatchError::Rejected(format!(
            "alert {} has no meter or district station to send a crew to",
            alert.id
        )))
    }

    /// Escalates an alert: marks it escalated and either joins it to an open order
    /// close in place and time (incident grouping, upgrading that order when this
    /// alert is more urgent) or creates its order (kind, priority and deadline from
    /// the mapping), which goes at once to the nearest crew when urgent.
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
        let location = self.location_of(&alert).await?;
        let now = Utc::now();
        let job = self.cfg.mapping.job_for(alert.kind, alert.severity);
        let due = job
            .deadline_min
            .map(|m| now + Duration::minutes(i64::from(m)));
        // Claim the alert first, so two engineers escalating at once make one order.
        self.store
            .set_alert_status(alert_id, alert.status, AlertStatus::Escalated, None, None)
            .await?;

        let active = self.store.active_work_orders().await?;
        // A leak already found and waiting for its repair absorbs new leak alerts on
        // its meter, however long ago it was found: the crew is coming to repair it.
        // Only an emergency makes the repair more urgent.
        if job.kind.requires_finding()
            && let Some(repair) = active.iter().find(|o| {
                o.kind == WorkOrderKind::Repair
                    && o.meter_id.is_some()
                    && o.meter_id == alert.meter_id
            })
        {
            let upgrade = (job.priority == Priority::Emergency
                && repair.priority != Priority::Emergency)
                .then_some(Priority::Emergency);
            let reason = format!("the leak is known: repair work order {} is open", repair.id);
            let (_, order) = self
                .join(alert_id, repair.id, upgrade, due, &reason)
                .await?;
            // The crew confirmed this leak on site already.
            self.store
                .set_outcome_for_order(repair.id, AlertOutcome::ConfirmedLeak, now)
                .await?;
            return Ok((self.alert(alert_id).await?, order));
        }
        let open: Vec<OpenOrder> = active
            .iter()
            .filter(|o| o.kind.requires_finding() == job.kind.requires_finding())
            .map(|o| OpenOrder {
                order_id: o.id,
                location: o.location,
                created_at: o.created_at,
                priority: o.priority,
                status: o.status,
            })
            .collect();
        if let GroupDecision::Join {
            order_id,
            upgrade_to,
        } = grouping::group(&self.cfg.grouping, location, now, job.priority, &open)
        {
            let reason = format!("grouped into work order {order_id}");
            return self
                .join(alert_id, order_id, upgrade_to, due, &reason)
                .await;
        }

        let order = self
            .store
            .create_work_order(&NewWorkOrder {
                kind: job.kind,
                priority: job.priority,
                alert_id: Some(alert_id),
                meter_id: alert.meter_id.clone(),
                district_id: alert.district_id.clone(),
                location,
                summary: format!("{}: {}", alert.kind, alert.evidence.explanation),
                due_at: due,
                actor: actor.to_owned(),
                parent_id: None,
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
        metrics::counter!("leakwatch_work_orders_created_total", "kind" => job.kind.as_str())
            .increment(1);
        tracing::info!(
            alert_id,
            order_id = order.id,
            kind = job.kind.as_str(),
            "alert escalated"
        );
        let order = if self.urgent(&order) {
            self.assign_nearest(order.id, &[]).await?.unwrap_or(order)
        } else {
            order
        };
        Ok((alert, order))
    }

    /// Joins an escalated alert to an open order, upgrading the order's priority
    /// (and bringing its deadline forward) when asked; the crew's phone hears of it.
    async fn join(
        &self,
        alert_id: i64,
        order_id: i64,
        upgrade_to: Option<Priority>,
        due: Option<Timestamp>,
        reason: &str,
    ) -> Result<(Alert, WorkOrder), DispatchError> {
        let alert = self
            .store
            .set_alert_status(
                alert_id,
                AlertStatus::Escalated,
                AlertStatus::Escalated,
                Some(reason),
                Some(order_id),
            )
            .await?;
        let mut order = self.order(order_id).await?;
        if let Some(p) = upgrade_to {
            let due = match (order.due_at, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            order = self.store.set_work_order_priority(order_id, p, due).await?;
            if let Some(c) = &order.crew_id {
                self.tell(c, JobChange::Updated, &order);
            }
        }
        metrics::counter!("leakwatch_alerts_grouped_total").increment(1);
        tracing::info!(
            alert_id,
            order_id,
            reason,
            "alert joined an open work order"
        );
        if order.status == WorkOrderStatus::Created && self.urgent(&order) {
            order = self.assign_nearest(order_id, &[]).await?.unwrap_or(order);
        }
        Ok((alert, order))
    }

    /// Whether `dispatch.auto_escalate` should send a crew for this alert: a leak
    /// kind, and no alert of the same kind on the same meter found a false positive
    /// on site in the last `auto_escalate_quiet_days` (a crew found nothing there;
    /// an engineer decides whether to send another).
    pub async fn should_auto_escalate(&self, alert: &Alert) -> Result<bool, DispatchError> {
        if !self.cfg.auto_escalate || !alert.kind.is_leak() {
            return Ok(false);
        }
        let Some(meter) = &alert.meter_id else {
            return Ok(true);
        };
        let since = Utc::now() - Duration::days(i64::from(self.cfg.auto_escalate_quiet_days));
        let earlier = self
            .store
            .list_alerts(&leakwatch_store::AlertQuery {
                kind: Some(alert.kind),
                meter_id: Some(meter.clone()),
                limit: 50,
                ..Default::default()
            })
            .await?;
        Ok(!earlier.iter().any(|a| {
            a.id != alert.id
                && a.outcome == Some(leakwatch_core::AlertOutcome::FalsePositive)
                && a.created_at >= since
        }))
    }

    /// Orders that go to a crew at once (with `auto_assign`); the rest wait for the
    /// day plan.
    fn urgent(&self, order: &WorkOrder) -> bool {
        self.cfg.auto_assign && order.priority <= Priority::High
    }

    /// Creates an order by hand (planned work, a meter replacement...). It waits for
    /// the day plan unless urgent.
    pub async fn create(&self, new: &NewWorkOrder) -> Result<WorkOrder, DispatchError> {
        let order = self.store.create_work_order(new).await?;
        metrics::counter!("leakwatch_work_orders_created_total", "kind" => order.kind.as_str())
            .increment(1);
        if self.urgent(&order) {
            return Ok(self.assign_nearest(order.id, &[]).await?.unwrap_or(order));
        }
        Ok(order)
    }

    /// The crews as the choice sees them at `now`.
    async fn crew_states(
        &self,
        now: Timestamp,
    ) -> Result<Vec<(CrewState, leakwatch_core::PositionSource)>, DispatchError> {
        let max_age = Duration::minutes(i64::from(self.cfg.position_max_age_min));
        Ok(self
            .store
            .list_crews()
            .await?
            .into_iter()
            .map(|r| {
                let (position, source) = r.crew.believed_position(now, max_age);
                (
                    CrewState {
                        on_shift: r.crew.on_shift_at(now),
                        id: r.crew.id,
                        skills: r.crew.skills,
                        position,
                        current: r.current.map(|c| CurrentJob {
                            order_id: c.order_id,
                            priority: c.priority,
                            status: c.status,
                        }),
                    },
                    source,
                )
            })
            .collect())
    }

    /// Assigns an unassigned order to the qualified, on-shift crew with the shortest
    /// travel time, pre-empting a crew on non-emergency work for an emergency when
    /// the policy allows (the pre-empted order goes back to `created` and is given
    /// to another crew by the supervisor). Crews in `exclude` are not considered.
    /// Returns `None` when no crew can take it now (it stays `created`).
    pub async fn assign_nearest(
        &self,
        order_id: i64,
        exclude: &[CrewId],
    ) -> Result<Option<WorkOrder>, DispatchError> {
        let order = self.order(order_id).await?;
        if order.status != WorkOrderStatus::Created {
            return Err(DispatchError::Rejected(format!(
                "work order {order_id} is {}, not waiting for a crew",
                order.status
            )));
        }
        let now = Utc::now();
        let crews = self.crew_states(now).await?;
        let states: Vec<CrewState> = crews.iter().map(|(s, _)| s.clone()).collect();
        let positions: Vec<GeoPoint> = states.iter().map(|s| s.position).collect();
        let durations = self
            .travel
            .durations_s(&positions, &[order.location])
            .await
            .map_err(|e| DispatchError::Rejected(format!("travel times: {e}")))?;
        let travel_s: Vec<f64> = durations.seconds.iter().map(|row| row[0]).collect();
        let skill = order.kind.required_skill();
        let Some(choice) = choose::choose_nearest(
            &states,
            &travel_s,
            skill,
            order.priority,
            &self.cfg.choice,
            exclude,
        ) else {
            metrics::counter!("leakwatch_dispatch_no_crew_total").increment(1);
            tracing::warn!(order_id, skill, "no crew available");
            return Ok(None);
        };
        if let Some(pre) = choice.preempts {
            let other = self.order(pre).await?;
            self.apply(
                other,
                OrderAction::Unassign,
                "dispatcher",
                Some(format!("pre-empted by emergency work order {order_id}")),
                None,
                None,
            )
            .await?;
            metrics::counter!("leakwatch_dispatch_preemptions_total").increment(1);
            tracing::warn!(order_id, preempted = pre, crew_id = %choice.crew_id, "crew pre-empted");
        }
        let source = crews
            .iter()
            .find(|(s, _)| s.id == choice.crew_id)
            .map(|(_, src)| *src);
        let note = format!(
            "nearest crew: {:.0} min by {} travel times from its {}{}",
            choice.travel_s / 60.0,
            durations.provider,
            match source {
                Some(leakwatch_core::PositionSource::Reported) => "reported position",
                Some(leakwatch_core::PositionSource::LastJob) => "last job's place",
                _ => "home base",
            },
            match choice.preempts {
                Some(p) => format!(", pre-empting work order {p}"),
                None => String::new(),
            }
        );
        tracing::info!(order_id, crew_id = %choice.crew_id, travel_s = choice.travel_s, "crew chosen");
        self.apply(
            order,
            OrderAction::Assign {
                crew_id: choice.crew_id,
            },
            "dispatcher",
            Some(note),
            None,
            None,
        )
        .await
        .map(Some)
    }

    /// Moves an order through its lifecycle on someone's request; `position` is where
    /// the actor was (the field app sends it). Completing a leak job needs the crew's
    /// finding, checked against the leak classes; the finding marks the order's
    /// alerts confirmed or false positive and, for a leak not repaired, creates the
    /// follow-up repair order with the class's deadline.
    #[tracing::instrument(skip(self, action), fields(action = action.name()), err(level = "warn"))]
    pub async fn transition(
        &self,
        order_id: i64,
        action: OrderAction,
        actor: &str,
        position: Option<GeoPoint>,
    ) -> Result<WorkOrder, DispatchError> {
        let order = self.order(order_id).await?;
        let (note, finding) = match &action {
            OrderAction::Complete { notes, finding } => {
                if order.kind.requires_finding() && finding.is_none() {
                    return Err(DispatchError::Invalid(format!(
                        "work order {order_id} is a {} job: completing it needs the crew's finding",
                        order.kind.as_str()
                    )));
                }
                if let Some(f) = finding {
                    f.validate(&self.leak_table)
                        .map_err(|e| DispatchError::Invalid(format!("finding: {e}")))?;
                }
                (notes.clone(), finding.clone())
            }
            OrderAction::Cancel { reason } | OrderAction::UnableToComplete { reason } => {
                (Some(reason.clone()), None)
            }
            _ => (None, None),
        };
        let now = Utc::now();
        let updated = self
            .apply(order, action, actor, note, position, finding.clone())
            .await?;
        if let Some(crew) = &updated.crew_id {
            if let Some(p) = position {
                self.store.set_crew_position(crew, p, now).await?;
            }
            if updated.status == WorkOrderStatus::OnSite {
                self.store
                    .set_crew_last_job_place(crew, updated.location)
                    .await?;
            }
        }
        if let (WorkOrderStatus::Completed, Some(f)) = (updated.status, &finding) {
            self.record_finding(&updated, f, now).await?;
        }
        Ok(updated)
    }

    async fn record_finding(
        &self,
        order: &WorkOrder,
        finding: &SiteFinding,
        now: Timestamp,
    ) -> Result<(), DispatchError> {
        let outcome = finding.outcome();
        let n = self
            .store
            .set_outcome_for_order(order.id, outcome, now)
            .await?;
        metrics::counter!("leakwatch_alert_outcomes_total", "outcome" => outcome.as_str())
            .increment(n);
        tracing::info!(
            order_id = order.id,
            outcome = outcome.as_str(),
            alerts = n,
            "finding recorded"
        );
        if !finding.needs_follow_up() {
            return Ok(());
        }
        let class = finding.leak_class.as_deref().unwrap_or_default();
        let due = self
            .leak_table
            .repair_due(class, now)
            .map_err(DispatchError::Rejected)?;
        let hours = self.leak_table.get(class).and_then(|c| c.repair_within_h);
        let priority = match hours {
            Some(0) => Priority::Emergency,
            Some(h) if h <= 24 => Priority::High,
            Some(_) => Priority::Normal,
            None => Priority::Low,
        };
        let follow_up = self
            .create(&NewWorkOrder {
                kind: WorkOrderKind::Repair,
                priority,
                alert_id: order.alert_id,
                meter_id: order.meter_id.clone(),
                district_id: order.district_id.clone(),
                location: order.location,
                summary: format!(
                    "repair: class {class} leak found by work order {}{}",
                    order.id,
                    if finding.notes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", finding.notes)
                    }
                ),
                due_at: due,
                actor: "dispatcher".into(),
                parent_id: Some(order.id),
            })
            .await?;
        tracing::info!(
            order_id = order.id,
            follow_up = follow_up.id,
            class,
            "follow-up repair order created"
        );
        Ok(())
    }

    async fn apply(
        &self,
        order: WorkOrder,
        action: OrderAction,
        actor: &str,
        note: Option<String>,
        position: Option<GeoPoint>,
        finding: Option<SiteFinding>,
    ) -> Result<WorkOrder, DispatchError> {
        let to = next_status(order.status, &action)
            .map_err(|e| DispatchError::Rejected(format!("work order {}: {e}", order.id)))?;
        let crew = match &action {
            OrderAction::Assign { crew_id } => {
                if self.store.get_crew(crew_id).await?.is_none() {
                    return Err(DispatchError::Rejected(format!(
                        "crew {crew_id} does not exist"
                    )));
                }
                Some(Some(crew_id.clone()))
            }
            OrderAction::Unassign => Some(None),
            _ => None,
        };
        let now = Utc::now();
        let rec = TransitionRecord {
            order_id: order.id,
            from: order.status,
            to,
            action: action.name().to_owned(),
            actor: actor.to_owned(),
            at: now,
            crew_id: match &action {
                OrderAction::Assign { crew_id } => Some(crew_id.clone()),
                _ => order.crew_id.clone(),
            },
            note,
            position,
        };
        let updated = self
            .store
            .apply_transition(order.id, &rec, &OrderChange { crew, finding })
            .await?;
        metrics::counter!("leakwatch_work_order_transitions_total", "to" => to.as_str())
            .increment(1);
        match &action {
            OrderAction::Assign { crew_id } => {
                if let Some(prev) = order.crew_id.as_ref().filter(|p| *p != crew_id) {
                    self.tell(prev, JobChange::Withdrawn, &updated);
                }
                self.tell(crew_id, JobChange::Assigned, &updated);
            }
            OrderAction::Unassign => {
                if let Some(prev) = &order.crew_id {
                    self.tell(prev, JobChange::Withdrawn, &updated);
                }
            }
            _ => {
                if let Some(c) = &updated.crew_id {
                    self.tell(c, JobChange::Updated, &updated);
                }
            }
        }
        self.check_breach(&updated, now).await?;
        if to.is_final() {
            self.close_alerts(&updated).await?;
        }
        Ok(updated)
    }

    /// Flags an order past its deadline, once.
    async fn check_breach(&self, order: &WorkOrder, now: Timestamp) -> Result<bool, DispatchError> {
        if order.breached_at.is_some() {
            return Ok(false);
        }
        let Some(d) = order.deadline(now) else {
            return Ok(false);
        };
        if !d.breached || !self.store.mark_breached(order.id, now).await? {
            return Ok(false);
        }
        metrics::counter!("leakwatch_work_order_deadline_breaches_total", "kind" => order.kind.as_str())
            .increment(1);
        tracing::warn!(
            order_id = order.id,
            kind = order.kind.as_str(),
            due_at = %d.due_at,
            measures = d.measures,
            "work order past its deadline"
        );
        Ok(true)
    }

    /// When an order ends, its escalated alerts are resolved with the outcome as the
    /// reason.
    async fn close_alerts(&self, order: &WorkOrder) -> Result<(), DispatchError> {
        for alert in self.store.alerts_of_order(order.id).await? {
            if alert.status == AlertStatus::Escalated {
                let reason = format!("work order {} {}", order.id, order.status);
                self.store
                    .set_alert_status(
                        alert.id,
                        AlertStatus::Escalated,
                        AlertStatus::Resolved,
                        Some(&reason),
                        Some(order.id),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Crews that let this order time out before: not asked again.
    async fn timed_out_crews(&self, order_id: i64) -> Result<Vec<CrewId>, DispatchError> {
        Ok(self
            .store
            .work_order_history(order_id)
            .await?
            .into_iter()
            .filter(|r| {
                r.action == "unassign"
                    && r.note
                        .as_deref()
                        .is_some_and(|n| n.starts_with(TIMEOUT_NOTE))
            })
            .filter_map(|r| r.crew_id)
            .collect())
    }

    /// One supervisor pass at `now`: urgent orders not accepted within
    /// `accept_within_s` go to the next crew (the alerts' engineers see why);
    /// urgent orders nobody holds are offered again; orders past their deadline are
    /// flagged and counted.
    pub async fn tick(&self, now: Timestamp) -> Result<TickReport, DispatchError> {
        let mut report = TickReport::default();
        let limit = now - Duration::seconds(self.cfg.accept_within_s as i64);
        for order in self.store.orders_awaiting_acceptance(limit).await? {
            if order.priority > Priority::High {
                continue;
            }
            let Some(crew) = order.crew_id.clone() else {
                continue;
            };
            let id = order.id;
            let note = format!(
                "{TIMEOUT_NOTE}: {crew} did not accept within {} s",
                self.cfg.accept_within_s
            );
            match self
                .apply(
                    order,
                    OrderAction::Unassign,
                    "dispatcher",
                    Some(note),
                    None,
                    None,
                )
                .await
            {
                Ok(_) => {}
                // Accepted (or changed) meanwhile.
                Err(DispatchError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
            report.acceptance_timeouts += 1;
            metrics::counter!("leakwatch_dispatch_acceptance_timeouts_total").increment(1);
            let excluded = self.timed_out_crews(id).await?;
            let next = self.assign_nearest(id, &excluded).await?;
            let reason = match &next {
                Some(o) => format!(
                    "work order {id} not accepted by {crew} within {} s; reassigned to {}",
                    self.cfg.accept_within_s,
                    o.crew_id.as_ref().map(|c| c.as_str()).unwrap_or("?")
                ),
                None => format!(
                    "work order {id} not accepted by {crew} within {} s; no other crew available",
                    self.cfg.accept_within_s
                ),
            };
            if next.is_some() {
                report.assigned += 1;
            }
            tracing::warn!(order_id = id, %crew, "{reason}");
            for alert in self.store.alerts_of_order(id).await? {
                if alert.status == AlertStatus::Escalated {
                    self.store
                        .set_alert_status(
                            alert.id,
                            AlertStatus::Escalated,
                            AlertStatus::Escalated,
                            Some(&reason),
                            Some(id),
                        )
                        .await?;
                }
            }
        }
        if self.cfg.auto_assign {
            for order in self.store.active_work_orders().await? {
                if order.status != WorkOrderStatus::Created || order.priority > Priority::High {
                    continue;
                }
                let excluded = self.timed_out_crews(order.id).await?;
                match self.assign_nearest(order.id, &excluded).await {
                    Ok(Some(_)) => report.assigned += 1,
                    Ok(None) | Err(DispatchError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for order in self.store.orders_due_before(now).await? {
            if self.check_breach(&order, now).await? {
                report.breaches += 1;
            }
        }
        metrics::gauge!("leakwatch_work_orders_breached")
            .set(self.store.count_breached().await? as f64);
        Ok(report)
    }

    /// Escalated alerts per detector kind and what crews found: the share confirmed
    /// on site.
    pub async fn outcomes(&self) -> Result<Vec<OutcomeRow>, DispatchError> {
        Ok(self
            .store
            .outcome_stats()
            .await?
            .into_iter()
            .map(|s: OutcomeStat| {
                let judged = s.confirmed + s.false_positive;
                OutcomeRow {
                    kind: s.kind,
                    escalated: s.escalated,
                    confirmed: s.confirmed,
                    false_positive: s.false_positive,
                    pending: s.escalated - judged,
                    precision: (judged > 0).then(|| s.confirmed as f64 / judged as f64),
                }
            })
            .collect())
    }

    /// The day plan for `date` (local): every on-shift crew from its home, the
    /// unassigned non-emergency orders as jobs. With `apply`, the planned orders are
    /// assigned to their crews in route order.
    pub async fn plan_day(&self, date: NaiveDate, apply: bool) -> Result<DayPlan, DispatchError> {
        let p = &self.cfg.plan;
        let mut crews = Vec::new();
        for r in self.store.list_crews().await? {
            let (offset, intervals) = match &r.crew.shifts {
                Some(s) => (s.utc_offset_h, s.intervals_on(date)),
                None => (
                    p.utc_offset_h,
                    vec![(p.default_shift_start_min, p.default_shift_end_min)],
                ),
            };
            let Some(&(start, _)) = intervals.first() else {
                continue;
            };
            let end = intervals.iter().map(|i| i.1).max().unwrap_or(start);
            let local = |min: u32| {
                date.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
                    + Duration::minutes(i64::from(min))
                    - Duration::hours(i64::from(offset))
            };
            crews.push(PlanCrew {
                id: r.crew.id,
                skills: r.crew.skills,
                home: r.crew.home,
                shift_start: local(start),
                shift_end: local(end),
            });
        }
        let day_start = crews.iter().map(|c| c.shift_start).min();
        let day_end = crews.iter().map(|c| c.shift_end).max();
        let jobs: Vec<PlanJob> = self
            .store
            .active_work_orders()
            .await?
            .into_iter()
            .filter(|o| o.status == WorkOrderStatus::Created && o.priority != Priority::Emergency)
            .map(|o| PlanJob {
                order_id: o.id,
                location: o.location,
                duration_min: p.default_job_min,
                skill: o.kind.required_skill().to_owned(),
                priority: o.priority,
                window: job_window(o.due_at, p.default_job_min, day_start, day_end),
            })
            .collect();
        let places: Vec<GeoPoint> = crews
            .iter()
            .map(|c| c.home)
            .chain(jobs.iter().map(|j| j.location))
            .collect();
        let matrix = self
            .travel
            .durations_s(&places, &places)
            .await
            .map_err(|e| DispatchError::Rejected(format!("travel times: {e}")))?;
        let input = PlanInput {
            crews,
            jobs,
            matrix_s: matrix.seconds,
            max_generations: p.max_generations,
            max_time_s: p.max_time_s,
        };
        let plan = tokio::task::spawn_blocking(move || plan::plan_day(&input))
            .await
            .map_err(|e| DispatchError::Rejected(format!("planner stopped: {e}")))?
            .map_err(|e| DispatchError::Rejected(format!("day plan: {e}")))?;
        if apply {
            for route in &plan.routes {
                for (i, stop) in route.stops.iter().enumerate() {
                    let order = self.order(stop.order_id).await?;
                    let note = format!(
                        "day plan {date}: stop {} of {}, arrival {}",
                        i + 1,
                        route.stops.len(),
                        stop.arrival.format("%H:%M UTC")
                    );
                    self.apply(
                        order,
                        OrderAction::Assign {
                            crew_id: route.crew_id.clone(),
                        },
                        "planner",
                        Some(note),
                        None,
                        None,
                    )
                    .await?;
                }
            }
        }
        Ok(plan)
    }

    /// Records a crew's position (field app or MQTT `crews/{id}/location`).
    pub async fn crew_position(
        &self,
        crew: &CrewId,
        at: GeoPoint,
        when: Timestamp,
    ) -> Result<(), DispatchError> {
        Ok(self.store.set_crew_position(crew, at, when).await?)
    }

    /// Is this order one a crew is currently working on?
    pub fn is_active(order: &WorkOrder) -> bool {
        order.status != WorkOrderStatus::Created && !order.status.is_final()
    }
}

/// A planned job due during the planned day must start early enough to be done by
/// its deadline; one due later (or already late, or without a deadline) may start any
/// time in the day.
fn job_window(
    due: Option<Timestamp>,
    duration_min: u32,
    day_start: Option<Timestamp>,
    day_end: Option<Timestamp>,
) -> Option<(Timestamp, Timestamp)> {
    let (due, start, end) = (due?, day_start?, day_end?);
    let latest_start = due - Duration::minutes(i64::from(duration_min));
    (latest_start > start && due < end).then_some((start, latest_start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakwatch_core::{Crew, DistrictId, Evidence, Finding, MeterId, MeterRecord, Severity};

    async fn store() -> Store {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let meters: Vec<_> = [
            ("M-1", 43.7700, 11.2500),
            ("M-2", 43.7703, 11.2503),
            ("M-3", 43.7400, 11.2000),
            ("M-4", 43.7500, 11.2200),
            ("M-5", 43.7600, 11.2800),
        ]
        .into_iter()
        .map(|(id, lat, lon)| {
            MeterRecord {
                meter_id: id.into(),
                district_id: "D1".into(),
                kind: "customer".into(),
                lat,
                lon,
                report_every_h: None,
                status: None,
                installed_at: None,
                max_flow_m3h: None,
            }
            .to_meter()
            .unwrap()
        })
        .collect();
        store.upsert_meters(&meters).await.unwrap();
        store
    }

    fn crew(id: &str, lat: f64, lon: f64, skills: &[&str]) -> Crew {
        Crew {
            id: CrewId::parse(id).unwrap(),
            name: id.into(),
            skills: skills.iter().map(|s| s.to_string()).collect(),
            home: GeoPoint::new(lat, lon).unwrap(),
            position: None,
            position_at: None,
            last_job_place: None,
            shifts: None,
            on_shift: true,
        }
    }

    async fn alert(store: &Store, meter: &str, kind: AlertKind, severity: Severity) -> i64 {
        let now = Utc::now();
        let (a, _) = store
            .record_finding(&Finding {
                kind,
                severity,
                meter_id: Some(MeterId::parse(meter).unwrap()),
                district_id: Some(DistrictId::parse("D1").unwrap()),
                detected_at: now,
                evidence: Evidence {
                    rule: "test".into(),
                    observed: 1.0,
                    expected: None,
                    threshold: 0.5,
                    unit: "m3/h".into(),
                    window_start: now,
                    window_end: now,
                    explanation: "test".into(),
                    known: None,
                },
            })
            .await
            .unwrap();
        a.id
    }

    fn new_order(kind: WorkOrderKind, priority: Priority, lat: f64, lon: f64) -> NewWorkOrder {
        NewWorkOrder {
            kind,
            priority,
            alert_id: None,
            meter_id: None,
            district_id: None,
            location: GeoPoint::new(lat, lon).unwrap(),
            summary: "planned".into(),
            due_at: None,
            actor: "test".into(),
            parent_id: None,
        }
    }

    /// Crew A accepts the order, goes there and completes it with `finding`.
    async fn crew_a_finds(d: &Dispatcher, order: i64, finding: SiteFinding) {
        for action in [
            OrderAction::Accept,
            OrderAction::StartTravel,
            OrderAction::Arrive,
            OrderAction::Complete {
                notes: None,
                finding: Some(finding),
            },
        ] {
            d.transition(order, action, "A", None).await.unwrap();
        }
    }

    fn crew_of(o: &WorkOrder) -> &str {
        o.crew_id.as_ref().map(|c| c.as_str()).unwrap_or("-")
    }

    #[tokio::test]
    async fn an_emergency_preempts_a_crew_on_planned_work_when_allowed() {
        for preempt in [true, false] {
            let store = store().await;
            store
                .upsert_crews(&[
                    crew("A", 43.7710, 11.2510, &["emergency", "repair"]),
                    crew("B", 43.9500, 11.5000, &["emergency", "repair"]),
                ])
                .await
                .unwrap();
            let mut cfg = DispatchConfig::default();
            cfg.choice.preempt = preempt;
            let d = Dispatcher::new(store.clone(), cfg);
            let planned = d
                .create(&new_order(
                    WorkOrderKind::Repair,
                    Priority::Normal,
                    43.77,
                    11.25,
                ))
                .await
                .unwrap();
            let planned = d
                .transition(
                    planned.id,
                    OrderAction::Assign {
                        crew_id: CrewId::parse("A").unwrap(),
                    },
                    "planner",
                    None,
                )
                .await
                .unwrap();
            d.transition(planned.id, OrderAction::Accept, "A", None)
                .await
                .unwrap();
            let a = alert(&store, "M-1", AlertKind::Burst, Severity::Critical).await;
            let (_, order) = d.escalate(a, "test").await.unwrap();
            assert_eq!(order.kind, WorkOrderKind::Emergency);
            let back = d.order(planned.id).await.unwrap();
            if preempt {
                assert_eq!(crew_of(&order), "A", "A is 100 m away, B 30 km");
                assert_eq!(back.status, WorkOrderStatus::Created);
                let last = store.work_order_history(planned.id).await.unwrap();
                let note = last.last().unwrap().note.clone().unwrap();
                assert!(note.contains("pre-empted by emergency"), "{note}");
            } else {
                assert_eq!(crew_of(&order), "B");
                assert_eq!(back.status, WorkOrderStatus::Accepted);
            }
        }
    }

    #[tokio::test]
    async fn alerts_next_door_join_one_order_and_upgrade_it() {
        let store = store().await;
        store
            .upsert_crews(&[crew("A", 43.78, 11.26, &["emergency"])])
            .await
            .unwrap();
        let d = Dispatcher::new(store.clone(), DispatchConfig::default());
        let first = alert(&store, "M-1", AlertKind::ContinuousFlow, Severity::Warning).await;
        let (_, order) = d.escalate(first, "test").await.unwrap();
        assert_eq!(order.priority, Priority::High);
        let due_before = order.due_at.unwrap();
        let second = alert(&store, "M-2", AlertKind::MeterLeakAlarm, Severity::Critical).await;
        let (a2, joined) = d.escalate(second, "test").await.unwrap();
        assert_eq!(joined.id, order.id);
        assert_eq!(a2.work_order_id, Some(order.id));
        assert_eq!(joined.priority, Priority::Emergency);
        assert!(
            joined.due_at.unwrap() < due_before,
            "the deadline comes forward"
        );
        assert_eq!(store.alerts_of_order(order.id).await.unwrap().len(), 2);
        // A meter 4 km away makes its own order.
        let far = alert(&store, "M-3", AlertKind::ContinuousFlow, Severity::Warning).await;
        let (_, other) = d.escalate(far, "test").await.unwrap();
        assert_ne!(other.id, order.id);
    }

    #[tokio::test]
    async fn an_order_not_accepted_goes_to_the_next_crew_and_never_back() {
        let store = store().await;
        store
            .upsert_crews(&[
                crew("A", 43.7710, 11.2510, &["emergency"]),
                crew("B", 43.8000, 11.3000, &["emergency"]),
            ])
            .await
            .unwrap();
        let cfg = DispatchConfig {
            accept_within_s: 60,
            ..Default::default()
        };
        let d = Dispatcher::new(store.clone(), cfg);
        let a = alert(&store, "M-1", AlertKind::Burst, Severity::Critical).await;
        let (_, order) = d.escalate(a, "test").await.unwrap();
        assert_eq!(crew_of(&order), "A");
        // Within the minute nothing moves.
        assert_eq!(d.tick(Utc::now()).await.unwrap().acceptance_timeouts, 0);
        let later = Utc::now() + Duration::seconds(61);
        let r = d.tick(later).await.unwrap();
        assert_eq!((r.acceptance_timeouts, r.assigned), (1, 1));
        assert_eq!(crew_of(&d.order(order.id).await.unwrap()), "B");
        let reason = store
            .get_alert(a)
            .await
            .unwrap()
            .unwrap()
            .status_reason
            .unwrap();
        assert!(
            reason.contains("not accepted by A within 60 s; reassigned to B"),
            "{reason}"
        );
        // B does not accept either: A is not asked again.
        let r = d.tick(later + Duration::seconds(61)).await.unwrap();
        assert_eq!((r.acceptance_timeouts, r.assigned), (1, 0));
        let o = d.order(order.id).await.unwrap();
        assert_eq!(o.status, WorkOrderStatus::Created);
        let reason = store
            .get_alert(a)
            .await
            .unwrap()
            .unwrap()
            .status_reason
            .unwrap();
        assert!(reason.contains("no other crew available"), "{reason}");
    }

    #[tokio::test]
    async fn a_breach_is_flagged_once() {
        let store = store().await;
        let d = Dispatcher::new(store.clone(), DispatchConfig::default());
        let mut late = new_order(WorkOrderKind::MeterCheck, Priority::Normal, 43.77, 11.25);
        late.due_at = Some(Utc::now() - Duration::minutes(1));
        let late = d.create(&late).await.unwrap();
        let r = d.tick(Utc::now()).await.unwrap();
        assert_eq!(r.breaches, 1);
        assert!(d.order(late.id).await.unwrap().breached_at.is_some());
        assert_eq!(d.tick(Utc::now()).await.unwrap().breaches, 0);
        assert_eq!(store.count_breached().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn no_leak_found_marks_the_alert_false_positive_without_follow_up() {
        let store = store().await;
        store
            .upsert_crews(&[crew("A", 43.7710, 11.2510, &["emergency"])])
            .await
            .unwrap();
        let d = Dispatcher::new(store.clone(), DispatchConfig::default());
        let a = alert(&store, "M-1", AlertKind::NightFlowRise, Severity::Warning).await;
        let (_, o) = d.escalate(a, "test").await.unwrap();
        let finding = SiteFinding {
            leak_found: false,
            leak_class: None,
            gas_readings: vec![],
            repaired: false,
            notes: "pilot flame left on".into(),
        };
        crew_a_finds(&d, o.id, finding).await;
        let alert = store.get_alert(a).await.unwrap().unwrap();
        assert_eq!(
            alert.outcome,
            Some(leakwatch_core::AlertOutcome::FalsePositive)
        );
        let rows = d.outcomes().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].false_positive, rows[0].precision), (1, Some(0.0)));
        let all = store.active_work_orders().await.unwrap();
        assert!(all.is_empty(), "no follow-up: {all:?}");
    }

    #[tokio::test]
    async fn the_day_plan_assigns_planned_work_and_says_what_it_could_not_plan() {
        let store = store().await;
        store
            .upsert_crews(&[
                crew("R1", 43.76, 11.24, &["repair"]),
                crew("R2", 43.78, 11.27, &["repair", "meter"]),
            ])
            .await
            .unwrap();
        let cfg = DispatchConfig {
            auto_assign: false,
            ..Default::default()
        };
        let d = Dispatcher::new(store.clone(), cfg);
        let mut ids = Vec::new();
        for (lat, lon) in [
            (43.74, 11.20),
            (43.75, 11.22),
            (43.76, 11.28),
            (43.79, 11.26),
        ] {
            ids.push(
                d.create(&new_order(
                    WorkOrderKind::Repair,
                    Priority::Normal,
                    lat,
                    lon,
                ))
                .await
                .unwrap()
                .id,
            );
        }
        let nobody = d
            .create(&new_order(
                WorkOrderKind::PlannedInspection,
                Priority::Low,
                43.77,
                11.25,
            ))
            .await
            .unwrap();
        let date = (Utc::now() + Duration::days(1)).date_naive();
        let plan = d.plan_day(date, true).await.unwrap();
        let planned: usize = plan.routes.iter().map(|r| r.stops.len()).sum();
        assert_eq!(planned, 4, "{plan:?}");
        assert_eq!(plan.unplanned.len(), 1);
        assert_eq!(plan.unplanned[0].order_id, nobody.id);
        assert!(plan.unplanned[0].reason.contains("inspection"), "{plan:?}");
        for id in ids {
            let o = d.order(id).await.unwrap();
            assert_eq!(o.status, WorkOrderStatus::Assigned);
            let last = store.work_order_history(id).await.unwrap();
            assert_eq!(last.last().unwrap().actor, "planner");
        }
        // A job due at 10:00 local must start by 09:15 (45 minutes on site).
        let t = |h, m| date.and_hms_opt(h, m, 0).unwrap().and_utc();
        assert_eq!(
            job_window(Some(t(9, 0)), 45, Some(t(7, 0)), Some(t(16, 0))),
            Some((t(7, 0), t(8, 15)))
        );
        assert_eq!(
            job_window(Some(t(17, 0)), 45, Some(t(7, 0)), Some(t(16, 0))),
            None
        );
        assert_eq!(
            job_window(Some(t(7, 30)), 45, Some(t(7, 0)), Some(t(16, 0))),
            None
        );
        assert_eq!(job_window(None, 45, Some(t(7, 0)), Some(t(16, 0))), None);
        // Shifts: 08:00-17:00 at UTC+1 by default.
        for r in &plan.routes {
            assert!(r.leave_home >= date.and_hms_opt(7, 0, 0).unwrap().and_utc());
            assert!(r.back_home <= date.and_hms_opt(16, 0, 0).unwrap().and_utc());
        }
    }

    #[tokio::test]
    async fn a_known_leak_awaiting_repair_absorbs_new_alerts_on_its_meter() {
        let store = store().await;
        store
            .upsert_crews(&[crew("A", 43.7710, 11.2510, &["emergency", "repair"])])
            .await
            .unwrap();
        let d = Dispatcher::new(store.clone(), DispatchConfig::default());
        let a = alert(&store, "M-1", AlertKind::ContinuousFlow, Severity::Warning).await;
        let (_, o) = d.escalate(a, "test").await.unwrap();
        let finding = SiteFinding {
            leak_found: true,
            leak_class: Some("B".into()),
            gas_readings: vec![],
            repaired: false,
            notes: String::new(),
        };
        crew_a_finds(&d, o.id, finding).await;
        let repair = store.active_work_orders().await.unwrap();
        assert_eq!(repair.len(), 1);
        let repair = &repair[0];
        assert_eq!(
            (repair.kind, repair.priority),
            (WorkOrderKind::Repair, Priority::Normal)
        );
        // The leak still flows: the detector alerts again; no second investigation.
        let again = alert(&store, "M-1", AlertKind::ContinuousFlow, Severity::Warning).await;
        assert_ne!(again, a, "the first alert was resolved with its order");
        let (joined_alert, joined) = d.escalate(again, "test").await.unwrap();
        assert_eq!(joined.id, repair.id);
        assert_eq!(joined.priority, Priority::Normal, "not made more urgent");
        assert!(
            joined_alert
                .status_reason
                .unwrap()
                .contains("the leak is known"),
        );
        assert_eq!(joined_alert.outcome, Some(AlertOutcome::ConfirmedLeak));
        assert_eq!(store.active_work_orders().await.unwrap().len(), 1);
        // A critical alert there makes the repair an emergency.
        let burst = alert(&store, "M-1", AlertKind::Burst, Severity::Critical).await;
        let (_, upgraded) = d.escalate(burst, "test").await.unwrap();
        assert_eq!(upgraded.id, repair.id);
        assert_eq!(upgraded.priority, Priority::Emergency);
        assert!(upgraded.due_at.unwrap() < repair.due_at.unwrap());
    }

    #[tokio::test]
    async fn no_auto_escalation_where_a_crew_just_found_nothing() {
        let store = store().await;
        store
            .upsert_crews(&[crew("A", 43.7710, 11.2510, &["emergency"])])
            .await
            .unwrap();
        let cfg = DispatchConfig {
            auto_escalate: true,
            ..Default::default()
        };
        let d = Dispatcher::new(store.clone(), cfg);
        let a = alert(&store, "M-1", AlertKind::ContinuousFlow, Severity::Warning).await;
        let first = store.get_alert(a).await.unwrap().unwrap();
        assert!(d.should_auto_escalate(&first).await.unwrap());
        let (_, o) = d.escalate(a, "auto-escalation").await.unwrap();
        let nothing = SiteFinding {
            leak_found: false,
            leak_class: None,
            gas_readings: vec![],
            repaired: false,
            notes: "pilot flame".into(),
        };
        crew_a_finds(&d, o.id, nothing).await;
        let again = alert(&store, "M-1", AlertKind::ContinuousFlow, Severity::Warning).await;
        let again = store.get_alert(again).await.unwrap().unwrap();
        assert!(!d.should_auto_escalate(&again).await.unwrap());
        // Another kind on that meter, or the same kind elsewhere, still goes.
        let other = alert(&store, "M-1", AlertKind::NightFlowRise, Severity::Warning).await;
        let other = store.get_alert(other).await.unwrap().unwrap();
        assert!(d.should_auto_escalate(&other).await.unwrap());
        let elsewhere = alert(&store, "M-3", AlertKind::ContinuousFlow, Severity::Warning).await;
        let elsewhere = store.get_alert(elsewhere).await.unwrap().unwrap();
        assert!(d.should_auto_escalate(&elsewhere).await.unwrap());
    }
}
