//! The engineer's review pages besides the inbox: the suppressions made with
//! dismissals (listed, revocable) and the detector quality page (per alert kind:
//! raised, escalated, confirmed on site, false positives, precision).
//!
//! Times: when someone acted (made or revoked a suppression) is wall-clock time;
//! what a suppression is compared with (its `until`, the findings it kept quiet) is
//! the detectors' event time. Both in the utility's zone, labelled.

use crate::{PageError, Shared, Viewer, check_csrf, local, page, require};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use leakwatch_api::AppState;
use leakwatch_api::auth::Role;
use leakwatch_core::Suppression;
use maud::{Markup, html};
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/suppressions", get(list))
        .route("/console/suppressions/{id}/revoke", post(revoke))
        .route("/console/quality", get(quality))
}

/// Suppressions are the engineers' (and admins').
const REVIEW: &[Role] = &[Role::Engineer];
/// The quality figures: the control room.
const VIEW: &[Role] = &[Role::Engineer, Role::Dispatcher];

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    /// `all` to include the ended ones.
    #[serde(default)]
    show: String,
}

/// The suppression's state in words.
fn state_words(c: &crate::Console, s: &Suppression) -> String {
    match (&s.ended_at, s.end_reason.as_deref()) {
        (Some(at), Some("revoked")) => format!(
            "revoked by {} at {}",
            s.ended_by.as_deref().unwrap_or("?"),
            local(c, *at)
        ),
        (Some(at), reason) => format!(
            "ended at {} by {}: {}",
            local(c, *at),
            s.ended_by.as_deref().unwrap_or("?"),
            reason.unwrap_or("")
        ),
        (None, _) => "holding".into(),
    }
}

/// One table of suppressions; `csrf` when the caller may revoke.
pub(crate) fn table(c: &crate::Console, items: &[Suppression], csrf: Option<&str>) -> Markup {
    html! {
        table class="suppressions" {
            thead { tr {
                th { "#" } th { "kind" } th { "on" } th { "reason" } th { "made (review time)" }
                th { "until (event time)" } th { "reopens above" } th { "kept quiet" } th { "state" }
                @if csrf.is_some() { th {} }
            } }
            tbody #suppressions-body {
                @if items.is_empty() { tr { td colspan="10" { "No suppression." } } }
                @for s in items {
                    tr data-suppression-id=(s.id) class=[s.ended_at.is_some().then_some("ended")] {
                        td { (s.id) }
                        td { (s.kind.as_str()) }
                        td { (s.scope.to_string()) }
                        td { (s.reason) " · " a href={"/console/alerts/" (s.alert_id)} { "alert #" (s.alert_id) } }
                        td { (local(c, s.created_at)) " by " (s.created_by) }
                        td { @match s.until { Some(u) => (local(c, u)), None => "until revoked or the pattern changes" } }
                        td { (format!("{:.3} {}", s.break_above(), s.unit)) " (dismissed " (format!("{:.3}", s.observed)) " + " (format!("{:.0}", s.margin * 100.0)) " %)" }
                        td { (s.suppressed) @if let Some(t) = s.last_suppressed_at { br; span class="small" { "last " (local(c, t)) " (event time)" } } }
                        td class="state" { (state_words(c, s))
                            @if let Some(a) = s.broken_by_alert { " · " a href={"/console/alerts/" (a)} { "alert #" (a) } } }
                        @if let Some(t) = csrf {
                            td { @if s.is_active() {
                                form method="post" action={"/console/suppressions/" (s.id) "/revoke"} class="inline" {
                                    input type="hidden" name="_csrf" value=(t);
                                    button type="submit" class="revoke" { "Revoke" }
                                }
                            } }
                        }
                    }
                }
            }
        }
    }
}

