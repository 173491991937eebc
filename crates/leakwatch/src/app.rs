//! Starting and stopping the whole service in one process.

use crate::config::{Config, DatabaseConfig};
use crate::{broker, crews, detection, telemetry};
use anyhow::{Context, bail};
use leakwatch_api::AppState;
use leakwatch_dispatch::Dispatcher;
use leakwatch_ingest::{BrokerConfig, IngestHealth};
use leakwatch_store::Store;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How to start.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// When a configured port is taken, pick a free one instead of failing (demo).
    pub pick_free_ports: bool,
}

/// A started service.
pub struct Running {
    pub http_addr: SocketAddr,
    /// The broker the ingestor uses (embedded or external).
    pub mqtt_host: String,
    pub mqtt_port: u16,
    pub embedded_broker: bool,
    pub store: Store,
    pub dispatcher: Dispatcher,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// A future that resolves when `tx` says stop.
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn bind_http(addr: SocketAddr, pick_free: bool) -> anyhow::Result<std::net::TcpListener> {
    match std::net::TcpListener::bind(addr) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && pick_free => {
            Ok(std::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0))?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "http.listen {addr} is already in use; choose another address with \
             LEAKWATCH__HTTP__LISTEN=127.0.0.1:8081 (or [http] listen in the config file)"
        ),
        Err(e) => Err(e).with_context(|| format!("cannot listen on http.listen {addr}")),
    }
}

/// Starts store, broker (embedded unless `mqtt.url` is set), ingestor, detectors,
/// dispatcher and HTTP server.
///
/// HTTP listens first: while the store does not answer, start-up waits for it with
/// backoff (up to `database.wait_s`), saying so in the log, and meanwhile `/healthz`
/// answers and `/readyz` says what is awaited (503). An external broker that does not
/// answer does not stop start-up either: the ingestor connects when it can, and
/// `/readyz` stays 503 until it has subscribed.
pub async fn start(cfg: &Config, opts: StartOptions) -> anyhow::Result<Running> {
    let metrics = telemetry::prometheus();
    let std_listener = bind_http(cfg.http.listen, opts.pick_free_ports)?;
    std_listener.set_nonblocking(true)?;
    let http_addr = std_listener.local_addr()?;
    let waiting_for = Arc::new(Mutex::new(format!(
        "the store at database.url {}",
        cfg.database.url
    )));
    let (stop_waiting, stop_waiting_rx) = watch::channel(false);
    let waiting_server = tokio::spawn(leakwatch_api::serve_waiting(
        tokio::net::TcpListener::from_std(std_listener.try_clone()?)?,
        waiting_for.clone(),
        stopped(stop_waiting_rx),
    ));
    let store = wait_for_store(&cfg.database, &waiting_for).await;
    let _ = stop_waiting.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), waiting_server).await;
    let store = store?;
    tracing::info!(backend = store.backend(), "store ready, migrations applied");

    let (mqtt_host, mqtt_port, embedded) = if let Some(url) = &cfg.mqtt.url {
        (url.host.clone(), url.port, false)
    } else {
        let wanted = cfg.mqtt.embedded_listen;
        let listen = broker::choose_listen(wanted, opts.pick_free_ports)?;
        if listen != wanted {
            tracing::warn!(%wanted, chosen = %listen, "MQTT port taken; the embedded broker uses another");
        }
        broker::start(listen, leakwatch_wire::MAX_PAYLOAD_BYTES * 4)?;
        tracing::info!(%listen, "embedded MQTT broker started");
        (listen.ip().to_string(), listen.port(), true)
    };

    let listener = tokio::net::TcpListener::from_std(std_listener)?;

    let (notice_tx, notice_rx) = mpsc::unbounded_channel();
    let dispatcher = Dispatcher::new(store.clone(), cfg.dispatch.clone()).with_notifier(notice_tx);
    let health = Arc::new(IngestHealth::default());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (stored_tx, stored_rx) = mpsc::channel(64);
    let mut tasks = Vec::new();

    tasks.push(tokio::spawn(leakwatch_ingest::run(
        BrokerConfig {
            host: mqtt_host.clone(),
            port: mqtt_port,
            client_id: cfg.mqtt.client_id.clone(),
            prefix: cfg.mqtt.prefix.clone(),
            keep_alive: Duration::from_secs(cfg.mqtt.keep_alive_s.max(5)),
            inflight: cfg.mqtt.inflight,
        },
        cfg.ingest.clone(),
        store.clone(),
        stored_tx,
        health.clone(),
        stopped(shutdown_rx.clone()),
    )));
    tasks.push(tokio::spawn(crews::run(
        crews::CrewChannelConfig {
            host: mqtt_host.clone(),
            port: mqtt_port,
            client_id: format!("{}-crews", cfg.mqtt.client_id),
            prefix: cfg.mqtt.crew_prefix.clone(),
            keep_alive: Duration::from_secs(cfg.mqtt.keep_alive_s.max(5)),
        },
        dispatcher.clone(),
        store.clone(),
        notice_rx,
        stopped(shutdown_rx.clone()),
    )));
    tasks.push(tokio::spawn(leakwatch_ingest::retain_dead_letters(
        store.clone(),
        cfg.ingest.clone(),
        DEAD_LETTER_RETENTION_EVERY,
        stopped(shutdown_rx.clone()),
    )));
    tasks.push(tokio::spawn(supervise(
        dispatcher.clone(),
        Duration::from_secs(cfg.dispatch.check_every_s),
        stopped(shutdown_rx.clone()),
    )));
    let detection_status = Arc::new(leakwatch_api::DetectionStatus::default());
    tasks.push(tokio::spawn(detection::run(
        cfg.detect.clone(),
        store.clone(),
        dispatcher.clone(),
        stored_rx,
        detection_status.clone(),
    )));

    let state = AppState {
        store: store.clone(),
        dispatcher: dispatcher.clone(),
        metrics: Some(metrics),
        broker_up: Arc::new(move || health.broker_connected()),
        detection: detection_status,
        api_token: cfg.http.api_token.as_ref().map(|t| t.expose().to_owned()),
    };
    let http_stop = stopped(shutdown_rx);
    tasks.push(tokio::spawn(async move {
        if let Err(e) = leakwatch_api::serve(listener, state, http_stop).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }));
    tracing::info!(%http_addr, "HTTP API listening");

    Ok(Running {
        http_addr,
        mqtt_host,
        mqtt_port,
        embedded_broker: embedded,
        store,
        dispatcher,
        shutdown,
        tasks,
    })
}

