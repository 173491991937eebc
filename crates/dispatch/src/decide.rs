//! The dispatcher's rules as one pure function, in the manner of rumqtt's `MqttState`:
//! [`decide`] takes what the store holds about the event ([`Snapshot`]), the event and
//! the time, and returns the writes to make ([`Command`]s) or why not ([`Refusal`]). It
//! does no I/O and reads no clock; [`crate::Dispatcher`] loads the snapshot, applies
//! the commands in one transaction (`leakwatch_store::UnitOfWork`) and sends the
//! crews' notices after the commit.
//!
//! The rules:
//! - **Escalation**: the alert is claimed (`escalated`); a leak already found and
//!   waiting for its repair on the same meter absorbs it (no second investigation,
//!   the alert confirmed; only an emergency makes the repair more urgent; an alert
//!   whose evidence says it is beyond the known leak, `evidence.known`, is not
//!   absorbed); else it joins an open order close in place and time
//!   ([`crate::grouping`]) or a new order is created (kind, priority and deadline from
//!   the mapping) and linked. Urgent orders (`auto_assign`, high or emergency) go to
//!   the nearest crew ([`crate::choose`]).
//! - **Auto-escalation** (`auto_escalate`): leak alerts only, and not where a crew
//!   found no leak for the same kind on the same meter in the last
//!   `auto_escalate_quiet_days`.
//! - **Transitions**: legal by `leakwatch_core::workorder::next_status`; completing a
//!   leak job needs the crew's finding, checked against the leak classes; the finding
//!   marks the order's alerts and, for a leak left unrepaired, creates the follow-up
//!   repair (priority from the class's deadline); the end of an order resolves its
//!   alerts; an order past its deadline is flagged once.
//! - **Acceptance timeouts**: an urgent order not accepted in time goes to the next
//!   crew, never back to one that let it time out (a fact stored as the step's cause).
//! - **Day plans**: applying a plan assigns only orders still waiting (`created`), so
//!   applying it twice, or twice at once, assigns and notifies each job once.
//! - **Survey reports** (issue 16): a survey crew's coverage and findings on a
//!   survey order: the coverage is recorded; each leak found (once: a resent report
//!   changes nothing) becomes a repair order due by its class's deadline (urgent ones
//!   go to the nearest crew as any new order) and confirms the network-leak alerts of
//!   its district still open or acknowledged: they are escalated to the repair and
//!   their outcome is `confirmed_leak`. All in the one transaction.
//! - **Reconciliation**: an escalated alert without an order (left by a crash in an
//!   older version) is linked to the order made for it, or escalated again; an
//!   escalated alert whose order has ended is resolved.

use crate::DispatchConfig;
use crate::choose::{self, CrewState};
use crate::grouping::{self, GroupDecision, OpenOrder};
use chrono::Duration;
use leakwatch_core::workorder::next_status;
use leakwatch_core::{
    Alert, AlertAction, AlertOutcome, AlertStatus, CrewId, DistrictId, GeoPoint, LeakClassTable,
    MeterId, NewSuppression, OrderAction, PositionSource, Priority, SiteFinding, SuppressRequest,
    SuppressionScope, Timestamp, WorkOrder, WorkOrderKind, WorkOrderStatus,
};

/// What happened to a crew's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobChange {
    /// The job is now the crew's.
    Assigned,
    /// The job changed (status, priority, deadline).
    Updated,
    /// The job was taken from the crew (reassigned, pre-empted, unassigned).
    Withdrawn,
}

/// Stands for the id of the order a decision creates, in texts written before it
/// exists (notes, reasons); the service replaces it once the order is stored.
pub const NEW_ORDER_ID: &str = "{new_order}";

/// Which order a command is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderRef {
    Id(i64),
    /// The order this decision created last ([`Command::CreateOrder`]; a survey
    /// report may create several, each referred to before the next is created).
    New,
}

/// Why the dispatcher took a step (stored with it: a fact, not a note).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    AcceptanceTimeout,
    Preempted,
    Reconciled,
}

/// An order to create (status `created`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    pub kind: WorkOrderKind,
    pub priority: Priority,
    pub alert_id: Option<i64>,
    pub meter_id: Option<MeterId>,
    pub district_id: Option<DistrictId>,
    pub location: GeoPoint,
    pub summary: String,
    pub due_at: Option<Timestamp>,
    pub parent_id: Option<i64>,
    pub actor: String,
}

/// One step of an order's lifecycle (compare-and-set from `from`).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub order: OrderRef,
    pub from: WorkOrderStatus,
    pub to: WorkOrderStatus,
    pub action: &'static str,
    pub actor: String,
    /// `None` leaves the crew, `Some(None)` clears it, `Some(Some(c))` sets it.
    pub set_crew: Option<Option<CrewId>>,
    /// The crew the audit record names.
    pub crew: Option<CrewId>,
    pub note: Option<String>,
    pub position: Option<GeoPoint>,
    pub finding: Option<SiteFinding>,
    pub cause: Option<Cause>,
}

/// A segment (or part of one) a survey crew covered.
#[derive(Debug, Clone, PartialEq)]
pub struct SurveyCovered {
    pub segment: String,
    pub date: chrono::NaiveDate,
    pub crew: Option<String>,
    pub instrument: Option<String>,
    pub covered_m: f64,
}

/// A leak a survey crew found, checked by the caller (the segment exists, the class
/// is in the leak-class table).
#[derive(Debug, Clone, PartialEq)]
pub struct SurveyLeak {
    /// Makes a resent report a no-op (`wo:<order>:leak:<n>`).
    pub key: String,
    pub segment: String,
    pub date: chrono::NaiveDate,
    pub class: String,
    pub notes: String,
    /// The segment's district and midpoint (where the repair is).
    pub district: DistrictId,
    pub location: GeoPoint,
}

/// A survey crew's report on a survey order.
#[derive(Debug, Clone, PartialEq)]
pub struct SurveyReport {
    pub actor: String,
    pub covered: Vec<SurveyCovered>,
    pub leaks: Vec<SurveyLeak>,
}

/// A write the decision asks for, applied in order in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Compare-and-set of an alert's status; `reason` and `order`, when given, replace
    /// the stored ones.
    SetAlert {
        alert_id: i64,
        from: AlertStatus,
        to: AlertStatus,
        reason: Option<String>,
        order: Option<OrderRef>,
    },
    CreateOrder(NewOrder),
    Step(Step),
    /// A new priority and deadline (no lifecycle step).
    SetPriority {
        order: OrderRef,
        priority: Priority,
        due_at: Option<Timestamp>,
    },
    /// What the crew found, for every alert linked to the order.
    SetOutcome {
        order: OrderRef,
        outcome: AlertOutcome,
    },
    MarkBreached {
        order: OrderRef,
    },
    CrewPosition {
        crew: CrewId,
        at: GeoPoint,
    },
    CrewLastJob {
        crew: CrewId,
        place: GeoPoint,
    },
    /// The alert is folded into the open repair of a leak already found: its outcome
    /// is `confirmed_leak`, marked as a known leak (not a finding made on site).
    KnownLeak {
        alert_id: i64,
    },
    /// Store a suppression made with a dismissal (same transaction).
    Suppress(NewSuppression),
    /// No crew can take the order now (it stays waiting): counted and logged, no
    /// write.
    NoCrew {
        order: OrderRef,
    },
    /// The segments a survey order covers, in walking order.
    SetSurveySegments {
        order: OrderRef,
        segments: Vec<String>,
    },
    /// Survey coverage done under survey order `order` (repeats skipped).
    RecordCoverage {
        order: i64,
        covered: Vec<SurveyCovered>,
    },
    /// A leak found under survey order `order`, with its repair order.
    RecordLeak {
        order: i64,
        leak: SurveyLeak,
        repair: OrderRef,
    },
    /// Tell the crew's devices, after the commit, about the order as committed.
    Notify {
        crew: CrewId,
        change: JobChange,
        order: OrderRef,
    },
}

