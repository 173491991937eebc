//! The readings aggregate: raw readings with their flags, conflicting repeats, the
//! hourly rollup and its archive (retention), and the meters' device events.

use crate::db::{Row, args, sql};
use crate::{Result, Store, StoreError, parse_meter_id, pg, sqlite};
use leakwatch_core::{EventCode, MeterEvent, MeterId, Reading, ReadingFlags, Timestamp};
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;

/// How a batch of readings went. Every row of the batch is counted once, in exactly one
/// of the three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InsertOutcome {
    /// Rows newly stored.
    pub inserted: u64,
    /// Rows whose (meter, t) was already stored (or came earlier in the batch) with the
    /// same volume ([`same_volume`]): nothing written.
    pub duplicates: u64,
    /// Rows whose (meter, t) was already stored (or came earlier in the batch) with
    /// another volume: the stored reading is left as it is and the row is logged in
    /// `reading_conflicts` ([`ReadingStore::list_conflicts`]).
    pub conflicts: u64,
}

impl InsertOutcome {
    /// The outcome of `rows` rows of which `inserted` were stored and `conflicts`
    /// conflicted: the rest are duplicates.
    pub(crate) fn of(rows: usize, (inserted, conflicts): (u64, u64)) -> Self {
        InsertOutcome {
            inserted,
            duplicates: rows as u64 - inserted - conflicts,
            conflicts,
        }
    }
}

/// Whether two volumes are the same reading: equal once rounded to 1e-9 m³. Meters round
/// to the litre (1e-3 m³), so anything below 1e-9 is representation noise (a value that
/// went through decimal text and back), never a different reading.
pub fn same_volume(a: f64, b: f64) -> bool {
    a == b || (a * 1e9).round() == (b * 1e9).round()
}

/// A reading that arrived for a (meter, t) already stored with another volume.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadingConflict {
    pub id: i64,
    pub meter_id: MeterId,
    pub t: Timestamp,
    /// The volume stored (and kept).
    pub stored_vol: f64,
    /// The volume that arrived (and was not stored).
    pub received_vol: f64,
    /// When the batch holding it was received (the `received_at` of
    /// [`ReadingStore::insert_batch`]).
    pub received_at: Timestamp,
}

/// A meter's readings within one UTC hour: the first and last by time, and how many.
/// Consumption within the hour is `last_vol - first_vol`; across hours, subtract the
/// previous row's `last_vol`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HourlyRow {
    pub meter_id: MeterId,
    /// The start of the hour (UTC).
    pub hour: Timestamp,
    pub first_t: Timestamp,
    pub first_vol: f64,
    pub last_t: Timestamp,
    pub last_vol: f64,
    /// How many readings the hour received (raw readings later dropped still count).
    pub n: i64,
}

/// The readings of the meters, their conflicts, hourly rollup and device events.
pub trait ReadingStore: Send + Sync {
    /// Stores readings with their flags, in one transaction, idempotently on (meter, t):
    ///
    /// * a (meter, t) not stored yet is inserted (only into `readings`: the hourly view
    ///   [`ReadingStore::hourly`] aggregates raw readings when read);
    /// * a (meter, t) already stored with the same volume ([`same_volume`]) is a
    ///   duplicate: nothing is written;
    /// * a (meter, t) already stored with another volume is a conflict: the stored
    ///   reading is left as it is and the row is logged in `reading_conflicts` with
    ///   `received_at`.
    ///
    /// Within the batch the first row of a (meter, t) wins and later ones count as
    /// duplicates or conflicts against it. The flags of duplicates and conflicts are
    /// dropped.
    ///
    /// Non-finite optional values (`temp`, `flow_max`, `pressure`) are stored as NULL;
    /// a non-finite `vol` refuses the whole batch with [`StoreError::Corrupt`].
    ///
    /// On PostgreSQL, rows later than their meter's latest stored reading (the usual
    /// case) go in with binary `COPY`, the rest with `INSERT ... ON CONFLICT`; SQLite
    /// runs cached prepared statements row by row. `benches/store_pg.rs` measures it.
    fn insert_batch(
        &self,
        rows: &[(Reading, ReadingFlags)],
        received_at: Timestamp,
    ) -> impl Future<Output = Result<InsertOutcome>> + Send;

