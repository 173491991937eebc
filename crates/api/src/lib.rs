//! The HTTP face of leakwatch: the REST API under `/api/v1` (the operator contract of
//! DESIGN.md), health and readiness, Prometheus metrics, and the minimal console
//! page at `/`.
//!
//! Handlers are thin: they parse and validate the request, call the store or the
//! dispatcher, and map every failure to a JSON error in one place ([`error`]). This
//! crate owns no rule and no SQL.

pub mod accounts;
pub mod auth;
pub mod authn;
pub mod authz;
mod error;
mod extract;
pub mod limits;
pub mod openapi;
mod page;
mod routes;
pub mod secret;
pub mod survey;
pub mod throttle;
pub mod tls;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use leakwatch_dispatch::Dispatcher;
use leakwatch_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use tokio::net::TcpListener;

pub use error::ApiError;
pub use routes::API_ROUTES;

/// Tells `/readyz` whether an MQTT session is up (connected, subscriptions granted).
pub type BrokerProbe = Arc<dyn Fn() -> bool + Send + Sync>;

/// A question to the detection task about one meter (`GET
/// /api/v1/meters/{id}/learning`): the answer is the meter's learning state as JSON,
/// `None` when the detectors have not seen its readings.
pub type LearningQuery = (
    leakwatch_core::MeterId,
    tokio::sync::oneshot::Sender<Option<serde_json::Value>>,
);

/// The detection task's progress, shared with `GET /api/v1/detection`.
#[derive(Debug)]
pub struct DetectionStatus {
    /// Customer meters with readings still learning their pattern, and learned.
    meters_learning: AtomicU64,
    meters_learned: AtomicU64,
    /// Where the detection task takes questions about single meters, once running.
    queries: std::sync::OnceLock<tokio::sync::mpsc::Sender<LearningQuery>>,
    readings: AtomicU64,
    events: AtomicU64,
    meters: AtomicU64,
    /// Unix seconds of the watermark; `i64::MIN` while there is none.
    watermark: AtomicI64,
    checkpoints: AtomicU64,
    restored_meters: AtomicU64,
}

impl Default for DetectionStatus {
    fn default() -> Self {
        Self {
            meters_learning: AtomicU64::new(0),
            meters_learned: AtomicU64::new(0),
            queries: std::sync::OnceLock::new(),
            readings: AtomicU64::new(0),
            events: AtomicU64::new(0),
            meters: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            checkpoints: AtomicU64::new(0),
            restored_meters: AtomicU64::new(0),
        }
    }
}

impl DetectionStatus {
    /// A batch went through the detectors.
    pub fn processed(&self, readings: usize, events: usize, meters: usize, watermark: Option<i64>) {
        self.readings.fetch_add(readings as u64, Ordering::Relaxed);
        self.events.fetch_add(events as u64, Ordering::Relaxed);
        self.meters.store(meters as u64, Ordering::Relaxed);
        if let Some(w) = watermark {
            self.watermark.store(w, Ordering::Relaxed);
        }
    }

    /// How many customer meters are learning and how many have learned.
    pub fn learning(&self, learning: u64, learned: u64) {
        self.meters_learning.store(learning, Ordering::Relaxed);
        self.meters_learned.store(learned, Ordering::Relaxed);
    }

    /// The detection task takes questions about single meters on `tx` from now on.
    pub fn answer_queries(&self, tx: tokio::sync::mpsc::Sender<LearningQuery>) {
        let _ = self.queries.set(tx);
    }

    /// Asks the detection task about `meter`: `Err` when it is not running or does
    /// not answer within `within`.
    pub async fn ask_learning(
        &self,
        meter: leakwatch_core::MeterId,
        within: std::time::Duration,
    ) -> Result<Option<serde_json::Value>, &'static str> {
        let tx = self.queries.get().ok_or("detection is not running")?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.send((meter, reply))
            .await
            .map_err(|_| "detection has stopped")?;
        tokio::time::timeout(within, answer)
            .await
            .map_err(|_| "detection is busy; try again")?
            .map_err(|_| "detection has stopped")
    }

    pub fn checkpointed(&self) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
    }

    pub fn restored(&self, meters: usize, watermark: Option<i64>) {
        self.restored_meters.store(meters as u64, Ordering::Relaxed);
        if let Some(w) = watermark {
            self.watermark.store(w, Ordering::Relaxed);
        }
    }

    /// As the API shows it.
    pub fn to_json(&self) -> serde_json::Value {
        let wm = self.watermark.load(Ordering::Relaxed);
        let watermark = (wm != i64::MIN)
            .then(|| chrono::DateTime::from_timestamp(wm, 0))
            .flatten()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        serde_json::json!({
            "watermark": watermark,
            "readings_processed": self.readings.load(Ordering::Relaxed),
            "events_processed": self.events.load(Ordering::Relaxed),
            "meters": self.meters.load(Ordering::Relaxed),
            "checkpoints": self.checkpoints.load(Ordering::Relaxed),
            "restored_meters": self.restored_meters.load(Ordering::Relaxed),
            "meters_learning": self.meters_learning.load(Ordering::Relaxed),
            "meters_learned": self.meters_learned.load(Ordering::Relaxed),
        })
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub dispatcher: Dispatcher,
    pub metrics: Option<PrometheusHandle>,
    /// The ingestor's MQTT session.
    pub broker_up: BrokerProbe,
    /// The crews' channel's MQTT session (jobs out, positions in).
    pub crews_up: BrokerProbe,
    /// The detectors' progress (`GET /api/v1/detection`).
    pub detection: Arc<DetectionStatus>,
    /// Authentication: settings (the legacy `http.api_token`, sessions, cookies,
    /// the metrics token) and the failed-login throttle ([`authn`]).
    pub auth: Arc<authn::Auth>,
    /// Connection limit, idle and request timeouts ([`limits`]).
    pub limits: limits::HttpLimits,
    /// Programmed leak survey: obligations, capacity, risk weights.
    pub survey: Arc<leakwatch_survey::SurveyConfig>,
}