/// Why a decision made no commands.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    NotFound(String),
    /// The request breaks a rule.
    Rejected(String),
    /// The request's content is not acceptable.
    Invalid(String),
    /// Crew choice needs travel times to this place, which the snapshot lacks: load
    /// them (outside the transaction) and decide again.
    NeedTravel(GeoPoint),
}

/// Travel times from the crews to one place.
#[derive(Debug, Clone, PartialEq)]
pub struct TravelTo {
    pub place: GeoPoint,
    /// The provider's name, for the assignment's note.
    pub provider: String,
    /// Seconds per crew; a crew not listed cannot be chosen.
    pub seconds: Vec<(CrewId, f64)>,
}

/// A crew as the rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct CrewView {
    pub state: CrewState,
    pub source: PositionSource,
}

/// What the store holds about an event, loaded by the service in the transaction.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The alert the event names.
    pub alert: Option<Alert>,
    /// Where a crew goes for it: its meter, or its district's station.
    pub alert_place: Option<GeoPoint>,
    /// The order the event names (for reconciliation: the order made for the alert).
    pub order: Option<WorkOrder>,
    /// Orders not in a final status.
    pub active: Vec<WorkOrder>,
    /// The alerts linked to `order`.
    pub order_alerts: Vec<Alert>,
    /// Earlier alerts of the same kind on the same meter whose crew found nothing,
    /// created within the quiet days (auto-escalation).
    pub false_positives: Vec<Alert>,
    pub crews: Vec<CrewView>,
    /// Crews that let `order` time out before.
    pub timed_out: Vec<CrewId>,
    pub travel: Vec<TravelTo>,
    /// Survey reports: the network-leak alerts still open or acknowledged in the
    /// districts of the leaks found.
    pub district_alerts: Vec<Alert>,
    /// Survey reports: the keys of the report's leaks already stored.
    pub known_leaks: Vec<String>,
}

/// A stop of an applied day plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanStop {
    pub order_id: i64,
    pub crew_id: CrewId,
    pub note: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An engineer's review (acknowledge, dismiss, resolve) of `snapshot.alert`.
    Review(AlertAction),
    /// A dismissal of `snapshot.alert` that also suppresses new alerts of its kind on
    /// its meter or district (see [`suppression_for`]).
    DismissSuppressing {
        reason: String,
        suppress: SuppressRequest,
    },
    /// Escalate `snapshot.alert` to a work order.
    Escalate { actor: String },
    /// A new alert came out of the outbox: escalate it if the rules say so.
    AutoEscalate,
    /// An order created by hand.
    Create(NewOrder),
    /// Someone moves `snapshot.order` through its lifecycle.
    Transition {
        action: OrderAction,
        actor: String,
        position: Option<GeoPoint>,
    },
    /// Offer `snapshot.order` (waiting, urgent) to the nearest crew.
    Offer,
    /// The supervisor found `snapshot.order` not accepted within `accept_within_s`.
    AcceptanceTimeout,
    /// The supervisor checks `snapshot.order` against its deadline.
    CheckDeadline,
    /// Assign the stops of a day plan; orders no longer waiting are left alone.
    ApplyPlan(Vec<PlanStop>),
    /// Repair `snapshot.alert`, escalated, left without an order or with an ended
    /// one.
    Reconcile,
    /// A survey crew's report on `snapshot.order`.
    SurveyReport(SurveyReport),
    /// A leak survey order created by the program, with its segments in walking order.
    CreateSurvey(NewOrder, Vec<String>),
}

/// The rules' settings.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub cfg: &'a DispatchConfig,
    pub leak_table: &'a LeakClassTable,
}

/// The suppression a dismissal of `a` with `req` makes: scope `meter` (the default
/// when the alert has a meter) or `district`; the dismissed evidence's observed value
/// and the margin (default [`leakwatch_core::suppression::DEFAULT_MARGIN`]) by which new
/// evidence must exceed it to raise an alert again; `until` (event time) after the
/// detection. Why not, in words.
pub fn suppression_for(
    a: &Alert,
    reason: &str,
    req: &SuppressRequest,
) -> Result<NewSuppression, String> {
    use leakwatch_core::suppression::{DEFAULT_MARGIN, MARGIN_MAX};
    let scope = match (
        req.scope.as_deref().unwrap_or(""),
        &a.meter_id,
        &a.district_id,
    ) {
        ("" | "meter", Some(m), _) => SuppressionScope::Meter(m.clone()),
        ("" | "district", None, Some(d)) | ("district", _, Some(d)) => {
            SuppressionScope::District(d.clone())
        }
        ("", None, None) => return Err(format!("alert {} has neither meter nor district", a.id)),
        ("meter", None, _) => return Err(format!("alert {} has no meter", a.id)),
        ("district", _, None) => return Err(format!("alert {} has no district", a.id)),
        (other, _, _) => {
            return Err(format!(
                "unknown suppression scope {other:?}; expected meter or district"
            ));
        }
    };
    let margin = req.margin.unwrap_or(DEFAULT_MARGIN);
    if !(0.0..=MARGIN_MAX).contains(&margin) {
        return Err(format!(
            "the margin {margin} is not a fraction between 0 and {MARGIN_MAX}"
        ));
    }
    if let Some(u) = req.until
        && u <= a.detected_at
    {
        return Err(format!(
            "a suppression until {u} would end before the alert's detection ({})",
            a.detected_at
        ));
    }
    Ok(NewSuppression {
        kind: a.kind,
        scope,
        alert_id: a.id,
        reason: reason.to_owned(),
        until: req.until,
        observed: a.evidence.observed,
        unit: a.evidence.unit.clone(),
        margin,
    })
}

/// The commands for `event` at `now` over `snapshot`, or why none.
pub fn decide(
    rules: Rules<'_>,
    s: &Snapshot,
    event: &Event,
    now: Timestamp,
) -> Result<Vec<Command>, Refusal> {
    let mut d = Decision {
        rules,
        s,
        now,
        out: Vec::new(),
    };
    match event {
        Event::Review(action) => d.review(action)?,
        Event::DismissSuppressing { reason, suppress } => {
            let a = d.alert()?.clone();
            let new = suppression_for(&a, reason, suppress).map_err(Refusal::Invalid)?;
            d.review(&AlertAction::Dismiss {
                reason: reason.clone(),
            })?;
            d.out.push(Command::Suppress(new));
        }
        Event::Escalate { actor } => d.escalate(actor, true)?,
        Event::AutoEscalate => d.auto_escalate()?,
        Event::Create(new) => d.create(new)?,
        Event::Transition {
            action,
            actor,
            position,
        } => d.transition(action, actor, *position)?,
        Event::Offer => {
            let o = d.order()?.clone();
            if o.status == WorkOrderStatus::Created && d.urgent(o.priority) {
                d.assign(&o, OrderRef::Id(o.id), &s.timed_out)?;
            }
        }
        Event::AcceptanceTimeout => d.acceptance_timeout()?,
        Event::CheckDeadline => {
            let o = d.order()?.clone();
            d.breach(&o, OrderRef::Id(o.id));
        }
        Event::ApplyPlan(stops) => d.apply_plan(stops)?,
        Event::Reconcile => d.reconcile()?,
        Event::SurveyReport(r) => d.survey_report(r)?,
        Event::CreateSurvey(new, segments) => {
            d.create(new)?;
            d.out.push(Command::SetSurveySegments {
                order: OrderRef::New,
                segments: segments.clone(),
            });
        }
    }
    Ok(d.out)
}

