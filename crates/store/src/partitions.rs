//! The scaled-out shape's commit (issue 14, `docs/scale-out.md`): per log partition
//! one fencing row (`lw_partitions`, migration 0013) and one transaction per batch
//! that writes the readings, the device events, the detectors' changed state, the
//! alerts the batch found (and resolved), the partition's last stream sequence and its
//! watermark, and succeeds only while the partition's epoch is still the committer's.
//! PostgreSQL only: the scaled-out shape does not run on SQLite.

use crate::{InsertOutcome, ReadingFlags, Result, Store, StoreError, pg, readings};
use leakwatch_core::{DistrictId, Finding, MeterEvent, Reading, Timestamp};

/// A partition's committed position, as a new owner loads it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionCheckpoint {
    pub partition: u32,
    pub epoch: u64,
    pub owner: String,
    pub last_seq: u64,
    pub watermark: Option<Timestamp>,
}

/// What one alert step of a batch does, in the order detection produced them.
#[derive(Debug, Clone)]
pub enum AlertStep {
    /// Record a finding (`AlertStore::record_finding`).
    Record(Finding),
    /// Resolve the district's alerts last seen before `seen_before`
    /// (`AlertStore::resolve_quiet_alerts_in`).
    Resolve {
        district: DistrictId,
        seen_before: Timestamp,
        reason: String,
    },
}

/// One batch of one partition.
#[derive(Debug, Clone, Default)]
pub struct PartitionCommit {
    pub partition: u32,
    pub epoch: u64,
    pub owner: String,
    /// The last stream sequence the batch covers.
    pub last_seq: u64,
    pub watermark: Option<Timestamp>,
    pub rows: Vec<(Reading, ReadingFlags)>,
    pub events: Vec<MeterEvent>,
    /// Detector state rows (`meter:..`, `district:..`, `engine:p..`).
    pub state: Vec<(String, Vec<u8>)>,
    pub alerts: Vec<AlertStep>,
    pub received_at: Timestamp,
    /// Milliseconds from the bridge's receipt of the batch's oldest message to now.
    pub lag_ms: i64,
}

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed {
        readings: InsertOutcome,
        /// Alerts newly created by the batch.
        new_alerts: u64,
    },
    /// A newer owner holds the partition (its epoch is `current`): nothing was written.
    Fenced { current: u64 },
}

