//! The detection task: restores the detectors' saved state, replays what was stored
//! after the last checkpoint, then feeds committed readings and events to the
//! detector engine, stores what it finds as alerts (a new alert also enters the
//! dispatch outbox in the same statement; the dispatch side escalates from there),
//! resolves alerts whose condition has cleared, and checkpoints the
//! detectors' state periodically and at shutdown.
//!
//! Event time is the engine's, per district: alerts of a district resolve at the
//! district's watermark moves ([`leakwatch_detect::Tick`]), at their place among the
//! findings, so the alerts do not depend on how ingest cut the stream into batches.

use leakwatch_api::DetectionStatus;
use leakwatch_core::{Finding, Meter, MeterId, Verdict};
use leakwatch_detect::{DetectConfig, Engine, MeterInfo, Saved, Tick};
use leakwatch_ingest::{Item, Stored};
use leakwatch_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Most stored events a replay takes (they are few: a handful per meter and month).
const REPLAY_EVENTS_MAX: u32 = 1_000_000;

/// Readings fetched per page while replaying after a restart.
const REPLAY_PAGE: u32 = 20_000;

/// Runs until the ingestor closes its side of `rx`.
pub async fn run(
    cfg: DetectConfig,
    store: Store,
    mut rx: mpsc::Receiver<Stored>,
    status: Arc<DetectionStatus>,
) {
    let mut engine = Engine::new(cfg.clone());
    let registry = retry("load the registry", || store.all_meters())
        .await
        .unwrap_or_default();
    let infos = engine.register_registry(&registry);
    let restored = restore(&mut engine, &store, &infos).await;
    status.restored(restored, engine.watermark().map(|t| t.timestamp()));
    let mut findings = Vec::new();
    replay(&mut engine, &store, &infos, &mut findings).await;
    flush(&store, &mut engine, &mut findings).await;

    let mut tick = tokio::time::interval(Duration::from_secs(u64::from(
        cfg.checkpoint_every_s.max(1),
    )));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let (query_tx, mut queries) = mpsc::channel(64);
    status.answer_queries(query_tx);
    publish_learning(&engine, &status);
    // The counts take a pass over every meter: at most once a second.
    let mut learning_at = std::time::Instant::now();
    let mut last_info: Option<(Arc<Meter>, MeterInfo)> = None;
    loop {
        tokio::select! {
            Some((meter, reply)) = queries.recv() => {
                let answer = engine.learning(&meter).map(|l| serde_json::json!({
                    "meter_id": meter,
                    "state": l.state(),
                    "learned_days": l.learned_days,
                    "needed_days": l.needed_days,
                }));
                let _ = reply.send(answer);
            }
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                for item in batch.in_order() {
                    match item {
                        Item::Reading(meter, reading) => {
                            let info = info_for(&mut last_info, meter);
                            engine.observe(info, reading, &mut findings);
                        }
                        Item::Event(meter, event) => {
                            let info = info_for(&mut last_info, meter);
                            engine.observe_event(info, event, &mut findings);
                        }
                    }
                }
                metrics::counter!("leakwatch_detector_readings_total")
                    .increment(batch.readings.len() as u64);
                metrics::counter!("leakwatch_detector_events_total")
                    .increment(batch.events.len() as u64);
                metrics::gauge!("leakwatch_detector_meters").set(engine.meters() as f64);
                flush(&store, &mut engine, &mut findings).await;
                if learning_at.elapsed() >= Duration::from_secs(1) {
                    publish_learning(&engine, &status);
                    learning_at = std::time::Instant::now();
                }
                // Progress is shown once the batch's findings are stored.
                status.processed(
                    batch.readings.len(),
                    batch.events.len(),
                    engine.meters(),
                    engine.watermark().map(|t| t.timestamp()),
                );
            }
            _ = tick.tick() => {
                checkpoint(&store, &mut engine, false).await;
                status.checkpointed();
                publish_learning(&engine, &status);
            }
        }
    }
    checkpoint(&store, &mut engine, true).await;
    status.checkpointed();
    tracing::info!("detection stopped");
}

