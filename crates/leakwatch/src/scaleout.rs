//! The scaled-out shape's commands (issue 14, `docs/scale-out.md`): `leakwatch bridge`
//! and `leakwatch worker`, on NATS JetStream. `run` and `demo` do not use them.
//!
//! Both read the usual configuration (`mqtt.*`, `database.*`, `ingest.*`,
//! `detect.*`); what is specific to the log is given on the command line (or the
//! environment: `LEAKWATCH_NATS_URL`, ...).

use crate::config::Config;
use anyhow::Context;
use clap::Args;
use leakwatch_log::{JetStreamLog, LeaseConfig, Leases, LogConfig};
use leakwatch_store::Store;
use std::time::Duration;

/// Where the log is and how it is cut (the same for every bridge and worker).
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// NATS servers, comma-separated.
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
}

#[derive(Args, Clone, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// The worker's name (lease owner; unique per process).
    #[arg(long, env = "LEAKWATCH_WORKER_ID")]
    pub id: String,
    /// Lease TTL, milliseconds (renewed every third of it).
    #[arg(long, default_value_t = 10_000)]
    pub lease_ttl_ms: u64,
    /// The KV bucket of the leases.
    #[arg(long, default_value = "leakwatch_leases")]
    pub lease_bucket: String,
    /// Log entries per batch, at most.
    #[arg(long, default_value_t = 2000)]
    pub batch_max: usize,
}

async fn terminate() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
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
}

/// `leakwatch bridge`.
pub async fn bridge(cfg: Config, args: BridgeArgs) -> anyhow::Result<()> {
    let url = cfg
        .mqtt
        .url
        .clone()
        .context("the bridge needs mqtt.url (an external broker)")?;
    let log = JetStreamLog::connect(args.log.log_config(), &args.id)
        .await
        .context("cannot reach the log")?;
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
        leakwatch_mqtt::SessionHealth::new("bridge"),
        terminate(),
    )
    .await;
    Ok(())
}

/// `leakwatch worker`.
pub async fn worker(cfg: Config, args: WorkerArgs) -> anyhow::Result<()> {
    leakwatch_scale::failpoints_from_env();
    let store = Store::connect(cfg.database.url.expose())
        .await
        .context("cannot open the store")?;
    anyhow::ensure!(
        store.backend() == "postgres",
        "the worker needs PostgreSQL (database.url)"
    );
    let log = JetStreamLog::connect(args.log.log_config(), &args.id)
        .await
        .context("cannot reach the log")?;
    let leases = Leases::open(
        log.context(),
        &LeaseConfig {
            bucket: args.lease_bucket.clone(),
            replicas: args.log.replicas,
            ttl: Duration::from_millis(args.lease_ttl_ms),
        },
        &args.id,
    )
    .await
    .context("cannot open the leases")?;
    tracing::info!(id = %args.id, partitions = args.log.partitions, "worker running");
    leakwatch_scale::worker::run(
        leakwatch_scale::worker::WorkerConfig {
            owner: args.id.clone(),
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
        terminate(),
    )
    .await;
    store.close().await;
    Ok(())
}
