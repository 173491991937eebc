//! End-to-end ingest benchmark: a simulated fleet publishes daily pushes (24 hourly
//! readings per message) through Mosquitto; leakwatch's ingestor stores them (and the
//! detectors run on what it commits). Reports readings per second, publish-to-commit
//! latency (p50/p99), peak memory and, measured in the same run on the same rows, the
//! database's own limit (PostgreSQL `COPY`; for SQLite, plain batched inserts), and the
//! ratio of the two.
//!
//! Run: `cargo bench -p leakwatch --bench ingest`
//! Settings (environment): LEAKWATCH_BENCH_METERS (20000), LEAKWATCH_BENCH_DAYS (1),
//! LEAKWATCH_BENCH_BACKENDS ("postgres,sqlite"), LEAKWATCH_BENCH_PG (admin URL,
//! postgres://postgres@127.0.0.1:5432/postgres), LEAKWATCH_BENCH_MQTT_TLS (1: both
//! MQTT links over TLS, Mosquitto requiring client certificates made with rcgen, as
//! the production setup in deploy/README.md). Needs Mosquitto installed (it starts
//! its own instance) and PostgreSQL running for the postgres backend.

use chrono::{Duration as Hours, TimeZone, Utc};
use leakwatch::testkit::OwnMosquitto;
use leakwatch_core::{DistrictId, GeoPoint, Meter, MeterId, MeterKind, MeterStatus, Reading};
use leakwatch_detect::{DetectConfig, Engine, MeterInfo};
use leakwatch_ingest::{BrokerConfig, IngestConfig};
use leakwatch_store::Store;
use leakwatch_wire::Uplink;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Fleet {
    registry: Vec<Meter>,
    /// (topic, payload, meter index, day)
    messages: Vec<(String, Vec<u8>, usize, i64)>,
    rows: Vec<Reading>,
}

fn fleet(prefix: &str, meters: usize, days: i64) -> Fleet {
    let t0 = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();
    let mut registry = Vec::with_capacity(meters);
    let mut messages = Vec::new();
    let mut rows = Vec::new();
    let mut x = 88172645463325252u64;
    for i in 0..meters {
        let id = MeterId::parse(format!("BM{i:07}")).unwrap();
        let district = DistrictId::parse(format!("D{:02}", i % 10)).unwrap();
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
    }
    let mut litres: Vec<i64> = (0..meters as i64).map(|i| 50_000 + i).collect();
    for day in 0..days {
        for (i, m) in registry.iter().enumerate() {
            let mut rs = Vec::with_capacity(24);
            for h in 0..24 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Nights quiet, days busy: a realistic mix for the detectors.
                if (6..23).contains(&h) {
                    litres[i] += (x % 400) as i64;
                }
                rs.push(Reading {
                    meter: m.id.clone(),
                    t: t0 + Hours::hours(day * 24 + h),
                    vol: litres[i] as f64 / 1000.0,
                    temp: Some(12.5),
                    flow_max: None,
                    pressure: None,
                });
            }
            rows.extend(rs.iter().cloned());
            let up = Uplink {
                district: m.district.clone(),
                meter: m.id.clone(),
                readings: rs,
                events: vec![],
                battery: Some(80),
                valve: None,
            };
            messages.push((
                leakwatch_wire::uplink_topic(prefix, &m.district, &m.id),
                leakwatch_wire::encode(&up),
                i,
                day,
            ));
        }
    }
    Fleet {
        registry,
        messages,
        rows,
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Result {
    backend: &'static str,
    readings: usize,
    e2e_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    baseline_per_s: f64,
    baseline_name: &'static str,
}

/// With LEAKWATCH_BENCH_MQTT_TLS=1: a CA, a server certificate for 127.0.0.1 and client
/// certificates for the ingestor and the publisher, in `dir`; the Mosquitto listener's
/// TLS lines and the clients' settings.
fn mqtt_tls(dir: &std::path::Path) -> (String, leakwatch_mqtt::Security, leakwatch_mqtt::Security) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let issue = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = p.signed_by(&key, &issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let (sc, sk) = issue("127.0.0.1");
    let lines = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\n\
         allow_anonymous false\n",
        dir.join("ca.pem").display(),
        sc.display(),
        sk.display()
    );
    let client = |name: &str| {
        let (c, k) = issue(name);
        leakwatch_mqtt::Security {
            login: None,
            tls: Some(
                leakwatch_mqtt::Tls::from_files(&dir.join("ca.pem"), Some((&c, &k))).unwrap(),
            ),
        }
    };
    (lines, client("bench-ingest"), client("bench-publisher"))
}