/// How often dead-letter retention runs (and once at start-up).
const DEAD_LETTER_RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Connects to the store, retrying with backoff while it does not answer, for up to
/// `database.wait_s`; says what it waits for in the log and in `waiting_for` (shown
/// by `/readyz`). An error retrying cannot cure (a bad URL, a failed migration) ends
/// the wait at once.
async fn wait_for_store(db: &DatabaseConfig, waiting_for: &Mutex<String>) -> anyhow::Result<Store> {
    let started = Instant::now();
    let limit = Duration::from_secs(db.wait_s);
    let mut backoff = Duration::from_millis(250);
    loop {
        // Each attempt is bounded, so the wait is reported at least this often.
        let left = limit
            .saturating_sub(started.elapsed())
            .clamp(Duration::from_secs(1), Duration::from_secs(15));
        let attempt = tokio::time::timeout(left, Store::connect(db.url.expose())).await;
        let error = match attempt {
            Ok(Ok(store)) => {
                if started.elapsed() > Duration::from_secs(1) {
                    tracing::info!(waited_s = started.elapsed().as_secs(), "the store answers");
                }
                return Ok(store);
            }
            Ok(Err(e)) if e.is_permanent_at_connect() => {
                return Err(e)
                    .with_context(|| format!("cannot open the store at database.url {}", db.url));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer".to_owned(),
        };
        if started.elapsed() + backoff > limit {
            anyhow::bail!(
                "cannot open the store at database.url {}: {error} (waited {} s, database.wait_s = {})",
                db.url,
                started.elapsed().as_secs(),
                db.wait_s
            );
        }
        tracing::warn!(url = %db.url, error, waited_s = started.elapsed().as_secs(),
            retry_in_ms = backoff.as_millis() as u64, limit_s = db.wait_s,
            "waiting for the store");
        if let Ok(mut w) = waiting_for.lock() {
            *w = format!(
                "the store at database.url {} (waiting {} s of database.wait_s = {}: {error})",
                db.url,
                started.elapsed().as_secs(),
                db.wait_s
            );
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Runs the dispatcher's supervisor pass (acceptance timeouts, unassigned urgent
/// orders, deadline breaches) every `every` until `shutdown`.
async fn supervise(
    dispatcher: Dispatcher,
    every: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => match dispatcher.tick(chrono::Utc::now()).await {
                Ok(r) if r != Default::default() => tracing::info!(
                    acceptance_timeouts = r.acceptance_timeouts,
                    assigned = r.assigned,
                    breaches = r.breaches,
                    "dispatch supervisor pass"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "dispatch supervisor pass failed"),
            },
        }
    }
}

impl Running {
    /// Stops taking messages, lets the batch in hand commit, stops HTTP, closes the
    /// store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
        self.store.close().await;
    }
}

pub use crate::config::redact;
