//! The SQLite side of what the backends do differently: writes in `BEGIN IMMEDIATE`
//! transactions (so a transaction never has to upgrade a read lock, which WAL mode
//! would refuse with `SQLITE_BUSY` instead of waiting), row by row with cached prepared
//! statements, and hours by arithmetic on epoch milliseconds.

use crate::db::{Row, from_ms, json_list, ms};
use crate::detector_state::state_upsert;
use crate::meters::meter_upsert;
use crate::readings::{Latest, hourly_from_row};
use crate::{HourlyRow, ReadingFlags, Result, StoreError, finite, same_volume};
use leakwatch_core::{Meter, MeterId, Reading, Timestamp};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row as _, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// A write transaction that takes the write lock up front.
pub(crate) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

pub(crate) async fn connect(url: &str) -> Result<SqlitePool> {
    let memory = url.contains(":memory:") || url.contains("mode=memory");
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::BadUrl(format!("{url}: {e}")))?
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = if memory {
        // An in-memory database lives as long as its connection: keep exactly one,
        // forever.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await?
    } else {
        let file = opts.get_filename().to_path_buf();
        if file.as_os_str().is_empty() {
            return Err(StoreError::BadUrl(format!(
                "{url}: no file name (use sqlite://PATH or sqlite::memory:)"
            )));
        }
        if let Some(dir) = file.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::BadUrl(format!("{url}: cannot create {}: {e}", dir.display()))
            })?;
        }
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?
    };
    sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
    tracing::debug!(url, "connected to sqlite, migrations applied");
    Ok(pool)
}

// ---- meters ----

pub(crate) async fn upsert_meters(pool: &SqlitePool, meters: &[Meter]) -> Result<u64> {
    let now = ms(chrono::Utc::now());
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let mut n = 0;
    for m in meters {
        n += sqlx::query(concat!(
            "INSERT INTO meters (id, district_id, kind, lat, lon, report_every_h, status,
                                 installed_at, max_flow_m3h, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?9, ?10, ?8)
             ",
            meter_upsert!()
        ))
        .bind(m.id.as_str())
        .bind(m.district.as_str())
        .bind(m.kind.as_str())
        .bind(m.location.lat)
        .bind(m.location.lon)
        .bind(i64::from(m.report_every_h))
        .bind(m.status.as_str())
        .bind(now)
        .bind(m.installed_at.map(ms))
        .bind(finite(m.max_flow_m3h))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(n)
}

// ---- readings ----

/// Stores a batch (see `Store::insert_batch`); returns (inserted, conflicts). Row by row
/// with cached prepared statements in one `BEGIN IMMEDIATE` transaction.
pub(crate) async fn insert_batch(
    pool: &SqlitePool,
    rows: &[(Reading, ReadingFlags)],
    received_at: Timestamp,
) -> Result<(u64, u64)> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let mut inserted = 0;
    let mut conflicts = 0;
    for (r, flags) in rows {
        let new = sqlx::query(
            "INSERT INTO readings (meter_id, t, vol, temp, flow_max, pressure, flags)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
        )
        .bind(r.meter.as_str())
        .bind(ms(r.t))
        .bind(r.vol)
        .bind(finite(r.temp))
        .bind(finite(r.flow_max))
        .bind(finite(r.pressure))
        .bind(i64::from(flags.0))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if new {
            inserted += 1;
            continue;
        }
        let stored: Option<f64> =
            sqlx::query_scalar("SELECT vol FROM readings WHERE meter_id = ?1 AND t = ?2")
                .bind(r.meter.as_str())
                .bind(ms(r.t))
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(stored) = stored
            && !same_volume(stored, r.vol)
        {
            sqlx::query(
                "INSERT INTO reading_conflicts (meter_id, t, stored_vol, received_vol, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(r.meter.as_str())
            .bind(ms(r.t))
            .bind(stored)
            .bind(r.vol)
            .bind(ms(received_at))
            .execute(&mut *tx)
            .await?;
            conflicts += 1;
        }
    }
    tx.commit().await?;
    Ok((inserted, conflicts))
}

