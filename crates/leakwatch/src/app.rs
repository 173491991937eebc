//! Starting and stopping the whole service in one process.
//!
//! Every task runs in one of two [`TaskTracker`]s, each stopped by its own
//! [`CancellationToken`]: *intake* (the ingestor, HTTP, the dispatch supervisor, the
//! demo's crews) and *outbound* (the crews' channel, which sends the jobs). Detection
//! has no token: it drains what the ingestor committed and ends when the ingestor
//! does. [`Running::shutdown`] stops intake, waits for it and detection to drain,
//! then stops the crews' channel (so jobs created while draining still go out), and
//! closes the store only after every task has ended, aborting what overruns its
//! deadline.

use crate::config::{Config, DatabaseConfig, EmbeddedAuth};
use crate::{broker, detection, telemetry};
use anyhow::{Context, bail};
use leakwatch_api::AppState;
use leakwatch_core::device::DeviceKind;
use leakwatch_crews::CrewChannelConfig;
use leakwatch_dispatch::Dispatcher;
use leakwatch_ingest::BrokerConfig;
use leakwatch_mqtt::{Login, Security, SessionHealth};
use leakwatch_store::Store;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long intake (the batch in hand, detection's drain, its checkpoint) may take
/// to stop before what is left is aborted.
const INTAKE_DEADLINE: Duration = Duration::from_secs(15);
/// How long the crews' channel may take to send the jobs it holds.
const OUTBOUND_DEADLINE: Duration = Duration::from_secs(5);
/// How often the embedded broker reloads the registry's credentials: an issued
/// credential starts working, a revoked one stops admitting new connections, within
/// this time.
pub const LOGINS_REFRESH: Duration = Duration::from_secs(10);
/// The identity leakwatch mints for its own sessions on the embedded broker (valid
/// for this process only; a registry identity of the same name is shadowed).
pub const INTERNAL_USER: &str = "leakwatch-internal";

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
    /// Who may log in to the embedded broker (`mqtt.embedded_auth = registry`): the
    /// demo mints its simulated devices' identities here.
    pub logins: Option<broker::Logins>,
    /// The login and TLS leakwatch's own sessions use on the broker.
    pub security: Security,
    pub store: Store,
    pub dispatcher: Dispatcher,
    intake: Group,
    outbound: Group,
}

/// Tasks stopped together: a token to stop them, a tracker to wait for them, and
/// their abort handles for when they overrun.
#[derive(Default)]
struct Group {
    stop: CancellationToken,
    tracker: TaskTracker,
    aborts: Vec<AbortHandle>,
}

impl Group {
    fn spawn<F>(&mut self, make: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = self.tracker.spawn(make(self.stop.clone()));
        self.aborts.push(task.abort_handle());
    }

