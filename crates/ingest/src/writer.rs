//! The writing half of the ingestor: validate, store, acknowledge, pass on.
//!
//! Store errors are of two kinds ([`StoreError::is_data_error`]): one the data
//! causes (a value or constraint the database refuses) can never succeed again, so the
//! batch is split until the offending message is alone, which is dead-lettered as
//! `store_rejected` with the error, and the rest is stored; any other (the database
//! gone, a time-out) is retried with backoff, holding the batch. Dead letters are
//! written once per message (a digest of it), so a retry after a partial commit, or a
//! redelivery, does not write them again.
//!
//! The registry is cached and kept current while running: a [`RegistryFeed`] (LISTEN
//! on PostgreSQL, polling on SQLite) brings every change, whoever made it, before the
//! next batch is judged.

use crate::judge::{Rules, judge};
use crate::{IngestConfig, Stored, UnknownMeters};
use chrono::Utc;
use leakwatch_core::{
    GeoPoint, Meter, MeterEvent, MeterId, MeterKind, MeterStatus, Reading, Timestamp,
};
use leakwatch_store::{
    KeyedDeadLetter, NewDeadLetter, ReadingFlags, Registered, RegistryFeed, RegistryUpdate, Store,
    StoreError, dead_letter_key,
};
use leakwatch_wire::{Decoded, REJECTED_DETAIL_MAX_ITEMS, dead_letter_payload};
use rumqttc::Publish;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
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
    /// When the registry first knew each meter (bounds how old its readings may be).
    registered: HashMap<MeterId, Timestamp>,
    /// Registry changes waiting to be applied before the next batch.
    registry_updates: Option<mpsc::Receiver<RegistryUpdate>>,
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
    /// Digest of the whole message ([`dead_letter_key`]).
    key: String,
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
            before_installation: chrono::Duration::days(i64::from(
                cfg.max_days_before_installation,
            )),
            before_registration: chrono::Duration::days(i64::from(
                cfg.max_days_before_registration,
            )),
        };
        Self {
            store,
            cfg,
            prefix,
            rules,
            meters: HashMap::new(),
            registered: HashMap::new(),
            registry_updates: None,
            latest: HashMap::new(),
        }
    }

    /// Loads the registry into memory so the first messages need no look-ups.
    pub async fn preload(&mut self) -> Result<usize, StoreError> {
        let all = self.store.all_meters().await?;
        let ids: Vec<MeterId> = all.iter().map(|m| m.id.clone()).collect();
        let registered = self.store.registered_meters(&ids).await?;
        self.apply_registry(RegistryUpdate::Reload(registered));
        Ok(self.meters.len())
    }

    /// Follows registry changes from now on: each is applied before the next batch.
    /// Returns the task following the feed (it ends when the writer is dropped).
    pub fn follow_registry(&mut self, mut feed: RegistryFeed) -> tokio::task::JoinHandle<()> {
        let (tx, rx) = mpsc::channel(16);
        self.registry_updates = Some(rx);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                match feed.next().await {
                    Ok(update) => {
                        backoff = Duration::from_millis(200);
                        if tx.send(update).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        if tx.is_closed() {
                            return;
                        }
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                            "cannot follow registry changes; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        })
    }

    /// Applies the registry changes that have arrived; returns how many meters changed.
    pub fn apply_registry_updates(&mut self) -> usize {
        let mut pending = Vec::new();
        if let Some(rx) = &mut self.registry_updates {
            while let Ok(u) = rx.try_recv() {
                pending.push(u);
            }
        }
        pending.into_iter().map(|u| self.apply_registry(u)).sum()
    }

    /// Applies one registry update to the cache; returns how many meters it carried.
    pub fn apply_registry(&mut self, update: RegistryUpdate) -> usize {
        let list = match update {
            RegistryUpdate::Reload(all) => {
                self.meters.clear();
                self.registered.clear();
                all
            }
            RegistryUpdate::Changed(changed) => changed,
        };
        let n = list.len();
        for Registered {
            meter,
            registered_at,
        } in list
        {
            if let Some(old) = self.meters.get(&meter.id)
                && old.district != meter.district
            {
                tracing::info!(meter_id = %meter.id, from = %old.district, to = %meter.district,
                    "meter moved to another district");
            }
            self.registered.insert(meter.id.clone(), registered_at);
            self.meters.insert(meter.id.clone(), Arc::new(meter));
        }
        if n > 0 {
            metrics::counter!("leakwatch_registry_updates_total").increment(n as u64);
        }
        n
    }

    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Publish>,
        acks: mpsc::UnboundedSender<Publish>,
        sink: mpsc::Sender<Stored>,
    ) {
        // The feed's first update is the whole registry: wait a little for it, so the
        // first messages need no look-ups (after that, meters are looked up as they
        // come until it arrives).
        let poll = Duration::from_millis(self.cfg.registry_poll_ms);
        let feed = self.follow_registry(self.store.registry_feed(poll));
        if let Some(updates) = &mut self.registry_updates {
            match tokio::time::timeout(Duration::from_secs(10), updates.recv()).await {
                Ok(Some(update)) => {
                    let n = self.apply_registry(update);
                    tracing::info!(meters = n, "registry loaded; following its changes");
                }
                _ => tracing::warn!("registry not loaded yet; meters are looked up as they come"),
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
            self.apply_registry_updates();
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
        feed.abort();
    }

    /// Processes a batch until it is stored: a store error the data causes splits the
    /// batch until the offending message is alone and dead-letters it (`store_rejected`,
    /// with the error); any other error is retried with backoff. The batch stays in
    /// memory and unacknowledged meanwhile; the bounded channel in front of the writer
    /// then fills and the broker keeps the rest.
    ///
    /// The readings come back in the order their messages were received (a split
    /// batch's parts in turn), never re-sorted: the detectors must see the same
    /// sequence however the stream was cut into batches.
    pub async fn process_with_retry(&mut self, messages: &[(String, Vec<u8>)]) -> Stored {
        self.process_resilient(messages).await
    }

    fn process_resilient<'a>(
        &'a mut self,
        messages: &'a [(String, Vec<u8>)],
    ) -> Pin<Box<dyn Future<Output = Stored> + Send + 'a>> {
        Box::pin(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match self.process(messages, Utc::now()).await {
                    Ok((_, stored)) => return stored,
                    Err(e) if e.is_data_error() => {
                        metrics::counter!("leakwatch_ingest_store_errors_total", "kind" => "data")
                            .increment(1);
                        if messages.len() > 1 {
                            // Split to find the message at fault; the rest is stored.
                            let (a, b) = messages.split_at(messages.len() / 2);
                            let mut stored = self.process_resilient(a).await;
                            let more = self.process_resilient(b).await;
                            stored.extend(more);
                            return stored;
                        }
                        self.refuse(&messages[0], &e).await;
                        return Stored::default();
                    }
                    Err(e) => {
                        metrics::counter!("leakwatch_ingest_store_errors_total", "kind" => "transient")
                            .increment(1);
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                            "store unavailable; holding the batch and retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
    }

    /// Dead-letters a message the store refused, with the error. Should even the dead
    /// letter be refused (its topic or text holding what the database cannot store), it
    /// is written again without payload and with its text escaped; should that fail
    /// too, the message is dropped, logged at ERROR and counted.
    async fn refuse(&mut self, (topic, payload): &(String, Vec<u8>), error: &StoreError) {
        let received_at = Utc::now();
        let mut r = reject(
            topic,
            payload,
            "store_rejected",
            format!("the store refused this message: {error}"),
        );
        let mut escaped = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self
                .write_dead_letters(std::slice::from_ref(&r), received_at)
                .await
            {
                Ok(_) => break,
                Err(e) if e.is_data_error() && !escaped => {
                    escaped = true;
                    r.topic = r.topic.escape_default().to_string();
                    r.detail = r.detail.escape_default().to_string();
                    r.payload.clear();
                }
                Err(e) if e.is_data_error() => {
                    metrics::counter!("leakwatch_ingest_dropped_total").increment(1);
                    tracing::error!(topic = %topic.escape_default(), error = %e,
                        "the store refused a message and its dead letter; message dropped");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot dead-letter a refused message; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        metrics::counter!("leakwatch_dead_letters_total", "reason" => "store_rejected")
            .increment(1);
        tracing::warn!(topic = %r.topic, error = %error, "message refused by the store; dead-lettered");
    }

    /// Writes dead letters once each (by digest) within the per-meter bound.
    async fn write_dead_letters(
        &self,
        rejects: &[Reject],
        received_at: Timestamp,
    ) -> Result<u64, StoreError> {
        let items: Vec<KeyedDeadLetter> = rejects
            .iter()
            .map(|r| KeyedDeadLetter {
                letter: NewDeadLetter {
                    topic: r.topic.clone(),
                    reason: r.reason.to_owned(),
                    detail: r.detail.clone(),
                    payload: r.payload.clone(),
                    received_at,
                },
                key: r.key.clone(),
                meter_id: topic_meter(&self.prefix, &r.topic),
            })
            .collect();
        self.store
            .dead_letters_once(&items, self.cfg.dead_letter_per_meter_max)
            .await
    }

    async fn meter(&mut self, id: &MeterId) -> Result<Option<Arc<Meter>>, StoreError> {
        if let Some(m) = self.meters.get(id) {
            return Ok(Some(m.clone()));
        }
        let Some(found) = self.store.registered_meter(id).await? else {
            return Ok(None);
        };
        let m = Arc::new(found.meter);
        self.registered.insert(id.clone(), found.registered_at);
        self.meters.insert(id.clone(), m.clone());
        Ok(Some(m))
    }

    /// Validates every message, stores the good readings in one transaction and the
    /// rejects in the dead-letter store. Returns the committed readings.
    pub async fn process(
        &mut self,
        messages: &[(String, Vec<u8>)],
        received_at: Timestamp,
    ) -> Result<(BatchOutcome, Stored), StoreError> {
        let started = Instant::now();
        let Prepared {
            rows,
            row_meters,
            events,
            event_after,
            rejects,
            overlay,
            flagged,
            accepted: accepted_count,
        } = self.prepare(messages, received_at).await?;
        let outcome = self.store.insert_batch(&rows, received_at).await?;
        if !events.is_empty() {
            let plain: Vec<MeterEvent> = events.iter().map(|(_, e)| e.clone()).collect();
            self.store.insert_events(&plain).await?;
        }
        self.write_dead_letters(&rejects, received_at).await?;
        // Committed: the overlay becomes the truth.
        self.committed(overlay);
        self.count_batch(
            messages.len(),
            accepted_count,
            &rejects,
            &outcome,
            flagged,
            started,
        );
        Ok(outcome_and_stored(
            messages.len(),
            outcome,
            rejects.len(),
            rows,
            row_meters,
            events,
            event_after,
        ))
    }

    /// The first half of [`Writer::process`], for a caller that commits the rows in
    /// a transaction of its own (the scaled-out worker): decodes, checks and judges
    /// the messages, reading only what the judge needs; writes nothing. Once the
    /// caller has committed, it hands the overlay back ([`Writer::committed`]).
    pub async fn prepare(
        &mut self,
        messages: &[(String, Vec<u8>)],
        received_at: Timestamp,
    ) -> Result<Prepared, StoreError> {
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
                    self.registered.insert(m.id.clone(), received_at);
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
        // Rows stored up to and including each accepted message.
        let mut rows_after: Vec<usize> = Vec::with_capacity(accepted.len());
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
            let registered = self.registered.get(&a.meter.id).copied();
            let mut readings: Vec<Reading> = a.decoded.uplink.readings.drain(..).collect();
            readings.sort_by_key(|r| r.t);
            for r in readings {
                match judge(&self.rules, &a.meter, registered, latest, &r, received_at) {
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
            rows_after.push(rows.len());
        }

        let (events, event_after): (Vec<(Arc<Meter>, MeterEvent)>, Vec<usize>) = accepted
            .iter()
            .zip(&rows_after)
            .flat_map(|(a, &after)| {
                a.decoded
                    .uplink
                    .events
                    .iter()
                    .map(move |e| ((a.meter.clone(), e.clone()), after))
            })
            .unzip();
        Ok(Prepared {
            rows,
            row_meters,
            events,
            event_after,
            rejects,
            overlay,
            flagged,
            accepted: accepted.len(),
        })
    }

    /// After the caller committed a [`Prepared`] batch: its meters' latest readings
    /// become the truth for the next judgements.
    pub fn committed(&mut self, overlay: HashMap<MeterId, Option<(Timestamp, f64)>>) {
        for (id, latest) in overlay {
            if let Some(l) = latest {
                self.latest.insert(id, l);
            }
        }
    }

    /// Writes a prepared batch's dead letters (once per message digest, so a batch
    /// redone after a crash writes them once).
    pub async fn write_rejects(
        &self,
        p: &Prepared,
        received_at: Timestamp,
    ) -> Result<u64, StoreError> {
        self.write_dead_letters(&p.rejects, received_at).await
    }

    fn count_batch(
        &self,
        messages: usize,
        accepted: usize,
        rejects: &[Reject],
        outcome: &leakwatch_store::InsertOutcome,
        flagged: [u64; 3],
        started: Instant,
    ) {
        for r in rejects {
            metrics::counter!("leakwatch_dead_letters_total", "reason" => r.reason).increment(1);
            tracing::warn!(topic = %r.topic, reason = r.reason, detail = %r.detail, "message dead-lettered");
        }
        metrics::counter!("leakwatch_ingest_messages_total", "result" => "accepted")
            .increment(accepted as u64);
        metrics::counter!("leakwatch_ingest_messages_total", "result" => "rejected")
            .increment((messages - accepted) as u64);
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
    }
}

/// A batch decoded, checked and judged, not yet written ([`Writer::prepare`]).
pub struct Prepared {
    /// The readings to store, in the order received, with their flags.
    pub rows: Vec<(Reading, ReadingFlags)>,
    /// The meter of each row.
    pub row_meters: Vec<Arc<Meter>>,
    pub events: Vec<(Arc<Meter>, MeterEvent)>,
    /// For each event, the rows received before it ([`Stored::event_after`]).
    pub event_after: Vec<usize>,
    rejects: Vec<Reject>,
    /// The meters' latest readings once the rows are committed.
    pub overlay: HashMap<MeterId, Option<(Timestamp, f64)>>,
    flagged: [u64; 3],
    accepted: usize,
}

impl Prepared {
    /// Messages dead-lettered, whole or in part.
    pub fn rejected(&self) -> usize {
        self.rejects.len()
    }

    /// The committed readings and events, for detection, in the order received.
    pub fn stored(&self) -> Stored {
        Stored {
            readings: self
                .row_meters
                .iter()
                .cloned()
                .zip(self.rows.iter().map(|(r, _)| r.clone()))
                .collect(),
            events: self.events.clone(),
            event_after: self.event_after.clone(),
        }
    }
}

fn outcome_and_stored(
    messages: usize,
    outcome: leakwatch_store::InsertOutcome,
    dead_letters: usize,
    rows: Vec<(Reading, ReadingFlags)>,
    row_meters: Vec<Arc<Meter>>,
    events: Vec<(Arc<Meter>, MeterEvent)>,
    event_after: Vec<usize>,
) -> (BatchOutcome, Stored) {
    let readings: Vec<(Arc<Meter>, Reading)> = row_meters
        .into_iter()
        .zip(rows)
        .map(|(m, (r, _))| (m, r))
        .collect();
    // The order received (message by message, each message's readings in time
    // order): the detectors then see the same sequence however the stream was
    // cut into batches, so they raise the same alerts (event time is theirs).
    let stored = Stored {
        readings,
        events,
        event_after,
    };
    (
        BatchOutcome {
            messages,
            inserted: outcome.inserted,
            duplicates: outcome.duplicates,
            conflicts: outcome.conflicts,
            dead_letters,
        },
        stored,
    )
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
        key: dead_letter_key(topic, reason, payload),
    }
}

/// The meter a meters' topic names (`{prefix}/{district}/{meter}/up`), if it does.
fn topic_meter(prefix: &str, topic: &str) -> Option<MeterId> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let (_district, meter, up, end) = (parts.next()?, parts.next()?, parts.next()?, parts.next());
    (up == "up" && end.is_none())
        .then(|| MeterId::parse(meter).ok())
        .flatten()
}

/// Dead-letter retention: every `every`, drops dead letters older than
/// `ingest.dead_letter_max_age_days` and all but the newest
/// `ingest.dead_letter_max_count`, until `shutdown`.
pub async fn retain_dead_letters(
    store: Store,
    cfg: IngestConfig,
    every: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                let older_than = if cfg.dead_letter_max_age_days == 0 {
                    chrono::DateTime::<Utc>::MIN_UTC
                } else {
                    Utc::now() - chrono::Duration::days(i64::from(cfg.dead_letter_max_age_days))
                };
                match store.prune_dead_letters(older_than, cfg.dead_letter_max_count).await {
                    Ok(p) if p.by_age + p.by_count > 0 => {
                        metrics::counter!("leakwatch_dead_letters_pruned_total")
                            .increment(p.by_age + p.by_count);
                        tracing::info!(by_age = p.by_age, by_count = p.by_count,
                            "dead-letter retention");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "dead-letter retention failed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use leakwatch_core::MeterRecord;
    use leakwatch_store::testing::{PG_ENV, drop_pg_database, fresh_pg_database};

    /// A store per backend: SQLite in memory, and a fresh PostgreSQL database when
    /// `LEAKWATCH_TEST_PG` is set.
    async fn stores() -> Vec<(Store, Option<(String, String)>)> {
        let mut out = vec![(Store::connect("sqlite::memory:").await.unwrap(), None)];
        if let Ok(admin) = std::env::var(PG_ENV)
            && !admin.is_empty()
        {
            let url = fresh_pg_database(&admin).await.unwrap();
            out.push((Store::connect(&url).await.unwrap(), Some((admin, url))));
        }
        out
    }

    async fn done(store: Store, pg: Option<(String, String)>) {
        store.close().await;
        if let Some((admin, url)) = pg {
            drop_pg_database(&admin, &url).await;
        }
    }

    fn meter(id: &str, district: &str, installed_at: Option<&str>) -> Meter {
        MeterRecord {
            meter_id: id.into(),
            district_id: district.into(),
            kind: "customer".into(),
            lat: 43.77,
            lon: 11.25,
            report_every_h: Some(1),
            status: None,
            installed_at: installed_at.map(Into::into),
            max_flow_m3h: Some(6.0),
        }
        .to_meter()
        .unwrap()
    }

    fn msg(district: &str, meter: &str, t: &str, vol: f64) -> (String, Vec<u8>) {
        (
            format!("gas/{district}/{meter}/up"),
            format!(r#"{{"v":1,"meter":"{meter}","readings":[{{"t":"{t}","vol":{vol}}}]}}"#)
                .into_bytes(),
        )
    }

    async fn sql(store: &Store, statement: &str) {
        let statement = sqlx::AssertSqlSafe(statement.to_owned());
        match store {
            Store::Postgres(p) => {
                sqlx::raw_sql(statement).execute(p.pool()).await.unwrap();
            }
            Store::Sqlite(pool) => {
                sqlx::raw_sql(statement).execute(pool).await.unwrap();
            }
        };
    }

    fn now() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
    }

    #[tokio::test]
    async fn a_message_the_store_refuses_is_dead_lettered_and_the_rest_stored() {
        for (store, pg) in stores().await {
            store
                .upsert_meters(&[meter("M1", "D1", None), meter("M2", "D1", None)])
                .await
                .unwrap();
            // A rule the database holds and the ingest does not know: a permanent,
            // data-caused error for exactly one message.
            match &store {
                Store::Postgres(_) => {
                    sql(
                        &store,
                        "ALTER TABLE readings ADD CONSTRAINT no_666 CHECK (vol <> 666) NOT VALID",
                    )
                    .await
                }
                Store::Sqlite(_) => {
                    sql(
                        &store,
                        "CREATE TRIGGER no_666 BEFORE INSERT ON readings WHEN NEW.vol = 666 \
                                 BEGIN SELECT RAISE(ABORT, 'vol 666 refused'); END",
                    )
                    .await
                }
            }
            let mut writer = Writer::new(store.clone(), IngestConfig::default(), "gas".into());
            let batch = vec![
                msg("D1", "M1", "2026-11-26T00:00:00Z", 1.0),
                msg("D1", "M2", "2026-11-26T00:00:00Z", 666.0),
                msg("D1", "M1", "2026-11-26T01:00:00Z", 1.5),
                msg("D1", "M2", "2026-11-26T02:00:00Z", 2.0),
            ];
            let stored =
                tokio::time::timeout(Duration::from_secs(30), writer.process_with_retry(&batch))
                    .await
                    .expect("a permanent error must not be retried forever");
            assert_eq!(stored.readings.len(), 3, "{}", store.backend());
            assert_eq!(store.count_readings().await.unwrap(), 3);
            let dead = store.list_dead_letters(10).await.unwrap();
            assert_eq!(dead.len(), 1, "{dead:?}");
            assert_eq!(dead[0].reason, "store_rejected");
            assert_eq!(dead[0].topic, "gas/D1/M2/up");
            assert_eq!(dead[0].payload, batch[1].1);
            assert!(
                dead[0].detail.contains("the store refused this message"),
                "{}",
                dead[0].detail
            );
            // In the order received, whatever the splitting did.
            let order: Vec<_> = stored
                .readings
                .iter()
                .map(|(m, r)| (m.id.to_string(), r.vol))
                .collect();
            let want = [("M1", 1.0), ("M1", 1.5), ("M2", 2.0)].map(|(m, v)| (m.to_owned(), v));
            assert_eq!(order, want);
            done(store, pg).await;
        }
    }

    #[tokio::test]
    async fn dead_letters_are_written_once_per_message() {
        for (store, pg) in stores().await {
            store
                .upsert_meters(&[meter("M1", "D1", None)])
                .await
                .unwrap();
            let mut writer = Writer::new(store.clone(), IngestConfig::default(), "gas".into());
            let batch = vec![
                ("gas/D1/M1/up".to_owned(), b"{not json".to_vec()),
                msg("D1", "M1", "2027-01-01T00:00:00Z", 1.0),
                msg("D1", "M1", "2026-11-26T00:00:00Z", 1.0),
            ];
            let (first, _) = writer.process(&batch, now()).await.unwrap();
            assert_eq!(first.dead_letters, 2);
            // The same messages again (a redelivery, or a retry after the readings
            // committed and the dead letters did not): no second copy.
            writer.process(&batch, now()).await.unwrap();
            assert_eq!(
                store.count_dead_letters().await.unwrap(),
                2,
                "{}",
                store.backend()
            );
            done(store, pg).await;
        }
    }

    /// A transient error between the readings' commit and the dead letters' (a
    /// partial commit) is retried, and the retry writes each dead letter once.
    #[tokio::test]
    async fn a_transient_error_is_retried_and_a_partial_commit_not_repeated() {
        let Some((store, pg)) = stores().await.into_iter().find(|(_, pg)| pg.is_some()) else {
            eprintln!("skipped: {PG_ENV} not set");
            return;
        };
        store
            .upsert_meters(&[meter("M1", "D1", None)])
            .await
            .unwrap();
        sql(
            &store,
            "CREATE TABLE chaos (fail BOOLEAN NOT NULL);
             INSERT INTO chaos VALUES (TRUE);
             CREATE FUNCTION chaos_dl() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF (SELECT fail FROM chaos) THEN
                     RAISE EXCEPTION 'injected serialization failure' USING ERRCODE = '40001';
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER chaos_dl BEFORE INSERT ON dead_letters
                 FOR EACH ROW EXECUTE FUNCTION chaos_dl();",
        )
        .await;
        let batch = vec![
            msg("D1", "M1", "2026-11-26T00:00:00Z", 1.0),
            ("gas/D1/M1/up".to_owned(), b"{not json".to_vec()),
        ];
        let mut writer = Writer::new(store.clone(), IngestConfig::default(), "gas".into());
        let task = tokio::spawn(async move { writer.process_with_retry(&batch).await });
        // The readings are committed; the dead letter keeps failing: held, retried.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!task.is_finished(), "a transient error must be retried");
        assert_eq!(store.count_readings().await.unwrap(), 1);
        assert_eq!(store.count_dead_letters().await.unwrap(), 0);
        sql(&store, "UPDATE chaos SET fail = FALSE").await;
        let stored = tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("retried once the error cleared")
            .unwrap();
        assert_eq!(stored.readings.len(), 1);
        assert_eq!(store.count_readings().await.unwrap(), 1);
        let dead = store.list_dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].reason, "not_json");
        done(store, pg).await;
    }

    #[tokio::test]
    async fn a_meter_moved_while_running_is_checked_against_its_new_district() {
        for (store, pg) in stores().await {
            store
                .upsert_meters(&[meter("M1", "D1", None)])
                .await
                .unwrap();
            let mut writer = Writer::new(store.clone(), IngestConfig::default(), "gas".into());
            let mut feed = store.registry_feed(Duration::from_millis(20));
            writer.apply_registry(feed.next().await.unwrap());
            let (out, _) = writer
                .process(&[msg("D1", "M1", "2026-11-26T00:00:00Z", 1.0)], now())
                .await
                .unwrap();
            assert_eq!(out.inserted, 1);
            // Another process moves it (the same store here; a LISTEN or a poll either way).
            let other = store.clone();
            other
                .upsert_meters(&[meter("M1", "D2", None)])
                .await
                .unwrap();
            let update = tokio::time::timeout(Duration::from_secs(10), feed.next())
                .await
                .expect("the change reaches the feed")
                .unwrap();
            assert!(
                matches!(&update, RegistryUpdate::Changed(m) if m.len() == 1 && m[0].meter.district.as_str() == "D2"),
                "{update:?}"
            );
            writer.apply_registry(update);
            let (out, _) = writer
                .process(
                    &[
                        msg("D1", "M1", "2026-11-26T01:00:00Z", 1.1),
                        msg("D2", "M1", "2026-11-26T02:00:00Z", 1.2),
                    ],
                    now(),
                )
                .await
                .unwrap();
            assert_eq!(
                (out.inserted, out.dead_letters),
                (1, 1),
                "{}",
                store.backend()
            );
            let dead = store.list_dead_letters(1).await.unwrap();
            assert_eq!(dead[0].reason, "district_mismatch");
            // The feed holds one of the pool's connections (LISTEN) until dropped.
            drop(feed);
            done(store, pg).await;
        }
    }

    #[tokio::test]
    async fn readings_before_installation_or_long_before_registration_are_refused() {
        for (store, pg) in stores().await {
            store
                .upsert_meters(&[
                    meter("M1", "D1", Some("2026-01-01T00:00:00Z")),
                    meter("M2", "D1", None),
                ])
                .await
                .unwrap();
            let mut writer = Writer::new(store.clone(), IngestConfig::default(), "gas".into());
            let (out, _) = writer
                .process(
                    &[
                        msg("D1", "M1", "1970-01-01T00:00:00Z", 1.0),
                        msg("D1", "M2", "1970-01-01T00:00:00Z", 1.0),
                        // Back-filled history a few years old is kept.
                        msg("D1", "M2", "2021-06-01T00:00:00Z", 2.0),
                    ],
                    now(),
                )
                .await
                .unwrap();
            assert_eq!(
                (out.inserted, out.dead_letters),
                (1, 2),
                "{}",
                store.backend()
            );
            let mut reasons: Vec<String> = store
                .list_dead_letters(10)
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.reason)
                .collect();
            reasons.sort();
            assert_eq!(reasons, ["t_before_installation", "t_before_registration"]);
            done(store, pg).await;
        }
    }

    #[test]
    fn topics_name_their_meter() {
        assert_eq!(topic_meter("gas", "gas/D1/M1/up").unwrap().as_str(), "M1");
        assert_eq!(topic_meter("gas", "gas/D1/M1/down"), None);
        assert_eq!(topic_meter("gas", "gas/D1/M1/up/x"), None);
        assert_eq!(topic_meter("gas", "gaz/D1/M1/up"), None);
        assert_eq!(topic_meter("gas", "gas/D1/a b/up"), None);
    }
}
