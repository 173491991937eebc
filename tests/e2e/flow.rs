//! Meter message -> alert -> escalation -> crew's job -> lifecycle, over real MQTT.

use crate::support::{Backend, Service, wait_for};
use leakwatch_core::{GeoPoint, MeterRecord};
use leakwatch_sim::{Fleet, FleetConfig, HomeClass, HouseholdMix, LeakConfig, PublishConfig};
use serde_json::{Value, json};
use std::time::Duration;

/// Simulated hours published.
const HOURS: u32 = 13 * 24;

async fn whole_path(backend: Backend) {
    let Some(svc) = Service::start(backend, |_| {}).await else {
        return;
    };
    let mut fleet = Fleet::generate(&FleetConfig {
        seed: 7,
        districts: 2,
        meters_per_district: 6,
        leaks: 1,
        // Daily pushes: fewer messages than the broker queues by default (1,000).
        push_every_h: 24,
        // Homes that rest at night: any other continuous-flow alert is a false alarm.
        households: HouseholdMix::only(HomeClass::Setback),
        // The leak (60-200 L/h) starts once the meters have learned for 11 days (a
        // meter still learning raises no leak alert unless the evidence is strong on
        // its own).
        leak: LeakConfig {
            from_h: 11 * 24,
            to_h: 11 * 24 + 12,
            min_rate_l_per_h: 60.0,
            max_rate_l_per_h: 200.0,
            ..LeakConfig::default()
        },
        ..FleetConfig::default()
    });
    let truth = fleet.truth().leaks[0].clone();
    let start = fleet.now();

    // The registry and the crews go in through the API.
    let records: Vec<MeterRecord> = fleet.registry().iter().map(MeterRecord::from).collect();
    let (status, body) = svc.post("/api/v1/meters", &json!(records)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["upserted"], json!(records.len()));
    let crews = fleet.crews();
    let (status, body) = svc.post("/api/v1/crews", &json!(crews)).await;
    assert_eq!(status, 200, "{body}");

    // Thirteen simulated days as fast as the broker takes them.
    let publisher = svc.publisher().await;
    let stats = leakwatch_sim::publish(
        &mut fleet,
        &publisher,
        &PublishConfig {
            prefix: svc.prefix.clone(),
            hours: Some(HOURS),
            sim_hour: Duration::ZERO,
            duplicate_every: None,
        },
        std::future::pending(),
    )
    .await
    .expect("publish");
    publisher.disconnect().await.unwrap();
    let expected_readings = stats.readings;

    // Every reading arrives (idempotent: the first message of each meter repeats nothing).
    let last_t = (start + chrono::Duration::hours(HOURS.into())).to_rfc3339();
    let leak_meter = truth.meter.to_string();
    wait_for("the last readings", Duration::from_secs(180), || async {
        let (_, v) = svc
            .get(&format!("/api/v1/meters/{leak_meter}/readings"))
            .await;
        let rows = v.as_array()?;
        (rows.last()?["t"].as_str()? == last_t.replace("+00:00", "Z")).then_some(())
    })
    .await;
    let stored = svc.running().store.count_readings().await.unwrap();
    assert_eq!(
        stored as u64, expected_readings,
        "every reading stored once"
    );

    // The leak is found, in event time, with evidence.
    let alert: Value = wait_for("the leak alert", Duration::from_secs(30), || async {
        let (_, v) = svc.get("/api/v1/alerts?kind=continuous_flow").await;
        v["items"]
            .as_array()?
            .iter()
            .find(|a| a["meter_id"] == json!(leak_meter))
            .cloned()
    })
    .await;
    let (_, all) = svc.get("/api/v1/alerts").await;
    for a in all["items"].as_array().unwrap() {
        assert_eq!(a["meter_id"], json!(leak_meter), "false alarm: {a}");
    }
    let detected: chrono::DateTime<chrono::Utc> =
        alert["detected_at"].as_str().unwrap().parse().unwrap();
    assert!(
        detected >= truth.start,
        "detected {detected} before the leak began {}",
        truth.start
    );
    assert!(
        detected <= truth.start + chrono::Duration::hours(24),
        "detected {detected}, more than 24 h after {}",
        truth.start
    );
    assert!(
        detected < start + chrono::Duration::hours(i64::from(HOURS) + 1),
        "detected_at is event time"
    );
    assert_eq!(alert["status"], "open");
    assert_eq!(alert["kind"], "continuous_flow");
    let ev = &alert["evidence"];
    // Continuous flow's rules ("no zero-flow hour in 24 h", or the quiet hours').
    assert!(!ev["rule"].as_str().unwrap().is_empty(), "{ev}");
    assert!(ev["threshold"].as_f64().unwrap() > 0.0, "{ev}");
    // The lowest hourly flow of the run: above the threshold (the run may have begun
    // with the household's own use before the leak).
    assert!(ev["observed"].as_f64().unwrap() > 0.001, "{ev} {truth:?}");
    assert!(ev["window_start"].is_string() && ev["window_end"].is_string());

    // Escalation makes a work order, assigned to the nearest crew.
    let id = alert["id"].as_i64().unwrap();
    let (status, body) = svc
        .post(&format!("/api/v1/alerts/{id}/escalate"), &json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    let order = &body["work_order"];
    assert_eq!(body["alert"]["status"], "escalated");
    assert_eq!(order["status"], "assigned");
    assert_eq!(order["kind"], "leak_investigation");
    let meter = fleet
        .registry()
        .into_iter()
        .find(|m| m.id == truth.meter)
        .unwrap();
    let nearest = crews
        .iter()
        .min_by(|a, b| {
            let d = |c: &leakwatch_core::Crew| c.home.distance_km(&meter.location);
            d(a).total_cmp(&d(b))
        })
        .unwrap();
    assert_eq!(order["crew_id"], json!(nearest.id.to_string()));
    let loc: GeoPoint = serde_json::from_value(order["location"].clone()).unwrap();
    assert_eq!(loc, meter.location);

    // Escalating twice is refused.
    let (status, _) = svc
        .post(&format!("/api/v1/alerts/{id}/escalate"), &json!({}))
        .await;
    assert_eq!(status, 409);

    // The crew sees the job.
    let crew = nearest.id.to_string();
    let oid = order["id"].as_i64().unwrap();
    let (status, jobs) = svc.get(&format!("/api/v1/crews/{crew}/jobs")).await;
    assert_eq!(status, 200);
    assert_eq!(jobs["items"].as_array().unwrap().len(), 1);
    assert_eq!(jobs["items"][0]["id"], json!(oid));

    // An illegal step is refused with a 4xx that says why, and changes nothing.
    let (status, err) = svc
        .post(
            &format!("/api/v1/work-orders/{oid}/transition"),
            &json!({"action": "arrive"}),
        )
        .await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("cannot arrive"),
        "{err}"
    );
    let (status, err) = svc
        .post(
            &format!("/api/v1/work-orders/{oid}/transition"),
            &json!({"action": "teleport"}),
        )
        .await;
    assert_eq!(status, 422, "{err}");

    // The lifecycle, walked by the crew.
    for (action, expected) in [
        (json!({"action": "accept"}), "accepted"),
        (json!({"action": "start_travel"}), "en_route"),
        (json!({"action": "arrive"}), "on_site"),
        (
            json!({"action": "complete", "notes": "leak at the meter union, tightened",
                   "finding": {"leak_found": true, "leak_class": "C", "repaired": true,
                               "gas_readings": [{"percent_lel": 4.0, "place": "by the meter"}]}}),
            "completed",
        ),
    ] {
        let r = svc
            .http
            .post(svc.url(&format!("/api/v1/work-orders/{oid}/transition")))
            .bearer_auth(svc.crew_token(crew.as_str()).await)
            .json(&action)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let wo: Value = r.json().await.unwrap();
        assert_eq!(wo["status"], expected);
    }
    let (status, _) = svc
        .post(
            &format!("/api/v1/work-orders/{oid}/transition"),
            &json!({"action": "accept"}),
        )
        .await;
    assert_eq!(status, 409, "a completed order refuses more steps");

    // The audit trail and the alert's outcome.
    let (_, wo) = svc.get(&format!("/api/v1/work-orders/{oid}")).await;
    let steps: Vec<&str> = wo["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "create",
            "assign",
            "accept",
            "start_travel",
            "arrive",
            "complete"
        ]
    );
    assert_eq!(wo["history"][2]["actor"], json!(crew));
    let (_, a) = svc.get(&format!("/api/v1/alerts/{id}")).await;
    assert_eq!(a["status"], "resolved");
    assert_eq!(a["outcome"], "confirmed_leak");
    assert_eq!(wo["finding"]["leak_class"], "C");
    let (_, jobs) = svc.get(&format!("/api/v1/crews/{crew}/jobs")).await;
    assert!(jobs["items"].as_array().unwrap().is_empty());

    // The console lists what is open.
    let page = svc.text("/").await;
    assert!(page.contains("Alert inbox"), "{page}");

    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_path_embedded_broker_sqlite() {
    whole_path(Backend::EmbeddedSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_path_mosquitto_postgres() {
    whole_path(Backend::MosquittoPostgres).await;
}
