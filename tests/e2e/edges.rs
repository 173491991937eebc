//! The edges of the service: registry changes while running (the API and the CLI in
//! another process), readings far before a meter's installation or registration,
//! start-up during a database outage, free-text limits, bounded `/metrics` labels.

use crate::support::{Backend, Service, required_env, unique, wait_for};
use chrono::{Datelike, Duration as Hours, TimeZone, Utc};
use leakwatch::testkit::{Proxy, free_port};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn meter(id: &str, district: &str) -> Value {
    json!({"meter_id": id, "district_id": district, "kind": "customer",
           "lat": 43.77, "lon": 11.25, "report_every_h": 24})
}

/// A reading of `meter` on `district`'s topic, `hours_ago` before now (on the hour).
fn message(
    svc: &Service,
    district: &str,
    meter: &str,
    hours_ago: i64,
    vol: f64,
) -> (String, Vec<u8>) {
    let now = Utc::now();
    let t = Utc
        .with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
        .unwrap()
        - Hours::hours(hours_ago);
    (
        format!("{}/{district}/{meter}/up", svc.prefix),
        json!({"v": 1, "meter": meter, "readings": [{"t": t.to_rfc3339(), "vol": vol}]})
            .to_string()
            .into_bytes(),
    )
}

async fn readings_of(svc: &Service, meter: &str) -> usize {
    let (_, v) = svc
        .get(&format!(
            "/api/v1/meters/{meter}/readings?from=2000-01-01T00:00:00Z"
        ))
        .await;
    v.as_array().map(|a| a.len()).unwrap_or(0)
}

