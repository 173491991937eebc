//! Escalation commits whole: a crash between any two of its writes (forced with
//! failpoints in a separate `leakwatch run` process) leaves nothing half-done; SIGKILL
//! at random moments during parallel escalations leaves no escalated alert without
//! an order and every order linked; two nearby alerts escalated at the same moment
//! make one order; concurrent day-plan applications assign and notify each job once;
//! what an older version left half-done is repaired at start-up; the outbox
//! auto-escalates alerts detection recorded.

use crate::support::{Backend, Service, TEST_TOKEN, http_client, required_env, unique, wait_for};
use chrono::{Duration as ChronoDuration, Utc};
use leakwatch::testkit::free_port;
use leakwatch_core::{
    AlertKind, AlertStatus, Crew, CrewId, DistrictId, Evidence, Finding, GeoPoint, MeterId,
    MeterRecord, Severity,
};
use leakwatch_store::{NewWorkOrder, Store};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// A `leakwatch run` process of the test's own; killed when dropped.
struct Proc {
    child: std::process::Child,
    http: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `leakwatch run` on `db` with the embedded broker and `fail_points`.
    fn spawn(db: &str, fail_points: &str) -> Proc {
        let http = free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_leakwatch"))
            .arg("run")
            .env("LEAKWATCH__DATABASE__URL", db)
            .env("LEAKWATCH__MQTT__URL", "")
            .env("LEAKWATCH__MQTT__EMBEDDED_AUTH", "anonymous")
            .env("LEAKWATCH__MQTT__EMBEDDED_AUTH", "anonymous")
            .env(
                "LEAKWATCH__MQTT__EMBEDDED_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("LEAKWATCH__MQTT__CLIENT_ID", unique("lw-esc-"))
            .env("LEAKWATCH__HTTP__LISTEN", format!("127.0.0.1:{http}"))
            .env("LEAKWATCH__HTTP__API_TOKEN", TEST_TOKEN)
            .env("FAIL_POINTS", fail_points)
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(if std::env::var("LEAKWATCH_TEST_LOG").is_ok() {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            })
            .spawn()
            .expect("start leakwatch run");
        Proc { child, http }
    }

    async fn ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.http);
        wait_for("leakwatch ready", Duration::from_secs(30), || async {
            let r = reqwest::get(&url).await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// Waits for the process to end by itself (a failpoint's crash).
    async fn exited(&mut self) {
        wait_for("the process crashed", Duration::from_secs(20), || {
            let done = self.child.try_wait().ok().flatten().is_some();
            async move { done.then_some(()) }
        })
        .await;
    }
}

/// Ten meters next door to each other (one incident) in district D1, and `far`
/// others 2 km apart from each other.
fn meters(far: usize) -> Vec<leakwatch_core::Meter> {
    // N-1 .. N-10 within 70 m of each other.
    let mut rows: Vec<(String, f64, f64)> = (0..10)
        .map(|i| {
            let d = 0.00005 * i as f64;
            (format!("N-{}", i + 1), 43.7700 + d, 11.2500 + d)
        })
        .collect();
    for i in 0..far {
        rows.push((format!("F-{i}"), 43.60 + 0.02 * i as f64, 11.10));
    }
    rows.into_iter()
        .map(|(id, lat, lon)| {
            MeterRecord {
                meter_id: id,
                district_id: "D1".into(),
                kind: "customer".into(),
                lat,
                lon,
                report_every_h: None,
                status: None,
                installed_at: None,
                max_flow_m3h: None,
            }
            .to_meter()
            .unwrap()
        })
        .collect()
}

fn crew(id: &str, lat: f64, lon: f64) -> Crew {
    Crew {
        id: CrewId::parse(id).unwrap(),
        name: id.into(),
        skills: vec!["emergency".into(), "repair".into(), "meter".into()],
        home: GeoPoint::new(lat, lon).unwrap(),
        position: None,
        position_at: None,
        last_job_place: None,
        shifts: None,
        on_shift: true,
    }
}

async fn raise(store: &Store, meter: &str, kind: AlertKind, severity: Severity) -> i64 {
    let now = Utc::now();
    let (a, _) = store
        .record_finding(&Finding {
            kind,
            severity,
            meter_id: Some(MeterId::parse(meter).unwrap()),
            district_id: Some(DistrictId::parse("D1").unwrap()),
            detected_at: now,
            evidence: Evidence {
                known: None,
                rule: "test".into(),
                observed: 1.0,
                expected: Some(0.0),
                threshold: 0.5,
                unit: "m3/h".into(),
                window_start: now - ChronoDuration::hours(24),
                window_end: now,
                explanation: format!("{kind} raised by the test"),
            },
        })
        .await
        .unwrap();
    a.id
}

/// A fresh database of `backend` with the registry and two crews.
async fn fresh(backend: Backend, far: usize) -> Option<(String, Store)> {
    let url = match backend {
        Backend::EmbeddedSqlite => format!(
            "sqlite://{}",
            std::env::temp_dir()
                .join(format!("{}.db", unique("lw-esc-")))
                .display()
        ),
        Backend::MosquittoPostgres => {
            let admin = required_env("LEAKWATCH_TEST_PG")?;
            leakwatch_store::testing::fresh_pg_database(&admin)
                .await
                .unwrap()
        }
    };
    let store = Store::connect(&url).await.unwrap();
    store.upsert_meters(&meters(far)).await.unwrap();
    store
        .upsert_crews(&[crew("C-1", 43.7750, 11.2550), crew("C-2", 43.65, 11.15)])
        .await
        .unwrap();
    Some((url, store))
}

/// What no crash may leave: an escalated alert without an order, an alert linked to
/// an order that does not exist, or an order made for an alert that is not linked to
/// it (or to another order it was grouped into).
async fn assert_whole(store: &Store) {
    let alerts = store
        .list_alerts(&leakwatch_store::AlertQuery {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let orders = store
        .list_work_orders(&leakwatch_store::WorkOrderQuery {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: HashMap<i64, _> = orders.iter().map(|o| (o.id, o)).collect();
    for a in &alerts {
        if a.status == AlertStatus::Escalated {
            let o = a
                .work_order_id
                .unwrap_or_else(|| panic!("alert {} is escalated without a work order", a.id));
            assert!(
                ids.contains_key(&o),
                "alert {} names missing order {o}",
                a.id
            );
        }
    }
    for o in &orders {
        if let Some(aid) = o.alert_id
            && o.parent_id.is_none()
        {
            let a = alerts.iter().find(|a| a.id == aid).unwrap();
            assert_eq!(
                a.work_order_id,
                Some(o.id),
                "order {} was made for alert {aid}, which is not linked to it",
                o.id
            );
        }
    }
}

/// Each failpoint between two writes of an escalation (claim | create | link |
/// assign | commit) crashes the process; afterwards the alert is as before (open, no
/// order), and escalating it again after a restart works.
async fn crash_between_writes(backend: Backend) {
    let Some((db, store)) = fresh(backend, 0).await else {
        return;
    };
    for (i, point) in [
        "dispatch-after-set-alert=return",        // claimed | order created
        "dispatch-after-create-order=return",     // created | linked
        "dispatch-after-set-alert=1*off->return", // linked | assigned
        "dispatch-after-step=return",             // assigned | committed
        "dispatch-before-commit=return",
    ]
    .into_iter()
    .enumerate()
    {
        let meter = if i % 2 == 0 { "N-1" } else { "N-2" };
        let a = raise(&store, meter, AlertKind::Burst, Severity::Critical).await;
        let mut p = Proc::spawn(&db, point);
        p.ready().await;
        let r = http_client()
            .post(p.url(&format!("/api/v1/alerts/{a}/escalate")))
            .send()
            .await;
        assert!(
            r.is_err(),
            "{point}: the process should have crashed, got {r:?}"
        );
        p.exited().await;
        let alert = store.get_alert(a).await.unwrap().unwrap();
        assert_eq!(
            (alert.status, alert.work_order_id),
            (AlertStatus::Open, None),
            "{point}: nothing of the escalation was kept"
        );
        assert_whole(&store).await;
        drop(p);
        // Without the failpoint the same escalation goes through whole.
        let p = Proc::spawn(&db, "");
        p.ready().await;
        let r = http_client()
            .post(p.url(&format!("/api/v1/alerts/{a}/escalate")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{point}: {}", r.text().await.unwrap());
        let alert = store.get_alert(a).await.unwrap().unwrap();
        assert_eq!(alert.status, AlertStatus::Escalated);
        let o = store
            .get_work_order(alert.work_order_id.unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.crew_id.map(|c| c.to_string()).as_deref(), Some("C-1"));
        assert_whole(&store).await;
        // Close it, so the next alert makes its own order.
        let r = http_client()
            .post(p.url(&format!("/api/v1/work-orders/{}/transition", o.id)))
            .json(&json!({"action": "cancel", "reason": "test"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_escalation_writes_keeps_nothing_sqlite() {
    crash_between_writes(Backend::EmbeddedSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_escalation_writes_keeps_nothing_postgres() {
    crash_between_writes(Backend::MosquittoPostgres).await;
}

/// SIGKILL at random moments while 20 escalations run in parallel, at least 20 times;
/// afterwards (and after a clean start) no escalated alert lacks its order, every
/// order is linked, and every escalation answered 201 was kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_parallel_escalations_leaves_nothing_half_done() {
    const KILLS: usize = 20;
    const PARALLEL: usize = 20;
    let Some((db, store)) = fresh(Backend::MosquittoPostgres, PARALLEL).await else {
        return;
    };
    let http = http_client();
    let mut acknowledged = Vec::new();
    let mut mid_flight = 0;
    for round in 0..KILLS {
        let mut alerts = Vec::new();
        for i in 0..PARALLEL {
            // Half next door to each other (grouped), half apart.
            let meter = if i % 2 == 0 {
                format!("N-{}", i / 2 + 1)
            } else {
                format!("F-{i}")
            };
            let kind = [
                AlertKind::Burst,
                AlertKind::ContinuousFlow,
                AlertKind::NightFlowRise,
            ][round % 3];
            alerts.push(raise(&store, &meter, kind, Severity::Critical).await);
        }
        let mut p = Proc::spawn(&db, "");
        p.ready().await;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let calls: Vec<_> = alerts
            .iter()
            .map(|a| {
                let (http, url) = (http.clone(), p.url(&format!("/api/v1/alerts/{a}/escalate")));
                let (a, done) = (*a, done.clone());
                // None: no answer (killed first); Some(201): escalated.
                tokio::spawn(async move {
                    let r = http.post(url).send().await.ok()?;
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Some((a, r.status().as_u16()))
                })
            })
            .collect();
        // Kill after a random number of the escalations have been answered (0 to 19),
        // so kills land before, between and during the commits.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as usize;
        let after = nanos % PARALLEL;
        let started = std::time::Instant::now();
        while done.load(std::sync::atomic::Ordering::SeqCst) < after
            && started.elapsed() < Duration::from_secs(20)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        p.child.kill().unwrap(); // SIGKILL
        let _ = p.child.wait();
        let mut answered = 0;
        for c in calls {
            if let Some((a, status)) = c.await.unwrap() {
                answered += 1;
                if status == 201 {
                    acknowledged.push(a);
                }
            }
        }
        if answered < PARALLEL {
            mid_flight += 1;
        }
        assert_whole(&store).await;
        // Close what was made, so later rounds escalate into fresh orders.
        for o in store.active_work_orders().await.unwrap() {
            let _ = store
                .apply_transition(
                    o.id,
                    &leakwatch_core::TransitionRecord {
                        order_id: o.id,
                        from: o.status,
                        to: leakwatch_core::WorkOrderStatus::Cancelled,
                        action: "cancel".into(),
                        actor: "test".into(),
                        at: Utc::now(),
                        crew_id: o.crew_id.clone(),
                        note: Some("test round over".into()),
                        position: None,
                    },
                    &Default::default(),
                )
                .await;
            for a in store.alerts_of_order(o.id).await.unwrap() {
                let _ = store
                    .set_alert_status(a.id, a.status, AlertStatus::Resolved, None, None)
                    .await;
            }
        }
    }
    eprintln!(
        "sigkill: {KILLS} kills, {mid_flight} with escalations in flight, {} escalations acknowledged",
        acknowledged.len()
    );
    assert!(mid_flight >= KILLS / 2, "kills happened mid-flight");
    assert!(
        acknowledged.len() >= KILLS,
        "kills also came after escalations had committed"
    );
    // A clean start (reconciliation runs first) changes nothing of the above.
    let p = Proc::spawn(&db, "");
    p.ready().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(p);
    assert_whole(&store).await;
    for a in acknowledged {
        let alert = store.get_alert(a).await.unwrap().unwrap();
        assert!(
            alert.work_order_id.is_some(),
            "alert {a} was acknowledged escalated, then lost"
        );
    }
    store.close().await;
}

/// Alerts next door to each other escalated at the same moment make one order (as
/// they do one after the other), on both backends.
async fn concurrent_neighbours_make_one_order(backend: Backend) {
    let Some(svc) = Service::start(backend, |_| {}).await else {
        return;
    };
    let store = svc.running().store.clone();
    store.upsert_meters(&meters(0)).await.unwrap();
    store
        .upsert_crews(&[crew("C-1", 43.7750, 11.2550)])
        .await
        .unwrap();
    let d = svc.running().dispatcher.clone();
    for round in 0..5 {
        let a = raise(&store, "N-1", AlertKind::ContinuousFlow, Severity::Warning).await;
        let b = raise(&store, "N-2", AlertKind::NightFlowRise, Severity::Warning).await;
        let (ra, rb) = tokio::join!(d.escalate(a, "test"), d.escalate(b, "test"));
        let (oa, ob) = (ra.unwrap().1, rb.unwrap().1);
        assert_eq!(oa.id, ob.id, "round {round}: one incident, one order");
        assert_eq!(store.alerts_of_order(oa.id).await.unwrap().len(), 2);
        store
            .apply_transition(
                oa.id,
                &leakwatch_core::TransitionRecord {
                    order_id: oa.id,
                    from: store.get_work_order(oa.id).await.unwrap().unwrap().status,
                    to: leakwatch_core::WorkOrderStatus::Cancelled,
                    action: "cancel".into(),
                    actor: "test".into(),
                    at: Utc::now(),
                    crew_id: None,
                    note: None,
                    position: None,
                },
                &Default::default(),
            )
            .await
            .unwrap();
        // Resolve the alerts the cancelled order leaves, as the service would.
        for x in [a, b] {
            let _ = store
                .set_alert_status(x, AlertStatus::Escalated, AlertStatus::Resolved, None, None)
                .await;
        }
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_neighbours_make_one_order_sqlite() {
    concurrent_neighbours_make_one_order(Backend::EmbeddedSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_neighbours_make_one_order_postgres() {
    concurrent_neighbours_make_one_order(Backend::MosquittoPostgres).await;
}

/// Four `POST /plans {apply: true}` at once: every planned order is assigned once, and
/// each crew's phone hears of each job once.
async fn concurrent_plan_application_sends_each_job_once(backend: Backend) {
    let Some(svc) = Service::start(backend, |c| c.dispatch.auto_assign = false).await else {
        return;
    };
    let store = svc.running().store.clone();
    store.upsert_meters(&meters(0)).await.unwrap();
    store
        .upsert_crews(&[crew("C-1", 43.7750, 11.2550), crew("C-2", 43.76, 11.24)])
        .await
        .unwrap();
    let d = svc.running().dispatcher.clone();
    let mut ids = Vec::new();
    for (lat, lon) in [
        (43.74, 11.20),
        (43.75, 11.22),
        (43.76, 11.28),
        (43.79, 11.26),
    ] {
        let o = d
            .create(&NewWorkOrder {
                kind: leakwatch_core::WorkOrderKind::Repair,
                priority: leakwatch_core::Priority::Normal,
                alert_id: None,
                meter_id: None,
                district_id: None,
                location: GeoPoint::new(lat, lon).unwrap(),
                summary: "planned".into(),
                due_at: None,
                actor: "test".into(),
                parent_id: None,
            })
            .await
            .unwrap();
        ids.push(o.id);
    }
    // A phone for every crew's jobs.
    let r = svc.running();
    let mut opts =
        rumqttc::MqttOptions::new(unique("lw-plan-phone-"), r.mqtt_host.clone(), r.mqtt_port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 64);
    client
        .subscribe(
            format!("{}/+/jobs", svc.cfg.mqtt.crew_prefix),
            rumqttc::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) = events.poll().await.unwrap() {
            break;
        }
    }
    let date = (Utc::now() + ChronoDuration::days(1)).date_naive();
    let body = json!({"date": date, "apply": true});
    let posts: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, body) = (svc.http.clone(), svc.url("/api/v1/plans"), body.clone());
            tokio::spawn(async move { http.post(url).json(&body).send().await.unwrap().status() })
        })
        .collect();
    for p in posts {
        assert_eq!(p.await.unwrap(), 200);
    }
    let mut heard: HashMap<i64, usize> = HashMap::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = events.poll().await {
                let v: Value = serde_json::from_slice(&p.payload).unwrap();
                *heard.entry(v["order"]["id"].as_i64().unwrap()).or_default() += 1;
            }
        }
    })
    .await;
    for id in &ids {
        let steps = store.work_order_history(*id).await.unwrap();
        let assigns = steps.iter().filter(|s| s.action == "assign").count();
        assert_eq!(assigns, 1, "order {id} assigned once: {steps:?}");
        assert_eq!(heard.get(id), Some(&1), "order {id} sent once: {heard:?}");
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_plan_application_sends_each_job_once_sqlite() {
    concurrent_plan_application_sends_each_job_once(Backend::EmbeddedSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_plan_application_sends_each_job_once_postgres() {
    concurrent_plan_application_sends_each_job_once(Backend::MosquittoPostgres).await;
}

/// What an older version left half-done (an alert claimed but no order; an order
/// made but not linked; an order ended with its alert still escalated) is repaired
/// when the service starts; and a new alert in the outbox is auto-escalated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_repairs_half_done_escalations_and_the_outbox_escalates() {
    let Some((db, store)) = fresh(Backend::EmbeddedSqlite, 2).await else {
        return;
    };
    // Claimed, nothing else.
    let claimed = raise(&store, "N-1", AlertKind::Burst, Severity::Critical).await;
    store
        .set_alert_status(
            claimed,
            AlertStatus::Open,
            AlertStatus::Escalated,
            None,
            None,
        )
        .await
        .unwrap();
    // Claimed and its order made, not linked.
    let unlinked = raise(&store, "F-0", AlertKind::ContinuousFlow, Severity::Warning).await;
    store
        .set_alert_status(
            unlinked,
            AlertStatus::Open,
            AlertStatus::Escalated,
            None,
            None,
        )
        .await
        .unwrap();
    let made = store
        .create_work_order(&NewWorkOrder {
            kind: leakwatch_core::WorkOrderKind::LeakInvestigation,
            priority: leakwatch_core::Priority::High,
            alert_id: Some(unlinked),
            meter_id: Some(MeterId::parse("F-0").unwrap()),
            district_id: Some(DistrictId::parse("D1").unwrap()),
            location: GeoPoint::new(43.60, 11.10).unwrap(),
            summary: "made by an older version".into(),
            due_at: None,
            actor: "api".into(),
            parent_id: None,
        })
        .await
        .unwrap();
    // Nothing was auto-escalated: the outbox holds the three new alerts; only the
    // leak alert on F-1 would be escalated by auto-escalation.
    let fresh_alert = raise(&store, "F-1", AlertKind::ContinuousFlow, Severity::Warning).await;
    assert_eq!(store.outbox_pending(10).await.unwrap().len(), 3);
    store.close().await;

    let http = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_leakwatch"))
        .arg("run")
        .env("LEAKWATCH__DATABASE__URL", &db)
        .env("LEAKWATCH__MQTT__URL", "")
        .env("LEAKWATCH__MQTT__EMBEDDED_AUTH", "anonymous")
        .env(
            "LEAKWATCH__MQTT__EMBEDDED_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("LEAKWATCH__HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("LEAKWATCH__DISPATCH__AUTO_ESCALATE", "true")
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let store = Store::connect(&db).await.unwrap();
    wait_for(
        "repaired and escalated",
        Duration::from_secs(30),
        || async {
            let c = store.get_alert(claimed).await.ok()??;
            let u = store.get_alert(unlinked).await.ok()??;
            let f = store.get_alert(fresh_alert).await.ok()??;
            (c.work_order_id.is_some() && u.work_order_id.is_some() && f.work_order_id.is_some())
                .then_some(())
        },
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let u = store.get_alert(unlinked).await.unwrap().unwrap();
    assert_eq!(
        u.work_order_id,
        Some(made.id),
        "linked to the order made for it"
    );
    let f = store.get_alert(fresh_alert).await.unwrap().unwrap();
    assert_eq!(f.status, AlertStatus::Escalated);
    assert!(store.outbox_pending(10).await.unwrap().is_empty());
    assert_whole(&store).await;
    store.close().await;
}
