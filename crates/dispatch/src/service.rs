//! The work-order service: for each event it loads what the rules need
//! ([`decide::Snapshot`]) in one dispatch transaction (`Store::begin_dispatch`),
//! asks [`decide::decide`] what to do, applies the commands in that same transaction,
//! commits, and only then tells the crews' channel what changed. Travel times (a
//! network call with OSRM) are fetched outside the transaction, when the rules ask
//! for them.

use crate::choose::{CrewState, CurrentJob};
use crate::decide::{
    self, Cause, Command, CrewView, Event, JobChange, NEW_ORDER_ID, NewOrder, OrderRef, PlanStop,
    Refusal, Rules, Snapshot, SurveyReport, TravelTo,
};
use crate::plan::{self, DayPlan, PlanCrew, PlanInput, PlanJob};
use crate::travel::TravelTime;
use crate::{DispatchConfig, DispatchError};
use chrono::{Duration, NaiveDate};
use leakwatch_core::{
    Alert, AlertAction, AlertKind, CrewId, GeoPoint, LeakClassTable, OrderAction, Priority,
    SuppressRequest, Suppression, Timestamp, TransitionRecord, WorkOrder, WorkOrderStatus,
};
use leakwatch_store::{
    AlertHistoryEntry, ClientAction, NewWorkOrder, OrderChange, OutcomeStat, StepCause, Store,
    UnitOfWork,
};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::mpsc;

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
    /// Alerts raised.
    pub raised: i64,
    pub escalated: i64,
    /// Confirmed by a crew's finding on site.
    pub confirmed: i64,
    pub false_positive: i64,
    /// Folded into the open repair of a leak already known (not counted as
    /// confirmed: nobody went out for them).
    pub known_leak: i64,
    /// Escalated, no finding yet.
    pub pending: i64,
    /// Confirmed share of the alerts with a finding made on site; absent without
    /// findings.
    pub precision: Option<f64>,
}

/// What one supervisor pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TickReport {
    pub acceptance_timeouts: u32,
    pub assigned: u32,
    pub breaches: u32,
}

/// What start-up reconciliation repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Escalated alerts without an order, linked to the order made for them.
    pub linked: u32,
    /// Escalated alerts without an order, escalated again.
    pub escalated: u32,
    /// Escalated alerts whose order had ended, resolved.
    pub resolved: u32,
}

/// The time, injected: the wall clock in the service, a fixed one in tests.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The work-order service. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    cfg: Arc<DispatchConfig>,
    travel: Arc<TravelTime>,
    leak_table: Arc<LeakClassTable>,
    notify: Option<mpsc::UnboundedSender<JobNotice>>,
    clock: Clock,
}

/// Which records an event's snapshot starts from.
#[derive(Debug, Clone, Default)]
struct Subject {
    alert: Option<i64>,
    order: Option<i64>,
    /// Take the alert out of the dispatch outbox in the same transaction.
    outbox: bool,
    /// Who reviewed the alert: recorded with its new status (acknowledged, dismissed,
    /// resolved) in the same transaction.
    reviewer: Option<String>,
    /// What a person did to the alert, for its history (`alert_history`): written in
    /// the transaction that does it.
    history: Option<History>,
    /// A survey report: what to load for it.
    survey: Option<SurveyLoad>,
}

/// An entry of an alert's history to write with the decision.
#[derive(Debug, Clone)]
struct History {
    actor: String,
    /// `acknowledge`, `dismiss`, `resolve`, `escalate`.
    action: String,
    note: Option<String>,
}

/// What a survey report's decision needs loaded.
#[derive(Debug, Clone, Default)]
struct SurveyLoad {
    /// The districts of the leaks found, and the alert kinds that say a district's
    /// network is losing gas.
    districts: Vec<leakwatch_core::DistrictId>,
    kinds: Vec<AlertKind>,
    /// The report's leak keys.
    leak_keys: Vec<String>,
}

/// What a survey report wrote (see [`Dispatcher::survey_report`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SurveyOutcome {
    /// Coverage records stored (a resent report stores none).
    pub surveys_recorded: u64,
    /// Per leak of the report, in its order: the leak's id and its repair order.
    pub leaks: Vec<SurveyLeakOutcome>,
    /// Alerts confirmed by the leaks found.
    pub confirmed_alerts: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SurveyLeakOutcome {
    pub leak_id: i64,
    pub repair_order_id: Option<i64>,
    /// The repair order as created (absent for a leak reported before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair_order: Option<WorkOrder>,
}

/// What an applied decision wrote.
#[derive(Debug, Default)]
struct Applied {
    alert: Option<Alert>,
    /// The suppression made with a dismissal.
    suppression: Option<Suppression>,
    /// The subject order (or the order created) as committed.
    order: Option<WorkOrder>,
    created: Option<WorkOrder>,
    steps: Vec<(WorkOrderStatus, Option<Cause>, i64)>,
    breaches: u32,
    commands: usize,
    /// Survey reports: coverage stored, leaks stored (key, id, repair order), alerts
    /// set (confirmed).
    surveys_recorded: u64,
    leaks: Vec<(String, i64, Option<i64>)>,
    alerts_set: Vec<i64>,
    created_all: Vec<i64>,
}

/// A keyed run: applied now, or a repeat of a recorded client action.
enum Keyed {
    Applied(Box<Applied>),
    Repeat(ClientAction),
}

/// The client action id of a device's request, and whose it must be.
struct Once {
    client_id: String,
    crew: Option<CrewId>,
    actor: String,
    action: String,
}

/// What [`Dispatcher::transition_once`] answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnceOutcome {
    /// The order as the first request left it.
    pub order: WorkOrder,
    /// This request repeated an action already applied: nothing changed.
    pub repeated: bool,
}

/// Most times a decision is made again because it needed travel times.
const MAX_ROUNDS: usize = 4;