/// The whole HTTP application, without pages (see [`router_with`]).
pub fn router(state: AppState) -> Router {
    router_with(state, page::routes())
}

/// The whole HTTP application with `pages` (the console's routes) served behind
/// authentication like the API: a page gets the caller's [`auth::Principal`] in its
/// extensions (extract `Option<Principal>`), none when nobody is logged in.
pub fn router_with(state: AppState, pages: Router<AppState>) -> Router {
    let request_limit = state.limits.request;
    let protected = routes::api()
        .merge(authn::routes())
        .merge(pages)
        // Layers run outside-in from the last: authenticate, then authorize.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            authz::authorize,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            authn::authenticate,
        ));
    Router::new()
        .merge(routes::health())
        .merge(protected)
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
        .layer(middleware::from_fn(move |req, next| {
            limits::request_timeout(request_limit, req, next)
        }))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(record_request))
}

/// The Content-Security-Policy of every response: scripts, styles, fonts and
/// connections from this origin only (no inline script), images also as data/blob
/// URLs and from HTTPS tile servers, never framed, forms posted here only.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob: https:; font-src 'self'; connect-src 'self'; \
     object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// Security headers on every response (unless a handler set its own).
async fn security_headers(req: Request, next: Next) -> Response {
    use axum::http::HeaderValue;
    use axum::http::header;
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    r
}

/// Serves `router(state)` on an already bound listener until `shutdown` resolves, so
/// Serves `router(state)` on an already bound listener until `shutdown` resolves, so
/// tests can bind port 0 and read the port back.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits;
    serve_router(listener, router(state), limits, shutdown).await
}

/// Serves an application built with [`router_with`] (the API with the console's
/// pages), within the connection limits and timeouts, with each connection's peer
/// address (the login throttle counts per address).
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    limits: limits::HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        limits::Limited::new(listener, limits),
        app.into_make_service_with_connect_info::<authn::PeerAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// As [`serve`], over TLS with `tls` (see [`tls::server_config`]).
pub async fn serve_tls(
    listener: TcpListener,
    tls: std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits;
    serve_router_tls(listener, tls, router(state), limits, shutdown).await
}

/// As [`serve_router`], over TLS with `tls`.
pub async fn serve_router_tls(
    listener: TcpListener,
    tls: std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
    app: Router,
    limits: limits::HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        limits::Limited::new(tls::TlsListener::new(listener, tls)?, limits),
        app.into_make_service_with_connect_info::<authn::PeerAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Counts and times every request. Its labels come from fixed sets, so nothing a
/// client invents grows `/metrics`: the method is one of the standard ones or
/// `other`, the route is the matched route template (from the router's own list) or
/// `unmatched`, the status is one this application answers with.
async fn record_request(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    // Statuses come from this application's own handlers: a fixed set.
    let status = response.status().as_u16().to_string();
    metrics::histogram!("leakwatch_http_request_seconds", "method" => method, "route" => route, "status" => status)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a metrics label: a standard method, or `other`.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// While start-up waits for what the service needs (the store, the broker), only
/// health answers: `/healthz` 200, `/readyz` 503 saying what is awaited, anything
/// else 503. `waiting_for` is read at each request.
pub fn waiting_router(waiting_for: Arc<std::sync::Mutex<String>>) -> Router {
    use axum::routing::get;
    let ready = {
        let w = waiting_for.clone();
        move || async move {
            let what = w.lock().map(|s| s.clone()).unwrap_or_default();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(
                    serde_json::json!({ "ready": false, "store": false, "broker": false, "waiting_for": what }),
                ),
            )
        }
    };
    let fallback = move || async move {
        let what = waiting_for.lock().map(|s| s.clone()).unwrap_or_default();
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("starting: waiting for {what}"),
        )
    };
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok", "starting": true })) }),
        )
        .route("/readyz", get(ready))
        .fallback(fallback)
        .layer(middleware::from_fn(record_request))
}

/// Serves [`waiting_router`] until `shutdown` resolves.
pub async fn serve_waiting(
    listener: TcpListener,
    waiting_for: Arc<std::sync::Mutex<String>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, waiting_router(waiting_for))
        .with_graceful_shutdown(shutdown)
        .await
}

/// As [`serve_waiting`], over TLS with `tls` (a listener configured for HTTPS answers
/// HTTPS from its first second).
pub async fn serve_waiting_tls(
    listener: TcpListener,
    tls: std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
    waiting_for: Arc<std::sync::Mutex<String>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        tls::TlsListener::new(listener, tls)?,
        waiting_router(waiting_for),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_labels_come_from_fixed_sets() {
        use axum::http::Method;
        assert_eq!(method_label(&Method::GET), "GET");
        for invented in ["FOO", "BREW", "X-ANYTHING-1234"] {
            let m = Method::from_bytes(invented.as_bytes()).unwrap();
            assert_eq!(method_label(&m), "other");
        }
    }
}
