//! Alert -> escalation -> the crew's phone gets the job over MQTT -> the crew walks
//! it through its lifecycle -> the finding confirms the alert and creates the
//! follow-up repair order; and what happens when a crew does not accept.

use crate::support::{Backend, Service, unique, wait_for};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use leakwatch_core::{AlertKind, DistrictId, Evidence, Finding, MeterId, Severity};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use std::time::Duration;

/// A crew's phone: a persistent MQTT session subscribed to its jobs.
struct Phone {
    client: AsyncClient,
    events: EventLoop,
    /// Jobs that arrived before the subscription was acknowledged (a persistent
    /// session delivers what it kept as soon as the phone connects).
    early: std::collections::VecDeque<Value>,
}

impl Phone {
    /// Connects with `client_id` (clean session off) and subscribes to `topic`.
    async fn connect(svc: &Service, client_id: &str, topic: &str) -> Phone {
        let r = svc.running();
        let mut opts = MqttOptions::new(client_id, r.mqtt_host.clone(), r.mqtt_port);
        opts.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(opts, 64);
        client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
        let mut early = std::collections::VecDeque::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.poll().await.expect("phone connects") {
                    Event::Incoming(Packet::SubAck(_)) => break,
                    Event::Incoming(Packet::Publish(p)) => early.push_back(
                        serde_json::from_slice::<Value>(&p.payload).expect("job message is JSON"),
                    ),
                    _ => {}
                }
            }
        })
        .await
        .expect("subscribed");
        Phone {
            client,
            events,
            early,
        }
    }

    /// The next job message, or a failure after `timeout`.
    async fn next_job(&mut self, timeout: Duration) -> Value {
        if let Some(v) = self.early.pop_front() {
            return v;
        }
        tokio::time::timeout(timeout, async {
            loop {
                if let Event::Incoming(Packet::Publish(p)) =
                    self.events.poll().await.expect("phone connected")
                {
                    return serde_json::from_slice::<Value>(&p.payload)
                        .expect("job message is JSON");
                }
            }
        })
        .await
        .expect("a job message arrives")
    }

    /// The next job message about `order` with `status`, skipping others.
    async fn job_with(&mut self, order: i64, status: &str) -> Value {
        loop {
            let m = self.next_job(Duration::from_secs(15)).await;
            if m["order"]["id"] == json!(order) && m["order"]["status"] == status {
                return m;
            }
        }
    }

    async fn off(mut self) {
        self.client.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.events.poll().await.is_ok() {}
        })
        .await;
    }
}

fn meter(id: &str, lat: f64, lon: f64) -> Value {
    json!({"meter_id": id, "district_id": "D1", "kind": "customer", "lat": lat, "lon": lon})
}

fn crew(id: &str, lat: f64, lon: f64, skills: &[&str]) -> Value {
    json!({"id": id, "name": id, "skills": skills, "home": {"lat": lat, "lon": lon}, "on_shift": true})
}

async fn raise(svc: &Service, meter: &str, kind: AlertKind, severity: Severity) -> i64 {
    let now = Utc::now();
    let (alert, _) = svc
        .running()
        .store
        .record_finding(&Finding {
            kind,
            severity,
            meter_id: Some(MeterId::parse(meter).unwrap()),
            district_id: Some(DistrictId::parse("D1").unwrap()),
            detected_at: now,
            evidence: Evidence {
                rule: "test".into(),
                observed: 1.0,
                expected: Some(0.0),
                threshold: 0.5,
                unit: "m3/h".into(),
                window_start: now - ChronoDuration::hours(24),
                window_end: now,
                explanation: format!("{kind} raised by the test"),
                known: None,
            },
        })
        .await
        .unwrap();
    alert.id
}

