//! The console: the pages the people leakwatch is for do their work in.
//!
//! - Engineers: the alert inbox (filters, counts, live by server-sent events) and the
//!   alert detail (chart, evidence in words, history, actions) — [`engineer`].
//! - Dispatchers: the board of work orders and crews, by hand and by day plan —
//!   [`board`].
//! - Crews: the phone app, installable and working offline — [`crew`].
//! - Meters, districts and the map (engineers and dispatchers): a meter's registry
//!   data, state, consumption, alerts and orders — [`meter`]; a district's inflow
//!   against its customers, unaccounted-for gas, silent and learning meters —
//!   [`district`]; alerts, orders and crews on a map — [`map`]. Charts from
//!   [`plots`].
//! - Admins: accounts and API tokens — [`admin`].
//!
//! Server-rendered HTML (maud); the little script there is lives in files under
//! `assets/` embedded in the binary (no inline script, no CDN, no Node build); charts
//! are SVG drawn on the server. [`routes`] is mounted by the API inside its
//! authenticated part, so every handler gets the caller's [`Principal`].

pub mod admin;
pub mod board;
pub mod chart;
pub mod crew;
pub mod district;
pub mod engineer;
pub mod map;
pub mod meter;
pub mod plots;
pub mod review;
pub mod survey;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::NaiveTime;
use leakwatch_api::AppState;
use leakwatch_api::auth::{Principal, Role};
use leakwatch_core::Timestamp;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::sync::Arc;

/// How the console is set up (`[console]` in the configuration).
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The utility's time zone: every time on the pages is shown in it.
    pub time_zone: chrono_tz::Tz,
    /// When the day plan is made each day (local time); `None`: only on demand.
    pub plan_at: Option<NaiveTime>,
    /// A tile server URL template (`https://tiles.example/{z}/{x}/{y}.png`) for the
    /// map; without one the map is points over a plain background.
    pub tile_url: Option<String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            time_zone: chrono_tz::Europe::Rome,
            plan_at: NaiveTime::from_hms_opt(6, 30, 0),
            tile_url: None,
        }
    }
}

/// What the handlers share besides the API's state.
#[derive(Debug, Clone)]
pub struct Console {
    pub cfg: ConsoleConfig,
}

pub(crate) type Shared = axum::Extension<Arc<Console>>;

/// The console's routes: `/` (to the caller's start page), `/console/...` for
/// engineers and dispatchers, `/crew/...` for the crews' phone app, and the assets.
pub fn routes(cfg: ConsoleConfig) -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page))
        .route("/console/assets/{file}", get(asset))
        .merge(engineer::routes())
        .merge(board::routes())
        .merge(crew::routes())
        .merge(meter::routes())
        .merge(district::routes())
        .merge(map::routes())
        .merge(admin::routes())
        .merge(survey::routes())
        .layer(axum::Extension(Arc::new(Console { cfg })))
        .layer(middleware::from_fn(security_headers))
}

/// The pages' security headers: a CSP without inline script, no framing, nosniff,
/// no referrer across origins.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        if !h.contains_key(k) {
            h.insert(k, HeaderValue::from_static(v));
        }
    };
    set(
        h,
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; worker-src 'self'; manifest-src 'self'; frame-ancestors 'none'; \
         base-uri 'none'; form-action 'self'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    res
}

/// The caller of a page; without one, pages send the browser to the login page
/// (and the phone app's JSON answers 401).
#[derive(Debug, Clone)]
pub struct Viewer(pub Principal);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Response> {
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(Viewer(p.clone()));
        }
        let path = parts.uri.path();
        if path.starts_with("/crew/api/") || path.ends_with("/events") || path.ends_with("/rows") {
            return Err((
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({ "error": "not logged in" })),
            )
                .into_response());
        }
        let next = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        Err(Redirect::to(&format!("/login?next={}", url_encode(next))).into_response())
    }
}

/// Percent-encodes everything but unreserved characters.
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Default, serde::Deserialize)]
struct LoginQuery {
    #[serde(default)]
    error: String,
    #[serde(default)]
    next: String,
}

/// The login form; it posts to `POST /login` (the API's authentication).
async fn login_page(
    p: Option<axum::Extension<Principal>>,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Markup {
    let next = if q.next.starts_with('/') && !q.next.starts_with("//") && !q.next.starts_with("/\\")
    {
        q.next.clone()
    } else {
        "/".to_owned()
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head_common("Log in")) }
            body { main class="narrow" {
                h1 { "leakwatch" }
                @if let Some(axum::Extension(p)) = &p {
                    p { "You are logged in as " strong { (p.name) } " (" (p.role.as_str()) "). " a href="/" { "Go to your start page" } }
                }
                @match q.error.as_str() {
                    "" => {}
                    "throttled" => p #login-error class="conflict" { "Too many failed attempts: wait a few minutes and try again." }
                    _ => p #login-error class="conflict" { "Wrong user name or password." }
                }
                form #login method="post" action="/login" class="stack" {
                    input type="hidden" name="next" value=(next);
                    label { "User name " input #username name="username" autocomplete="username" required autofocus; }
                    label { "Password " input #password name="password" type="password" autocomplete="current-password" required; }
                    button #login-button type="submit" class="primary" { "Log in" }
                }
            } }
        }
    }
}

/// The start page of each role.
async fn home(Viewer(p): Viewer) -> Redirect {
    Redirect::to(match p.role {
        Role::Crew => "/crew",
        Role::Dispatcher => "/console/board",
        Role::Admin | Role::Engineer => "/console/alerts",
    })
}

