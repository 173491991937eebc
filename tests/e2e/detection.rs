//! Detection in event time, through the whole service: the alerts a stream raises
//! (kind, subject, detected_at, count, final status) do not depend on restarts (the
//! detectors' state is checkpointed to the store and restored at start-up) nor on the
//! rate the stream is published at (which cuts it into different batches).

use crate::support::{Backend, Service, wait_for};
use leakwatch_core::MeterRecord;
use leakwatch_sim::{
    FaultRates, Fleet, FleetConfig, HomeClass, HouseholdMix, LeakConfig, PublishConfig,
};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

/// kind, subject, detected_at, count, status.
type AlertKey = (String, String, String, u64, String);

fn fleet() -> Fleet {
    fleet_with(100.0)
}

/// The test fleet with `silent` silent meters per 1,000.
fn fleet_with(silent: f64) -> Fleet {
    Fleet::generate(&FleetConfig {
        seed: 11,
        districts: 3,
        meters_per_district: 8,
        leaks: 3,
        push_every_h: 6,
        hours: Some(144),
        households: HouseholdMix::only(HomeClass::Setback),
        // Leaks that begin shortly before the restart: their continuous-flow runs
        // straddle it, so their alerts depend on what the detectors remembered.
        leak: LeakConfig {
            from_h: 54,
            to_h: 66,
            ..LeakConfig::default()
        },
        faults: FaultRates {
            tamper: 100.0,
            battery_low: 100.0,
            silent,
            counter_regression: 100.0,
            ..FaultRates::default()
        },
        ..FleetConfig::default()
    })
}

/// Publishes `hours` of the fleet's stream and waits until the detectors have seen
/// every reading of it (counted since the service's start: `already`).
async fn publish(svc: &Service, fleet: &mut Fleet, hours: u32, already: u64) -> u64 {
    publish_at(svc, fleet, hours, already, Duration::ZERO).await
}

/// As [`publish`], one simulated hour every `sim_hour`.
async fn publish_at(
    svc: &Service,
    fleet: &mut Fleet,
    hours: u32,
    already: u64,
    sim_hour: Duration,
) -> u64 {
    let publisher = svc.publisher().await;
    let stats = leakwatch_sim::publish(
        fleet,
        &publisher,
        &PublishConfig {
            prefix: svc.prefix.clone(),
            hours: Some(hours),
            sim_hour,
            duplicate_every: None,
        },
        std::future::pending(),
    )
    .await
    .expect("publish");
    publisher.disconnect().await.unwrap();
    let target = already + stats.readings;
    wait_for(
        "the detectors to see every reading",
        Duration::from_secs(60),
        || async {
            let (_, d) = svc.get("/api/v1/detection").await;
            (d["readings_processed"].as_u64()? >= target).then_some(())
        },
    )
    .await;
    target
}