impl Dispatcher {
    /// A dispatcher on `store` reading the wall clock; `cfg` must have passed
    /// [`DispatchConfig::validate`] (an invalid leak-class setting falls back to the
    /// Italian preset, logged).
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
            clock: Arc::new(chrono::Utc::now),
        }
    }

    /// Reads the time from `clock` instead of the wall clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
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

    fn now(&self) -> Timestamp {
        (self.clock)()
    }

    fn rules(&self) -> Rules<'_> {
        Rules {
            cfg: &self.cfg,
            leak_table: &self.leak_table,
        }
    }

    /// Decides `event` on `subject` and applies it in one transaction, then sends the
    /// notices.
    async fn run(&self, subject: Subject, event: Event) -> Result<Applied, DispatchError> {
        match self.run_keyed(subject, event, None).await? {
            Keyed::Applied(a) => Ok(*a),
            Keyed::Repeat(_) => unreachable!("only a keyed run answers with a repeat"),
        }
    }

    /// As [`Dispatcher::run`]; with `once`, the client action id is looked up first
    /// (a repeat is answered with what was recorded, nothing applied) and recorded
    /// with the first answer in the transaction that applies the action.
    async fn run_keyed(
        &self,
        subject: Subject,
        event: Event,
        once: Option<&Once>,
    ) -> Result<Keyed, DispatchError> {
        let mut travel: Vec<TravelTo> = Vec::new();
        for _ in 0..MAX_ROUNDS {
            let mut uow = self.store.begin_dispatch().await?;
            // The time is read once the lock is held, so decisions are stamped in the
            // order they are made (grouping compares an order's creation with it).
            let now = self.now();
            if let Some(once) = once
                && let Some(prev) = uow.client_action(&once.client_id).await?
            {
                drop(uow);
                if Some(prev.order_id) != subject.order || prev.action != once.action {
                    return Err(DispatchError::Conflict(format!(
                        "client action id {} was used for {} on work order {}",
                        prev.client_id, prev.action, prev.order_id
                    )));
                }
                return Ok(Keyed::Repeat(prev));
            }
            let snap = self.load(&mut uow, subject.clone(), &travel, now).await?;
            if let Some(once) = once
                && let Some(crew) = &once.crew
                && let Some(order) = &snap.order
                && order.crew_id.as_ref() != Some(crew)
            {
                drop(uow);
                return Err(DispatchError::Rejected(match &order.crew_id {
                    Some(other) => format!(
                        "work order {} was reassigned to crew {other}; it is no longer crew {crew}'s",
                        order.id
                    ),
                    None => format!(
                        "work order {} was taken back from crew {crew} (it has no crew now)",
                        order.id
                    ),
                }));
            }
            match decide::decide(self.rules(), &snap, &event, now) {
                Err(Refusal::NeedTravel(place)) => {
                    drop(uow);
                    travel.push(self.travel_to(place, &snap.crews).await?);
                }
                Err(r) => {
                    drop(uow);
                    return Err(match r {
                        Refusal::NotFound(_) => DispatchError::NotFound(match &subject {
                            Subject { order: Some(o), .. } => {
                                format!("work order {o} does not exist")
                            }
                            Subject { alert: Some(a), .. } => format!("alert {a} does not exist"),
                            _ => "not found".into(),
                        }),
                        Refusal::Rejected(m) => DispatchError::Rejected(m),
                        Refusal::Invalid(m) => DispatchError::Invalid(m),
                        Refusal::NeedTravel(_) => unreachable!("handled above"),
                    });
                }
                Ok(commands) => {
                    let (applied, notices) =
                        self.apply(&mut uow, subject.clone(), commands, now).await?;
                    if subject.outbox
                        && let Some(a) = subject.alert
                    {
                        uow.outbox_done(a).await?;
                    }
                    if applied.commands > 0 {
                        fail::fail_point!("dispatch-before-commit", |_| crash(
                            "dispatch-before-commit"
                        ));
                    }
                    if let Some(once) = once {
                        let response = serde_json::to_value(&applied.order).map_err(|e| {
                            DispatchError::Invalid(format!("cannot record the answer: {e}"))
                        })?;
                        uow.record_client_action(&ClientAction {
                            client_id: once.client_id.clone(),
                            order_id: subject.order.unwrap_or_default(),
                            actor: once.actor.clone(),
                            action: once.action.clone(),
                            response,
                            at: now,
                        })
                        .await?;
                    }
                    uow.commit().await?;
                    self.after_commit(&applied, notices);
                    return Ok(Keyed::Applied(Box::new(applied)));
                }
            }
        }
        Err(DispatchError::Rejected(
            "travel times kept changing; try again".into(),
        ))
    }

    /// Loads the snapshot of `subject` in the transaction.
    async fn load(
        &self,
        uow: &mut UnitOfWork,
        subject: Subject,
        travel: &[TravelTo],
        now: Timestamp,
    ) -> Result<Snapshot, DispatchError> {
        let mut s = Snapshot {
            travel: travel.to_vec(),
            ..Default::default()
        };
        if let Some(id) = subject.alert {
            s.alert = uow.alert(id).await?;
        }
        if let Some(a) = &s.alert {
            s.alert_place = match (&a.meter_id, &a.district_id) {
                (Some(m), _) => uow.meter_location(m).await?,
                (None, Some(d)) => uow.station_location(d).await?,
                (None, None) => None,
            };
            if let Some(m) = &a.meter_id {
                let since = now - Duration::days(i64::from(self.cfg.auto_escalate_quiet_days));
                s.false_positives = uow.false_positives(a.kind, m, since).await?;
            }
            s.order = match a.work_order_id {
                Some(o) => uow.work_order(o).await?,
                None => uow.orders_of_alert(a.id).await?.into_iter().next(),
            };
        }
        if let Some(id) = subject.order {
            s.order = uow.work_order(id).await?;
        }
        if let Some(o) = &s.order {
            s.order_alerts = uow.alerts_of_order(o.id).await?;
            s.timed_out = uow.timed_out_crews(o.id).await?;
        }
        if let Some(sv) = &subject.survey {
            for d in &sv.districts {
                for a in uow.pending_district_alerts(d, &sv.kinds).await? {
                    if !s.district_alerts.iter().any(|x| x.id == a.id) {
                        s.district_alerts.push(a);
                    }
                }
            }
            for k in &sv.leak_keys {
                if uow.leak_by_key(k).await?.is_some() {
                    s.known_leaks.push(k.clone());
                }
            }
        }
        s.active = uow.active_work_orders().await?;
        let max_age = Duration::minutes(i64::from(self.cfg.position_max_age_min));
        s.crews = uow
            .crews()
            .await?
            .into_iter()
            .map(|r| {
                let (position, source) = r.crew.believed_position(now, max_age);
                CrewView {
                    state: CrewState {
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
                }
            })
            .collect();
        Ok(s)
    }

    /// Travel times from every crew to `place` (outside any transaction).
    async fn travel_to(
        &self,
        place: GeoPoint,
        crews: &[CrewView],
    ) -> Result<TravelTo, DispatchError> {
        let from: Vec<GeoPoint> = crews.iter().map(|c| c.state.position).collect();
        let m = self
            .travel
            .durations_s(&from, &[place])
            .await
            .map_err(|e| DispatchError::Rejected(format!("travel times: {e}")))?;
        Ok(TravelTo {
            place,
            provider: m.provider.to_string(),
            seconds: crews
                .iter()
                .zip(&m.seconds)
                .map(|(c, row)| (c.state.id.clone(), row[0]))
                .collect(),
        })
    }

    /// Applies the commands in order; returns what was written and the notices to
    /// send after the commit.
    async fn apply(
        &self,
        uow: &mut UnitOfWork,
        subject: Subject,
        commands: Vec<Command>,
        now: Timestamp,
    ) -> Result<(Applied, Vec<JobNotice>), DispatchError> {
        let mut applied = Applied {
            commands: commands.len(),
            ..Default::default()
        };
        let mut notices = Vec::new();
        let mut new_id: Option<i64> = None;
        let id_of = |r: OrderRef, new_id: Option<i64>| -> Result<i64, DispatchError> {
            match r {
                OrderRef::Id(id) => Ok(id),
                OrderRef::New => {
                    new_id.ok_or_else(|| DispatchError::Rejected("no order was created".into()))
                }
            }
        };
        let text = |t: String, new_id: Option<i64>| match new_id {
            Some(id) => t.replace(NEW_ORDER_ID, &id.to_string()),
            None => t,
        };
        for c in commands {
            match c {
                Command::SetAlert {
                    alert_id,
                    from,
                    to,
                    reason,
                    order,
                } => {
                    let order = order.map(|r| id_of(r, new_id)).transpose()?;
                    let reason = reason.map(|r| text(r, new_id));
                    let mut a = uow
                        .set_alert_status(alert_id, from, to, reason.as_deref(), order)
                        .await?;
                    applied.alerts_set.push(alert_id);
                    if subject.alert == Some(alert_id) {
                        if let Some(who) = &subject.reviewer
                            && let Some(reviewed) =
                                uow.record_alert_review(alert_id, to, who, now).await?
                        {
                            a = reviewed;
                        }
                        applied.alert = Some(a);
                    }
                    fail::fail_point!("dispatch-after-set-alert", |_| crash(
                        "dispatch-after-set-alert"
                    ));
                }
                Command::CreateOrder(new) => {
                    let o = uow.create_work_order(&store_order(new), now).await?;
                    metrics::counter!("leakwatch_work_orders_created_total", "kind" => o.kind.as_str())
                        .increment(1);
                    tracing::info!(order_id = o.id, kind = o.kind.as_str(), alert_id = ?o.alert_id, "work order created");
                    new_id = Some(o.id);
                    applied.created_all.push(o.id);
                    applied.created = Some(o);
                    fail::fail_point!("dispatch-after-create-order", |_| crash(
                        "dispatch-after-create-order"
                    ));
                }
                Command::Step(step) => {
                    let id = id_of(step.order, new_id)?;
                    let rec = TransitionRecord {
                        order_id: id,
                        from: step.from,
                        to: step.to,
                        action: step.action.to_owned(),
                        actor: step.actor,
                        at: now,
                        crew_id: step.crew,
                        note: step.note.map(|n| text(n, new_id)),
                        position: step.position,
                    };
                    let change = OrderChange {
                        crew: step.set_crew,
                        finding: step.finding,
                    };
                    let cause = step.cause.map(|c| match c {
                        Cause::AcceptanceTimeout => StepCause::AcceptanceTimeout,
                        Cause::Preempted => StepCause::Preempted,
                        Cause::Reconciled => StepCause::Reconciled,
                    });
                    uow.apply_transition(id, &rec, &change, cause).await?;
                    metrics::counter!("leakwatch_work_order_transitions_total", "to" => step.to.as_str())
                        .increment(1);
                    if step.cause == Some(Cause::Preempted) {
                        metrics::counter!("leakwatch_dispatch_preemptions_total").increment(1);
                    }
                    if step.action == "assign" {
                        tracing::info!(order_id = id, crew_id = ?rec.crew_id.as_ref().map(|c| c.to_string()), note = ?rec.note, "crew assigned");
                    }
                    applied.steps.push((step.to, step.cause, id));
                    fail::fail_point!("dispatch-after-step", |_| crash("dispatch-after-step"));
                }
                Command::SetPriority {
                    order,
                    priority,
                    due_at,
                } => {
                    uow.set_work_order_priority(id_of(order, new_id)?, priority, due_at)
                        .await?;
                }
                Command::SetOutcome { order, outcome } => {
                    let id = id_of(order, new_id)?;
                    let n = uow.set_outcome_for_order(id, outcome, now).await?;
                    metrics::counter!("leakwatch_alert_outcomes_total", "outcome" => outcome.as_str())
                        .increment(n);
                }
                Command::MarkBreached { order } => {
                    let id = id_of(order, new_id)?;
                    if uow.mark_breached(id, now).await?
                        && let Some(o) = uow.work_order(id).await?
                    {
                        applied.breaches += 1;
                        metrics::counter!("leakwatch_work_order_deadline_breaches_total", "kind" => o.kind.as_str())
                            .increment(1);
                        tracing::warn!(
                            order_id = id,
                            kind = o.kind.as_str(),
                            due_at = ?o.due_at,
                            "work order past its deadline"
                        );
                    }
                }
                Command::CrewPosition { crew, at } => {
                    uow.set_crew_position(&crew, at, now).await?;
                }
                Command::CrewLastJob { crew, place } => {
                    uow.set_crew_last_job_place(&crew, place).await?;
                }
                Command::Notify {
                    crew,
                    change,
                    order,
                } => notices.push((crew, change, id_of(order, new_id)?)),
                Command::KnownLeak { alert_id } => {
                    uow.mark_known_leak(alert_id, now).await?;
                    metrics::counter!("leakwatch_alerts_folded_into_known_leak_total").increment(1);
                }
                Command::Suppress(new) => {
                    let actor = subject.reviewer.as_deref().unwrap_or(DISPATCHER_ACTOR);
                    let made = uow.add_suppression(&new, actor, now).await?;
                    tracing::info!(
                        suppression_id = made.id,
                        alert_id = new.alert_id,
                        kind = new.kind.as_str(),
                        scope = %new.scope,
                        "suppression made with a dismissal"
                    );
                    applied.suppression = Some(made);
                }
                Command::SetSurveySegments { order, segments } => {
                    uow.set_survey_segments(id_of(order, new_id)?, &segments)
                        .await?;
                }
                Command::RecordCoverage { order, covered } => {
                    let entries: Vec<leakwatch_store::SurveyEntry> = covered
                        .into_iter()
                        .map(|c| leakwatch_store::SurveyEntry {
                            source_key: Some(format!("wo:{order}:{}", c.segment)),
                            segment: c.segment,
                            date: c.date,
                            crew: c.crew,
                            instrument: c.instrument,
                            covered_m: c.covered_m,
                            work_order_id: Some(order),
                        })
                        .collect();
                    applied.surveys_recorded += uow.record_surveys(&entries, now).await?;
                }
                Command::RecordLeak {
                    order,
                    leak,
                    repair,
                } => {
                    let repair = id_of(repair, new_id)?;
                    let (id, _) = uow
                        .record_leak(
                            &leakwatch_store::LeakEntry {
                                segment: leak.segment,
                                date: leak.date,
                                class: Some(leak.class),
                                source: "survey".into(),
                                work_order_id: Some(order),
                                repair_order_id: Some(repair),
                                source_key: Some(leak.key.clone()),
                            },
                            now,
                        )
                        .await?;
                    applied.leaks.push((leak.key, id, Some(repair)));
                }
                Command::NoCrew { order } => {
                    metrics::counter!("leakwatch_dispatch_no_crew_total").increment(1);
                    tracing::warn!(order_id = id_of(order, new_id)?, "no crew available");
                }
            }
        }
        // The records as committed, for the caller and the crews' phones.
        if let Some(a) = subject.alert {
            applied.alert = uow.alert(a).await?;
        }
        // Who did what to the alert, in the same transaction as what they did.
        if let (Some(h), Some(a)) = (&subject.history, &applied.alert)
            && applied.commands > 0
        {
            let note = match (h.action.as_str(), a.work_order_id) {
                ("escalate", Some(o)) => Some(format!("work order #{o}")),
                _ => h.note.clone(),
            };
            let note = match (&applied.suppression, note) {
                (Some(sup), n) => Some(format!(
                    "{}{}suppression #{} made: {} on {}{}, new evidence above {:.3} {} reopens",
                    n.as_deref().unwrap_or(""),
                    if n.is_some() { " · " } else { "" },
                    sup.id,
                    sup.kind.as_str(),
                    sup.scope,
                    sup.until.map(|u| format!(" until {u}")).unwrap_or_default(),
                    sup.break_above(),
                    sup.unit,
                )),
                (None, n) => n,
            };
            uow.add_alert_history(&AlertHistoryEntry {
                alert_id: a.id,
                at: now,
                actor: h.actor.clone(),
                action: h.action.clone(),
                note,
            })
            .await?;
        }
        let order_id = subject
            .order
            .or(applied.alert.as_ref().and_then(|a| a.work_order_id))
            .or(new_id);
        if let Some(id) = order_id {
            applied.order = uow.work_order(id).await?;
        }
        if let Some(o) = &applied.created {
            applied.created = uow.work_order(o.id).await?;
        }
        let mut out = Vec::new();
        for (crew_id, change, id) in notices {
            if let Some(order) = uow.work_order(id).await? {
                out.push(JobNotice {
                    crew_id,
                    change,
                    order,
                });
            }
        }
        Ok((applied, out))
    }
}

