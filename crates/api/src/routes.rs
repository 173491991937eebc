//! The REST routes under `/api/v1`, and the health routes.

use crate::auth::{Principal, Role};
use crate::authz;
use crate::extract::{Body, Params, PathOf};
use crate::{ApiError, AppState};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use leakwatch_core::limits;
use leakwatch_core::{
    Alert, AlertAction, AlertKind, AlertStatus, Crew, CrewId, DeadlineView, GeoPoint, MeterId,
    MeterRecord, OrderAction, Priority, Timestamp, WorkOrder, WorkOrderKind, WorkOrderStatus,
};
use leakwatch_store::{AlertQuery, NewWorkOrder, WorkOrderQuery};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const MAX_LIMIT: u32 = 1000;
const DEFAULT_LIMIT: u32 = 100;

pub fn health() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Registers the API routes and lists them in [`API_ROUTES`] from one text, so the
/// list the authorization test walks is the router's own.
macro_rules! api_routes {
    ($($path:literal => $first:ident($h:path) $(. $m:ident($h2:path))*;)*) => {
        pub fn api() -> Router<AppState> {
            Router::new()$(.route($path, $first($h)$(.$m($h2))*))*
        }

        /// Every API route template and its methods, as [`api`] registers them.
        pub const API_ROUTES: &[(&str, &[&str])] =
            &[$(($path, &[stringify!($first) $(, stringify!($m))*])),*];
    };
}

api_routes! {
    "/api/v1/me" => get(crate::authn::me);
    "/api/v1/meters" => get(list_meters).post(post_meters);
    "/api/v1/meters/{id}" => get(get_meter);
    "/api/v1/meters/{id}/readings" => get(meter_readings);
    "/api/v1/meters/{id}/learning" => get(meter_learning);
    "/api/v1/alerts" => get(list_alerts);
    "/api/v1/alerts/{id}" => get(get_alert);
    "/api/v1/alerts/{id}/acknowledge" => post(acknowledge);
    "/api/v1/alerts/{id}/dismiss" => post(dismiss);
    "/api/v1/alerts/{id}/resolve" => post(resolve);
    "/api/v1/alerts/{id}/escalate" => post(escalate);
    "/api/v1/alerts/outcomes" => get(alert_outcomes);
    "/api/v1/suppressions" => get(list_suppressions);
    "/api/v1/suppressions/{id}/revoke" => post(revoke_suppression);
    "/api/v1/work-orders" => get(list_work_orders).post(create_work_order);
    "/api/v1/work-orders/{id}" => get(get_work_order);
    "/api/v1/work-orders/{id}/transition" => post(transition);
    "/api/v1/crews" => get(list_crews).post(post_crews);
    "/api/v1/crews/{id}/jobs" => get(crew_jobs);
    "/api/v1/crews/{id}/location" => post(crew_location);
    "/api/v1/plans" => post(day_plan);
    "/api/v1/deadlines" => get(deadlines);
    "/api/v1/leak-classes" => get(leak_classes);
    "/api/v1/dead-letters" => get(dead_letters);
    "/api/v1/detection" => get(detection);
    "/api/v1/network/segments" => get(crate::survey::segments);
    "/api/v1/survey/program" => get(crate::survey::program);
    "/api/v1/survey/coverage" => get(crate::survey::coverage);
    "/api/v1/survey/coverage.csv" => get(crate::survey::coverage_csv);
    "/api/v1/survey/leak-rates" => get(crate::survey::leak_rates);
    "/api/v1/survey/orders" => post(crate::survey::plan_orders);
    "/api/v1/survey/orders/{id}" => get(crate::survey::order_segments);
    "/api/v1/survey/orders/{id}/report" => post(crate::survey::report_order);
    "/api/v1/openapi.json" => get(openapi);
    "/api/v1/accounts" => get(crate::accounts::get_accounts).post(crate::accounts::post_account);
    "/api/v1/accounts/{name}/password" => post(crate::accounts::post_password);
    "/api/v1/accounts/{name}/disable" => post(crate::accounts::post_disable);
    "/api/v1/accounts/{name}/enable" => post(crate::accounts::post_enable);
    "/api/v1/tokens" => get(crate::accounts::get_tokens).post(crate::accounts::post_token);
    "/api/v1/tokens/{name}/revoke" => post(crate::accounts::post_revoke);
    "/api/v1/auth-audit" => get(crate::accounts::get_audit);
}

