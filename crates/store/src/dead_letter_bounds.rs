//! Dead letters written once per message and kept within bounds: a digest of each
//! message (`msg_key`) makes writing the same dead letter again (a retry after a
//! partial commit, a redelivery) a no-op; each meter keeps at most its latest
//! `per_meter_max` dead letters; retention drops those older than an age and all but
//! the newest `keep_max`. Valid readings are never touched by any of this.

use crate::{NewDeadLetter, Result, Store};
use leakwatch_core::{MeterId, Timestamp};
use sha2::{Digest, Sha256};

/// A dead letter with what makes it idempotent and bounded.
#[derive(Debug, Clone)]
pub struct KeyedDeadLetter {
    pub letter: NewDeadLetter,
    /// [`dead_letter_key`] of the whole message.
    pub key: String,
    /// The meter its topic names, when it names one.
    pub meter_id: Option<MeterId>,
}

/// The digest that identifies a dead letter: SHA-256 over the topic, the reason and
/// the whole payload (not only the prefix that is kept), as 32 hex digits.
pub fn dead_letter_key(topic: &str, reason: &str, payload: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update((topic.len() as u64).to_le_bytes());
    h.update(topic.as_bytes());
    h.update((reason.len() as u64).to_le_bytes());
    h.update(reason.as_bytes());
    h.update(payload);
    let digest = h.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// What retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Older than the age limit.
    pub by_age: u64,
    /// Beyond the count limit.
    pub by_count: u64,
}

