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
use leakwatch_mqtt::{Publish, Session, SessionConfig};
use leakwatch_store::Store;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub use judge::{Refusal, Rules, judge};
pub use writer::{BatchOutcome, Prepared, Writer, retain_dead_letters};

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
    /// Days a measurement time may lie before the meter's installation date; earlier
    /// is rejected as `t_before_installation`.
    pub max_days_before_installation: u32,
    /// For meters without an installation date: days a measurement time may lie
    /// before the registry first knew the meter; earlier is `t_before_registration`.
    /// Generous, so that back-filled history is kept.
    pub max_days_before_registration: u32,
    /// How often (milliseconds) the SQLite registry is polled for changes made while
    /// running (PostgreSQL announces them at once).
    pub registry_poll_ms: u64,
    /// Dead letters kept per meter (its latest ones; 0: no limit). Valid readings are
    /// never limited.
    pub dead_letter_per_meter_max: u32,
    /// Dead letters older than this many days are dropped (0: kept forever).
    pub dead_letter_max_age_days: u32,
    /// At most this many dead letters are kept, the newest (0: no limit).
    pub dead_letter_max_count: u64,
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
            max_days_before_installation: 0,
            max_days_before_registration: 3650,
            registry_poll_ms: 2000,
            dead_letter_per_meter_max: 1000,
            dead_letter_max_age_days: 30,
            dead_letter_max_count: 1_000_000,
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
    /// The login and TLS of the connection.
    pub security: leakwatch_mqtt::Security,
}

/// What a batch committed, for the detectors: readings in the order received
/// (message by message, each message's in time order) and device events, each with
/// its meter. The meter is shared (`Arc`): one registry entry serves all its
/// readings.
#[derive(Debug, Default)]
pub struct Stored {
    pub readings: Vec<(Arc<Meter>, Reading)>,
    pub events: Vec<(Arc<Meter>, MeterEvent)>,
    /// For each event, how many of `readings` came before it: its message's
    /// readings and those of every earlier message. [`Stored::in_order`] uses it.
    pub event_after: Vec<usize>,
}

/// One item of a [`Stored`] batch, in the order received.
#[derive(Debug, Clone, Copy)]
pub enum Item<'a> {
    Reading(&'a Arc<Meter>, &'a Reading),
    Event(&'a Arc<Meter>, &'a MeterEvent),
}

impl Stored {
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty() && self.events.is_empty()
    }

    /// Readings and events interleaved as their messages arrived (each message's
    /// readings, then its events), so the detectors see one sequence however the
    /// stream was cut into batches.
    pub fn in_order(&self) -> impl Iterator<Item = Item<'_>> {
        let (mut e, mut r) = (0, 0);
        std::iter::from_fn(move || {
            // An event goes once its message's readings (and all before) have gone.
            if let Some((m, ev)) = self.events.get(e)
                && self.event_after.get(e).is_none_or(|&after| after <= r)
            {
                e += 1;
                return Some(Item::Event(m, ev));
            }
            let (m, reading) = self.readings.get(r)?;
            r += 1;
            Some(Item::Reading(m, reading))
        })
    }

    /// Appends `more`, received after this batch.
    pub fn extend(&mut self, more: Stored) {
        let offset = self.readings.len();
        self.readings.extend(more.readings);
        self.events.extend(more.events);
        self.event_after
            .extend(more.event_after.into_iter().map(|a| a + offset));
    }
}

/// Readiness of the ingestor's MQTT session, as `/readyz` sees it.
pub type IngestHealth = leakwatch_mqtt::SessionHealth;

