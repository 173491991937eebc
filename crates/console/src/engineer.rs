//! The engineer's pages: the alert inbox (filters, counts, live updates by
//! server-sent events) and the alert detail (chart, evidence in words, history,
//! acknowledge / dismiss with reason / escalate / note).

use crate::chart::{self, Marks};
use crate::{PageError, Shared, Viewer, check_csrf, local, page, raw, require};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Duration;
use leakwatch_api::AppState;
use leakwatch_api::auth::Role;
use leakwatch_core::{
    Alert, AlertAction, AlertKind, AlertStatus, Severity, SuppressRequest, limits,
};
use leakwatch_store::{AlertHistoryEntry, AlertQuery, WorkOrderQuery};
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/alerts", get(inbox))
        .route("/console/alerts/rows", get(rows))
        .route("/console/alerts/events", get(events))
        .route("/console/alerts/{id}", get(detail))
        .route("/console/alerts/{id}/act", post(act))
        .merge(crate::review::routes())
}

const VIEW: &[Role] = &[Role::Engineer, Role::Dispatcher];
const REVIEW: &[Role] = &[Role::Engineer];

/// The inbox's filters, from the query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    pub district: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub severity: String,
    /// `active` (open, acknowledged: the default), `all`, or one status.
    #[serde(default)]
    pub status: String,
    /// Detected in the last N hours (empty: any time).
    #[serde(default)]
    pub hours: String,
    /// `newest` (default) or `severity`.
    #[serde(default)]
    pub sort: String,
}

impl Filters {
    fn status(&self) -> &str {
        if self.status.is_empty() {
            "active"
        } else {
            &self.status
        }
    }

    fn keeps(&self, a: &Alert) -> bool {
        let status_ok = match self.status() {
            "all" => true,
            "active" => matches!(a.status, AlertStatus::Open | AlertStatus::Acknowledged),
            s => a.status.as_str() == s,
        };
        status_ok
            && (self.district.is_empty()
                || a.district_id
                    .as_ref()
                    .is_some_and(|d| d.as_str() == self.district))
            && (self.kind.is_empty() || a.kind.as_str() == self.kind)
            && (self.severity.is_empty() || a.severity.as_str() == self.severity)
    }
}

/// The alerts the filters keep, sorted; at most 500 looked at.
async fn filtered(s: &AppState, f: &Filters) -> Result<Vec<Alert>, PageError> {
    let since = f
        .hours
        .parse::<i64>()
        .ok()
        .filter(|h| *h > 0)
        .map(|h| chrono::Utc::now() - Duration::hours(h));
    let status = f.status().parse::<AlertStatus>().ok();
    let kind = f.kind.parse::<AlertKind>().ok();
    let mut alerts: Vec<Alert> = s
        .store
        .list_alerts(&AlertQuery {
            status,
            kind,
            since,
            limit: 500,
            ..AlertQuery::default()
        })
        .await?
        .into_iter()
        .filter(|a| f.keeps(a))
        .collect();
    if f.sort == "severity" {
        alerts.sort_by_key(|a| (std::cmp::Reverse(a.severity), std::cmp::Reverse(a.id)));
    }
    Ok(alerts)
}

fn subject(a: &Alert) -> String {
    match (&a.meter_id, &a.district_id) {
        (Some(m), _) => format!("meter {m}"),
        (None, Some(d)) => format!("district {d}"),
        _ => "-".into(),
    }
}

fn rows_markup(c: &crate::Console, alerts: &[Alert], counts: &[(AlertStatus, i64)]) -> Markup {
    html! {
        p #counts {
            strong #shown-count { (alerts.len()) } " shown · "
            @for (st, n) in counts {
                span class={"count " (st.as_str())} { (st.as_str()) " " (n) } " "
            }
        }
        table class="alerts" {
            thead { tr {
                th { "#" } th { "severity" } th { "kind" } th { "subject" } th { "district" }
                th { "detected (event time)" } th { "status" } th { "evidence" }
            } }
            tbody #inbox-body {
                @if alerts.is_empty() { tr { td colspan="8" { "No alert matches these filters." } } }
                @for a in alerts {
                    tr class={"sev-" (a.severity.as_str())} data-alert-id=(a.id) {
                        td { a href={"/console/alerts/" (a.id)} { (a.id) } }
                        td { span class={"badge " (a.severity.as_str())} { (a.severity.as_str()) } }
                        td { (a.kind.as_str()) }
                        td { @if let Some(m) = &a.meter_id { a href=(crate::meter::href(m)) { (subject(a)) } } @else { (subject(a)) } }
                        td { (a.district_id.as_ref().map(|d| d.to_string()).unwrap_or_default()) }
                        td { (local(c, a.detected_at)) }
                        td { (a.status.as_str()) @if a.count > 1 { " ×" (a.count) } }
                        td class="evidence" { (a.evidence.explanation)
                            @if let Some(r) = &a.status_reason { br; i { (r) } } }
                    }
                }
            }
        }
    }
}

