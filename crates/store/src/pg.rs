//! The PostgreSQL backend: times are `TIMESTAMPTZ`; batches go through `UNNEST` arrays, and
//! new readings through binary `COPY` (see [`insert_split`]).

use crate::{
    AlertQuery, CrewRow, CurrentOrder, DeadLetter, HourlyRow, NewDeadLetter, NewWorkOrder,
    OrderChange, PgInsertPath, ReadingConflict, ReadingFlags, Result, StoreError, TransitionTimes,
    WorkOrderQuery, alert_conflict, final_statuses, finite, is_foreign_key_violation,
    is_unique_violation, latest_of, occupying_statuses, parse_crew_id, parse_district_id,
    parse_meter_id, parse_text, point, redact, report_every_h, same_volume, work_order_conflict,
};
use leakwatch_core::{
    Alert, AlertOutcome, AlertStatus, Crew, CrewId, DistrictId, EventCode, Finding, GeoPoint,
    Meter, MeterEvent, MeterId, Priority, Reading, SiteFinding, Timestamp, TransitionRecord,
    WeeklyShifts, WorkOrder, WorkOrderStatus,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{PgPool, Row};
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

pub(crate) async fn ping(pool: &PgPool) -> Result<()> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

// ---- meters ----

pub(crate) fn meter_from_row(row: &PgRow) -> Result<Meter> {
    Ok(Meter {
        id: parse_meter_id(row.try_get("id")?)?,
        district: parse_district_id(row.try_get("district_id")?)?,
        kind: parse_text(row.try_get("kind")?, "meter kind")?,
        location: GeoPoint {
            lat: row.try_get("lat")?,
            lon: row.try_get("lon")?,
        },
        report_every_h: report_every_h(row.try_get("report_every_h")?)?,
        status: parse_text(row.try_get("status")?, "meter status")?,
        installed_at: row.try_get("installed_at")?,
        max_flow_m3h: row.try_get("max_flow_m3h")?,
    })
}

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
    let done = sqlx::query(
        "INSERT INTO meters (id, district_id, kind, lat, lon, report_every_h, status,
                             installed_at, max_flow_m3h, updated_at)
         SELECT u.*, now() FROM UNNEST($1::text[], $2::text[], $3::text[], $4::float8[],
                                       $5::float8[], $6::int8[], $7::text[],
                                       $8::timestamptz[], $9::float8[]) AS u
         ON CONFLICT (id) DO UPDATE SET
             district_id = excluded.district_id, kind = excluded.kind, lat = excluded.lat,
             lon = excluded.lon, report_every_h = excluded.report_every_h,
             status = excluded.status, installed_at = excluded.installed_at,
             max_flow_m3h = excluded.max_flow_m3h, updated_at = excluded.updated_at",
    )
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

pub(crate) async fn get_meter(pool: &PgPool, id: &MeterId) -> Result<Option<Meter>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        meter_cols!(),
        " FROM meters WHERE id = $1"
    ))
    .bind(id.as_str())
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(meter_from_row).transpose()
}

pub(crate) async fn list_meters(
    pool: &PgPool,
    after: Option<&MeterId>,
    limit: u32,
) -> Result<Vec<Meter>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        meter_cols!(),
        " FROM meters WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2"
    ))
    .bind(after.map(|m| m.as_str()))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(meter_from_row).collect()
}

pub(crate) async fn all_meters(pool: &PgPool) -> Result<Vec<Meter>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        meter_cols!(),
        " FROM meters ORDER BY id"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(meter_from_row).collect()
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

type Batched = (Reading, ReadingFlags);

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
async fn insert_split(
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

pub(crate) async fn readings_flagged(
    pool: &PgPool,
    meter: &MeterId,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    limit: u32,
) -> Result<Vec<(Reading, ReadingFlags)>> {
    let rows = sqlx::query(
        "SELECT t, vol, temp, flow_max, pressure, flags FROM readings
         WHERE meter_id = $1
           AND ($2::timestamptz IS NULL OR t >= $2)
           AND ($3::timestamptz IS NULL OR t < $3)
         ORDER BY t LIMIT $4",
    )
    .bind(meter.as_str())
    .bind(from)
    .bind(to)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let reading = Reading {
                meter: meter.clone(),
                t: row.try_get("t")?,
                vol: row.try_get("vol")?,
                temp: row.try_get("temp")?,
                flow_max: row.try_get("flow_max")?,
                pressure: row.try_get("pressure")?,
            };
            let flags = ReadingFlags::from_db(i64::from(row.try_get::<i32, _>("flags")?))?;
            Ok((reading, flags))
        })
        .collect()
}

