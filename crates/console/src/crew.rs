//! The crews' phone app: an installable page (web manifest, service worker) showing
//! today's jobs in order, with big buttons for each step and the findings form.
//! It works on a flaky connection: the job list is cached for reading offline, and
//! steps taken offline are queued on the phone, shown as pending, and sent in order
//! when the connection returns, each with a client action id so the server applies
//! each once ([`leakwatch_dispatch::Dispatcher::transition_once`]).
//!
//! A crew member sees and acts on their own crew's jobs only.

use crate::{PageError, Shared, Viewer, check_csrf, clock, head_common, local};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use leakwatch_api::AppState;
use leakwatch_api::auth::{Principal, Role};
use leakwatch_core::{
    Alert, CrewId, GasReading, GeoPoint, OrderAction, SiteFinding, WorkOrder, WorkOrderStatus,
    limits,
};
use maud::{DOCTYPE, Markup, html};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/crew", get(app))
        .route("/crew/", get(app))
        .route("/crew/manifest.webmanifest", get(manifest))
        .route("/crew/sw.js", get(service_worker))
        .route("/crew/app.js", get(app_js))
        .route("/crew/api/jobs", get(jobs))
        .route("/crew/api/jobs/{id}", get(job))
        .route("/crew/api/jobs/{id}/action", post(action))
}

/// The crew a caller acts for: a crew member's own crew; admins and dispatchers may
/// look at a crew's app with `?crew=` (not needed by the tests; crew members only).
fn crew_of(p: &Principal) -> Result<CrewId, PageError> {
    match (p.role, &p.crew) {
        (Role::Crew, Some(c)) => Ok(c.clone()),
        (Role::Crew, None) => Err(PageError::forbidden(format!(
            "{} is a crew member without a crew; ask an admin to link the account to one",
            p.name
        ))),
        _ => Err(PageError::forbidden(format!(
            "the crew app is for crew members; {} is {}",
            p.name,
            p.role.as_str()
        ))),
    }
}

async fn app(Viewer(p): Viewer) -> Result<Markup, PageError> {
    let crew = crew_of(&p)?;
    Ok(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                (head_common("Jobs"))
                meta name="theme-color" content="#0b5394";
                link rel="manifest" href="/crew/manifest.webmanifest";
                @if let Some(t) = p.csrf_token() { meta name="csrf-token" content=(t); }
                meta name="crew" content=(crew);
                script src="/crew/app.js" defer {}
            }
            body class="phone" {
                header class="top phone" {
                    strong { "Crew " (crew) }
                    span #net class="net" { "…" }
                    form method="post" action="/logout" class="logout" {
                        @if let Some(t) = p.csrf_token() { input type="hidden" name="_csrf" value=(t); }
                        button type="submit" { "Log out" }
                    }
                }
                main {
                    p #queue-status class="queue" {}
                    p #conflicts class="conflicts" {}
                    div #jobs { p { "Loading today's jobs…" } }
                    p class="hint" #updated {}
                }
            }
        }
    })
}

async fn manifest() -> Response {
    (
        [(header::CONTENT_TYPE, "application/manifest+json")],
        include_str!("../assets/manifest.webmanifest"),
    )
        .into_response()
}

async fn service_worker() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript"),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::HeaderName::from_static("service-worker-allowed"),
                "/crew",
            ),
        ],
        include_str!("../assets/sw.js"),
    )
        .into_response()
}

async fn app_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../assets/crew.js"),
    )
        .into_response()
}

/// A job as the phone shows it.
#[derive(Debug, Serialize)]
struct JobView {
    id: i64,
    kind: &'static str,
    priority: &'static str,
    status: &'static str,
    summary: String,
    /// Where: the meter and district, and the coordinates.
    place: String,
    lat: f64,
    lon: f64,
    /// A navigation link for the phone's map app.
    geo: String,
    /// What is suspected and the evidence, in one sentence.
    suspicion: String,
    /// The deadline as a clock time in the utility's zone, with what it measures.
    due: Option<String>,
    needs_finding: bool,
    /// A leak survey: the segments to walk, in order, with their direction
    /// (`leakwatch_api::survey::order_route_json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    survey: Option<Value>,
    /// The steps the crew may take now.
    next: Vec<&'static str>,
}