/// Who made a suppression when no reviewer is named (not reached: suppressions come
/// with a person's dismissal).
const DISPATCHER_ACTOR: &str = "dispatcher";

/// The subject of a person's review of an alert: who, recorded with the new status
/// and in the alert's history.
fn review_subject(alert_id: i64, actor: &str, action: &str, note: Option<String>) -> Subject {
    Subject {
        alert: Some(alert_id),
        reviewer: Some(actor.to_owned()),
        history: Some(History {
            actor: actor.to_owned(),
            action: action.to_owned(),
            note,
        }),
        ..Default::default()
    }
}

impl Dispatcher {
    fn after_commit(&self, applied: &Applied, notices: Vec<JobNotice>) {
        if applied.commands == 0 {
            return;
        }
        if let Some(tx) = &self.notify {
            for n in notices {
                let _ = tx.send(n);
            }
        }
    }

    /// Applies an engineer's review action (acknowledge, dismiss, resolve) to an alert.
    /// Escalation goes through [`Dispatcher::escalate`], which also creates the order.
    /// `actor` (the credential's name) is recorded with the new status.
    pub async fn review(
        &self,
        alert_id: i64,
        action: &AlertAction,
        actor: &str,
    ) -> Result<Alert, DispatchError> {
        if matches!(action, AlertAction::Escalate) {
            return self.escalate(alert_id, actor).await.map(|(a, _)| a);
        }
        let note = match action {
            AlertAction::Dismiss { reason } => Some(reason.clone()),
            _ => None,
        };
        let subject = review_subject(alert_id, actor, action.verb(), note);
        let applied = self.run(subject, Event::Review(action.clone())).await?;
        applied.alert.ok_or_else(|| not_found_alert(alert_id))
    }