async fn list(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    axum::Extension(c): Shared,
    Query(q): Query<ListQuery>,
) -> Result<Markup, PageError> {
    require(&p, REVIEW, "see the suppressions")?;
    let all = q.show == "all";
    let items = s.store.list_suppressions(!all, 500).await?;
    let csrf = p.csrf_token().unwrap_or_default().to_owned();
    let body = html! {
        p { a href="/console/alerts" { "← inbox" } }
        h1 { "Suppressions" }
        p class="hint" {
            "Made when dismissing an alert: no new alert of that kind on that meter (or district) while one holds, "
            "unless the detector's evidence exceeds the dismissed evidence by the margin (then the alert opens and the suppression ends). "
            "Times in " (c.cfg.time_zone.name()) "; \"made\" is when the engineer acted, \"until\" and \"last\" are the detectors' event time."
        }
        p { @if all { a href="/console/suppressions" { "Only those holding" } } @else { a href="/console/suppressions?show=all" { "Show ended ones too" } } }
        (table(&c, &items, Some(&csrf)))
    };
    Ok(page(&p, "Suppressions", "alerts", body))
}

#[derive(Debug, Deserialize)]
struct RevokeForm {
    #[serde(default)]
    _csrf: String,
}

async fn revoke(
    Viewer(p): Viewer,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<RevokeForm>,
) -> Result<Response, PageError> {
    require(&p, REVIEW, "revoke suppressions")?;
    check_csrf(&p, &headers, Some(&f._csrf))?;
    s.store
        .revoke_suppression(id, p.actor(), chrono::Utc::now())
        .await?;
    Ok(Redirect::to("/console/suppressions?show=all").into_response())
}

async fn quality(Viewer(p): Viewer, State(s): State<AppState>) -> Result<Markup, PageError> {
    require(&p, VIEW, "see the detector quality")?;
    let rows = s.dispatcher.outcomes().await?;
    let body = html! {
        p { a href="/console/alerts" { "← inbox" } }
        h1 { "Detector quality" }
        p class="hint" {
            "Per alert kind. Confirmed and false positives count only what a crew found on site for the alert's own work order; "
            "an alert folded into the open repair of a leak already found is counted apart (already known), not as confirmed. "
            "Precision = confirmed / (confirmed + false positives)."
        }
        table #quality {
            thead { tr {
                th { "kind" } th { "raised" } th { "escalated" } th { "confirmed on site" }
                th { "false positives" } th { "already known" } th { "awaiting a finding" } th { "precision" }
            } }
            tbody {
                @if rows.is_empty() { tr { td colspan="8" { "No alert yet." } } }
                @for r in &rows {
                    tr data-kind=(r.kind.as_str()) {
                        td { (r.kind.as_str()) }
                        td class="raised" { (r.raised) }
                        td class="escalated" { (r.escalated) }
                        td class="confirmed" { (r.confirmed) }
                        td class="false-positive" { (r.false_positive) }
                        td class="known" { (r.known_leak) }
                        td class="pending" { (r.pending) }
                        td class="precision" { @match r.precision { Some(x) => (format!("{:.0} %", x * 100.0)), None => "-" } }
                    }
                }
            }
        }
    };
    Ok(page(&p, "Detector quality", "alerts", body))
}

#[cfg(test)]
mod tests {
    //! Who may see and do what on these pages, over real HTTP; CSRF on revoke.

    use leakwatch_api::AppState;
    use leakwatch_api::auth::Role;
    use leakwatch_core::{AlertKind, DistrictId, Evidence, Finding, MeterId, Severity};
    use leakwatch_dispatch::{DispatchConfig, Dispatcher};
    use leakwatch_store::{AccountStore, NewAccount, Store};
    use serde_json::json;
    use std::sync::Arc;

    const PASSWORD: &str = "a long enough test password";