/// Counts meters per learning state for `/api/v1/detection` and `/metrics`.
fn publish_learning(engine: &Engine, status: &DetectionStatus) {
    let c = engine.learning_counts();
    status.learning(c.learning, c.learned);
    metrics::gauge!("leakwatch_detector_meters_by_learning", "state" => "learning")
        .set(c.learning as f64);
    metrics::gauge!("leakwatch_detector_meters_by_learning", "state" => "learned")
        .set(c.learned as f64);
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

/// Retries a store call while the store is unavailable; `None` (logged) on an error
/// that retrying cannot cure.
async fn retry<T, F, Fut>(what: &str, mut call: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        match call().await {
            Ok(v) => return Some(v),
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "detection cannot {what}; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => {
                tracing::error!(error = %e, "detection cannot {what}; going on without it");
                return None;
            }
        }
    }
}

/// Restores saved state; returns how many meters' state came back.
async fn restore(engine: &mut Engine, store: &Store, infos: &HashMap<MeterId, MeterInfo>) -> usize {
    let rows = retry("load detector state", || store.load_detector_state())
        .await
        .unwrap_or_default();
    if rows.is_empty() {
        return 0;
    }
    let saved = rows.into_iter().filter_map(|(subject, bytes)| {
        if subject == "engine" {
            Some(Saved::Engine(bytes))
        } else if let Some(id) = subject.strip_prefix("meter:") {
            MeterId::parse(id).ok().map(|id| Saved::Meter(id, bytes))
        } else if let Some(id) = subject.strip_prefix("district:") {
            leakwatch_core::DistrictId::parse(id)
                .ok()
                .map(|id| Saved::District(id, bytes))
        } else {
            None
        }
    });
    let stats = engine.restore(saved, |id| infos.get(id).cloned());
    tracing::info!(
        meters = stats.meters,
        districts = stats.districts,
        skipped = stats.skipped,
        watermark = ?engine.watermark(),
        "detector state restored"
    );
    stats.meters
}

/// Feeds again what was stored from `replay_h` before the restored watermark: what
/// arrived after the last checkpoint reaches the detectors; what they had already
/// seen is skipped by them. Stored device events go in among the readings in time
/// order (an event before the first reading stamped after it), each only if later
/// than every event its meter's restored state has seen.
async fn replay(
    engine: &mut Engine,
    store: &Store,
    infos: &HashMap<MeterId, MeterInfo>,
    findings: &mut Vec<Finding>,
) {
    // From the earliest district's watermark (every district gets what it may have
    // missed), but no more than a week behind the latest one: a district that has
    // stopped reporting does not make every restart replay all that came since.
    let (Some(earliest), Some(latest)) = (engine.watermark(), engine.latest_watermark()) else {
        return;
    };
    let wm = earliest.max(latest - chrono::TimeDelta::days(7));
    let from = wm - chrono::TimeDelta::hours(i64::from(engine.config().replay_h));
    let events = retry("replay events", || {
        store.events_since(from, REPLAY_EVENTS_MAX)
    })
    .await
    .unwrap_or_default();
    if events.len() == REPLAY_EVENTS_MAX as usize {
        tracing::warn!(
            limit = REPLAY_EVENTS_MAX,
            "more stored events than the replay takes; the latest are not replayed"
        );
    }
    let mut events = events.into_iter().peekable();
    let mut events_fed = 0u64;
    let mut feed_events_before =
        |engine: &mut Engine,
         findings: &mut Vec<Finding>,
         until: Option<leakwatch_core::Timestamp>| {
            while let Some(e) = events.next_if(|e| until.is_none_or(|t| e.t < t)) {
                if let Some(info) = infos.get(&e.meter)
                    && engine.replay_event(info, &e, findings)
                {
                    events_fed += 1;
                }
            }
        };
    let mut after: Option<(leakwatch_core::Timestamp, MeterId)> = None;
    let mut replayed = 0u64;
    loop {
        let Some(page) = retry("replay readings", || {
            store.readings_since(from, after.as_ref().map(|(t, m)| (*t, m)), REPLAY_PAGE)
        })
        .await
        else {
            break;
        };
        for r in &page {
            feed_events_before(engine, findings, Some(r.t));
            if let Some(info) = infos.get(&r.meter) {
                engine.observe(info, r, findings);
            }
        }
        replayed += page.len() as u64;
        match page.last() {
            Some(last) if page.len() == REPLAY_PAGE as usize => {
                after = Some((last.t, last.meter.clone()));
            }
            _ => break,
        }
    }
    feed_events_before(engine, findings, None);
    tracing::info!(
        replayed,
        events = events_fed,
        from = %from,
        "stored readings and events replayed to the detectors"
    );
}