async fn setup(svc: &Service) {
    let (s, b) = svc
        .post(
            "/api/v1/meters",
            &json!([
                meter("M-1", 43.7700, 11.2500),
                meter("M-2", 43.7703, 11.2503),
                meter("M-9", 43.8300, 11.3300),
            ]),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = svc
        .post(
            "/api/v1/crews",
            &json!([
                crew("C-NEAR", 43.7750, 11.2550, &["emergency"]),
                crew("C-FAR", 43.8200, 11.3100, &["emergency"]),
                crew("R-1", 43.7600, 11.2400, &["repair"]),
            ]),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

async fn step(svc: &Service, oid: i64, body: Value) -> Value {
    let token = svc.crew_token("C-NEAR").await;
    let r = svc
        .http
        .post(svc.url(&format!("/api/v1/work-orders/{oid}/transition")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body} -> {v}");
    v
}

async fn alert_to_confirmed_leak(backend: Backend) {
    let Some(svc) = Service::start(backend, |_| {}).await else {
        return;
    };
    setup(&svc).await;
    let topic = format!("{}/C-NEAR/jobs", svc.cfg.mqtt.crew_prefix);
    let phone_id = unique("phone-");
    // The phone subscribes once, then is switched off: the broker keeps its jobs.
    Phone::connect(&svc, &phone_id, &topic).await.off().await;

    let alert = raise(&svc, "M-1", AlertKind::ContinuousFlow, Severity::Warning).await;
    let (s, body) = svc
        .post(&format!("/api/v1/alerts/{alert}/escalate"), &json!({}))
        .await;
    assert_eq!(s, 201, "{body}");
    let order = &body["work_order"];
    let oid = order["id"].as_i64().unwrap();
    assert_eq!(order["kind"], "leak_investigation");
    assert_eq!(order["priority"], "high");
    assert_eq!(order["status"], "assigned");
    assert_eq!(order["crew_id"], "C-NEAR", "the nearest qualified crew");

    // The phone comes back on: the job published while it was off arrives.
    let mut phone = Phone::connect(&svc, &phone_id, &topic).await;
    let job = phone.job_with(oid, "assigned").await;
    assert_eq!(job["v"], 1);
    assert_eq!(job["change"], "assigned");
    assert_eq!(job["crew_id"], "C-NEAR");
    assert_eq!(job["order"]["location"]["lat"], json!(43.77));
    assert_eq!(job["deadline"]["measures"], "arrival");
    assert!(job["deadline"]["minutes_left"].as_i64().unwrap() > 23 * 60);

    // The crew walks the job; the phone hears every step.
    step(
        &svc,
        oid,
        json!({"action": "accept", "position": {"lat": 43.7751, "lon": 11.2551}}),
    )
    .await;
    phone.job_with(oid, "accepted").await;
    step(&svc, oid, json!({"action": "start_travel"})).await;
    let on_site = step(
        &svc,
        oid,
        json!({"action": "arrive", "position": {"lat": 43.7701, "lon": 11.2501}}),
    )
    .await;
    assert_eq!(on_site["deadline"]["breached"], false);
    assert!(on_site["reached_at"].is_string());
    phone.job_with(oid, "on_site").await;

    // Completing a leak job without the finding is refused, saying why.
    let (s, err) = svc
        .post(
            &format!("/api/v1/work-orders/{oid}/transition"),
            &json!({"action": "complete"}),
        )
        .await;
    assert_eq!(s, 422, "{err}");
    assert!(err["error"].as_str().unwrap().contains("finding"), "{err}");
    let (s, err) = svc
        .post(
            &format!("/api/v1/work-orders/{oid}/transition"),
            &json!({"action": "complete", "finding": {"leak_found": true, "leak_class": "Z9"}}),
        )
        .await;
    assert_eq!(s, 422, "{err}");
    assert!(err["error"].as_str().unwrap().contains("Z9"), "{err}");

    let done = step(
        &svc,
        oid,
        json!({"action": "complete", "finding": {
            "leak_found": true, "leak_class": "A2", "repaired": false,
            "gas_readings": [{"percent_lel": 12.0, "place": "cellar, by the meter"}],
            "notes": "joint behind the meter"}}),
    )
    .await;
    assert_eq!(done["status"], "completed");
    phone.job_with(oid, "completed").await;
    let completed_at: DateTime<Utc> = done["updated_at"].as_str().unwrap().parse().unwrap();

    // The alert is confirmed and resolved.
    let (_, a) = svc.get(&format!("/api/v1/alerts/{alert}")).await;
    assert_eq!(a["outcome"], "confirmed_leak");
    assert_eq!(a["status"], "resolved");
    let (_, outcomes) = svc.get("/api/v1/alerts/outcomes").await;
    let row = outcomes["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "continuous_flow")
        .cloned()
        .unwrap();
    assert_eq!(
        (
            row["escalated"].clone(),
            row["confirmed"].clone(),
            row["precision"].clone()
        ),
        (json!(1), json!(1), json!(1.0))
    );

    // Class A2 not repaired: a follow-up repair within 24 hours, for the repair crew.
    let (_, page) = svc
        .get(&format!("/api/v1/work-orders?parent_id={oid}"))
        .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    let repair = &items[0];
    assert_eq!(repair["kind"], "repair");
    assert_eq!(repair["priority"], "high");
    assert_eq!(repair["crew_id"], "R-1");
    let due: DateTime<Utc> = repair["due_at"].as_str().unwrap().parse().unwrap();
    let expected = completed_at + ChronoDuration::hours(24);
    assert!(
        (due - expected).num_seconds().abs() <= 5,
        "due {due}, expected {expected}"
    );
    assert_eq!(repair["deadline"]["measures"], "completion");

    // The audit trail keeps who, when and where.
    let (_, wo) = svc.get(&format!("/api/v1/work-orders/{oid}")).await;
    let history = wo["history"].as_array().unwrap();
    let arrive = history.iter().find(|h| h["action"] == "arrive").unwrap();
    assert_eq!(arrive["actor"], "C-NEAR");
    assert_eq!(arrive["position"]["lat"], json!(43.7701));
    assert_eq!(wo["alert_ids"], json!([alert]));
    // The crew's last job place and position were recorded.
    let (_, crews) = svc.get("/api/v1/crews").await;
    let near = crews["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "C-NEAR")
        .unwrap();
    assert_eq!(near["last_job_place"]["lat"], json!(43.77));
    assert_eq!(near["status"], "available");

    phone.off().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_to_confirmed_leak_mosquitto_postgres() {
    alert_to_confirmed_leak(Backend::MosquittoPostgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_to_confirmed_leak_embedded_sqlite() {
    alert_to_confirmed_leak(Backend::EmbeddedSqlite).await;
}

/// An emergency the nearest crew does not accept goes to the next crew; the alert
/// says so. A second alert next door joins the same order. Positions arrive over
/// MQTT, and a bad one is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unaccepted_emergency_goes_to_the_next_crew() {
    let Some(svc) = Service::start(Backend::MosquittoPostgres, |c| {
        c.dispatch.accept_within_s = 4;
        c.dispatch.check_every_s = 1;
    })
    .await
    else {
        return;
    };
    setup(&svc).await;
    let alert = raise(&svc, "M-1", AlertKind::Burst, Severity::Critical).await;
    let (s, body) = svc
        .post(&format!("/api/v1/alerts/{alert}/escalate"), &json!({}))
        .await;
    assert_eq!(s, 201, "{body}");
    let oid = body["work_order"]["id"].as_i64().unwrap();
    assert_eq!(body["work_order"]["kind"], "emergency");
    assert_eq!(body["work_order"]["crew_id"], "C-NEAR");
    let left = body["work_order"]["deadline"]["minutes_left"]
        .as_i64()
        .unwrap();
    assert!((59..=60).contains(&left), "{left}");

    // A second alert 40 m away joins the same order.
    let second = raise(&svc, "M-2", AlertKind::ContinuousFlow, Severity::Warning).await;
    let (s, body) = svc
        .post(&format!("/api/v1/alerts/{second}/escalate"), &json!({}))
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["work_order"]["id"], json!(oid));

    // C-NEAR does not accept within 4 s: C-FAR gets it, and the engineers see why.
    let reason: String = wait_for("reassignment", Duration::from_secs(20), || async {
        let (_, o) = svc.get(&format!("/api/v1/work-orders/{oid}")).await;
        (o["crew_id"] == "C-FAR").then_some(())?;
        let (_, a) = svc.get(&format!("/api/v1/alerts/{alert}")).await;
        a["status_reason"].as_str().map(str::to_owned)
    })
    .await;
    assert!(reason.contains("not accepted by C-NEAR"), "{reason}");
    assert!(reason.contains("reassigned to C-FAR"), "{reason}");
    let r = svc
        .http
        .post(svc.url(&format!("/api/v1/work-orders/{oid}/transition")))
        .bearer_auth(svc.crew_token("C-FAR").await)
        .json(&json!({"action": "accept"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "C-FAR accepts in time");
    // The console shows the engineers why, and the order's time left.
    let page = svc.text("/console/alerts?status=all").await;
    assert!(page.contains("not accepted by C-NEAR"), "{page}");
    let board = svc.text("/console/board").await;
    assert!(board.contains("accepted (1)"), "{board}");
    assert!(board.contains("arrival by"), "{board}");
    let metrics = svc.text("/metrics").await;
    assert!(
        metrics.contains("leakwatch_dispatch_acceptance_timeouts_total"),
        "{metrics}"
    );

    // Positions from the crew's phone over MQTT; a bad one is dead-lettered.
    let r = svc.running();
    let mut opts = MqttOptions::new(unique("phone-far-"), r.mqtt_host.clone(), r.mqtt_port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 16);
    let prefix = svc.cfg.mqtt.crew_prefix.clone();
    client
        .publish(
            format!("{prefix}/C-FAR/location"),
            QoS::AtLeastOnce,
            false,
            r#"{"lat":43.801,"lon":11.301}"#,
        )
        .await
        .unwrap();
    // The same bad position twice (a redelivery): one dead letter.
    for _ in 0..2 {
        client
            .publish(
                format!("{prefix}/C-FAR/location"),
                QoS::AtLeastOnce,
                false,
                r#"{"lat":"north"}"#,
            )
            .await
            .unwrap();
    }
    client
        .publish(
            format!("{prefix}/C-FAR/location"),
            QoS::AtLeastOnce,
            false,
            r#"{"lat":43.802,"lon":11.301}"#,
        )
        .await
        .unwrap();
    let pump = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    // Positions are handled in order: once the last one shows, both bad ones were seen.
    wait_for("position over MQTT", Duration::from_secs(15), || async {
        let (_, crews) = svc.get("/api/v1/crews").await;
        crews["items"]
            .as_array()?
            .iter()
            .find(|c| c["id"] == "C-FAR" && c["position"]["lat"] == json!(43.802))
            .map(|_| ())
    })
    .await;
    let (_, dl) = svc.get("/api/v1/dead-letters").await;
    let bad: Vec<_> = dl["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["reason"] == "bad_location")
        .collect();
    assert_eq!(
        bad.len(),
        1,
        "one dead letter for a redelivered bad position: {dl}"
    );
    pump.abort();

    // Past its deadline an order is flagged and counted (a deadline already over).
    let (s, late) = svc
        .post(
            "/api/v1/work-orders",
            &json!({"kind": "meter_check", "priority": "normal", "summary": "check M-9",
                    "location": {"lat": 43.83, "lon": 11.33}, "meter_id": "M-9",
                    "due_at": (Utc::now() - ChronoDuration::minutes(5)).to_rfc3339()}),
        )
        .await;
    assert_eq!(s, 201, "{late}");
    let late_id = late["id"].as_i64().unwrap();
    assert_eq!(late["deadline"]["breached"], true);
    wait_for("breach flagged", Duration::from_secs(15), || async {
        let (_, o) = svc.get(&format!("/api/v1/work-orders/{late_id}")).await;
        o["breached_at"].is_string().then_some(())
    })
    .await;
    let metrics = svc.text("/metrics").await;
    assert!(
        metrics.contains("leakwatch_work_order_deadline_breaches_total{kind=\"meter_check\"}"),
        "{metrics}"
    );
    // ... and reported.
    let (s, report) = svc.get("/api/v1/deadlines").await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["kinds"]["meter_check"]["breached"], 1, "{report}");
    assert_eq!(report["late"][0]["order_id"], json!(late_id), "{report}");
    assert_eq!(report["kinds"]["emergency"]["pending"], 1, "{report}");
    svc.stop().await;
}
