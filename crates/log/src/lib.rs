//! The replicated log of the scaled-out shape (`leakwatch bridge` / `leakwatch worker`,
//! `docs/scale-out.md`), behind a narrow interface so that another log (Kafka) can be
//! added without touching the bridge or the workers:
//!
//! * [`Log::append`]: one message to one partition, with a deduplication id, returning
//!   once the log has stored it (replicated) with its sequence number;
//! * [`Log::open`]: a reader of one partition from a sequence on ([`PartitionReader`]:
//!   fetch a batch, acknowledge up to a sequence).
//!
//! The partition of a message is computed here ([`partition_of`], FNV-1a of the
//! district id modulo the fixed partition count), not by the server's subject mapping:
//! the same function serves the bridge, the workers, the tests and any other log, and
//! needs no server configuration (nats-server 2.9's `partition(n, ...)` mapping is an
//! account-level import/export setting that a client cannot check).
//!
//! [`jetstream`] implements it on NATS JetStream (2.9 or later): one stream, R3, file
//! storage, a deduplication window, retention by age; subjects
//! `{subject_prefix}.{partition}.{district}`; one durable pull consumer per partition,
//! re-created from the owner's committed sequence at every change of owner.
//! [`lease`] holds partition ownership in a JetStream key-value bucket (compare-and-set,
//! TTL, epoch = revision at acquisition).

pub mod jetstream;
pub mod lease;
#[cfg(feature = "testkit")]
pub mod memory;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::future::Future;
use std::time::Duration;

pub use jetstream::{JetStreamLog, LogConfig, NatsTls};
pub use lease::{Lease, LeaseConfig, Leases};

/// Header carrying when the bridge received the message (milliseconds since the epoch),
/// so that a worker judges a redelivered message as the first one would have.
pub const RECEIVED_AT_HEADER: &str = "Lw-Received-Ms";

/// Header carrying the MQTT topic the message came on.
pub const TOPIC_HEADER: &str = "Lw-Topic";

/// The partition of a district among `partitions`: FNV-1a (32 bit) of its id. Never
/// change it (or the partition count) on a running fleet: partitions move whole.
pub fn partition_of(district: &str, partitions: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in district.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % partitions.max(1)
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct Append {
    pub partition: u32,
    /// The message's key inside its partition (the district): part of the subject.
    pub key: String,
    /// The deduplication id: the same id within the log's window is stored once.
    pub dedupe_id: String,
    pub topic: String,
    pub received_at_ms: i64,
    pub payload: bytes::Bytes,
}

/// What the log answered to an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// The id was seen within the window; nothing new was stored.
    pub duplicate: bool,
}

/// A stored message, as a reader gets it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The log's sequence (for JetStream: the stream sequence, increasing across all
    /// partitions; for Kafka it would be the partition offset).
    pub seq: u64,
    pub topic: String,
    pub received_at_ms: i64,
    pub payload: bytes::Bytes,
    /// Entries of the partition stored after this one and not yet delivered to the
    /// reader (its lag), when the log says.
    pub pending: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LogError(pub String);

impl LogError {
    pub fn new(e: impl std::fmt::Display) -> Self {
        LogError(e.to_string())
    }
}

/// The narrow interface the bridge and the workers use.
pub trait Log: Send + Sync {
    type Reader: PartitionReader;
    /// A message handed over by [`Log::send`], until the log has stored it.
    type Pending: Future<Output = Result<Appended, LogError>> + Send + 'static;

    /// Appends one message and waits until the log has stored it.
    fn append(&self, m: Append) -> impl Future<Output = Result<Appended, LogError>> + Send;

    /// Hands one message to the log and returns without waiting for it to be stored
    /// (the returned [`Log::Pending`] says when it is): messages one caller sends one
    /// after another reach the log in that order, while their storage is awaited
    /// together. A failed pending message is retried with [`Log::append`] (same
    /// deduplication id), possibly behind later ones.
    fn send(&self, m: Append) -> impl Future<Output = Result<Self::Pending, LogError>> + Send;

    /// Opens partition `partition` for reading from `from_seq` (the first sequence not
    /// yet committed) on; the previous reader of the partition, if any, stops working.
    fn open(
        &self,
        partition: u32,
        from_seq: u64,
    ) -> impl Future<Output = Result<Self::Reader, LogError>> + Send;

    /// The last sequence stored in `partition` (0 when empty), for the checks that a
    /// quiet system has committed all.
    fn last_seq(&self, partition: u32) -> impl Future<Output = Result<u64, LogError>> + Send;
}

/// One partition's reader.
pub trait PartitionReader: Send {
    /// Up to `max` entries, waiting at most `wait` for the first.
    fn fetch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Entry>, LogError>> + Send;

    /// Acknowledges every entry up to and including `seq` (after its commit).
    fn ack_upto(&mut self, seq: u64) -> impl Future<Output = Result<(), LogError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_stable_and_in_range() {
        // FNV-1a 32 of "a" is 0xe40c292c; the function must never change.
        assert_eq!(partition_of("a", 1 << 31), 0xe40c_292c % (1 << 31));
        for p in [1, 7, 256] {
            for d in ["D001", "north", "x"] {
                assert!(partition_of(d, p) < p);
                assert_eq!(partition_of(d, p), partition_of(d, p));
            }
        }
        assert_eq!(partition_of("anything", 0), 0);
    }

    #[test]
    fn districts_spread_over_partitions() {
        let p = 8;
        let mut seen = vec![0u32; p as usize];
        for i in 0..240 {
            seen[partition_of(&format!("D{i:03}"), p) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 10), "{seen:?}");
    }
}