type ReadingRow = (
    String,
    Timestamp,
    f64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

fn pg_pool(store: &Store) -> Result<&sqlx::PgPool> {
    match store {
        Store::Postgres(p) => Ok(p.pool()),
        Store::Sqlite(_) => Err(StoreError::Conflict(
            "the scaled-out worker needs PostgreSQL".into(),
        )),
    }
}

fn seq_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Raises `partition`'s epoch to `epoch` for `owner` (a new lease holder) and loads
    /// its checkpoint; `None` if the row already has a higher epoch (a newer holder).
    /// After this returns, no commit of an older epoch can succeed.
    pub async fn claim_partition(
        &self,
        partition: u32,
        epoch: u64,
        owner: &str,
    ) -> Result<Option<PartitionCheckpoint>> {
        let pool = pg_pool(self)?;
        let row: Option<(i64, String, i64, Option<Timestamp>)> = sqlx::query_as(
            "INSERT INTO lw_partitions (partition, epoch, owner) VALUES ($1, $2, $3)
             ON CONFLICT (partition) DO UPDATE SET epoch = excluded.epoch, owner = excluded.owner
                 WHERE lw_partitions.epoch <= excluded.epoch
             RETURNING epoch, owner, last_seq, watermark",
        )
        .bind(partition as i32)
        .bind(seq_i64(epoch))
        .bind(owner)
        .fetch_optional(pool)
        .await?;
        Ok(
            row.map(|(epoch, owner, last_seq, watermark)| PartitionCheckpoint {
                partition,
                epoch: epoch as u64,
                owner,
                last_seq: last_seq as u64,
                watermark,
            }),
        )
    }

    /// Every partition's checkpoint, by partition.
    pub async fn partition_checkpoints(&self) -> Result<Vec<PartitionCheckpoint>> {
        let pool = pg_pool(self)?;
        let rows: Vec<(i32, i64, String, i64, Option<Timestamp>)> = sqlx::query_as(
            "SELECT partition, epoch, owner, last_seq, watermark FROM lw_partitions
             ORDER BY partition",
        )
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(p, epoch, owner, last_seq, watermark)| PartitionCheckpoint {
                    partition: p as u32,
                    epoch: epoch as u64,
                    owner,
                    last_seq: last_seq as u64,
                    watermark,
                },
            )
            .collect())
    }

    /// The largest receipt-to-commit delay of any partition, milliseconds.
    pub async fn partitions_max_lag_ms(&self) -> Result<i64> {
        let pool = pg_pool(self)?;
        let (n,): (Option<i64>,) = sqlx::query_as("SELECT max(max_lag_ms) FROM lw_partitions")
            .fetch_one(pool)
            .await?;
        Ok(n.unwrap_or(0))
    }

    /// Commits refused for a stale epoch, so far.
    pub async fn partition_refusals(&self) -> Result<u64> {
        let pool = pg_pool(self)?;
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM lw_partition_refusals")
            .fetch_one(pool)
            .await?;
        Ok(n as u64)
    }

    /// Readings of `meters` stamped at or after `from`, in (t, meter) order after
    /// `after`, at most `limit`: a partition's replay after a takeover reads its own
    /// meters, not the whole fleet's.
    pub async fn meters_readings_since(
        &self,
        meters: &[String],
        from: Timestamp,
        after: Option<(Timestamp, &str)>,
        limit: u32,
    ) -> Result<Vec<Reading>> {
        let pool = pg_pool(self)?;
        let rows: Vec<ReadingRow> = sqlx::query_as(
            "SELECT meter_id, t, vol, temp, flow_max, pressure FROM readings
             WHERE meter_id = ANY($1::text[]) AND t >= $2
               AND ($3::timestamptz IS NULL OR (t, meter_id) > ($3, $4::text))
             ORDER BY t, meter_id LIMIT $5",
        )
        .bind(meters)
        .bind(from)
        .bind(after.map(|(t, _)| t))
        .bind(after.map(|(_, m)| m))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
        rows.into_iter()
            .map(|(meter, t, vol, temp, flow_max, pressure)| {
                Ok(Reading {
                    meter: leakwatch_core::MeterId::parse(meter)
                        .map_err(|e| StoreError::Conflict(e.to_string()))?,
                    t,
                    vol,
                    temp,
                    flow_max,
                    pressure,
                })
            })
            .collect()
    }

    /// Detector state rows whose subject is one of `subjects`.
    pub async fn detector_state_of(&self, subjects: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
        let pool = pg_pool(self)?;
        Ok(sqlx::query_as(
            "SELECT subject, state FROM detector_state WHERE subject = ANY($1::text[])",
        )
        .bind(subjects)
        .fetch_all(pool)
        .await?)
    }

    /// Commits one batch of one partition in one transaction, fenced by the epoch (the
    /// fencing row is locked first, so a concurrent claim waits for this commit or this
    /// commit sees the claim). A refused commit is recorded in `lw_partition_refusals`.
    pub async fn commit_partition(&self, c: &PartitionCommit) -> Result<CommitOutcome> {
        readings::check_volumes(&c.rows)?;
        let pool = pg_pool(self)?;
        let mut tx = pool.begin().await?;
        let current: Option<(i64,)> =
            sqlx::query_as("SELECT epoch FROM lw_partitions WHERE partition = $1 FOR UPDATE")
                .bind(c.partition as i32)
                .fetch_optional(&mut *tx)
                .await?;
        let current = current.map_or(0, |(e,)| e as u64);
        if current != c.epoch {
            tx.rollback().await?;
            sqlx::query(
                "INSERT INTO lw_partition_refusals (partition, epoch, current_epoch, owner)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(c.partition as i32)
            .bind(seq_i64(c.epoch))
            .bind(seq_i64(current))
            .bind(&c.owner)
            .execute(pool)
            .await?;
            return Ok(CommitOutcome::Fenced { current });
        }
        let all: Vec<&pg::Batched> = c.rows.iter().collect();
        let counts = if all.is_empty() {
            (0, 0)
        } else {
            pg::insert_split(&mut tx, &all, c.received_at).await?
        };
        for e in &c.events {
            sqlx::query(
                "INSERT INTO meter_events (meter_id, t, code) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(e.meter.as_str())
            .bind(e.t)
            .bind(e.code.to_text())
            .execute(&mut *tx)
            .await?;
        }
        if !c.state.is_empty() {
            let subjects: Vec<&str> = c.state.iter().map(|(s, _)| s.as_str()).collect();
            let states: Vec<&[u8]> = c.state.iter().map(|(_, b)| b.as_slice()).collect();
            sqlx::query(
                "INSERT INTO detector_state (subject, state, updated_at)
                 SELECT s, b, $3 FROM UNNEST($1::text[], $2::bytea[]) AS u(s, b)
                 ON CONFLICT (subject) DO UPDATE SET state = excluded.state,
                                                     updated_at = excluded.updated_at",
            )
            .bind(&subjects)
            .bind(&states)
            .bind(c.received_at)
            .execute(&mut *tx)
            .await?;
        }
        let mut new_alerts = 0;
        for step in &c.alerts {
            match step {
                AlertStep::Record(f) => {
                    let (created,): (bool,) = sqlx::query_as(
                        "INSERT INTO alerts (subject, kind, severity, status, meter_id, district_id,
                                             detected_at, last_seen, count, evidence, created_at)
                         VALUES ($1, $2, $3, 'open', $4, $5, $6, $6, 1, $7, $8)
                         ON CONFLICT (subject, kind)
                             WHERE status IN ('open', 'acknowledged', 'escalated')
                         DO UPDATE SET count = alerts.count + 1,
                                       last_seen = GREATEST(alerts.last_seen, excluded.last_seen),
                                       evidence = excluded.evidence,
                                       severity = CASE WHEN (CASE excluded.severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END)
                                                      > (CASE alerts.severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END)
                                                  THEN excluded.severity ELSE alerts.severity END
                         RETURNING (xmax = 0)",
                    )
                    .bind(f.subject().key())
                    .bind(f.kind.as_str())
                    .bind(f.severity.as_str())
                    .bind(f.meter_id.as_ref().map(|m| m.as_str()))
                    .bind(f.district_id.as_ref().map(|d| d.as_str()))
                    .bind(f.detected_at)
                    .bind(sqlx::types::Json(&f.evidence))
                    .bind(chrono::Utc::now())
                    .fetch_one(&mut *tx)
                    .await?;
                    new_alerts += u64::from(created);
                }
                AlertStep::Resolve {
                    district,
                    seen_before,
                    reason,
                } => {
                    sqlx::query(
                        "UPDATE alerts SET status = 'resolved', status_reason = $2
                         WHERE status IN ('open', 'acknowledged') AND last_seen < $1
                           AND district_id = $3",
                    )
                    .bind(seen_before)
                    .bind(reason)
                    .bind(district.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        sqlx::query(
            "UPDATE lw_partitions SET last_seq = GREATEST(last_seq, $2), watermark = $3,
                                      committed_at = now(),
                                      max_lag_ms = GREATEST(max_lag_ms, $4)
             WHERE partition = $1",
        )
        .bind(c.partition as i32)
        .bind(seq_i64(c.last_seq))
        .bind(c.watermark)
        .bind(c.lag_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(CommitOutcome::Committed {
            readings: InsertOutcome::of(c.rows.len(), counts),
            new_alerts,
        })
    }
}
