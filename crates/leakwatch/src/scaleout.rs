//! The scaled-out shape's commands (issue 14, `docs/scale-out.md`): `leakwatch bridge`
//! and `leakwatch worker`, on NATS JetStream. `run` and `demo` do not use them.
//!
//! Both read the usual configuration (`mqtt.*`, `database.*`, `ingest.*`,
//! `detect.*`); what is specific to the log is given on the command line (or the
//! environment: `LEAKWATCH_NATS_URL`, ...).

use crate::config::Config;
use anyhow::Context;
use clap::Args;
use leakwatch_log::{JetStreamLog, LeaseConfig, Leases, LogConfig, NatsTls};
use leakwatch_store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Where the log is and how it is cut (the same for every bridge and worker).
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// NATS servers, comma-separated (`tls://host:4222` requires TLS).
    #[arg(
        long,
        env = "LEAKWATCH_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats: String,
    /// The JetStream stream.
    #[arg(long, env = "LEAKWATCH_NATS_STREAM", default_value = "LEAKWATCH")]
    pub stream: String,
    /// Subjects are `{subject_prefix}.{partition}.{district}`.
    #[arg(long, env = "LEAKWATCH_NATS_SUBJECT_PREFIX", default_value = "lw.up")]
    pub subject_prefix: String,
    /// Partitions (fixed for the life of the stream).
    #[arg(long, env = "LEAKWATCH_PARTITIONS", default_value_t = 64)]
    pub partitions: u32,
    /// Stream and lease-bucket replicas.
    #[arg(long, env = "LEAKWATCH_NATS_REPLICAS", default_value_t = 3)]
    pub replicas: usize,
    /// Deduplication window of the stream, seconds.
    #[arg(long, default_value_t = 600)]
    pub dedupe_window_s: u64,
    /// How long the stream keeps messages, hours.
    #[arg(long, default_value_t = 168)]
    pub retention_h: u64,
    /// The CA (PEM) the NATS servers' certificates must chain to; the connection is
    /// then TLS only.
    #[arg(long, env = "LEAKWATCH_NATS_CA_FILE")]
    pub nats_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for servers that verify clients (with its key).
    #[arg(long, env = "LEAKWATCH_NATS_CLIENT_CERT", requires = "nats_client_key")]
    pub nats_client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "LEAKWATCH_NATS_CLIENT_KEY", requires = "nats_client_cert")]
    pub nats_client_key: Option<PathBuf>,
}

impl LogArgs {
    fn log_config(&self) -> LogConfig {
        LogConfig {
            servers: self.nats.clone(),
            stream: self.stream.clone(),
            subject_prefix: self.subject_prefix.clone(),
            partitions: self.partitions,
            replicas: self.replicas,
            dedupe_window: Duration::from_secs(self.dedupe_window_s),
            max_age: Duration::from_secs(self.retention_h * 3600),
            tls: NatsTls {
                ca_file: self.nats_ca_file.clone(),
                client_cert: self.nats_client_cert.clone(),
                client_key: self.nats_client_key.clone(),
            },
            ..LogConfig::default()
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct BridgeArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// The bridge's MQTT client id (persistent session; stable per bridge).
    #[arg(long, env = "LEAKWATCH_BRIDGE_ID", default_value = "leakwatch-bridge")]
    pub id: String,
    /// Messages in flight between the broker and the log.
    #[arg(long, default_value_t = 1000)]
    pub inflight: u16,
    /// Share the meters' subscription among the bridges of this group (MQTT shared
    /// subscription `$share/{group}/...`); empty: every bridge takes every message
    /// (the log's deduplication then drops the copies).
    #[arg(long, env = "LEAKWATCH_BRIDGE_GROUP", default_value = "")]
    pub shared_group: String,
    /// Serve `/healthz`, `/readyz` and `/metrics` here (e.g. `0.0.0.0:9470`); empty:
    /// not served.
    #[arg(long, env = "LEAKWATCH_BRIDGE_HTTP_LISTEN", default_value = "")]
    pub http_listen: String,
}

#[derive(Args, Clone, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// The worker's name (lease owner; unique per process). Default: the host name
    /// (`HOSTNAME`: a container's or a pod's name, unique per replica).
    #[arg(long, env = "LEAKWATCH_WORKER_ID")]
    pub id: Option<String>,
    /// Lease TTL, milliseconds (renewed every third of it).
    #[arg(long, default_value_t = 10_000)]
    pub lease_ttl_ms: u64,
    /// The KV bucket of the leases.
    #[arg(long, default_value = "leakwatch_leases")]
    pub lease_bucket: String,
    /// Log entries per batch, at most.
    #[arg(long, default_value_t = 2000)]
    pub batch_max: usize,
    /// Serve `/healthz`, `/readyz` and `/metrics` here (e.g. `0.0.0.0:9471`); empty:
    /// not served.
    #[arg(long, env = "LEAKWATCH_WORKER_HTTP_LISTEN", default_value = "")]
    pub http_listen: String,
}

/// SIGTERM or Ctrl-C, listened for from the call on (not from the first poll): a
/// signal during start-up, while the log or the store is still unreachable, ends the
/// command cleanly instead of killing it.
fn stop_signal() -> watch::Receiver<bool> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let term = signal(SignalKind::terminate());
    tokio::spawn(async move {
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        let _ = tx.send(true);
    });
    rx
}