    /// Dismisses an alert and, in the same transaction, makes a suppression: no new
    /// alert of its kind on its meter (or district) while it holds, unless the
    /// detector's evidence exceeds the dismissed one by the margin
    /// ([`decide::suppression_for`]). Returns the alert and the suppression.
    pub async fn dismiss_suppressing(
        &self,
        alert_id: i64,
        reason: &str,
        suppress: &SuppressRequest,
        actor: &str,
    ) -> Result<(Alert, Suppression), DispatchError> {
        let subject = review_subject(alert_id, actor, "dismiss", Some(reason.to_owned()));
        let applied = self
            .run(
                subject,
                Event::DismissSuppressing {
                    reason: reason.to_owned(),
                    suppress: suppress.clone(),
                },
            )
            .await?;
        let alert = applied.alert.ok_or_else(|| not_found_alert(alert_id))?;
        let made = applied.suppression.ok_or_else(|| {
            DispatchError::Rejected(format!(
                "alert {alert_id} was dismissed without a suppression"
            ))
        })?;
        Ok((alert, made))
    }

    /// Escalates an alert in one transaction: claims it, joins it to an open order
    /// close in place and time (or to the open repair of a leak already found on its
    /// meter) or creates its order, links them, and gives an urgent order to the
    /// nearest crew. See [`crate::decide`].
    #[tracing::instrument(skip(self), err(level = "warn"))]
    pub async fn escalate(
        &self,
        alert_id: i64,
        actor: &str,
    ) -> Result<(Alert, WorkOrder), DispatchError> {
        let subject = Subject {
            alert: Some(alert_id),
            history: Some(History {
                actor: actor.to_owned(),
                action: "escalate".into(),
                note: None,
            }),
            ..Default::default()
        };
        let applied = self
            .run(
                subject,
                Event::Escalate {
                    actor: actor.to_owned(),
                },
            )
            .await?;
        let alert = applied.alert.ok_or_else(|| not_found_alert(alert_id))?;
        let order = applied.order.ok_or_else(|| {
            DispatchError::Rejected(format!("alert {alert_id} was escalated without an order"))
        })?;
        if applied.created.is_none() {
            metrics::counter!("leakwatch_alerts_grouped_total").increment(1);
        }
        tracing::info!(alert_id, order_id = order.id, "alert escalated");
        Ok((alert, order))
    }