    /// [`ReadingStore::insert_batch`] with no flags, received now.
    fn insert_readings(
        &self,
        readings: &[Reading],
    ) -> impl Future<Output = Result<InsertOutcome>> + Send {
        let rows: Vec<(Reading, ReadingFlags)> = readings
            .iter()
            .map(|r| (r.clone(), ReadingFlags::default()))
            .collect();
        async move { self.insert_batch(&rows, chrono::Utc::now()).await }
    }

    /// A meter's readings ordered by time, `from` inclusive, `to` exclusive, at most
    /// `limit`.
    fn readings(
        &self,
        meter: &MeterId,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Reading>>> + Send {
        async move {
            let rows = self.readings_flagged(meter, from, to, limit).await?;
            Ok(rows.into_iter().map(|(r, _)| r).collect())
        }
    }

    /// [`ReadingStore::readings`] with each reading's flags.
    fn readings_flagged(
        &self,
        meter: &MeterId,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(Reading, ReadingFlags)>>> + Send;

    /// Each listed meter's latest reading ever stored, as (t, vol); meters with none are
    /// left out. The later of the meter's latest raw reading (an index probe backwards
    /// on the primary key) and the last reading of its latest archived hour, so a
    /// reading dropped by [`ReadingStore::drop_raw_readings_before`] still counts: this
    /// is what the ingestor judges late, regressing and jumping readings against. One
    /// statement for all the meters.
    fn latest_readings(
        &self,
        meters: &[MeterId],
    ) -> impl Future<Output = Result<HashMap<MeterId, (Timestamp, f64)>>> + Send;

    /// A meter's hourly rollup ordered by hour: the hours starting in [`from`, `to`)
    /// (either bound may be open). The archived hours of `readings_hourly` (written by
    /// [`ReadingStore::drop_raw_readings_before`]) united with the hours aggregated from
    /// the raw readings still stored; an hour found in both (a late reading stored after
    /// its hour was archived) is merged: the earlier first, the later last, counts added.
    fn hourly(
        &self,
        meter: &MeterId,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> impl Future<Output = Result<Vec<HourlyRow>>> + Send;

    /// Retention: archives, then deletes, the raw readings with `t` before `before`, and
    /// returns how many there were. In one transaction, their hours are aggregated into
    /// `readings_hourly` (merged with an hour already archived there) and the readings
    /// deleted, so [`ReadingStore::hourly`] and [`ReadingStore::latest_readings`] answer
    /// the same before and after. With TimescaleDB, the chunks entirely before `before`
    /// are dropped (`drop_chunks`, no dead rows left behind) and the rest deleted row by
    /// row, with inserts held off (table lock) from the aggregation to the end.
    fn drop_raw_readings_before(
        &self,
        before: Timestamp,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// The latest conflicts, newest (highest id) first.
    fn list_conflicts(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ReadingConflict>>> + Send;

    /// How many conflicts are logged.
    fn count_conflicts(&self) -> impl Future<Output = Result<i64>> + Send;

    /// How many readings are stored.
    fn count_readings(&self) -> impl Future<Output = Result<i64>> + Send;

    /// Readings with `t >= from`, ordered by (t, meter), after the key `after` (keyset
    /// paging), at most `limit`: what the detectors replay after a restart.
    fn readings_since(
        &self,
        from: Timestamp,
        after: Option<(Timestamp, &MeterId)>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Reading>>> + Send;

    /// Stores device events, idempotently on (meter, t, code). Returns how many were new.
    fn insert_events(&self, events: &[MeterEvent]) -> impl Future<Output = Result<u64>> + Send;

    /// Every meter's events at or after `from`, oldest first (then by meter and code), at
    /// most `limit`: what detection replays after a restart.
    fn events_since(
        &self,
        from: Timestamp,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<MeterEvent>>> + Send;

    /// A meter's latest events, newest first, at most `limit`.
    fn meter_events(
        &self,
        meter: &MeterId,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<MeterEvent>>> + Send;
}

/// The readings part of a [`Store`] ([`Store::reading_store`]).
#[derive(Clone, Debug)]
pub struct Readings(pub(crate) Store);

/// A meter's latest raw reading and the last reading of its latest archived hour, as
/// the backends find them: (meter, raw (t, vol), archived (t, vol)).
pub(crate) type Latest = (String, Option<(Timestamp, f64)>, Option<(Timestamp, f64)>);

/// Refuses a batch holding a non-finite volume.
pub(crate) fn check_volumes(rows: &[(Reading, ReadingFlags)]) -> Result<()> {
    match rows.iter().find(|(r, _)| !r.vol.is_finite()) {
        Some((r, _)) => Err(StoreError::Corrupt(format!(
            "reading of meter {} at {} has a non-finite volume {}",
            r.meter, r.t, r.vol
        ))),
        None => Ok(()),
    }
}

/// Flags from the stored integer.
pub(crate) fn flags_from_db(v: i64) -> Result<ReadingFlags> {
    u16::try_from(v)
        .map(ReadingFlags)
        .map_err(|_| StoreError::Corrupt(format!("stored reading flags {v}")))
}

fn reading_from_row(meter: MeterId, row: &Row) -> Result<Reading> {
    Ok(Reading {
        meter,
        t: row.time("t")?,
        vol: row.float("vol")?,
        temp: row.opt_float("temp")?,
        flow_max: row.opt_float("flow_max")?,
        pressure: row.opt_float("pressure")?,
    })
}

pub(crate) fn hourly_from_row(meter: &MeterId, row: &Row) -> Result<HourlyRow> {
    Ok(HourlyRow {
        meter_id: meter.clone(),
        hour: row.time("hour")?,
        first_t: row.time("first_t")?,
        first_vol: row.float("first_vol")?,
        last_t: row.time("last_t")?,
        last_vol: row.float("last_vol")?,
        n: row.int("n")?,
    })
}

fn event_from_row(meter: MeterId, row: &Row) -> Result<MeterEvent> {
    Ok(MeterEvent {
        meter,
        t: row.time("t")?,
        code: EventCode::from_text(&row.text("code")?),
    })
}

impl ReadingStore for Readings {
    async fn insert_batch(
        &self,
        rows: &[(Reading, ReadingFlags)],
        received_at: Timestamp,
    ) -> Result<InsertOutcome> {
        if rows.is_empty() {
            return Ok(InsertOutcome::default());
        }
        check_volumes(rows)?;
        let counts = match &self.0 {
            Store::Postgres(p) => pg::insert_batch(&p.pool, rows, received_at).await?,
            Store::Sqlite(p) => sqlite::insert_batch(p, rows, received_at).await?,
        };
        Ok(InsertOutcome::of(rows.len(), counts))
    }

    async fn readings_flagged(
        &self,
        meter: &MeterId,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<(Reading, ReadingFlags)>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT t, vol, temp, flow_max, pressure, flags FROM readings
                     WHERE meter_id = $1
                       AND ($2::timestamptz IS NULL OR t >= $2)
                       AND ($3::timestamptz IS NULL OR t < $3)
                     ORDER BY t LIMIT $4"
                ),
                args![meter.as_str(), from, to, limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let reading = reading_from_row(meter.clone(), row)?;
                Ok((reading, flags_from_db(row.int("flags")?)?))
            })
            .collect()
    }

    async fn latest_readings(
        &self,
        meters: &[MeterId],
    ) -> Result<HashMap<MeterId, (Timestamp, f64)>> {
        if meters.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<String> = meters.iter().map(|m| m.as_str().to_owned()).collect();
        let found = match &self.0 {
            Store::Postgres(p) => pg::latest_readings(&p.pool, &ids).await?,
            Store::Sqlite(p) => sqlite::latest_readings(p, &ids).await?,
        };
        found
            .into_iter()
            .filter_map(|(m, raw, archived)| latest_of(raw, archived).map(|l| (m, l)))
            .map(|(m, latest)| Ok((parse_meter_id(m)?, latest)))
            .collect()
    }

    async fn hourly(
        &self,
        meter: &MeterId,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<Vec<HourlyRow>> {
        let archived = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT hour, first_t, first_vol, last_t, last_vol, n FROM readings_hourly
                     WHERE meter_id = $1
                       AND ($2::timestamptz IS NULL OR hour >= $2)
                       AND ($3::timestamptz IS NULL OR hour < $3)
                     ORDER BY hour"
                ),
                args![meter.as_str(), from, to],
            )
            .await?;
        let raw = match &self.0 {
            Store::Postgres(p) => pg::hourly_raw(&p.pool, meter, from, to).await?,
            Store::Sqlite(p) => sqlite::hourly_raw(p, meter, from, to).await?,
        };
        let archived = archived
            .iter()
            .map(|row| hourly_from_row(meter, row))
            .collect::<Result<Vec<_>>>()?;
        Ok(merge_hours(archived, raw))
    }

    async fn drop_raw_readings_before(&self, before: Timestamp) -> Result<u64> {
        match &self.0 {
            Store::Postgres(p) => pg::drop_raw_readings_before(&p.pool, p.timescale, before).await,
            Store::Sqlite(p) => sqlite::drop_raw_readings_before(p, before).await,
        }
    }

    async fn list_conflicts(&self, limit: u32) -> Result<Vec<ReadingConflict>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT id, meter_id, t, stored_vol, received_vol, received_at
                     FROM reading_conflicts ORDER BY id DESC LIMIT $1"
                ),
                args![limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ReadingConflict {
                    id: row.int("id")?,
                    meter_id: parse_meter_id(row.text("meter_id")?)?,
                    t: row.time("t")?,
                    stored_vol: row.float("stored_vol")?,
                    received_vol: row.float("received_vol")?,
                    received_at: row.time("received_at")?,
                })
            })
            .collect()
    }

    async fn count_conflicts(&self) -> Result<i64> {
        let row = self
            .0
            .exec()
            .fetch_one(sql!("SELECT count(*) AS n FROM reading_conflicts"), args![])
            .await?;
        row.int("n")
    }

    async fn count_readings(&self) -> Result<i64> {
        let row = self
            .0
            .exec()
            .fetch_one(sql!("SELECT count(*) AS n FROM readings"), args![])
            .await?;
        row.int("n")
    }

    async fn readings_since(
        &self,
        from: Timestamp,
        after: Option<(Timestamp, &MeterId)>,
        limit: u32,
    ) -> Result<Vec<Reading>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT meter_id, t, vol, temp, flow_max, pressure FROM readings
                     WHERE t >= $1
                       AND t >= COALESCE($2::timestamptz, $1)
                       AND ($2::timestamptz IS NULL OR (t, meter_id) > ($2, $3::text))
                     ORDER BY t, meter_id LIMIT $4"
                ),
                args![
                    from,
                    after.map(|(t, _)| t),
                    after.map(|(_, m)| m.as_str()),
                    limit
                ],
            )
            .await?;
        rows.iter()
            .map(|row| reading_from_row(parse_meter_id(row.text("meter_id")?)?, row))
            .collect()
    }

    async fn insert_events(&self, events: &[MeterEvent]) -> Result<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut tx = self.0.begin().await?;
        let mut n = 0;
        for e in events {
            let code = e.code.to_text();
            n += tx
                .exec()
                .execute(
                    sql!(
                        "INSERT INTO meter_events (meter_id, t, code) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING"
                    ),
                    args![e.meter.as_str(), e.t, &code],
                )
                .await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn events_since(&self, from: Timestamp, limit: u32) -> Result<Vec<MeterEvent>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT meter_id, t, code FROM meter_events WHERE t >= $1
                     ORDER BY t, meter_id, code LIMIT $2"
                ),
                args![from, limit],
            )
            .await?;
        rows.iter()
            .map(|row| event_from_row(parse_meter_id(row.text("meter_id")?)?, row))
            .collect()
    }

    async fn meter_events(&self, meter: &MeterId, limit: u32) -> Result<Vec<MeterEvent>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT t, code FROM meter_events WHERE meter_id = $1
                     ORDER BY t DESC, code LIMIT $2"
                ),
                args![meter.as_str(), limit],
            )
            .await?;
        rows.iter()
            .map(|row| event_from_row(meter.clone(), row))
            .collect()
    }
}