/// Resolves once [`stop_signal`] fired.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// What `/readyz` answers: (ready, body).
type Readiness = Arc<dyn Fn() -> (bool, serde_json::Value) + Send + Sync>;

/// The health and metrics endpoints of a bridge or a worker: `/healthz` (the process
/// answers), `/readyz` (200 when ready, else 503, with what it holds and awaits) and
/// `/metrics` (Prometheus text; `auth.metrics_token` guards it as in `leakwatch run`).
/// They sit on a listener of their own, apart from the API: no other route, no
/// session, no role (the API's authorization table does not apply).
pub fn ops_router(cfg: &Config, ready: Readiness) -> axum::Router {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    let handle = crate::telemetry::prometheus();
    let token = cfg
        .auth
        .metrics_token
        .as_ref()
        .map(|t| t.expose().to_owned());
    axum::Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    let (ok, body) = ready();
                    let code = if ok {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (code, axum::Json(body))
                }
            }),
        )
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let (handle, token) = (handle.clone(), token.clone());
                async move {
                    let allowed = token.as_deref().is_none_or(|t| {
                        headers
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .is_some_and(|given| {
                                leakwatch_api::secret::same(
                                    &leakwatch_api::secret::sha256_hex(given),
                                    &leakwatch_api::secret::sha256_hex(t),
                                )
                            })
                    });
                    if !allowed {
                        return (
                            StatusCode::UNAUTHORIZED,
                            "/metrics needs Authorization: Bearer <auth.metrics_token>\n",
                        )
                            .into_response();
                    }
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        handle.render(),
                    )
                        .into_response()
                }
            }),
        )
}

/// Serves [`ops_router`] on `listen` (nothing when empty) until the process ends.
async fn serve_ops(cfg: &Config, listen: &str, ready: Readiness) -> anyhow::Result<()> {
    if listen.is_empty() {
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, "health and metrics served");
    let app = ops_router(cfg, ready);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health and metrics server stopped");
        }
    });
    Ok(())
}

/// `leakwatch bridge`.
pub async fn bridge(cfg: Config, args: BridgeArgs) -> anyhow::Result<()> {
    let url = cfg
        .mqtt
        .url
        .clone()
        .context("the bridge needs mqtt.url (an external broker)")?;
    let stop = stop_signal();
    tracing::info!(id = %args.id, servers = %args.log.nats, "bridge starting: connecting to the log");
    let log = tokio::select! {
        _ = stopped(stop.clone()) => {
            tracing::info!("bridge stopped before it reached the log");
            return Ok(());
        }
        log = JetStreamLog::connect(args.log.log_config(), &args.id) => {
            log.context("cannot reach the log")?
        }
    };
    let health = leakwatch_mqtt::SessionHealth::new("bridge");
    let status = Arc::new(leakwatch_scale::status::BridgeStatus::default());
    {
        let (health, status, nats) = (health.clone(), status.clone(), log.clone());
        serve_ops(
            &cfg,
            &args.http_listen,
            Arc::new(move || {
                let (mqtt, nats) = (health.is_up(), nats.is_connected());
                let ready = mqtt && nats;
                let body = serde_json::json!({
                    "ready": ready, "mqtt": { "ok": mqtt }, "nats": { "ok": nats },
                    "bridge": status.view(),
                });
                (ready, body)
            }),
        )
        .await?;
    }
    tracing::info!(id = %args.id, "bridge running");
    leakwatch_scale::bridge::run(
        leakwatch_scale::bridge::BridgeConfig {
            mqtt_host: url.host.clone(),
            mqtt_port: url.port,
            client_id: args.id.clone(),
            prefix: cfg.mqtt.prefix.clone(),
            keep_alive: Duration::from_secs(cfg.mqtt.keep_alive_s.max(5)),
            inflight: args.inflight,
            partitions: args.log.partitions,
            shared_group: (!args.shared_group.is_empty()).then(|| args.shared_group.clone()),
            security: cfg.mqtt.security()?,
        },
        log,
        health,
        status,
        stopped(stop),
    )
    .await;
    Ok(())
}

