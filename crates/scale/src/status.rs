//! What the bridge and the worker tell `/readyz` and `/metrics` (served by
//! `leakwatch bridge` / `leakwatch worker` with `--http-listen`): plain shared state,
//! updated where things happen, read by the HTTP handlers.
//!
//! Worker gauges and counters, per partition it holds (label `partition`):
//! `leakwatch_worker_owned` (1 while held, 0 once given up),
//! `leakwatch_worker_lease_epoch`, `leakwatch_worker_committed_seq` (the last stream
//! sequence committed), `leakwatch_worker_pending_entries` (entries of the partition
//! stored in the log and not yet fetched: the lag in messages),
//! `leakwatch_worker_lag_seconds` (bridge receipt of the last batch's oldest message
//! to its commit); and `leakwatch_worker_takeovers_total` (partitions taken from
//! another worker whose lease expired), `leakwatch_worker_fenced_total`,
//! `leakwatch_worker_partitions`, `leakwatch_worker_member` (1 while the worker holds
//! its membership lease). Bridge: `leakwatch_bridge_appended_total{duplicate}`,
//! `leakwatch_bridge_append_errors_total`, `leakwatch_bridge_in_flight`,
//! `leakwatch_bridge_append_seconds`.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// One partition a worker holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PartitionView {
    pub epoch: u64,
    /// Claimed in the database (its checkpoint loaded, detectors restored).
    pub claimed: bool,
    pub committed_seq: u64,
    /// Entries behind the last fetched one, when the log said.
    pub pending: Option<u64>,
    /// Bridge receipt of the last batch's oldest message to its commit.
    pub lag_ms: i64,
    /// When the last batch committed (Unix ms), 0 before the first.
    pub committed_at_ms: i64,
}

/// What a worker holds and has done.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkerView {
    pub owner: String,
    /// Holds its membership lease (counts among the live workers).
    pub member: bool,
    pub live_workers: usize,
    pub takeovers: u64,
    pub fenced: u64,
    pub partitions: BTreeMap<u32, PartitionView>,
}

/// A worker's shared status.
#[derive(Debug, Default)]
pub struct WorkerStatus {
    view: Mutex<WorkerView>,
}

fn label(p: u32) -> String {
    p.to_string()
}

impl WorkerStatus {
    pub fn new(owner: &str) -> Self {
        WorkerStatus {
            view: Mutex::new(WorkerView {
                owner: owner.to_owned(),
                ..WorkerView::default()
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut WorkerView) -> T) -> T {
        f(&mut self.view.lock().expect("not poisoned"))
    }

    pub fn view(&self) -> WorkerView {
        self.with(|v| v.clone())
    }

    /// Ready: the worker holds its membership lease (so the others count it and
    /// leave it its share).
    pub fn ready(&self) -> bool {
        self.with(|v| v.member)
    }

    pub fn membership(&self, member: bool, live_workers: usize) {
        let held = self.with(|v| {
            v.member = member;
            v.live_workers = live_workers;
            v.partitions.len()
        });
        metrics::gauge!("leakwatch_worker_member").set(if member { 1.0 } else { 0.0 });
        metrics::gauge!("leakwatch_worker_partitions").set(held as f64);
    }

    /// A partition's lease taken (`from`: the former holder whose lease expired).
    pub fn taken(&self, partition: u32, epoch: u64, from: Option<&str>) {
        let n = self.with(|v| {
            v.partitions.insert(
                partition,
                PartitionView {
                    epoch,
                    ..PartitionView::default()
                },
            );
            if from.is_some() {
                v.takeovers += 1;
            }
            v.partitions.len()
        });
        if from.is_some() {
            metrics::counter!("leakwatch_worker_takeovers_total").increment(1);
        }
        metrics::gauge!("leakwatch_worker_partitions").set(n as f64);
        metrics::gauge!("leakwatch_worker_owned", "partition" => label(partition)).set(1.0);
        metrics::gauge!("leakwatch_worker_lease_epoch", "partition" => label(partition))
            .set(epoch as f64);
    }

    /// Claimed in the database from `committed_seq` on.
    pub fn claimed(&self, partition: u32, committed_seq: u64) {
        self.with(|v| {
            if let Some(p) = v.partitions.get_mut(&partition) {
                p.claimed = true;
                p.committed_seq = committed_seq;
            }
        });
        metrics::gauge!("leakwatch_worker_committed_seq", "partition" => label(partition))
            .set(committed_seq as f64);
    }

    /// A batch committed.
    pub fn committed(
        &self,
        partition: u32,
        seq: u64,
        pending: Option<u64>,
        lag_ms: i64,
        at_ms: i64,
    ) {
        self.with(|v| {
            if let Some(p) = v.partitions.get_mut(&partition) {
                p.committed_seq = seq;
                p.pending = pending;
                p.lag_ms = lag_ms;
                p.committed_at_ms = at_ms;
            }
        });
        let l = label(partition);
        metrics::gauge!("leakwatch_worker_committed_seq", "partition" => l.clone()).set(seq as f64);
        if let Some(n) = pending {
            metrics::gauge!("leakwatch_worker_pending_entries", "partition" => l.clone())
                .set(n as f64);
        }
        metrics::gauge!("leakwatch_worker_lag_seconds", "partition" => l)
            .set(lag_ms as f64 / 1000.0);
    }

    /// Entries still waiting in the log, seen at a fetch that found nothing new.
    pub fn pending(&self, partition: u32, pending: u64) {
        self.with(|v| {
            if let Some(p) = v.partitions.get_mut(&partition) {
                p.pending = Some(pending);
            }
        });
        metrics::gauge!("leakwatch_worker_pending_entries", "partition" => label(partition))
            .set(pending as f64);
    }

    /// A commit refused: a newer owner holds the partition.
    pub fn fenced(&self, partition: u32) {
        self.with(|v| v.fenced += 1);
        metrics::counter!("leakwatch_worker_fenced_total").increment(1);
        self.given_up(partition);
    }

    /// The partition is no longer held (lost, handed over, released).
    pub fn given_up(&self, partition: u32) {
        let n = self.with(|v| {
            v.partitions.remove(&partition);
            v.partitions.len()
        });
        metrics::gauge!("leakwatch_worker_partitions").set(n as f64);
        metrics::gauge!("leakwatch_worker_owned", "partition" => label(partition)).set(0.0);
    }
}

/// A bridge's counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BridgeView {
    pub appended: u64,
    pub duplicates: u64,
    pub append_errors: u64,
    pub in_flight: u64,
    /// The last append error, if the latest append attempt failed.
    pub last_error: Option<String>,
}

/// A bridge's shared status.
#[derive(Debug, Default)]
pub struct BridgeStatus {
    view: Mutex<BridgeView>,
}

impl BridgeStatus {
    fn with<T>(&self, f: impl FnOnce(&mut BridgeView) -> T) -> T {
        f(&mut self.view.lock().expect("not poisoned"))
    }