pub(crate) async fn latest_readings(
    pool: &PgPool,
    meters: &[&str],
) -> Result<Vec<(String, Timestamp, f64)>> {
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
        .filter_map(|(m, rt, rv, ht, hv)| {
            latest_of(rt.zip(rv), ht.zip(hv)).map(|(t, vol)| (m, t, vol))
        })
        .collect())
}

fn hourly_from_row(meter: &MeterId, row: &PgRow) -> Result<HourlyRow> {
    Ok(HourlyRow {
        meter_id: meter.clone(),
        hour: row.try_get("hour")?,
        first_t: row.try_get("first_t")?,
        first_vol: row.try_get("first_vol")?,
        last_t: row.try_get("last_t")?,
        last_vol: row.try_get("last_vol")?,
        n: row.try_get("n")?,
    })
}

/// The archived hours, then the hours aggregated from raw readings, of a meter, starting
/// in [`from`, `to`), each ordered by hour (`Store::hourly` merges them).
pub(crate) async fn hourly(
    pool: &PgPool,
    meter: &MeterId,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<(Vec<HourlyRow>, Vec<HourlyRow>)> {
    let archived = sqlx::query(
        "SELECT hour, first_t, first_vol, last_t, last_vol, n FROM readings_hourly
         WHERE meter_id = $1
           AND ($2::timestamptz IS NULL OR hour >= $2)
           AND ($3::timestamptz IS NULL OR hour < $3)
         ORDER BY hour",
    )
    .bind(meter.as_str())
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
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
    let rows = |rows: Vec<PgRow>| {
        rows.iter()
            .map(|row| hourly_from_row(meter, row))
            .collect::<Result<Vec<_>>>()
    };
    Ok((rows(archived)?, rows(raw)?))
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

pub(crate) async fn list_conflicts(pool: &PgPool, limit: u32) -> Result<Vec<ReadingConflict>> {
    let rows = sqlx::query(
        "SELECT id, meter_id, t, stored_vol, received_vol, received_at FROM reading_conflicts
         ORDER BY id DESC LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ReadingConflict {
                id: row.try_get("id")?,
                meter_id: parse_meter_id(row.try_get("meter_id")?)?,
                t: row.try_get("t")?,
                stored_vol: row.try_get("stored_vol")?,
                received_vol: row.try_get("received_vol")?,
                received_at: row.try_get("received_at")?,
            })
        })
        .collect()
}

pub(crate) async fn count_conflicts(pool: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM reading_conflicts")
        .fetch_one(pool)
        .await?)
}

pub(crate) async fn count_readings(pool: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(pool)
        .await?)
}

pub(crate) async fn insert_events(pool: &PgPool, events: &[MeterEvent]) -> Result<u64> {
    let meters: Vec<&str> = events.iter().map(|e| e.meter.as_str()).collect();
    let ts: Vec<Timestamp> = events.iter().map(|e| e.t).collect();
    let codes: Vec<String> = events.iter().map(|e| e.code.to_text()).collect();
    let done = sqlx::query(
        "INSERT INTO meter_events (meter_id, t, code)
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&meters)
    .bind(&ts)
    .bind(&codes)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub(crate) async fn events_since(
    pool: &PgPool,
    from: Timestamp,
    limit: u32,
) -> Result<Vec<MeterEvent>> {
    let rows = sqlx::query(
        "SELECT meter_id, t, code FROM meter_events WHERE t >= $1 ORDER BY t, meter_id, code LIMIT $2",
    )
    .bind(from)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(MeterEvent {
                meter: crate::parse_meter_id(row.try_get("meter_id")?)?,
                t: row.try_get("t")?,
                code: EventCode::from_text(row.try_get("code")?),
            })
        })
        .collect()
}