    /// Acts on a new alert from the dispatch outbox: escalates it when
    /// `dispatch.auto_escalate` and the rules say so, and takes it out of the outbox
    /// in the same transaction. Returns the order when it escalated.
    pub async fn auto_escalate(&self, alert_id: i64) -> Result<Option<WorkOrder>, DispatchError> {
        let subject = Subject {
            alert: Some(alert_id),
            outbox: true,
            ..Default::default()
        };
        let applied = self.run(subject, Event::AutoEscalate).await?;
        Ok(applied.order.filter(|_| applied.commands > 0))
    }

    /// Takes the outbox's waiting alerts (at most `limit`), oldest first, and acts on
    /// each ([`Dispatcher::auto_escalate`]). An alert the rules refuse (no place to
    /// send a crew...) leaves the outbox with a warning; a store error stops the pass
    /// (the rest waits for the next one). Returns how many were taken.
    pub async fn process_outbox(&self, limit: u32) -> Result<usize, DispatchError> {
        let pending = self.store.outbox_pending(limit).await?;
        for &id in &pending {
            match self.auto_escalate(id).await {
                Ok(Some(o)) => tracing::info!(alert_id = id, order_id = o.id, "auto-escalated"),
                Ok(None) => {}
                Err(DispatchError::Store(e)) => return Err(DispatchError::Store(e)),
                Err(e) => {
                    tracing::warn!(alert_id = id, error = %e, "auto-escalation refused");
                    let mut uow = self.store.begin_dispatch().await?;
                    uow.outbox_done(id).await?;
                    uow.commit().await?;
                }
            }
        }
        Ok(pending.len())
    }

    /// Repairs what an older version (whose escalation was several transactions) may
    /// have left half-done: escalated alerts without an order are linked to the order
    /// made for them or escalated again; escalated alerts whose order has ended are
    /// resolved. Each repair is its own unit of work; run at start-up.
    pub async fn reconcile(&self) -> Result<ReconcileReport, DispatchError> {
        let mut report = ReconcileReport::default();
        let (unlinked, ended) = self.store.half_done_escalations(10_000).await?;
        for id in unlinked.into_iter().chain(ended) {
            let subject = Subject {
                alert: Some(id),
                ..Default::default()
            };
            let before = self.store.get_alert(id).await?;
            match self.run(subject, Event::Reconcile).await {
                Ok(a) if a.commands > 0 => {
                    let after = a.alert.as_ref();
                    match (before.and_then(|b| b.work_order_id), &a.created) {
                        (Some(_), _) => report.resolved += 1,
                        (None, Some(_)) => report.escalated += 1,
                        (None, None) if after.is_some_and(|x| x.work_order_id.is_some()) => {
                            report.linked += 1
                        }
                        _ => {}
                    }
                    tracing::warn!(alert_id = id, order_id = ?a.order.map(|o| o.id), "half-done escalation repaired");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(alert_id = id, error = %e, "half-done escalation not repaired")
                }
            }
        }
        Ok(report)
    }

    /// Creates an order by hand (planned work, a meter replacement...). It waits for
    /// the day plan unless urgent.
    pub async fn create(&self, new: &NewWorkOrder) -> Result<WorkOrder, DispatchError> {
        let event = Event::Create(NewOrder {
            kind: new.kind,
            priority: new.priority,
            alert_id: new.alert_id,
            meter_id: new.meter_id.clone(),
            district_id: new.district_id.clone(),
            location: new.location,
            summary: new.summary.clone(),
            due_at: new.due_at,
            parent_id: new.parent_id,
            actor: new.actor.clone(),
        });
        let applied = self.run(Subject::default(), event).await?;
        applied
            .created
            .ok_or_else(|| DispatchError::Rejected("the order was not created".into()))
    }

    /// Creates a leak survey order with its segments (in walking order), in one
    /// transaction.
    pub async fn create_survey(
        &self,
        new: &NewWorkOrder,
        segments: Vec<String>,
    ) -> Result<WorkOrder, DispatchError> {
        let event = Event::CreateSurvey(
            NewOrder {
                kind: new.kind,
                priority: new.priority,
                alert_id: new.alert_id,
                meter_id: new.meter_id.clone(),
                district_id: new.district_id.clone(),
                location: new.location,
                summary: new.summary.clone(),
                due_at: new.due_at,
                parent_id: new.parent_id,
                actor: new.actor.clone(),
            },
            segments,
        );
        let applied = self.run(Subject::default(), event).await?;
        applied
            .created
            .ok_or_else(|| DispatchError::Rejected("the order was not created".into()))
    }

    /// Records a survey crew's report on survey order `order_id` in one transaction:
    /// the coverage, and for each leak not reported before its repair order (due by
    /// its class's deadline), the confirmation of its district's pending network-leak
    /// alerts (`kinds`), and the leak's record. A resent report changes nothing and
    /// answers with the leaks stored the first time.
    pub async fn survey_report(
        &self,
        order_id: i64,
        report: SurveyReport,
        kinds: &[AlertKind],
    ) -> Result<SurveyOutcome, DispatchError> {
        let mut districts: Vec<leakwatch_core::DistrictId> = Vec::new();
        for l in &report.leaks {
            if !districts.contains(&l.district) {
                districts.push(l.district.clone());
            }
        }
        let keys: Vec<String> = report.leaks.iter().map(|l| l.key.clone()).collect();
        let subject = Subject {
            order: Some(order_id),
            survey: Some(SurveyLoad {
                districts,
                kinds: kinds.to_vec(),
                leak_keys: keys.clone(),
            }),
            ..Default::default()
        };
        let applied = self.run(subject, Event::SurveyReport(report)).await?;
        let stored = if applied.leaks.len() < keys.len() {
            use leakwatch_store::NetworkStore;
            self.store.network_store().leaks(None).await?
        } else {
            Vec::new()
        };
        let mut leaks = Vec::new();
        for k in &keys {
            if let Some((_, id, repair)) = applied.leaks.iter().find(|(key, ..)| key == k) {
                let repair_order = match repair {
                    Some(r) => self.store.get_work_order(*r).await?,
                    None => None,
                };
                leaks.push(SurveyLeakOutcome {
                    leak_id: *id,
                    repair_order_id: *repair,
                    repair_order,
                });
            } else if let Some((id, e)) = stored
                .iter()
                .find(|(_, e)| e.source_key.as_deref() == Some(k.as_str()))
                .cloned()
            {
                leaks.push(SurveyLeakOutcome {
                    leak_id: id,
                    repair_order_id: e.repair_order_id,
                    repair_order: None,
                });
            }
        }
        Ok(SurveyOutcome {
            surveys_recorded: applied.surveys_recorded,
            leaks,
            confirmed_alerts: applied.alerts_set,
        })
    }