    async fn start() -> (String, Store, Dispatcher) {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let dispatcher = Dispatcher::new(store.clone(), DispatchConfig::default());
        let hash = leakwatch_api::secret::hash_password(PASSWORD).unwrap();
        for (name, role) in [
            ("eng", Role::Engineer),
            ("disp", Role::Dispatcher),
            ("adm", Role::Admin),
        ] {
            store
                .account_store()
                .create_account(
                    &NewAccount {
                        name,
                        role,
                        crew: None,
                        password_hash: &hash,
                    },
                    "test",
                    chrono::Utc::now(),
                )
                .await
                .unwrap();
        }
        let state = AppState {
            store: store.clone(),
            dispatcher: dispatcher.clone(),
            metrics: None,
            broker_up: Arc::new(|| true),
            crews_up: Arc::new(|| true),
            detection: Arc::new(Default::default()),
            auth: Arc::new(leakwatch_api::authn::Auth::new(Default::default())),
            limits: Default::default(),
            survey: Arc::new(Default::default()),
        };
        let app = leakwatch_api::router_with(state, crate::routes(Default::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (base, store, dispatcher)
    }

    async fn login(base: &str, user: &str) -> (reqwest::Client, String) {
        let c = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = c
            .post(format!("{base}/login"))
            .json(&json!({ "username": user, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login {user}");
        let v: serde_json::Value = r.json().await.unwrap();
        (c, v["csrf_token"].as_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn suppressions_are_the_engineers_and_quality_the_control_rooms() {
        let (base, store, d) = start().await;
        let t = chrono::Utc::now();
        let (a, _) = store
            .record_finding(&Finding {
                kind: AlertKind::ContinuousFlow,
                severity: Severity::Warning,
                meter_id: Some(MeterId::parse("M-1").unwrap()),
                district_id: Some(DistrictId::parse("D1").unwrap()),
                detected_at: t,
                evidence: Evidence {
                    rule: "r".into(),
                    observed: 0.05,
                    expected: None,
                    threshold: 0.02,
                    unit: "m3/h".into(),
                    window_start: t,
                    window_end: t,
                    explanation: "x".into(),
                    known: None,
                },
            })
            .await
            .unwrap();
        let (_, sup) = d
            .dismiss_suppressing(
                a.id,
                "pilot light",
                &leakwatch_core::SuppressRequest {
                    scope: None,
                    until: None,
                    margin: None,
                },
                "eng",
            )
            .await
            .unwrap();
        let (eng, eng_csrf) = login(&base, "eng").await;
        let (disp, disp_csrf) = login(&base, "disp").await;
        let (adm, _) = login(&base, "adm").await;
        let get = |c: &reqwest::Client, p: &str| {
            let (c, url) = (c.clone(), format!("{base}{p}"));
            async move { c.get(url).send().await.unwrap().status().as_u16() }
        };
        assert_eq!(get(&eng, "/console/suppressions").await, 200);
        assert_eq!(get(&adm, "/console/suppressions").await, 200);
        assert_eq!(get(&disp, "/console/suppressions").await, 403);
        assert_eq!(get(&eng, "/console/quality").await, 200);
        assert_eq!(get(&disp, "/console/quality").await, 200);
        let page = eng
            .get(format!("{base}/console/suppressions"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains("pilot light") && page.contains("holding"),
            "{page}"
        );

        let revoke = |c: &reqwest::Client, csrf: Option<&str>| {
            let mut form = vec![];
            if let Some(t) = csrf {
                form.push(("_csrf", t.to_owned()));
            }
            let (c, url, origin) = (
                c.clone(),
                format!("{base}/console/suppressions/{}/revoke", sup.id),
                base.clone(),
            );
            async move {
                c.post(url)
                    .header("origin", origin)
                    .form(&form)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        // A dispatcher may not; an engineer without the token is refused; with it,
        // revoked (and a second time is a conflict).
        assert_eq!(revoke(&disp, Some(&disp_csrf)).await, 403);
        assert_eq!(revoke(&eng, None).await, 403);
        assert!(
            store
                .get_suppression(sup.id)
                .await
                .unwrap()
                .unwrap()
                .is_active()
        );
        assert_eq!(revoke(&eng, Some(&eng_csrf)).await, 303);
        let ended = store.get_suppression(sup.id).await.unwrap().unwrap();
        assert_eq!(
            (ended.ended_by.as_deref(), ended.end_reason.as_deref()),
            (Some("eng"), Some("revoked"))
        );
        assert_eq!(revoke(&eng, Some(&eng_csrf)).await, 409);
    }
}