pub(crate) async fn meter_events(
    pool: &PgPool,
    meter: &MeterId,
    limit: u32,
) -> Result<Vec<MeterEvent>> {
    let rows = sqlx::query(
        "SELECT t, code FROM meter_events WHERE meter_id = $1 ORDER BY t DESC, code LIMIT $2",
    )
    .bind(meter.as_str())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(MeterEvent {
                meter: meter.clone(),
                t: row.try_get("t")?,
                code: EventCode::from_text(row.try_get("code")?),
            })
        })
        .collect()
}

// ---- dead letters ----

pub(crate) async fn dead_letter(pool: &PgPool, dl: &NewDeadLetter) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO dead_letters (topic, reason, detail, payload, received_at)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(&dl.topic)
    .bind(&dl.reason)
    .bind(&dl.detail)
    .bind(&dl.payload)
    .bind(dl.received_at)
    .fetch_one(pool)
    .await?)
}

pub(crate) async fn list_dead_letters(pool: &PgPool, limit: u32) -> Result<Vec<DeadLetter>> {
    let rows = sqlx::query(
        "SELECT id, topic, reason, detail, payload, received_at FROM dead_letters
         ORDER BY id DESC LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(DeadLetter {
                id: row.try_get("id")?,
                topic: row.try_get("topic")?,
                reason: row.try_get("reason")?,
                detail: row.try_get("detail")?,
                payload: row.try_get("payload")?,
                received_at: row.try_get("received_at")?,
            })
        })
        .collect()
}

pub(crate) async fn count_dead_letters(pool: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(pool)
        .await?)
}

// ---- alerts ----

pub(crate) fn alert_from_row(row: &PgRow) -> Result<Alert> {
    let meter_id: Option<String> = row.try_get("meter_id")?;
    let district_id: Option<String> = row.try_get("district_id")?;
    let Json(evidence) = row.try_get("evidence")?;
    let outcome: Option<&str> = row.try_get("outcome")?;
    Ok(Alert {
        id: row.try_get("id")?,
        kind: parse_text(row.try_get("kind")?, "alert kind")?,
        severity: parse_text(row.try_get("severity")?, "severity")?,
        status: parse_text(row.try_get("status")?, "alert status")?,
        meter_id: meter_id.map(parse_meter_id).transpose()?,
        district_id: district_id.map(parse_district_id).transpose()?,
        detected_at: row.try_get("detected_at")?,
        last_seen: row.try_get("last_seen")?,
        count: row.try_get("count")?,
        evidence,
        work_order_id: row.try_get("work_order_id")?,
        status_reason: row.try_get("status_reason")?,
        outcome: outcome
            .map(|o| parse_text(o, "alert outcome"))
            .transpose()?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) async fn record_finding(
    pool: &PgPool,
    f: &Finding,
    subject: &str,
    now: Timestamp,
) -> Result<Alert> {
    let row = sqlx::query(concat!(
        "INSERT INTO alerts (subject, kind, severity, status, meter_id, district_id,
                             detected_at, last_seen, count, evidence, created_at)
         VALUES ($1, $2, $3, 'open', $4, $5, $6, $6, 1, $7, $8)
         ON CONFLICT (subject, kind) WHERE status IN ('open', 'acknowledged', 'escalated')
         DO UPDATE SET count = alerts.count + 1,
                       last_seen = GREATEST(alerts.last_seen, excluded.last_seen),
                       evidence = excluded.evidence,
                       severity = ",
        severity_max!(),
        " RETURNING ",
        alert_cols!()
    ))
    .bind(subject)
    .bind(f.kind.as_str())
    .bind(f.severity.as_str())
    .bind(f.meter_id.as_ref().map(|m| m.as_str()))
    .bind(f.district_id.as_ref().map(|d| d.as_str()))
    .bind(f.detected_at)
    .bind(Json(&f.evidence))
    .bind(now)
    .fetch_one(pool)
    .await?;
    alert_from_row(&row)
}

pub(crate) async fn get_alert(pool: &PgPool, id: i64) -> Result<Option<Alert>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        alert_cols!(),
        " FROM alerts WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(alert_from_row).transpose()
}

