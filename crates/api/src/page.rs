//! The minimal console: one server-rendered page listing open alerts. The full
//! console has its own issue; this page needs no script and loads nothing from
//! elsewhere.

use crate::{ApiError, AppState};
use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use leakwatch_core::AlertStatus;
use leakwatch_store::AlertQuery;
use std::fmt::Write;

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(index))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn index(
    State(s): State<AppState>,
    who: Option<crate::auth::Principal>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    if who.is_none() {
        return Ok(axum::response::Redirect::to("/login?next=/").into_response());
    }
    let mut alerts = Vec::new();
    for status in [
        AlertStatus::Open,
        AlertStatus::Acknowledged,
        AlertStatus::Escalated,
    ] {
        alerts.extend(
            s.store
                .list_alerts(&AlertQuery {
                    status: Some(status),
                    limit: 200,
                    ..AlertQuery::default()
                })
                .await?,
        );
    }
    alerts.sort_by_key(|a| std::cmp::Reverse(a.id));
    let mut rows = String::new();
    for a in &alerts {
        let _ = write!(
            rows,
            "<tr><td><a href=\"/api/v1/alerts/{id}\">{id}</a></td><td>{kind}</td><td>{sev}</td>\
             <td>{status}</td><td>{subject}</td><td>{det}</td><td>{count}</td><td>{expl}</td><td>{wo}</td></tr>",
            id = a.id,
            kind = esc(a.kind.as_str()),
            sev = esc(a.severity.as_str()),
            status = esc(a.status.as_str()),
            subject = esc(&a
                .meter_id
                .as_ref()
                .map(|m| m.to_string())
                .or(a.district_id.as_ref().map(|d| d.to_string()))
                .unwrap_or_default()),
            det = a.detected_at.format("%Y-%m-%d %H:%M UTC"),
            count = a.count,
            expl = match &a.status_reason {
                Some(r) => format!("{}<br><i>{}</i>", esc(&a.evidence.explanation), esc(r)),
                None => esc(&a.evidence.explanation),
            },
            wo = a
                .work_order_id
                .map(|w| format!("<a href=\"/api/v1/work-orders/{w}\">#{w}</a>"))
                .unwrap_or_default(),
        );
    }
    if alerts.is_empty() {
        rows.push_str("<tr><td colspan=\"9\">No open alerts.</td></tr>");
    }
    let now = chrono::Utc::now();
    let mut orders = String::new();
    let active = s.store.active_work_orders().await?;
    for o in &active {
        let deadline = match o.deadline(now) {
            Some(d) if d.breached => {
                format!("<b>late</b> by {} min ({})", -d.minutes_left, d.measures)
            }
            Some(d) => format!("{} min left ({})", d.minutes_left, d.measures),
            None => "none".into(),
        };
        let _ = write!(
            orders,
            "<tr><td><a href=\"/api/v1/work-orders/{id}\">{id}</a></td><td>{kind}</td><td>{prio}</td>\
             <td>{status}</td><td>{crew}</td><td>{deadline}</td><td>{summary}</td></tr>",
            id = o.id,
            kind = esc(o.kind.as_str()),
            prio = esc(o.priority.as_str()),
            status = esc(o.status.as_str()),
            crew = esc(o.crew_id.as_ref().map(|c| c.as_str()).unwrap_or("-")),
            summary = esc(&o.summary),
        );
    }
    if active.is_empty() {
        orders.push_str("<tr><td colspan=\"7\">No active work orders.</td></tr>");
    }
    let mut precision = String::new();
    for r in s.dispatcher.outcomes().await? {
        let _ = write!(
            precision,
            "<tr><td>{kind}</td><td>{esc_n}</td><td>{conf}</td><td>{fp}</td><td>{pend}</td><td>{prec}</td></tr>",
            kind = esc(r.kind.as_str()),
            esc_n = r.escalated,
            conf = r.confirmed,
            fp = r.false_positive,
            pend = r.pending,
            prec = r
                .precision
                .map(|p| format!("{:.0} %", p * 100.0))
                .unwrap_or_else(|| "-".into()),
        );
    }
    if precision.is_empty() {
        precision.push_str("<tr><td colspan=\"6\">No escalated alerts yet.</td></tr>");
    }
    Ok(Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"5\"><title>leakwatch: open alerts</title>\
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;font-size:.9rem}}th{{background:#eee}}</style>\
</head><body><h1>Open alerts ({n})</h1>\
<p>Detected at is event time (when the meter measured it). API: <a href=\"/api/v1/alerts\">/api/v1/alerts</a>, \
<a href=\"/api/v1/work-orders\">work orders</a>, <a href=\"/api/v1/crews\">crews</a>, \
<a href=\"/metrics\">metrics</a>.</p>\
<table><thead><tr><th>id</th><th>kind</th><th>severity</th><th>status</th><th>subject</th>\
<th>detected at</th><th>count</th><th>evidence</th><th>work order</th></tr></thead><tbody>{rows}</tbody></table>\
<h2>Active work orders ({m})</h2>\
<table><thead><tr><th>id</th><th>kind</th><th>priority</th><th>status</th><th>crew</th><th>deadline</th>\
<th>summary</th></tr></thead><tbody>{orders}</tbody></table>\
<h2>Detectors confirmed on site</h2>\
<table><thead><tr><th>alert kind</th><th>escalated</th><th>confirmed leak</th><th>false positive</th>\
<th>awaiting finding</th><th>precision</th></tr></thead><tbody>{precision}</tbody></table>\
</body></html>",
        n = alerts.len(),
        m = active.len()
    ))
    .into_response())
}