/// Unites archived hours with hours aggregated from raw readings, both ordered by hour,
/// into one list ordered by hour; an hour in both is merged ([`merge_hour`]).
fn merge_hours(archived: Vec<HourlyRow>, raw: Vec<HourlyRow>) -> Vec<HourlyRow> {
    let mut out = Vec::with_capacity(archived.len() + raw.len());
    let mut a = archived.into_iter().peekable();
    let mut r = raw.into_iter().peekable();
    loop {
        let next = match (a.peek(), r.peek()) {
            (Some(x), Some(y)) if x.hour == y.hour => {
                let (x, y) = (a.next(), r.next());
                merge_hour(x.expect("peeked"), y.expect("peeked"))
            }
            (Some(x), Some(y)) if x.hour < y.hour => a.next().expect("peeked"),
            (Some(_), None) => a.next().expect("peeked"),
            (_, Some(_)) => r.next().expect("peeked"),
            (None, None) => break,
        };
        out.push(next);
    }
    out
}

/// Two rollups of the same meter and hour as one: the earlier first, the later last
/// (on a tie, `a`'s), counts added.
fn merge_hour(a: HourlyRow, b: HourlyRow) -> HourlyRow {
    let (first_t, first_vol) = if b.first_t < a.first_t {
        (b.first_t, b.first_vol)
    } else {
        (a.first_t, a.first_vol)
    };
    let (last_t, last_vol) = if b.last_t > a.last_t {
        (b.last_t, b.last_vol)
    } else {
        (a.last_t, a.last_vol)
    };
    HourlyRow {
        first_t,
        first_vol,
        last_t,
        last_vol,
        n: a.n + b.n,
        ..a
    }
}