    pub fn view(&self) -> BridgeView {
        self.with(|v| v.clone())
    }

    pub fn appended(&self, duplicate: bool, seconds: f64) {
        self.with(|v| {
            v.appended += 1;
            v.duplicates += u64::from(duplicate);
            v.last_error = None;
        });
        metrics::counter!("leakwatch_bridge_appended_total",
            "duplicate" => if duplicate { "true" } else { "false" })
        .increment(1);
        metrics::histogram!("leakwatch_bridge_append_seconds").record(seconds);
    }

    pub fn append_failed(&self, error: &str) {
        self.with(|v| {
            v.append_errors += 1;
            v.last_error = Some(error.to_owned());
        });
        metrics::counter!("leakwatch_bridge_append_errors_total").increment(1);
    }

    pub fn in_flight(&self, n: usize) {
        self.with(|v| v.in_flight = n as u64);
        metrics::gauge!("leakwatch_bridge_in_flight").set(n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_view_follows_its_partitions() {
        let s = WorkerStatus::new("w1");
        assert!(!s.ready());
        s.membership(true, 2);
        assert!(s.ready());
        s.taken(3, 7, Some("w0"));
        s.taken(4, 1, None);
        s.claimed(3, 10);
        s.committed(3, 42, Some(5), 1200, 1_000);
        let v = s.view();
        assert_eq!(v.takeovers, 1);
        assert_eq!(v.live_workers, 2);
        let p = &v.partitions[&3];
        assert_eq!(
            (p.epoch, p.claimed, p.committed_seq, p.pending, p.lag_ms),
            (7, true, 42, Some(5), 1200)
        );
        assert!(!v.partitions[&4].claimed);
        s.fenced(3);
        let v = s.view();
        assert_eq!((v.fenced, v.partitions.len()), (1, 1));
        s.given_up(4);
        assert!(s.view().partitions.is_empty());
    }

    #[test]
    fn a_bridge_view_counts_appends() {
        let s = BridgeStatus::default();
        s.appended(false, 0.01);
        s.append_failed("timed out");
        assert_eq!(s.view().last_error.as_deref(), Some("timed out"));
        s.appended(true, 0.02);
        let v = s.view();
        assert_eq!((v.appended, v.duplicates, v.append_errors), (2, 1, 1));
        assert_eq!(v.last_error, None);
    }
}