    /// Offers a waiting urgent order to the nearest qualified crew (never one that let
    /// it time out). Returns the order when a crew took it.
    pub async fn assign_nearest(&self, order_id: i64) -> Result<Option<WorkOrder>, DispatchError> {
        let subject = Subject {
            order: Some(order_id),
            ..Default::default()
        };
        let applied = self.run(subject, Event::Offer).await?;
        Ok(applied
            .order
            .filter(|o| applied.commands > 0 && o.status == WorkOrderStatus::Assigned))
    }

    /// Moves an order through its lifecycle on someone's request; `position` is where
    /// the actor was (the field app sends it). The rules are in [`crate::decide`].
    #[tracing::instrument(skip(self, action), fields(action = action.name()), err(level = "warn"))]
    pub async fn transition(
        &self,
        order_id: i64,
        action: OrderAction,
        actor: &str,
        position: Option<GeoPoint>,
    ) -> Result<WorkOrder, DispatchError> {
        let subject = Subject {
            order: Some(order_id),
            ..Default::default()
        };
        let event = Event::Transition {
            action,
            actor: actor.to_owned(),
            position,
        };
        let applied = self.run(subject, event).await?;
        applied
            .order
            .ok_or_else(|| DispatchError::NotFound(format!("work order {order_id} does not exist")))
    }

    /// As [`Dispatcher::transition`] for a field device that names each action with a
    /// client action id: the first request with `client_id` is applied and its
    /// answer recorded in the same transaction; a repeat (the same id again) changes
    /// nothing and gets the recorded order back, with `repeated` set. With `crew`,
    /// the order must be that crew's at the moment of the decision (else
    /// [`DispatchError::Rejected`] saying who has it now).
    pub async fn transition_once(
        &self,
        client_id: &str,
        crew: Option<&CrewId>,
        order_id: i64,
        action: OrderAction,
        actor: &str,
        position: Option<GeoPoint>,
    ) -> Result<OnceOutcome, DispatchError> {
        let subject = Subject {
            order: Some(order_id),
            ..Default::default()
        };
        let once = Once {
            client_id: client_id.to_owned(),
            crew: crew.cloned(),
            actor: actor.to_owned(),
            action: action.name().to_owned(),
        };
        let event = Event::Transition {
            action,
            actor: actor.to_owned(),
            position,
        };
        match self.run_keyed(subject, event, Some(&once)).await? {
            Keyed::Applied(a) => Ok(OnceOutcome {
                order: a.order.ok_or_else(|| {
                    DispatchError::NotFound(format!("work order {order_id} does not exist"))
                })?,
                repeated: false,
            }),
            Keyed::Repeat(prev) => Ok(OnceOutcome {
                order: serde_json::from_value(prev.response).map_err(|e| {
                    DispatchError::Invalid(format!("the recorded answer is unreadable: {e}"))
                })?,
                repeated: true,
            }),
        }
    }

    /// One supervisor pass at `now`: urgent orders not accepted within
    /// `accept_within_s` go to the next crew (the alerts' engineers see why);
    /// urgent orders nobody holds are offered again; orders past their deadline are
    /// flagged and counted. Each order is its own unit of work.
    pub async fn tick(&self, now: Timestamp) -> Result<TickReport, DispatchError> {
        let at = self.clone().with_clock(Arc::new(move || now));
        let mut report = TickReport::default();
        let limit = now - Duration::seconds(self.cfg.accept_within_s as i64);
        for order in self.store.orders_awaiting_acceptance(limit).await? {
            if order.priority > Priority::High {
                continue;
            }
            let subject = Subject {
                order: Some(order.id),
                ..Default::default()
            };
            let a = at.run(subject, Event::AcceptanceTimeout).await?;
            if a.steps
                .iter()
                .any(|s| s.1 == Some(Cause::AcceptanceTimeout))
            {
                report.acceptance_timeouts += 1;
                metrics::counter!("leakwatch_dispatch_acceptance_timeouts_total").increment(1);
                tracing::warn!(order_id = order.id, "work order not accepted in time");
            }
            report.assigned += a
                .steps
                .iter()
                .filter(|s| s.0 == WorkOrderStatus::Assigned && s.2 == order.id)
                .count() as u32;
        }
        if self.cfg.auto_assign {
            for order in self.store.active_work_orders().await? {
                if order.status != WorkOrderStatus::Created || order.priority > Priority::High {
                    continue;
                }
                if at.assign_nearest(order.id).await?.is_some() {
                    report.assigned += 1;
                }
            }
        }
        for order in self.store.orders_due_before(now).await? {
            let subject = Subject {
                order: Some(order.id),
                ..Default::default()
            };
            report.breaches += at.run(subject, Event::CheckDeadline).await?.breaches;
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
                    raised: s.raised,
                    escalated: s.escalated,
                    confirmed: s.confirmed,
                    false_positive: s.false_positive,
                    known_leak: s.known,
                    pending: s.pending,
                    precision: (judged > 0).then(|| s.confirmed as f64 / judged as f64),
                }
            })
            .collect())
    }

    /// The day plan for `date` (local): every on-shift crew from its home, the
    /// unassigned non-emergency orders as jobs. With `apply`, the planned orders still
    /// waiting are assigned to their crews in one transaction (an order assigned
    /// meanwhile, or by an earlier application, is left alone: applying twice, or
    /// twice at once, assigns and notifies each job once).
    pub async fn plan_day(&self, date: NaiveDate, apply: bool) -> Result<DayPlan, DispatchError> {
        let p = &self.cfg.plan;
        let now = self.now();
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
            // Today is planned from now on: no stop is placed in the past, and a
            // shift already over takes no work.
            let (shift_start, shift_end) = (local(start).max(now), local(end));
            if shift_end <= shift_start {
                continue;
            }
            crews.push(PlanCrew {
                id: r.crew.id,
                skills: r.crew.skills,
                home: r.crew.home,
                shift_start,
                shift_end,
            });
        }
        let day_start = crews.iter().map(|c| c.shift_start).min();
        let day_end = crews.iter().map(|c| c.shift_end).max();
        let mut jobs: Vec<PlanJob> = Vec::new();
        for o in self
            .store
            .active_work_orders()
            .await?
            .into_iter()
            .filter(|o| o.status == WorkOrderStatus::Created && o.priority != Priority::Emergency)
        {
            // A leak survey lasts as long as its route takes to walk.
            let duration_min = if o.kind == leakwatch_core::WorkOrderKind::LeakSurvey {
                use leakwatch_store::NetworkStore;
                let m = self.store.network_store().order_route_m(o.id).await?;
                ((m / p.survey_m_per_min).ceil() as u32).clamp(1, 24 * 60)
            } else {
                p.default_job_min
            };
            jobs.push(PlanJob {
                order_id: o.id,
                location: o.location,
                duration_min,
                skill: o.kind.required_skill().to_owned(),
                priority: o.priority,
                window: job_window(o.due_at, duration_min, day_start, day_end),
            });
        }
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
            let stops = plan
                .routes
                .iter()
                .flat_map(|route| {
                    route.stops.iter().enumerate().map(|(i, stop)| PlanStop {
                        order_id: stop.order_id,
                        crew_id: route.crew_id.clone(),
                        note: format!(
                            "day plan {date}: stop {} of {}, arrival {}",
                            i + 1,
                            route.stops.len(),
                            stop.arrival.format("%H:%M UTC")
                        ),
                    })
                })
                .collect();
            let a = self
                .run(Subject::default(), Event::ApplyPlan(stops))
                .await?;
            tracing::info!(%date, assigned = a.steps.len(), "day plan applied");
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