/// Each meter's latest raw reading and the last reading of its latest archived hour,
/// as (meter, raw, archived); index probes in correlated subqueries.
pub(crate) async fn latest_readings(pool: &SqlitePool, meters: &[String]) -> Result<Vec<Latest>> {
    let rows = sqlx::query(
        "SELECT m.value AS meter_id,
                (SELECT t FROM readings WHERE meter_id = m.value
                 ORDER BY t DESC LIMIT 1) AS raw_t,
                (SELECT vol FROM readings WHERE meter_id = m.value
                 ORDER BY t DESC LIMIT 1) AS raw_vol,
                (SELECT last_t FROM readings_hourly WHERE meter_id = m.value
                 ORDER BY hour DESC LIMIT 1) AS last_t,
                (SELECT last_vol FROM readings_hourly WHERE meter_id = m.value
                 ORDER BY hour DESC LIMIT 1) AS last_vol
         FROM (SELECT DISTINCT value FROM json_each(?1)) AS m",
    )
    .bind(json_list(meters))
    .fetch_all(pool)
    .await?;
    let pair = |row: &sqlx::sqlite::SqliteRow, t: &str, v: &str| -> Result<_> {
        let t: Option<i64> = row.try_get(t)?;
        let v: Option<f64> = row.try_get(v)?;
        Ok(t.map(from_ms).transpose()?.zip(v))
    };
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("meter_id")?,
                pair(row, "raw_t", "raw_vol")?,
                pair(row, "last_t", "last_vol")?,
            ))
        })
        .collect()
}

/// The start of the UTC hour of the epoch-millisecond column `t` (floored, also before
/// 1970).
macro_rules! hour_of_t {
    () => {
        "t - ((t % 3600000) + 3600000) % 3600000"
    };
}

/// The hours of a meter aggregated from its raw readings, starting in [`from`, `to`),
/// ordered by hour.
pub(crate) async fn hourly_raw(
    pool: &SqlitePool,
    meter: &MeterId,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<Vec<HourlyRow>> {
    // The hours starting in [from, to) hold readings of [from, to + 1 h): that range of
    // the primary key is scanned, then the hours outside are left out.
    let raw = sqlx::query(concat!(
        "SELECT g.hour, g.first_t,
                (SELECT vol FROM readings WHERE meter_id = ?1 AND t = g.first_t) AS first_vol,
                g.last_t,
                (SELECT vol FROM readings WHERE meter_id = ?1 AND t = g.last_t) AS last_vol,
                g.n
         FROM (SELECT ",
        hour_of_t!(),
        " AS hour, min(t) AS first_t, max(t) AS last_t, count(*) AS n
               FROM readings
               WHERE meter_id = ?1 AND (?2 IS NULL OR t >= ?2)
                 AND (?3 IS NULL OR t < ?3 + 3600000)
               GROUP BY 1) AS g
         WHERE (?2 IS NULL OR g.hour >= ?2) AND (?3 IS NULL OR g.hour < ?3)
         ORDER BY g.hour"
    ))
    .bind(meter.as_str())
    .bind(from.map(ms))
    .bind(to.map(ms))
    .fetch_all(pool)
    .await?;
    raw.into_iter()
        .map(|row| hourly_from_row(meter, &Row::Sqlite(row)))
        .collect()
}

/// Archives the hours of the readings before `before` into `readings_hourly` (merged
/// with what is archived there), then deletes the readings, in one transaction.
pub(crate) async fn drop_raw_readings_before(pool: &SqlitePool, before: Timestamp) -> Result<u64> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    // `WHERE true`: without it SQLite would read `ON CONFLICT` as a join constraint.
    sqlx::query(concat!(
        "INSERT INTO readings_hourly (meter_id, hour, first_t, first_vol, last_t, last_vol, n)
         SELECT g.meter_id, g.hour, g.first_t,
                (SELECT vol FROM readings r WHERE r.meter_id = g.meter_id AND r.t = g.first_t),
                g.last_t,
                (SELECT vol FROM readings r WHERE r.meter_id = g.meter_id AND r.t = g.last_t),
                g.n
         FROM (SELECT meter_id, ",
        hour_of_t!(),
        " AS hour, min(t) AS first_t, max(t) AS last_t, count(*) AS n
               FROM readings WHERE t < ?1 GROUP BY 1, 2) AS g
         WHERE true
         ON CONFLICT (meter_id, hour) DO UPDATE SET
             first_t = min(first_t, excluded.first_t),
             first_vol = CASE WHEN excluded.first_t < first_t
                              THEN excluded.first_vol ELSE first_vol END,
             last_t = max(last_t, excluded.last_t),
             last_vol = CASE WHEN excluded.last_t > last_t
                             THEN excluded.last_vol ELSE last_vol END,
             n = n + excluded.n"
    ))
    .bind(ms(before))
    .execute(&mut *tx)
    .await?;
    let done = sqlx::query("DELETE FROM readings WHERE t < ?1")
        .bind(ms(before))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

// ---- detector state ----

pub(crate) async fn save_detector_state(
    pool: &SqlitePool,
    rows: &[(String, Vec<u8>)],
    now: Timestamp,
) -> Result<()> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    for (subject, state) in rows {
        sqlx::query(concat!(
            "INSERT INTO detector_state (subject, state, updated_at) VALUES (?1, ?2, ?3)
             ",
            state_upsert!()
        ))
        .bind(subject)
        .bind(state)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
