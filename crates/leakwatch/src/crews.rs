//! The crews' MQTT channel (`docs/crews.md`): every new or changed job goes out on
//! `{crew_prefix}/{crew_id}/jobs` at QoS 1, and positions come in on
//! `{crew_prefix}/{crew_id}/location`.
//!
//! Devices connect with a persistent session (clean session off, a stable client id)
//! and subscribe at QoS 1, so the broker keeps what is published while a phone is
//! off and delivers it when it comes back. A location that cannot be used is
//! dead-lettered with its reason and counted.

use chrono::Utc;
use leakwatch_core::{CrewId, DeadlineView, GeoPoint, PositionReport, Timestamp};
use leakwatch_dispatch::{Dispatcher, JobChange, JobNotice};
use leakwatch_store::{NewDeadLetter, Store};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::mpsc;

/// Where the crews' broker is and how to name this client.
#[derive(Debug, Clone)]
pub struct CrewChannelConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub prefix: String,
    pub keep_alive: Duration,
}

/// The message on `crews/{crew_id}/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobMessage {
    /// Message format version.
    pub v: u8,
    pub crew_id: CrewId,
    /// `assigned`, `updated` or `withdrawn`.
    pub change: String,
    pub sent_at: Timestamp,
    pub order: leakwatch_core::WorkOrder,
    /// Time left to the order's deadline when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<serde_json::Value>,
}

impl JobMessage {
    pub fn new(n: &JobNotice, now: Timestamp) -> Self {
        let deadline: Option<DeadlineView> = n.order.deadline(now);
        JobMessage {
            v: 1,
            crew_id: n.crew_id.clone(),
            change: match n.change {
                JobChange::Assigned => "assigned",
                JobChange::Updated => "updated",
                JobChange::Withdrawn => "withdrawn",
            }
            .into(),
            sent_at: now,
            order: n.order.clone(),
            deadline: deadline.and_then(|d| serde_json::to_value(d).ok()),
        }
    }
}

/// A location message that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: &'static str,
    pub detail: String,
}

/// Reads a location publish: the crew from the topic, the fix from the payload.
pub fn parse_location(
    prefix: &str,
    topic: &str,
    payload: &[u8],
    now: Timestamp,
) -> Result<(CrewId, GeoPoint, Timestamp), Rejected> {
    let reject = |reason, detail: String| Rejected { reason, detail };
    let crew = topic
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|r| r.strip_suffix("/location"))
        .ok_or_else(|| {
            reject(
                "bad_topic",
                format!("{topic:?} is not {prefix}/{{crew_id}}/location"),
            )
        })?;
    let crew = CrewId::parse(crew).map_err(|e| reject("bad_crew", e.to_string()))?;
    let msg: PositionReport = serde_json::from_slice(payload)
        .map_err(|e| reject("bad_location", format!("not a location message: {e}")))?;
    let (at, t) = msg
        .check(now)
        .map_err(|e| reject(e.reason(), e.to_string()))?;
    Ok((crew, at, t))
}