struct Decision<'a> {
    rules: Rules<'a>,
    s: &'a Snapshot,
    now: Timestamp,
    out: Vec<Command>,
}

const DISPATCHER: &str = "dispatcher";

impl Decision<'_> {
    fn alert(&self) -> Result<&Alert, Refusal> {
        self.s
            .alert
            .as_ref()
            .ok_or_else(|| Refusal::NotFound("the alert does not exist".into()))
    }

    fn order(&self) -> Result<&WorkOrder, Refusal> {
        self.s
            .order
            .as_ref()
            .ok_or_else(|| Refusal::NotFound("the work order does not exist".into()))
    }

    /// Orders that go to a crew at once; the rest wait for the day plan.
    fn urgent(&self, p: Priority) -> bool {
        self.rules.cfg.auto_assign && p <= Priority::High
    }

    fn review(&mut self, action: &AlertAction) -> Result<(), Refusal> {
        let a = self.alert()?;
        let to = a.status.apply(action).map_err(Refusal::Rejected)?;
        let reason = match action {
            AlertAction::Dismiss { reason } => Some(reason.clone()),
            _ => None,
        };
        self.out.push(Command::SetAlert {
            alert_id: a.id,
            from: a.status,
            to,
            reason,
            order: None,
        });
        Ok(())
    }

    fn auto_escalate(&mut self) -> Result<(), Refusal> {
        let a = self.alert()?;
        let cfg = self.rules.cfg;
        if !cfg.auto_escalate
            || !a.kind.is_leak()
            || a.severity < cfg.auto_escalate_min_severity
            || a.status.apply(&AlertAction::Escalate).is_err()
        {
            return Ok(());
        }
        let since = self.now - Duration::days(i64::from(cfg.auto_escalate_quiet_days));
        let quiet = a.meter_id.is_some()
            && self.s.false_positives.iter().any(|e| {
                e.id != a.id
                    && e.kind == a.kind
                    && e.meter_id == a.meter_id
                    && e.outcome == Some(AlertOutcome::FalsePositive)
                    && e.created_at >= since
            });
        if quiet {
            return Ok(());
        }
        self.escalate("auto-escalation", true)
    }

    /// Escalation; `claim` is false when reconciling an alert already escalated.
    fn escalate(&mut self, actor: &str, claim: bool) -> Result<(), Refusal> {
        let a = self.alert()?.clone();
        if claim {
            a.status
                .apply(&AlertAction::Escalate)
                .map_err(Refusal::Rejected)?;
        }
        let place = self.s.alert_place.ok_or_else(|| {
            Refusal::Rejected(format!(
                "alert {} has no meter in the registry or district station to send a crew to",
                a.id
            ))
        })?;
        let job = self.rules.cfg.mapping.job_for(a.kind, a.severity);
        let due = job
            .deadline_min
            .map(|m| self.now + Duration::minutes(i64::from(m)));
        if claim {
            self.out.push(Command::SetAlert {
                alert_id: a.id,
                from: a.status,
                to: AlertStatus::Escalated,
                reason: None,
                order: None,
            });
        }
        // A leak already found and waiting for its repair absorbs new leak alerts on
        // its meter, however long ago it was found: the crew is coming to repair it.
        // Only an emergency makes the repair more urgent.
        if job.kind.requires_finding()
            && !beyond_known(&a)
            && let Some(repair) = self.s.active.iter().find(|o| {
                o.kind == WorkOrderKind::Repair && o.meter_id.is_some() && o.meter_id == a.meter_id
            })
        {
            let upgrade = (job.priority == Priority::Emergency
                && repair.priority != Priority::Emergency)
                .then_some(Priority::Emergency);
            let reason = format!("the leak is known: repair work order {} is open", repair.id);
            self.join(&a, repair, upgrade, due, reason)?;
            // A crew confirmed this leak on site already: the alert points at a real
            // leak, but nobody goes out for it (it is not a finding of its own).
            self.out.push(Command::KnownLeak { alert_id: a.id });
            return Ok(());
        }
        let open: Vec<OpenOrder> = self
            .s
            .active
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
        } = grouping::group(
            &self.rules.cfg.grouping,
            place,
            self.now,
            job.priority,
            &open,
        ) && let Some(order) = self.s.active.iter().find(|o| o.id == order_id)
        {
            let reason = format!("grouped into work order {order_id}");
            return self.join(&a, order, upgrade_to, due, reason);
        }
        let new = NewOrder {
            kind: job.kind,
            priority: job.priority,
            alert_id: Some(a.id),
            meter_id: a.meter_id.clone(),
            district_id: a.district_id.clone(),
            location: place,
            summary: format!("{}: {}", a.kind, a.evidence.explanation),
            due_at: due,
            parent_id: None,
            actor: actor.to_owned(),
        };
        self.out.push(Command::CreateOrder(new.clone()));
        self.out.push(Command::SetAlert {
            alert_id: a.id,
            from: AlertStatus::Escalated,
            to: AlertStatus::Escalated,
            reason: None,
            order: Some(OrderRef::New),
        });
        if self.urgent(new.priority) {
            let order = planned(&new, self.now);
            self.assign(&order, OrderRef::New, &[])?;
        }
        Ok(())
    }

    /// Joins the alert to an open order, upgrading it when asked (the deadline comes
    /// forward); an urgent order still waiting goes to the nearest crew.
    fn join(
        &mut self,
        a: &Alert,
        order: &WorkOrder,
        upgrade: Option<Priority>,
        due: Option<Timestamp>,
        reason: String,
    ) -> Result<(), Refusal> {
        self.out.push(Command::SetAlert {
            alert_id: a.id,
            from: AlertStatus::Escalated,
            to: AlertStatus::Escalated,
            reason: Some(reason),
            order: Some(OrderRef::Id(order.id)),
        });
        let mut order = order.clone();
        if let Some(p) = upgrade {
            order.due_at = match (order.due_at, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            order.priority = p;
            self.out.push(Command::SetPriority {
                order: OrderRef::Id(order.id),
                priority: p,
                due_at: order.due_at,
            });
            if let Some(c) = &order.crew_id {
                self.notify(c, JobChange::Updated, OrderRef::Id(order.id));
            }
        }
        if order.status == WorkOrderStatus::Created && self.urgent(order.priority) {
            self.assign(&order, OrderRef::Id(order.id), &[])?;
        }
        Ok(())
    }

    fn notify(&mut self, crew: &CrewId, change: JobChange, order: OrderRef) {
        self.out.push(Command::Notify {
            crew: crew.clone(),
            change,
            order,
        });
    }

    fn create(&mut self, new: &NewOrder) -> Result<(), Refusal> {
        self.out.push(Command::CreateOrder(new.clone()));
        if self.urgent(new.priority) {
            let order = planned(new, self.now);
            self.assign(&order, OrderRef::New, &[])?;
        }
        Ok(())
    }

    /// Gives a waiting order to the qualified, on-shift crew with the shortest travel
    /// time, pre-empting a crew on non-emergency work for an emergency when the policy
    /// allows. Nothing when no crew can take it (it stays `created`). Returns the crew.
    fn assign(
        &mut self,
        order: &WorkOrder,
        r: OrderRef,
        exclude: &[CrewId],
    ) -> Result<Option<CrewId>, Refusal> {
        let travel = self
            .s
            .travel
            .iter()
            .find(|t| t.place == order.location)
            .ok_or(Refusal::NeedTravel(order.location))?;
        let states: Vec<CrewState> = self.s.crews.iter().map(|c| c.state.clone()).collect();
        let seconds: Vec<f64> = states
            .iter()
            .map(|c| {
                travel
                    .seconds
                    .iter()
                    .find(|(id, _)| *id == c.id)
                    .map_or(f64::INFINITY, |(_, s)| *s)
            })
            .collect();
        let Some(choice) = choose::choose_nearest(
            &states,
            &seconds,
            order.kind.required_skill(),
            order.priority,
            &self.rules.cfg.choice,
            exclude,
        ) else {
            self.out.push(Command::NoCrew { order: r });
            return Ok(None);
        };
        let id_text = match r {
            OrderRef::Id(id) => id.to_string(),
            OrderRef::New => NEW_ORDER_ID.to_owned(),
        };
        if let Some(pre) = choice.preempts
            && let Some(other) = self.s.active.iter().find(|o| o.id == pre)
        {
            let to = next_status(other.status, &OrderAction::Unassign)
                .map_err(|e| Refusal::Rejected(format!("work order {pre}: {e}")))?;
            self.out.push(Command::Step(Step {
                order: OrderRef::Id(pre),
                from: other.status,
                to,
                action: "unassign",
                actor: DISPATCHER.into(),
                set_crew: Some(None),
                crew: other.crew_id.clone(),
                note: Some(format!("pre-empted by emergency work order {id_text}")),
                position: None,
                finding: None,
                cause: Some(Cause::Preempted),
            }));
            if let Some(c) = &other.crew_id {
                self.notify(c, JobChange::Withdrawn, OrderRef::Id(pre));
            }
        }
        let source = self
            .s
            .crews
            .iter()
            .find(|c| c.state.id == choice.crew_id)
            .map(|c| c.source);
        let note = format!(
            "nearest crew: {:.0} min by {} travel times from its {}{}",
            choice.travel_s / 60.0,
            travel.provider,
            match source {
                Some(PositionSource::Reported) => "reported position",
                Some(PositionSource::LastJob) => "last job's place",
                _ => "home base",
            },
            match choice.preempts {
                Some(p) => format!(", pre-empting work order {p}"),
                None => String::new(),
            }
        );
        self.out.push(Command::Step(Step {
            order: r,
            from: order.status,
            to: WorkOrderStatus::Assigned,
            action: "assign",
            actor: DISPATCHER.into(),
            set_crew: Some(Some(choice.crew_id.clone())),
            crew: Some(choice.crew_id.clone()),
            note: Some(note),
            position: None,
            finding: None,
            cause: None,
        }));
        if let Some(prev) = order.crew_id.as_ref().filter(|p| **p != choice.crew_id) {
            self.notify(prev, JobChange::Withdrawn, r);
        }
        self.notify(&choice.crew_id, JobChange::Assigned, r);
        Ok(Some(choice.crew_id))
    }

    fn transition(
        &mut self,
        action: &OrderAction,
        actor: &str,
        position: Option<GeoPoint>,
    ) -> Result<(), Refusal> {
        let order = self.order()?.clone();
        let id = order.id;
        let (note, finding) = match action {
            OrderAction::Complete { notes, finding } => {
                if order.kind.requires_finding() && finding.is_none() {
                    return Err(Refusal::Invalid(format!(
                        "work order {id} is a {} job: completing it needs the crew's finding",
                        order.kind.as_str()
                    )));
                }
                if let Some(f) = finding {
                    f.validate(self.rules.leak_table)
                        .map_err(|e| Refusal::Invalid(format!("finding: {e}")))?;
                }
                (notes.clone(), finding.clone())
            }
            OrderAction::Cancel { reason } | OrderAction::UnableToComplete { reason } => {
                (Some(reason.clone()), None)
            }
            _ => (None, None),
        };
        let to = next_status(order.status, action)
            .map_err(|e| Refusal::Rejected(format!("work order {id}: {e}")))?;
        let set_crew = match action {
            OrderAction::Assign { crew_id } => {
                if !self.s.crews.iter().any(|c| c.state.id == *crew_id) {
                    return Err(Refusal::Rejected(format!("crew {crew_id} does not exist")));
                }
                Some(Some(crew_id.clone()))
            }
            OrderAction::Unassign => Some(None),
            _ => None,
        };
        let crew_after = match &set_crew {
            Some(c) => c.clone(),
            None => order.crew_id.clone(),
        };
        self.out.push(Command::Step(Step {
            order: OrderRef::Id(id),
            from: order.status,
            to,
            action: action.name(),
            actor: actor.to_owned(),
            set_crew: set_crew.clone(),
            crew: match action {
                OrderAction::Assign { crew_id } => Some(crew_id.clone()),
                _ => order.crew_id.clone(),
            },
            note,
            position,
            finding: finding.clone(),
            cause: None,
        }));
        match action {
            OrderAction::Assign { crew_id } => {
                if let Some(prev) = order.crew_id.as_ref().filter(|p| *p != crew_id) {
                    self.notify(prev, JobChange::Withdrawn, OrderRef::Id(id));
                }
                self.notify(crew_id, JobChange::Assigned, OrderRef::Id(id));
            }
            OrderAction::Unassign => {
                if let Some(prev) = &order.crew_id {
                    self.notify(prev, JobChange::Withdrawn, OrderRef::Id(id));
                }
            }
            _ => {
                if let Some(c) = &crew_after {
                    self.notify(c, JobChange::Updated, OrderRef::Id(id));
                }
            }
        }
        let after = stepped(&order, to, crew_after.clone(), self.now);
        self.breach(&after, OrderRef::Id(id));
        if let Some(crew) = &crew_after {
            if let Some(p) = position {
                self.out.push(Command::CrewPosition {
                    crew: crew.clone(),
                    at: p,
                });
            }
            if to == WorkOrderStatus::OnSite {
                self.out.push(Command::CrewLastJob {
                    crew: crew.clone(),
                    place: order.location,
                });
            }
        }
        if to.is_final() {
            self.close_alerts(&after, None);
        }
        if let (WorkOrderStatus::Completed, Some(f)) = (to, &finding) {
            self.finding(&after, f)?;
        }
        Ok(())
    }

    /// The order's escalated alerts resolve with it.
    fn close_alerts(&mut self, order: &WorkOrder, note: Option<&str>) {
        let reason = format!(
            "work order {} {}{}",
            order.id,
            order.status,
            note.unwrap_or("")
        );
        for a in &self.s.order_alerts {
            if a.status == AlertStatus::Escalated {
                self.out.push(Command::SetAlert {
                    alert_id: a.id,
                    from: AlertStatus::Escalated,
                    to: AlertStatus::Resolved,
                    reason: Some(reason.clone()),
                    order: Some(OrderRef::Id(order.id)),
                });
            }
        }
    }

    /// The crew's finding: the alerts' outcome and, for a leak left unrepaired, the
    /// follow-up repair due by the class's deadline.
    fn finding(&mut self, order: &WorkOrder, f: &SiteFinding) -> Result<(), Refusal> {
        self.out.push(Command::SetOutcome {
            order: OrderRef::Id(order.id),
            outcome: f.outcome(),
        });
        if !f.needs_follow_up() {
            return Ok(());
        }
        let table = self.rules.leak_table;
        let class = f.leak_class.as_deref().unwrap_or_default();
        let due = table
            .repair_due(class, self.now)
            .map_err(Refusal::Rejected)?;
        let priority = follow_up_priority(table.get(class).and_then(|c| c.repair_within_h));
        let new = NewOrder {
            kind: WorkOrderKind::Repair,
            priority,
            alert_id: order.alert_id,
            meter_id: order.meter_id.clone(),
            district_id: order.district_id.clone(),
            location: order.location,
            summary: format!(
                "repair: class {class} leak found by work order {}{}",
                order.id,
                if f.notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", f.notes)
                }
            ),
            due_at: due,
            parent_id: Some(order.id),
            actor: DISPATCHER.into(),
        };
        self.create(&new)
    }

    /// A survey crew's report: coverage, then each new leak's repair order, the
    /// district's pending network alerts confirmed by it, and the leak's record.
    fn survey_report(&mut self, r: &SurveyReport) -> Result<(), Refusal> {
        let order = self.order()?.clone();
        if !matches!(
            order.kind,
            WorkOrderKind::LeakSurvey | WorkOrderKind::PlannedInspection
        ) {
            return Err(Refusal::Rejected(format!(
                "work order {} is a {} job, not a leak survey",
                order.id,
                order.kind.as_str()
            )));
        }
        if order.status == WorkOrderStatus::Cancelled {
            return Err(Refusal::Rejected(format!(
                "work order {} was cancelled: its survey cannot be reported",
                order.id
            )));
        }
        self.out.push(Command::RecordCoverage {
            order: order.id,
            covered: r.covered.clone(),
        });
        let table = self.rules.leak_table;
        let mut confirmed: Vec<i64> = Vec::new();
        for leak in &r.leaks {
            if self.s.known_leaks.contains(&leak.key) {
                continue;
            }
            let due = table
                .repair_due(&leak.class, self.now)
                .map_err(Refusal::Invalid)?;
            let alerts: Vec<Alert> = self
                .s
                .district_alerts
                .iter()
                .filter(|a| {
                    a.district_id.as_ref() == Some(&leak.district) && !confirmed.contains(&a.id)
                })
                .cloned()
                .collect();
            let priority =
                follow_up_priority(table.get(&leak.class).and_then(|c| c.repair_within_h));
            self.create(&NewOrder {
                kind: WorkOrderKind::Repair,
                priority,
                alert_id: alerts.first().map(|a| a.id),
                meter_id: None,
                district_id: Some(leak.district.clone()),
                location: leak.location,
                summary: format!(
                    "repair: class {} leak found by leak survey (work order {}) on segment {}{}",
                    leak.class,
                    order.id,
                    leak.segment,
                    if leak.notes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", leak.notes)
                    }
                ),
                due_at: due,
                parent_id: Some(order.id),
                actor: r.actor.clone(),
            })?;
            for a in &alerts {
                self.out.push(Command::SetAlert {
                    alert_id: a.id,
                    from: a.status,
                    to: AlertStatus::Escalated,
                    reason: Some(format!(
                        "confirmed: leak found by survey (work order {}, repair {NEW_ORDER_ID})",
                        order.id
                    )),
                    order: Some(OrderRef::New),
                });
                confirmed.push(a.id);
            }
            if !alerts.is_empty() {
                self.out.push(Command::SetOutcome {
                    order: OrderRef::New,
                    outcome: AlertOutcome::ConfirmedLeak,
                });
            }
            self.out.push(Command::RecordLeak {
                order: order.id,
                leak: leak.clone(),
                repair: OrderRef::New,
            });
        }
        Ok(())
    }

    /// Flags an order past its deadline, once.
    fn breach(&mut self, order: &WorkOrder, r: OrderRef) {
        if order.breached_at.is_some() {
            return;
        }
        if order.deadline(self.now).is_some_and(|d| d.breached) {
            self.out.push(Command::MarkBreached { order: r });
        }
    }

    fn acceptance_timeout(&mut self) -> Result<(), Refusal> {
        let order = self.order()?.clone();
        let within = self.rules.cfg.accept_within_s;
        let limit = self.now - Duration::seconds(within as i64);
        let Some(crew) = order.crew_id.clone() else {
            return Ok(());
        };
        // Accepted, changed or given again meanwhile, or not urgent: nothing to do.
        if order.status != WorkOrderStatus::Assigned
            || order.assigned_at.is_none_or(|t| t >= limit)
            || order.priority > Priority::High
        {
            return Ok(());
        }
        self.out.push(Command::Step(Step {
            order: OrderRef::Id(order.id),
            from: order.status,
            to: WorkOrderStatus::Created,
            action: "unassign",
            actor: DISPATCHER.into(),
            set_crew: Some(None),
            crew: Some(crew.clone()),
            note: Some(format!(
                "acceptance timeout: {crew} did not accept within {within} s"
            )),
            position: None,
            finding: None,
            cause: Some(Cause::AcceptanceTimeout),
        }));
        self.notify(&crew, JobChange::Withdrawn, OrderRef::Id(order.id));
        let mut excluded = self.s.timed_out.clone();
        excluded.push(crew.clone());
        let mut waiting = order.clone();
        waiting.status = WorkOrderStatus::Created;
        waiting.crew_id = None;
        let next = self.assign(&waiting, OrderRef::Id(order.id), &excluded)?;
        let reason = match &next {
            Some(c) => format!(
                "work order {} not accepted by {crew} within {within} s; reassigned to {c}",
                order.id
            ),
            None => format!(
                "work order {} not accepted by {crew} within {within} s; no other crew available",
                order.id
            ),
        };
        for a in &self.s.order_alerts {
            if a.status == AlertStatus::Escalated {
                self.out.push(Command::SetAlert {
                    alert_id: a.id,
                    from: AlertStatus::Escalated,
                    to: AlertStatus::Escalated,
                    reason: Some(reason.clone()),
                    order: Some(OrderRef::Id(order.id)),
                });
            }
        }
        Ok(())
    }

    fn apply_plan(&mut self, stops: &[PlanStop]) -> Result<(), Refusal> {
        for stop in stops {
            let Some(order) = self.s.active.iter().find(|o| o.id == stop.order_id) else {
                continue;
            };
            // Assigned by an earlier (or concurrent) application, or by hand.
            if order.status != WorkOrderStatus::Created {
                continue;
            }
            if !self.s.crews.iter().any(|c| c.state.id == stop.crew_id) {
                return Err(Refusal::Rejected(format!(
                    "crew {} does not exist",
                    stop.crew_id
                )));
            }
            self.out.push(Command::Step(Step {
                order: OrderRef::Id(order.id),
                from: order.status,
                to: WorkOrderStatus::Assigned,
                action: "assign",
                actor: "planner".into(),
                set_crew: Some(Some(stop.crew_id.clone())),
                crew: Some(stop.crew_id.clone()),
                note: Some(stop.note.clone()),
                position: None,
                finding: None,
                cause: None,
            }));
            self.notify(&stop.crew_id, JobChange::Assigned, OrderRef::Id(order.id));
        }
        Ok(())
    }

    fn reconcile(&mut self) -> Result<(), Refusal> {
        let a = self.alert()?.clone();
        if a.status != AlertStatus::Escalated {
            return Ok(());
        }
        match (a.work_order_id, &self.s.order) {
            // Its order ended without resolving it.
            (Some(_), Some(o)) if o.status.is_final() => {
                self.out.push(Command::SetAlert {
                    alert_id: a.id,
                    from: AlertStatus::Escalated,
                    to: AlertStatus::Resolved,
                    reason: Some(format!("work order {} {} (reconciled)", o.id, o.status)),
                    order: Some(OrderRef::Id(o.id)),
                });
                Ok(())
            }
            (Some(_), _) => Ok(()),
            // The order was made for it but never linked.
            (None, Some(o)) => {
                let to = if o.status.is_final() {
                    AlertStatus::Resolved
                } else {
                    AlertStatus::Escalated
                };
                self.out.push(Command::SetAlert {
                    alert_id: a.id,
                    from: AlertStatus::Escalated,
                    to,
                    reason: Some(format!("linked to work order {} (reconciled)", o.id)),
                    order: Some(OrderRef::Id(o.id)),
                });
                Ok(())
            }
            // Claimed, then nothing: finish the escalation.
            (None, None) => self.escalate("reconciliation", false),
        }
    }
}