/// The OpenAPI document, made from this list ([`crate::openapi`]).
async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

/// The detectors' progress: their watermark (event time "now"), readings and events
/// processed since start, meters with state, checkpoints written.
async fn detection(State(s): State<AppState>) -> Json<Value> {
    Json(s.detection.to_json())
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let store = s.store.ping().await;
    let broker = (s.broker_up)();
    let crews = (s.crews_up)();
    let ready = store.is_ok() && broker && crews;
    let body = json!({
        "ready": ready,
        "store": { "backend": s.store.backend(), "ok": store.is_ok(),
                   "error": store.err().map(|e| e.to_string()) },
        "broker": { "ok": broker },
        "crews": { "ok": crews },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if !s.auth.metrics_allowed(&headers) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "/metrics needs Authorization: Bearer <auth.metrics_token>",
        )
        .into_response();
    }
    let text = s.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// A page of a list, with the cursor of the next page when there may be one.
#[derive(Serialize)]
struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

fn limit(l: Option<u32>) -> Result<u32, ApiError> {
    match l.unwrap_or(DEFAULT_LIMIT) {
        0 => Err(ApiError::bad_request("limit must be at least 1")),
        n if n > MAX_LIMIT => Err(ApiError::bad_request(format!(
            "limit {n} is above the maximum of {MAX_LIMIT}"
        ))),
        n => Ok(n),
    }
}

fn meter_id(raw: &str) -> Result<MeterId, ApiError> {
    MeterId::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn crew_id(raw: &str) -> Result<CrewId, ApiError> {
    CrewId::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn cursor_id(raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    raw.map(|c| {
        c.parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("cursor {c:?} is not one this API gave")))
    })
    .transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MeterList {
    cursor: Option<String>,
    limit: Option<u32>,
}

async fn list_meters(
    State(s): State<AppState>,
    Params(q): Params<MeterList>,
) -> Result<Json<Page<MeterRecord>>, ApiError> {
    let limit = limit(q.limit)?;
    let after = q.cursor.as_deref().map(meter_id).transpose()?;
    let meters = s.store.list_meters(after.as_ref(), limit).await?;
    let next_cursor = (meters.len() as u32 == limit)
        .then(|| meters.last().map(|m| m.id.to_string()))
        .flatten();
    Ok(Json(Page {
        items: meters.iter().map(MeterRecord::from).collect(),
        next_cursor,
    }))
}

async fn post_meters(
    State(s): State<AppState>,
    Body(records): Body<Vec<MeterRecord>>,
) -> Result<impl IntoResponse, ApiError> {
    if records.is_empty() {
        return Err(ApiError::bad_request("the array of meters is empty"));
    }
    let mut meters = Vec::with_capacity(records.len());
    let mut errors = Vec::new();
    for (i, r) in records.iter().enumerate() {
        match r.to_meter() {
            Ok(m) => meters.push(m),
            Err(e) => errors.push(format!("[{i}] {}: {e}", r.meter_id)),
        }
    }
    if !errors.is_empty() {
        // Nothing is stored when any record is wrong: fix the file and send it again.
        let shown: Vec<_> = errors.iter().take(20).cloned().collect();
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{} of {} meters are invalid, none stored: {}",
                errors.len(),
                records.len(),
                shown.join("; ")
            ),
        ));
    }
    let n = s.store.upsert_meters(&meters).await?;
    Ok((StatusCode::OK, Json(json!({ "upserted": n }))))
}

async fn get_meter(
    State(s): State<AppState>,
    PathOf(id): PathOf<String>,
) -> Result<Json<MeterRecord>, ApiError> {
    let id = meter_id(&id)?;
    let m = s
        .store
        .get_meter(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("meter {id} is not in the registry")))?;
    Ok(Json(MeterRecord::from(&m)))
}

