//! Ingest over real MQTT: idempotency and dead letters.

use crate::support::{Backend, Service, wait_for};
use serde_json::json;
use std::time::Duration;

async fn register(svc: &Service) {
    let meters = json!([
        {"meter_id": "M1", "district_id": "D1", "kind": "customer", "lat": 43.77, "lon": 11.25, "report_every_h": 24},
        {"meter_id": "M2", "district_id": "D1", "kind": "customer", "lat": 43.78, "lon": 11.26}
    ]);
    let (status, body) = svc.post("/api/v1/meters", &meters).await;
    assert_eq!(status, 200, "{body}");
}

async fn readings_of(svc: &Service, meter: &str) -> usize {
    let (_, v) = svc.get(&format!("/api/v1/meters/{meter}/readings")).await;
    v.as_array().map(|a| a.len()).unwrap_or(0)
}

async fn same_message_twice(backend: Backend) {
    let Some(svc) = Service::start(backend, |_| {}).await else {
        return;
    };
    register(&svc).await;
    let p = svc.publisher().await;
    let topic = format!("{}/D1/M1/up", svc.prefix);
    let msg = json!({"v": 1, "meter": "M1", "readings": [
        {"t": "2026-11-26T00:00:00Z", "vol": 10.0},
        {"t": "2026-11-26T01:00:00Z", "vol": 10.25},
        {"t": "2026-11-26T02:00:00Z", "vol": 10.5}
    ]})
    .to_string();
    p.publish_raw(&topic, msg.as_bytes()).await.unwrap();
    p.publish_raw(&topic, msg.as_bytes()).await.unwrap();
    // A third message after the repeat: once it is stored, the repeat was handled.
    let marker =
        json!({"v": 1, "meter": "M1", "readings": [{"t": "2026-11-26T03:00:00Z", "vol": 10.75}]});
    p.publish_raw(&topic, marker.to_string().as_bytes())
        .await
        .unwrap();
    p.flush(Duration::from_secs(10)).await.unwrap();
    wait_for("the marker reading", Duration::from_secs(20), || async {
        (readings_of(&svc, "M1").await == 4).then_some(())
    })
    .await;
    assert_eq!(svc.running().store.count_readings().await.unwrap(), 4);
    let (_, v) = svc
        .get("/api/v1/meters/M1/readings?from=2026-11-26T01:00:00Z&to=2026-11-26T03:00:00Z")
        .await;
    assert_eq!(
        v,
        json!([{"t": "2026-11-26T01:00:00Z", "vol": 10.25}, {"t": "2026-11-26T02:00:00Z", "vol": 10.5}])
    );
    let metrics = svc.text("/metrics").await;
    assert!(
        metrics.contains("leakwatch_ingest_readings_total{outcome=\"duplicate\"}"),
        "{metrics}"
    );
    svc.stop().await;
}

async fn bad_messages_are_dead_lettered(backend: Backend) {
    let Some(svc) = Service::start(backend, |_| {}).await else {
        return;
    };
    register(&svc).await;
    let p = svc.publisher().await;
    let m1 = format!("{}/D1/M1/up", svc.prefix);
    p.publish_raw(&m1, b"{not json").await.unwrap();
    // M2's payload on M1's topic: a device publishing for another.
    let other =
        json!({"v": 1, "meter": "M2", "readings": [{"t": "2026-11-26T00:00:00Z", "vol": 1.0}]});
    p.publish_raw(&m1, other.to_string().as_bytes())
        .await
        .unwrap();
    // A meter the registry does not know (reject policy, the default).
    let ghost =
        json!({"v": 1, "meter": "GHOST", "readings": [{"t": "2026-11-26T00:00:00Z", "vol": 1.0}]});
    p.publish_raw(
        &format!("{}/D1/GHOST/up", svc.prefix),
        ghost.to_string().as_bytes(),
    )
    .await
    .unwrap();
    // Ingest goes on.
    let good =
        json!({"v": 1, "meter": "M1", "readings": [{"t": "2026-11-26T00:00:00Z", "vol": 1.0}]});
    p.publish_raw(&m1, good.to_string().as_bytes())
        .await
        .unwrap();
    p.flush(Duration::from_secs(10)).await.unwrap();
    wait_for("the good reading", Duration::from_secs(20), || async {
        (readings_of(&svc, "M1").await == 1).then_some(())
    })
    .await;
    // The batch's readings commit before its dead letters: wait for those too.
    let dl = wait_for(
        "the three dead letters",
        Duration::from_secs(20),
        || async {
            let (status, dl) = svc.get("/api/v1/dead-letters").await;
            assert_eq!(status, 200);
            (dl["items"].as_array().map_or(0, Vec::len) >= 3).then_some(dl)
        },
    )
    .await;
    let items = dl["items"].as_array().unwrap();
    let reasons: Vec<&str> = items
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 3, "{dl}");
    for r in ["not_json", "meter_mismatch", "unknown_meter"] {
        assert!(reasons.contains(&r), "{r} missing in {reasons:?}");
    }
    let mismatch = items
        .iter()
        .find(|d| d["reason"] == "meter_mismatch")
        .unwrap();
    assert_eq!(mismatch["topic"], json!(m1));
    assert!(
        mismatch["detail"].as_str().unwrap().contains("M2"),
        "{mismatch}"
    );
    assert!(mismatch["payload"].as_str().unwrap().contains("\"M2\""));
    assert_eq!(
        readings_of(&svc, "M2").await,
        0,
        "nothing stored for the wrong meter"
    );
    let metrics = svc.text("/metrics").await;
    assert!(
        metrics.contains("leakwatch_dead_letters_total{reason=\"meter_mismatch\"}"),
        "{metrics}"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_embedded_sqlite() {
    same_message_twice(Backend::EmbeddedSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_mosquitto_postgres() {
    same_message_twice(Backend::MosquittoPostgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_embedded_sqlite() {
    bad_messages_are_dead_lettered(Backend::EmbeddedSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_mosquitto_postgres() {
    bad_messages_are_dead_lettered(Backend::MosquittoPostgres).await;
}
