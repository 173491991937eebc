//! `leakwatch worker`: partitions owned by lease, one fenced transaction per batch.
//!
//! The lease loop (every TTL/3) renews this worker's membership key and its partition
//! leases, counts the live workers, gives up partitions over its fair share
//! (`ceil(P / workers)`) and takes free or expired ones up to it. Each partition it
//! holds runs in a task of its own:
//!
//! 1. raise the partition's epoch in PostgreSQL to the lease's and load its checkpoint
//!    (last committed sequence); from then on no older owner can commit;
//! 2. restore the detectors of the partition's meters and districts from
//!    `detector_state` (committed with the sequence, so they match it exactly);
//! 3. open the log at the committed sequence + 1, and per batch: judge the messages
//!    (`ingest::Writer::prepare`), dead-letter the bad ones (once per digest), feed the
//!    readings to the detectors, and commit readings, events, changed detector state,
//!    alert steps, the last sequence and the watermark in one transaction that
//!    succeeds only for the current epoch; acknowledge the log after the commit.
//!
//! A batch the log delivers again (a crash between commit and acknowledgement) is
//! skipped by its sequence. A refused commit (stale epoch) ends the partition's task.

use leakwatch_core::{DistrictId, Finding, Meter, MeterId};
use leakwatch_detect::{DetectConfig, Engine, MeterInfo, Saved, Tick};
use leakwatch_ingest::{IngestConfig, Writer};
use leakwatch_log::lease::now_ms;
use leakwatch_log::{Lease, Leases, Log, PartitionReader, partition_of};
use leakwatch_store::Store;
use leakwatch_store::partitions::{AlertStep, CommitOutcome, PartitionCommit};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's name (lease owner; unique per process).
    pub owner: String,
    pub partitions: u32,
    /// The meters' topic prefix.
    pub prefix: String,
    /// Entries per batch, at most.
    pub batch_max: usize,
    /// How long a fetch waits for its first entry.
    pub fetch_wait: Duration,
    pub ingest: IngestConfig,
    pub detect: DetectConfig,
}