pub(crate) async fn list_alerts(pool: &PgPool, q: &AlertQuery) -> Result<Vec<Alert>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        alert_cols!(),
        " FROM alerts
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR kind = $2)
           AND ($3::timestamptz IS NULL OR detected_at >= $3)
           AND ($4::text IS NULL OR meter_id = $4)
           AND ($5::int8 IS NULL OR id < $5)
         ORDER BY id DESC LIMIT $6"
    ))
    .bind(q.status.map(|s| s.as_str()))
    .bind(q.kind.map(|k| k.as_str()))
    .bind(q.since)
    .bind(q.meter_id.as_ref().map(|m| m.as_str()))
    .bind(q.cursor)
    .bind(i64::from(q.limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(alert_from_row).collect()
}

pub(crate) async fn set_alert_status(
    pool: &PgPool,
    id: i64,
    from: AlertStatus,
    to: AlertStatus,
    reason: Option<&str>,
    work_order_id: Option<i64>,
) -> Result<Alert> {
    let updated = sqlx::query(concat!(
        "UPDATE alerts SET status = $3,
                           status_reason = COALESCE($4::text, status_reason),
                           work_order_id = COALESCE($5::int8, work_order_id)
         WHERE id = $1 AND status = $2 RETURNING ",
        alert_cols!()
    ))
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(reason)
    .bind(work_order_id)
    .fetch_optional(pool)
    .await;
    match updated {
        Ok(Some(row)) => alert_from_row(&row),
        Ok(None) => {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM alerts WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            Err(match status {
                Some(s) => alert_conflict(id, &s),
                None => StoreError::NotFound(format!("alert {id}")),
            })
        }
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
            "alert {id} cannot become {}: another active alert exists for its subject and kind",
            to.as_str()
        ))),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn count_alerts_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>> {
    Ok(
        sqlx::query_as("SELECT status, count(*) FROM alerts GROUP BY status")
            .fetch_all(pool)
            .await?,
    )
}

pub(crate) async fn set_outcome_for_order(
    pool: &PgPool,
    order_id: i64,
    outcome: AlertOutcome,
    at: Timestamp,
) -> Result<u64> {
    let done =
        sqlx::query("UPDATE alerts SET outcome = $2, outcome_at = $3 WHERE work_order_id = $1")
            .bind(order_id)
            .bind(outcome.as_str())
            .bind(at)
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}

pub(crate) async fn outcome_stats(pool: &PgPool) -> Result<Vec<(String, i64, i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT kind, count(*),
                count(*) FILTER (WHERE outcome = 'confirmed_leak'),
                count(*) FILTER (WHERE outcome = 'false_positive')
         FROM alerts WHERE work_order_id IS NOT NULL GROUP BY kind",
    )
    .fetch_all(pool)
    .await?)
}

pub(crate) async fn alerts_of_order(pool: &PgPool, order_id: i64) -> Result<Vec<Alert>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        alert_cols!(),
        " FROM alerts WHERE work_order_id = $1 ORDER BY id"
    ))
    .bind(order_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(alert_from_row).collect()
}

// ---- crews ----

fn crew_row_from_row(row: &PgRow) -> Result<CrewRow> {
    let pos_lat: Option<f64> = row.try_get("pos_lat")?;
    let pos_lon: Option<f64> = row.try_get("pos_lon")?;
    let shifts: Option<Json<WeeklyShifts>> = row.try_get("shifts")?;
    let current_id: Option<i64> = row.try_get("cur_id")?;
    let current = match current_id {
        Some(order_id) => Some(CurrentOrder {
            order_id,
            priority: parse_text(row.try_get("cur_priority")?, "priority")?,
            status: parse_text(row.try_get("cur_status")?, "work-order status")?,
        }),
        None => None,
    };
    Ok(CrewRow {
        crew: Crew {
            id: parse_crew_id(row.try_get("id")?)?,
            name: row.try_get("name")?,
            skills: row.try_get("skills")?,
            home: GeoPoint {
                lat: row.try_get("home_lat")?,
                lon: row.try_get("home_lon")?,
            },
            position: pos_lat.zip(pos_lon).map(|(lat, lon)| GeoPoint { lat, lon }),
            position_at: row.try_get("position_at")?,
            last_job_place: point(row.try_get("last_job_lat")?, row.try_get("last_job_lon")?),
            shifts: shifts.map(|Json(s)| s),
            on_shift: row.try_get("on_shift")?,
        },
        active_orders: row.try_get("active_orders")?,
        current,
    })
}