async fn alerts(svc: &Service) -> BTreeSet<AlertKey> {
    let (status, body) = svc.get("/api/v1/alerts?limit=1000").await;
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let subject = a["meter_id"]
                .as_str()
                .or(a["district_id"].as_str())
                .unwrap_or("")
                .to_owned();
            (
                a["kind"].as_str().unwrap().to_owned(),
                subject,
                a["detected_at"].as_str().unwrap().to_owned(),
                a["count"].as_u64().unwrap(),
                a["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Runs the stream in two halves, restarting the service in between or not.
async fn run(restart: bool) -> Option<BTreeSet<AlertKey>> {
    // Checkpoints only at shutdown and no replay of stored readings: what the
    // detectors knew must come back from the checkpoint alone.
    let mut svc = Service::start(Backend::MosquittoPostgres, |c| {
        c.detect.checkpoint_every_s = 3600;
        c.detect.replay_h = 0;
    })
    .await?;
    let mut fleet = fleet();
    let records: Vec<MeterRecord> = fleet.registry().iter().map(MeterRecord::from).collect();
    let (status, body) = svc.post("/api/v1/meters", &json!(records)).await;
    assert_eq!(status, 200, "{body}");

    publish(&svc, &mut fleet, 72, 0).await;
    let mut seen = 0;
    if restart {
        svc.restart().await;
        let d = wait_for(
            "the detectors' state restored",
            Duration::from_secs(20),
            || async {
                let (_, d) = svc.get("/api/v1/detection").await;
                (d["restored_meters"].as_u64()? > 0).then_some(d)
            },
        )
        .await;
        // Every meter that had reported (a silent one may not have yet).
        let restored = d["restored_meters"].as_u64().unwrap();
        assert!(restored + 3 >= records.len() as u64, "{d}");
        assert!(d["watermark"].is_string(), "{d}");
    } else {
        let (_, d) = svc.get("/api/v1/detection").await;
        seen = d["readings_processed"].as_u64().unwrap();
    }
    publish(&svc, &mut fleet, 72, seen).await;
    let found = alerts(&svc).await;
    svc.stop().await;
    Some(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_stream_raises_the_same_alerts() {
    let Some(straight) = run(false).await else {
        return;
    };
    let restarted = run(true).await.expect("the same backend as the first run");
    let kinds: BTreeSet<&str> = straight.iter().map(|a| a.0.as_str()).collect();
    for kind in [
        "continuous_flow",
        "tamper",
        "battery_low",
        "counter_regression",
    ] {
        assert!(kinds.contains(kind), "no {kind} alert in {straight:#?}");
    }
    assert_eq!(restarted, straight);
}

/// The whole stream at `sim_hour` per simulated hour, on the embedded broker and
/// SQLite (no service outside the process needed).
async fn at_rate(sim_hour: Duration) -> BTreeSet<AlertKey> {
    let svc = Service::start(Backend::EmbeddedSqlite, |_| {})
        .await
        .expect("the embedded backend needs nothing outside the process");
    // Many silent meters: silence is the check most sensitive to how far event time
    // jumps at once.
    let mut fleet = fleet_with(400.0);
    let records: Vec<MeterRecord> = fleet.registry().iter().map(MeterRecord::from).collect();
    let (status, body) = svc.post("/api/v1/meters", &json!(records)).await;
    assert_eq!(status, 200, "{body}");
    publish_at(&svc, &mut fleet, 144, 0, sim_hour).await;
    let found = alerts(&svc).await;
    svc.stop().await;
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publish_rates_raise_the_same_alerts() {
    let fast = at_rate(Duration::ZERO).await;
    let paced = at_rate(Duration::from_millis(40)).await;
    let kinds: BTreeSet<&str> = fast.iter().map(|a| a.0.as_str()).collect();
    for kind in ["continuous_flow", "silence", "tamper"] {
        assert!(kinds.contains(kind), "no {kind} alert in {fast:#?}");
    }
    let only_fast: Vec<_> = fast.difference(&paced).collect();
    let only_paced: Vec<_> = paced.difference(&fast).collect();
    assert!(
        only_fast.is_empty() && only_paced.is_empty(),
        "published at full speed only: {only_fast:#?}\npaced only: {only_paced:#?}"
    );
}

/// Each meter's learning state is visible in the API, and the counts per state in
/// `/api/v1/detection` and `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_is_visible_per_meter_and_counted() {
    let svc = Service::start(Backend::EmbeddedSqlite, |c| c.detect.checkpoint_every_s = 1)
        .await
        .expect("the embedded backend needs nothing outside the process");
    let mut fleet = fleet();
    let records: Vec<MeterRecord> = fleet.registry().iter().map(MeterRecord::from).collect();
    let (status, body) = svc.post("/api/v1/meters", &json!(records)).await;
    assert_eq!(status, 200, "{body}");
    let customer = records
        .iter()
        .find(|r| r.kind == "customer")
        .unwrap()
        .meter_id
        .clone();
    let (s, before) = svc
        .get(&format!("/api/v1/meters/{customer}/learning"))
        .await;
    assert_eq!(
        (s, before["state"].as_str()),
        (200, Some("no_readings")),
        "{before}"
    );
    publish(&svc, &mut fleet, 48, 0).await;
    let (s, l) = svc
        .get(&format!("/api/v1/meters/{customer}/learning"))
        .await;
    assert_eq!(s, 200, "{l}");
    assert_eq!(l["state"], "learning", "{l}");
    assert!(
        l["learned_days"].as_u64().unwrap() < l["needed_days"].as_u64().unwrap(),
        "{l}"
    );
    let (s, missing) = svc.get("/api/v1/meters/NO-SUCH-METER/learning").await;
    assert_eq!(s, 404, "{missing}");
    let d = wait_for("learning counts", Duration::from_secs(10), || async {
        let (_, d) = svc.get("/api/v1/detection").await;
        (d["meters_learning"].as_u64()? > 0).then_some(d)
    })
    .await;
    assert_eq!(d["meters_learned"], 0, "{d}");
    let metrics = svc.text("/metrics").await;
    assert!(
        metrics.contains("leakwatch_detector_meters_by_learning{state=\"learning\"}"),
        "{metrics}"
    );
    svc.stop().await;
}