async fn dead_letter_reasons(svc: &Service) -> Vec<(String, String)> {
    let (_, v) = svc.get("/api/v1/dead-letters?limit=100").await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["topic"].as_str().unwrap().to_owned(),
                d["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Publishes a reading of `meter` on `district` (a new hour each try) until one is
/// stored; returns how long that took.
async fn accepted_within(
    svc: &Service,
    district: &str,
    meter: &str,
    timeout: Duration,
) -> Duration {
    let p = svc.publisher().await;
    let started = Instant::now();
    let before = readings_of(svc, meter).await;
    let mut hours_ago = 200;
    loop {
        let (topic, payload) = message(
            svc,
            district,
            meter,
            hours_ago,
            100.0 - hours_ago as f64 / 10.0,
        );
        hours_ago -= 1;
        p.publish_raw(&topic, payload).await.unwrap();
        p.flush(Duration::from_secs(10)).await.unwrap();
        let tried = Instant::now();
        while tried.elapsed() < Duration::from_millis(500) {
            if readings_of(svc, meter).await > before {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            started.elapsed() < timeout,
            "{meter} on {district} not accepted within {timeout:?}"
        );
    }
}

async fn moved_while_running(backend: Backend) {
    let Some(svc) = Service::start(backend, |_| {}).await else {
        return;
    };
    let (s, b) = svc
        .post("/api/v1/meters", &json!([meter("M1", "D1")]))
        .await;
    assert_eq!(s, 200, "{b}");
    accepted_within(&svc, "D1", "M1", Duration::from_secs(10)).await;
    // Moved through the API while the ingestor holds it in its cache.
    let (s, b) = svc
        .post("/api/v1/meters", &json!([meter("M1", "D2")]))
        .await;
    assert_eq!(s, 200, "{b}");
    let took = accepted_within(&svc, "D2", "M1", Duration::from_secs(10)).await;
    eprintln!("{backend:?}: a moved meter was accepted on its new district after {took:?}");
    // ... and the old district is now the wrong one.
    let p = svc.publisher().await;
    let (topic, payload) = message(&svc, "D1", "M1", 1, 200.0);
    p.publish_raw(&topic, payload).await.unwrap();
    p.flush(Duration::from_secs(10)).await.unwrap();
    wait_for(
        "the old district refused",
        Duration::from_secs(10),
        || async {
            dead_letter_reasons(&svc)
                .await
                .contains(&(topic.clone(), "district_mismatch".to_owned()))
                .then_some(())
        },
    )
    .await;
    let (_, m) = svc.get("/api/v1/meters/M1").await;
    assert_eq!(m["district_id"], "D2", "{m}");
    svc.stop().await;
}

#[tokio::test]
async fn moved_while_running_embedded_sqlite() {
    moved_while_running(Backend::EmbeddedSqlite).await;
}

#[tokio::test]
async fn moved_while_running_mosquitto_postgres() {
    moved_while_running(Backend::MosquittoPostgres).await;
}

/// `leakwatch meters import` in another process, while the service runs: a new
/// meter and a moved one are accepted within seconds.
async fn imported_from_the_cli(backend: Backend) {
    let Some(svc) = Service::start(backend, |_| {}).await else {
        return;
    };
    let (s, b) = svc
        .post("/api/v1/meters", &json!([meter("OLD1", "D1")]))
        .await;
    assert_eq!(s, 200, "{b}");
    accepted_within(&svc, "D1", "OLD1", Duration::from_secs(10)).await;
    let dir = std::env::temp_dir().join(unique("lw-import-"));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("meters.csv");
    // The optional installed_at column after the six of older files.
    std::fs::write(
        &csv,
        "meter_id,district_id,kind,lat,lon,report_every_h,installed_at\n\
         NEW1,D3,customer,43.7,11.2,24,2020-01-01T00:00:00Z\n\
         OLD1,D4,customer,43.7,11.2,24,\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leakwatch"))
        .args(["meters", "import"])
        .arg(&csv)
        .env("LEAKWATCH__DATABASE__URL", svc.cfg.database.url.expose())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run leakwatch meters import");
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = accepted_within(&svc, "D3", "NEW1", Duration::from_secs(15)).await;
    let moved = accepted_within(&svc, "D4", "OLD1", Duration::from_secs(15)).await;
    eprintln!(
        "{backend:?}: after `meters import` in another process, a new meter was accepted after \
         {new:?} and a moved one after a further {moved:?}"
    );
    let (_, m) = svc.get("/api/v1/meters/NEW1").await;
    assert_eq!(m["installed_at"], "2020-01-01T00:00:00Z", "{m}");
    let _ = std::fs::remove_dir_all(&dir);
    svc.stop().await;
}

#[tokio::test]
async fn imported_from_the_cli_embedded_sqlite() {
    imported_from_the_cli(Backend::EmbeddedSqlite).await;
}

#[tokio::test]
async fn imported_from_the_cli_mosquitto_postgres() {
    imported_from_the_cli(Backend::MosquittoPostgres).await;
}

/// A 1970 reading for a meter installed this year is rejected with its reason; so is
/// one for a meter without an installation date registered now (ten years back is
/// the default bound), while back-filled history inside the bound is kept.
async fn readings_far_back(backend: Backend) {
    let Some(svc) = Service::start(backend, |_| {}).await else {
        return;
    };
    let this_year = Utc
        .with_ymd_and_hms(Utc::now().year(), 1, 1, 0, 0, 0)
        .unwrap();
    let mut installed = meter("INST", "D1");
    installed["installed_at"] = json!(this_year.to_rfc3339());
    let (s, b) = svc
        .post("/api/v1/meters", &json!([installed, meter("REG", "D1")]))
        .await;
    assert_eq!(s, 200, "{b}");
    let p = svc.publisher().await;
    let at = |m: &str, t: &str, vol: f64| {
        (
            format!("{}/D1/{m}/up", svc.prefix),
            json!({"v": 1, "meter": m, "readings": [{"t": t, "vol": vol}]}).to_string(),
        )
    };
    let two_years_ago = (Utc::now() - Hours::days(730))
        .format("%Y-%m-%dT00:00:00Z")
        .to_string();
    for (topic, payload) in [
        at("INST", "1970-01-01T00:00:00Z", 1.0),
        at("REG", "1970-01-01T00:00:00Z", 1.0),
        at("REG", &two_years_ago, 2.0),
    ] {
        p.publish_raw(&topic, payload.into_bytes()).await.unwrap();
    }
    p.flush(Duration::from_secs(10)).await.unwrap();
    let inst_topic = format!("{}/D1/INST/up", svc.prefix);
    let reg_topic = format!("{}/D1/REG/up", svc.prefix);
    wait_for("both refusals", Duration::from_secs(15), || async {
        let r = dead_letter_reasons(&svc).await;
        (r.contains(&(inst_topic.clone(), "t_before_installation".to_owned()))
            && r.contains(&(reg_topic.clone(), "t_before_registration".to_owned())))
        .then_some(())
    })
    .await;
    wait_for(
        "the back-filled reading",
        Duration::from_secs(15),
        || async { (readings_of(&svc, "REG").await == 1).then_some(()) },
    )
    .await;
    assert_eq!(readings_of(&svc, "INST").await, 0);
    let (_, dl) = svc.get("/api/v1/dead-letters?limit=10").await;
    let detail = dl
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["reason"] == "t_before_installation")
        .map(|d| d["detail"].as_str().unwrap().to_owned())
        .unwrap();
    assert!(detail.contains("installation"), "{detail}");
    svc.stop().await;
}

#[tokio::test]
async fn readings_far_back_embedded_sqlite() {
    readings_far_back(Backend::EmbeddedSqlite).await;
}

#[tokio::test]
async fn readings_far_back_mosquitto_postgres() {
    readings_far_back(Backend::MosquittoPostgres).await;
}

/// Every free-text field has a maximum length; a longer one is a 422 naming the
/// field and the limit, and nothing is stored.
#[tokio::test]
async fn free_text_is_bounded() {
    let Some(svc) = Service::start(Backend::EmbeddedSqlite, |_| {}).await else {
        return;
    };
    let big = "x".repeat(10_000);
    let order = json!({"kind": "meter_check", "priority": "normal",
                       "location": {"lat": 43.77, "lon": 11.25}, "summary": big});
    let (s, b) = svc.post("/api/v1/work-orders", &order).await;
    assert_eq!(s, 422, "{b}");
    assert!(b["error"].as_str().unwrap().contains("summary"), "{b}");
    assert!(b["error"].as_str().unwrap().contains("at most 1000"), "{b}");
    let crews = json!([{"id": "C1", "name": big, "home": {"lat": 43.7, "lon": 11.2}}]);
    let (s, b) = svc.post("/api/v1/crews", &crews).await;
    assert_eq!(s, 422, "{b}");
    assert!(b["error"].as_str().unwrap().contains("name"), "{b}");
    // A fitting order, then a cancel reason too long, and a forged X-Actor.
    let order = json!({"kind": "meter_check", "priority": "normal",
                       "location": {"lat": 43.77, "lon": 11.25}, "summary": "check"});
    let (s, b) = svc.post("/api/v1/work-orders", &order).await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_i64().unwrap();
    let (s, b) = svc
        .post(
            &format!("/api/v1/work-orders/{id}/transition"),
            &json!({"action": "cancel", "reason": big}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert!(b["error"].as_str().unwrap().contains("reason"), "{b}");
    // X-Actor is ignored: the actor is the credential's name (here the legacy token).
    let r = svc
        .http
        .post(svc.url(&format!("/api/v1/work-orders/{id}/transition")))
        .header("X-Actor", "a".repeat(500))
        .json(&json!({"action": "cancel", "reason": "duplicate"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, o) = svc.get(&format!("/api/v1/work-orders/{id}")).await;
    assert_eq!(o["status"], "cancelled", "{o}");
    let last = o["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actor"], "api-token", "{o}");
    svc.stop().await;
}

/// Invented HTTP methods and paths never become metrics labels.
#[tokio::test]
async fn metrics_labels_do_not_grow_with_what_clients_invent() {
    let Some(svc) = Service::start(Backend::EmbeddedSqlite, |_| {}).await else {
        return;
    };
    for i in 0..20 {
        let method = reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
        let _ = svc
            .http
            .request(method, svc.url(&format!("/api/v1/alerts/nothing-{i}")))
            .send()
            .await
            .unwrap();
        let _ = svc.get(&format!("/no/such/path/{i}")).await;
    }
    let metrics = svc.text("/metrics").await;
    assert!(!metrics.contains("INVENTED"), "{metrics}");
    assert!(!metrics.contains("nothing-"), "{metrics}");
    assert!(!metrics.contains("/no/such"), "{metrics}");
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    svc.stop().await;
}

/// (count, litres checksum) of the readings in the database at `url`.
async fn totals(url: &str) -> (i64, i64) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let row: (i64, Option<i64>) =
        sqlx::query_as("SELECT count(*)::int8, sum(round(vol * 1000))::int8 FROM readings")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    (row.0, row.1.unwrap_or(0))
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_run(db: &str, mqtt: &str, prefix: &str, client_id: &str, http_port: u16) -> Child {
    Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_leakwatch"))
            .arg("run")
            .env("LEAKWATCH__DATABASE__URL", db)
            .env("LEAKWATCH__DATABASE__WAIT_S", "120")
            .env("LEAKWATCH__MQTT__URL", mqtt)
            .env("LEAKWATCH__MQTT__PREFIX", prefix)
            .env("LEAKWATCH__MQTT__CLIENT_ID", client_id)
            .env("LEAKWATCH__HTTP__LISTEN", format!("127.0.0.1:{http_port}"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log_file(client_id))
            .spawn()
            .expect("start leakwatch run"),
    )
}

/// The child's log, kept in the temporary directory (appended across its runs).
fn log_file(client_id: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join(format!("{client_id}.log")))
        .unwrap()
}

async fn status(url: &str) -> Option<u16> {
    Some(reqwest::get(url).await.ok()?.status().as_u16())
}

/// A process killed while PostgreSQL is away and started again during the outage
/// (as a supervisor would) waits for the database instead of exiting, answers
/// `/healthz` (and not `/readyz`) meanwhile, and ingests everything once it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_during_a_database_outage_it_ingests_everything_once_it_returns() {
    let (Some(admin), Some(mqtt)) = (
        required_env("LEAKWATCH_TEST_PG"),
        required_env("LEAKWATCH_TEST_MQTT"),
    ) else {
        return;
    };
    let db = leakwatch_store::testing::fresh_pg_database(&admin)
        .await
        .unwrap();
    let prefix = unique("lwstart");
    let t = crate::durability::traffic(&prefix, 20, 3);
    let store = leakwatch_store::Store::connect(&db).await.unwrap();
    store.upsert_meters(&t.registry).await.unwrap();
    store.close().await;
    let upstream: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let via_proxy = db.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(via_proxy, db, "the test database URL names 127.0.0.1:5432");
    let mqtt_addr = leakwatch::config::parse_mqtt_url(&mqtt).unwrap();
    let client_id = unique("lw-start-");
    let http_port = free_port();
    let base = format!("http://127.0.0.1:{http_port}");

    // A first run makes the broker session and stores the first message.
    let mut child = spawn_run(&via_proxy, &mqtt, &prefix, &client_id, http_port);
    wait_for("ready", Duration::from_secs(30), || async {
        (status(&format!("{base}/readyz")).await == Some(200)).then_some(())
    })
    .await;
    let p = leakwatch_sim::Publisher::connect(&mqtt_addr.host, mqtt_addr.port, &unique("lw-pub-"))
        .await
        .unwrap();
    p.publish_raw(&t.messages[0].0, t.messages[0].1.clone())
        .await
        .unwrap();
    p.flush(Duration::from_secs(10)).await.unwrap();
    wait_for("the first message", Duration::from_secs(30), || async {
        (totals(&db).await.0 == 24).then_some(())
    })
    .await;

    // The database goes away, the process dies; the fleet keeps publishing.
    proxy.cut();
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    for (topic, payload) in &t.messages[1..] {
        p.publish_raw(topic, payload.clone()).await.unwrap();
    }
    p.flush(Duration::from_secs(30)).await.unwrap();
    p.disconnect().await.unwrap();

    // Started again while the database is still away: it waits, and says so.
    child = spawn_run(&via_proxy, &mqtt, &prefix, &client_id, http_port);
    wait_for(
        "/healthz while waiting",
        Duration::from_secs(20),
        || async { (status(&format!("{base}/healthz")).await == Some(200)).then_some(()) },
    )
    .await;
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["waiting_for"].as_str().unwrap_or("").contains("store"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the process waits for the database instead of exiting"
    );
    assert_eq!(totals(&db).await.0, 24);

    proxy.restore();
    let restored = Instant::now();
    wait_for("every reading", Duration::from_secs(60), || async {
        (totals(&db).await.0 >= t.readings as i64).then_some(())
    })
    .await;
    eprintln!(
        "start during an outage: all {} readings stored {:.1} s after the database returned",
        t.readings,
        restored.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(totals(&db).await, (t.readings as i64, t.litres));
    wait_for("ready", Duration::from_secs(30), || async {
        (status(&format!("{base}/readyz")).await == Some(200)).then_some(())
    })
    .await;
    drop(child);
    leakwatch_store::testing::drop_pg_database(&admin, &db).await;
}
