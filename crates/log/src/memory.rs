//! A log in memory ([`MemoryLog`]), for tests of the bridge and the workers that need
//! no nats-server: one sequence across partitions (as a JetStream stream numbers its
//! messages), the same deduplication by id (no window: forever), readers that start
//! at a sequence and acknowledge up to one. Only built with the `testkit` feature.

use crate::{Append, Appended, Entry, Log, LogError, PartitionReader};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    /// (partition, entry), in sequence order.
    entries: Vec<(u32, Entry)>,
    ids: HashMap<String, u64>,
}

/// The log; clones share it.
#[derive(Clone, Default)]
pub struct MemoryLog {
    state: Arc<Mutex<State>>,
}

impl MemoryLog {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Log for MemoryLog {
    type Reader = MemoryReader;
    type Pending = std::future::Ready<Result<Appended, LogError>>;

    async fn send(&self, m: Append) -> Result<Self::Pending, LogError> {
        Ok(std::future::ready(self.append(m).await))
    }

    async fn append(&self, m: Append) -> Result<Appended, LogError> {
        let mut s = self.state.lock().expect("not poisoned");
        if let Some(&seq) = s.ids.get(&m.dedupe_id) {
            return Ok(Appended {
                seq,
                duplicate: true,
            });
        }
        let seq = s.entries.len() as u64 + 1;
        s.ids.insert(m.dedupe_id, seq);
        s.entries.push((
            m.partition,
            Entry {
                seq,
                topic: m.topic,
                received_at_ms: m.received_at_ms,
                payload: m.payload,
                pending: None,
            },
        ));
        Ok(Appended {
            seq,
            duplicate: false,
        })
    }

    async fn open(&self, partition: u32, from_seq: u64) -> Result<MemoryReader, LogError> {
        Ok(MemoryReader {
            log: self.clone(),
            partition,
            next: from_seq.max(1),
        })
    }

    async fn last_seq(&self, partition: u32) -> Result<u64, LogError> {
        let s = self.state.lock().expect("not poisoned");
        Ok(s.entries
            .iter()
            .rev()
            .find(|(p, _)| *p == partition)
            .map_or(0, |(_, e)| e.seq))
    }
}

/// One partition's reader.
pub struct MemoryReader {
    log: MemoryLog,
    partition: u32,
    next: u64,
}

impl PartitionReader for MemoryReader {
    async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Entry>, LogError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let out: Vec<Entry> = {
                let s = self.log.state.lock().expect("not poisoned");
                let from = (self.next - 1) as usize;
                let mine: Vec<&Entry> = s.entries[from.min(s.entries.len())..]
                    .iter()
                    .filter(|(p, _)| *p == self.partition)
                    .map(|(_, e)| e)
                    .collect();
                let pending = mine.len();
                mine.into_iter()
                    .take(max)
                    .enumerate()
                    .map(|(i, e)| Entry {
                        pending: Some((pending - i - 1) as u64),
                        ..e.clone()
                    })
                    .collect()
            };
            if let Some(last) = out.last() {
                self.next = last.seq + 1;
                return Ok(out);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(out);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn ack_upto(&mut self, _seq: u64) -> Result<(), LogError> {
        Ok(())
    }
}