async fn inbox(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    axum::Extension(c): Shared,
    Query(f): Query<Filters>,
) -> Result<Markup, PageError> {
    require(&p, VIEW, "see the alert inbox")?;
    let alerts = filtered(&s, &f).await?;
    let counts = s.store.count_alerts_by_status().await?;
    let option = |value: &str, current: &str, label: &str| {
        html! { option value=(value) selected[value == current] { (label) } }
    };
    let body = html! {
        h1 { "Alert inbox" }
        p class="links" {
            @if p.role == Role::Admin || REVIEW.contains(&p.role) { a #suppressions-link href="/console/suppressions" { "Suppressions" } " · " }
            a #quality-link href="/console/quality" { "Detector quality" }
        }
        form #filters method="get" action="/console/alerts" class="filters" {
            label { "District " input name="district" value=(f.district) size="8"; }
            label { "Kind " select name="kind" {
                (option("", &f.kind, "any"))
                @for k in AlertKind::ALL { (option(k.as_str(), &f.kind, k.as_str())) }
            } }
            label { "Severity " select name="severity" {
                (option("", &f.severity, "any"))
                @for sv in [Severity::Critical, Severity::Warning, Severity::Info] { (option(sv.as_str(), &f.severity, sv.as_str())) }
            } }
            label { "Status " select name="status" {
                (option("active", f.status(), "to review (open, acknowledged)"))
                (option("all", f.status(), "all"))
                @for st in AlertStatus::ALL { (option(st.as_str(), f.status(), st.as_str())) }
            } }
            label { "Detected in the last " select name="hours" {
                (option("", &f.hours, "any time")) (option("1", &f.hours, "hour"))
                (option("24", &f.hours, "24 h")) (option("168", &f.hours, "7 days"))
                (option("720", &f.hours, "30 days"))
            } }
            label { "Sort " select name="sort" {
                (option("newest", &f.sort, "newest first")) (option("severity", &f.sort, "severity"))
            } }
            button type="submit" { "Apply" }
            span #live class="live" { "live" }
        }
        div #inbox data-live="/console/alerts/events" data-rows="/console/alerts/rows" {
            (rows_markup(&c, &alerts, &counts))
        }
        p class="hint" { "Times in " (c.cfg.time_zone.name()) ". Detection times are event time (when the meter measured); history times are when people acted." }
    };
    Ok(page(&p, "Alert inbox", "alerts", body))
}

/// The inbox's table alone, for the live refresh.
async fn rows(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    axum::Extension(c): Shared,
    Query(f): Query<Filters>,
) -> Result<Markup, PageError> {
    require(&p, VIEW, "see the alert inbox")?;
    let alerts = filtered(&s, &f).await?;
    let counts = s.store.count_alerts_by_status().await?;
    Ok(rows_markup(&c, &alerts, &counts))
}

/// A fingerprint of the alerts' state: changes when an alert arrives, repeats or
/// changes status.
async fn fingerprint(s: &AppState) -> Result<u64, PageError> {
    let latest = s
        .store
        .list_alerts(&AlertQuery {
            limit: 200,
            ..AlertQuery::default()
        })
        .await?;
    let counts = s.store.count_alerts_by_status().await?;
    let mut h = DefaultHasher::new();
    for a in &latest {
        (a.id, a.status.as_str(), a.count, a.work_order_id).hash(&mut h);
    }
    for (st, n) in counts {
        (st.as_str(), n).hash(&mut h);
    }
    Ok(h.finish())
}

