//! The writing half of the ingestor: validate, store, acknowledge, pass on.

use crate::{IngestConfig, Stored, UnknownMeters};
use chrono::Utc;
use leakwatch_core::{GeoPoint, Meter, MeterId, MeterKind, MeterStatus, Reading};
use leakwatch_store::{NewDeadLetter, Store, StoreError};
use leakwatch_wire::Uplink;
use rumqttc::{AsyncClient, Publish};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What one batch came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    pub messages: usize,
    pub inserted: u64,
    pub duplicates: u64,
    pub dead_letters: usize,
}

/// Validates and stores batches of messages. Each step is callable on its own so
/// tests can drive it without a broker.
pub struct Writer {
    store: Store,
    cfg: IngestConfig,
    prefix: String,
    meters: HashMap<MeterId, Meter>,
}

/// A rejected message, before it is written.
struct Reject {
    topic: String,
    reason: &'static str,
    detail: String,
    payload: Vec<u8>,
}

impl Writer {
    pub fn new(store: Store, cfg: IngestConfig, prefix: String) -> Self {
        Self {
            store,
            cfg,
            prefix,
            meters: HashMap::new(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Publish>,
        client: AsyncClient,
        sink: mpsc::Sender<Stored>,
    ) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let mut size = 0usize;
            while size < self.cfg.batch_max_readings {
                match rx.try_recv() {
                    Ok(p) => {
                        size += p.payload.len() / 40 + 1; // rough readings estimate
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            let messages: Vec<(String, Vec<u8>)> = batch
                .iter()
                .map(|p| (p.topic.clone(), p.payload.to_vec()))
                .collect();
            let stored = self.process_with_retry(&messages).await;
            // Everything in the batch is now durable: acknowledge in order received.
            for p in &batch {
                if let Err(e) = client.ack(p).await {
                    tracing::warn!(error = %e, "could not acknowledge; the broker will redeliver");
                }
            }
            if !stored.is_empty() && sink.send(stored).await.is_err() {
                tracing::debug!("detection stopped; readings are stored, not analysed");
            }
        }
    }

    /// Processes a batch, retrying with backoff while the store is unavailable.
    async fn process_with_retry(&mut self, messages: &[(String, Vec<u8>)]) -> Stored {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.process(messages).await {
                Ok((_, stored)) => return stored,
                Err(e) => {
                    metrics::counter!("leakwatch_ingest_store_errors_total").increment(1);
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "store unavailable; holding the batch and retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn meter(&mut self, id: &MeterId) -> Result<Option<Meter>, StoreError> {
        if let Some(m) = self.meters.get(id) {
            return Ok(Some(m.clone()));
        }
        let found = self.store.get_meter(id).await?;
        if let Some(m) = &found {
            self.meters.insert(id.clone(), m.clone());
        }
        Ok(found)
    }

    /// Validates every message, stores the good readings in one transaction and the
    /// rejects in the dead-letter store. Returns the committed readings.
    pub async fn process(
        &mut self,
        messages: &[(String, Vec<u8>)],
    ) -> Result<(BatchOutcome, Stored), StoreError> {
        let started = Instant::now();
        let mut rejects = Vec::new();
        let mut accepted: Vec<(Meter, Uplink)> = Vec::new();
        for (topic, payload) in messages {
            let up = match leakwatch_wire::decode(&self.prefix, topic, payload) {
                Ok(up) => up,
                Err(e) => {
                    rejects.push(Reject {
                        topic: topic.clone(),
                        reason: e.reason(),
                        detail: e.to_string(),
                        payload: payload.clone(),
                    });
                    continue;
                }
            };
            let meter = match self.meter(&up.meter).await? {
                Some(m) => m,
                None if self.cfg.unknown_meters == UnknownMeters::Register => {
                    let m = Meter {
                        id: up.meter.clone(),
                        district: up.district.clone(),
                        kind: MeterKind::Customer,
                        location: GeoPoint { lat: 0.0, lon: 0.0 },
                        report_every_h: 24,
                        status: MeterStatus::Active,
                    };
                    self.store.upsert_meters(std::slice::from_ref(&m)).await?;
                    tracing::info!(meter_id = %m.id, district_id = %m.district, "registered unknown meter");
                    self.meters.insert(m.id.clone(), m.clone());
                    m
                }
                None => {
                    rejects.push(Reject {
                        topic: topic.clone(),
                        reason: "unknown_meter",
                        detail: format!("meter {} is not in the registry", up.meter),
                        payload: payload.clone(),
                    });
                    continue;
                }
            };
            if meter.district != up.district {
                rejects.push(Reject {
                    topic: topic.clone(),
                    reason: "district_mismatch",
                    detail: format!(
                        "meter {} belongs to district {}, not {}",
                        meter.id, meter.district, up.district
                    ),
                    payload: payload.clone(),
                });
                continue;
            }
            accepted.push((meter, up));
        }

        let readings: Vec<Reading> = accepted
            .iter()
            .flat_map(|(_, up)| up.readings.iter().cloned())
            .collect();
        let events: Vec<_> = accepted
            .iter()
            .flat_map(|(_, up)| up.events.iter().cloned())
            .collect();
        let outcome = self.store.insert_readings(&readings).await?;
        if !events.is_empty() {
            self.store.insert_events(&events).await?;
        }
        let received_at = Utc::now();
        for r in &rejects {
            self.store
                .dead_letter(&NewDeadLetter {
                    topic: r.topic.clone(),
                    reason: r.reason.to_owned(),
                    detail: r.detail.clone(),
                    payload: r.payload.clone(),
                    received_at,
                })
                .await?;
            metrics::counter!("leakwatch_dead_letters_total", "reason" => r.reason).increment(1);
            tracing::warn!(topic = %r.topic, reason = r.reason, detail = %r.detail, "message dead-lettered");
        }

        metrics::counter!("leakwatch_ingest_messages_total", "result" => "accepted")
            .increment(accepted.len() as u64);
        metrics::counter!("leakwatch_ingest_messages_total", "result" => "rejected")
            .increment(rejects.len() as u64);
        metrics::counter!("leakwatch_ingest_readings_total", "outcome" => "inserted")
            .increment(outcome.inserted);
        metrics::counter!("leakwatch_ingest_readings_total", "outcome" => "duplicate")
            .increment(outcome.duplicates);
        metrics::histogram!("leakwatch_ingest_batch_seconds")
            .record(started.elapsed().as_secs_f64());

        let mut stored: Stored = accepted
            .into_iter()
            .flat_map(|(m, up)| up.readings.into_iter().map(move |r| (m.clone(), r)))
            .collect();
        stored.sort_by(|a, b| a.1.meter.cmp(&b.1.meter).then(a.1.t.cmp(&b.1.t)));
        Ok((
            BatchOutcome {
                messages: messages.len(),
                inserted: outcome.inserted,
                duplicates: outcome.duplicates,
                dead_letters: rejects.len(),
            },
            stored,
        ))
    }
}
