//! `leakwatch bridge`: MQTT (persistent QoS 1 session, manual acknowledgements) to the
//! replicated log. A message is acknowledged to the broker only after the log has
//! stored it; until then the broker keeps it, so a bridge killed at any point loses
//! nothing, and what it appended but did not acknowledge is redelivered (to it or to
//! another bridge of the same shared session) and deduplicated by the log's window
//! (`Nats-Msg-Id`), and after the window by the store's primary key.

use crate::status::BridgeStatus;
use leakwatch_log::{Append, Log, partition_of};
use leakwatch_mqtt::{Publish, Session, SessionConfig, SessionHealth};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub mqtt_host: String,
    pub mqtt_port: u16,
    /// The bridge's client id (persistent session: keep it stable per bridge).
    pub client_id: String,
    pub prefix: String,
    pub keep_alive: Duration,
    /// Messages in flight between the broker and the log (the MQTT receive window).
    pub inflight: u16,
    pub partitions: u32,
    /// MQTT shared-subscription group (`$share/{group}/...`), if the bridges share.
    pub shared_group: Option<String>,
    /// The bridge's broker login and TLS (`mqtt.username`, `mqtt.ca_file`, ...).
    pub security: leakwatch_mqtt::Security,
}

/// The deduplication id of a message: `{meter}:{first reading time in ms}` when it
/// decodes with readings, else a digest of topic and payload.
pub fn dedupe_id(prefix: &str, topic: &str, payload: &[u8]) -> (String, String) {
    if let Ok(d) = leakwatch_wire::decode(prefix, topic, payload) {
        let district = d.uplink.district.to_string();
        if let Some(first) = d.uplink.readings.iter().map(|r| r.t).min() {
            return (
                format!("{}:{}", d.uplink.meter, first.timestamp_millis()),
                district,
            );
        }
        return (digest(topic, payload), district);
    }
    // Undecodable: its district from the topic if it has one (the worker of that
    // partition dead-letters it).
    let district = topic
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|r| r.split('/').next())
        .filter(|d| !d.is_empty())
        .unwrap_or("_")
        .to_owned();
    (digest(topic, payload), district)
}

fn digest(topic: &str, payload: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(topic.as_bytes());
    h.update([0]);
    h.update(payload);
    let d = h.finalize();
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("x:{hex}")
}

/// Runs the bridge until `shutdown` resolves; then stops taking messages, waits (up
/// to 10 s) for the appends in flight, acknowledges what the log stored and closes
/// the session.
pub async fn run<L: Log + Clone + 'static>(
    cfg: BridgeConfig,
    log: L,
    health: Arc<SessionHealth>,
    status: Arc<BridgeStatus>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut session = Session::new(
        SessionConfig {
            name: "bridge",
            host: cfg.mqtt_host.clone(),
            port: cfg.mqtt_port,
            client_id: cfg.client_id.clone(),
            keep_alive: cfg.keep_alive,
            persistent: true,
            manual_acks: true,
            inflight: cfg.inflight,
            subscriptions: vec![match &cfg.shared_group {
                Some(g) => format!("$share/{g}/{}", leakwatch_wire::uplink_filter(&cfg.prefix)),
                None => leakwatch_wire::uplink_filter(&cfg.prefix),
            }],
            security: cfg.security.clone(),
        },
        health,
    );
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Publish>();
    let mut in_flight = 0usize;
    status.in_flight(0);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(p) = done_rx.recv() => {
                in_flight -= 1;
                status.in_flight(in_flight);
                session.ack(p);
            }
            p = session.next() => {
                in_flight += 1;
                status.in_flight(in_flight);
                // Handed to the log here, in the order received (so a partition keeps
                // the broker's order as far as this bridge goes); the storage is
                // awaited apart, many at once.
                let m = to_append(&cfg.prefix, cfg.partitions, &p);
                let started = std::time::Instant::now();
                let sent = log.send(m.clone()).await;
                let (log, tx, status) = (log.clone(), done_tx.clone(), status.clone());
                tokio::spawn(async move {
                    match sent {
                        Ok(pending) => match pending.await {
                            Ok(a) => status.appended(a.duplicate, started.elapsed().as_secs_f64()),
                            Err(e) => {
                                status.append_failed(&e.to_string());
                                append_until_stored(&log, m, &status).await;
                            }
                        },
                        Err(e) => {
                            status.append_failed(&e.to_string());
                            append_until_stored(&log, m, &status).await;
                        }
                    }
                    let _ = tx.send(p);
                });
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while in_flight > 0 {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(p)) => {
                in_flight -= 1;
                session.ack(p);
            }
            _ => break,
        }
    }
    session.close(Duration::from_secs(2)).await;
    tracing::info!(unfinished = in_flight, "bridge stopped");
}

/// The log message of one MQTT message: its district's partition, its deduplication
/// id, the topic and the time received.
fn to_append(prefix: &str, partitions: u32, p: &Publish) -> Append {
    let topic = p.topic.clone();
    let (id, district) = dedupe_id(prefix, &topic, &p.payload);
    Append {
        partition: partition_of(&district, partitions),
        key: district,
        dedupe_id: id,
        topic,
        received_at_ms: chrono::Utc::now().timestamp_millis(),
        payload: p.payload.clone(),
    }
}

/// Appends one message, retrying (same deduplication id) until the log stores it.
async fn append_until_stored<L: Log>(log: &L, m: Append, status: &BridgeStatus) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let started = std::time::Instant::now();
        match log.append(m.clone()).await {
            Ok(a) => {
                status.appended(a.duplicate, started.elapsed().as_secs_f64());
                return;
            }
            Err(e) => {
                status.append_failed(&e.to_string());
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "the log did not store a message; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_id_is_meter_and_first_reading() {
        let payload = br#"{"v":1,"meter":"M1","readings":[{"t":"2026-01-01T01:00:00Z","vol":2.0},{"t":"2026-01-01T00:00:00Z","vol":1.0}]}"#;
        let (id, district) = dedupe_id("gas", "gas/D1/M1/up", payload);
        assert_eq!(id, "M1:1767225600000");
        assert_eq!(district, "D1");
        let (bad, d) = dedupe_id("gas", "gas/D2/M1/up", b"not json");
        assert!(bad.starts_with("x:"));
        assert_eq!(d, "D2");
        assert_ne!(bad, dedupe_id("gas", "gas/D2/M1/up", b"not json!").0);
        assert_eq!(dedupe_id("gas", "nope", b"x").1, "_");
    }
}
