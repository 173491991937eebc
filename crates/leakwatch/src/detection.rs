//! The detection task: feeds committed readings to the detector engine, stores what
//! it finds as alerts, and escalates new leak alerts when so configured.

use leakwatch_core::Finding;
use leakwatch_detect::{DetectConfig, Engine, MeterInfo};
use leakwatch_dispatch::Dispatcher;
use leakwatch_ingest::Stored;
use leakwatch_store::Store;
use std::time::Duration;
use tokio::sync::mpsc;

/// Runs until the ingestor closes its side of `rx`.
pub async fn run(
    cfg: DetectConfig,
    store: Store,
    dispatcher: Dispatcher,
    mut rx: mpsc::Receiver<Stored>,
) {
    let mut engine = Engine::new(cfg);
    let mut findings = Vec::new();
    while let Some(batch) = rx.recv().await {
        for (meter, reading) in &batch {
            engine.observe(&MeterInfo::of(meter), reading, &mut findings);
        }
        metrics::gauge!("leakwatch_detector_meters").set(engine.meters() as f64);
        for f in findings.drain(..) {
            record(&store, &dispatcher, &f).await;
        }
    }
    tracing::info!("detection stopped");
}

async fn record(store: &Store, dispatcher: &Dispatcher, f: &Finding) {
    let mut backoff = Duration::from_millis(200);
    let (alert, created) = loop {
        match store.record_finding(f).await {
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
    if !created {
        return;
    }
    metrics::counter!("leakwatch_alerts_raised_total", "kind" => f.kind.as_str()).increment(1);
    tracing::info!(
        alert_id = alert.id,
        kind = alert.kind.as_str(),
        meter_id = ?alert.meter_id.as_ref().map(|m| m.to_string()),
        detected_at = %alert.detected_at,
        "{}", alert.evidence.explanation
    );
    if dispatcher.config().auto_escalate && alert.kind.is_leak() {
        match dispatcher.escalate(alert.id, "auto-escalation").await {
            Ok((_, order)) => tracing::info!(
                alert_id = alert.id,
                order_id = order.id,
                crew_id = ?order.crew_id.as_ref().map(|c| c.to_string()),
                "work order created"
            ),
            Err(e) => tracing::warn!(alert_id = alert.id, error = %e, "auto-escalation failed"),
        }
    }
}