async fn run(backend: &'static str, meters: usize, days: i64) -> Result {
    let tls_dir = std::env::temp_dir().join(format!("lw-bench-tls-{}", std::process::id()));
    let (mosq, ingest_security, publisher_security) =
        if std::env::var("LEAKWATCH_BENCH_MQTT_TLS").is_ok_and(|v| v == "1") {
            std::fs::create_dir_all(&tls_dir).unwrap();
            let (lines, i, p) = mqtt_tls(&tls_dir);
            let m = OwnMosquitto::start_with(|_| lines).expect("Mosquitto must be installed");
            (m, i, p)
        } else {
            let m = OwnMosquitto::start().expect("Mosquitto must be installed for this benchmark");
            (m, Default::default(), Default::default())
        };
    let admin = std::env::var("LEAKWATCH_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let sqlite_path = std::env::temp_dir().join(format!("lw-bench-{}.db", std::process::id()));
    let url = match backend {
        "postgres" => leakwatch_store::testing::fresh_pg_database(&admin)
            .await
            .expect("PostgreSQL reachable at LEAKWATCH_BENCH_PG"),
        _ => {
            let _ = std::fs::remove_file(&sqlite_path);
            format!("sqlite://{}", sqlite_path.display())
        }
    };
    let store = Store::connect(&url).await.unwrap();
    let prefix = format!("bench{}", std::process::id());
    let f = fleet(&prefix, meters, days);
    for chunk in f.registry.chunks(5000) {
        store.upsert_meters(chunk).await.unwrap();
    }
    let total = f.rows.len();

    // The ingestor, with a sink that times each commit and runs the detectors.
    let (stop, stop_rx) = watch::channel(false);
    let (tx, mut rx) = mpsc::channel::<leakwatch_ingest::Stored>(64);
    let health = leakwatch_ingest::ingest_health();
    let ingest = tokio::spawn(leakwatch_ingest::run(
        BrokerConfig {
            host: "127.0.0.1".into(),
            port: mosq.port,
            client_id: format!("bench-ingest-{}", std::process::id()),
            prefix: prefix.clone(),
            keep_alive: Duration::from_secs(30),
            inflight: 1000,
            security: ingest_security,
        },
        IngestConfig::default(),
        store.clone(),
        tx,
        health.clone(),
        leakwatch::app::stopped(stop_rx),
    ));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let sink = tokio::spawn(async move {
        let mut engine = Engine::new(DetectConfig::default());
        let mut findings = Vec::new();
        let mut seen = 0usize;
        let mut committed: HashMap<(MeterId, i64), Instant> = HashMap::new();
        let t0 = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();
        let mut done_tx = Some(done_tx);
        while let Some(batch) = rx.recv().await {
            let now = Instant::now();
            for (m, r) in &batch.readings {
                let day = (r.t - t0).num_hours() / 24;
                committed.entry((m.id.clone(), day)).or_insert(now);
                engine.observe(&MeterInfo::of(m), r, &mut findings);
            }
            seen += batch.readings.len();
            if seen >= total
                && let Some(tx) = done_tx.take()
            {
                let _ = tx.send((committed.clone(), findings.len()));
            }
        }
    });
    while !health.is_up() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let publisher = leakwatch_sim::Publisher::connect_with(
        "127.0.0.1",
        mosq.port,
        "bench-publisher",
        &publisher_security,
    )
    .await
    .unwrap();
    let mut published: Vec<Instant> = Vec::with_capacity(f.messages.len());
    let started = Instant::now();
    for (topic, payload, _, _) in &f.messages {
        published.push(Instant::now());
        publisher.publish_raw(topic, payload.clone()).await.unwrap();
    }
    let (committed, findings) = tokio::time::timeout(Duration::from_secs(600), done_rx)
        .await
        .expect("all readings committed within 10 minutes")
        .unwrap();
    let last_commit = committed.values().max().copied().unwrap_or(started);
    let elapsed = (last_commit - started).as_secs_f64();
    publisher.flush(Duration::from_secs(30)).await.unwrap();
    publisher.disconnect().await.unwrap();
    let mut lat: Vec<f64> = f
        .messages
        .iter()
        .zip(&published)
        .filter_map(|((_, _, i, day), sent)| {
            committed
                .get(&(f.registry[*i].id.clone(), *day))
                .map(|c| c.saturating_duration_since(*sent).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let stored = store.count_readings().await.unwrap();
    assert_eq!(stored as usize, total, "every reading stored once");
    let _ = stop.send(true);
    let _ = ingest.await;
    let _ = sink.await;
    eprintln!("  [{backend}] detector findings during the run: {findings}");

    // The database's own limit on the same rows.
    let (baseline_per_s, baseline_name) = match backend {
        "postgres" => {
            let text = pg_copy(&url, &f.rows).await;
            let binary = pg_copy_binary(&admin, &f.rows).await;
            eprintln!("  [postgres] text COPY {text:.0} rows/s, binary COPY {binary:.0} rows/s");
            (text.max(binary), "COPY, the faster of text and binary")
        }
        _ => (
            sqlite_inserts(&url, &f.rows).await,
            "batched prepared INSERTs, no conflict handling",
        ),
    };
    store.close().await;
    if backend == "postgres" {
        leakwatch_store::testing::drop_pg_database(&admin, &url).await;
    } else {
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", sqlite_path.display()));
        }
    }
    Result {
        backend,
        readings: total,
        e2e_per_s: total as f64 / elapsed,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        baseline_per_s,
        baseline_name,
    }
}

async fn pg_copy(url: &str, rows: &[Reading]) -> f64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("CREATE TABLE readings_copy (LIKE readings INCLUDING ALL)")
        .execute(&mut conn)
        .await
        .unwrap();
    let started = Instant::now();
    for chunk in rows.chunks(10_000) {
        let mut text = String::with_capacity(chunk.len() * 64);
        for r in chunk {
            use std::fmt::Write;
            let _ = writeln!(
                text,
                "{}\t{}\t{}\t{}",
                r.meter,
                r.t.to_rfc3339(),
                r.vol,
                r.temp
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "\\N".into())
            );
        }
        let mut copy = conn
            .copy_in_raw("COPY readings_copy (meter_id, t, vol, temp) FROM STDIN")
            .await
            .unwrap();
        copy.send(text.as_bytes()).await.unwrap();
        copy.finish().await.unwrap();
    }
    let per_s = rows.len() as f64 / started.elapsed().as_secs_f64();
    conn.close().await.unwrap();
    per_s
}

/// Binary COPY of the same rows, in batches of the same size, into the empty
/// `readings` table of a fresh database with leakwatch's schema.
async fn pg_copy_binary(admin: &str, rows: &[Reading]) -> f64 {
    let url = leakwatch_store::testing::fresh_pg_database(admin)
        .await
        .unwrap();
    let store = Store::connect(&url).await.unwrap();
    let Store::Postgres(pg) = &store else {
        unreachable!("a postgres URL")
    };
    let rows: Vec<_> = rows
        .iter()
        .map(|r| (r.clone(), leakwatch_store::ReadingFlags::default()))
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

async fn sqlite_inserts(url: &str, rows: &[Reading]) -> f64 {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    sqlx::query(
        "CREATE TABLE readings_copy (meter_id TEXT NOT NULL, t INTEGER NOT NULL, vol REAL NOT NULL, \
         temp REAL, PRIMARY KEY (meter_id, t)) WITHOUT ROWID",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let started = Instant::now();
    for chunk in rows.chunks(10_000) {
        let mut tx = conn.begin().await.unwrap();
        for r in chunk {
            sqlx::query("INSERT INTO readings_copy (meter_id, t, vol, temp) VALUES (?, ?, ?, ?)")
                .bind(r.meter.as_str())
                .bind(r.t.timestamp_millis())
                .bind(r.vol)
                .bind(r.temp)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    rows.len() as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let meters: usize = env_or("LEAKWATCH_BENCH_METERS", 20_000);
    let days: i64 = env_or("LEAKWATCH_BENCH_DAYS", 1);
    let backends =
        std::env::var("LEAKWATCH_BENCH_BACKENDS").unwrap_or_else(|_| "postgres,sqlite".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "ingest benchmark: {meters} meters x {days} daily push(es) of 24 readings, through Mosquitto{}, detectors on",
        if std::env::var("LEAKWATCH_BENCH_MQTT_TLS").is_ok_and(|v| v == "1") {
            " over TLS with client certificates"
        } else {
            ""
        }
    );
    for backend in backends.split(',') {
        let backend: &'static str = match backend.trim() {
            "postgres" => "postgres",
            "sqlite" => "sqlite",
            other => panic!("unknown backend {other:?}"),
        };
        let r = rt.block_on(run(backend, meters, days));
        println!("[{}] {} readings", r.backend, r.readings);
        println!("  end to end:            {:>10.0} readings/s", r.e2e_per_s);
        println!(
            "  publish -> commit:     p50 {:.0} ms, p99 {:.0} ms",
            r.p50_ms, r.p99_ms
        );
        println!(
            "  baseline ({}): {:>10.0} readings/s",
            r.baseline_name, r.baseline_per_s
        );
        println!(
            "  ratio end to end / baseline: {:.2}",
            r.e2e_per_s / r.baseline_per_s
        );
        println!("  peak memory (process, so far): {:.0} MiB", peak_rss_mib());
    }
}