/// Server-sent events: `alerts` whenever the alerts change (checked every second).
async fn events(Viewer(p): Viewer, State(s): State<AppState>) -> Result<Response, PageError> {
    require(&p, VIEW, "see the alert inbox")?;
    let first = fingerprint(&s).await?;
    let stream = futures_util::stream::unfold((s, first), |(s, last)| async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
            match fingerprint(&s).await {
                Ok(f) if f != last => {
                    let ev = Event::default().event("alerts").data(f.to_string());
                    return Some((Ok::<_, std::convert::Infallible>(ev), (s, f)));
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e.message, "inbox events: store unavailable"),
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn detail(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    axum::Extension(c): Shared,
    Path(id): Path<i64>,
) -> Result<Markup, PageError> {
    require(&p, VIEW, "see alerts")?;
    let a = s
        .store
        .get_alert(id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("alert {id} does not exist")))?;
    let history = s.store.alert_history(id).await?;
    let ev = &a.evidence;
    // The chart: the meter's hourly consumption from two days before the detection
    // to a day after (or now).
    let chart_svg = match &a.meter_id {
        Some(m) => {
            let from = ev.window_start.min(a.detected_at) - Duration::hours(48);
            let to = (a.detected_at + Duration::hours(24)).min(chrono::Utc::now());
            let rows = s.store.hourly(m, Some(from), Some(to)).await?;
            let per_hour = ev.unit.ends_with("/h");
            Some(chart::consumption_svg(
                &chart::hourly_consumption(&rows),
                &Marks {
                    expected: ev.expected.filter(|_| per_hour),
                    threshold: per_hour.then_some(ev.threshold),
                    detected_at: Some(a.detected_at),
                    window: Some((ev.window_start, ev.window_end)),
                },
                |t| crate::clock(&c, t),
            ))
        }
        None => None,
    };
    let suppressions = match &a.meter_id {
        Some(m) => s.store.suppressions_of_meter(m).await?,
        None => Vec::new(),
    };
    let recent_events = match &a.meter_id {
        Some(m) => s.store.meter_events(m, 10).await?,
        None => Vec::new(),
    };
    let earlier = match &a.meter_id {
        Some(m) => s
            .store
            .list_alerts(&AlertQuery {
                meter_id: Some(m.clone()),
                limit: 20,
                ..AlertQuery::default()
            })
            .await?
            .into_iter()
            .filter(|o| o.id != a.id)
            .collect(),
        None => Vec::new(),
    };
    let orders = s
        .store
        .list_work_orders(&WorkOrderQuery {
            alert_id: Some(a.id),
            limit: 10,
            ..WorkOrderQuery::default()
        })
        .await?;
    let may_review = p.role == Role::Admin || REVIEW.contains(&p.role);
    let open = matches!(a.status, AlertStatus::Open | AlertStatus::Acknowledged);
    let csrf = p.csrf_token().unwrap_or_default().to_owned();
    let body = html! {
        p { a href="/console/alerts" { "← inbox" } }
        h1 { "Alert " (a.id) ": " (a.kind.as_str()) " on " (subject(&a)) }
        @if let Some(m) = &a.meter_id { p { a #meter-link href=(crate::meter::href(m)) { "Meter " (m) ": its page (readings, events, alerts, orders)" } } }
        p class="meta" {
            span class={"badge " (a.severity.as_str())} { (a.severity.as_str()) } " "
            "status " strong #alert-status { (a.status.as_str()) }
            @if let Some(r) = &a.status_reason { " (" (r) ")" }
            @if let Some(o) = a.outcome { " · on site: " strong #alert-outcome { (o.as_str()) } }
            " · detected " (local(&c, a.detected_at)) " (event time) · last seen " (local(&c, a.last_seen))
            " · reported " (a.count) " time(s)"
        }
        @if earlier.iter().any(|o: &Alert| o.status == AlertStatus::Dismissed) || !suppressions.is_empty() {
            section #earlier-dismissals class="dismissals" {
                h2 { "Earlier dismissals on this meter" }
                ul {
                    @for o in earlier.iter().filter(|o| o.status == AlertStatus::Dismissed) {
                        li { a href={"/console/alerts/" (o.id)} { "#" (o.id) } " " (o.kind.as_str())
                            " · detected " (local(&c, o.detected_at)) " (event time)"
                            " · dismissed"
                            @if let Some(by) = &o.dismissed_by { " by " (by) }
                            @if let Some(at) = o.dismissed_at { " at " (local(&c, at)) " (review time)" }
                            @if let Some(r) = &o.status_reason { ": " i { (r) } } }
                    }
                }
                @if !suppressions.is_empty() {
                    (crate::review::table(&c, &suppressions, None))
                }
            }
        }
        section class="evidence" {
            h2 { "Evidence" }
            p #evidence-words { (evidence_words(&c, &a)) }
        }
        section {
            h2 { "Hourly consumption around the alert" }
            @match &chart_svg {
                Some(svg) => { (raw(svg.clone())) p class="legend" {
                    span class="key bar" {} " consumption per hour (m³) "
                    span class="key window" {} " evidence window "
                    span class="key detected" {} " moment of detection "
                    @if ev.unit.ends_with("/h") { span class="key threshold" {} " threshold " span class="key expected" {} " expected" }
                    @else { " (the detector's figures are in " (ev.unit) ", shown in words above)" }
                } }
                None => p { "A district alert: see the district's inflow and balance." }
            }
        }
        @if may_review && open {
            section class="actions" {
                h2 { "Review" }
                form method="post" action={"/console/alerts/" (a.id) "/act"} class="inline" {
                    input type="hidden" name="_csrf" value=(csrf);
                    input type="hidden" name="action" value="escalate";
                    button #escalate type="submit" class="primary" { "Escalate: send a crew" }
                }
                @if a.status == AlertStatus::Open {
                    form method="post" action={"/console/alerts/" (a.id) "/act"} class="inline" {
                        input type="hidden" name="_csrf" value=(csrf);
                        input type="hidden" name="action" value="acknowledge";
                        button #acknowledge type="submit" { "Acknowledge" }
                    }
                }
                form method="post" action={"/console/alerts/" (a.id) "/act"} class="dismiss" {
                    input type="hidden" name="_csrf" value=(csrf);
                    input type="hidden" name="action" value="dismiss";
                    input #dismiss-reason name="reason" required placeholder="why it is not a leak" size="28";
                    fieldset class="suppress" {
                        label { input #suppress type="checkbox" name="suppress" value="on";
                            " and keep " (a.kind.as_str()) " quiet on " }
                        select #suppress-scope name="scope" {
                            @if let Some(m) = &a.meter_id { option value="meter" selected { "this meter (" (m) ")" } }
                            @if let Some(d) = &a.district_id { option value="district" { "district " (d) } }
                        }
                        label { " until " input #suppress-until type="date" name="until"; }
                        " (empty: until revoked) "
                        label { "unless the evidence exceeds " (format!("{:.3} {}", ev.observed, ev.unit)) " by more than "
                            input #suppress-margin type="number" name="margin" value="25" min="0" max="1000" step="1" size="4"; " %" }
                    }
                    button #dismiss type="submit" { "Dismiss" }
                }
            }
        }
        @if may_review {
            form method="post" action={"/console/alerts/" (a.id) "/act"} class="note" {
                input type="hidden" name="_csrf" value=(csrf);
                input type="hidden" name="action" value="note";
                input #note-text name="note" required placeholder="add a note" size="40";
                button #add-note type="submit" { "Add note" }
            }
        }
        section {
            h2 { "History (who did what)" }
            p class="hint" { "Wall-clock times of the actions, in " (c.cfg.time_zone.name()) "; the detection above is event time." }
            ul #history {
                li { (local(&c, a.created_at)) " · detector · raised (stored; detected " (local(&c, a.detected_at)) " event time)" }
                @for h in &history {
                    li { (local(&c, h.at)) " · " (h.actor) " · " (h.action)
                        @if let Some(n) = &h.note { ": " (n) } }
                }
            }
        }
        @if !orders.is_empty() {
            section { h2 { "Work orders" } ul #orders {
                @for o in &orders { li { "#" (o.id) " " (o.kind.as_str()) " · " strong { (o.status.as_str()) }
                    @if let Some(cr) = &o.crew_id { " · crew " (cr) }
                    @if let Some(f) = &o.finding { " · found: " (if f.leak_found { "leak" } else { "no leak" }) } } }
            } }
        }
        @if !earlier.is_empty() {
            section { h2 { "Other alerts on this meter" } ul {
                @for o in &earlier { li { a href={"/console/alerts/" (o.id)} { "#" (o.id) } " " (o.kind.as_str()) " · " (o.status.as_str())
                    " · detected " (local(&c, o.detected_at)) " (event time)" @if let Some(r) = &o.status_reason { " · " (r) } } }
            } }
        }
        @if !recent_events.is_empty() {
            section { h2 { "The meter's recent events" } ul {
                @for e in &recent_events { li { (local(&c, e.t)) " · " (format!("{:?}", e.code)) } }
            } }
        }
    };
    Ok(page(&p, &format!("Alert {}", a.id), "alerts", body))
}

/// The evidence in one or two sentences.
fn evidence_words(c: &crate::Console, a: &Alert) -> String {
    let e = &a.evidence;
    let mut s = format!(
        "{} Rule: {}. Observed {:.3} {}",
        e.explanation.trim_end_matches('.').to_owned() + ".",
        e.rule,
        e.observed,
        e.unit
    );
    if let Some(x) = e.expected {
        s += &format!(" where {:.3} {} was expected", x, e.unit);
    }
    s += &format!(
        ", against a threshold of {:.3} {}, between {} and {}.",
        e.threshold,
        e.unit,
        local(c, e.window_start),
        local(c, e.window_end)
    );
    s
}

#[derive(Debug, Deserialize)]
struct ActForm {
    #[serde(default)]
    _csrf: String,
    action: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    note: String,
    /// `on`: the dismissal also makes a suppression.
    #[serde(default)]
    suppress: String,
    /// `meter` or `district`.
    #[serde(default)]
    scope: String,
    /// A local date (utility zone): quiet until the end of that day (event time).
    #[serde(default)]
    until: String,
    /// Percent.
    #[serde(default)]
    margin: String,
}

fn unprocessable(m: impl Into<String>) -> PageError {
    PageError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, m)
}

/// The suppression the dismissal form asks for, if any.
fn suppress_request(c: &crate::Console, f: &ActForm) -> Result<Option<SuppressRequest>, PageError> {
    if f.suppress != "on" {
        return Ok(None);
    }
    let until = match f.until.trim() {
        "" => None,
        d => {
            let date = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|_| unprocessable(format!("{d:?} is not a date (YYYY-MM-DD)")))?;
            // To the end of that day in the utility's zone.
            let next = date
                .succ_opt()
                .and_then(|n| n.and_hms_opt(0, 0, 0))
                .ok_or_else(|| unprocessable(format!("{d:?} is out of range")))?;
            let local = next
                .and_local_timezone(c.cfg.time_zone)
                .earliest()
                .ok_or_else(|| unprocessable(format!("{d:?} has no midnight here")))?;
            Some(local.to_utc())
        }
    };
    let margin = match f.margin.trim() {
        "" => None,
        m => Some(
            m.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| unprocessable(format!("the margin {m:?} is not a number")))?
                / 100.0,
        ),
    };
    Ok(Some(SuppressRequest {
        scope: (!f.scope.is_empty()).then(|| f.scope.clone()),
        until,
        margin,
    }))
}

