//! The PostgreSQL side of what the backends do differently: batches of readings through
//! binary `COPY` and `UNNEST` arrays (see [`insert_split`]), bulk upserts through
//! `UNNEST`, hours by `date_trunc`, and retention with TimescaleDB's `drop_chunks`.

use crate::db::Row;
use crate::detector_state::state_upsert;
use crate::meters::meter_upsert;
use crate::readings::Latest;
use crate::readings::hourly_from_row;
use crate::{
    HourlyRow, PgInsertPath, ReadingFlags, Result, StoreError, finite, is_unique_violation, redact,
    same_volume,
};
use leakwatch_core::{Meter, MeterId, Reading, Timestamp};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

/// Connects, applies the migrations and says whether `readings` is a TimescaleDB
/// hypertable.
pub(crate) async fn connect(url: &str) -> Result<(PgPool, bool)> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::BadUrl(format!("{}: {e}", redact(url))))?;
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await?;
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    // The catalog view only exists with the extension: look for the extension first.
    let timescale: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
    )
    .fetch_one(&pool)
    .await?;
    let timescale = timescale
        && sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                            WHERE hypertable_schema = current_schema()
                              AND hypertable_name = 'readings')",
        )
        .fetch_one(&pool)
        .await?;
    tracing::debug!(url = %redact(url), timescale, "connected to postgres, migrations applied");
    Ok((pool, timescale))
}

// ---- meters ----

pub(crate) async fn upsert_meters(pool: &PgPool, meters: &[Meter]) -> Result<u64> {
    let ids: Vec<&str> = meters.iter().map(|m| m.id.as_str()).collect();
    let districts: Vec<&str> = meters.iter().map(|m| m.district.as_str()).collect();
    let kinds: Vec<&str> = meters.iter().map(|m| m.kind.as_str()).collect();
    let lats: Vec<f64> = meters.iter().map(|m| m.location.lat).collect();
    let lons: Vec<f64> = meters.iter().map(|m| m.location.lon).collect();
    let every: Vec<i64> = meters.iter().map(|m| i64::from(m.report_every_h)).collect();
    let statuses: Vec<&str> = meters.iter().map(|m| m.status.as_str()).collect();
    let installed: Vec<Option<Timestamp>> = meters.iter().map(|m| m.installed_at).collect();
    let max_flows: Vec<Option<f64>> = meters.iter().map(|m| finite(m.max_flow_m3h)).collect();
    let done = sqlx::query(concat!(
        "INSERT INTO meters (id, district_id, kind, lat, lon, report_every_h, status,
                             installed_at, max_flow_m3h, updated_at)
         SELECT u.*, now() FROM UNNEST($1::text[], $2::text[], $3::text[], $4::float8[],
                                       $5::float8[], $6::int8[], $7::text[],
                                       $8::timestamptz[], $9::float8[]) AS u
         ",
        meter_upsert!()
    ))
    .bind(&ids)
    .bind(&districts)
    .bind(&kinds)
    .bind(&lats)
    .bind(&lons)
    .bind(&every)
    .bind(&statuses)
    .bind(&installed)
    .bind(&max_flows)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

// ---- readings and events ----

/// The `SET` list merging `excluded` into the stored `readings_hourly` row `h`: the
/// earlier first, the later last (on a tie, the stored one), counts added.
macro_rules! rollup_merge {
    () => {
        "first_t = LEAST(h.first_t, excluded.first_t),
         first_vol = CASE WHEN excluded.first_t < h.first_t
                          THEN excluded.first_vol ELSE h.first_vol END,
         last_t = GREATEST(h.last_t, excluded.last_t),
         last_vol = CASE WHEN excluded.last_t > h.last_t
                         THEN excluded.last_vol ELSE h.last_vol END,
         n = h.n + excluded.n"
    };
}

/// A batch as column arrays, for `UNNEST`.
struct Columns<'a> {
    meters: Vec<&'a str>,
    ts: Vec<Timestamp>,
    vols: Vec<f64>,
    temps: Vec<Option<f64>>,
    flows: Vec<Option<f64>>,
    pressures: Vec<Option<f64>>,
    flags: Vec<i32>,
}

