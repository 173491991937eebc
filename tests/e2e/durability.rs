//! Nothing lost, nothing twice: the ingest under SIGKILL, a database outage and a
//! broker restart. All on PostgreSQL with a Mosquitto of the test's own (persistence
//! on, unbounded queue, as `deploy/mosquitto/mosquitto.conf` recommends).

use crate::support::{required_env, unique, wait_for};
use chrono::{Duration as Hours, TimeZone, Utc};
use leakwatch::testkit::{OwnMosquitto, Proxy, free_port};
use leakwatch_core::{DistrictId, GeoPoint, Meter, MeterId, MeterKind, MeterStatus, Reading};
use leakwatch_store::Store;
use leakwatch_wire::Uplink;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The durability tests run one at a time: each loads the machine heavily, and each
/// measures timing-sensitive recovery.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A Mosquitto of the test's own; in CI its absence fails the test.
fn own_mosquitto() -> Option<OwnMosquitto> {
    match OwnMosquitto::start() {
        Ok(m) => Some(m),
        Err(e) if leakwatch_store::testing::in_ci() => {
            panic!("{e}: in CI the durability suite must run, not skip")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// A synthetic fleet's messages: `meters` meters, `days` daily pushes of 24 hourly
/// readings each, plus the registry and the expected totals.
pub struct Traffic {
    pub registry: Vec<Meter>,
    pub messages: Vec<(String, Vec<u8>)>,
    pub readings: u64,
    /// Sum of all indexes in litres, and of all times in seconds: a checksum.
    pub litres: i64,
    pub seconds: i64,
}

pub fn traffic(prefix: &str, meters: usize, days: i64) -> Traffic {
    let t0 = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();
    let mut registry = Vec::new();
    let mut per_day: BTreeMap<i64, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    let (mut readings, mut litres, mut seconds) = (0u64, 0i64, 0i64);
    let mut seed = 0x2545F4914F6CDD1Du64;
    for i in 0..meters {
        let id = MeterId::parse(format!("CM{i:06}")).unwrap();
        let district = DistrictId::parse(format!("D{:02}", i % 10)).unwrap();
        registry.push(Meter {
            id: id.clone(),
            district: district.clone(),
            kind: MeterKind::Customer,
            location: GeoPoint {
                lat: 43.7 + (i % 100) as f64 * 1e-3,
                lon: 11.2,
            },
            report_every_h: 24,
            status: MeterStatus::Active,
            installed_at: None,
            max_flow_m3h: None,
        });
        let mut l = 100_000i64 + i as i64;
        for day in 0..days {
            let mut rs = Vec::with_capacity(24);
            for h in 0..24 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                l += (seed % 300) as i64;
                let t = t0 + Hours::hours(day * 24 + h);
                readings += 1;
                litres += l;
                seconds += t.timestamp();
                rs.push(Reading {
                    meter: id.clone(),
                    t,
                    vol: l as f64 / 1000.0,
                    temp: None,
                    flow_max: None,
                    pressure: None,
                });
            }
            let up = Uplink {
                district: district.clone(),
                meter: id.clone(),
                readings: rs,
                events: vec![],
                battery: Some(90),
                valve: None,
            };
            per_day.entry(day).or_default().push((
                leakwatch_wire::uplink_topic(prefix, &district, &id),
                leakwatch_wire::encode(&up),
            ));
        }
    }
    Traffic {
        registry,
        messages: per_day.into_values().flatten().collect(),
        readings,
        litres,
        seconds,
    }
}

/// (count, litres checksum, seconds checksum) of what the database holds.
async fn totals(url: &str) -> (i64, i64, i64) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let row: (i64, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT count(*)::int8, sum(round(vol * 1000))::int8, sum(extract(epoch FROM t))::int8 FROM readings",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    (row.0, row.1.unwrap_or(0), row.2.unwrap_or(0))
}

async fn publish_all(mqtt_port: u16, messages: &[(String, Vec<u8>)]) {
    publish_paced(mqtt_port, messages, usize::MAX, Duration::ZERO).await
}

/// Publishes `chunk` messages at a time with a pause between chunks, like a fleet
/// whose pushes spread over time.
async fn publish_paced(
    mqtt_port: u16,
    messages: &[(String, Vec<u8>)],
    chunk: usize,
    pause: Duration,
) {
    let p = leakwatch_sim::Publisher::connect("127.0.0.1", mqtt_port, &unique("lw-pub-"))
        .await
        .expect("publisher connects");
    for (i, (topic, payload)) in messages.iter().enumerate() {
        if i > 0 && i % chunk == 0 {
            tokio::time::sleep(pause).await;
        }
        p.publish_raw(topic, payload.clone()).await.unwrap();
    }
    p.flush(Duration::from_secs(120))
        .await
        .expect("broker acknowledged every message");
    p.disconnect().await.unwrap();
}

struct Child {
    proc: std::process::Child,
}

impl Drop for Child {
    fn drop(&mut self) {
        // Never leave an ingestor behind, even when the test fails.
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

fn spawn_ingestor(db: &str, mqtt: &str, prefix: &str, client_id: &str, http_port: u16) -> Child {
    let proc = std::process::Command::new(env!("CARGO_BIN_EXE_leakwatch"))
        .arg("run")
        .env("LEAKWATCH__DATABASE__URL", db)
        .env("LEAKWATCH__MQTT__URL", mqtt)
        .env("LEAKWATCH__MQTT__PREFIX", prefix)
        .env("LEAKWATCH__MQTT__CLIENT_ID", client_id)
        .env("LEAKWATCH__HTTP__LISTEN", format!("127.0.0.1:{http_port}"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start leakwatch run");
    Child { proc }
}

async fn wait_ready(http_port: u16) {
    let url = format!("http://127.0.0.1:{http_port}/readyz");
    wait_for("leakwatch ready", Duration::from_secs(30), || async {
        let r = reqwest::get(&url).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
}

/// A fresh PostgreSQL database holding the registry of a synthetic fleet, and that
/// fleet's traffic on topics under a new prefix starting with `tag`.
async fn registered_traffic(
    admin: &str,
    tag: &str,
    meters: usize,
    days: i64,
) -> (String, String, Traffic) {
    let db = leakwatch_store::testing::fresh_pg_database(admin)
        .await
        .unwrap();
    let prefix = unique(tag);
    let t = traffic(&prefix, meters, days);
    let store = Store::connect(&db).await.unwrap();
    store.upsert_meters(&t.registry).await.unwrap();
    store.close().await;
    (db, prefix, t)
}

/// The whole service in-process on `db` and the broker at `mqtt`.
async fn start_in_process(db: &str, mqtt: &str, prefix: &str) -> leakwatch::app::Running {
    let mut cfg = leakwatch::config::Config::load(None).unwrap();
    if std::env::var("LEAKWATCH_TEST_LOG").is_ok() {
        leakwatch::telemetry::init_logs(&cfg.log);
    }
    cfg.database.url = db.parse().unwrap();
    cfg.mqtt.url = Some(mqtt.parse().unwrap());
    cfg.mqtt.prefix = prefix.to_owned();
    cfg.mqtt.client_id = unique("lw-ingest-");
    cfg.http.listen = "127.0.0.1:0".parse().unwrap();
    leakwatch::app::start(&cfg, Default::default())
        .await
        .unwrap()
}

/// Waits until the in-process service is subscribed (`/readyz`), then sends the
/// first message alone and waits until it is stored, so nothing of the stream is
/// published before the ingestor's session exists.
async fn first_message_stored(
    running: &leakwatch::app::Running,
    mqtt_port: u16,
    db: &str,
    t: &Traffic,
) {
    wait_for("subscribed", Duration::from_secs(20), || async {
        let r = reqwest::get(format!("http://{}/readyz", running.http_addr))
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    publish_all(mqtt_port, &t.messages[..1]).await;
    wait_for("the first message", Duration::from_secs(30), || async {
        (totals(db).await.0 == 24).then_some(())
    })
    .await;
}

/// SIGKILL the ingesting process three times at random moments while a fleet's
/// readings stream in; at the end every reading is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_three_times_loses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (Some(admin), Some(mosq)) = (required_env("LEAKWATCH_TEST_PG"), own_mosquitto()) else {
        return;
    };
    // 216,000 readings in 9,000 messages.
    let (db, prefix, t) = registered_traffic(&admin, "crash", 1000, 9).await;
    assert!(t.readings >= 200_000);

    let client_id = unique("lw-crash-");
    let http_port = free_port();
    let mut child = spawn_ingestor(&db, &mosq.url(), &prefix, &client_id, http_port);
    wait_ready(http_port).await;
    // The session exists once a first message is stored.
    publish_all(mosq.port, &t.messages[..1]).await;
    wait_for("the first message", Duration::from_secs(30), || async {
        (totals(&db).await.0 == 24).then_some(())
    })
    .await;

    let port = mosq.port;
    let rest = t.messages[1..].to_vec();
    // A day's pushes every 1.5 s: the stream lasts about 12 s.
    let publisher =
        tokio::spawn(
            async move { publish_paced(port, &rest, 1000, Duration::from_millis(1500)).await },
        );
    let mut rng = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut kills = Vec::new();
    for _ in 0..3 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let wait_ms = 300 + rng % 2500;
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        let before = totals(&db).await.0;
        child.proc.kill().unwrap(); // SIGKILL
        child.proc.wait().unwrap();
        kills.push((wait_ms, before));
        drop(child);
        tokio::time::sleep(Duration::from_millis(200)).await;
        child = spawn_ingestor(&db, &mosq.url(), &prefix, &client_id, http_port);
        wait_ready(http_port).await;
    }
    publisher.await.unwrap();
    let expected = t.readings as i64;
    wait_for("every reading", Duration::from_secs(180), || async {
        (totals(&db).await.0 >= expected).then_some(())
    })
    .await;
    // Give redeliveries a moment to show up as duplicates, if any were stored twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (n, litres, seconds) = totals(&db).await;
    eprintln!(
        "crash test: killed at {kills:?} (ms after start, readings stored then); final {n} readings"
    );
    assert_eq!(n, expected, "every reading stored exactly once");
    assert_eq!(litres, t.litres, "values match what was published");
    assert_eq!(seconds, t.seconds, "times match what was published");
    assert!(
        kills.iter().any(|(_, before)| *before < expected),
        "kills happened mid-stream"
    );
    drop(child);
    leakwatch_store::testing::drop_pg_database(&admin, &db).await;
}

/// PostgreSQL unreachable for 20 s mid-stream: ingest holds, retries, and resumes by
/// itself; nothing is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_of_20s_loses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (Some(admin), Some(mosq)) = (required_env("LEAKWATCH_TEST_PG"), own_mosquitto()) else {
        return;
    };
    let (db, prefix, t) = registered_traffic(&admin, "outage", 300, 4).await;
    let upstream: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let via_proxy = db.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(via_proxy, db, "the test database URL names 127.0.0.1:5432");
    let running = start_in_process(&via_proxy, &mosq.url(), &prefix).await;
    first_message_stored(&running, mosq.port, &db, &t).await;

    let half = t.messages.len() / 2;
    publish_all(mosq.port, &t.messages[1..half]).await;
    wait_for("the first half", Duration::from_secs(60), || async {
        (totals(&db).await.0 > 24).then_some(())
    })
    .await;
    proxy.cut();
    let cut_at = Instant::now();
    publish_all(mosq.port, &t.messages[half..]).await;
    let during = totals(&db).await.0;
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(cut_at.elapsed())).await;
    let ready = reqwest::get(format!("http://{}/readyz", running.http_addr))
        .await
        .unwrap()
        .status();
    assert_eq!(ready, 503, "/readyz reports the store gone");
    assert_eq!(
        totals(&db).await.0,
        during,
        "nothing written while the database is away"
    );
    proxy.restore();
    let restored = Instant::now();
    wait_for(
        "every reading after the outage",
        Duration::from_secs(90),
        || async { (totals(&db).await.0 >= t.readings as i64).then_some(()) },
    )
    .await;
    eprintln!(
        "outage test: {during} of {} readings stored before the cut ended; all in {:.1}s after",
        t.readings,
        restored.elapsed().as_secs_f64()
    );
    let (n, litres, seconds) = totals(&db).await;
    assert_eq!(
        (n, litres, seconds),
        (t.readings as i64, t.litres, t.seconds)
    );
    running.shutdown().await;
    leakwatch_store::testing::drop_pg_database(&admin, &db).await;
}

/// Mosquitto restarted mid-stream (persistence on): nothing is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (Some(admin), Some(mut mosq)) = (required_env("LEAKWATCH_TEST_PG"), own_mosquitto()) else {
        return;
    };
    let (db, prefix, t) = registered_traffic(&admin, "brk", 500, 4).await;
    let running = start_in_process(&db, &mosq.url(), &prefix).await;
    first_message_stored(&running, mosq.port, &db, &t).await;

    let third = t.messages.len() / 3;
    publish_all(mosq.port, &t.messages[1..third]).await;
    let port = mosq.port;
    let rest = t.messages[third..].to_vec();
    // Half a day's pushes every 0.5 s: the stream is still flowing at the restart.
    let publisher =
        tokio::spawn(
            async move { publish_paced(port, &rest, 250, Duration::from_millis(500)).await },
        );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = totals(&db).await.0;
    mosq.restart();
    publisher.await.unwrap();
    wait_for(
        "every reading after the restart",
        Duration::from_secs(90),
        || async { (totals(&db).await.0 >= t.readings as i64).then_some(()) },
    )
    .await;
    eprintln!(
        "broker restart test: {before} of {} readings stored at the restart",
        t.readings
    );
    let (n, litres, seconds) = totals(&db).await;
    assert_eq!(
        (n, litres, seconds),
        (t.readings as i64, t.litres, t.seconds)
    );
    running.shutdown().await;
    leakwatch_store::testing::drop_pg_database(&admin, &db).await;
}
