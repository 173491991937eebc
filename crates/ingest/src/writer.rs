//! The writing half of the ingestor: validate, store, acknowledge, pass on.

use crate::judge::{Rules, judge};
use crate::{IngestConfig, Stored, UnknownMeters};
use chrono::Utc;
use leakwatch_core::{
    GeoPoint, Meter, MeterEvent, MeterId, MeterKind, MeterStatus, Reading, Timestamp,
};
use leakwatch_store::{NewDeadLetter, ReadingFlags, Store, StoreError};
use leakwatch_wire::{Decoded, REJECTED_DETAIL_MAX_ITEMS, dead_letter_payload};
use rumqttc::Publish;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What one batch came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    pub messages: usize,
    pub inserted: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    /// Messages dead-lettered, whole or in part.
    pub dead_letters: usize,
}

/// Validates and stores batches of messages. [`Writer::process`] is one step a test
/// can call without a broker.
pub struct Writer {
    store: Store,
    cfg: IngestConfig,
    prefix: String,
    rules: Rules,
    meters: HashMap<MeterId, Arc<Meter>>,
    /// Each meter's latest committed reading (t, index), for the late/regression/jump
    /// flags. Filled from the store on first sight of a meter.
    latest: HashMap<MeterId, (Timestamp, f64)>,
}

/// A rejected message or part of one, before it is written.
struct Reject {
    topic: String,
    reason: &'static str,
    detail: String,
    payload: Vec<u8>,
}

/// A message that passed the message-level checks.
struct Accepted {
    topic: String,
    payload_index: usize,
    meter: Arc<Meter>,
    decoded: Decoded,
}

impl Writer {
    pub fn new(store: Store, cfg: IngestConfig, prefix: String) -> Self {
        let rules = Rules {
            max_future: chrono::Duration::minutes(i64::from(cfg.max_future_min)),
            default_customer_max_flow_m3h: cfg.default_customer_max_flow_m3h,
        };
        Self {
            store,
            cfg,
            prefix,
            rules,
            meters: HashMap::new(),
            latest: HashMap::new(),
        }
    }