/// Where a meter is in learning its own pattern, from the running detectors.
async fn meter_learning(
    State(s): State<AppState>,
    PathOf(id): PathOf<String>,
) -> Result<Json<Value>, ApiError> {
    let id = meter_id(&id)?;
    if s.store.get_meter(&id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "meter {id} is not in the registry"
        )));
    }
    let answer = s
        .detection
        .ask_learning(id.clone(), std::time::Duration::from_secs(5))
        .await
        .map_err(|why| ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, why))?;
    Ok(Json(answer.unwrap_or_else(
        || json!({ "meter_id": id, "state": "no_readings" }),
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Range {
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct ReadingOut {
    t: Timestamp,
    vol: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    temp: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flow_max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pressure: Option<f64>,
}

async fn meter_readings(
    State(s): State<AppState>,
    PathOf(id): PathOf<String>,
    Params(q): Params<Range>,
) -> Result<Json<Vec<ReadingOut>>, ApiError> {
    let id = meter_id(&id)?;
    if let (Some(f), Some(t)) = (q.from, q.to)
        && f > t
    {
        return Err(ApiError::bad_request("from is after to"));
    }
    if s.store.get_meter(&id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "meter {id} is not in the registry"
        )));
    }
    let limit = q.limit.unwrap_or(MAX_LIMIT * 10).min(MAX_LIMIT * 10);
    let rows = s.store.readings(&id, q.from, q.to, limit).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| ReadingOut {
                t: r.t,
                vol: r.vol,
                temp: r.temp,
                flow_max: r.flow_max,
                pressure: r.pressure,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertList {
    status: Option<AlertStatus>,
    kind: Option<AlertKind>,
    since: Option<Timestamp>,
    meter_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_alerts(
    State(s): State<AppState>,
    Params(q): Params<AlertList>,
) -> Result<Json<Page<Alert>>, ApiError> {
    let limit = limit(q.limit)?;
    let query = AlertQuery {
        status: q.status,
        kind: q.kind,
        since: q.since,
        meter_id: q.meter_id.as_deref().map(meter_id).transpose()?,
        limit,
        cursor: cursor_id(q.cursor.as_deref())?,
    };
    let items = s.store.list_alerts(&query).await?;
    let next_cursor = (items.len() as u32 == limit)
        .then(|| items.last().map(|a| a.id.to_string()))
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}

async fn get_alert(
    State(s): State<AppState>,
    PathOf(id): PathOf<i64>,
) -> Result<Json<Alert>, ApiError> {
    s.store
        .get_alert(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("alert {id} does not exist")))
}

async fn acknowledge(
    State(s): State<AppState>,
    who: Principal,
    PathOf(id): PathOf<i64>,
) -> Result<Json<Alert>, ApiError> {
    Ok(Json(
        s.dispatcher
            .review(id, &AlertAction::Acknowledge, who.actor())
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reason {
    reason: String,
    /// Also suppress new alerts of this kind on this meter (or district): see
    /// [`leakwatch_core::SuppressRequest`].
    #[serde(default)]
    suppress: Option<leakwatch_core::SuppressRequest>,
}

/// Dismisses an alert; with `suppress`, also makes a suppression in the same
/// transaction and answers `{"alert", "suppression"}` (the alert alone otherwise).
async fn dismiss(
    State(s): State<AppState>,
    who: Principal,
    PathOf(id): PathOf<i64>,
    Body(r): Body<Reason>,
) -> Result<Json<Value>, ApiError> {
    let action = AlertAction::Dismiss {
        reason: r.reason.clone(),
    };
    limits::check_alert_action(&action).map_err(too_long)?;
    match &r.suppress {
        None => Ok(Json(json!(
            s.dispatcher.review(id, &action, who.actor()).await?
        ))),
        Some(req) => {
            let (alert, suppression) = s
                .dispatcher
                .dismiss_suppressing(id, &r.reason, req, who.actor())
                .await?;
            Ok(Json(json!({ "alert": alert, "suppression": suppression })))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuppressionList {
    /// `true` (default): only those still holding; `false`: all.
    active: Option<bool>,
    limit: Option<u32>,
}

/// Suppressions, newest first: `{"items", "next_cursor": null}`.
async fn list_suppressions(
    State(s): State<AppState>,
    Params(q): Params<SuppressionList>,
) -> Result<Json<Page<leakwatch_core::Suppression>>, ApiError> {
    let items = s
        .store
        .list_suppressions(q.active.unwrap_or(true), limit(q.limit)?)
        .await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Ends a suppression by hand (409 when it has ended already).
async fn revoke_suppression(
    State(s): State<AppState>,
    who: Principal,
    PathOf(id): PathOf<i64>,
) -> Result<Json<leakwatch_core::Suppression>, ApiError> {
    Ok(Json(
        s.store
            .revoke_suppression(id, who.actor(), chrono::Utc::now())
            .await?,
    ))
}

async fn resolve(
    State(s): State<AppState>,
    who: Principal,
    PathOf(id): PathOf<i64>,
) -> Result<Json<Alert>, ApiError> {
    Ok(Json(
        s.dispatcher
            .review(id, &AlertAction::Resolve, who.actor())
            .await?,
    ))
}

/// A text longer than its field allows: 422 naming the field and the limit.
fn too_long(e: limits::TooLong) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
}

async fn escalate(
    State(s): State<AppState>,
    who: Principal,
    PathOf(id): PathOf<i64>,
) -> Result<impl IntoResponse, ApiError> {
    let (alert, order) = s.dispatcher.escalate(id, who.actor()).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "alert": alert, "work_order": OrderView::of(order) })),
    ))
}

/// An order as the API shows it: with the time left to its deadline.
#[derive(Serialize)]
struct OrderView {
    #[serde(flatten)]
    order: WorkOrder,
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline: Option<DeadlineView>,
}

impl OrderView {
    fn of(order: WorkOrder) -> Self {
        let deadline = order.deadline(chrono::Utc::now());
        OrderView { order, deadline }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderList {
    status: Option<WorkOrderStatus>,
    crew_id: Option<String>,
    parent_id: Option<i64>,
    alert_id: Option<i64>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_work_orders(
    State(s): State<AppState>,
    Params(q): Params<OrderList>,
) -> Result<Json<Page<OrderView>>, ApiError> {
    let limit = limit(q.limit)?;
    let query = WorkOrderQuery {
        status: q.status,
        crew_id: q.crew_id.as_deref().map(crew_id).transpose()?,
        parent_id: q.parent_id,
        alert_id: q.alert_id,
        limit,
        cursor: cursor_id(q.cursor.as_deref())?,
    };
    let items = s.store.list_work_orders(&query).await?;
    let next_cursor = (items.len() as u32 == limit)
        .then(|| items.last().map(|a| a.id.to_string()))
        .flatten();
    Ok(Json(Page {
        items: items.into_iter().map(OrderView::of).collect(),
        next_cursor,
    }))
}

/// A job created by hand: planned work, a meter replacement, an emergency called in
/// by phone.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewOrderBody {
    kind: WorkOrderKind,
    priority: Priority,
    location: GeoPoint,
    summary: String,
    #[serde(default)]
    meter_id: Option<MeterId>,
    #[serde(default)]
    due_at: Option<Timestamp>,
    #[serde(default)]
    parent_id: Option<i64>,
}

async fn create_work_order(
    State(s): State<AppState>,
    who: Principal,
    Body(b): Body<NewOrderBody>,
) -> Result<impl IntoResponse, ApiError> {
    let unprocessable = |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m);
    GeoPoint::new(b.location.lat, b.location.lon)
        .map_err(|e| unprocessable(format!("location: {e}")))?;
    if b.summary.trim().is_empty() {
        return Err(unprocessable("summary is empty".into()));
    }
    limits::check("summary", &b.summary, limits::SUMMARY_MAX).map_err(too_long)?;
    let actor = who.actor().to_owned();
    let district_id = match &b.meter_id {
        Some(m) => Some(
            s.store
                .get_meter(m)
                .await?
                .ok_or_else(|| unprocessable(format!("meter {m} is not in the registry")))?
                .district,
        ),
        None => None,
    };
    let order = s
        .dispatcher
        .create(&NewWorkOrder {
            kind: b.kind,
            priority: b.priority,
            alert_id: None,
            meter_id: b.meter_id,
            district_id,
            location: b.location,
            summary: b.summary,
            due_at: b.due_at,
            actor,
            parent_id: b.parent_id,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(OrderView::of(order))))
}

/// Escalated alerts per detector kind and the share crews confirmed on site.
async fn alert_outcomes(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "kinds": s.dispatcher.outcomes().await? })))
}

async fn crew_location(
    State(s): State<AppState>,
    who: Principal,
    PathOf(id): PathOf<String>,
    Body(b): Body<leakwatch_core::PositionReport>,
) -> Result<StatusCode, ApiError> {
    let id = crew_id(&id)?;
    if !authz::crew_may_see(&who, Some(&id)) {
        return Err(ApiError::not_found(format!("crew {id} does not exist")));
    }
    let (at, t) = b
        .check(chrono::Utc::now())
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    s.dispatcher.crew_position(&id, at, t).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanBody {
    /// The local date to plan.
    date: chrono::NaiveDate,
    /// Assign the planned orders to their crews.
    #[serde(default)]
    apply: bool,
}

async fn day_plan(
    State(s): State<AppState>,
    Body(b): Body<PlanBody>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.dispatcher.plan_day(b.date, b.apply).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadlineQuery {
    /// Orders created since (default: the last 30 days).
    since: Option<Timestamp>,
}

/// Orders created since `since` against their deadlines, per kind, with the late
/// ones listed.
async fn deadlines(
    State(s): State<AppState>,
    Params(q): Params<DeadlineQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let now = chrono::Utc::now();
    let since = q.since.unwrap_or(now - chrono::Duration::days(30));
    let mut orders = Vec::new();
    let mut cursor = None;
    // Newest first: stop at the first page that reaches before `since`.
    loop {
        let page = s
            .store
            .list_work_orders(&WorkOrderQuery {
                limit: MAX_LIMIT,
                cursor,
                ..WorkOrderQuery::default()
            })
            .await?;
        let full = page.len() as u32 == MAX_LIMIT;
        cursor = page.last().map(|o| o.id);
        let before = page.iter().any(|o| o.created_at < since);
        orders.extend(page.into_iter().filter(|o| o.created_at >= since));
        if !full || before {
            break;
        }
    }
    Ok(Json(leakwatch_dispatch::report::deadline_report(
        &orders, now,
    )))
}

async fn leak_classes(State(s): State<AppState>) -> Json<leakwatch_core::LeakClassTable> {
    Json(s.dispatcher.leak_classes().clone())
}

async fn get_work_order(
    State(s): State<AppState>,
    who: Principal,
    PathOf(id): PathOf<i64>,
) -> Result<Json<Value>, ApiError> {
    let order = s
        .store
        .get_work_order(id)
        .await?
        .filter(|o| authz::crew_may_see(&who, o.crew_id.as_ref()))
        .ok_or_else(|| ApiError::not_found(format!("work order {id} does not exist")))?;
    let history = s.store.work_order_history(id).await?;
    let alerts: Vec<i64> = s
        .store
        .alerts_of_order(id)
        .await?
        .iter()
        .map(|a| a.id)
        .collect();
    let mut v = serde_json::to_value(OrderView::of(order))
        .map_err(|_| ApiError::bad_request("unserializable"))?;
    v["history"] = serde_json::to_value(history).unwrap_or_default();
    v["alert_ids"] = json!(alerts);
    Ok(Json(v))
}

/// A lifecycle step: the action (`{"action":"arrive"}`...) and, from the field app,
/// where the crew is. Unknown fields are refused (the action's own, and `position`).
pub(crate) struct TransitionBody {
    action: OrderAction,
    position: Option<GeoPoint>,
}

impl<'de> Deserialize<'de> for TransitionBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut fields = serde_json::Map::<String, Value>::deserialize(d)?;
        let position = match fields.remove("position") {
            None | Some(Value::Null) => None,
            Some(p) => Some(serde_json::from_value(p).map_err(D::Error::custom)?),
        };
        let action: OrderAction =
            serde_json::from_value(Value::Object(fields.clone())).map_err(D::Error::custom)?;
        // serde ignores unknown fields of a field-less variant of a tagged enum: every
        // field sent must be one the action has (or null).
        let known = serde_json::to_value(&action).map_err(D::Error::custom)?;
        if let Some(k) = fields
            .iter()
            .find(|(k, v)| !v.is_null() && known.get(k.as_str()).is_none())
            .map(|(k, _)| k)
        {
            return Err(D::Error::custom(format!(
                "unknown field `{k}` for action `{}`",
                known["action"].as_str().unwrap_or("?")
            )));
        }
        Ok(TransitionBody { action, position })
    }
}

async fn transition(
    State(s): State<AppState>,
    who: Principal,
    PathOf(id): PathOf<i64>,
    Body(b): Body<TransitionBody>,
) -> Result<Json<OrderView>, ApiError> {
    if let Some(p) = b.position {
        GeoPoint::new(p.lat, p.lon).map_err(|e| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("position: {e}"))
        })?;
    }
    limits::check_order_action(&b.action).map_err(too_long)?;
    if who.role == Role::Crew {
        // Another crew's order does not exist for this crew member.
        s.store
            .get_work_order(id)
            .await?
            .filter(|o| authz::crew_may_see(&who, o.crew_id.as_ref()))
            .ok_or_else(|| ApiError::not_found(format!("work order {id} does not exist")))?;
        if !authz::crew_step(&b.action) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "a crew member may accept, travel, arrive, complete or report unable to complete; \
                 assigning and cancelling are the dispatchers'",
            ));
        }
    }
    Ok(Json(OrderView::of(
        s.dispatcher
            .transition(id, b.action, who.actor(), b.position)
            .await?,
    )))
}