/// acknowledge / dismiss (with reason, and optionally a suppression) / escalate /
/// note; back to the detail. The history entry is written in the transaction of the
/// action (a note is its own).
async fn act(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    axum::Extension(c): Shared,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<ActForm>,
) -> Result<Response, PageError> {
    require(&p, REVIEW, "review alerts")?;
    check_csrf(&p, &headers, Some(&f._csrf))?;
    match f.action.as_str() {
        "acknowledge" => {
            s.dispatcher
                .review(id, &AlertAction::Acknowledge, p.actor())
                .await?;
        }
        "dismiss" => {
            let action = AlertAction::Dismiss {
                reason: f.reason.clone(),
            };
            limits::check_alert_action(&action).map_err(|e| unprocessable(e.to_string()))?;
            match suppress_request(&c, &f)? {
                None => {
                    s.dispatcher.review(id, &action, p.actor()).await?;
                }
                Some(req) => {
                    s.dispatcher
                        .dismiss_suppressing(id, &f.reason, &req, p.actor())
                        .await?;
                }
            }
        }
        "escalate" => {
            s.dispatcher.escalate(id, p.actor()).await?;
        }
        "note" => {
            if f.note.trim().is_empty() {
                return Err(unprocessable("the note is empty"));
            }
            limits::check("note", &f.note, limits::SUMMARY_MAX)
                .map_err(|e| unprocessable(e.to_string()))?;
            s.store
                .get_alert(id)
                .await?
                .ok_or_else(|| PageError::not_found(format!("alert {id} does not exist")))?;
            s.store
                .add_alert_history(&AlertHistoryEntry {
                    alert_id: id,
                    at: chrono::Utc::now(),
                    actor: p.actor().to_owned(),
                    action: "note".into(),
                    note: Some(f.note.trim().to_owned()),
                })
                .await?;
        }
        other => {
            return Err(PageError::new(
                axum::http::StatusCode::BAD_REQUEST,
                format!("unknown action {other:?}"),
            ));
        }
    }
    Ok(Redirect::to(&format!("/console/alerts/{id}")).into_response())
}
