//! The ingestor: subscribes to the meters' uplink topics over MQTT, validates each
//! message with `leakwatch-wire`, stores readings idempotently, and acknowledges a
//! message to the broker only after what it carried is committed (or dead-lettered).
//!
//! Two tasks: the *poller* drives the MQTT connection and hands publishes over a
//! bounded channel; the *writer* takes what is waiting (up to a batch), writes it in
//! one transaction, acknowledges, and passes the stored readings on to detection.
//! When the store is slow or gone the writer retries with backoff and stops taking
//! messages, the channel fills, the poller stops reading, and the broker keeps the
//! rest (QoS 1, persistent session). This crate does not detect anything and does not
//! own the registry; it reads meters from the store.

mod judge;
mod writer;

use leakwatch_core::{Meter, MeterEvent, Reading};
use leakwatch_store::Store;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

pub use judge::{Refusal, Rules, judge};
pub use writer::{BatchOutcome, Writer};

/// What to do with a message from a meter the registry does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownMeters {
    /// Dead-letter it with reason `unknown_meter` (the production default).
    Reject,
    /// Register the meter as a customer meter of the topic's district (for demos).
    Register,
}

/// Settings of the ingestor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// What to do with messages from unknown meters.
    pub unknown_meters: UnknownMeters,
    /// Most readings written in one transaction.
    pub batch_max_readings: usize,
    /// How long the writer waits for more messages before writing a batch that is
    /// not full, in milliseconds (0: write what is waiting at once). Keep it well
    /// under the broker's patience: messages are acknowledged only after the write.
    pub batch_linger_ms: u64,
    /// Messages waiting between the MQTT connection and the writer (bounded memory).
    pub queue_messages: usize,
    /// Minutes a measurement time may lie after its receipt (clock drift allowance);
    /// later ones are rejected as `t_in_future`.
    pub max_future_min: u32,
    /// Capacity (m3/h) assumed for customer meters without a rated `max_flow_m3h`;
    /// more consumption than this over an interval flags the reading `jump`.
    pub default_customer_max_flow_m3h: f64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            unknown_meters: UnknownMeters::Reject,
            batch_max_readings: 10_000,
            batch_linger_ms: 0,
            queue_messages: 1_000,
            max_future_min: 60,
            default_customer_max_flow_m3h: 10.0,
        }
    }
}

/// Where and how to reach the broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub prefix: String,
    pub keep_alive: Duration,
    /// Broker-side unacknowledged messages we allow (client receive window).
    pub inflight: u16,
}

/// What a batch committed, for the detectors: readings in the order received
/// (message by message, each message's in time order) and device events, each with its meter. The meter is shared (`Arc`): one registry
/// entry serves all its readings.
#[derive(Debug, Default)]
pub struct Stored {
    pub readings: Vec<(Arc<Meter>, Reading)>,
    pub events: Vec<(Arc<Meter>, MeterEvent)>,
}

impl Stored {
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty() && self.events.is_empty()
    }
}

/// Liveness of the ingestor as `/readyz` sees it.
#[derive(Debug, Default)]
pub struct IngestHealth {
    connected: AtomicBool,
}

impl IngestHealth {
    pub fn broker_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        metrics::gauge!("leakwatch_broker_connected").set(if up { 1.0 } else { 0.0 });
    }
}

/// Runs the ingestor until `shutdown` resolves.
pub async fn run(
    broker: BrokerConfig,
    cfg: IngestConfig,
    store: Store,
    sink: mpsc::Sender<Stored>,
    health: Arc<IngestHealth>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut opts = MqttOptions::new(broker.client_id.clone(), broker.host.clone(), broker.port);
    opts.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(broker.keep_alive)
        .set_inflight(broker.inflight)
        .set_max_packet_size(
            leakwatch_wire::MAX_PAYLOAD_BYTES * 4 + 1024,
            leakwatch_wire::MAX_PAYLOAD_BYTES * 4 + 1024,
        )
        .set_request_channel_capacity(usize::from(broker.inflight) * 4 + 64);
    let (client, mut eventloop) = AsyncClient::new(opts, usize::from(broker.inflight) * 4 + 64);
    // Publishes go to the writer over a bounded channel; acknowledgements come back
    // over an unbounded one, so the writer never waits on this task (no deadlock) and
    // this task never waits on the writer: when the writer's queue is full it stops
    // reading from the broker, which then holds the rest.
    let (tx, rx) = mpsc::channel(cfg.queue_messages.max(1));
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Publish>();
    let filter = leakwatch_wire::uplink_filter(&broker.prefix);

    let writer = Writer::new(store, cfg, broker.prefix.clone());
    let writer_task = tokio::spawn(writer.run(rx, ack_tx, sink));

    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(100);
    let mut held: Option<Publish> = None;
    let mut unsent_acks: VecDeque<Publish> = VecDeque::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(p) = ack_rx.recv() => unsent_acks.push_back(p),
            permit = tx.reserve(), if held.is_some() => match permit {
                Ok(permit) => permit.send(held.take().expect("held")),
                Err(_) => break,
            },
            event = eventloop.poll(), if held.is_none() => match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = Duration::from_millis(100);
                    tracing::info!(
                        host = %broker.host, port = broker.port,
                        session_present = ack.session_present, "connected to broker"
                    );
                    // Subscribing again is harmless when the session was kept.
                    if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                        tracing::error!(error = %e, "could not subscribe");
                    }
                }
                // Ready once the subscription is in place: from then on the broker
                // keeps every message for this session.
                Ok(Event::Incoming(Packet::SubAck(_))) => health.set_connected(true),
                Ok(Event::Incoming(Packet::Publish(p))) => match tx.try_send(p) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(p)) => held = Some(p),
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                },
                Ok(_) => {}
                Err(e) => {
                    if health.broker_connected() {
                        tracing::warn!(error = %e, "broker connection lost; reconnecting");
                    } else {
                        tracing::debug!(error = %e, "broker still unreachable");
                    }
                    health.set_connected(false);
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            },
        }
        // Hand acknowledgements to the connection without ever blocking on it.
        while let Some(p) = unsent_acks.front() {
            if client.try_ack(p).is_err() {
                break;
            }
            unsent_acks.pop_front();
        }
    }
    drop(tx);
    // Let the writer finish the batch in hand; what it has not acknowledged the
    // broker redelivers on the next start.
    let _ = tokio::time::timeout(Duration::from_secs(10), writer_task).await;
    // Send the acknowledgements of what it committed before saying goodbye.
    while let Ok(p) = ack_rx.try_recv() {
        unsent_acks.push_back(p);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(p) = unsent_acks.front() {
            if client.try_ack(p).is_ok() {
                unsent_acks.pop_front();
            } else if eventloop.poll().await.is_err() {
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
    health.set_connected(false);
    tracing::info!("ingest stopped");
}
