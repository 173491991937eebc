//! Messages too big for the contract never stop a subscription (issue 11): a 1 MB
//! message on a meter topic is dead-lettered as `too_large` and the valid readings
//! after it are stored, live and across a restart; a 20 KB crew location does not
//! stop job delivery; a work order with a 10 KB summary reaches the crew's phone
//! (bounded by construction), and no other job is sent twice; `/readyz` covers the
//! crews' channel.

use crate::support::{Backend, Service, unique, wait_for};
use chrono::{Duration as ChronoDuration, Utc};
use leakwatch::testkit::OwnMosquitto;
use leakwatch_core::{AlertKind, DistrictId, Evidence, Finding, MeterId, Severity};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// A 1 MB payload that starts like a meter's message.
fn big_payload(size: usize) -> Vec<u8> {
    let mut p = br#"{"v":1,"meter":"M1","readings":[],"pad":""#.to_vec();
    p.resize(size - 2, b'x');
    p.extend_from_slice(b"\"}");
    p
}

fn reading(hour: u32, vol: f64) -> Vec<u8> {
    json!({"v": 1, "meter": "M1", "readings": [
        {"t": format!("2026-11-26T{hour:02}:00:00Z"), "vol": vol}
    ]})
    .to_string()
    .into_bytes()
}

async fn readings_of(svc: &Service, meter: &str) -> usize {
    let (_, v) = svc.get(&format!("/api/v1/meters/{meter}/readings")).await;
    v.as_array().map(|a| a.len()).unwrap_or(0)
}

async fn dead_letters(svc: &Service, reason: &str) -> Vec<Value> {
    let (status, dl) = svc.get("/api/v1/dead-letters").await;
    assert_eq!(status, 200, "{dl}");
    dl["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["reason"] == reason)
        .cloned()
        .collect()
}

/// Publishes `payload` on `topic` at QoS 1 from a client allowed to send up to 4 MiB,
/// and returns once the broker acknowledged it or dropped the connection.
async fn publish_big(host: &str, port: u16, topic: &str, payload: Vec<u8>) -> bool {
    let mut opts = MqttOptions::new(unique("lw-big-"), host, port);
    opts.set_max_packet_size(4 << 20, 4 << 20)
        .set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 4);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    let _ = client.try_disconnect();
    acked
}

