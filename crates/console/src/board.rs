//! The dispatcher's board: work orders by status with each deadline as a clock time
//! and a countdown (breaches highlighted), the crews with status, shift and
//! position; assign, reassign, cancel, create by hand; the day plan on demand and
//! at a configured time each day ([`run_daily_plan`]).

use crate::{
    Console, PageError, Shared, Viewer, check_csrf, clock, duration_words, local, page, require,
};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{Duration, Utc};
use leakwatch_api::AppState;
use leakwatch_api::auth::Role;
use leakwatch_core::{
    CrewId, GeoPoint, OrderAction, Priority, WorkOrder, WorkOrderKind, WorkOrderStatus, limits,
};
use leakwatch_dispatch::Dispatcher;
use leakwatch_store::{NewWorkOrder, WorkOrderQuery};
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/board", get(board))
        .route("/console/orders", post(create))
        .route("/console/orders/{id}/assign", post(assign))
        .route("/console/orders/{id}/cancel", post(cancel))
        .route("/console/plan", post(plan))
}

const VIEW: &[Role] = &[Role::Dispatcher, Role::Engineer];
const DISPATCH: &[Role] = &[Role::Dispatcher];

#[derive(Debug, Default, Deserialize)]
struct BoardQuery {
    /// A message to show (after an action).
    #[serde(default)]
    msg: String,
    /// Also show orders completed or cancelled in the last N days.
    #[serde(default)]
    done_days: Option<i64>,
    /// Only this crew's orders.
    #[serde(default)]
    crew: String,
}

fn deadline_cell(c: &Console, o: &WorkOrder, now: chrono::DateTime<Utc>) -> Markup {
    match o.deadline(now) {
        None => html! { span class="muted" { "no deadline" } },
        Some(d) => html! {
            span class={"deadline" @if d.breached { " breached" }} data-due=(d.due_at.to_rfc3339()) {
                (d.measures) " by " strong { (clock(c, d.due_at)) } " · "
                span class="countdown" {
                    @if d.met_at.is_some() { "met" @if d.breached { " late" } }
                    @else if d.breached { "late by " (duration_words(d.minutes_left)) }
                    @else { "in " (duration_words(d.minutes_left)) }
                }
            }
        },
    }
}

