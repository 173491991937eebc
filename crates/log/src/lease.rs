//! Leases in a JetStream key-value bucket: one key per leased thing (`p17`, `jobs`,
//! `member.w1`), the value `{owner, epoch, expires_ms}`.
//!
//! * Taking a free or expired lease is a compare-and-set on the revision read (a
//!   `create` when the key never existed), with `epoch` one more than the previous
//!   holder's: of two workers racing for it exactly one wins, and each epoch has one
//!   holder.
//! * Renewing is a compare-and-set on the holder's last revision; a failed renewal
//!   means the lease is lost.
//! * Expiry is wall-clock time written by the holder (`expires_ms`): clocks must agree
//!   to well within the TTL. A lease only says who *should* work; the database's
//!   fencing row (the epoch) is what stops a former holder's writes.
//!
//! The bucket's stream is created directly (async-nats 0.51's `create_key_value` cannot
//! read nats-server 2.9's answer); it is the stream a KV bucket is: `KV_{bucket}`,
//! subjects `$KV.{bucket}.>`, one message per subject, roll-ups allowed.

use crate::LogError;
use crate::jetstream::retry;
use async_nats::jetstream::{self, kv, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub bucket: String,
    pub replicas: usize,
    pub ttl: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            bucket: "leakwatch_leases".into(),
            replicas: 3,
            ttl: Duration::from_secs(10),
        }
    }
}

/// What a lease key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    pub owner: String,
    pub epoch: u64,
    pub expires_ms: i64,
}

/// A lease held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub epoch: u64,
    /// The revision of our last write (the next renewal's compare-and-set).
    pub revision: u64,
    pub expires_ms: i64,
    /// When the lease was taken from another holder whose lease had expired
    /// (not released): that holder (a takeover).
    pub taken_from: Option<String>,
}

/// The lease bucket.
#[derive(Clone)]
pub struct Leases {
    kv: kv::Store,
    owner: String,
    ttl: Duration,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("owner", &self.owner)
            .finish()
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Leases {
    /// Opens (creating if missing) the bucket; `owner` names this process.
    pub async fn open(
        js: &jetstream::Context,
        cfg: &LeaseConfig,
        owner: &str,
    ) -> Result<Leases, LogError> {
        let stream_cfg = stream::Config {
            name: format!("KV_{}", cfg.bucket),
            subjects: vec![format!("$KV.{}.>", cfg.bucket)],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            num_replicas: cfg.replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        retry("create the lease bucket", 60, || async {
            js.get_or_create_stream(stream_cfg.clone())
                .await
                .map(|_| ())
                .map_err(LogError::new)
        })
        .await?;
        let kv = retry("open the lease bucket", 60, || async {
            js.get_key_value(cfg.bucket.clone())
                .await
                .map_err(LogError::new)
        })
        .await?;
        Ok(Leases {
            kv,
            owner: owner.to_owned(),
            ttl: cfg.ttl,
        })
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The current value and revision of `key` (`None`: never written).
    pub async fn read(&self, key: &str) -> Result<Option<(LeaseValue, u64)>, LogError> {
        let Some(e) = self.kv.entry(key).await.map_err(LogError::new)? else {
            return Ok(None);
        };
        if e.operation != kv::Operation::Put {
            return Ok(Some((
                LeaseValue {
                    owner: String::new(),
                    epoch: 0,
                    expires_ms: 0,
                },
                e.revision,
            )));
        }
        let v: LeaseValue = serde_json::from_slice(&e.value).map_err(LogError::new)?;
        Ok(Some((v, e.revision)))
    }

    /// Takes `key` if it is free or expired at `now_ms`; `None` if someone else holds it
    /// or won the race.
    pub async fn try_acquire(&self, key: &str, now_ms: i64) -> Result<Option<Lease>, LogError> {
        let current = self.read(key).await?;
        let (epoch, rev) = match &current {
            None => (1, None),
            Some((v, rev)) if v.expires_ms <= now_ms || v.owner == self.owner => {
                (v.epoch + 1, Some(*rev))
            }
            Some(_) => return Ok(None),
        };
        let value = LeaseValue {
            owner: self.owner.clone(),
            epoch,
            expires_ms: now_ms + self.ttl.as_millis() as i64,
        };
        let bytes = serde_json::to_vec(&value).map_err(LogError::new)?;
        let written = match rev {
            None => self.kv.create(key, bytes.into()).await.ok(),
            Some(rev) => self.kv.update(key, bytes.into(), rev).await.ok(),
        };
        let taken_from = current
            .map(|(v, _)| v)
            .filter(|v| !v.owner.is_empty() && v.owner != self.owner && v.expires_ms > 0)
            .map(|v| v.owner);
        Ok(written.map(|revision| Lease {
            key: key.to_owned(),
            epoch,
            revision,
            expires_ms: value.expires_ms,
            taken_from,
        }))
    }

    /// Extends a held lease; `Ok(false)` if it was lost (someone else wrote the key).
    pub async fn renew(&self, lease: &mut Lease, now_ms: i64) -> Result<bool, LogError> {
        let value = LeaseValue {
            owner: self.owner.clone(),
            epoch: lease.epoch,
            expires_ms: now_ms + self.ttl.as_millis() as i64,
        };
        let bytes = serde_json::to_vec(&value).map_err(LogError::new)?;
        match self
            .kv
            .update(&lease.key, bytes.into(), lease.revision)
            .await
        {
            Ok(rev) => {
                lease.revision = rev;
                lease.expires_ms = value.expires_ms;
                Ok(true)
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(LogError::new(e)),
        }
    }

    /// Gives a lease up (expired at once, same epoch), if still ours.
    pub async fn release(&self, lease: &Lease) -> Result<(), LogError> {
        let value = LeaseValue {
            owner: self.owner.clone(),
            epoch: lease.epoch,
            expires_ms: 0,
        };
        let bytes = serde_json::to_vec(&value).map_err(LogError::new)?;
        let _ = self
            .kv
            .update(&lease.key, bytes.into(), lease.revision)
            .await;
        Ok(())
    }

    /// Owners of unexpired `member.*` keys (the live workers), sorted.
    pub async fn live_members(&self, now_ms: i64) -> Result<Vec<String>, LogError> {
        let mut keys = self.kv.keys().await.map_err(LogError::new)?;
        let mut names = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(LogError::new)?;
            if k.starts_with("member.") {
                names.push(k);
            }
        }
        // Read concurrently: one round trip for all, not one per member.
        let values = futures_util::future::join_all(names.iter().map(|k| self.read(k))).await;
        let mut live = Vec::new();
        for v in values {
            if let Some((v, _)) = v?
                && v.expires_ms > now_ms
            {
                live.push(v.owner);
            }
        }
        live.sort();
        live.dedup();
        Ok(live)
    }
}