/// `leakwatch worker`.
pub async fn worker(cfg: Config, mut args: WorkerArgs) -> anyhow::Result<()> {
    let id = worker_id(args.id.take(), std::env::var("HOSTNAME").ok())?;
    leakwatch_scale::failpoints_from_env();
    let stop = stop_signal();
    tracing::info!(id = %id, servers = %args.log.nats, "worker starting: connecting to the store and the log");
    let start = async {
        let store = Store::connect(cfg.database.url.expose())
            .await
            .context("cannot open the store")?;
        anyhow::ensure!(
            store.backend() == "postgres",
            "the worker needs PostgreSQL (database.url)"
        );
        let log = JetStreamLog::connect(args.log.log_config(), &id)
            .await
            .context("cannot reach the log")?;
        let leases = Leases::open(
            log.context(),
            &LeaseConfig {
                bucket: args.lease_bucket.clone(),
                replicas: args.log.replicas,
                ttl: Duration::from_millis(args.lease_ttl_ms),
            },
            &id,
        )
        .await
        .context("cannot open the leases")?;
        anyhow::Ok((store, log, leases))
    };
    let (store, log, leases) = tokio::select! {
        _ = stopped(stop.clone()) => {
            tracing::info!("worker stopped before it reached the store and the log");
            return Ok(());
        }
        started = start => started?,
    };
    let status = Arc::new(leakwatch_scale::status::WorkerStatus::new(&id));
    {
        let (status, nats) = (status.clone(), log.clone());
        serve_ops(
            &cfg,
            &args.http_listen,
            Arc::new(move || {
                let nats = nats.is_connected();
                let view = status.view();
                let ready = nats && view.member;
                let body = serde_json::json!({
                    "ready": ready, "nats": { "ok": nats }, "worker": view,
                });
                (ready, body)
            }),
        )
        .await?;
    }
    tracing::info!(id = %id, partitions = args.log.partitions, "worker running");
    leakwatch_scale::worker::run(
        leakwatch_scale::worker::WorkerConfig {
            owner: id.clone(),
            partitions: args.log.partitions,
            prefix: cfg.mqtt.prefix.clone(),
            batch_max: args.batch_max,
            fetch_wait: Duration::from_millis(500),
            ingest: cfg.ingest.clone(),
            detect: cfg.detect.clone(),
        },
        log,
        leases,
        store.clone(),
        status,
        stopped(stop),
    )
    .await;
    store.close().await;
    Ok(())
}

/// The worker's lease owner name: `--id`, else the host name; never empty.
fn worker_id(id: Option<String>, hostname: Option<String>) -> anyhow::Result<String> {
    id.or(hostname)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .context("the worker needs --id (LEAKWATCH_WORKER_ID) or a HOSTNAME")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(clap::Subcommand)]
    enum Cmd {
        Bridge(BridgeArgs),
        Worker(WorkerArgs),
    }

    #[test]
    fn the_worker_id_defaults_to_the_host_name() {
        assert_eq!(
            worker_id(Some("w1".into()), Some("h".into())).unwrap(),
            "w1"
        );
        assert_eq!(worker_id(None, Some("pod-7".into())).unwrap(), "pod-7");
        assert!(worker_id(None, None).is_err());
        assert!(worker_id(Some(" ".into()), None).is_err());
    }

    #[test]
    fn nats_tls_settings_reach_the_log_config() {
        let cli = Cli::try_parse_from([
            "lw",
            "bridge",
            "--nats",
            "tls://a:4222,tls://b:4222",
            "--nats-ca-file",
            "/ca.pem",
            "--nats-client-cert",
            "/c.pem",
            "--nats-client-key",
            "/c.key",
        ])
        .unwrap();
        let Cmd::Bridge(b) = cli.cmd else {
            panic!("bridge")
        };
        let cfg = b.log.log_config();
        assert_eq!(cfg.servers, "tls://a:4222,tls://b:4222");
        assert_eq!(
            cfg.tls.ca_file.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        assert_eq!(
            cfg.tls.client_key.as_deref(),
            Some(std::path::Path::new("/c.key"))
        );
        assert!(cfg.tls.required(&cfg.servers));
        // A certificate without its key is refused by the parser.
        assert!(Cli::try_parse_from(["lw", "worker", "--nats-client-cert", "/c.pem"]).is_err());
        let Cmd::Worker(w) = Cli::try_parse_from(["lw", "worker"]).unwrap().cmd else {
            panic!("worker")
        };
        assert_eq!(w.log.log_config().tls, NatsTls::default());
        assert!(!w.log.log_config().tls.required("nats://a:4222"));
    }
}