/// The ingestor's session health; it also keeps `leakwatch_broker_connected` (1 while
/// the ingestor is subscribed), which operators' alerts use.
pub fn ingest_health() -> Arc<IngestHealth> {
    IngestHealth::with_hook("ingest", |up| {
        metrics::gauge!("leakwatch_broker_connected").set(if up { 1.0 } else { 0.0 });
    })
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
    let mut session = Session::new(
        SessionConfig {
            name: "ingest",
            host: broker.host.clone(),
            port: broker.port,
            client_id: broker.client_id.clone(),
            keep_alive: broker.keep_alive,
            persistent: true,
            manual_acks: true,
            inflight: broker.inflight,
            subscriptions: vec![leakwatch_wire::uplink_filter(&broker.prefix)],
            security: broker.security.clone(),
        },
        health,
    );
    // Publishes go to the writer over a bounded channel; acknowledgements come back
    // over an unbounded one, so the writer never waits on this task (no deadlock) and
    // this task never waits on the writer: when the writer's queue is full it stops
    // reading from the broker, which then holds the rest. Any message the broker
    // delivers is taken, whatever its size (`leakwatch_mqtt::MAX_INCOMING_PACKET`):
    // one over the contract is dead-lettered `too_large` by the writer and
    // acknowledged like any other.
    let (tx, rx) = mpsc::channel(cfg.queue_messages.max(1));
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Publish>();

    let writer = Writer::new(store, cfg, broker.prefix.clone());
    let writer_task = tokio::spawn(writer.run(rx, ack_tx, sink));

    tokio::pin!(shutdown);
    let mut held: Option<Publish> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(p) = ack_rx.recv() => session.ack(p),
            permit = tx.reserve(), if held.is_some() => match permit {
                Ok(permit) => permit.send(held.take().expect("held")),
                Err(_) => break,
            },
            p = session.next(), if held.is_none() => match tx.try_send(p) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(p)) => held = Some(p),
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            },
        }
    }
    drop(tx);
    // Let the writer finish the batch in hand; what it has not acknowledged the
    // broker redelivers on the next start.
    let _ = tokio::time::timeout(Duration::from_secs(10), writer_task).await;
    // Send the acknowledgements of what it committed before saying goodbye.
    while let Ok(p) = ack_rx.try_recv() {
        session.ack(p);
    }
    session.close(Duration::from_secs(2)).await;
    tracing::info!("ingest stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use leakwatch_core::{DistrictId, EventCode, GeoPoint, MeterId, MeterKind, MeterStatus};

    fn meter() -> Arc<Meter> {
        Arc::new(Meter {
            id: MeterId::parse("M1").unwrap(),
            district: DistrictId::parse("D1").unwrap(),
            kind: MeterKind::Customer,
            location: GeoPoint::new(43.77, 11.25).unwrap(),
            report_every_h: 24,
            status: MeterStatus::Active,
            installed_at: None,
            max_flow_m3h: None,
        })
    }

    /// A batch of readings with volumes `vols` and events at hours `events`, each
    /// after `after` readings.
    fn batch(vols: &[f64], events: &[(i64, usize)]) -> Stored {
        let m = meter();
        let t = |h: i64| {
            Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + chrono::TimeDelta::hours(h)
        };
        Stored {
            readings: vols
                .iter()
                .map(|&vol| {
                    let r = Reading {
                        meter: m.id.clone(),
                        t: t(0),
                        vol,
                        temp: None,
                        flow_max: None,
                        pressure: None,
                    };
                    (m.clone(), r)
                })
                .collect(),
            events: events
                .iter()
                .map(|&(h, _)| {
                    let e = MeterEvent {
                        meter: m.id.clone(),
                        t: t(h),
                        code: EventCode::Named("tamper".into()),
                    };
                    (m.clone(), e)
                })
                .collect(),
            event_after: events.iter().map(|&(_, a)| a).collect(),
        }
    }

    fn order(s: &Stored) -> Vec<String> {
        s.in_order()
            .map(|i| match i {
                Item::Reading(_, r) => format!("r{}", r.vol),
                Item::Event(_, e) => format!("e{}", e.t.format("%H")),
            })
            .collect()
    }

    #[test]
    fn events_go_after_their_message_s_readings_also_across_parts() {
        let whole = batch(&[1.0, 2.0, 3.0], &[(0, 0), (1, 1), (3, 3)]);
        assert_eq!(order(&whole), ["e00", "r1", "e01", "r2", "r3", "e03"]);
        // The same stream received as two batches (a split): the same sequence.
        let mut first = batch(&[1.0, 2.0], &[(0, 0), (1, 1)]);
        first.extend(batch(&[3.0], &[(3, 1)]));
        assert_eq!(order(&first), order(&whole));
    }
}