    /// Cancels the group and waits up to `deadline` for its tasks; aborts the rest.
    async fn stop(self, what: &str, deadline: Duration) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tracker.len(),
                ?deadline,
                "{what} did not stop in time; aborting what is left"
            );
            for a in &self.aborts {
                a.abort();
            }
            self.tracker.wait().await;
        }
    }
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
    leakwatch_dispatch::failpoints_from_env();
    // Files named by the configuration are read before anything starts.
    let external_security = match &cfg.mqtt.url {
        Some(_) => Some(cfg.mqtt.security()?),
        None => None,
    };
    let https = match (&cfg.http.tls.cert, &cfg.http.tls.key) {
        (Some(cert), Some(key)) => Some(
            leakwatch_api::tls::server_config(cert, key)
                .map_err(|e| anyhow::anyhow!("http.tls: {e}"))?,
        ),
        _ => None,
    };
    let std_listener = bind_http(cfg.http.listen, opts.pick_free_ports)?;
    std_listener.set_nonblocking(true)?;
    let http_addr = std_listener.local_addr()?;
    let waiting_for = Arc::new(Mutex::new(format!(
        "the store at database.url {}",
        cfg.database.url
    )));
    let (stop_waiting, stop_waiting_rx) = watch::channel(false);
    let waiting_listener = tokio::net::TcpListener::from_std(std_listener.try_clone()?)?;
    let waiting_server = match &https {
        Some(tls) => tokio::spawn(leakwatch_api::serve_waiting_tls(
            waiting_listener,
            tls.clone(),
            waiting_for.clone(),
            stopped(stop_waiting_rx),
        )),
        None => tokio::spawn(leakwatch_api::serve_waiting(
            waiting_listener,
            waiting_for.clone(),
            stopped(stop_waiting_rx),
        )),
    };
    let store = wait_for_store(&cfg.database, &waiting_for).await;
    let _ = stop_waiting.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), waiting_server).await;
    let store = store?;
    tracing::info!(backend = store.backend(), "store ready, migrations applied");
    // A fresh deployment's first admin, from the environment (issue 12).
    crate::accounts::bootstrap_admin(&store).await?;

    let mut logins = None;
    let (mqtt_host, mqtt_port, embedded, security) = if let Some(url) = &cfg.mqtt.url {
        let security = external_security.unwrap_or_default();
        (url.host.clone(), url.port, false, security)
    } else {
        let wanted = cfg.mqtt.embedded_listen;
        let listen = broker::choose_listen(wanted, opts.pick_free_ports)?;
        if listen != wanted {
            tracing::warn!(%wanted, chosen = %listen, "MQTT port taken; the embedded broker uses another");
        }
        let mut security = Security::default();
        if cfg.mqtt.embedded_auth == EmbeddedAuth::Registry {
            let l = broker::Logins::new();
            let creds = store
                .device_credentials()
                .await
                .context("cannot read the device credentials for the embedded broker")?;
            l.set_registry(&creds);
            let secret = l.mint(INTERNAL_USER, DeviceKind::Service)?;
            security.login = Some(Login::new(INTERNAL_USER, secret));
            logins = Some(l);
        } else {
            tracing::warn!(
                "mqtt.embedded_auth = anonymous: anyone reaching {listen} may publish and read anything"
            );
        }
        broker::start_with_logins(listen, leakwatch_mqtt::BROKER_MAX_PACKET, logins.clone())?;
        tracing::info!(%listen, auth = ?cfg.mqtt.embedded_auth, "embedded MQTT broker started");
        (listen.ip().to_string(), listen.port(), true, security)
    };

    let listener = tokio::net::TcpListener::from_std(std_listener)?;

    let (notice_tx, notice_rx) = mpsc::unbounded_channel();
    let dispatcher = Dispatcher::new(store.clone(), cfg.dispatch.clone()).with_notifier(notice_tx);
    let ingest_health = leakwatch_ingest::ingest_health();
    let crews_health = SessionHealth::new("crews");
    let (stored_tx, stored_rx) = mpsc::channel(64);
    let mut intake = Group::default();
    let mut outbound = Group::default();

    {
        let broker = BrokerConfig {
            host: mqtt_host.clone(),
            port: mqtt_port,
            client_id: cfg.mqtt.client_id.clone(),
            prefix: cfg.mqtt.prefix.clone(),
            keep_alive: Duration::from_secs(cfg.mqtt.keep_alive_s.max(5)),
            inflight: cfg.mqtt.inflight,
            security: security.clone(),
        };
        let (ingest_cfg, store, health) =
            (cfg.ingest.clone(), store.clone(), ingest_health.clone());
        intake.spawn(move |stop| {
            leakwatch_ingest::run(
                broker,
                ingest_cfg,
                store,
                stored_tx,
                health,
                stop.cancelled_owned(),
            )
        });
    }
    {
        let channel = CrewChannelConfig {
            host: mqtt_host.clone(),
            port: mqtt_port,
            client_id: format!("{}-crews", cfg.mqtt.client_id),
            prefix: cfg.mqtt.crew_prefix.clone(),
            keep_alive: Duration::from_secs(cfg.mqtt.keep_alive_s.max(5)),
            security: security.clone(),
        };
        let (d, store, health) = (dispatcher.clone(), store.clone(), crews_health.clone());
        outbound.spawn(move |stop| {
            leakwatch_crews::run(channel, d, store, notice_rx, health, stop.cancelled_owned())
        });
    }
    if let Some(l) = &logins {
        let (store, l) = (store.clone(), l.clone());
        intake.spawn(move |stop| {
            broker::refresh_logins(store, l, LOGINS_REFRESH, stop.cancelled_owned())
        });
    }
    {
        let (store, ingest_cfg) = (store.clone(), cfg.ingest.clone());
        intake.spawn(move |stop| {
            leakwatch_ingest::retain_dead_letters(
                store,
                ingest_cfg,
                DEAD_LETTER_RETENTION_EVERY,
                stop.cancelled_owned(),
            )
        });
    }
    {
        let d = dispatcher.clone();
        intake.spawn(move |stop| {
            dispatch_outbox(
                d,
                Duration::from_millis(OUTBOX_POLL_MS),
                stop.cancelled_owned(),
            )
        });
    }
    {
        let (d, every) = (
            dispatcher.clone(),
            Duration::from_secs(cfg.dispatch.check_every_s),
        );
        intake.spawn(move |stop| supervise(d, every, stop.cancelled_owned()));
    }
    let detection_status = Arc::new(leakwatch_api::DetectionStatus::default());
    // Detection drains: it ends when the ingestor, its only sender, has ended.
    intake.spawn({
        let (detect, store, status) = (cfg.detect.clone(), store.clone(), detection_status.clone());
        move |_| detection::run(detect, store, stored_rx, status)
    });

    let state = AppState {
        store: store.clone(),
        dispatcher: dispatcher.clone(),
        metrics: Some(metrics),
        broker_up: Arc::new(move || ingest_health.is_up()),
        crews_up: Arc::new(move || crews_health.is_up()),
        detection: detection_status,
        auth: Arc::new(leakwatch_api::authn::Auth::new(
            cfg.auth.settings(&cfg.http),
        )),
        limits: cfg.http.limits(),
        survey: Arc::new(cfg.survey.clone()),
    };
    // The console's pages beside the API (issue 12), and its daily plan.
    let console = cfg.console.to_console()?;
    let pages = leakwatch_console::routes(console.clone());
    {
        let (d, c) = (
            dispatcher.clone(),
            std::sync::Arc::new(leakwatch_console::Console { cfg: console }),
        );
        intake.spawn(move |stop| {
            leakwatch_console::board::run_daily_plan(d, c, stop.cancelled_owned())
        });
    }
    let limits = state.limits;
    let app = leakwatch_api::router_with(state, pages);
    let tls_on = https.is_some();
    intake.spawn(move |stop| async move {
        let served = match https {
            Some(tls) => {
                leakwatch_api::serve_router_tls(listener, tls, app, limits, stop.cancelled_owned())
                    .await
            }
            None => {
                leakwatch_api::serve_router(listener, app, limits, stop.cancelled_owned()).await
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(%http_addr, tls = tls_on, "HTTP API listening");

    Ok(Running {
        http_addr,
        mqtt_host,
        mqtt_port,
        embedded_broker: embedded,
        logins,
        security,
        store,
        dispatcher,
        intake,
        outbound,
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

/// How often the dispatch side looks for new alerts in the outbox when it is empty.
const OUTBOX_POLL_MS: u64 = 250;

/// Alerts taken from the outbox per unit of work batch.
const OUTBOX_BATCH: u32 = 100;

/// The dispatch side of the outbox: takes new alerts that detection recorded and
/// escalates them when `dispatch.auto_escalate` says so, each in its own transaction
/// with its removal from the outbox, until `shutdown`. Detection never waits for it.
async fn dispatch_outbox(
    dispatcher: Dispatcher,
    every: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    tokio::pin!(shutdown);
    let mut backoff = every;
    loop {
        let wait = match dispatcher.process_outbox(OUTBOX_BATCH).await {
            Ok(n) if n as u32 == OUTBOX_BATCH => Duration::ZERO,
            Ok(_) => {
                backoff = every;
                every
            }
            Err(e) => {
                tracing::warn!(error = %e, "dispatch outbox: store unavailable; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(10));
                backoff
            }
        };
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Repairs what an older version left half-done ([`Dispatcher::reconcile`]) at
/// start, then runs the dispatcher's supervisor pass (acceptance timeouts,
/// unassigned urgent orders, deadline breaches, and the reconciliation again) every
/// `every` until `shutdown`.
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
            _ = tick.tick() => {
                match dispatcher.reconcile().await {
                    Ok(r) if r != Default::default() => tracing::warn!(
                        linked = r.linked,
                        escalated = r.escalated,
                        resolved = r.resolved,
                        "half-done escalations repaired"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "dispatch reconciliation failed"),
                }
                match dispatcher.tick(chrono::Utc::now()).await {
                Ok(r) if r != Default::default() => tracing::info!(
                    acceptance_timeouts = r.acceptance_timeouts,
                    assigned = r.assigned,
                    breaches = r.breaches,
                    "dispatch supervisor pass"
                ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "dispatch supervisor pass failed"),
                }
            }
        }
    }
}

impl Running {
    /// Runs a task with the service's intake (the demo's crews, say): `make` gets the
    /// token that says stop, and [`Running::shutdown`] waits for the task.
    pub fn spawn<F>(&mut self, make: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.intake.spawn(make);
    }

    /// Stops intake (the ingestor lets the batch in hand commit and acknowledges it,
    /// HTTP and the supervisor stop), lets detection drain and checkpoint, then lets
    /// the crews' channel send what it holds, and closes the store once every task
    /// has ended; a group that overruns its deadline is aborted.
    pub async fn shutdown(self) {
        self.intake.stop("intake", INTAKE_DEADLINE).await;
        self.outbound
            .stop("the crews' channel", OUTBOUND_DEADLINE)
            .await;
        self.store.close().await;
        tracing::info!("stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets its flag when dropped: the task holding it ended or was aborted.
    struct Dropped(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_group_waits_for_its_tasks_and_aborts_what_overruns() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let polite_done = Arc::new(AtomicBool::new(false));
        let stuck_gone = Arc::new(AtomicBool::new(false));
        let mut g = Group::default();
        let done = polite_done.clone();
        g.spawn(move |stop| async move {
            stop.cancelled().await;
            // Drains for a while after being told.
            tokio::time::sleep(Duration::from_millis(100)).await;
            done.store(true, Ordering::SeqCst);
        });
        let gone = stuck_gone.clone();
        g.spawn(move |_| async move {
            let _guard = Dropped(gone);
            std::future::pending::<()>().await;
        });
        let started = tokio::time::Instant::now();
        g.stop("test", Duration::from_millis(500)).await;
        assert!(
            polite_done.load(Ordering::SeqCst),
            "the draining task finished"
        );
        assert!(
            stuck_gone.load(Ordering::SeqCst),
            "the stuck task was aborted"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(500),
            "not before the deadline: {took:?}"
        );
        assert!(took < Duration::from_secs(5), "{took:?}");

        // Tasks that stop when told end the group at once.
        let mut g = Group::default();
        g.spawn(|stop| async move { stop.cancelled().await });
        let started = tokio::time::Instant::now();
        g.stop("test", Duration::from_secs(10)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
