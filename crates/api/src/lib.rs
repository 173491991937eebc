//! The HTTP face of leakwatch: the REST API under `/api/v1` (the operator contract of
//! DESIGN.md), health and readiness, Prometheus metrics, and the minimal console
//! page at `/`.
//!
//! Handlers are thin: they parse and validate the request, call the store or the
//! dispatcher, and map every failure to a JSON error in one place ([`error`]). This
//! crate owns no rule and no SQL.

pub mod auth;
mod error;
mod extract;
mod page;
mod routes;
pub mod tls;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use leakwatch_dispatch::Dispatcher;
use leakwatch_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use tokio::net::TcpListener;

pub use error::ApiError;

/// Tells `/readyz` whether an MQTT session is up (connected, subscriptions granted).
pub type BrokerProbe = Arc<dyn Fn() -> bool + Send + Sync>;

/// The detection task's progress, shared with `GET /api/v1/detection`.
#[derive(Debug)]
pub struct DetectionStatus {
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
    /// When set, `/api/v1` and `/` require `Authorization: Bearer <token>` (or
    /// `?token=` on the page).
    pub api_token: Option<String>,
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let protected = routes::api()
        .merge(page::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(routes::health())
        .merge(protected)
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
        .layer(middleware::from_fn(record_request))
}

/// Serves `router(state)` on an already bound listener until `shutdown` resolves, so
/// tests can bind port 0 and read the port back.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
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
    axum::serve(tls::TlsListener::new(listener, tls)?, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn require_token(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(expected) = state.api_token.as_deref() else {
        req.extensions_mut().insert(auth::Principal {
            name: "api".to_owned(),
            role: auth::Role::Admin,
            crew: None,
            credential: auth::Credential::Open,
        });
        return next.run(req).await;
    };
    let bearer = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    if bearer == Some(expected) || query == Some(expected) {
        req.extensions_mut().insert(auth::Principal {
            name: "api".to_owned(),
            role: auth::Role::Admin,
            crew: None,
            credential: auth::Credential::Token,
        });
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send Authorization: Bearer <http.api_token>",
        )
        .into_response()
    }
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
