//! Detection across a restart: the detectors' state is checkpointed to the store and
//! restored at start-up, so a service restarted in the middle of a stream raises the
//! same alerts, at the same event times, as one that ran straight through.

use crate::support::{Backend, Service, wait_for};
use leakwatch_core::MeterRecord;
use leakwatch_sim::{
    FaultRates, Fleet, FleetConfig, HomeClass, HouseholdMix, LeakConfig, PublishConfig,
};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

type AlertKey = (String, String, String);

fn fleet() -> Fleet {
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
            silent: 100.0,
            counter_regression: 100.0,
            ..FaultRates::default()
        },
        ..FleetConfig::default()
    })
}

/// Publishes `hours` of the fleet's stream and waits until the detectors have seen
/// every reading of it (counted since the service's start: `already`).
async fn publish(svc: &Service, fleet: &mut Fleet, hours: u32, already: u64) -> u64 {
    let publisher = svc.publisher().await;
    let stats = leakwatch_sim::publish(
        fleet,
        &publisher,
        &PublishConfig {
            prefix: svc.prefix.clone(),
            hours: Some(hours),
            sim_hour: Duration::ZERO,
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
            let kind = a["kind"].as_str().unwrap().to_owned();
            // Silence is judged when the watermark passes an hour, and how far it
            // jumps at once depends on how ingest batched the messages: its time is
            // not compared, only that it was raised.
            let at = if kind == "silence" {
                String::new()
            } else {
                a["detected_at"].as_str().unwrap().to_owned()
            };
            (kind, subject, at)
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
    let kinds: BTreeSet<&str> = straight.iter().map(|(k, _, _)| k.as_str()).collect();
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