/// The alert's evidence says it is beyond the anomaly already known on its subject
/// (`evidence.known`: observed above what was expected with the known leak, i.e.
/// the leak-free level plus the known magnitude): news for the crew, not a repeat of
/// the known leak, so an open repair does not absorb it.
fn beyond_known(a: &Alert) -> bool {
    a.evidence
        .known
        .as_ref()
        .is_some_and(|k| a.evidence.observed > a.evidence.expected.unwrap_or(k.magnitude))
}

/// A follow-up repair's priority from its class's deadline.
pub fn follow_up_priority(repair_within_h: Option<u32>) -> Priority {
    match repair_within_h {
        Some(0) => Priority::Emergency,
        Some(h) if h <= 24 => Priority::High,
        Some(_) => Priority::Normal,
        None => Priority::Low,
    }
}

/// The order a [`NewOrder`] becomes, as far as the rules need before it is stored.
fn planned(new: &NewOrder, now: Timestamp) -> WorkOrder {
    WorkOrder {
        id: 0,
        kind: new.kind,
        priority: new.priority,
        status: WorkOrderStatus::Created,
        alert_id: new.alert_id,
        meter_id: new.meter_id.clone(),
        district_id: new.district_id.clone(),
        location: new.location,
        crew_id: None,
        summary: new.summary.clone(),
        created_at: now,
        updated_at: now,
        due_at: new.due_at,
        parent_id: new.parent_id,
        assigned_at: None,
        reached_at: None,
        breached_at: None,
        finding: None,
    }
}