/// A partition task and its stop flag.
struct Owned {
    lease: Lease,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

/// Batches this process committed (arms the failpoints after
/// `LEAKWATCH_FAIL_AFTER_BATCHES` of them, so a crash test can place each fault).
static COMMITTED_BATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether the failpoint `name` is armed here; prints `FAILPOINT {name} ...` on stderr
/// the first time (what a crash test waits for before it signals the process).
fn failpoint_armed(name: &str, what: std::fmt::Arguments<'_>) -> bool {
    static SKIP: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let skip = *SKIP.get_or_init(|| {
        std::env::var("FAIL_POINTS")
            .is_ok_and(|v| v.contains("worker-"))
            .then(|| {
                std::env::var("LEAKWATCH_FAIL_AFTER_BATCHES")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            })
    });
    let Some(skip) = skip else { return false };
    if COMMITTED_BATCHES.load(Ordering::Relaxed) < skip {
        return false;
    }
    let named = std::env::var("FAIL_POINTS").is_ok_and(|v| v.contains(name));
    let mut seen = SEEN.lock().expect("not poisoned");
    if named && !seen.iter().any(|s| s == name) {
        seen.push(name.to_owned());
        eprintln!("FAILPOINT {name} {what} pid={}", std::process::id());
    }
    named
}

/// A failpoint whose action `return(MS)` holds the batch for MS milliseconds without
/// blocking the runtime (`sleep` would block a runtime thread, and with it whatever
/// task that thread held, such as the NATS connection).
async fn failpoint_pause(name: &str) {
    #[cfg(feature = "failpoints")]
    if let Some(ms) = fail::eval(name, |arg| arg.and_then(|a| a.parse::<u64>().ok())).flatten() {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Runs until `shutdown` resolves, then finishes each partition's batch in hand and
/// gives its leases up (the next owner starts at once instead of after the TTL).
pub async fn run<L: Log + Clone + 'static>(
    cfg: WorkerConfig,
    log: L,
    leases: Leases,
    store: Store,
    shutdown: impl Future<Output = ()> + Send,
) {
    let ttl = leases.ttl();
    let every = ttl / 3;
    let mut member: Option<Lease> = None;
    let mut owned: BTreeMap<u32, Owned> = BTreeMap::new();
    let mut releasing: Vec<(u32, Owned)> = Vec::new();
    let mut jobs: Option<(Lease, JoinHandle<()>)> = None;
    // Start the scan at a place of our own, so workers starting together do not all
    // race for partition 0 first.
    let start = partition_of(&cfg.owner, cfg.partitions);
    tokio::pin!(shutdown);
    loop {
        let now = now_ms();
        // Membership.
        let ok = match member.as_mut() {
            Some(m) => leases.renew(m, now).await.unwrap_or(false),
            None => false,
        };
        if !ok {
            member = leases
                .try_acquire(&format!("member.{}", cfg.owner), now)
                .await
                .ok()
                .flatten();
        }
        // Renew what we hold; a lost lease stops its task (its commits are fenced
        // anyway).
        let mut lost = Vec::new();
        for (p, o) in owned.iter_mut() {
            match leases.renew(&mut o.lease, now).await {
                Ok(true) if !o.task.is_finished() => {}
                Ok(true) => {
                    // The task ended (fenced or failed): give the lease up.
                    let _ = leases.release(&o.lease).await;
                    lost.push(*p);
                }
                Ok(false) => lost.push(*p),
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cannot renew a lease");
                    if o.lease.expires_ms <= now {
                        lost.push(*p);
                    }
                }
            }
        }
        for p in lost {
            if let Some(o) = owned.remove(&p) {
                o.stop.store(true, Ordering::Relaxed);
                tracing::warn!(partition = p, epoch = o.lease.epoch, "partition lease lost");
            }
        }
        // Partitions being handed over: their leases are kept until the batch in
        // hand is done (never awaited here: the lease loop must not stall), then given
        // up.
        let mut still = Vec::new();
        for (p, mut o) in releasing.drain(..) {
            if o.task.is_finished() {
                let _ = leases.release(&o.lease).await;
                tracing::info!(partition = p, "partition handed over (fair share)");
            } else {
                let _ = leases.renew(&mut o.lease, now).await;
                still.push((p, o));
            }
        }
        releasing = still;
        // Fair share.
        let workers = leases.live_members(now).await.map_or(1, |m| m.len().max(1));
        let share = (cfg.partitions as usize).div_ceil(workers);
        while owned.len() > share {
            let (&p, _) = owned.iter().next_back().expect("non-empty");
            let o = owned.remove(&p).expect("present");
            o.stop.store(true, Ordering::Relaxed);
            releasing.push((p, o));
        }
        for i in 0..cfg.partitions {
            if owned.len() >= share {
                break;
            }
            let p = (start + i) % cfg.partitions;
            if owned.contains_key(&p) || releasing.iter().any(|(r, _)| *r == p) {
                continue;
            }
            if let Ok(Some(lease)) = leases.try_acquire(&format!("p{p}"), now).await {
                tracing::info!(partition = p, epoch = lease.epoch, "partition taken");
                let stop = Arc::new(AtomicBool::new(false));
                let task = tokio::spawn(partition_task(
                    cfg.clone(),
                    log.clone(),
                    store.clone(),
                    p,
                    lease.epoch,
                    stop.clone(),
                ));
                owned.insert(p, Owned { lease, stop, task });
            }
        }
        // Periodic jobs under their own lease.
        jobs = periodic_jobs(jobs, &leases, &store, &cfg, now).await;
        metrics::gauge!("leakwatch_worker_partitions").set(owned.len() as f64);

        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    owned.extend(releasing);
    for o in owned.values() {
        o.stop.store(true, Ordering::Relaxed);
    }
    for (p, o) in owned {
        let _ = tokio::time::timeout(Duration::from_secs(10), o.task).await;
        let _ = leases.release(&o.lease).await;
        tracing::info!(partition = p, "partition released at shutdown");
    }
    if let Some((lease, task)) = jobs {
        task.abort();
        let _ = leases.release(&lease).await;
    }
    if let Some(m) = member {
        let _ = leases.release(&m).await;
    }
    tracing::info!("worker stopped");
}

/// Holds the `jobs` lease and, while held, runs dead-letter retention.
async fn periodic_jobs(
    jobs: Option<(Lease, JoinHandle<()>)>,
    leases: &Leases,
    store: &Store,
    cfg: &WorkerConfig,
    now: i64,
) -> Option<(Lease, JoinHandle<()>)> {
    match jobs {
        Some((mut lease, task)) => {
            if leases.renew(&mut lease, now).await.unwrap_or(false) {
                Some((lease, task))
            } else {
                task.abort();
                None
            }
        }
        None => {
            let lease = leases.try_acquire("jobs", now).await.ok().flatten()?;
            tracing::info!(epoch = lease.epoch, "periodic jobs taken");
            let task = tokio::spawn(leakwatch_ingest::retain_dead_letters(
                store.clone(),
                cfg.ingest.clone(),
                Duration::from_secs(300),
                std::future::pending(),
            ));
            Some((lease, task))
        }
    }
}

/// Retries a store call while the error is retryable.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T, leakwatch_store::StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, leakwatch_store::StoreError>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match f().await {
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "cannot {what}; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            r => return r,
        }
    }
}