pub(crate) async fn upsert_crews(pool: &PgPool, crews: &[Crew]) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let mut n = 0;
    for c in crews {
        n += sqlx::query(
            "INSERT INTO crews (id, name, skills, home_lat, home_lon, pos_lat, pos_lon,
                                position_at, on_shift, shifts, last_job_lat, last_job_lon)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (id) DO UPDATE SET
                 name = excluded.name, skills = excluded.skills,
                 home_lat = excluded.home_lat, home_lon = excluded.home_lon,
                 pos_lat = COALESCE(excluded.pos_lat, crews.pos_lat),
                 pos_lon = COALESCE(excluded.pos_lon, crews.pos_lon),
                 position_at = CASE WHEN excluded.pos_lat IS NULL THEN crews.position_at
                                    ELSE excluded.position_at END,
                 on_shift = excluded.on_shift, shifts = excluded.shifts,
                 last_job_lat = COALESCE(excluded.last_job_lat, crews.last_job_lat),
                 last_job_lon = COALESCE(excluded.last_job_lon, crews.last_job_lon)",
        )
        .bind(c.id.as_str())
        .bind(&c.name)
        .bind(&c.skills)
        .bind(c.home.lat)
        .bind(c.home.lon)
        .bind(c.position.map(|p| p.lat))
        .bind(c.position.map(|p| p.lon))
        .bind(c.position.and(c.position_at))
        .bind(c.on_shift)
        .bind(c.shifts.as_ref().map(Json))
        .bind(c.last_job_place.map(|p| p.lat))
        .bind(c.last_job_place.map(|p| p.lon))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(n)
}

pub(crate) async fn list_crews(
    pool: impl sqlx::PgExecutor<'_>,
    id: Option<&CrewId>,
) -> Result<Vec<CrewRow>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        crew_cols!(),
        ", (SELECT count(*) FROM work_orders w
            WHERE w.crew_id = c.id AND w.status = ANY($2)) AS active_orders,
           cur.id AS cur_id, cur.priority AS cur_priority, cur.status AS cur_status
         FROM crews c LEFT JOIN work_orders cur ON cur.id = ",
        current_order_pick!("w.status = ANY($2)"),
        " WHERE ($1::text IS NULL OR c.id = $1) ORDER BY c.id"
    ))
    .bind(id.map(|c| c.as_str()))
    .bind(occupying_statuses())
    .fetch_all(pool)
    .await?;
    rows.iter().map(crew_row_from_row).collect()
}

pub(crate) async fn set_crew_position(
    pool: &PgPool,
    id: &CrewId,
    at: GeoPoint,
    when: Timestamp,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE crews SET pos_lat = $2, pos_lon = $3, position_at = $4
         WHERE id = $1 AND (position_at IS NULL OR position_at <= $4)",
    )
    .bind(id.as_str())
    .bind(at.lat)
    .bind(at.lon)
    .bind(when)
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM crews WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(pool)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("crew {id}")));
        }
    }
    Ok(())
}

pub(crate) async fn set_crew_last_job_place(
    pool: &PgPool,
    id: &CrewId,
    place: GeoPoint,
) -> Result<()> {
    let done = sqlx::query("UPDATE crews SET last_job_lat = $2, last_job_lon = $3 WHERE id = $1")
        .bind(id.as_str())
        .bind(place.lat)
        .bind(place.lon)
        .execute(pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("crew {id}")));
    }
    Ok(())
}

// ---- work orders ----

pub(crate) fn work_order_from_row(row: &PgRow) -> Result<WorkOrder> {
    let meter_id: Option<String> = row.try_get("meter_id")?;
    let district_id: Option<String> = row.try_get("district_id")?;
    let crew_id: Option<String> = row.try_get("crew_id")?;
    let finding: Option<Json<SiteFinding>> = row.try_get("finding")?;
    Ok(WorkOrder {
        id: row.try_get("id")?,
        kind: parse_text(row.try_get("kind")?, "work-order kind")?,
        priority: parse_text(row.try_get("priority")?, "priority")?,
        status: parse_text(row.try_get("status")?, "work-order status")?,
        alert_id: row.try_get("alert_id")?,
        meter_id: meter_id.map(parse_meter_id).transpose()?,
        district_id: district_id.map(parse_district_id).transpose()?,
        location: GeoPoint {
            lat: row.try_get("lat")?,
            lon: row.try_get("lon")?,
        },
        crew_id: crew_id.map(parse_crew_id).transpose()?,
        summary: row.try_get("summary")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        due_at: row.try_get("due_at")?,
        parent_id: row.try_get("parent_id")?,
        assigned_at: row.try_get("assigned_at")?,
        reached_at: row.try_get("reached_at")?,
        breached_at: row.try_get("breached_at")?,
        finding: finding.map(|Json(f)| f),
    })
}

