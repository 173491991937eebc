//! The HTTP face of leakwatch: the REST API under `/api/v1` (the operator contract of
//! DESIGN.md), health and readiness, Prometheus metrics, and the minimal console
//! page at `/`.
//!
//! Handlers are thin: they parse and validate the request, call the store or the
//! dispatcher, and map every failure to a JSON error in one place ([`error`]). This
//! crate owns no rule and no SQL.

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

/// Tells `/readyz` whether the broker connection is up.
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
    pub broker_up: BrokerProbe,
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

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = state.api_token.as_deref() else {
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
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send Authorization: Bearer <http.api_token>",
        )
        .into_response()
    }
}

async fn record_request(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("leakwatch_http_request_seconds", "method" => method, "route" => route, "status" => status)
        .record(started.elapsed().as_secs_f64());
    response
}