/// One partition, for one epoch.
async fn partition_task<L: Log>(
    cfg: WorkerConfig,
    log: L,
    store: Store,
    partition: u32,
    epoch: u64,
    stop: Arc<AtomicBool>,
) {
    if let Err(e) = own_partition(&cfg, &log, &store, partition, epoch, &stop).await {
        tracing::error!(partition, epoch, error = %e, "partition task failed");
    }
}

async fn own_partition<L: Log>(
    cfg: &WorkerConfig,
    log: &L,
    store: &Store,
    partition: u32,
    epoch: u64,
    stop: &AtomicBool,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let Some(cp) = retry("claim the partition", || {
        store.claim_partition(partition, epoch, &cfg.owner)
    })
    .await
    .map_err(|e| e.to_string())?
    else {
        tracing::warn!(partition, epoch, "a newer owner holds the partition");
        return Ok(());
    };
    // The partition's meters and districts, and their detectors' state.
    let registry = retry("load the registry", || store.all_meters())
        .await
        .map_err(|e| e.to_string())?;
    let mine: Vec<Meter> = registry
        .into_iter()
        .filter(|m| partition_of(m.district.as_str(), cfg.partitions) == partition)
        .collect();
    let mut engine = Engine::new(cfg.detect.clone());
    let infos = engine.register_registry(&mine);
    let districts: HashSet<DistrictId> = mine.iter().map(|m| m.district.clone()).collect();
    let engine_subject = format!("engine:p{partition}");
    let mut subjects: Vec<String> = mine.iter().map(|m| format!("meter:{}", m.id)).collect();
    subjects.extend(districts.iter().map(|d| format!("district:{d}")));
    subjects.push(engine_subject.clone());
    let rows = retry("load detector state", || store.detector_state_of(&subjects))
        .await
        .map_err(|e| e.to_string())?;
    let saved = rows.into_iter().filter_map(|(subject, bytes)| {
        if subject == engine_subject {
            Some(Saved::Engine(bytes))
        } else if let Some(id) = subject.strip_prefix("meter:") {
            MeterId::parse(id).ok().map(|id| Saved::Meter(id, bytes))
        } else if let Some(id) = subject.strip_prefix("district:") {
            DistrictId::parse(id)
                .ok()
                .map(|id| Saved::District(id, bytes))
        } else {
            None
        }
    });
    let stats = engine.restore(saved, |id| infos.get(id).cloned());
    // As the single process does after a restore: feed again what was stored from
    // `replay_h` before the restored watermark (the detectors skip what they saw; the
    // rest, such as a district clock's hours in progress, is rebuilt). Its findings
    // and state go with the first batch's commit.
    let mut carried: Vec<Finding> = Vec::new();
    let replayed = replay(&mut engine, store, &infos, &mut carried).await?;
    let mut carried_ticks = engine.take_ticks();
    let mut writer = Writer::new(store.clone(), cfg.ingest.clone(), cfg.prefix.clone());
    let mut backoff = Duration::from_millis(100);
    loop {
        match writer.preload().await {
            Ok(_) => break,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "cannot load the registry; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let mut last_seq = cp.last_seq;
    let mut reader = log
        .open(partition, last_seq + 1)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        partition,
        epoch,
        last_seq,
        meters = mine.len(),
        restored_meters = stats.meters,
        replayed,
        ready_ms = started.elapsed().as_millis() as u64,
        "partition owned"
    );
    let mut last_info: Option<(Arc<Meter>, MeterInfo)> = None;
    while !stop.load(Ordering::Relaxed) {
        let entries = match reader.fetch(cfg.batch_max, cfg.fetch_wait).await {
            Ok(e) => e,
            Err(e) => {
                // The consumer was deleted by a newer owner, or the cluster is
                // electing a leader: try again (a fenced commit ends the task).
                tracing::debug!(partition, error = %e, "fetch failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                match log.open(partition, last_seq + 1).await {
                    Ok(r) => reader = r,
                    Err(e) => tracing::debug!(partition, error = %e, "reopen failed"),
                }
                continue;
            }
        };
        let Some(batch_last) = entries.last().map(|e| e.seq) else {
            continue;
        };
        let fresh: Vec<_> = entries.into_iter().filter(|e| e.seq > last_seq).collect();
        if fresh.is_empty() {
            // Committed before a crash and delivered again: acknowledge only.
            let _ = reader.ack_upto(batch_last).await;
            continue;
        }
        let received_ms = fresh.iter().map(|e| e.received_at_ms).max().unwrap_or(0);
        let oldest_ms = fresh
            .iter()
            .map(|e| e.received_at_ms)
            .filter(|&t| t > 0)
            .min()
            .unwrap_or(received_ms);
        let received_at = chrono::DateTime::from_timestamp_millis(received_ms)
            .filter(|_| received_ms > 0)
            .unwrap_or_else(chrono::Utc::now);
        let messages: Vec<(String, Vec<u8>)> = fresh
            .iter()
            .map(|e| (e.topic.clone(), e.payload.to_vec()))
            .collect();
        let mut backoff = Duration::from_millis(100);
        let prepared = loop {
            match writer.prepare(&messages, received_at).await {
                Ok(p) => break p,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "cannot judge the batch; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        if prepared.rejected() > 0 {
            retry("dead-letter", || {
                writer.write_rejects(&prepared, received_at)
            })
            .await
            .map_err(|e| e.to_string())?;
        }
        // Detection, in the order single-process ingest hands batches over.
        let mut stored = prepared.stored();
        stored
            .readings
            .sort_by(|a, b| a.1.t.cmp(&b.1.t).then(a.1.meter.cmp(&b.1.meter)));
        let mut findings: Vec<Finding> = std::mem::take(&mut carried);
        let mut ticks = std::mem::take(&mut carried_ticks);
        for (meter, reading) in &stored.readings {
            let info = info_for(&mut last_info, meter);
            engine.observe(info, reading, &mut findings);
        }
        for (meter, event) in &stored.events {
            let info = info_for(&mut last_info, meter);
            engine.observe_event(info, event, &mut findings);
        }
        ticks.extend(engine.take_ticks());
        let alerts = alert_steps(findings, ticks, cfg.detect.resolve_after_h);
        let state: Vec<(String, Vec<u8>)> = engine
            .checkpoint_dirty()
            .into_iter()
            .map(|s| match s {
                Saved::Meter(id, b) => (format!("meter:{id}"), b),
                Saved::District(id, b) => (format!("district:{id}"), b),
                Saved::Engine(b) => (engine_subject.clone(), b),
            })
            .collect();
        let commit = PartitionCommit {
            partition,
            epoch,
            owner: cfg.owner.clone(),
            last_seq: fresh.last().map_or(last_seq, |e| e.seq),
            watermark: engine.watermark(),
            rows: prepared.rows.clone(),
            events: stored.events.iter().map(|(_, e)| e.clone()).collect(),
            state,
            alerts,
            received_at,
            lag_ms: (now_ms() - oldest_ms).max(0),
        };
        if failpoint_armed(
            "worker-before-commit",
            format_args!("partition={partition} epoch={epoch}"),
        ) {
            failpoint_pause("worker-before-commit").await;
        }
        let outcome = retry("commit the batch", || store.commit_partition(&commit))
            .await
            .map_err(|e| e.to_string())?;
        match outcome {
            CommitOutcome::Fenced { current } => {
                metrics::counter!("leakwatch_worker_fenced_total").increment(1);
                tracing::warn!(
                    partition,
                    epoch,
                    current,
                    "commit refused: stale epoch (a newer owner holds the partition)"
                );
                return Ok(());
            }
            CommitOutcome::Committed {
                readings,
                new_alerts,
            } => {
                metrics::counter!("leakwatch_worker_readings_total").increment(readings.inserted);
                tracing::debug!(
                    partition,
                    seq = commit.last_seq,
                    inserted = readings.inserted,
                    duplicates = readings.duplicates,
                    new_alerts,
                    "batch committed"
                );
            }
        }
        writer.committed(prepared.overlay);
        last_seq = commit.last_seq;
        COMMITTED_BATCHES.fetch_add(1, Ordering::Relaxed);
        if failpoint_armed(
            "worker-after-commit",
            format_args!("partition={partition} epoch={epoch} seq={last_seq}"),
        ) {
            failpoint_pause("worker-after-commit").await;
        }
        if let Err(e) = reader.ack_upto(batch_last).await {
            // Not fatal: the next owner skips what is committed.
            tracing::debug!(partition, error = %e, "ack failed");
        }
    }
    Ok(())
}

/// Readings and events stored from `replay_h` before the restored watermark, fed
/// again to the partition's detectors (those of other partitions are passed over).
async fn replay(
    engine: &mut Engine,
    store: &Store,
    infos: &std::collections::HashMap<MeterId, MeterInfo>,
    findings: &mut Vec<Finding>,
) -> Result<u64, String> {
    const PAGE: u32 = 20_000;
    let (Some(earliest), Some(latest)) = (engine.watermark(), engine.latest_watermark()) else {
        return Ok(0);
    };
    let wm = earliest.max(latest - chrono::TimeDelta::days(7));
    let from = wm - chrono::TimeDelta::hours(i64::from(engine.config().replay_h));
    let events = retry("replay events", || store.events_since(from, 1_000_000))
        .await
        .map_err(|e| e.to_string())?;
    let mut events = events.into_iter().peekable();
    let mut after: Option<(leakwatch_core::Timestamp, MeterId)> = None;
    let mut fed = 0u64;
    loop {
        let page = retry("replay readings", || {
            store.readings_since(from, after.as_ref().map(|(t, m)| (*t, m)), PAGE)
        })
        .await
        .map_err(|e| e.to_string())?;
        for r in &page {
            while let Some(e) = events.next_if(|e| e.t < r.t) {
                if let Some(info) = infos.get(&e.meter) {
                    engine.replay_event(info, &e, findings);
                }
            }
            if let Some(info) = infos.get(&r.meter) {
                engine.observe(info, r, findings);
                fed += 1;
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => after = Some((last.t, last.meter.clone())),
            _ => break,
        }
    }
    for e in events {
        if let Some(info) = infos.get(&e.meter) {
            engine.replay_event(info, &e, findings);
        }
    }
    Ok(fed)
}

fn info_for<'a>(
    last: &'a mut Option<(Arc<Meter>, MeterInfo)>,
    meter: &Arc<Meter>,
) -> &'a MeterInfo {
    if !last.as_ref().is_some_and(|(m, _)| Arc::ptr_eq(m, meter)) {
        *last = Some((meter.clone(), MeterInfo::of(meter)));
    }
    &last.as_ref().expect("set above").1
}

/// The findings in order, with each district's quiet alerts resolved at its watermark
/// moves among them (as the single-process detection task does).
pub fn alert_steps(
    findings: Vec<Finding>,
    ticks: Vec<Tick>,
    resolve_after_h: u32,
) -> Vec<AlertStep> {
    let after = chrono::TimeDelta::hours(i64::from(resolve_after_h));
    let reason = format!("condition not seen for {resolve_after_h} h (event time)");
    let resolve = |t: &Tick| AlertStep::Resolve {
        district: t.district.clone(),
        seen_before: t.watermark - after,
        reason: reason.clone(),
    };
    let mut steps = Vec::new();
    let mut ticks = ticks.into_iter().peekable();
    let mut pending: Vec<Tick> = Vec::new();
    for (i, f) in findings.into_iter().enumerate() {
        while let Some(t) = ticks.next_if(|t| t.at <= i) {
            pending.retain(|p| p.district != t.district);
            pending.push(t);
        }
        steps.extend(pending.drain(..).map(|t| resolve(&t)));
        steps.push(AlertStep::Record(f));
    }
    pending.extend(ticks);
    let mut latest: BTreeMap<DistrictId, Tick> = BTreeMap::new();
    for t in pending {
        latest.insert(t.district.clone(), t);
    }
    steps.extend(latest.values().map(resolve));
    steps
}

/// How many partitions each of `workers` would hold (fair share), for the docs.
pub fn fair_share(partitions: u32, workers: usize) -> usize {
    (partitions as usize).div_ceil(workers.max(1))
}