/// Runs the channel until `shutdown`.
pub async fn run(
    cfg: CrewChannelConfig,
    dispatcher: Dispatcher,
    store: Store,
    mut notices: mpsc::UnboundedReceiver<JobNotice>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut opts = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    opts.set_clean_session(false)
        .set_keep_alive(cfg.keep_alive)
        .set_request_channel_capacity(1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let filter = format!("{}/+/location", cfg.prefix);
    tokio::pin!(shutdown);
    let mut unsent: VecDeque<(String, Vec<u8>)> = VecDeque::new();
    let mut backoff = Duration::from_millis(100);
    let mut connected = false;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(n) = notices.recv() => {
                let msg = JobMessage::new(&n, Utc::now());
                let topic = format!("{}/{}/jobs", cfg.prefix, n.crew_id);
                match serde_json::to_vec(&msg) {
                    Ok(body) => unsent.push_back((topic, body)),
                    Err(e) => tracing::error!(error = %e, "job message not serializable"),
                }
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = Duration::from_millis(100);
                    connected = true;
                    tracing::info!(session_present = ack.session_present, "crews' channel connected");
                    if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                        tracing::error!(error = %e, "could not subscribe to crews' locations");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    location(&cfg.prefix, &dispatcher, &store, &p.topic, &p.payload).await;
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        tracing::warn!(error = %e, "crews' channel lost the broker; reconnecting");
                    }
                    connected = false;
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            },
        }
        // Hand publishes to the connection without ever blocking on it; rumqttc
        // sends them (again) when connected.
        while let Some((topic, body)) = unsent.front() {
            if client
                .try_publish(topic.clone(), QoS::AtLeastOnce, false, body.clone())
                .is_err()
            {
                break;
            }
            metrics::counter!("leakwatch_crew_jobs_published_total").increment(1);
            unsent.pop_front();
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while !unsent.is_empty() || eventloop.state.inflight() > 0 {
            if let Some((topic, body)) = unsent.pop_front() {
                let _ = client.try_publish(topic, QoS::AtLeastOnce, false, body);
            }
            if eventloop.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    tracing::info!("crews' channel stopped");
}

async fn location(
    prefix: &str,
    dispatcher: &Dispatcher,
    store: &Store,
    topic: &str,
    payload: &[u8],
) {
    let now = Utc::now();
    let result = match parse_location(prefix, topic, payload, now) {
        Ok((crew, at, t)) => match dispatcher.crew_position(&crew, at, t).await {
            Ok(()) => {
                metrics::counter!("leakwatch_crew_locations_total").increment(1);
                return;
            }
            Err(leakwatch_dispatch::DispatchError::NotFound(_)) => Rejected {
                reason: "unknown_crew",
                detail: format!("crew {crew} is not in the registry"),
            },
            Err(e) => {
                tracing::warn!(error = %e, topic, "crew location not stored");
                return;
            }
        },
        Err(r) => r,
    };
    metrics::counter!("leakwatch_crew_locations_rejected_total", "reason" => result.reason)
        .increment(1);
    tracing::warn!(topic, reason = result.reason, detail = %result.detail, "crew location dead-lettered");
    let dl = NewDeadLetter {
        topic: topic.to_owned(),
        reason: result.reason.to_owned(),
        detail: result.detail,
        payload: payload.to_vec(),
        received_at: now,
    };
    if let Err(e) = store.dead_letter(&dl).await {
        tracing::error!(error = %e, "dead letter not stored");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn locations_are_read_or_rejected_with_a_reason() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();
        let (crew, at, t) = parse_location(
            "crews",
            "crews/C-7/location",
            br#"{"lat":43.77,"lon":11.25,"t":"2026-11-26T09:59:00Z"}"#,
            now,
        )
        .unwrap();
        assert_eq!(crew.as_str(), "C-7");
        assert_eq!((at.lat, at.lon), (43.77, 11.25));
        assert_eq!(t, now - chrono::Duration::minutes(1));
        let (_, _, t) =
            parse_location("crews", "crews/C-7/location", br#"{"lat":1,"lon":2}"#, now).unwrap();
        assert_eq!(t, now);
        let reason = |topic: &str, body: &[u8]| {
            parse_location("crews", topic, body, now)
                .unwrap_err()
                .reason
        };
        assert_eq!(reason("crews/C-7/jobs", b"{}"), "bad_topic");
        assert_eq!(reason("crews/C-7/location", b"nope"), "bad_location");
        assert_eq!(
            reason("crews/C-7/location", br#"{"lat":91,"lon":2}"#),
            "bad_location"
        );
        assert_eq!(
            reason("crews/C-7/location", br#"{"lat":1,"lon":2,"alt":3}"#),
            "bad_location"
        );
        assert_eq!(
            reason(
                "crews/C-7/location",
                br#"{"lat":1,"lon":2,"t":"2026-11-26T11:00:00Z"}"#
            ),
            "t_in_future"
        );
    }
}