/// Every crew (the registry is small: one page, `next_cursor` is null).
async fn list_crews(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(Page {
        items: s.store.list_crews().await?,
        next_cursor: None,
    }))
}

async fn post_crews(
    State(s): State<AppState>,
    Body(crews): Body<Vec<Crew>>,
) -> Result<Json<Value>, ApiError> {
    if crews.is_empty() {
        return Err(ApiError::bad_request("the array of crews is empty"));
    }
    for c in &crews {
        limits::check_crew(c).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("crew {}: {e}", c.id),
            )
        })?;
        if c.name.trim().is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("crew {}: name is empty", c.id),
            ));
        }
        if let Some(sh) = &c.shifts
            && let Err(e) = sh.validate()
        {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("crew {}: shifts: {e}", c.id),
            ));
        }
        for (what, p) in [("home", Some(c.home)), ("position", c.position)] {
            if let Some(p) = p
                && let Err(e) = leakwatch_core::GeoPoint::new(p.lat, p.lon)
            {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("crew {}: {what}: {e}", c.id),
                ));
            }
        }
    }
    let n = s.store.upsert_crews(&crews).await?;
    Ok(Json(json!({ "upserted": n })))
}

async fn crew_jobs(
    State(s): State<AppState>,
    who: Principal,
    PathOf(id): PathOf<String>,
) -> Result<Json<Page<OrderView>>, ApiError> {
    let id = crew_id(&id)?;
    if !authz::crew_may_see(&who, Some(&id)) || s.store.get_crew(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("crew {id} does not exist")));
    }
    // A crew's open jobs: one page, `next_cursor` is null.
    Ok(Json(Page {
        items: s
            .store
            .jobs_for_crew(&id)
            .await?
            .into_iter()
            .map(OrderView::of)
            .collect(),
        next_cursor: None,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    limit: Option<u32>,
}

async fn dead_letters(
    State(s): State<AppState>,
    Params(q): Params<Limit>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = limit(q.limit)?;
    // The latest `limit`, newest first; no cursor yet (`next_cursor` is null).
    Ok(Json(Page {
        items: s.store.list_dead_letters(limit).await?,
        next_cursor: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_bodies_refuse_unknown_fields() {
        let b: TransitionBody =
            serde_json::from_str(r#"{"action":"arrive","position":{"lat":45.0,"lon":9.0}}"#)
                .unwrap();
        assert_eq!(b.action, OrderAction::Arrive);
        assert!(b.position.is_some());
        let b: TransitionBody =
            serde_json::from_str(r#"{"action":"cancel","reason":"dup"}"#).unwrap();
        assert!(matches!(b.action, OrderAction::Cancel { .. }) && b.position.is_none());
        for bad in [
            r#"{"action":"arrive","actor":"someone"}"#,
            r#"{"action":"cancel","reason":"dup","extra":1}"#,
            r#"{"action":"arrive","position":{"lat":45.0,"lon":9.0,"alt":3}}"#,
        ] {
            assert!(
                serde_json::from_str::<TransitionBody>(bad).is_err(),
                "{bad}"
            );
        }
    }
}