async fn oversized_uplink(backend: Backend) {
    let Some(mut svc) = Service::start(backend, |_| {}).await else {
        return;
    };
    let (status, body) = svc
        .post(
            "/api/v1/meters",
            &json!([{"meter_id": "M1", "district_id": "D1", "kind": "customer",
                     "lat": 43.77, "lon": 11.25}]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let topic = format!("{}/D1/M1/up", svc.prefix);

    // Live: the big message, then ten valid ones.
    let p = svc.publisher().await;
    p.publish_raw(&topic, big_payload(1_000_000)).await.unwrap();
    for h in 0..10 {
        p.publish_raw(&topic, reading(h, 100.0 + f64::from(h)))
            .await
            .unwrap();
    }
    p.flush(Duration::from_secs(20)).await.unwrap();
    wait_for(
        "the readings after the 1 MB message",
        Duration::from_secs(30),
        || async { (readings_of(&svc, "M1").await == 10).then_some(()) },
    )
    .await;
    let too_large = dead_letters(&svc, "too_large").await;
    assert_eq!(too_large.len(), 1, "{too_large:?}");
    assert_eq!(too_large[0]["topic"], json!(topic));
    let kept = too_large[0]["payload"].as_str().unwrap();
    assert_eq!(kept.len(), 64 * 1024, "a prefix of the payload is kept");
    assert!(kept.starts_with(r#"{"v":1,"meter":"M1""#));
    assert!(
        too_large[0]["detail"].as_str().unwrap().contains("1000000"),
        "{}",
        too_large[0]
    );

    // Across a restart: sent while leakwatch is down, kept by the broker for its
    // persistent session, delivered when it comes back.
    if backend == Backend::EmbeddedSqlite {
        // The embedded broker lives as long as the process: the service comes back
        // to the same one (and the session it keeps), not to a new one.
        let r = svc.running();
        svc.cfg.mqtt.url = Some(
            format!("mqtt://{}:{}", r.mqtt_host, r.mqtt_port)
                .parse()
                .unwrap(),
        );
    }
    svc.halt().await;
    // Not the same bytes as the first: dead letters are kept once per distinct message.
    p.publish_raw(&topic, big_payload(1_000_001)).await.unwrap();
    for h in 10..15 {
        p.publish_raw(&topic, reading(h, 100.0 + f64::from(h)))
            .await
            .unwrap();
    }
    p.flush(Duration::from_secs(20)).await.unwrap();
    svc.resume().await;
    wait_for(
        "the readings sent while down",
        Duration::from_secs(30),
        || async { (readings_of(&svc, "M1").await == 15).then_some(()) },
    )
    .await;
    assert_eq!(dead_letters(&svc, "too_large").await.len(), 2);

    // Larger than the embedded broker's limit: refused at the broker, the publisher
    // loses its connection, and leakwatch never sees it.
    if backend == Backend::EmbeddedSqlite {
        let r = svc.running();
        assert!(
            !r.embedded_broker,
            "back on the embedded broker started first"
        );
        let acked = publish_big(&r.mqtt_host, r.mqtt_port, &topic, big_payload(2 << 20)).await;
        assert!(!acked, "the embedded broker refuses a 2 MiB packet");
        p.publish_raw(&topic, reading(15, 115.0)).await.unwrap();
        p.flush(Duration::from_secs(20)).await.unwrap();
        wait_for(
            "a reading after the refused one",
            Duration::from_secs(30),
            || async { (readings_of(&svc, "M1").await == 16).then_some(()) },
        )
        .await;
        assert_eq!(dead_letters(&svc, "too_large").await.len(), 2);
    }
    let _ = p.disconnect().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mb_uplink_is_dead_lettered_embedded_sqlite() {
    oversized_uplink(Backend::EmbeddedSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mb_uplink_is_dead_lettered_mosquitto_postgres() {
    oversized_uplink(Backend::MosquittoPostgres).await;
}

/// Mosquitto configured as `deploy/mosquitto/mosquitto.conf` says: a packet over its
/// `max_packet_size` is refused at the broker; leakwatch goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_mosquitto_refuses_packets_over_its_limit() {
    let conf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/mosquitto/mosquitto.conf"
    ))
    .unwrap();
    let limit = conf
        .lines()
        .find_map(|l| l.strip_prefix("max_packet_size "))
        .expect("deploy/mosquitto/mosquitto.conf sets max_packet_size")
        .trim()
        .to_owned();
    let Ok(mosq) =
        OwnMosquitto::start_with(|_| format!("allow_anonymous true\nmax_packet_size {limit}\n"))
    else {
        if crate::support::required_env("LEAKWATCH_TEST_MQTT").is_some() {
            panic!("mosquitto is not installed");
        }
        return;
    };
    let limit: usize = limit.parse().unwrap();
    let url = mosq.url();
    let Some(svc) = Service::start(Backend::MosquittoPostgres, |c| {
        c.mqtt.url = Some(url.parse().unwrap())
    })
    .await
    else {
        return;
    };
    let (status, body) = svc
        .post(
            "/api/v1/meters",
            &json!([{"meter_id": "M1", "district_id": "D1", "kind": "customer",
                     "lat": 43.77, "lon": 11.25}]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let topic = format!("{}/D1/M1/up", svc.prefix);
    let r = svc.running();
    assert!(
        !publish_big(&r.mqtt_host, r.mqtt_port, &topic, big_payload(limit + 1)).await,
        "over the limit: refused"
    );
    assert!(
        publish_big(&r.mqtt_host, r.mqtt_port, &topic, big_payload(limit - 1024)).await,
        "under the limit: taken"
    );
    let p = svc.publisher().await;
    p.publish_raw(&topic, reading(0, 1.0)).await.unwrap();
    p.flush(Duration::from_secs(10)).await.unwrap();
    wait_for("the reading", Duration::from_secs(30), || async {
        (readings_of(&svc, "M1").await == 1).then_some(())
    })
    .await;
    wait_for(
        "the one under the limit dead-lettered",
        Duration::from_secs(10),
        || async { (dead_letters(&svc, "too_large").await.len() == 1).then_some(()) },
    )
    .await;
    let _ = p.disconnect().await;
    svc.stop().await;
}

/// A crew's phone with rumqttc's default limits (10 KiB each way).
struct Phone {
    _client: AsyncClient,
    events: EventLoop,
    early: Vec<Value>,
}

impl Phone {
    async fn connect(svc: &Service, topic: &str) -> Phone {
        let r = svc.running();
        let mut opts = MqttOptions::new(unique("phone-"), r.mqtt_host.clone(), r.mqtt_port);
        opts.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(opts, 64);
        client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
        let mut early = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.poll().await.expect("phone connects") {
                    Event::Incoming(Packet::SubAck(_)) => break,
                    Event::Incoming(Packet::Publish(p)) => {
                        early.push(serde_json::from_slice(&p.payload).unwrap())
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("subscribed");
        Phone {
            _client: client,
            events,
            early,
        }
    }

    /// Every job message that arrives within `window`.
    async fn collect(&mut self, window: Duration) -> Vec<Value> {
        let mut got = std::mem::take(&mut self.early);
        let _ = tokio::time::timeout(window, async {
            loop {
                if let Event::Incoming(Packet::Publish(p)) =
                    self.events.poll().await.expect("phone stays connected")
                {
                    got.push(serde_json::from_slice(&p.payload).expect("job message is JSON"));
                }
            }
        })
        .await;
        got
    }

    /// Job messages until one about `order` arrives (or `timeout`).
    async fn until_order(&mut self, order: i64, timeout: Duration) -> Vec<Value> {
        let mut got = std::mem::take(&mut self.early);
        let found = |got: &[Value]| got.iter().any(|m| m["order"]["id"] == json!(order));
        if found(&got) {
            return got;
        }
        let r = tokio::time::timeout(timeout, async {
            loop {
                if let Event::Incoming(Packet::Publish(p)) =
                    self.events.poll().await.expect("phone stays connected")
                {
                    got.push(serde_json::from_slice(&p.payload).expect("job message is JSON"));
                    if found(&got) {
                        return;
                    }
                }
            }
        })
        .await;
        assert!(
            r.is_ok(),
            "no job message about order {order} within {timeout:?}: {got:?}"
        );
        got
    }
}

async fn emergency(svc: &Service, summary: &str) -> i64 {
    let (s, body) = svc
        .post(
            "/api/v1/work-orders",
            &json!({"kind": "emergency", "priority": "emergency",
                    "location": {"lat": 43.7702, "lon": 11.2502}, "summary": summary}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert!(body["crew_id"].is_string(), "assigned: {body}");
    body["id"].as_i64().unwrap()
}

async fn crews_channel_takes_big_messages(backend: Backend) {
    let Some(svc) = Service::start(backend, |_| {}).await else {
        return;
    };
    let (s, b) = svc
        .post(
            "/api/v1/meters",
            // Far from the emergencies, so its job is an order of its own.
            &json!([{"meter_id": "M-1", "district_id": "D1", "kind": "customer",
                     "lat": 43.83, "lon": 11.33}]),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = svc
        .post(
            "/api/v1/crews",
            &json!([
                {"id": "C-NEAR", "name": "near", "skills": ["emergency"],
                 "home": {"lat": 43.775, "lon": 11.255}, "on_shift": true},
                {"id": "C-FAR", "name": "far", "skills": ["emergency"],
                 "home": {"lat": 43.831, "lon": 11.331}, "on_shift": true},
                {"id": "C-3", "name": "third", "skills": ["emergency"],
                 "home": {"lat": 43.78, "lon": 11.26}, "on_shift": true}
            ]),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let crews = &svc.cfg.mqtt.crew_prefix;
    // One phone hears every crew's jobs.
    let mut phone = Phone::connect(&svc, &format!("{crews}/+/jobs")).await;

    // (b) 20 KB on a crew's location topic, then an emergency.
    let p = svc.publisher().await;
    p.publish_raw(&format!("{crews}/C-NEAR/location"), vec![b'{'; 20_000])
        .await
        .unwrap();
    p.flush(Duration::from_secs(10)).await.unwrap();
    let first = emergency(&svc, "gas smell reported by phone").await;
    phone.until_order(first, Duration::from_secs(20)).await;
    wait_for(
        "the big location dead-lettered",
        Duration::from_secs(10),
        || async { (!dead_letters(&svc, "too_large").await.is_empty()).then_some(()) },
    )
    .await;
    let (s, ready) = svc.get("/readyz").await;
    assert_eq!(s, 200, "{ready}");

    // (c) A leak alert whose evidence makes a 10 KB summary, escalated: its job
    // reaches the phone (within the phone's 10 KiB), and so does the next one, once.
    let now = Utc::now();
    let (alert, _) = svc
        .running()
        .store
        .record_finding(&Finding {
            kind: AlertKind::Burst,
            severity: Severity::Critical,
            meter_id: Some(MeterId::parse("M-1").unwrap()),
            district_id: Some(DistrictId::parse("D1").unwrap()),
            detected_at: now,
            evidence: Evidence {
                known: None,
                rule: "test".into(),
                observed: 1.0,
                expected: Some(0.0),
                threshold: 0.5,
                unit: "m3/h".into(),
                window_start: now - ChronoDuration::hours(1),
                window_end: now,
                explanation: "é".repeat(5_000),
            },
        })
        .await
        .unwrap();
    let (s, body) = svc
        .post(&format!("/api/v1/alerts/{}/escalate", alert.id), &json!({}))
        .await;
    assert_eq!(s, 201, "{body}");
    let big = body["work_order"]["id"].as_i64().unwrap();
    let full = body["work_order"]["summary"].as_str().unwrap().to_owned();
    let got = phone.until_order(big, Duration::from_secs(20)).await;
    let job = got.iter().find(|m| m["order"]["id"] == json!(big)).unwrap();
    let summary = job["order"]["summary"].as_str().unwrap();
    assert!(summary.starts_with("burst: éé"), "{summary:.40}");
    assert!(
        full.starts_with(summary),
        "the job's summary is the order's, cut"
    );
    // Cut to its bound when the order's is longer (whatever the store kept of it).
    let bound = leakwatch_wire::crew::JOB_SUMMARY_MAX_BYTES;
    assert!(summary.len() + 2 <= bound, "{} bytes", summary.len());
    assert_eq!(
        job["order"]["truncated"] == json!(true),
        full.len() + 2 > bound,
        "{}",
        job["order"]
    );
    let next = emergency(&svc, "second call").await;
    let mut got = phone.until_order(next, Duration::from_secs(20)).await;
    got.extend(phone.collect(Duration::from_secs(3)).await);
    let mut seen: HashMap<(i64, String, String), usize> = HashMap::new();
    for m in &got {
        let key = (
            m["order"]["id"].as_i64().unwrap(),
            m["order"]["status"].as_str().unwrap().to_owned(),
            m["change"].as_str().unwrap().to_owned(),
        );
        *seen.entry(key).or_default() += 1;
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "every job message once: {seen:?}"
    );
    let (s, ready) = svc.get("/readyz").await;
    assert_eq!(s, 200, "{ready}");
    let _ = p.disconnect().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crews_channel_takes_big_messages_embedded_sqlite() {
    crews_channel_takes_big_messages(Backend::EmbeddedSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crews_channel_takes_big_messages_mosquitto_postgres() {
    crews_channel_takes_big_messages(Backend::MosquittoPostgres).await;
}

/// `/readyz` covers the crews' channel: ready with both sessions up, not ready when
/// the broker is gone, ready again when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_covers_the_crews_channel() {
    let Ok(mut mosq) = OwnMosquitto::start() else {
        if crate::support::required_env("LEAKWATCH_TEST_MQTT").is_some() {
            panic!("mosquitto is not installed");
        }
        return;
    };
    let url = mosq.url();
    let Some(svc) = Service::start(Backend::MosquittoPostgres, |c| {
        c.mqtt.url = Some(url.parse().unwrap())
    })
    .await
    else {
        return;
    };
    let (s, v) = svc.get("/readyz").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["crews"]["ok"], json!(true), "{v}");
    mosq.stop();
    wait_for(
        "not ready without the broker",
        Duration::from_secs(20),
        || async {
            let (s, v) = svc.get("/readyz").await;
            (s == 503 && v["crews"]["ok"] == json!(false)).then_some(())
        },
    )
    .await;
    mosq.start_again();
    wait_for(
        "ready with the broker back",
        Duration::from_secs(30),
        || async {
            let (s, v) = svc.get("/readyz").await;
            (s == 200 && v["crews"]["ok"] == json!(true)).then_some(())
        },
    )
    .await;
    svc.stop().await;
}
