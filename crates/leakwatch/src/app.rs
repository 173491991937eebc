//! Starting and stopping the whole service in one process.

use crate::config::{Config, parse_mqtt_url};
use crate::{broker, crews, detection, telemetry};
use anyhow::{Context, bail};
use leakwatch_api::AppState;
use leakwatch_dispatch::Dispatcher;
use leakwatch_ingest::{BrokerConfig, IngestHealth};
use leakwatch_store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
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

fn bind_http(listen: &str, pick_free: bool) -> anyhow::Result<std::net::TcpListener> {
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("http.listen {listen:?} is not host:port"))?;
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
pub async fn start(cfg: &Config, opts: StartOptions) -> anyhow::Result<Running> {
    let metrics = telemetry::prometheus();
    let store = Store::connect(&cfg.database.url).await.with_context(|| {
        format!(
            "cannot open the store at database.url {}",
            redact(&cfg.database.url)
        )
    })?;
    tracing::info!(backend = store.backend(), "store ready, migrations applied");

    let (mqtt_host, mqtt_port, embedded) = if cfg.mqtt.url.is_empty() {
        let wanted: SocketAddr = cfg.mqtt.embedded_listen.parse()?;
        let listen = broker::choose_listen(wanted, opts.pick_free_ports)?;
        if listen != wanted {
            tracing::warn!(%wanted, chosen = %listen, "MQTT port taken; the embedded broker uses another");
        }
        broker::start(listen, leakwatch_wire::MAX_PAYLOAD_BYTES * 4)?;
        tracing::info!(%listen, "embedded MQTT broker started");
        (listen.ip().to_string(), listen.port(), true)
    } else {
        let a = parse_mqtt_url(&cfg.mqtt.url).map_err(|e| anyhow::anyhow!("mqtt.url: {e}"))?;
        (a.host, a.port, false)
    };

    let listener = bind_http(&cfg.http.listen, opts.pick_free_ports)?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let http_addr = listener.local_addr()?;

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
        api_token: Some(cfg.http.api_token.clone()).filter(|t| !t.is_empty()),
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

/// A database URL without its password, for messages (the store's, so there is one).
pub use leakwatch_store::redact;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