fn transition_from_row(row: &PgRow) -> Result<TransitionRecord> {
    let crew_id: Option<String> = row.try_get("crew_id")?;
    Ok(TransitionRecord {
        order_id: row.try_get("order_id")?,
        from: parse_text(row.try_get("from_status")?, "work-order status")?,
        to: parse_text(row.try_get("to_status")?, "work-order status")?,
        action: row.try_get("action")?,
        actor: row.try_get("actor")?,
        at: row.try_get("at")?,
        crew_id: crew_id.map(parse_crew_id).transpose()?,
        note: row.try_get("note")?,
        position: point(row.try_get("lat")?, row.try_get("lon")?),
    })
}

async fn insert_transition(
    conn: &mut sqlx::PgConnection,
    id: i64,
    rec: &TransitionRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO work_order_transitions
             (order_id, from_status, to_status, action, actor, at, crew_id, note, lat, lon)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id)
    .bind(rec.from.as_str())
    .bind(rec.to.as_str())
    .bind(&rec.action)
    .bind(&rec.actor)
    .bind(rec.at)
    .bind(rec.crew_id.as_ref().map(|c| c.as_str()))
    .bind(&rec.note)
    .bind(rec.position.map(|p| p.lat))
    .bind(rec.position.map(|p| p.lon))
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn create_work_order(
    pool: &PgPool,
    wo: &NewWorkOrder,
    now: Timestamp,
) -> Result<WorkOrder> {
    let mut tx = pool.begin().await?;
    if let Some(parent) = wo.parent_id {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM work_orders WHERE id = $1")
            .bind(parent)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("parent work order {parent}")));
        }
    }
    let row = sqlx::query(concat!(
        "INSERT INTO work_orders (kind, priority, status, alert_id, meter_id, district_id,
                                  lat, lon, summary, created_at, updated_at, due_at,
                                  parent_id)
         VALUES ($1, $2, 'created', $3, $4, $5, $6, $7, $8, $9, $9, $10, $11) RETURNING ",
        work_order_cols!()
    ))
    .bind(wo.kind.as_str())
    .bind(wo.priority.as_str())
    .bind(wo.alert_id)
    .bind(wo.meter_id.as_ref().map(|m| m.as_str()))
    .bind(wo.district_id.as_ref().map(|d| d.as_str()))
    .bind(wo.location.lat)
    .bind(wo.location.lon)
    .bind(&wo.summary)
    .bind(now)
    .bind(wo.due_at)
    .bind(wo.parent_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match (is_foreign_key_violation(&e), wo.alert_id) {
        (true, Some(a)) => StoreError::NotFound(format!("alert {a}")),
        _ => e.into(),
    })?;
    let order = work_order_from_row(&row)?;
    let rec = TransitionRecord {
        order_id: order.id,
        from: WorkOrderStatus::Created,
        to: WorkOrderStatus::Created,
        action: "create".into(),
        actor: wo.actor.clone(),
        at: order.created_at,
        crew_id: None,
        note: None,
        position: None,
    };
    insert_transition(&mut tx, order.id, &rec).await?;
    tx.commit().await?;
    Ok(order)
}

pub(crate) async fn get_work_order(pool: &PgPool, id: i64) -> Result<Option<WorkOrder>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        work_order_cols!(),
        " FROM work_orders WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(work_order_from_row).transpose()
}

pub(crate) async fn list_work_orders(pool: &PgPool, q: &WorkOrderQuery) -> Result<Vec<WorkOrder>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        work_order_cols!(),
        " FROM work_orders
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR crew_id = $2)
           AND ($3::int8 IS NULL OR id < $3)
           AND ($5::int8 IS NULL OR parent_id = $5)
           AND ($6::int8 IS NULL OR alert_id = $6)
         ORDER BY id DESC LIMIT $4"
    ))
    .bind(q.status.map(|s| s.as_str()))
    .bind(q.crew_id.as_ref().map(|c| c.as_str()))
    .bind(q.cursor)
    .bind(i64::from(q.limit))
    .bind(q.parent_id)
    .bind(q.alert_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(work_order_from_row).collect()
}