/// The embedded front-end files: (name, content type, content).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css",
        include_str!("../assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript",
        include_str!("../assets/console.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../assets/icon.svg"),
    ),
];

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == file) {
        Some((_, ct, body)) => (
            [
                (header::CONTENT_TYPE, *ct),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => PageError::new(StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

/// A page that could not be shown: an HTML page with the reason (and its status).
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = match self.status {
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::CONFLICT => "Not done",
            _ => "Something went wrong",
        };
        let body = html! {
            (DOCTYPE)
            html lang="en" {
                head { (head_common(title)) }
                body { main class="narrow" {
                    h1 { (title) }
                    p #error-message { (self.message) }
                    p { a href="/" { "Back to the start page" } }
                } }
            }
        };
        (self.status, body).into_response()
    }
}

impl From<leakwatch_api::ApiError> for PageError {
    fn from(e: leakwatch_api::ApiError) -> Self {
        PageError::new(e.status, e.message)
    }
}

impl From<leakwatch_store::StoreError> for PageError {
    fn from(e: leakwatch_store::StoreError) -> Self {
        leakwatch_api::ApiError::from(e).into()
    }
}

impl From<leakwatch_dispatch::DispatchError> for PageError {
    fn from(e: leakwatch_dispatch::DispatchError) -> Self {
        leakwatch_api::ApiError::from(e).into()
    }
}

/// Only these roles (and admins) may see or do this.
pub(crate) fn require(p: &Principal, roles: &[Role], what: &str) -> Result<(), PageError> {
    if p.role == Role::Admin || roles.contains(&p.role) {
        Ok(())
    } else {
        Err(PageError::forbidden(format!(
            "{} ({}) may not {what}",
            p.name,
            p.role.as_str()
        )))
    }
}

/// A state-changing request from a browser session must carry the session's CSRF
/// token (form field `_csrf` or header `X-CSRF-Token`); bearer tokens need none.
pub(crate) fn check_csrf(
    p: &Principal,
    headers: &HeaderMap,
    form: Option<&str>,
) -> Result<(), PageError> {
    let Some(expected) = p.csrf_token() else {
        return Ok(());
    };
    let sent = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .or(form);
    if sent == Some(expected) {
        Ok(())
    } else {
        Err(PageError::forbidden(
            "the form is out of date or was not sent by this console (CSRF token missing or wrong); reload the page",
        ))
    }
}

/// `t` in the utility's time zone, e.g. `2026-12-03 16:05 CET`.
pub(crate) fn local(c: &Console, t: Timestamp) -> String {
    t.with_timezone(&c.cfg.time_zone)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

/// The clock time only, e.g. `16:05`.
pub(crate) fn clock(c: &Console, t: Timestamp) -> String {
    t.with_timezone(&c.cfg.time_zone)
        .format("%H:%M")
        .to_string()
}

/// Minutes as words: `42 min`, `3 h 05 min`, `2 d 4 h`.
pub(crate) fn duration_words(min: i64) -> String {
    let m = min.abs();
    if m < 60 {
        format!("{m} min")
    } else if m < 48 * 60 {
        format!("{} h {:02} min", m / 60, m % 60)
    } else {
        format!("{} d {} h", m / (24 * 60), (m / 60) % 24)
    }
}

pub(crate) fn head_common(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · leakwatch" }
        link rel="stylesheet" href="/console/assets/console.css";
        link rel="icon" href="/console/assets/icon.svg";
    }
}

/// The desktop pages' frame: header with the sections the caller may use, the
/// caller's name and log out.
pub(crate) fn page(p: &Principal, title: &str, section: &str, body: Markup) -> Markup {
    let links: &[(&str, &str, &[Role])] = &[
        (
            "alerts",
            "/console/alerts",
            &[Role::Engineer, Role::Dispatcher],
        ),
        (
            "board",
            "/console/board",
            &[Role::Dispatcher, Role::Engineer],
        ),
        (
            "survey",
            "/console/survey",
            &[Role::Engineer, Role::Dispatcher],
        ),
        ("crew app", "/crew", &[Role::Crew]),
        (
            "districts",
            "/console/districts",
            &[Role::Engineer, Role::Dispatcher],
        ),
        ("map", "/console/map", &[Role::Engineer, Role::Dispatcher]),
        ("accounts", "/console/admin", &[]),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                (head_common(title))
                @if let Some(t) = p.csrf_token() { meta name="csrf-token" content=(t); }
                script src="/console/assets/console.js" defer {}
            }
            body {
                header class="top" {
                    a class="brand" href="/" { "leakwatch" }
                    nav {
                        @for (name, href, roles) in links {
                            @if p.role == Role::Admin || roles.contains(&p.role) {
                                a href=(href) class=[(section == *name).then_some("here")] { (name) }
                            }
                        }
                    }
                    span class="who" { (p.name) " · " (p.role.as_str()) }
                    form method="post" action="/logout" class="logout" {
                        @if let Some(t) = p.csrf_token() { input type="hidden" name="_csrf" value=(t); }
                        button type="submit" { "Log out" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// Escapes nothing: for SVG made by [`chart`] from numbers and escaped text.
pub(crate) fn raw(s: String) -> PreEscaped<String> {
    PreEscaped(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_words() {
        assert_eq!(duration_words(5), "5 min");
        assert_eq!(duration_words(-75), "1 h 15 min");
        assert_eq!(duration_words(3 * 24 * 60 + 120), "3 d 2 h");
    }

    #[test]
    fn times_are_shown_in_the_utility_zone() {
        let c = Console {
            cfg: ConsoleConfig::default(),
        };
        let t = chrono::DateTime::parse_from_rfc3339("2026-07-01T10:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(local(&c, t), "2026-07-01 12:00 CEST");
        assert_eq!(clock(&c, t), "12:00");
    }
}