fn next_steps(status: WorkOrderStatus) -> Vec<&'static str> {
    match status {
        WorkOrderStatus::Assigned => vec!["accept"],
        WorkOrderStatus::Accepted => vec!["start_travel"],
        WorkOrderStatus::EnRoute => vec!["arrive"],
        WorkOrderStatus::OnSite => vec!["complete"],
        _ => vec![],
    }
}

fn suspicion(o: &WorkOrder, alerts: &[Alert]) -> String {
    match alerts.first() {
        Some(a) => {
            format!(
                "Suspected {} ({}): {}",
                a.kind.as_str().replace('_', " "),
                a.severity.as_str(),
                a.evidence.explanation.trim_end_matches('.')
            ) + "."
        }
        None => o.summary.clone(),
    }
}

async fn view(s: &AppState, c: &crate::Console, o: WorkOrder) -> Result<JobView, PageError> {
    let alerts = s.store.alerts_of_order(o.id).await?;
    let place = match (&o.meter_id, &o.district_id) {
        (Some(m), Some(d)) => format!("meter {m}, district {d}"),
        (Some(m), None) => format!("meter {m}"),
        (None, Some(d)) => format!("district {d}"),
        (None, None) => "on the map".into(),
    };
    let due = o.deadline(chrono::Utc::now()).map(|d| {
        format!(
            "{} by {}{}",
            if d.measures == "arrival" {
                "on site"
            } else {
                "done"
            },
            clock(c, d.due_at),
            if d.breached { " (late)" } else { "" }
        )
    });
    let survey = if o.kind == leakwatch_core::WorkOrderKind::LeakSurvey {
        use leakwatch_store::NetworkStore;
        let ids = s.store.network_store().order_segments(o.id).await?;
        Some(leakwatch_api::survey::order_route_json(&s.store, o.id, ids).await?)
    } else {
        None
    };
    Ok(JobView {
        survey,
        id: o.id,
        kind: o.kind.as_str(),
        priority: o.priority.as_str(),
        status: o.status.as_str(),
        place,
        lat: o.location.lat,
        lon: o.location.lon,
        geo: format!("geo:{:.6},{:.6}", o.location.lat, o.location.lon),
        suspicion: suspicion(&o, &alerts),
        due,
        needs_finding: o.kind.requires_finding(),
        next: next_steps(o.status),
        summary: o.summary,
    })
}

/// Today's jobs of the caller's crew, most urgent and earliest first, and the leak
/// classes with their repair deadlines for the findings form.
async fn jobs(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    axum::Extension(c): Shared,
) -> Result<Json<Value>, PageError> {
    let crew = crew_of(&p)?;
    let mut orders = s.store.jobs_for_crew(&crew).await?;
    orders.retain(|o| !o.status.is_final());
    orders.sort_by_key(|o| (o.priority, o.due_at, o.id));
    let mut out = Vec::with_capacity(orders.len());
    for o in orders {
        out.push(view(&s, &c, o).await?);
    }
    let classes: Vec<Value> = s
        .dispatcher
        .leak_classes()
        .classes
        .iter()
        .map(|k| {
            json!({
                "code": k.code,
                "name": k.name,
                "repair": match k.repair_within_h {
                    Some(0) => "repair at once".to_owned(),
                    Some(h) => format!("repair within {h} h"),
                    None => "no repair deadline: monitor".to_owned(),
                }
            })
        })
        .collect();
    Ok(Json(json!({
        "crew": crew,
        "jobs": out,
        "leak_classes": classes,
        "as_of": local(&c, chrono::Utc::now()),
    })))
}

/// The order if it is the caller's crew's; another crew's job is refused (403).
async fn own_order(s: &AppState, p: &Principal, id: i64) -> Result<WorkOrder, PageError> {
    let crew = crew_of(p)?;
    let o = s.store.get_work_order(id).await?;
    match o {
        Some(o) if o.crew_id.as_ref() == Some(&crew) => Ok(o),
        // Whether the order exists is not said to another crew.
        _ => Err(PageError::forbidden(format!(
            "job {id} is not one of crew {crew}'s jobs"
        ))),
    }
}