/// The later of a meter's latest raw reading and the last reading of its latest
/// archived hour (on a tie, the raw one).
fn latest_of(
    raw: Option<(Timestamp, f64)>,
    archived: Option<(Timestamp, f64)>,
) -> Option<(Timestamp, f64)> {
    match (raw, archived) {
        (Some(r), Some(a)) if a.0 > r.0 => Some(a),
        (Some(r), _) => Some(r),
        (None, a) => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_flags_must_fit() {
        assert_eq!(flags_from_db(5).unwrap(), ReadingFlags(5));
        assert!(flags_from_db(70_000).is_err());
        assert!(flags_from_db(-1).is_err());
    }

    #[test]
    fn volumes_compare_after_rounding_to_1e_9() {
        assert!(same_volume(12_345.678, 12_345.678));
        assert!(same_volume(0.1 + 0.2, 0.3));
        assert!(same_volume(1.000_000_000_1, 1.0));
        assert!(!same_volume(1.001, 1.0));
        assert!(!same_volume(1.000_000_002, 1.0));
    }

    #[test]
    fn hours_merge_by_hour() {
        let t = |s: i64| chrono::DateTime::from_timestamp(s, 0).unwrap();
        let row = |hour: i64, first: (i64, f64), last: (i64, f64), n: i64| HourlyRow {
            meter_id: MeterId::parse("M").unwrap(),
            hour: t(hour),
            first_t: t(first.0),
            first_vol: first.1,
            last_t: t(last.0),
            last_vol: last.1,
            n,
        };
        let archived = vec![
            row(0, (10, 1.0), (20, 2.0), 2),
            row(3_600, (3_700, 3.0), (3_800, 4.0), 2),
        ];
        let raw = vec![
            row(3_600, (3_650, 2.5), (3_650, 2.5), 1),
            row(7_200, (7_300, 5.0), (7_400, 6.0), 2),
        ];
        assert_eq!(
            merge_hours(archived.clone(), raw.clone()),
            vec![
                archived[0].clone(),
                row(3_600, (3_650, 2.5), (3_800, 4.0), 3),
                raw[1].clone(),
            ]
        );
        assert_eq!(merge_hours(vec![], raw.clone()), raw);
        assert_eq!(merge_hours(archived.clone(), vec![]), archived);
        assert_eq!(
            merge_hour(
                row(0, (10, 1.0), (20, 2.0), 1),
                row(0, (5, 0.5), (30, 3.0), 1)
            ),
            row(0, (5, 0.5), (30, 3.0), 2)
        );
        assert_eq!(latest_of(None, None), None);
        assert_eq!(latest_of(Some((t(5), 1.0)), None), Some((t(5), 1.0)));
        assert_eq!(latest_of(None, Some((t(5), 1.0))), Some((t(5), 1.0)));
        assert_eq!(
            latest_of(Some((t(5), 1.0)), Some((t(9), 2.0))),
            Some((t(9), 2.0))
        );
        assert_eq!(
            latest_of(Some((t(9), 1.0)), Some((t(5), 2.0))),
            Some((t(9), 1.0))
        );
    }
}
