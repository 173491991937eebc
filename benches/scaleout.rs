//! The nightly push through the scaled-out shape (issue 14): N meters (env
//! `LEAKWATCH_BENCH_METERS`, default 20,000) each pushing one message of 24 hourly
//! readings to Mosquitto, taken by 2 bridges (shared subscription) into a 3-node
//! JetStream cluster and stored and analysed by W workers (`LEAKWATCH_BENCH_WORKERS`,
//! default 3; `LEAKWATCH_BENCH_PARTITIONS`, default 24) in PostgreSQL.
//!
//! In two phases, so that each part's rate is its own: (1) the intake, MQTT ->
//! bridges -> the replicated stream, with no worker running (messages/s); (2) the
//! store path, the workers draining the stream into PostgreSQL (judge, detectors,
//! one fenced transaction per batch), timed from the moment every partition is owned
//! (readings/s, and its ratio to the same-run binary COPY of the same rows). Then the
//! same push through one `leakwatch run` process (`LEAKWATCH_BENCH_SINGLE=0` skips it).
//!
//! `cargo bench -p leakwatch --bench scaleout` (PostgreSQL at `LEAKWATCH_BENCH_PG`,
//! default `postgres://postgres@127.0.0.1:5432/postgres`; nats-server and mosquitto
//! installed).

use chrono::{Duration as Hours, TimeZone, Utc};
use leakwatch::testkit::{OwnMosquitto, free_port};
use leakwatch_core::{DistrictId, GeoPoint, Meter, MeterId, MeterKind, MeterStatus, Reading};
use leakwatch_log::testkit::NatsCluster;
use leakwatch_store::Store;
use leakwatch_wire::Uplink;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Push {
    registry: Vec<Meter>,
    /// (district, meter, readings)
    meters: Vec<(DistrictId, MeterId, Vec<Reading>)>,
}

fn push(meters: usize) -> Push {
    let t0 = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();
    let districts = (meters / 1000).max(24);
    let mut x = 88172645463325252u64;
    let mut registry = Vec::with_capacity(meters);
    let mut out = Vec::with_capacity(meters);
    for i in 0..meters {
        let id = MeterId::parse(format!("SM{i:07}")).unwrap();
        let district = DistrictId::parse(format!("D{:03}", i % districts)).unwrap();
        registry.push(Meter {
            id: id.clone(),
            district: district.clone(),
            kind: MeterKind::Customer,
            location: GeoPoint {
                lat: 43.7,
                lon: 11.2,
            },
            report_every_h: 24,
            status: MeterStatus::Active,
            installed_at: None,
            max_flow_m3h: None,
        });
        let mut l = 50_000 + i as i64;
        let rs = (0..24)
            .map(|h| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (6..23).contains(&h) {
                    l += (x % 400) as i64;
                }
                Reading {
                    meter: id.clone(),
                    t: t0 + Hours::hours(h),
                    vol: l as f64 / 1000.0,
                    temp: Some(12.5),
                    flow_max: None,
                    pressure: None,
                }
            })
            .collect();
        out.push((district, id, rs));
    }
    Push {
        registry,
        meters: out,
    }
}

fn spawn(args: &[String], env: &[(String, String)], log: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_leakwatch"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "info,async_nats=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start leakwatch")
}

async fn count(pool: &sqlx::PgPool) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM readings")
        .fetch_one(pool)
        .await
        .unwrap();
    n
}

/// Publishes every meter's message; returns when the broker acknowledged them all.
async fn publish(port: u16, prefix: &str, p: &Push) -> Duration {
    let publisher = leakwatch_sim::Publisher::connect("127.0.0.1", port, &format!("pub-{prefix}"))
        .await
        .unwrap();
    let started = Instant::now();
    for (d, m, rs) in &p.meters {
        let up = Uplink {
            district: d.clone(),
            meter: m.clone(),
            readings: rs.clone(),
            events: vec![],
            battery: Some(80),
            valve: None,
        };
        publisher
            .publish_raw(
                &leakwatch_wire::uplink_topic(prefix, d, m),
                leakwatch_wire::encode(&up),
            )
            .await
            .unwrap();
    }
    publisher.flush(Duration::from_secs(600)).await.unwrap();
    let took = started.elapsed();
    publisher.disconnect().await.unwrap();
    took
}