async fn board(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    axum::Extension(c): Shared,
    Query(q): Query<BoardQuery>,
) -> Result<Markup, PageError> {
    require(&p, VIEW, "see the board")?;
    let now = Utc::now();
    let mut orders = s.store.active_work_orders().await?;
    let done_days = q.done_days.unwrap_or(1).clamp(0, 90);
    for st in [
        WorkOrderStatus::Completed,
        WorkOrderStatus::Cancelled,
        WorkOrderStatus::UnableToComplete,
    ] {
        orders.extend(
            s.store
                .list_work_orders(&WorkOrderQuery {
                    status: Some(st),
                    limit: 100,
                    ..WorkOrderQuery::default()
                })
                .await?
                .into_iter()
                .filter(|o| o.updated_at > now - Duration::days(done_days)),
        );
    }
    if !q.crew.is_empty() {
        orders.retain(|o| o.crew_id.as_ref().is_some_and(|c| c.as_str() == q.crew));
    }
    let crews = s.store.list_crews().await?;
    let may_dispatch = p.role == Role::Admin || DISPATCH.contains(&p.role);
    let csrf = p.csrf_token().unwrap_or_default().to_owned();
    let columns = [
        ("waiting", vec![WorkOrderStatus::Created]),
        ("assigned", vec![WorkOrderStatus::Assigned]),
        ("accepted", vec![WorkOrderStatus::Accepted]),
        (
            "en route / on site",
            vec![WorkOrderStatus::EnRoute, WorkOrderStatus::OnSite],
        ),
        (
            "done",
            vec![
                WorkOrderStatus::Completed,
                WorkOrderStatus::Cancelled,
                WorkOrderStatus::UnableToComplete,
            ],
        ),
    ];
    let breached = orders
        .iter()
        .filter(|o| o.deadline(now).is_some_and(|d| d.breached) && !o.status.is_final())
        .count();
    let body = html! {
        h1 { "Dispatch board" }
        @if !q.msg.is_empty() { p #flash class="flash" { (q.msg) } }
        p class="meta" { (orders.len()) " orders shown · " strong class=[(breached > 0).then_some("breached")] { (breached) " past deadline" }
            " · times in " (c.cfg.time_zone.name()) " · now " (clock(&c, now))
            @if let Some(t) = c.cfg.plan_at { " · the day plan is made each day at " (t.format("%H:%M")) } }
        form method="get" action="/console/board" class="filters" {
            label { "Crew " select name="crew" { option value="" { "all" }
                @for r in &crews { option value=(r.crew.id) selected[q.crew == r.crew.id.as_str()] { (r.crew.id) } } } }
            label { "Done in the last " input name="done_days" type="number" min="0" max="90" value=(done_days) size="3"; " days" }
            button type="submit" { "Show" }
        }
        div class="board" {
            @for (name, statuses) in &columns {
                section class="column" data-column=(name) {
                    h2 { (name) " (" (orders.iter().filter(|o| statuses.contains(&o.status)).count()) ")" }
                    @for o in orders.iter().filter(|o| statuses.contains(&o.status)) {
                        article class={"order prio-" (o.priority.as_str()) @if o.deadline(now).is_some_and(|d| d.breached) && !o.status.is_final() { " breached" }}
                            id={"order-" (o.id)} data-status=(o.status.as_str()) data-crew=(o.crew_id.as_ref().map(|c| c.as_str()).unwrap_or("")) {
                            header { strong { "#" (o.id) } " " (o.kind.as_str()) " · " (o.priority.as_str()) }
                            p { (o.summary) }
                            p class="small" {
                                "status " span class="status" { (o.status.as_str()) }
                                " · crew " span class="crew" { (o.crew_id.as_ref().map(|c| c.to_string()).unwrap_or_else(|| "none".into())) }
                                @if let Some(a) = o.alert_id { " · " a href={"/console/alerts/" (a)} { "alert " (a) } }
                            }
                            p class="small" { (deadline_cell(&c, o, now)) }
                            @if may_dispatch && !o.status.is_final() {
                                form method="post" action={"/console/orders/" (o.id) "/assign"} class="inline assign" {
                                    input type="hidden" name="_csrf" value=(csrf);
                                    select name="crew_id" {
                                        @for r in &crews {
                                            option value=(r.crew.id) selected[o.crew_id.as_ref() == Some(&r.crew.id)] {
                                                (r.crew.id) " (" (format!("{:?}", r.status()).to_lowercase()) ")" }
                                        }
                                    }
                                    button type="submit" class="assign-button" { @if o.crew_id.is_some() { "Reassign" } @else { "Assign" } }
                                }
                                form method="post" action={"/console/orders/" (o.id) "/cancel"} class="inline cancel" {
                                    input type="hidden" name="_csrf" value=(csrf);
                                    input name="reason" required placeholder="reason" size="10";
                                    button type="submit" { "Cancel" }
                                }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Crews" }
            table #crews { thead { tr { th { "crew" } th { "status" } th { "shift" } th { "skills" } th { "position" } th { "current job" } } }
                tbody { @for r in &crews { tr {
                    td { (r.crew.id) " " (r.crew.name) }
                    td { (format!("{:?}", r.status_at(now)).to_lowercase()) }
                    td { @if r.crew.on_shift_at(now) { "on shift" } @else { "off shift" } }
                    td { (r.crew.skills.join(", ")) }
                    td { @match (r.crew.position, r.crew.position_at) {
                        (Some(pos), Some(at)) => { (format!("{:.4}, {:.4}", pos.lat, pos.lon)) " at " (local(&c, at)) }
                        _ => { "home " (format!("{:.4}, {:.4}", r.crew.home.lat, r.crew.home.lon)) }
                    } }
                    td { @if let Some(cur) = &r.current { "#" (cur.order_id) " " (cur.status.as_str()) } }
                } } }
            }
        }
        @if may_dispatch {
            section class="two" {
                div {
                    h2 { "Day plan" }
                    form method="post" action="/console/plan" {
                        input type="hidden" name="_csrf" value=(csrf);
                        button #plan-now type="submit" { "Plan today from now" }
                    }
                    p class="hint" { "Plans the waiting non-urgent orders for the crews on shift, from now on; what cannot be planned is listed with its reason." }
                }
                div {
                    h2 { "New order" }
                    form #new-order method="post" action="/console/orders" class="stack" {
                        input type="hidden" name="_csrf" value=(csrf);
                        label { "Kind " select name="kind" { @for k in [WorkOrderKind::PlannedInspection, WorkOrderKind::MeterCheck, WorkOrderKind::Repair, WorkOrderKind::LeakInvestigation, WorkOrderKind::Emergency] { option value=(k.as_str()) { (k.as_str()) } } } }
                        label { "Priority " select name="priority" { @for pr in [Priority::Normal, Priority::Low, Priority::High, Priority::Emergency] { option value=(pr.as_str()) { (pr.as_str()) } } } }
                        label { "Latitude " input name="lat" required inputmode="decimal" size="10"; }
                        label { "Longitude " input name="lon" required inputmode="decimal" size="10"; }
                        label { "Meter (optional) " input name="meter_id" size="12"; }
                        label { "What to do " input name="summary" required size="30"; }
                        button type="submit" { "Create" }
                    }
                }
            }
        }
    };
    Ok(page(&p, "Dispatch board", "board", body))
}

fn back(msg: &str) -> Response {
    Redirect::to(&format!("/console/board?msg={}", crate::url_encode(msg))).into_response()
}

#[derive(Debug, Deserialize)]
struct AssignForm {
    #[serde(default)]
    _csrf: String,
    crew_id: String,
}

async fn assign(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<AssignForm>,
) -> Result<Response, PageError> {
    require(&p, DISPATCH, "assign work orders")?;
    check_csrf(&p, &headers, Some(&f._csrf))?;
    let crew_id = CrewId::parse(&f.crew_id)
        .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let before = s.store.get_work_order(id).await?;
    let o = s
        .dispatcher
        .transition(id, OrderAction::Assign { crew_id }, p.actor(), None)
        .await?;
    let verb = if before.and_then(|b| b.crew_id).is_some() {
        "reassigned"
    } else {
        "assigned"
    };
    Ok(back(&format!(
        "Order #{} {verb} to crew {}.",
        o.id,
        o.crew_id.map(|c| c.to_string()).unwrap_or_default()
    )))
}

#[derive(Debug, Deserialize)]
struct CancelForm {
    #[serde(default)]
    _csrf: String,
    reason: String,
}

async fn cancel(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<CancelForm>,
) -> Result<Response, PageError> {
    require(&p, DISPATCH, "cancel work orders")?;
    check_csrf(&p, &headers, Some(&f._csrf))?;
    limits::check("reason", &f.reason, limits::REASON_MAX)
        .map_err(|e| PageError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    s.dispatcher
        .transition(
            id,
            OrderAction::Cancel { reason: f.reason },
            p.actor(),
            None,
        )
        .await?;
    Ok(back(&format!("Order #{id} cancelled.")))
}

#[derive(Debug, Deserialize)]
struct NewOrderForm {
    #[serde(default)]
    _csrf: String,
    kind: WorkOrderKind,
    priority: Priority,
    lat: f64,
    lon: f64,
    #[serde(default)]
    meter_id: String,
    summary: String,
}

async fn create(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<NewOrderForm>,
) -> Result<Response, PageError> {
    require(&p, DISPATCH, "create work orders")?;
    check_csrf(&p, &headers, Some(&f._csrf))?;
    let bad = |m: String| PageError::new(StatusCode::UNPROCESSABLE_ENTITY, m);
    let location = GeoPoint::new(f.lat, f.lon).map_err(|e| bad(format!("location: {e}")))?;
    if f.summary.trim().is_empty() {
        return Err(bad("say what to do".into()));
    }
    limits::check("summary", &f.summary, limits::SUMMARY_MAX).map_err(|e| bad(e.to_string()))?;
    let (meter_id, district_id) = if f.meter_id.trim().is_empty() {
        (None, None)
    } else {
        let m =
            leakwatch_core::MeterId::parse(f.meter_id.trim()).map_err(|e| bad(e.to_string()))?;
        let meter = s
            .store
            .get_meter(&m)
            .await?
            .ok_or_else(|| bad(format!("meter {m} is not in the registry")))?;
        (Some(m), Some(meter.district))
    };
    let o = s
        .dispatcher
        .create(&NewWorkOrder {
            kind: f.kind,
            priority: f.priority,
            alert_id: None,
            meter_id,
            district_id,
            location,
            summary: f.summary.trim().to_owned(),
            due_at: None,
            actor: p.actor().to_owned(),
            parent_id: None,
        })
        .await?;
    Ok(back(&format!("Order #{} created.", o.id)))
}

/// The local date of `now` in the utility's zone.
fn today(c: &Console) -> chrono::NaiveDate {
    Utc::now().with_timezone(&c.cfg.time_zone).date_naive()
}

/// The plan in words for the board's message line.
fn plan_words(plan: &leakwatch_dispatch::plan::DayPlan, c: &Console) -> String {
    let mut s = format!(
        "Day plan for today: {} stop(s) on {} crew(s)",
        plan.routes.iter().map(|r| r.stops.len()).sum::<usize>(),
        plan.routes.len()
    );
    for r in &plan.routes {
        let stops: Vec<String> = r
            .stops
            .iter()
            .map(|st| format!("#{} at {}", st.order_id, clock(c, st.arrival)))
            .collect();
        s += &format!("; crew {}: {}", r.crew_id, stops.join(", "));
    }
    if plan.unplanned.is_empty() {
        s.push('.');
    } else {
        s += ". Not planned: ";
        let why: Vec<String> = plan
            .unplanned
            .iter()
            .map(|u| format!("#{} ({})", u.order_id, u.reason))
            .collect();
        s += &why.join("; ");
        s.push('.');
    }
    s
}

#[derive(Debug, Deserialize)]
struct PlanForm {
    #[serde(default)]
    _csrf: String,
}

async fn plan(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    axum::Extension(c): Shared,
    headers: HeaderMap,
    Form(f): Form<PlanForm>,
) -> Result<Response, PageError> {
    require(&p, DISPATCH, "plan the day")?;
    check_csrf(&p, &headers, Some(&f._csrf))?;
    let plan = s.dispatcher.plan_day(today(&c), true).await?;
    Ok(back(&plan_words(&plan, &c)))
}

/// Makes and applies the day plan every day at `console.plan_at` (local time), until
/// `shutdown`. Nothing when no time is configured.
pub async fn run_daily_plan(
    dispatcher: Dispatcher,
    console: Arc<Console>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let Some(at) = console.cfg.plan_at else {
        return;
    };
    tokio::pin!(shutdown);
    loop {
        let wait = until_next(Utc::now(), at, console.cfg.time_zone);
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match dispatcher.plan_day(today(&console), true).await {
            Ok(plan) => tracing::info!(plan = %plan_words(&plan, &console), "daily plan made"),
            Err(e) => tracing::warn!(error = %e, "daily plan failed"),
        }
    }
}

/// How long from `now` to the next `at` (local time in `tz`).
pub fn until_next(
    now: chrono::DateTime<Utc>,
    at: chrono::NaiveTime,
    tz: chrono_tz::Tz,
) -> std::time::Duration {
    let local = now.with_timezone(&tz);
    for days in 0..3 {
        let date = local.date_naive() + Duration::days(days);
        if let Some(t) = date.and_time(at).and_local_timezone(tz).earliest() {
            let t = t.with_timezone(&Utc);
            if t > now {
                return (t - now).to_std().unwrap_or_default();
            }
        }
    }
    std::time::Duration::from_secs(24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daily_plan_waits_for_the_next_local_time() {
        let tz = chrono_tz::Europe::Rome;
        let at = chrono::NaiveTime::from_hms_opt(6, 30, 0).unwrap();
        // 05:00 UTC is 06:00 in Rome in winter: 30 minutes to go.
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T05:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(until_next(now, at, tz).as_secs(), 30 * 60);
        // Just after: tomorrow.
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T05:31:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(until_next(now, at, tz).as_secs(), 24 * 3600 - 60);
    }
}
