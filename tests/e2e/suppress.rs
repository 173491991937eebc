//! Dismissals that stick (issue 12) through the API of the whole service, on both
//! backends: a dismissal with a suppression, the findings the detection service
//! records judged against it, the list and revoking.

use crate::support::{Backend, Service};
use leakwatch_core::{AlertKind, DistrictId, Evidence, Finding, MeterId, Severity};
use leakwatch_store::Store;
use serde_json::json;

fn flow(meter: &str, minutes: i64, observed: f64) -> Finding {
    let t = chrono::Utc::now() - chrono::Duration::hours(1) + chrono::Duration::minutes(minutes);
    Finding {
        kind: AlertKind::ContinuousFlow,
        severity: Severity::Warning,
        meter_id: Some(MeterId::parse(meter).unwrap()),
        district_id: Some(DistrictId::parse("D-1").unwrap()),
        detected_at: t,
        evidence: Evidence {
            rule: "no zero-flow hour in 24 h".into(),
            observed,
            expected: None,
            threshold: 0.0,
            unit: "m3/h".into(),
            window_start: t - chrono::Duration::hours(24),
            window_end: t,
            explanation: "gas flowed every hour".into(),
            known: None,
        },
    }
}

/// As the detection service records a finding: the opened alert's id, if any.
async fn detect(store: &Store, f: &Finding) -> Option<i64> {
    store
        .record_finding_judged(f, |active| leakwatch_detect::suppress::judge(active, f))
        .await
        .unwrap()
        .alert
        .map(|a| a.id)
}

async fn dismissal_sticks_on(backend: Backend) {
    let Some(svc) = Service::start(backend, |_| {}).await else {
        return;
    };
    let store = svc.running().store.clone();
    let alert = detect(&store, &flow("M-S1", 0, 0.04)).await.unwrap();
    // A bad suppression is refused with nothing written.
    let (s, b) = svc
        .post(
            &format!("/api/v1/alerts/{alert}/dismiss"),
            &json!({"reason": "pilot light", "suppress": {"scope": "street"}}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(
        store.get_alert(alert).await.unwrap().unwrap().status,
        leakwatch_core::AlertStatus::Open
    );
    let (s, b) = svc
        .post(
            &format!("/api/v1/alerts/{alert}/dismiss"),
            &json!({"reason": "pilot light", "suppress": {"margin": 0.5}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["alert"]["status"], "dismissed");
    assert_eq!(
        (
            b["suppression"]["scope"].as_str(),
            b["suppression"]["scope_id"].as_str()
        ),
        (Some("meter"), Some("M-S1"))
    );
    let id = b["suppression"]["id"].as_i64().unwrap();
    // The history entry came with the dismissal.
    let h = store.alert_history(alert).await.unwrap();
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(h[0].note.as_deref().unwrap().contains(&format!("#{id}")));

    // 0.059 is within 50 % of 0.04: quiet; 0.061 is not: a new alert.
    assert_eq!(detect(&store, &flow("M-S1", 1, 0.059)).await, None);
    let (_, list) = svc.get("/api/v1/suppressions").await;
    assert_eq!(list["items"][0]["suppressed"], 1, "{list}");
    assert!(list["next_cursor"].is_null());
    let back = detect(&store, &flow("M-S1", 2, 0.061)).await.unwrap();
    assert_ne!(back, alert);
    let (_, list) = svc.get("/api/v1/suppressions").await;
    assert_eq!(list["items"], json!([]), "{list}");
    let (_, all) = svc.get("/api/v1/suppressions?active=false").await;
    assert_eq!(all["items"][0]["broken_by_alert"], back, "{all}");
    let (s, b) = svc
        .post(&format!("/api/v1/suppressions/{id}/revoke"), &json!({}))
        .await;
    assert_eq!(s, 409, "{b}");
    let (s, _) = svc
        .post("/api/v1/suppressions/999999/revoke", &json!({}))
        .await;
    assert_eq!(s, 404);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dismissal_sticks_sqlite() {
    dismissal_sticks_on(Backend::EmbeddedSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dismissal_sticks_postgres() {
    dismissal_sticks_on(Backend::MosquittoPostgres).await;
}