/// Saves what changed; `all` (at shutdown) saves every district as well.
async fn checkpoint(store: &Store, engine: &mut Engine, all: bool) {
    let saved = if all {
        engine.checkpoint_all()
    } else {
        engine.checkpoint_dirty()
    };
    let rows: Vec<(String, Vec<u8>)> = saved
        .into_iter()
        .map(|s| match s {
            Saved::Meter(id, b) => (format!("meter:{id}"), b),
            Saved::District(id, b) => (format!("district:{id}"), b),
            Saved::Engine(b) => ("engine".to_owned(), b),
        })
        .collect();
    let n = rows.len();
    let started = std::time::Instant::now();
    if retry("save detector state", || store.save_detector_state(&rows))
        .await
        .is_none()
    {
        return;
    }
    metrics::histogram!("leakwatch_detector_checkpoint_seconds")
        .record(started.elapsed().as_secs_f64());
    tracing::debug!(subjects = n, "detector state saved");
}

/// Resolves a district's alerts not seen for `resolve_after_h` before its watermark.
async fn resolve_quiet(store: &Store, tick: &Tick, resolve_after_h: u32) {
    let after = chrono::TimeDelta::hours(i64::from(resolve_after_h));
    let reason = format!("condition not seen for {resolve_after_h} h (event time)");
    match store
        .resolve_quiet_alerts_in(&tick.district, tick.watermark - after, &reason)
        .await
    {
        Ok(resolved) => {
            for a in resolved {
                metrics::counter!("leakwatch_alerts_auto_resolved_total", "kind" => a.kind.as_str())
                    .increment(1);
                tracing::info!(
                    alert_id = a.id,
                    kind = a.kind.as_str(),
                    "alert resolved: {reason}"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not resolve quiet alerts"),
    }
}

/// Records the findings in order, resolving each district's quiet alerts at its
/// watermark moves among them (the engine's ticks); drains both.
async fn flush(store: &Store, engine: &mut Engine, findings: &mut Vec<Finding>) {
    let resolve_after_h = engine.config().resolve_after_h;
    let mut ticks = engine.take_ticks().into_iter().peekable();
    // Between two findings only each district's latest tick matters: resolving at a
    // later watermark resolves everything an earlier one would have.
    let mut pending: Vec<Tick> = Vec::new();
    for (i, f) in findings.drain(..).enumerate() {
        while let Some(t) = ticks.next_if(|t| t.at <= i) {
            pending.retain(|p| p.district != t.district);
            pending.push(t);
        }
        for t in pending.drain(..) {
            resolve_quiet(store, &t, resolve_after_h).await;
        }
        record(store, &f).await;
    }
    pending.extend(ticks);
    let mut latest: std::collections::BTreeMap<leakwatch_core::DistrictId, Tick> =
        Default::default();
    for t in pending {
        latest.insert(t.district.clone(), t);
    }
    for t in latest.values() {
        resolve_quiet(store, t, resolve_after_h).await;
    }
}

/// Records a finding: a repeat updates its alert; one that would open a new alert is
/// judged against the engineers' suppressions (`leakwatch_detect::suppress::judge`,
/// pure) and the verdict applied in one transaction by the store.
async fn record(store: &Store, f: &Finding) {
    let mut backoff = Duration::from_millis(200);
    let recorded = loop {
        match store
            .record_finding_judged(f, |active| leakwatch_detect::suppress::judge(active, f))
            .await
        {
            Ok(r) => break r,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "store unavailable; retrying the finding");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => {
                tracing::error!(error = %e, kind = f.kind.as_str(), "could not record a finding");
                return;
            }
        }
    };
    match &recorded.verdict {
        Verdict::Suppressed { id } => {
            metrics::counter!("leakwatch_alerts_suppressed_total", "kind" => f.kind.as_str())
                .increment(1);
            tracing::debug!(
                suppression_id = id,
                kind = f.kind.as_str(),
                "finding kept quiet by a suppression"
            );
        }
        Verdict::BreaksThrough { id, reason } => tracing::info!(
            suppression_id = id,
            kind = f.kind.as_str(),
            "suppression ended: {reason}"
        ),
        Verdict::Raise => {}
    }
    let (Some(alert), true) = (recorded.alert, recorded.created) else {
        return;
    };
    metrics::counter!("leakwatch_alerts_raised_total", "kind" => f.kind.as_str()).increment(1);
    tracing::info!(
        alert_id = alert.id,
        kind = alert.kind.as_str(),
        meter_id = ?alert.meter_id.as_ref().map(|m| m.to_string()),
        detected_at = %alert.detected_at,
        "{}", alert.evidence.explanation
    );
}

#[cfg(test)]
mod tests {
    //! A crash between checkpoints: what was stored after the last checkpoint is
    //! replayed from the store at the next start, so the alerts are those of a run
    //! without the crash.

    use super::*;
    use leakwatch_core::{AlertKind, EventCode, MeterEvent, Reading};
    use leakwatch_sim::{FaultRates, Fleet, FleetConfig, HomeClass, HouseholdMix, LeakConfig};
    use leakwatch_store::AlertQuery;
    use std::collections::BTreeSet;

    /// Six days of a small fleet, as committed batches of one simulated hour each.
    fn batches() -> (Vec<Meter>, Vec<Vec<Reading>>) {
        let mut fleet = Fleet::generate(&FleetConfig {
            seed: 5,
            districts: 2,
            meters_per_district: 10,
            leaks: 3,
            push_every_h: 6,
            hours: Some(144),
            households: HouseholdMix::only(HomeClass::Setback),
            leak: LeakConfig {
                from_h: 60,
                to_h: 80,
                ..LeakConfig::default()
            },
            faults: FaultRates {
                counter_regression: 100.0,
                ..FaultRates::default()
            },
            ..FleetConfig::default()
        });
        let registry = fleet.registry();
        let mut out = Vec::new();
        for _ in 0..144 {
            let mut hour: Vec<Reading> =
                fleet.step().into_iter().flat_map(|u| u.readings).collect();
            hour.sort_by(|a, b| a.t.cmp(&b.t).then(a.meter.cmp(&b.meter)));
            out.push(hour);
        }
        (registry, out)
    }

    struct Run {
        store: Store,
        status: Arc<DetectionStatus>,
        tx: mpsc::Sender<Stored>,
        task: tokio::task::JoinHandle<()>,
        meters: HashMap<MeterId, Arc<Meter>>,
    }

    async fn start(store: &Store, registry: &[Meter]) -> Run {
        let cfg = DetectConfig {
            checkpoint_every_s: 1,
            ..DetectConfig::default()
        };
        let (tx, rx) = mpsc::channel(4);
        let status = Arc::new(DetectionStatus::default());
        let task = tokio::spawn(run(cfg, store.clone(), rx, status.clone()));
        let meters = registry
            .iter()
            .map(|m| (m.id.clone(), Arc::new(m.clone())))
            .collect();
        Run {
            store: store.clone(),
            status,
            tx,
            task,
            meters,
        }
    }

    impl Run {
        /// Stores the hours' readings and hands them to detection, as ingest does;
        /// waits until detection has processed them.
        async fn feed(&self, hours: &[Vec<Reading>]) {
            self.feed_with(hours, &[]).await;
        }

        /// As [`Run::feed`], with device events: `(i, event)` goes with `hours[i]`.
        async fn feed_with(&self, hours: &[Vec<Reading>], events: &[(usize, MeterEvent)]) {
            let before = self.status.to_json()["readings_processed"]
                .as_u64()
                .unwrap();
            let mut n = 0;
            for (i, hour) in hours.iter().enumerate() {
                self.store.insert_readings(hour).await.unwrap();
                let evs: Vec<MeterEvent> = events
                    .iter()
                    .filter(|(at, _)| *at == i)
                    .map(|(_, e)| e.clone())
                    .collect();
                self.store.insert_events(&evs).await.unwrap();
                let readings: Vec<_> = hour
                    .iter()
                    .map(|r| (self.meters[&r.meter].clone(), r.clone()))
                    .collect();
                n += hour.len() as u64;
                self.tx
                    .send(Stored {
                        event_after: vec![readings.len(); evs.len()],
                        readings,
                        events: evs
                            .into_iter()
                            .map(|e| (self.meters[&e.meter].clone(), e))
                            .collect(),
                    })
                    .await
                    .unwrap();
            }
            self.wait("readings_processed", before + n).await;
        }

        /// Stores the hours' readings and events as ingest does, without handing them
        /// to detection (it died first).
        async fn store_only(&self, hours: &[Vec<Reading>], events: &[(usize, MeterEvent)]) {
            for (i, hour) in hours.iter().enumerate() {
                self.store.insert_readings(hour).await.unwrap();
                let evs: Vec<MeterEvent> = events
                    .iter()
                    .filter(|(at, _)| *at == i)
                    .map(|(_, e)| e.clone())
                    .collect();
                self.store.insert_events(&evs).await.unwrap();
            }
        }

        async fn wait(&self, field: &str, at_least: u64) {
            for _ in 0..500 {
                if self.status.to_json()[field].as_u64().unwrap() >= at_least {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!(
                "{field} never reached {at_least}: {}",
                self.status.to_json()
            );
        }
    }

    async fn alerts(store: &Store) -> BTreeSet<(&'static str, String, String)> {
        let q = AlertQuery {
            limit: 1000,
            ..AlertQuery::default()
        };
        store
            .list_alerts(&q)
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.kind != AlertKind::Silence)
            .map(|a| {
                let subject = a.meter_id.map_or_else(String::new, |m| m.to_string());
                (a.kind.as_str(), subject, a.detected_at.to_rfc3339())
            })
            .collect()
    }

    async fn fresh_store(registry: &[Meter]) -> Store {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.upsert_meters(registry).await.unwrap();
        store
    }

    /// Every alert with what batching could change: kind, subject, detected_at,
    /// count, last seen, status.
    async fn alerts_in_full(store: &Store) -> Vec<(String, String, String, i64, String, String)> {
        let q = AlertQuery {
            limit: 1000,
            ..AlertQuery::default()
        };
        let mut out: Vec<_> = store
            .list_alerts(&q)
            .await
            .unwrap()
            .into_iter()
            .map(|a| {
                (
                    a.kind.as_str().to_owned(),
                    format!("{:?}/{:?}", a.meter_id, a.district_id),
                    a.detected_at.to_rfc3339(),
                    a.count,
                    a.last_seen.to_rfc3339(),
                    format!("{:?}", a.status),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_service_raises_the_same_alerts_however_the_stream_is_batched() {
        let (registry, hours) = batches();
        let stream: Vec<Reading> = hours.concat();
        let store = fresh_store(&registry).await;
        let by_hour = start(&store, &registry).await;
        by_hour.feed(&hours).await;
        drop(by_hour.tx);
        by_hour.task.await.unwrap();
        let expected = alerts_in_full(&store).await;
        assert!(
            expected.iter().any(|a| a.5 == "Resolved"),
            "nothing resolved: {expected:?}"
        );
        // The same readings in the same order, in batches of 1 to ~2 days' worth.
        for (trial, sizes) in [[1usize, 7, 500], [3000, 11, 64]].iter().enumerate() {
            let mut cut = Vec::new();
            let mut rest = stream.as_slice();
            let mut k = 0;
            while !rest.is_empty() {
                let n = sizes[k % sizes.len()].min(rest.len());
                cut.push(rest[..n].to_vec());
                rest = &rest[n..];
                k += 1;
            }
            let store = fresh_store(&registry).await;
            let run = start(&store, &registry).await;
            run.feed(&cut).await;
            drop(run.tx);
            run.task.await.unwrap();
            assert_eq!(alerts_in_full(&store).await, expected, "trial {trial}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_between_checkpoints_loses_nothing() {
        let (registry, hours) = batches();
        // A magnetic field on one meter in hour 60, between the last checkpoint and
        // the crash, stored but not yet analysed when the process dies: only the
        // replay can raise its alert (and mask the meter's learning).
        let victim = hours[60][0].meter.clone();
        let pushed = hours[60]
            .iter()
            .filter(|r| r.meter == victim)
            .map(|r| r.t)
            .max()
            .unwrap();
        let magnet = MeterEvent {
            meter: victim.clone(),
            t: pushed + chrono::TimeDelta::seconds(1),
            code: EventCode::Named("magnetic_field".into()),
        };
        let events = [(60, magnet)];

        let store = fresh_store(&registry).await;
        let straight = start(&store, &registry).await;
        straight.feed_with(&hours, &events).await;
        drop(straight.tx);
        straight.task.await.unwrap();
        let expected = alerts(&store).await;
        assert!(
            expected.iter().any(|(k, _, _)| *k == "continuous_flow"),
            "{expected:?}"
        );
        assert!(
            expected
                .iter()
                .any(|(k, m, _)| *k == "magnetic_field" && *m == victim.to_string()),
            "{expected:?}"
        );

        let store = fresh_store(&registry).await;
        let first = start(&store, &registry).await;
        first.feed(&hours[..50]).await;
        // A checkpoint after the first 50 hours, then 10 hours more analysed and 10
        // only stored, then a crash: the task is killed before it saves those hours.
        let saved = first.status.to_json()["checkpoints"].as_u64().unwrap();
        first.wait("checkpoints", saved + 1).await;
        first.feed(&hours[50..60]).await;
        // Hours 60-69 are stored (with the event) but detection dies before it sees
        // them.
        first
            .store_only(&hours[60..70], &[(0, events[0].1.clone())])
            .await;
        first.task.abort();
        let _ = first.task.await;

        let second = start(&store, &registry).await;
        second.feed(&hours[70..]).await;
        drop(second.tx);
        second.task.await.unwrap();
        assert_eq!(alerts(&store).await, expected);
    }

    fn flow_finding(meter: &str, district: &str, minutes: i64, observed: f64) -> Finding {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-02T03:00:00Z")
            .unwrap()
            .to_utc()
            + chrono::TimeDelta::minutes(minutes);
        Finding {
            kind: AlertKind::ContinuousFlow,
            severity: leakwatch_core::Severity::Warning,
            meter_id: Some(MeterId::parse(meter).unwrap()),
            district_id: Some(leakwatch_core::DistrictId::parse(district).unwrap()),
            detected_at: t,
            evidence: leakwatch_core::Evidence {
                rule: "no zero-flow hour in 24 h".into(),
                observed,
                expected: None,
                threshold: 0.0,
                unit: "m3/h".into(),
                window_start: t - chrono::TimeDelta::hours(24),
                window_end: t,
                explanation: "gas flowed every hour for 24 h".into(),
                known: None,
            },
        }
    }

    async fn active_of(store: &Store, meter: &str) -> Vec<leakwatch_core::Alert> {
        store
            .list_alerts(&AlertQuery {
                meter_id: Some(MeterId::parse(meter).unwrap()),
                ..AlertQuery::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.status == leakwatch_core::AlertStatus::Open)
            .collect()
    }

    /// Issue 12: a dismissed continuous-flow alert came back with the next finding
    /// (18 s later in the demo). A dismissal with a suppression keeps that meter
    /// quiet, another meter's alert still arrives, and evidence beyond the dismissed
    /// one by the margin reopens it (ending the suppression, saying why).
    #[tokio::test]
    async fn a_dismissal_with_a_suppression_sticks_until_the_evidence_grows() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let dispatcher = leakwatch_dispatch::Dispatcher::new(
            store.clone(),
            leakwatch_dispatch::DispatchConfig::default(),
        );
        record(&store, &flow_finding("M-1", "D1", 0, 0.040)).await;
        let first = active_of(&store, "M-1").await;
        assert_eq!(first.len(), 1);

        // A plain dismissal: the next finding opens a new alert (what the demo showed).
        dispatcher
            .review(
                first[0].id,
                &leakwatch_core::AlertAction::Dismiss {
                    reason: "pilot light".into(),
                },
                "eng",
            )
            .await
            .unwrap();
        record(&store, &flow_finding("M-1", "D1", 1, 0.040)).await;
        let reopened = active_of(&store, "M-1").await;
        assert_eq!(reopened.len(), 1, "a plain dismissal does not stick");

        // Dismissed with a suppression: quiet while the evidence stays within 25 %.
        let (_, sup) = dispatcher
            .dismiss_suppressing(
                reopened[0].id,
                "pilot light, known to the customer",
                &leakwatch_core::SuppressRequest {
                    scope: None,
                    until: None,
                    margin: None,
                },
                "eng",
            )
            .await
            .unwrap();
        for m in 2..6 {
            record(&store, &flow_finding("M-1", "D1", m, 0.048)).await;
        }
        assert!(active_of(&store, "M-1").await.is_empty());
        let held = store.get_suppression(sup.id).await.unwrap().unwrap();
        assert_eq!(held.suppressed, 4);
        assert!(held.is_active());
        // The history of the dismissed alert says who made it, in the dismissal's
        // transaction.
        let history = store.alert_history(reopened[0].id).await.unwrap();
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!(
            (history[0].actor.as_str(), history[0].action.as_str()),
            ("eng", "dismiss")
        );
        assert!(
            history[0]
                .note
                .as_deref()
                .unwrap()
                .contains(&format!("suppression #{}", sup.id))
        );

        // Another meter of the same district still raises.
        record(&store, &flow_finding("M-2", "D1", 6, 0.040)).await;
        assert_eq!(active_of(&store, "M-2").await.len(), 1);

        // Beyond the margin: a new alert, the suppression ended by the detector.
        record(&store, &flow_finding("M-1", "D1", 7, 0.060)).await;
        let back = active_of(&store, "M-1").await;
        assert_eq!(back.len(), 1);
        let ended = store.get_suppression(sup.id).await.unwrap().unwrap();
        assert_eq!(ended.ended_by.as_deref(), Some("detector"));
        assert_eq!(ended.broken_by_alert, Some(back[0].id));
        let why = store.alert_history(back[0].id).await.unwrap();
        assert!(
            why[0]
                .note
                .as_deref()
                .unwrap()
                .contains("exceeds the dismissed"),
            "{why:?}"
        );
    }
}
