//! The crews' MQTT channel (`docs/dispatch.md`, "The crews' MQTT channel"): every new
//! or changed job goes out on `{crew_prefix}/{crew_id}/jobs` at QoS 1, and positions
//! come in on `{crew_prefix}/{crew_id}/location`.
//!
//! Devices connect with a persistent session (clean session off, a stable client id)
//! and subscribe at QoS 1, so the broker keeps what is published while a phone is
//! off and delivers it when it comes back. A job message is bounded by construction
//! (`leakwatch_wire::crew::JobMessage`), so every job fits in one packet. A location
//! that cannot be used (of any size) is dead-lettered with its reason and counted.

use chrono::Utc;
use leakwatch_dispatch::{Dispatcher, JobNotice};
use leakwatch_mqtt::{Session, SessionConfig, SessionHealth};
use leakwatch_store::{KeyedDeadLetter, NewDeadLetter, Store, dead_letter_key};
use leakwatch_wire::crew::{self, JobChange, JobMessage, Rejected};
use leakwatch_wire::dead_letter_payload;
use std::future::Future;
use std::sync::Arc;
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
    /// The login and TLS of the connection.
    pub security: leakwatch_mqtt::Security,
}

/// The job message for a dispatcher's notice, sent at `now`.
pub fn job_message(n: &JobNotice, now: chrono::DateTime<Utc>) -> JobMessage {
    let change = match n.change {
        leakwatch_dispatch::JobChange::Assigned => JobChange::Assigned,
        leakwatch_dispatch::JobChange::Updated => JobChange::Updated,
        leakwatch_dispatch::JobChange::Withdrawn => JobChange::Withdrawn,
    };
    JobMessage::new(&n.crew_id, change, &n.order, now)
}

/// Runs the channel until `shutdown`; `health` says whether its session is up with
/// its subscription granted (part of `/readyz`).
pub async fn run(
    cfg: CrewChannelConfig,
    dispatcher: Dispatcher,
    store: Store,
    mut notices: mpsc::UnboundedReceiver<JobNotice>,
    health: Arc<SessionHealth>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut session = Session::new(
        SessionConfig {
            name: "crews",
            host: cfg.host.clone(),
            port: cfg.port,
            client_id: cfg.client_id.clone(),
            keep_alive: cfg.keep_alive,
            persistent: true,
            manual_acks: false,
            inflight: 100,
            subscriptions: vec![crew::location_filter(&cfg.prefix)],
            security: cfg.security.clone(),
        },
        health,
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(n) = notices.recv() => {
                let body = job_message(&n, Utc::now()).encode();
                match session.publish(crew::jobs_topic(&cfg.prefix, &n.crew_id), body) {
                    Ok(()) => metrics::counter!("leakwatch_crew_jobs_published_total").increment(1),
                    // Cannot happen for a bounded job message; said loudly if it does.
                    Err(e) => tracing::error!(error = %e, order_id = n.order.id, "job message not sent"),
                }
            }
            p = session.next() => {
                location(&cfg.prefix, &dispatcher, &store, &p.topic, &p.payload).await;
            }
        }
    }
    // The jobs already handed over go out before the session closes.
    while let Ok(n) = notices.try_recv() {
        let body = job_message(&n, Utc::now()).encode();
        let _ = session.publish(crew::jobs_topic(&cfg.prefix, &n.crew_id), body);
    }
    session.close(Duration::from_secs(2)).await;
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
    let result = match crew::parse_location(prefix, topic, payload, now) {
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
    // Keyed by a digest of the whole message, so a redelivery of the same bad
    // position is stored once (as the meters' dead letters are).
    let dl = KeyedDeadLetter {
        letter: NewDeadLetter {
            topic: topic.to_owned(),
            reason: result.reason.to_owned(),
            detail: result.detail,
            payload: dead_letter_payload(payload).to_vec(),
            received_at: now,
        },
        key: dead_letter_key(topic, result.reason, payload),
        meter_id: None,
    };
    if let Err(e) = store.dead_letters_once(&[dl], 0).await {
        tracing::error!(error = %e, "dead letter not stored");
    }
}