/// The resident memory of each of `children` (Linux `/proc`), for the sizing.
fn workers_rss_mib(children: &mut [Child]) -> String {
    children
        .iter()
        .map(|c| {
            let kib = std::fs::read_to_string(format!("/proc/{}/status", c.id()))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                })
                .unwrap_or(0);
            format!("{} MiB", kib / 1024)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until `total` readings are stored; returns when that was.
async fn drained(pool: &sqlx::PgPool, total: i64, timeout: Duration) -> Instant {
    let started = Instant::now();
    loop {
        let n = count(pool).await;
        if n >= total {
            return Instant::now();
        }
        assert!(
            started.elapsed() < timeout,
            "only {n} of {total} readings stored within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn copy_rate(admin: &str, p: &Push) -> f64 {
    let url = leakwatch_store::testing::fresh_pg_database(admin)
        .await
        .unwrap();
    let store = Store::connect(&url).await.unwrap();
    let Store::Postgres(pg) = &store else {
        unreachable!()
    };
    let rows: Vec<_> = p
        .meters
        .iter()
        .flat_map(|(_, _, rs)| rs.iter().cloned())
        .map(|r| (r, leakwatch_store::ReadingFlags::default()))
        .collect();
    let started = Instant::now();
    for chunk in rows.chunks(10_000) {
        leakwatch_store::testing::copy_readings(pg.pool(), chunk)
            .await
            .unwrap();
    }
    let per_s = rows.len() as f64 / started.elapsed().as_secs_f64();
    store.close().await;
    leakwatch_store::testing::drop_pg_database(admin, &url).await;
    per_s
}

async fn run() {
    let meters: usize = env_or("LEAKWATCH_BENCH_METERS", 20_000);
    let workers: usize = env_or("LEAKWATCH_BENCH_WORKERS", 3);
    let partitions: u32 = env_or("LEAKWATCH_BENCH_PARTITIONS", 24);
    let single: u8 = env_or("LEAKWATCH_BENCH_SINGLE", 1);
    let admin = std::env::var("LEAKWATCH_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let p = push(meters);
    let total = (meters * 24) as i64;
    println!(
        "scale-out benchmark: {meters} meters x 24 readings, 2 bridges, {workers} workers, \
         {partitions} partitions, 3 nats-server nodes, PostgreSQL"
    );

    let cluster = NatsCluster::start(3).expect("nats-server must be installed");
    let mosq = OwnMosquitto::start().expect("mosquitto must be installed");
    let dir = cluster.dir.join("procs");
    std::fs::create_dir_all(&dir).unwrap();
    let db = leakwatch_store::testing::fresh_pg_database(&admin)
        .await
        .unwrap();
    let store = Store::connect(&db).await.unwrap();
    for chunk in p.registry.chunks(5000) {
        store.upsert_meters(chunk).await.unwrap();
    }
    let prefix = format!("bso{}", std::process::id());
    let env = vec![
        ("LEAKWATCH__DATABASE__URL".to_owned(), db.clone()),
        ("LEAKWATCH__MQTT__URL".to_owned(), mosq.url()),
        ("LEAKWATCH__MQTT__PREFIX".to_owned(), prefix.clone()),
        ("LEAKWATCH_NATS_URL".to_owned(), cluster.servers()),
        ("LEAKWATCH_PARTITIONS".to_owned(), partitions.to_string()),
    ];
    let mut children = Vec::new();
    for i in 0..2 {
        children.push(spawn(
            &[
                "bridge".into(),
                "--id".into(),
                format!("{prefix}-b{i}"),
                "--shared-group".into(),
                prefix.clone(),
            ],
            &env,
            &dir.join(format!("bridge{i}.log")),
        ));
    }
    let log = leakwatch_log::JetStreamLog::connect(
        leakwatch_log::LogConfig {
            servers: cluster.servers(),
            partitions,
            ..leakwatch_log::LogConfig::default()
        },
        "bench",
    )
    .await
    .unwrap();
    log.ensure_stream().await.unwrap();
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    // The bridges subscribed (their first connection takes a moment).
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Phase 1: MQTT -> bridges -> JetStream (R3), no worker running: the log's
    // intake alone.
    let t0 = Instant::now();
    let published = publish(mosq.port, &prefix, &p).await;
    let appended = loop {
        let mut stream = log.context().get_stream("LEAKWATCH").await.unwrap();
        let n = stream.info().await.unwrap().state.messages;
        if n >= meters as u64 {
            break Instant::now();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3600),
            "only {n} of {meters} messages in the stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let intake = (appended - t0).as_secs_f64();

    // Phase 2: the workers drain the stream into PostgreSQL: the store path alone,
    // timed from the moment every partition is owned (registry and state loaded).
    for i in 0..workers {
        children.push(spawn(
            &["worker".into(), "--id".into(), format!("w{i}")],
            &env,
            &dir.join(format!("worker{i}.log")),
        ));
    }
    let started = Instant::now();
    loop {
        let owned: usize = (0..workers)
            .map(|i| {
                std::fs::read_to_string(dir.join(format!("worker{i}.log")))
                    .unwrap_or_default()
                    .matches("partition owned")
                    .count()
            })
            .sum();
        if owned >= partitions as usize {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "partitions not owned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let owned_after = started.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let done = drained(&pool, total, Duration::from_secs(3600)).await;
    let drain = (done - t1).as_secs_f64();
    let max_lag = store.partitions_max_lag_ms().await.unwrap();
    let rss = workers_rss_mib(&mut children[2..]);
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    pool.close().await;
    store.close().await;
    leakwatch_store::testing::drop_pg_database(&admin, &db).await;

    let copy = copy_rate(&admin, &p).await;
    println!("[scaled out] {total} readings, {meters} messages");
    println!(
        "  publish to Mosquitto (broker acked): {:.1} s",
        published.as_secs_f64()
    );
    println!(
        "  intake, first publish -> all {meters} messages in the stream (2 bridges, R3): {intake:.1} s = {:.0} messages/s",
        meters as f64 / intake
    );
    println!(
        "  workers: every partition owned {owned_after:.1} s after start (registry and state loaded)"
    );
    println!(
        "  store path, drain of the stream by {workers} workers: {drain:.1} s = {:.0} readings/s",
        total as f64 / drain
    );
    println!("  same-run binary COPY: {copy:.0} readings/s");
    println!(
        "  ratio store path / COPY: {:.2}",
        total as f64 / drain / copy
    );
    println!("  intake + drain, end to end: {:.1} s", intake + drain);
    println!(
        "  largest receipt -> commit lag: {:.1} s (includes the wait for the workers)",
        max_lag as f64 / 1000.0
    );
    println!("  workers' resident memory at the end: {rss}");

    if single == 1 {
        let db = leakwatch_store::testing::fresh_pg_database(&admin)
            .await
            .unwrap();
        let store = Store::connect(&db).await.unwrap();
        for chunk in p.registry.chunks(5000) {
            store.upsert_meters(chunk).await.unwrap();
        }
        let prefix = format!("bsi{}", std::process::id());
        let http = free_port();
        let mut c = spawn(
            &["run".into()],
            &[
                ("LEAKWATCH__DATABASE__URL".to_owned(), db.clone()),
                ("LEAKWATCH__MQTT__URL".to_owned(), mosq.url()),
                ("LEAKWATCH__MQTT__PREFIX".to_owned(), prefix.clone()),
                (
                    "LEAKWATCH__MQTT__CLIENT_ID".to_owned(),
                    format!("{prefix}-run"),
                ),
                ("LEAKWATCH__MQTT__INFLIGHT".to_owned(), "1000".to_owned()),
                (
                    "LEAKWATCH__HTTP__LISTEN".to_owned(),
                    format!("127.0.0.1:{http}"),
                ),
            ],
            &dir.join("single.log"),
        );
        let started = Instant::now();
        while reqwest::get(format!("http://127.0.0.1:{http}/readyz"))
            .await
            .map_or(true, |r| r.status() != 200)
        {
            assert!(started.elapsed() < Duration::from_secs(60), "run not ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let pool = sqlx::PgPool::connect(&db).await.unwrap();
        let t0 = Instant::now();
        let published = publish(mosq.port, &prefix, &p).await;
        let last_publish = Instant::now();
        let done = drained(&pool, total, Duration::from_secs(1800)).await;
        let e2e = (done - t0).as_secs_f64();
        let _ = c.kill();
        let _ = c.wait();
        println!("[single leakwatch run] {total} readings");
        println!(
            "  publish (broker acked): {:>8.1} s",
            published.as_secs_f64()
        );
        println!(
            "  first publish -> last commit: {e2e:.1} s = {:.0} readings/s",
            total as f64 / e2e
        );
        println!(
            "  drain after the last publish: {:.1} s",
            done.saturating_duration_since(last_publish).as_secs_f64()
        );
        pool.close().await;
        store.close().await;
        leakwatch_store::testing::drop_pg_database(&admin, &db).await;
    }
    drop(mosq);
    drop(cluster);
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}