/// The order after a step at `now`, as the store records it (the times the deadline
/// view reads).
fn stepped(
    order: &WorkOrder,
    to: WorkOrderStatus,
    crew: Option<CrewId>,
    now: Timestamp,
) -> WorkOrder {
    let mut o = order.clone();
    o.status = to;
    o.crew_id = crew;
    o.updated_at = now;
    match to {
        WorkOrderStatus::Assigned => o.assigned_at = Some(now),
        WorkOrderStatus::Created => o.assigned_at = None,
        WorkOrderStatus::OnSite => o.reached_at = o.reached_at.or(Some(now)),
        _ => {}
    }
    o
}

#[cfg(test)]
mod tests {
    //! The rules without a database: snapshots built by hand, commands compared.

    use super::*;
    use chrono::TimeZone;
    use leakwatch_core::{AlertKind, Evidence, Severity};

    fn t0() -> Timestamp {
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 26, 10, 0, 0)
            .unwrap()
    }

    fn place(lat: f64, lon: f64) -> GeoPoint {
        GeoPoint::new(lat, lon).unwrap()
    }

    fn id(s: &str) -> CrewId {
        CrewId::parse(s).unwrap()
    }

    fn alert(aid: i64, meter: &str, kind: AlertKind, severity: Severity) -> Alert {
        Alert {
            id: aid,
            kind,
            severity,
            status: AlertStatus::Open,
            meter_id: Some(MeterId::parse(meter).unwrap()),
            district_id: Some(DistrictId::parse("D1").unwrap()),
            detected_at: t0(),
            last_seen: t0(),
            count: 1,
            evidence: Evidence {
                known: None,
                rule: "r".into(),
                observed: 1.0,
                expected: None,
                threshold: 0.5,
                unit: "m3/h".into(),
                window_start: t0(),
                window_end: t0(),
                explanation: "x".into(),
            },
            work_order_id: None,
            status_reason: None,
            outcome: None,
            created_at: t0(),
            acknowledged_by: None,
            acknowledged_at: None,
            dismissed_by: None,
            dismissed_at: None,
            resolved_by: None,
            resolved_at: None,
        }
    }

    fn order(oid: i64, kind: WorkOrderKind, priority: Priority, at: GeoPoint) -> WorkOrder {
        WorkOrder {
            id: oid,
            kind,
            priority,
            status: WorkOrderStatus::Created,
            alert_id: None,
            meter_id: Some(MeterId::parse("M-1").unwrap()),
            district_id: None,
            location: at,
            crew_id: None,
            summary: "s".into(),
            created_at: t0() - Duration::minutes(30),
            updated_at: t0() - Duration::minutes(30),
            due_at: None,
            parent_id: None,
            assigned_at: None,
            reached_at: None,
            breached_at: None,
            finding: None,
        }
    }

    fn crew(c: &str, at: GeoPoint) -> CrewView {
        CrewView {
            state: CrewState {
                id: id(c),
                skills: vec!["emergency".into(), "repair".into()],
                on_shift: true,
                position: at,
                current: None,
            },
            source: PositionSource::Home,
        }
    }

    fn travel(to: GeoPoint, secs: &[(&str, f64)]) -> TravelTo {
        TravelTo {
            place: to,
            provider: "test".into(),
            seconds: secs.iter().map(|(c, s)| (id(c), *s)).collect(),
        }
    }

    fn run(cfg: &DispatchConfig, s: &Snapshot, e: Event) -> Result<Vec<Command>, Refusal> {
        let table = LeakClassTable::italian();
        decide(
            Rules {
                cfg,
                leak_table: &table,
            },
            s,
            &e,
            t0(),
        )
    }

    fn escalate() -> Event {
        Event::Escalate {
            actor: "eng".into(),
        }
    }

    fn steps(cmds: &[Command]) -> Vec<&Step> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::Step(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn escalation_claims_creates_links_and_assigns_the_nearest_crew_in_that_order() {
        let cfg = DispatchConfig::default();
        let here = place(43.77, 11.25);
        let mut s = Snapshot {
            alert: Some(alert(1, "M-1", AlertKind::Burst, Severity::Critical)),
            alert_place: Some(here),
            crews: vec![crew("NEAR", here), crew("FAR", place(43.9, 11.5))],
            ..Default::default()
        };
        // Crew choice needs travel times first.
        assert_eq!(run(&cfg, &s, escalate()), Err(Refusal::NeedTravel(here)));
        s.travel = vec![travel(here, &[("NEAR", 300.0), ("FAR", 2400.0)])];
        let cmds = run(&cfg, &s, escalate()).unwrap();
        assert!(matches!(
            &cmds[0],
            Command::SetAlert {
                alert_id: 1,
                from: AlertStatus::Open,
                to: AlertStatus::Escalated,
                order: None,
                ..
            }
        ));
        let Command::CreateOrder(new) = &cmds[1] else {
            panic!("{cmds:?}")
        };
        assert_eq!(
            (new.kind, new.priority),
            (WorkOrderKind::Emergency, Priority::Emergency)
        );
        assert_eq!(new.due_at, Some(t0() + Duration::minutes(60)));
        assert!(matches!(
            &cmds[2],
            Command::SetAlert {
                order: Some(OrderRef::New),
                ..
            }
        ));
        let assign = steps(&cmds)[0];
        assert_eq!(
            (assign.order, assign.crew.clone()),
            (OrderRef::New, Some(id("NEAR")))
        );
        assert!(assign.note.as_deref().unwrap().contains("5 min by test"));
        assert_eq!(
            cmds.last(),
            Some(&Command::Notify {
                crew: id("NEAR"),
                change: JobChange::Assigned,
                order: OrderRef::New
            })
        );
        // An alert escalated already is refused, with nothing written.
        s.alert.as_mut().unwrap().status = AlertStatus::Escalated;
        assert!(matches!(
            run(&cfg, &s, escalate()),
            Err(Refusal::Rejected(_))
        ));
    }

    #[test]
    fn a_known_repair_absorbs_a_new_leak_alert_and_only_an_emergency_upgrades_it() {
        let cfg = DispatchConfig::default();
        let here = place(43.77, 11.25);
        let repair = order(7, WorkOrderKind::Repair, Priority::Normal, here);
        let mut s = Snapshot {
            alert: Some(alert(
                2,
                "M-1",
                AlertKind::ContinuousFlow,
                Severity::Warning,
            )),
            alert_place: Some(here),
            active: vec![repair],
            ..Default::default()
        };
        let cmds = run(&cfg, &s, escalate()).unwrap();
        assert!(
            cmds.iter()
                .all(|c| !matches!(c, Command::CreateOrder(_) | Command::SetPriority { .. }))
        );
        assert!(cmds.iter().any(|c| matches!(c,
            Command::SetAlert { order: Some(OrderRef::Id(7)), reason: Some(r), .. } if r.contains("the leak is known"))));
        // Folded, not confirmed by a visit of its own: a known leak, and the repair's
        // other alerts are left as they are.
        assert!(cmds.contains(&Command::KnownLeak { alert_id: 2 }));
        assert!(!cmds.iter().any(|c| matches!(c, Command::SetOutcome { .. })));
        // A burst there: the repair becomes an emergency (and, waiting, needs a crew).
        s.alert = Some(alert(3, "M-1", AlertKind::Burst, Severity::Critical));
        assert_eq!(run(&cfg, &s, escalate()), Err(Refusal::NeedTravel(here)));
        s.travel = vec![travel(here, &[])];
        let cmds = run(&cfg, &s, escalate()).unwrap();
        assert!(cmds.contains(&Command::SetPriority {
            order: OrderRef::Id(7),
            priority: Priority::Emergency,
            due_at: Some(t0() + Duration::minutes(60)),
        }));
        // Beyond the known magnitude (evidence.known): news, not absorbed.
        let mut grown = alert(5, "M-1", AlertKind::LeakGrowth, Severity::Warning);
        grown.evidence.observed = 3.0;
        grown.evidence.expected = Some(2.0);
        grown.evidence.known = Some(leakwatch_core::Known {
            kind: AlertKind::ContinuousFlow,
            since: t0() - Duration::days(3),
            magnitude: 1.5,
        });
        s.alert = Some(grown.clone());
        let cmds = run(&cfg, &s, escalate()).unwrap();
        assert!(
            cmds.iter().any(|c| matches!(c, Command::CreateOrder(_))),
            "{cmds:?}"
        );
        // Within it: absorbed.
        grown.evidence.observed = 1.9;
        s.alert = Some(grown);
        let cmds = run(&cfg, &s, escalate()).unwrap();
        assert!(
            !cmds.iter().any(|c| matches!(c, Command::CreateOrder(_))),
            "{cmds:?}"
        );
        // Another meter's alert is not absorbed.
        s.alert = Some(alert(
            4,
            "M-2",
            AlertKind::ContinuousFlow,
            Severity::Warning,
        ));
        let cmds = run(&cfg, &s, escalate()).unwrap();
        assert!(cmds.iter().any(|c| matches!(c, Command::CreateOrder(_))));
    }

    #[test]
    fn an_alert_next_door_joins_the_open_order() {
        let cfg = DispatchConfig::default();
        let here = place(43.77, 11.25);
        let mut open = order(9, WorkOrderKind::LeakInvestigation, Priority::High, here);
        open.status = WorkOrderStatus::Assigned;
        open.crew_id = Some(id("A"));
        let s = Snapshot {
            alert: Some(alert(5, "M-2", AlertKind::NightFlowRise, Severity::Warning)),
            alert_place: Some(place(43.7702, 11.2502)),
            active: vec![open],
            ..Default::default()
        };
        let cmds = run(&cfg, &s, escalate()).unwrap();
        assert_eq!(cmds.len(), 2, "{cmds:?}");
        assert!(
            matches!(&cmds[1], Command::SetAlert { order: Some(OrderRef::Id(9)), reason: Some(r), .. } if r == "grouped into work order 9")
        );
    }

    #[test]
    fn auto_escalation_waits_where_a_crew_just_found_nothing() {
        let cfg = DispatchConfig {
            auto_escalate: true,
            ..Default::default()
        };
        let here = place(43.77, 11.25);
        let mut earlier = alert(1, "M-1", AlertKind::ContinuousFlow, Severity::Warning);
        earlier.outcome = Some(AlertOutcome::FalsePositive);
        earlier.created_at = t0() - Duration::days(3);
        let mut s = Snapshot {
            alert: Some(alert(
                2,
                "M-1",
                AlertKind::ContinuousFlow,
                Severity::Warning,
            )),
            alert_place: Some(here),
            false_positives: vec![earlier.clone()],
            travel: vec![travel(here, &[])],
            ..Default::default()
        };
        assert_eq!(run(&cfg, &s, Event::AutoEscalate), Ok(vec![]));
        // Beyond the quiet days it goes again.
        s.false_positives[0].created_at = t0() - Duration::days(15);
        assert!(!run(&cfg, &s, Event::AutoEscalate).unwrap().is_empty());
        // Not a leak kind, or auto-escalation off: nothing.
        s.alert = Some(alert(3, "M-1", AlertKind::Silence, Severity::Warning));
        assert_eq!(run(&cfg, &s, Event::AutoEscalate), Ok(vec![]));
        s.alert = Some(alert(
            2,
            "M-1",
            AlertKind::ContinuousFlow,
            Severity::Warning,
        ));
        assert_eq!(
            run(&DispatchConfig::default(), &s, Event::AutoEscalate),
            Ok(vec![])
        );
        // Below the minimum severity (the demo's `critical`): left to the engineer.
        let critical_only = DispatchConfig {
            auto_escalate_min_severity: Severity::Critical,
            ..cfg.clone()
        };
        assert_eq!(run(&critical_only, &s, Event::AutoEscalate), Ok(vec![]));
        s.alert = Some(alert(4, "M-1", AlertKind::Burst, Severity::Critical));
        assert!(
            !run(&critical_only, &s, Event::AutoEscalate)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_dismissal_can_make_a_suppression_in_the_same_decision() {
        let cfg = DispatchConfig::default();
        let mut a = alert(2, "M-1", AlertKind::ContinuousFlow, Severity::Warning);
        a.district_id = Some(DistrictId::parse("D1").unwrap());
        a.evidence.observed = 0.04;
        let s = Snapshot {
            alert: Some(a.clone()),
            ..Default::default()
        };
        let req = |scope: Option<&str>, margin: Option<f64>, until| SuppressRequest {
            scope: scope.map(str::to_owned),
            until,
            margin,
        };
        let ev = |r| Event::DismissSuppressing {
            reason: "pilot light".into(),
            suppress: r,
        };
        let cmds = run(&cfg, &s, ev(req(None, None, None))).unwrap();
        assert!(matches!(
            &cmds[0],
            Command::SetAlert {
                to: AlertStatus::Dismissed,
                ..
            }
        ));
        let Command::Suppress(n) = &cmds[1] else {
            panic!("{cmds:?}")
        };
        assert_eq!(
            n.scope,
            SuppressionScope::Meter(MeterId::parse("M-1").unwrap())
        );
        assert_eq!((n.observed, n.margin, n.alert_id), (0.04, 0.25, 2));
        let cmds = run(&cfg, &s, ev(req(Some("district"), Some(1.0), None))).unwrap();
        assert!(matches!(&cmds[1], Command::Suppress(n)
            if n.scope == SuppressionScope::District(DistrictId::parse("D1").unwrap()) && n.margin == 1.0));
        // Refused, nothing written: a bad scope, margin, or a date before the detection.
        for bad in [
            req(Some("street"), None, None),
            req(None, Some(-0.1), None),
            req(None, Some(f64::NAN), None),
            req(None, None, Some(a.detected_at - Duration::hours(1))),
        ] {
            assert!(matches!(run(&cfg, &s, ev(bad)), Err(Refusal::Invalid(_))));
        }
        // An alert dismissed already cannot be dismissed again.
        let mut done = s.clone();
        done.alert.as_mut().unwrap().status = AlertStatus::Dismissed;
        assert!(run(&cfg, &done, ev(req(None, None, None))).is_err());
    }

    fn complete(finding: Option<SiteFinding>) -> Event {
        Event::Transition {
            action: OrderAction::Complete {
                notes: None,
                finding,
            },
            actor: "A".into(),
            position: None,
        }
    }

    #[test]
    fn completing_a_leak_job_needs_a_finding_and_an_unrepaired_leak_gets_its_follow_up() {
        let cfg = DispatchConfig::default();
        let here = place(43.77, 11.25);
        let mut o = order(11, WorkOrderKind::LeakInvestigation, Priority::High, here);
        o.status = WorkOrderStatus::OnSite;
        o.crew_id = Some(id("A"));
        o.alert_id = Some(1);
        let mut a = alert(1, "M-1", AlertKind::ContinuousFlow, Severity::Warning);
        a.status = AlertStatus::Escalated;
        a.work_order_id = Some(11);
        let s = Snapshot {
            order: Some(o),
            order_alerts: vec![a],
            crews: vec![crew("A", here)],
            travel: vec![travel(here, &[("A", 60.0)])],
            ..Default::default()
        };
        assert!(
            matches!(run(&cfg, &s, complete(None)), Err(Refusal::Invalid(m)) if m.contains("needs the crew's finding"))
        );
        let bad = SiteFinding {
            leak_found: true,
            leak_class: Some("Z9".into()),
            gas_readings: vec![],
            repaired: false,
            notes: String::new(),
        };
        assert!(matches!(
            run(&cfg, &s, complete(Some(bad))),
            Err(Refusal::Invalid(_))
        ));
        let b = SiteFinding {
            leak_class: Some("B".into()),
            ..SiteFinding {
                leak_found: true,
                leak_class: None,
                gas_readings: vec![],
                repaired: false,
                notes: "joint".into(),
            }
        };
        let cmds = run(&cfg, &s, complete(Some(b))).unwrap();
        assert_eq!(steps(&cmds)[0].to, WorkOrderStatus::Completed);
        assert!(cmds.iter().any(|c| matches!(
            c,
            Command::SetAlert {
                alert_id: 1,
                to: AlertStatus::Resolved,
                ..
            }
        )));
        assert!(cmds.contains(&Command::SetOutcome {
            order: OrderRef::Id(11),
            outcome: AlertOutcome::ConfirmedLeak
        }));
        let Some(Command::CreateOrder(f)) =
            cmds.iter().find(|c| matches!(c, Command::CreateOrder(_)))
        else {
            panic!("{cmds:?}")
        };
        assert_eq!(
            (f.kind, f.parent_id, f.alert_id),
            (WorkOrderKind::Repair, Some(11), Some(1))
        );
        assert!(f.summary.contains("class B") && f.summary.contains("(joint)"));
        assert_eq!(
            f.priority,
            follow_up_priority(
                LeakClassTable::italian()
                    .get("B")
                    .and_then(|c| c.repair_within_h)
            )
        );
        assert_eq!(
            [Some(0), Some(24), Some(25), None].map(follow_up_priority),
            [
                Priority::Emergency,
                Priority::High,
                Priority::Normal,
                Priority::Low
            ]
        );
    }

    #[test]
    fn a_timed_out_crew_is_never_asked_again_and_the_step_says_why() {
        let cfg = DispatchConfig {
            accept_within_s: 60,
            ..Default::default()
        };
        let here = place(43.77, 11.25);
        let mut o = order(12, WorkOrderKind::Emergency, Priority::Emergency, here);
        o.status = WorkOrderStatus::Assigned;
        o.crew_id = Some(id("B"));
        o.assigned_at = Some(t0() - Duration::seconds(61));
        let s = Snapshot {
            order: Some(o.clone()),
            crews: vec![crew("A", here), crew("B", here)],
            timed_out: vec![id("A")],
            travel: vec![travel(here, &[("A", 10.0), ("B", 10.0)])],
            ..Default::default()
        };
        let cmds = run(&cfg, &s, Event::AcceptanceTimeout).unwrap();
        let st = steps(&cmds);
        assert_eq!(
            st.len(),
            1,
            "A timed out before, B now: nobody left: {cmds:?}"
        );
        assert_eq!(
            (st[0].cause, st[0].crew.clone()),
            (Some(Cause::AcceptanceTimeout), Some(id("B")))
        );
        // Still within the minute: nothing.
        let mut fresh = s.clone();
        fresh.order.as_mut().unwrap().assigned_at = Some(t0() - Duration::seconds(30));
        assert_eq!(run(&cfg, &fresh, Event::AcceptanceTimeout), Ok(vec![]));
    }

    #[test]
    fn a_breach_is_flagged_once_and_a_plan_assigns_only_waiting_orders() {
        let cfg = DispatchConfig::default();
        let here = place(43.77, 11.25);
        let mut late = order(13, WorkOrderKind::MeterCheck, Priority::Normal, here);
        late.due_at = Some(t0() - Duration::minutes(1));
        let mut s = Snapshot {
            order: Some(late.clone()),
            ..Default::default()
        };
        assert_eq!(
            run(&cfg, &s, Event::CheckDeadline),
            Ok(vec![Command::MarkBreached {
                order: OrderRef::Id(13)
            }])
        );
        s.order.as_mut().unwrap().breached_at = Some(t0());
        assert_eq!(run(&cfg, &s, Event::CheckDeadline), Ok(vec![]));

        let mut taken = order(14, WorkOrderKind::Repair, Priority::Normal, here);
        taken.status = WorkOrderStatus::Assigned;
        let s = Snapshot {
            active: vec![late, taken],
            crews: vec![crew("R", here)],
            ..Default::default()
        };
        let stop = |o| PlanStop {
            order_id: o,
            crew_id: id("R"),
            note: "stop".into(),
        };
        let cmds = run(
            &cfg,
            &s,
            Event::ApplyPlan(vec![stop(13), stop(14), stop(99)]),
        )
        .unwrap();
        let st = steps(&cmds);
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].order, OrderRef::Id(13));
    }

    #[test]
    fn reconciliation_links_resolves_or_finishes_a_half_done_escalation() {
        let cfg = DispatchConfig::default();
        let here = place(43.77, 11.25);
        let mut a = alert(20, "M-1", AlertKind::ContinuousFlow, Severity::Warning);
        a.status = AlertStatus::Escalated;
        let mut made = order(21, WorkOrderKind::LeakInvestigation, Priority::High, here);
        made.alert_id = Some(20);
        let mut s = Snapshot {
            alert: Some(a.clone()),
            alert_place: Some(here),
            order: Some(made.clone()),
            travel: vec![travel(here, &[])],
            ..Default::default()
        };
        let cmds = run(&cfg, &s, Event::Reconcile).unwrap();
        assert!(matches!(
            &cmds[..],
            [Command::SetAlert {
                to: AlertStatus::Escalated,
                order: Some(OrderRef::Id(21)),
                ..
            }]
        ));
        // Its order ended: resolved.
        s.alert.as_mut().unwrap().work_order_id = Some(21);
        s.order.as_mut().unwrap().status = WorkOrderStatus::Completed;
        let cmds = run(&cfg, &s, Event::Reconcile).unwrap();
        assert!(matches!(
            &cmds[..],
            [Command::SetAlert {
                to: AlertStatus::Resolved,
                ..
            }]
        ));
        // Claimed and nothing else: escalated again, without a second claim.
        s.alert = Some(a);
        s.order = None;
        let cmds = run(&cfg, &s, Event::Reconcile).unwrap();
        assert!(matches!(&cmds[0], Command::CreateOrder(_)));
        assert!(!cmds.iter().any(|c| matches!(
            c,
            Command::SetAlert {
                from: AlertStatus::Open,
                ..
            }
        )));
    }
}