async fn job(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    axum::Extension(c): Shared,
    Path(id): Path<i64>,
) -> Result<Json<JobView>, Response> {
    let o = own_order(&s, &p, id).await.map_err(json_error)?;
    Ok(Json(view(&s, &c, o).await.map_err(json_error)?))
}

fn json_error(e: PageError) -> Response {
    (e.status, Json(json!({ "error": e.message }))).into_response()
}

/// One step from the phone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepBody {
    /// Made by the phone when the step is taken (a UUID); the same id sent again is
    /// the same step.
    pub client_action_id: String,
    /// `accept`, `start_travel`, `arrive`, `complete`.
    pub action: String,
    #[serde(default)]
    pub position: Option<GeoPoint>,
    #[serde(default)]
    pub finding: Option<FindingBody>,
    #[serde(default)]
    pub notes: Option<String>,
    /// When the step was taken on the phone (it may arrive later).
    #[serde(default)]
    pub taken_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingBody {
    pub leak_found: bool,
    #[serde(default)]
    pub leak_class: Option<String>,
    #[serde(default)]
    pub percent_lel: Vec<f64>,
    #[serde(default)]
    pub repaired: bool,
    #[serde(default)]
    pub notes: String,
}

async fn action(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(b): Json<StepBody>,
) -> Response {
    match step(&p, &s, &headers, id, b).await {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => json_error(e),
    }
}

async fn step(
    p: &Principal,
    s: &AppState,
    headers: &HeaderMap,
    id: i64,
    b: StepBody,
) -> Result<Value, PageError> {
    let crew = crew_of(p)?;
    check_csrf(p, headers, None)?;
    let unprocessable = |m: String| PageError::new(StatusCode::UNPROCESSABLE_ENTITY, m);
    let key = b.client_action_id.trim();
    if key.is_empty() || key.len() > 64 {
        return Err(unprocessable(
            "client_action_id must be 1 to 64 characters".into(),
        ));
    }
    if let Some(pos) = b.position {
        GeoPoint::new(pos.lat, pos.lon).map_err(|e| unprocessable(format!("position: {e}")))?;
    }
    let action = match b.action.as_str() {
        "accept" => OrderAction::Accept,
        "start_travel" => OrderAction::StartTravel,
        "arrive" => OrderAction::Arrive,
        "complete" => OrderAction::Complete {
            notes: b.notes.clone().filter(|n| !n.trim().is_empty()),
            finding: b.finding.map(|f| SiteFinding {
                leak_found: f.leak_found,
                leak_class: f.leak_class.filter(|c| !c.is_empty() && f.leak_found),
                gas_readings: f
                    .percent_lel
                    .into_iter()
                    .map(|v| GasReading {
                        percent_lel: v,
                        place: "on site".into(),
                    })
                    .collect(),
                repaired: f.repaired,
                notes: f.notes,
            }),
        },
        other => return Err(unprocessable(format!("unknown step {other:?}"))),
    };
    limits::check_order_action(&action).map_err(|e| unprocessable(e.to_string()))?;
    // The job must be this crew's: checked again inside the transaction.
    let existing = s.store.get_work_order(id).await?;
    let was_ours = match &existing {
        Some(o) if o.crew_id.as_ref() == Some(&crew) => true,
        Some(_) => s
            .store
            .work_order_history(id)
            .await?
            .iter()
            .any(|t| t.crew_id.as_ref() == Some(&crew)),
        None => false,
    };
    if !was_ours {
        return Err(PageError::forbidden(format!(
            "job {id} is not one of crew {crew}'s jobs"
        )));
    }
    if let Some(pos) = b.position {
        // The position goes with the step; a failure here does not stop the step.
        if let Err(e) = s
            .dispatcher
            .crew_position(&crew, pos, chrono::Utc::now())
            .await
        {
            tracing::warn!(error = %e, "crew position not recorded");
        }
    }
    match s
        .dispatcher
        .transition_once(key, Some(&crew), id, action, p.actor(), b.position)
        .await
    {
        Ok(out) => Ok(json!({ "order": out.order, "repeated": out.repeated })),
        Err(leakwatch_dispatch::DispatchError::Rejected(m))
        | Err(leakwatch_dispatch::DispatchError::Conflict(m)) => {
            Err(PageError::new(StatusCode::CONFLICT, m))
        }
        Err(e) => Err(e.into()),
    }
}