pub(crate) async fn apply_transition(
    pool: &PgPool,
    id: i64,
    rec: &TransitionRecord,
    change: &OrderChange,
    times: TransitionTimes,
) -> Result<WorkOrder> {
    let mut tx = pool.begin().await?;
    let crew = change.crew.as_ref().map(|c| c.as_ref());
    let updated = sqlx::query(concat!(
        "UPDATE work_orders SET status = $3, updated_at = $4,
                                crew_id = CASE WHEN $5 THEN $6::text ELSE crew_id END,
                                assigned_at = CASE WHEN $7 THEN $8::timestamptz
                                                   ELSE assigned_at END,
                                reached_at = CASE WHEN $9 THEN COALESCE(reached_at, $4)
                                                  ELSE reached_at END,
                                finding = COALESCE($10::jsonb, finding)
         WHERE id = $1 AND status = $2 RETURNING ",
        work_order_cols!()
    ))
    .bind(id)
    .bind(rec.from.as_str())
    .bind(rec.to.as_str())
    .bind(rec.at)
    .bind(crew.is_some())
    .bind(crew.flatten().map(|c| c.as_str()))
    .bind(times.assigned_at.is_some())
    .bind(times.assigned_at.flatten())
    .bind(times.reached)
    .bind(change.finding.as_ref().map(Json))
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| match crew {
        Some(Some(c)) if is_foreign_key_violation(&e) => StoreError::NotFound(format!("crew {c}")),
        _ => e.into(),
    })?;
    let Some(row) = updated else {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM work_orders WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        return Err(match status {
            Some(s) => work_order_conflict(id, &s),
            None => StoreError::NotFound(format!("work order {id}")),
        });
    };
    let order = work_order_from_row(&row)?;
    insert_transition(&mut tx, id, rec).await?;
    tx.commit().await?;
    Ok(order)
}

pub(crate) async fn work_order_history(pool: &PgPool, id: i64) -> Result<Vec<TransitionRecord>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        transition_cols!(),
        " FROM work_order_transitions WHERE order_id = $1 ORDER BY seq"
    ))
    .bind(id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(transition_from_row).collect()
}

pub(crate) async fn jobs_for_crew(pool: &PgPool, crew: &CrewId) -> Result<Vec<WorkOrder>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        work_order_cols!(),
        " FROM work_orders WHERE crew_id = $1 AND NOT (status = ANY($2))
         ORDER BY ",
        priority_rank!(),
        ", created_at, id"
    ))
    .bind(crew.as_str())
    .bind(final_statuses())
    .fetch_all(pool)
    .await?;
    rows.iter().map(work_order_from_row).collect()
}

pub(crate) async fn active_work_orders(pool: &PgPool) -> Result<Vec<WorkOrder>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        work_order_cols!(),
        " FROM work_orders WHERE NOT (status = ANY($1)) ORDER BY id"
    ))
    .bind(final_statuses())
    .fetch_all(pool)
    .await?;
    rows.iter().map(work_order_from_row).collect()
}

pub(crate) async fn orders_awaiting_acceptance(
    pool: &PgPool,
    assigned_before: Timestamp,
) -> Result<Vec<WorkOrder>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        work_order_cols!(),
        " FROM work_orders WHERE status = $1 AND assigned_at < $2
         ORDER BY assigned_at, id"
    ))
    .bind(WorkOrderStatus::Assigned.as_str())
    .bind(assigned_before)
    .fetch_all(pool)
    .await?;
    rows.iter().map(work_order_from_row).collect()
}

pub(crate) async fn orders_due_before(pool: &PgPool, t: Timestamp) -> Result<Vec<WorkOrder>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        work_order_cols!(),
        " FROM work_orders
         WHERE breached_at IS NULL AND due_at < $1 AND NOT (status = ANY($2))
         ORDER BY due_at, id"
    ))
    .bind(t)
    .bind(final_statuses())
    .fetch_all(pool)
    .await?;
    rows.iter().map(work_order_from_row).collect()
}