impl Store {
    /// Writes dead letters in one transaction, each at most once (a key already stored
    /// is skipped), then keeps at most the latest `per_meter_max` of each meter named
    /// (0: no limit). Returns how many were new.
    pub async fn dead_letters_once(
        &self,
        items: &[KeyedDeadLetter],
        per_meter_max: u32,
    ) -> Result<u64> {
        if items.is_empty() {
            return Ok(0);
        }
        let mut meters: Vec<&str> = items
            .iter()
            .filter_map(|i| i.meter_id.as_ref().map(MeterId::as_str))
            .collect();
        meters.sort_unstable();
        meters.dedup();
        let mut new = 0;
        match self {
            Store::Postgres(p) => {
                let mut tx = p.pool().begin().await?;
                for i in items {
                    new += sqlx::query(
                        "INSERT INTO dead_letters
                             (topic, reason, detail, payload, received_at, msg_key, meter_id)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (msg_key) DO NOTHING",
                    )
                    .bind(&i.letter.topic)
                    .bind(&i.letter.reason)
                    .bind(&i.letter.detail)
                    .bind(&i.letter.payload)
                    .bind(i.letter.received_at)
                    .bind(&i.key)
                    .bind(i.meter_id.as_ref().map(MeterId::as_str))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                if per_meter_max > 0 {
                    for m in &meters {
                        sqlx::query(
                            "DELETE FROM dead_letters WHERE meter_id = $1 AND id <
                               (SELECT id FROM dead_letters WHERE meter_id = $1
                                 ORDER BY id DESC LIMIT 1 OFFSET $2)",
                        )
                        .bind(m)
                        .bind(i64::from(per_meter_max) - 1)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                tx.commit().await?;
            }
            Store::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                for i in items {
                    new += sqlx::query(
                        "INSERT INTO dead_letters
                             (topic, reason, detail, payload, received_at, msg_key, meter_id)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT (msg_key) DO NOTHING",
                    )
                    .bind(&i.letter.topic)
                    .bind(&i.letter.reason)
                    .bind(&i.letter.detail)
                    .bind(&i.letter.payload)
                    .bind(i.letter.received_at.timestamp_millis())
                    .bind(&i.key)
                    .bind(i.meter_id.as_ref().map(MeterId::as_str))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                if per_meter_max > 0 {
                    for m in &meters {
                        sqlx::query(
                            "DELETE FROM dead_letters WHERE meter_id = ?1 AND id <
                               (SELECT id FROM dead_letters WHERE meter_id = ?1
                                 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                        )
                        .bind(m)
                        .bind(i64::from(per_meter_max) - 1)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                tx.commit().await?;
            }
        }
        Ok(new)
    }

    /// Dead-letter retention: removes those received before `older_than`, then all but
    /// the newest `keep_max` (0: no count limit).
    pub async fn prune_dead_letters(&self, older_than: Timestamp, keep_max: u64) -> Result<Pruned> {
        let keep = i64::try_from(keep_max).unwrap_or(i64::MAX);
        let mut pruned = Pruned::default();
        match self {
            Store::Postgres(p) => {
                pruned.by_age = sqlx::query("DELETE FROM dead_letters WHERE received_at < $1")
                    .bind(older_than)
                    .execute(p.pool())
                    .await?
                    .rows_affected();
                if keep > 0 {
                    pruned.by_count = sqlx::query(
                        "DELETE FROM dead_letters WHERE id <
                           (SELECT id FROM dead_letters ORDER BY id DESC LIMIT 1 OFFSET $1)",
                    )
                    .bind(keep - 1)
                    .execute(p.pool())
                    .await?
                    .rows_affected();
                }
            }
            Store::Sqlite(pool) => {
                pruned.by_age = sqlx::query("DELETE FROM dead_letters WHERE received_at < ?1")
                    .bind(older_than.timestamp_millis())
                    .execute(pool)
                    .await?
                    .rows_affected();
                if keep > 0 {
                    pruned.by_count = sqlx::query(
                        "DELETE FROM dead_letters WHERE id <
                           (SELECT id FROM dead_letters ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                    )
                    .bind(keep - 1)
                    .execute(pool)
                    .await?
                    .rows_affected();
                }
            }
        }
        Ok(pruned)
    }

    /// How many dead letters are stored for `meter`.
    pub async fn count_dead_letters_of(&self, meter: &MeterId) -> Result<i64> {
        Ok(match self {
            Store::Postgres(p) => {
                sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE meter_id = $1")
                    .bind(meter.as_str())
                    .fetch_one(p.pool())
                    .await?
            }
            Store::Sqlite(pool) => {
                sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE meter_id = ?1")
                    .bind(meter.as_str())
                    .fetch_one(pool)
                    .await?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn letter(topic: &str, at: Timestamp) -> NewDeadLetter {
        NewDeadLetter {
            topic: topic.into(),
            reason: "bad_json".into(),
            detail: "x".into(),
            payload: b"{".to_vec(),
            received_at: at,
        }
    }

    fn keyed(topic: &str, payload: &[u8], meter: Option<&str>, at: Timestamp) -> KeyedDeadLetter {
        KeyedDeadLetter {
            letter: letter(topic, at),
            key: dead_letter_key(topic, "bad_json", payload),
            meter_id: meter.map(|m| MeterId::parse(m).unwrap()),
        }
    }

    async fn stores() -> Vec<(Store, Option<(String, String)>)> {
        let mut out = vec![(Store::connect("sqlite::memory:").await.unwrap(), None)];
        // The one rule: in CI a missing PostgreSQL fails, elsewhere it is skipped.
        if let Some(admin) = crate::testing::required_env(crate::testing::PG_ENV) {
            let url = crate::testing::fresh_pg_database(&admin).await.unwrap();
            out.push((Store::connect(&url).await.unwrap(), Some((admin, url))));
        }
        out
    }

    #[test]
    fn keys_depend_on_the_whole_message() {
        let a = dead_letter_key("gas/D/M/up", "bad_json", b"{");
        assert_eq!(a.len(), 32);
        assert_eq!(a, dead_letter_key("gas/D/M/up", "bad_json", b"{"));
        assert_ne!(a, dead_letter_key("gas/D/M/up", "bad_json", b"{{"));
        assert_ne!(a, dead_letter_key("gas/D/N/up", "bad_json", b"{"));
        assert_ne!(a, dead_letter_key("gas/D/M/up", "empty", b"{"));
        // Field boundaries count: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            dead_letter_key("ab", "c", b""),
            dead_letter_key("a", "bc", b"")
        );
    }

    #[tokio::test]
    async fn dead_letters_are_written_once_and_bounded_per_meter() {
        for (store, pg) in stores().await {
            let t = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
            let batch: Vec<KeyedDeadLetter> = (0..5)
                .map(|i| keyed("gas/D/M1/up", format!("{{{i}").as_bytes(), Some("M1"), t))
                .collect();
            assert_eq!(store.dead_letters_once(&batch, 0).await.unwrap(), 5);
            // The same again (a retry): nothing new.
            assert_eq!(store.dead_letters_once(&batch, 0).await.unwrap(), 0);
            assert_eq!(store.count_dead_letters().await.unwrap(), 5);
            // A bound of 3 per meter keeps M1's latest 3 and leaves others alone.
            let more = vec![
                keyed("gas/D/M1/up", b"{late", Some("M1"), t),
                keyed("gas/D/M2/up", b"{", Some("M2"), t),
                keyed("bad topic", b"{", None, t),
            ];
            assert_eq!(store.dead_letters_once(&more, 3).await.unwrap(), 3);
            let m1 = MeterId::parse("M1").unwrap();
            assert_eq!(store.count_dead_letters_of(&m1).await.unwrap(), 3);
            assert_eq!(store.count_dead_letters().await.unwrap(), 5);
            let kept: Vec<Vec<u8>> = store
                .list_dead_letters(10)
                .await
                .unwrap()
                .into_iter()
                .filter(|d| d.topic == "gas/D/M1/up")
                .map(|d| d.payload)
                .collect();
            assert_eq!(kept.len(), 3, "{}", store.backend());
            store.close().await;
            if let Some((admin, url)) = pg {
                crate::testing::drop_pg_database(&admin, &url).await;
            }
        }
    }

    #[tokio::test]
    async fn retention_drops_old_ones_then_the_oldest_beyond_the_count() {
        for (store, pg) in stores().await {
            let old = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
            let recent = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
            let mut batch: Vec<KeyedDeadLetter> = (0..3)
                .map(|i| keyed("t", format!("old{i}").as_bytes(), None, old))
                .collect();
            batch.extend((0..6).map(|i| keyed("t", format!("new{i}").as_bytes(), None, recent)));
            store.dead_letters_once(&batch, 0).await.unwrap();
            let cutoff = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
            let p = store.prune_dead_letters(cutoff, 4).await.unwrap();
            assert_eq!(
                p,
                Pruned {
                    by_age: 3,
                    by_count: 2
                },
                "{}",
                store.backend()
            );
            assert_eq!(store.count_dead_letters().await.unwrap(), 4);
            // Nothing more to do.
            assert_eq!(
                store.prune_dead_letters(cutoff, 4).await.unwrap(),
                Pruned::default()
            );
            store.close().await;
            if let Some((admin, url)) = pg {
                crate::testing::drop_pg_database(&admin, &url).await;
            }
        }
    }
}