impl<'a> Columns<'a> {
    fn new(rows: &[&'a Batched]) -> Self {
        Columns {
            meters: rows.iter().map(|(r, _)| r.meter.as_str()).collect(),
            ts: rows.iter().map(|(r, _)| r.t).collect(),
            vols: rows.iter().map(|(r, _)| r.vol).collect(),
            temps: rows.iter().map(|(r, _)| finite(r.temp)).collect(),
            flows: rows.iter().map(|(r, _)| finite(r.flow_max)).collect(),
            pressures: rows.iter().map(|(r, _)| finite(r.pressure)).collect(),
            flags: rows.iter().map(|(_, f)| i32::from(f.0)).collect(),
        }
    }
}

/// Stores a batch (see `Store::insert_batch`); returns (inserted, conflicts).
pub(crate) async fn insert_batch(
    pool: &PgPool,
    rows: &[(Reading, ReadingFlags)],
    received_at: Timestamp,
) -> Result<(u64, u64)> {
    insert_batch_via(pool, PgInsertPath::DEFAULT, rows, received_at).await
}

/// [`insert_batch`] along a chosen path, in one transaction.
pub(crate) async fn insert_batch_via(
    pool: &PgPool,
    path: PgInsertPath,
    rows: &[(Reading, ReadingFlags)],
    received_at: Timestamp,
) -> Result<(u64, u64)> {
    let all: Vec<&Batched> = rows.iter().collect();
    let mut tx = pool.begin().await?;
    let out = match path {
        PgInsertPath::Unnest => insert_unnest(&mut tx, &all, received_at).await?,
        PgInsertPath::CopyStaging => insert_staged(&mut tx, &all, received_at).await?,
        PgInsertPath::Split => insert_split(&mut tx, &all, received_at).await?,
    };
    tx.commit().await?;
    Ok(out)
}

pub(crate) type Batched = (Reading, ReadingFlags);

/// One statement inserts the rows from `UNNEST` arrays (`ON CONFLICT DO NOTHING`, so
/// the first row of a key wins, in array order). Only when some rows were not inserted
/// does a second statement look for conflicts.
async fn insert_unnest(
    conn: &mut sqlx::PgConnection,
    rows: &[&Batched],
    received_at: Timestamp,
) -> Result<(u64, u64)> {
    let c = Columns::new(rows);
    let inserted = sqlx::query(
        "INSERT INTO readings (meter_id, t, vol, temp, flow_max, pressure, flags)
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::float8[], $4::float8[],
                              $5::float8[], $6::float8[], $7::int4[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&c.meters)
    .bind(&c.ts)
    .bind(&c.vols)
    .bind(&c.temps)
    .bind(&c.flows)
    .bind(&c.pressures)
    .bind(&c.flags)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let conflicts = if inserted < rows.len() as u64 {
        record_conflicts(conn, &c, received_at).await?
    } else {
        0
    };
    Ok((inserted, conflicts))
}

/// COPY into a session-local staging table, then the same single statement as
/// [`insert_unnest`] reading from it.
async fn insert_staged(
    conn: &mut sqlx::PgConnection,
    rows: &[&Batched],
    received_at: Timestamp,
) -> Result<(u64, u64)> {
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS lw_staging (
             meter_id TEXT COLLATE \"C\", t TIMESTAMPTZ, vol FLOAT8, temp FLOAT8,
             flow_max FLOAT8, pressure FLOAT8, flags INT4, i INT8
         ) ON COMMIT DELETE ROWS",
    )
    .execute(&mut *conn)
    .await?;
    let mut copy = conn
        .copy_in_raw(
            "COPY lw_staging (meter_id, t, vol, temp, flow_max, pressure, flags, i)
             FROM STDIN (FORMAT binary)",
        )
        .await?;
    copy.send(encode_readings(rows, true)).await?;
    copy.finish().await?;
    let inserted = sqlx::query(
        "INSERT INTO readings (meter_id, t, vol, temp, flow_max, pressure, flags)
         SELECT meter_id, t, vol, temp, flow_max, pressure, flags FROM lw_staging
         ORDER BY i
         ON CONFLICT DO NOTHING",
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let conflicts = if inserted < rows.len() as u64 {
        record_conflicts(conn, &Columns::new(rows), received_at).await?
    } else {
        0
    };
    Ok((inserted, conflicts))
}

/// The default path. `INSERT ... ON CONFLICT` pays a speculative insertion per row,
/// about twice what a plain COPY costs, so the batch is split on each meter's latest
/// stored reading (one backward probe of the primary key per meter):
///
/// * rows after their meter's latest reading cannot be stored yet: the first row of
///   each such key is COPYed straight into `readings`.
/// * the rest (late readings, repeats, redeliveries) take [`insert_unnest`], which
///   sorts out duplicates and conflicts. It runs after the COPY, so a repeat of a key
///   first seen in this batch compares with that first row.
///
/// The COPY runs under a savepoint: if another writer stored one of those keys since
/// the probe, COPY fails with a unique violation, and the whole batch falls back to
/// [`insert_unnest`].
pub(crate) async fn insert_split(
    conn: &mut sqlx::PgConnection,
    rows: &[&Batched],
    received_at: Timestamp,
) -> Result<(u64, u64)> {
    let latest = latest_times(conn, rows).await?;
    let mut keys = HashSet::with_capacity(rows.len());
    let (mut fresh, mut rest) = (Vec::with_capacity(rows.len()), Vec::new());
    for &row in rows {
        let r = &row.0;
        let after_latest = latest
            .get(r.meter.as_str())
            .is_none_or(|&last_t| r.t > last_t);
        if after_latest && keys.insert((r.meter.as_str(), r.t)) {
            fresh.push(row);
        } else {
            rest.push(row);
        }
    }
    drop(keys);
    if !fresh.is_empty()
        && copy_under_savepoint(conn, COPY_READINGS, encode_readings(&fresh, false))
            .await?
            .is_none()
    {
        tracing::debug!("COPY met a reading stored since the probe; upserting the batch");
        return insert_unnest(conn, rows, received_at).await;
    }
    let (inserted, conflicts) = if rest.is_empty() {
        (0, 0)
    } else {
        insert_unnest(conn, &rest, received_at).await?
    };
    Ok((fresh.len() as u64 + inserted, conflicts))
}

/// The latest stored raw reading time of each meter of the batch that has any.
async fn latest_times(
    conn: &mut sqlx::PgConnection,
    rows: &[&Batched],
) -> Result<HashMap<String, Timestamp>> {
    let mut meters: Vec<&str> = rows.iter().map(|(r, _)| r.meter.as_str()).collect();
    meters.sort_unstable();
    meters.dedup();
    let found: Vec<(String, Timestamp)> = sqlx::query_as(
        "SELECT m.id, r.t
         FROM UNNEST($1::text[]) AS m (id)
         CROSS JOIN LATERAL (SELECT t FROM readings
                             WHERE meter_id = m.id ORDER BY t DESC LIMIT 1) AS r",
    )
    .bind(&meters)
    .fetch_all(&mut *conn)
    .await?;
    Ok(found.into_iter().collect())
}

/// Runs a `COPY ... FROM STDIN` of `data` under a savepoint. `Ok(None)` (and nothing
/// written) if the COPY hit a unique violation, else the number of rows copied.
async fn copy_under_savepoint(
    conn: &mut sqlx::PgConnection,
    statement: &str,
    data: Vec<u8>,
) -> Result<Option<u64>> {
    let mut sp = sqlx::Connection::begin(&mut *conn).await?;
    let mut copy = sp.copy_in_raw(statement).await?;
    copy.send(data).await?;
    match copy.finish().await {
        Ok(n) => {
            sp.commit().await?;
            Ok(Some(n))
        }
        Err(e) if is_unique_violation(&e) => {
            sp.rollback().await?;
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// `COPY` of [`encode_readings`]'s rows into `readings`.
pub(crate) const COPY_READINGS: &str =
    "COPY readings (meter_id, t, vol, temp, flow_max, pressure, flags) FROM STDIN (FORMAT binary)";

/// A `COPY ... (FORMAT binary)` stream being written.
struct CopyBinary(Vec<u8>);

impl CopyBinary {
    fn new(rows: usize, row_bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(21 + rows * row_bytes);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        CopyBinary(buf)
    }

    fn row(&mut self, fields: i16) {
        self.0.extend_from_slice(&fields.to_be_bytes());
    }

    fn field(&mut self, bytes: &[u8]) {
        self.0
            .extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        self.0.extend_from_slice(bytes);
    }

    fn null(&mut self) {
        self.0.extend_from_slice(&(-1i32).to_be_bytes());
    }

    fn text(&mut self, s: &str) {
        self.field(s.as_bytes());
    }

    /// `timestamptz`: microseconds from 2000-01-01 UTC.
    fn time(&mut self, t: Timestamp) {
        self.field(&(t.timestamp_micros() - 946_684_800_000_000).to_be_bytes());
    }

    /// `float8`; NULL when absent or not finite.
    fn float(&mut self, v: Option<f64>) {
        match finite(v) {
            Some(v) => self.field(&v.to_be_bytes()),
            None => self.null(),
        }
    }

    fn int4(&mut self, v: i32) {
        self.field(&v.to_be_bytes());
    }

    fn int8(&mut self, v: i64) {
        self.field(&v.to_be_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&(-1i16).to_be_bytes());
        self.0
    }
}

/// Rows for [`COPY_READINGS`] (and, `with_index`, their 1-based position in the batch
/// as an eighth column).
pub(crate) fn encode_readings(rows: &[&Batched], with_index: bool) -> Vec<u8> {
    let mut out = CopyBinary::new(rows.len(), 100);
    for (i, (r, flags)) in rows.iter().enumerate() {
        out.row(if with_index { 8 } else { 7 });
        out.text(r.meter.as_str());
        out.time(r.t);
        out.float(Some(r.vol));
        out.float(r.temp);
        out.float(r.flow_max);
        out.float(r.pressure);
        out.int4(i32::from(flags.0));
        if with_index {
            out.int8(i as i64 + 1);
        }
    }
    out.finish()
}

/// Logs the rows of the batch whose (meter, t) is stored with another volume; returns
/// how many.
async fn record_conflicts(
    conn: &mut sqlx::PgConnection,
    c: &Columns<'_>,
    received_at: Timestamp,
) -> Result<u64> {
    // Exact inequality in SQL narrows the candidates; `same_volume` decides.
    let candidates: Vec<(i64, f64)> = sqlx::query_as(
        "SELECT u.i, r.vol
         FROM UNNEST($1::text[], $2::timestamptz[], $3::float8[]) WITH ORDINALITY
              AS u (meter_id, t, vol, i)
         JOIN readings r ON r.meter_id = u.meter_id AND r.t = u.t
         WHERE r.vol <> u.vol
         ORDER BY u.i",
    )
    .bind(&c.meters)
    .bind(&c.ts)
    .bind(&c.vols)
    .fetch_all(&mut *conn)
    .await?;
    let mut meters = Vec::new();
    let mut ts = Vec::new();
    let mut stored = Vec::new();
    let mut received = Vec::new();
    for (i, stored_vol) in candidates {
        let i = (i - 1) as usize;
        if !same_volume(stored_vol, c.vols[i]) {
            meters.push(c.meters[i]);
            ts.push(c.ts[i]);
            stored.push(stored_vol);
            received.push(c.vols[i]);
        }
    }
    if meters.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO reading_conflicts (meter_id, t, stored_vol, received_vol, received_at)
         SELECT u.*, $5 FROM UNNEST($1::text[], $2::timestamptz[], $3::float8[], $4::float8[])
                             AS u",
    )
    .bind(&meters)
    .bind(&ts)
    .bind(&stored)
    .bind(&received)
    .bind(received_at)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Each meter's latest raw reading and the last reading of its latest archived hour,
/// as (meter, raw, archived); one lateral index probe each.
pub(crate) async fn latest_readings(pool: &PgPool, meters: &[String]) -> Result<Vec<Latest>> {
    type Found = (
        String,
        Option<Timestamp>,
        Option<f64>,
        Option<Timestamp>,
        Option<f64>,
    );
    let found: Vec<Found> = sqlx::query_as(
        "SELECT m.id, r.t, r.vol, h.last_t, h.last_vol
         FROM (SELECT DISTINCT id FROM UNNEST($1::text[]) AS u (id)) AS m
         LEFT JOIN LATERAL (SELECT t, vol FROM readings
                            WHERE meter_id = m.id ORDER BY t DESC LIMIT 1) AS r ON true
         LEFT JOIN LATERAL (SELECT last_t, last_vol FROM readings_hourly
                            WHERE meter_id = m.id ORDER BY hour DESC LIMIT 1) AS h ON true",
    )
    .bind(meters)
    .fetch_all(pool)
    .await?;
    Ok(found
        .into_iter()
        .map(|(m, rt, rv, ht, hv)| (m, rt.zip(rv), ht.zip(hv)))
        .collect())
}

/// The hours of a meter aggregated from its raw readings, starting in [`from`, `to`),
/// ordered by hour.
pub(crate) async fn hourly_raw(
    pool: &PgPool,
    meter: &MeterId,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<Vec<HourlyRow>> {
    // The hours starting in [from, to) hold readings of [from, to + 1 h): that range of
    // the primary key is scanned, then the hours outside are left out.
    let raw = sqlx::query(
        "SELECT * FROM (
             SELECT date_trunc('hour', t, 'UTC') AS hour,
                    min(t) AS first_t, (array_agg(vol ORDER BY t))[1] AS first_vol,
                    max(t) AS last_t, (array_agg(vol ORDER BY t DESC))[1] AS last_vol,
                    count(*) AS n
             FROM readings
             WHERE meter_id = $1
               AND ($2::timestamptz IS NULL OR t >= $2)
               AND ($3::timestamptz IS NULL OR t < $3::timestamptz + INTERVAL '1 hour')
             GROUP BY 1
         ) AS g
         WHERE ($2::timestamptz IS NULL OR hour >= $2)
           AND ($3::timestamptz IS NULL OR hour < $3)
         ORDER BY hour",
    )
    .bind(meter.as_str())
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    raw.into_iter()
        .map(|row| hourly_from_row(meter, &Row::Pg(row)))
        .collect()
}

/// Aggregates the relation `old` (meter_id, t, vol) by meter and UTC hour and merges the
/// hours into `readings_hourly`; the statement returns how many rows `old` had.
macro_rules! archive_from {
    ($old:literal) => {
        concat!(
            "WITH old AS (",
            $old,
            "), agg AS (
                 SELECT meter_id, date_trunc('hour', t, 'UTC') AS hour,
                        min(t) AS first_t, (array_agg(vol ORDER BY t))[1] AS first_vol,
                        max(t) AS last_t, (array_agg(vol ORDER BY t DESC))[1] AS last_vol,
                        count(*) AS n
                 FROM old GROUP BY 1, 2
             ), archived AS (
                 INSERT INTO readings_hourly AS h
                        (meter_id, hour, first_t, first_vol, last_t, last_vol, n)
                 SELECT * FROM agg
                 ON CONFLICT (meter_id, hour) DO UPDATE SET ",
            rollup_merge!(),
            ") SELECT COALESCE(sum(n), 0)::int8 FROM agg"
        )
    };
}

pub(crate) async fn drop_raw_readings_before(
    pool: &PgPool,
    timescale: bool,
    before: Timestamp,
) -> Result<u64> {
    if !timescale {
        // One statement: exactly the rows deleted are archived, whatever commits
        // meanwhile.
        let n: i64 = sqlx::query_scalar(archive_from!(
            "DELETE FROM readings WHERE t < $1 RETURNING meter_id, t, vol"
        ))
        .bind(before)
        .fetch_one(pool)
        .await?;
        return Ok(n as u64);
    }
    let mut tx = pool.begin().await?;
    // drop_chunks cannot return the rows it drops: hold off inserts (a late reading into
    // an old chunk) from the aggregation to the commit, so nothing is dropped unarchived.
    sqlx::query("LOCK TABLE readings IN SHARE MODE")
        .execute(&mut *tx)
        .await?;
    let n: i64 = sqlx::query_scalar(archive_from!(
        "SELECT meter_id, t, vol FROM readings WHERE t < $1"
    ))
    .bind(before)
    .fetch_one(&mut *tx)
    .await?;
    // Whole chunks first (cheap, no dead rows), then what is left of the chunk that
    // straddles `before`.
    sqlx::query("SELECT drop_chunks('readings', older_than => $1::timestamptz)")
        .bind(before)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM readings WHERE t < $1")
        .bind(before)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n as u64)
}

// ---- detector state ----

pub(crate) async fn save_detector_state(
    pool: &PgPool,
    rows: &[(String, Vec<u8>)],
    now: Timestamp,
) -> Result<()> {
    let subjects: Vec<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
    let states: Vec<&[u8]> = rows.iter().map(|(_, b)| b.as_slice()).collect();
    sqlx::query(concat!(
        "INSERT INTO detector_state (subject, state, updated_at)
         SELECT s, b, $3 FROM UNNEST($1::text[], $2::bytea[]) AS u(s, b)
         ",
        state_upsert!()
    ))
    .bind(&subjects)
    .bind(&states)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}