    /// Loads the registry into memory so the first messages need no look-ups.
    pub async fn preload(&mut self) -> Result<usize, StoreError> {
        for m in self.store.all_meters().await? {
            self.meters.insert(m.id.clone(), Arc::new(m));
        }
        Ok(self.meters.len())
    }

    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Publish>,
        acks: mpsc::UnboundedSender<Publish>,
        sink: mpsc::Sender<Stored>,
    ) {
        match self.preload().await {
            Ok(n) => tracing::info!(meters = n, "registry loaded"),
            Err(e) => {
                tracing::warn!(error = %e, "registry not preloaded; meters are looked up as they come")
            }
        }
        let linger = Duration::from_millis(self.cfg.batch_linger_ms);
        while let Some(first) = rx.recv().await {
            let deadline = tokio::time::Instant::now() + linger;
            let mut size = estimate_readings(&first);
            let mut batch = vec![first];
            while size < self.cfg.batch_max_readings {
                let next = match rx.try_recv() {
                    Ok(p) => Some(p),
                    Err(_) if linger.is_zero() => None,
                    Err(_) => tokio::time::timeout_at(deadline, rx.recv())
                        .await
                        .ok()
                        .flatten(),
                };
                let Some(p) = next else { break };
                size += estimate_readings(&p);
                batch.push(p);
            }
            let messages: Vec<(String, Vec<u8>)> = batch
                .iter()
                .map(|p| (p.topic.clone(), p.payload.to_vec()))
                .collect();
            let stored = self.process_with_retry(&messages).await;
            // Everything in the batch is now durable: acknowledge in the order received.
            for p in batch {
                if acks.send(p).is_err() {
                    tracing::debug!("connection task gone; the broker will redeliver");
                }
            }
            if !stored.is_empty() && sink.send(stored).await.is_err() {
                tracing::debug!("detection stopped; readings are stored, not analysed");
            }
        }
    }

    /// Processes a batch, retrying with backoff while the store is unavailable. The
    /// batch stays in memory and unacknowledged meanwhile; the bounded channel in
    /// front of the writer then fills and the broker keeps the rest.
    async fn process_with_retry(&mut self, messages: &[(String, Vec<u8>)]) -> Stored {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.process(messages, Utc::now()).await {
                Ok((_, stored)) => return stored,
                Err(e) => {
                    metrics::counter!("leakwatch_ingest_store_errors_total").increment(1);
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "store unavailable; holding the batch and retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn meter(&mut self, id: &MeterId) -> Result<Option<Arc<Meter>>, StoreError> {
        if let Some(m) = self.meters.get(id) {
            return Ok(Some(m.clone()));
        }
        let found = self.store.get_meter(id).await?.map(Arc::new);
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
        received_at: Timestamp,
    ) -> Result<(BatchOutcome, Stored), StoreError> {
        let started = Instant::now();
        let mut rejects = Vec::new();
        let mut accepted: Vec<Accepted> = Vec::new();
        for (i, (topic, payload)) in messages.iter().enumerate() {
            let decoded = match leakwatch_wire::decode(&self.prefix, topic, payload) {
                Ok(d) => d,
                Err(e) => {
                    rejects.push(reject(topic, payload, e.reason(), e.to_string()));
                    continue;
                }
            };
            let up = &decoded.uplink;
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
                        installed_at: None,
                        max_flow_m3h: None,
                    };
                    self.store.upsert_meters(std::slice::from_ref(&m)).await?;
                    tracing::info!(meter_id = %m.id, district_id = %m.district, "registered unknown meter");
                    let m = Arc::new(m);
                    self.meters.insert(m.id.clone(), m.clone());
                    m
                }
                None => {
                    let detail = format!("meter {} is not in the registry", up.meter);
                    rejects.push(reject(topic, payload, "unknown_meter", detail));
                    continue;
                }
            };
            if meter.district != up.district {
                let detail = format!(
                    "meter {} belongs to district {}, not {}",
                    meter.id, meter.district, up.district
                );
                rejects.push(reject(topic, payload, "district_mismatch", detail));
                continue;
            }
            accepted.push(Accepted {
                topic: topic.clone(),
                payload_index: i,
                meter,
                decoded,
            });
        }

        // Latest readings of meters seen for the first time, in one query.
        let missing: Vec<MeterId> = accepted
            .iter()
            .map(|a| a.meter.id.clone())
            .filter(|id| !self.latest.contains_key(id))
            .collect::<std::collections::HashSet<_>>()
            .into_iter()
            .collect();
        let mut overlay: HashMap<MeterId, Option<(Timestamp, f64)>> = HashMap::new();
        if !missing.is_empty() {
            let found = self.store.latest_readings(&missing).await?;
            for id in missing {
                overlay.insert(id.clone(), found.get(&id).copied());
            }
        }

        let mut rows: Vec<(Reading, ReadingFlags)> = Vec::new();
        // The meter of each row, for detection once the rows are committed.
        let mut row_meters: Vec<Arc<Meter>> = Vec::new();
        let mut flagged = [0u64; 3];
        for a in &mut accepted {
            let mut problems: Vec<(String, &'static str, String)> = a
                .decoded
                .rejected
                .iter()
                .map(|r| (r.item.clone(), r.reason, r.detail.clone()))
                .collect();
            let latest = overlay
                .entry(a.meter.id.clone())
                .or_insert_with(|| self.latest.get(&a.meter.id).copied());
            let mut readings: Vec<Reading> = a.decoded.uplink.readings.drain(..).collect();
            readings.sort_by_key(|r| r.t);
            for r in readings {
                match judge(&self.rules, &a.meter, latest, &r, received_at) {
                    Ok(flags) => {
                        for (bit, n) in [
                            ReadingFlags::LATE,
                            ReadingFlags::COUNTER_REGRESSION,
                            ReadingFlags::JUMP,
                        ]
                        .iter()
                        .zip(flagged.iter_mut())
                        {
                            if flags.0 & bit != 0 {
                                *n += 1;
                            }
                        }
                        row_meters.push(a.meter.clone());
                        rows.push((r, flags));
                    }
                    Err(refusal) => {
                        problems.push((
                            format!("reading at {}", r.t.to_rfc3339()),
                            refusal.reason,
                            refusal.detail,
                        ));
                    }
                }
            }
            if let Some((_, first_reason, _)) = problems.first() {
                let detail = format!(
                    "{} item(s) rejected, the rest stored: {}",
                    problems.len(),
                    problems
                        .iter()
                        .take(REJECTED_DETAIL_MAX_ITEMS)
                        .map(|(item, reason, detail)| format!("{item}: {reason}: {detail}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                let payload = &messages[a.payload_index].1;
                rejects.push(reject(&a.topic, payload, first_reason, detail));
            }
        }

        let outcome = self.store.insert_batch(&rows, received_at).await?;
        let events: Vec<(Arc<Meter>, MeterEvent)> = accepted
            .iter()
            .flat_map(|a| {
                a.decoded
                    .uplink
                    .events
                    .iter()
                    .map(|e| (a.meter.clone(), e.clone()))
            })
            .collect();
        if !events.is_empty() {
            let plain: Vec<MeterEvent> = events.iter().map(|(_, e)| e.clone()).collect();
            self.store.insert_events(&plain).await?;
        }
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
        }
        // Committed: the overlay becomes the truth.
        for (id, latest) in overlay {
            if let Some(l) = latest {
                self.latest.insert(id, l);
            }
        }

        for r in &rejects {
            metrics::counter!("leakwatch_dead_letters_total", "reason" => r.reason).increment(1);
            tracing::warn!(topic = %r.topic, reason = r.reason, detail = %r.detail, "message dead-lettered");
        }
        metrics::counter!("leakwatch_ingest_messages_total", "result" => "accepted")
            .increment(accepted.len() as u64);
        metrics::counter!("leakwatch_ingest_messages_total", "result" => "rejected")
            .increment((messages.len() - accepted.len()) as u64);
        for (outcome_label, n) in [
            ("inserted", outcome.inserted),
            ("duplicate", outcome.duplicates),
            ("conflict", outcome.conflicts),
        ] {
            metrics::counter!("leakwatch_ingest_readings_total", "outcome" => outcome_label)
                .increment(n);
        }
        for (flag, n) in ["late", "counter_regression", "jump"].iter().zip(flagged) {
            metrics::counter!("leakwatch_ingest_flagged_readings_total", "flag" => *flag)
                .increment(n);
        }
        metrics::histogram!("leakwatch_ingest_batch_seconds")
            .record(started.elapsed().as_secs_f64());

        let readings: Vec<(Arc<Meter>, Reading)> = row_meters
            .into_iter()
            .zip(rows)
            .map(|(m, (r, _))| (m, r))
            .collect();
        // The order received (message by message, each message's readings in time
        // order): the detectors then see the same sequence however the stream was
        // cut into batches, so they raise the same alerts (event time is theirs).
        let stored = Stored { readings, events };
        Ok((
            BatchOutcome {
                messages: messages.len(),
                inserted: outcome.inserted,
                duplicates: outcome.duplicates,
                conflicts: outcome.conflicts,
                dead_letters: rejects.len(),
            },
            stored,
        ))
    }
}

/// Readings a message probably carries, from its size (a compact reading is about
/// 40-45 bytes); only used to bound a batch.
fn estimate_readings(p: &Publish) -> usize {
    p.payload.len() / 40 + 1
}

fn reject(topic: &str, payload: &[u8], reason: &'static str, detail: String) -> Reject {
    Reject {
        topic: topic.to_owned(),
        reason,
        detail,
        payload: dead_letter_payload(payload).to_vec(),
    }
}