fn not_found_alert(id: i64) -> DispatchError {
    DispatchError::NotFound(format!("alert {id} does not exist"))
}

fn store_order(n: NewOrder) -> NewWorkOrder {
    NewWorkOrder {
        kind: n.kind,
        priority: n.priority,
        alert_id: n.alert_id,
        meter_id: n.meter_id,
        district_id: n.district_id,
        location: n.location,
        summary: n.summary,
        due_at: n.due_at,
        parent_id: n.parent_id,
        actor: n.actor,
    }
}

/// A failpoint's crash: the process ends at once, as under SIGKILL (nothing is
/// committed or flushed).
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn crash<T>(point: &str) -> T {
    eprintln!("failpoint {point}: crashing");
    std::process::abort()
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
    use chrono::Utc;
    use leakwatch_core::{
        AlertOutcome, AlertStatus, Crew, DistrictId, Evidence, Finding, MeterId, MeterRecord,
        Severity, SiteFinding, WorkOrderKind,
    };

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

    impl Dispatcher {
        async fn order(&self, id: i64) -> Result<WorkOrder, DispatchError> {
            self.store
                .get_work_order(id)
                .await?
                .ok_or_else(|| DispatchError::NotFound(format!("work order {id}")))
        }
    }

    fn crew_of(o: &WorkOrder) -> &str {
        o.crew_id.as_ref().map(|c| c.as_str()).unwrap_or("-")
    }

    /// Two segments of district D1 and a survey order on them.
    async fn survey_setup(store: &Store, d: &Dispatcher) -> WorkOrder {
        use leakwatch_store::NetworkStore;
        let seg = |id: &str, lat: f64| leakwatch_survey::geojson::Imported {
            segment: leakwatch_survey::Segment {
                id: id.into(),
                district: DistrictId::parse("D1").unwrap(),
                geometry: vec![
                    GeoPoint::new(lat, 11.25).unwrap(),
                    GeoPoint::new(lat, 11.252).unwrap(),
                ],
                pressure_class: "it_bp".into(),
                material: leakwatch_survey::Material::Steel,
                diameter_mm: 100,
                year_laid: 1980,
                added_on: NaiveDate::from_ymd_opt(2000, 1, 1).unwrap(),
            },
            last_surveyed: None,
        };
        store
            .network_store()
            .import_network(&[seg("S1", 43.77), seg("S2", 43.771)], Utc::now())
            .await
            .unwrap();
        let mut new = new_order(WorkOrderKind::LeakSurvey, Priority::Normal, 43.77, 11.25);
        new.district_id = Some(DistrictId::parse("D1").unwrap());
        d.create_survey(&new, vec!["S1".into(), "S2".into()])
            .await
            .unwrap()
    }

    fn survey_report(leaks: &[(&str, &str)]) -> SurveyReport {
        let day = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
        SurveyReport {
            actor: "SURVEY-1".into(),
            covered: ["S1", "S2"]
                .iter()
                .map(|s| decide::SurveyCovered {
                    segment: (*s).into(),
                    date: day,
                    crew: Some("SURVEY-1".into()),
                    instrument: Some("walking_fid".into()),
                    covered_m: 100.0,
                })
                .collect(),
            leaks: leaks
                .iter()
                .map(|(key, seg)| decide::SurveyLeak {
                    key: (*key).into(),
                    segment: (*seg).into(),
                    date: day,
                    class: "B".into(),
                    notes: String::new(),
                    district: DistrictId::parse("D1").unwrap(),
                    location: GeoPoint::new(43.77, 11.251).unwrap(),
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn a_survey_report_commits_whole_or_not_at_all_and_once() {
        use leakwatch_store::NetworkStore;
        let store = store().await;
        let d = Dispatcher::new(store.clone(), DispatchConfig::default());
        let order = survey_setup(&store, &d).await;
        assert_eq!(order.kind, WorkOrderKind::LeakSurvey);
        assert_eq!(
            store
                .network_store()
                .order_segments(order.id)
                .await
                .unwrap(),
            vec!["S1".to_owned(), "S2".to_owned()]
        );
        let now = Utc::now();
        let (balance, _) = store
            .record_finding(&Finding {
                kind: AlertKind::DistrictBalance,
                severity: Severity::Warning,
                meter_id: None,
                district_id: Some(DistrictId::parse("D1").unwrap()),
                detected_at: now,
                evidence: Evidence {
                    rule: "test".into(),
                    observed: 3.0,
                    expected: Some(1.0),
                    threshold: 2.0,
                    unit: "%".into(),
                    window_start: now,
                    window_end: now,
                    explanation: "test".into(),
                    known: None,
                },
            })
            .await
            .unwrap();
        let kinds = [AlertKind::DistrictBalance];
        // The second leak names no stored segment: its record fails after the
        // coverage, the first leak's repair order and the alert's confirmation were
        // written in the transaction; none of it stays.
        let bad = survey_report(&[("wo:1:leak:0", "S1"), ("wo:1:leak:1", "NOPE")]);
        assert!(d.survey_report(order.id, bad, &kinds).await.is_err());
        assert!(
            store
                .network_store()
                .surveys(None)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.network_store().leaks(None).await.unwrap().is_empty());
        assert_eq!(store.active_work_orders().await.unwrap().len(), 1);
        let a = store.get_alert(balance.id).await.unwrap().unwrap();
        assert_eq!((a.status, a.work_order_id), (AlertStatus::Open, None));

        let good = survey_report(&[("wo:1:leak:0", "S1")]);
        let out = d
            .survey_report(order.id, good.clone(), &kinds)
            .await
            .unwrap();
        assert_eq!(out.surveys_recorded, 2);
        assert_eq!(out.confirmed_alerts, vec![balance.id]);
        let repair = out.leaks[0].repair_order.clone().unwrap();
        assert_eq!(repair.kind, WorkOrderKind::Repair);
        assert_eq!(repair.parent_id, Some(order.id));
        assert!(repair.due_at.is_some());
        let a = store.get_alert(balance.id).await.unwrap().unwrap();
        assert_eq!(a.status, AlertStatus::Escalated);
        assert_eq!(a.work_order_id, Some(repair.id));
        assert_eq!(a.outcome, Some(AlertOutcome::ConfirmedLeak));
        // Resent: nothing new, the same leak and repair.
        let again = d.survey_report(order.id, good, &kinds).await.unwrap();
        assert_eq!(again.surveys_recorded, 0);
        assert!(again.confirmed_alerts.is_empty());
        assert_eq!(again.leaks[0].leak_id, out.leaks[0].leak_id);
        assert_eq!(again.leaks[0].repair_order_id, Some(repair.id));
        assert_eq!(store.network_store().leaks(None).await.unwrap().len(), 1);
        // Another kind of order takes no survey report.
        let other = d
            .create(&new_order(
                WorkOrderKind::Repair,
                Priority::Normal,
                43.7,
                11.2,
            ))
            .await
            .unwrap();
        let refused = d.survey_report(other.id, survey_report(&[]), &kinds).await;
        assert!(
            matches!(refused, Err(DispatchError::Rejected(_))),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_survey_job_lasts_its_route() {
        let store = store().await;
        store
            .upsert_crews(&[crew("SV", 43.7700, 11.2500, &["survey"])])
            .await
            .unwrap();
        let mut cfg = DispatchConfig::default();
        cfg.plan.survey_m_per_min = 4.0;
        let d = Dispatcher::new(store.clone(), cfg);
        let order = survey_setup(&store, &d).await;
        let date = (Utc::now() + Duration::days(1)).date_naive();
        let plan = d.plan_day(date, false).await.unwrap();
        let stop = &plan.routes[0].stops[0];
        assert_eq!(stop.order_id, order.id);
        // Two segments of about 161 m, 111 m apart end to end: about 433 m at 4 m a
        // minute is about 108 minutes on site.
        let minutes = (stop.departure - stop.start).num_minutes();
        assert!((100..=115).contains(&minutes), "{minutes} min");
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
        // Quality counts what was found on site: one leak investigated, one confirmed;
        // the folded alert is already known, not a second confirmation (issue 12:
        // "10 confirmed where 5 leaks were investigated").
        let rows = d.outcomes().await.unwrap();
        let cf = rows
            .iter()
            .find(|r| r.kind == AlertKind::ContinuousFlow)
            .unwrap();
        assert_eq!(
            (
                cf.raised,
                cf.escalated,
                cf.confirmed,
                cf.known_leak,
                cf.pending
            ),
            (2, 2, 1, 1, 0)
        );
        assert_eq!(cf.precision, Some(1.0));
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
        // New alerts wait in the outbox; processing it escalates them once.
        assert_eq!(store.outbox_pending(10).await.unwrap(), vec![a]);
        assert_eq!(d.process_outbox(10).await.unwrap(), 1);
        assert!(store.outbox_pending(10).await.unwrap().is_empty());
        let o = store
            .get_alert(a)
            .await
            .unwrap()
            .unwrap()
            .work_order_id
            .unwrap();
        let nothing = SiteFinding {
            leak_found: false,
            leak_class: None,
            gas_readings: vec![],
            repaired: false,
            notes: "pilot flame".into(),
        };
        crew_a_finds(&d, o, nothing).await;
        let again = alert(&store, "M-1", AlertKind::ContinuousFlow, Severity::Warning).await;
        assert_eq!(d.auto_escalate(again).await.unwrap(), None);
        let again = store.get_alert(again).await.unwrap().unwrap();
        assert_eq!(again.status, AlertStatus::Open, "left to an engineer");
        // Another kind on that meter, or the same kind elsewhere, still goes.
        let other = alert(&store, "M-1", AlertKind::NightFlowRise, Severity::Warning).await;
        assert!(d.auto_escalate(other).await.unwrap().is_some());
        let elsewhere = alert(&store, "M-3", AlertKind::ContinuousFlow, Severity::Warning).await;
        assert!(d.auto_escalate(elsewhere).await.unwrap().is_some());
        // Everything was taken out of the outbox, escalated or not.
        assert!(store.outbox_pending(10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_repeated_client_action_is_applied_once_and_answered_the_same() {
        let store = store().await;
        store
            .upsert_crews(&[
                crew("A", 43.77, 11.25, &["inspection"]),
                crew("B", 43.78, 11.26, &["inspection"]),
            ])
            .await
            .unwrap();
        let d = Dispatcher::new(store.clone(), DispatchConfig::default());
        let o = d
            .create(&new_order(
                WorkOrderKind::PlannedInspection,
                Priority::Normal,
                43.77,
                11.25,
            ))
            .await
            .unwrap();
        let a = CrewId::parse("A").unwrap();
        d.transition(
            o.id,
            OrderAction::Assign { crew_id: a.clone() },
            "disp",
            None,
        )
        .await
        .unwrap();
        let first = d
            .transition_once("k-1", Some(&a), o.id, OrderAction::Accept, "anna", None)
            .await
            .unwrap();
        assert!(!first.repeated);
        assert_eq!(first.order.status, WorkOrderStatus::Accepted);
        let again = d
            .transition_once("k-1", Some(&a), o.id, OrderAction::Accept, "anna", None)
            .await
            .unwrap();
        assert!(again.repeated);
        assert_eq!(again.order, first.order, "the same answer");
        let accepts = store
            .work_order_history(o.id)
            .await
            .unwrap()
            .iter()
            .filter(|t| t.action == "accept")
            .count();
        assert_eq!(accepts, 1, "one transition for two requests");
        // The same id for another action is refused, not applied.
        let e = d
            .transition_once(
                "k-1",
                Some(&a),
                o.id,
                OrderAction::StartTravel,
                "anna",
                None,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, DispatchError::Conflict(_)), "{e}");
        // Reassigned meanwhile: crew A's queued step is refused in words.
        let b = CrewId::parse("B").unwrap();
        d.transition(o.id, OrderAction::Assign { crew_id: b }, "disp", None)
            .await
            .unwrap();
        let e = d
            .transition_once(
                "k-2",
                Some(&a),
                o.id,
                OrderAction::StartTravel,
                "anna",
                None,
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("reassigned to crew B"), "{e}");
        assert_eq!(store.client_actions_of_order(o.id).await.unwrap().len(), 1);
    }
}