pub(crate) async fn mark_breached(pool: &PgPool, order_id: i64, at: Timestamp) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE work_orders SET breached_at = $2 WHERE id = $1 AND breached_at IS NULL",
    )
    .bind(order_id)
    .bind(at)
    .execute(pool)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(true);
    }
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM work_orders WHERE id = $1")
        .bind(order_id)
        .fetch_optional(pool)
        .await?;
    match exists {
        Some(_) => Ok(false),
        None => Err(StoreError::NotFound(format!("work order {order_id}"))),
    }
}

pub(crate) async fn count_breached(pool: &PgPool) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM work_orders WHERE breached_at IS NOT NULL")
            .fetch_one(pool)
            .await?,
    )
}

pub(crate) async fn set_work_order_priority(
    pool: &PgPool,
    order_id: i64,
    priority: Priority,
    due_at: Option<Timestamp>,
) -> Result<WorkOrder> {
    let row = sqlx::query(concat!(
        "UPDATE work_orders SET priority = $2, due_at = $3 WHERE id = $1 RETURNING ",
        work_order_cols!()
    ))
    .bind(order_id)
    .bind(priority.as_str())
    .bind(due_at)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => work_order_from_row(&row),
        None => Err(StoreError::NotFound(format!("work order {order_id}"))),
    }
}

pub(crate) async fn save_detector_state(
    pool: &PgPool,
    rows: &[(String, Vec<u8>)],
    now: Timestamp,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let subjects: Vec<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
    let states: Vec<&[u8]> = rows.iter().map(|(_, b)| b.as_slice()).collect();
    sqlx::query(
        "INSERT INTO detector_state (subject, state, updated_at)
         SELECT s, b, $3 FROM UNNEST($1::text[], $2::bytea[]) AS u(s, b)
         ON CONFLICT (subject) DO UPDATE SET state = excluded.state,
                                             updated_at = excluded.updated_at",
    )
    .bind(&subjects)
    .bind(&states)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn load_detector_state(pool: &PgPool) -> Result<Vec<(String, Vec<u8>)>> {
    Ok(
        sqlx::query_as("SELECT subject, state FROM detector_state ORDER BY subject")
            .fetch_all(pool)
            .await?,
    )
}

pub(crate) async fn readings_since(
    pool: &PgPool,
    from: Timestamp,
    after: Option<(Timestamp, &str)>,
    limit: u32,
) -> Result<Vec<Reading>> {
    let (after_t, after_m) = match after {
        Some((t, m)) => (Some(t), Some(m)),
        None => (None, None),
    };
    let rows = sqlx::query(
        "SELECT meter_id, t, vol, temp, flow_max, pressure FROM readings
         WHERE t >= $1
           AND t >= COALESCE($2::timestamptz, $1)
           AND ($2::timestamptz IS NULL OR (t, meter_id) > ($2, $3::text))
         ORDER BY t, meter_id LIMIT $4",
    )
    .bind(from)
    .bind(after_t)
    .bind(after_m)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Reading {
                meter: crate::parse_meter_id(row.try_get("meter_id")?)?,
                t: row.try_get("t")?,
                vol: row.try_get("vol")?,
                temp: row.try_get("temp")?,
                flow_max: row.try_get("flow_max")?,
                pressure: row.try_get("pressure")?,
            })
        })
        .collect()
}

pub(crate) async fn resolve_quiet_alerts(
    pool: &PgPool,
    seen_before: Timestamp,
    reason: &str,
) -> Result<Vec<Alert>> {
    let rows = sqlx::query(concat!(
        "UPDATE alerts SET status = 'resolved', status_reason = $2
         WHERE status IN ('open', 'acknowledged') AND last_seen < $1
         RETURNING ",
        alert_cols!()
    ))
    .bind(seen_before)
    .bind(reason)
    .fetch_all(pool)
    .await?;
    rows.iter().map(alert_from_row).collect()
}

pub(crate) async fn resolve_quiet_alerts_in(
    pool: &PgPool,
    district: &DistrictId,
    seen_before: Timestamp,
    reason: &str,
) -> Result<Vec<Alert>> {
    let rows = sqlx::query(concat!(
        "UPDATE alerts SET status = 'resolved', status_reason = $2
         WHERE status IN ('open', 'acknowledged') AND last_seen < $1 AND district_id = $3
         RETURNING ",
        alert_cols!()
    ))
    .bind(seen_before)
    .bind(reason)
    .bind(district.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter().map(alert_from_row).collect()
}
