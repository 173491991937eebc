//! Programmed leak survey, end to end through the service's API on a real store: a
//! district balance alert raises its segments' priority, a survey order (kind
//! `leak_survey`) is planned on them and routed along them, it reaches a survey crew
//! (assigned, on the crew's phone with its segments in walking order), the crew
//! reports coverage and a class B leak, the repair order appears with its deadline,
//! the alert is confirmed, and coverage reflects the survey.

use crate::support::{Backend, Service};
use chrono::{Duration as ChronoDuration, Utc};
use leakwatch_core::{AlertKind, DistrictId, Evidence, Finding, Severity};
use leakwatch_sim::FleetConfig;
use leakwatch_sim::network::{NetworkConfig, generate};
use leakwatch_store::NetworkStore;
use leakwatch_survey::ObligationTable;
use serde_json::{Value, json};

async fn survey_flow(backend: Backend) {
    let Some(svc) = Service::start(backend, |_| {}).await else {
        return;
    };
    let store = svc.running().store.clone();
    // Three districts of streets, each surveyed within its obligation.
    let fleet = FleetConfig {
        districts: 3,
        ..FleetConfig::default()
    };
    let net = generate(&fleet, &NetworkConfig::default(), &ObligationTable::it());
    store
        .network_store()
        .import_network(&net, Utc::now())
        .await
        .unwrap();
    // A fixed Monday soon after the simulated history ends (the fleet starts on
    // 2026-11-01): the year's shares have weeks left, so the day is free for risk.
    let day = "2026-11-02".to_owned();

    // After a balance alert in D02, every visit of the day is in D02, chosen for risk.
    let now = Utc::now();
    let (alert, _) = store
        .record_finding(&Finding {
            kind: AlertKind::DistrictBalance,
            severity: Severity::Warning,
            meter_id: None,
            district_id: Some(DistrictId::parse("D02").unwrap()),
            detected_at: now,
            evidence: Evidence {
                known: None,
                rule: "test".into(),
                observed: 3.0,
                expected: Some(1.0),
                threshold: 2.0,
                unit: "%".into(),
                window_start: now - ChronoDuration::hours(24),
                window_end: now,
                explanation: "balance raised by the test".into(),
            },
        })
        .await
        .unwrap();
    let (st, prog) = svc
        .get(&format!("/api/v1/survey/program?from={day}&days=1"))
        .await;
    assert_eq!(st, 200, "{prog}");
    let visits = prog["visits"].as_array().unwrap();
    assert!(!visits.is_empty(), "{prog}");
    assert_eq!(visits[0]["reason"], "risk", "{prog}");
    for v in visits {
        assert!(v["segment"].as_str().unwrap().starts_with("D02-"), "{v}");
        if v["reason"] == "risk" {
            assert!(v["score"].as_f64().unwrap() >= 100.0, "{v}");
        }
    }

    // The day is planned into survey orders, on D02's streets.
    let (st, planned) = svc
        .post("/api/v1/survey/orders", &json!({ "date": day }))
        .await;
    assert_eq!(st, 200, "{planned}");
    let orders = planned["orders"].as_array().unwrap();
    assert!(!orders.is_empty(), "{planned}");
    let first = &orders[0];
    let order_id = first["order"]["id"].as_i64().unwrap();
    assert_eq!(first["order"]["kind"], "leak_survey");
    assert_eq!(first["order"]["district_id"], "D02");
    let segments: Vec<String> = first["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    let (st, got) = svc.get(&format!("/api/v1/survey/orders/{order_id}")).await;
    assert_eq!((st, got["segments"].clone()), (200, json!(segments)));
    // Routed: each segment with its direction, the way between them no longer than
    // with the order as first planned (nearest next by midpoint).
    let legs = got["legs"].as_array().unwrap();
    assert_eq!(legs.len(), segments.len());
    let route = &first["route"];
    assert!(
        (route["deadhead_m"].as_f64().unwrap() - got["deadhead_m"].as_f64().unwrap()).abs() < 1.0,
        "{route} vs {got}"
    );
    let by_id: std::collections::HashMap<&str, &leakwatch_survey::Segment> = net
        .iter()
        .map(|i| (i.segment.id.as_str(), &i.segment))
        .collect();
    let refs: Vec<&leakwatch_survey::Segment> =
        segments.iter().map(|s| by_id[s.as_str()]).collect();
    let old = leakwatch_survey::route::nearest_midpoint_order(&refs);
    let old_dh = leakwatch_survey::route::orient(&refs, &old, None).1;
    assert!(
        got["deadhead_m"].as_f64().unwrap() <= old_dh + 1.0,
        "{} vs {old_dh}",
        got["deadhead_m"]
    );

    // It reaches a survey crew by the usual channel: assigned, it is on the crew's
    // job list (the phone app) with its segments in walking order.
    let (st, b) = svc
        .post(
            "/api/v1/crews",
            &json!([{"id": "SURVEY-1", "name": "survey one", "skills": ["survey"],
                     "home": {"lat": 43.77, "lon": 11.25}, "on_shift": true}]),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = svc
        .post(
            &format!("/api/v1/work-orders/{order_id}/transition"),
            &json!({"action": "assign", "crew_id": "SURVEY-1"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let token = svc.crew_token("SURVEY-1").await;
    let r = svc
        .http
        .get(svc.url("/crew/api/jobs"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let jobs: Value = r.json().await.unwrap();
    let job = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == order_id)
        .unwrap_or_else(|| panic!("{jobs}"));
    assert_eq!(job["kind"], "leak_survey");
    let shown: Vec<&str> = job["survey"]["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["segment"].as_str().unwrap())
        .collect();
    assert_eq!(
        shown,
        segments.iter().map(String::as_str).collect::<Vec<_>>()
    );

    // The crew walked the whole order and found a class B leak on its first street.
    let report = json!({
        "date": day,
        "crew_id": "SURVEY-1",
        "instrument": "vehicle_analyser",
        "segments": segments.iter().map(|s| json!({ "id": s })).collect::<Vec<_>>(),
        "leaks": [{ "segment": segments[0], "class": "B", "notes": "under the pavement" }],
    });
    let before = Utc::now();
    let (st, done) = svc
        .post(&format!("/api/v1/survey/orders/{order_id}/report"), &report)
        .await;
    assert_eq!(st, 200, "{done}");
    assert_eq!(done["surveys_recorded"], segments.len());
    assert_eq!(done["confirmed_alerts"], json!([alert.id]));
    let repair = &done["leaks"][0]["repair_order"];
    assert_eq!(repair["kind"], "repair");
    assert_eq!(repair["parent_id"], order_id);
    let table = svc.running().dispatcher.leak_classes().clone();
    let due = table
        .repair_due("B", before)
        .unwrap()
        .expect("class B has a deadline");
    let got_due: chrono::DateTime<Utc> = serde_json::from_value(repair["due_at"].clone()).unwrap();
    assert!(
        (got_due - due).num_seconds().abs() < 60,
        "{got_due} vs {due}"
    );

    // Resending the report changes nothing.
    let (st, again) = svc
        .post(&format!("/api/v1/survey/orders/{order_id}/report"), &report)
        .await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["surveys_recorded"], 0);
    assert_eq!(again["leaks"][0]["repair_order_id"], repair["id"]);

    // The alert is confirmed and linked to the repair.
    let (_, a) = svc.get(&format!("/api/v1/alerts/{}", alert.id)).await;
    assert_eq!(a["status"], "escalated", "{a}");
    assert_eq!(a["work_order_id"], repair["id"], "{a}");
    assert_eq!(a["outcome"], "confirmed_leak", "{a}");

    // Coverage reflects the survey: this year's low/medium pressure metres include it.
    let walked: f64 = net
        .iter()
        .filter(|i| segments.contains(&i.segment.id))
        .map(|i| i.segment.length_m())
        .sum();
    let (st, cov) = svc.get(&format!("/api/v1/survey/coverage?on={day}")).await;
    assert_eq!(st, 200, "{cov}");
    let this_year: f64 = net
        .iter()
        .filter_map(|i| {
            i.last_surveyed
                .filter(|d| d.format("%Y").to_string() == day[..4])
                .map(|_| i.segment.length_m())
        })
        .sum();
    let surveyed: f64 = cov["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c: &Value| c["surveyed_m"].as_f64().unwrap())
        .sum();
    assert!(
        (surveyed - (walked + this_year)).abs() < 1.0,
        "{surveyed} vs {walked} + {this_year}"
    );
    let csv = svc
        .text(&format!("/api/v1/survey/coverage.csv?on={day}"))
        .await;
    assert!(csv.starts_with("year,class,"), "{csv}");
    let (_, rates) = svc
        .get(&format!("/api/v1/survey/leak-rates?to={day}"))
        .await;
    let leaks: u64 = rates["rates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["leaks"].as_u64().unwrap())
        .sum();
    assert_eq!(leaks, 1, "{rates}");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survey_alert_order_report_repair_confirm_coverage_sqlite() {
    survey_flow(Backend::EmbeddedSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survey_alert_order_report_repair_confirm_coverage_postgres() {
    survey_flow(Backend::MosquittoPostgres).await;
}
