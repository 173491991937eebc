//! The SQLite backend: times are INTEGER Unix epoch milliseconds, JSON is TEXT, writes
//! run in `BEGIN IMMEDIATE` transactions (so a transaction never has to upgrade a read
//! lock, which WAL mode would refuse with `SQLITE_BUSY` instead of waiting).

use crate::{
    AlertQuery, CrewRow, CurrentOrder, DeadLetter, HourlyRow, NewDeadLetter, NewWorkOrder,
    OrderChange, ReadingConflict, ReadingFlags, Result, StoreError, TransitionTimes,
    WorkOrderQuery, alert_conflict, final_statuses, finite, is_foreign_key_violation,
    is_unique_violation, latest_of, occupying_statuses, parse_crew_id, parse_district_id,
    parse_meter_id, parse_text, point, report_every_h, same_volume, work_order_conflict,
};
use leakwatch_core::{
    Alert, AlertOutcome, AlertStatus, Crew, CrewId, DistrictId, EventCode, Finding, GeoPoint,
    Meter, MeterEvent, MeterId, Priority, Reading, SiteFinding, Timestamp, TransitionRecord,
    WeeklyShifts, WorkOrder, WorkOrderStatus,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// A write transaction that takes the write lock up front.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

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

pub(crate) async fn ping(pool: &SqlitePool) -> Result<()> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

// ---- conversions ----

pub(crate) fn ms(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> Result<Timestamp> {
    chrono::DateTime::from_timestamp_millis(v)
        .ok_or_else(|| StoreError::Corrupt(format!("stored time {v} ms is out of range")))
}

fn time(row: &SqliteRow, col: &str) -> Result<Timestamp> {
    from_ms(row.try_get(col)?)
}

fn opt_time(row: &SqliteRow, col: &str) -> Result<Option<Timestamp>> {
    row.try_get::<Option<i64>, _>(col)?.map(from_ms).transpose()
}

fn text(row: &SqliteRow, col: &str) -> Result<String> {
    Ok(row.try_get(col)?)
}

/// A list of strings as a JSON array, for `IN (SELECT value FROM json_each(?))`.
pub(crate) fn json_list(items: Vec<String>) -> String {
    serde_json::Value::from(items).to_string()
}

// ---- meters ----

pub(crate) fn meter_from_row(row: &SqliteRow) -> Result<Meter> {
    Ok(Meter {
        id: parse_meter_id(text(row, "id")?)?,
        district: parse_district_id(text(row, "district_id")?)?,
        kind: parse_text(&text(row, "kind")?, "meter kind")?,
        location: GeoPoint {
            lat: row.try_get("lat")?,
            lon: row.try_get("lon")?,
        },
        report_every_h: report_every_h(row.try_get("report_every_h")?)?,
        status: parse_text(&text(row, "status")?, "meter status")?,
        installed_at: opt_time(row, "installed_at")?,
        max_flow_m3h: row.try_get("max_flow_m3h")?,
    })
}

pub(crate) async fn upsert_meters(pool: &SqlitePool, meters: &[Meter]) -> Result<u64> {
    let now = ms(chrono::Utc::now());
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let mut n = 0;
    for m in meters {
        n += sqlx::query(
            "INSERT INTO meters (id, district_id, kind, lat, lon, report_every_h, status,
                                 installed_at, max_flow_m3h, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?9, ?10, ?8)
             ON CONFLICT (id) DO UPDATE SET
                 district_id = excluded.district_id, kind = excluded.kind, lat = excluded.lat,
                 lon = excluded.lon, report_every_h = excluded.report_every_h,
                 status = excluded.status, installed_at = excluded.installed_at,
                 max_flow_m3h = excluded.max_flow_m3h, updated_at = excluded.updated_at",
        )
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

pub(crate) async fn get_meter(pool: &SqlitePool, id: &MeterId) -> Result<Option<Meter>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        meter_cols!(),
        " FROM meters WHERE id = ?1"
    ))
    .bind(id.as_str())
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(meter_from_row).transpose()
}

pub(crate) async fn list_meters(
    pool: &SqlitePool,
    after: Option<&MeterId>,
    limit: u32,
) -> Result<Vec<Meter>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        meter_cols!(),
        " FROM meters WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2"
    ))
    .bind(after.map(|m| m.as_str()))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(meter_from_row).collect()
}

pub(crate) async fn all_meters(pool: &SqlitePool) -> Result<Vec<Meter>> {
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

pub(crate) async fn readings_flagged(
    pool: &SqlitePool,
    meter: &MeterId,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    limit: u32,
) -> Result<Vec<(Reading, ReadingFlags)>> {
    let rows = sqlx::query(
        "SELECT t, vol, temp, flow_max, pressure, flags FROM readings
         WHERE meter_id = ?1 AND (?2 IS NULL OR t >= ?2) AND (?3 IS NULL OR t < ?3)
         ORDER BY t LIMIT ?4",
    )
    .bind(meter.as_str())
    .bind(from.map(ms))
    .bind(to.map(ms))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let reading = Reading {
                meter: meter.clone(),
                t: time(row, "t")?,
                vol: row.try_get("vol")?,
                temp: row.try_get("temp")?,
                flow_max: row.try_get("flow_max")?,
                pressure: row.try_get("pressure")?,
            };
            Ok((reading, ReadingFlags::from_db(row.try_get("flags")?)?))
        })
        .collect()
}

pub(crate) async fn latest_readings(
    pool: &SqlitePool,
    meters: &[&str],
) -> Result<Vec<(String, Timestamp, f64)>> {
    let ids = json_list(meters.iter().map(|m| (*m).to_owned()).collect());
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
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let raw = opt_time(row, "raw_t")?.zip(row.try_get::<Option<f64>, _>("raw_vol")?);
        let archived = opt_time(row, "last_t")?.zip(row.try_get::<Option<f64>, _>("last_vol")?);
        if let Some((t, vol)) = latest_of(raw, archived) {
            out.push((text(row, "meter_id")?, t, vol));
        }
    }
    Ok(out)
}

/// The start of the UTC hour of the epoch-millisecond column `t` (floored, also before
/// 1970).
macro_rules! hour_of_t {
    () => {
        "t - ((t % 3600000) + 3600000) % 3600000"
    };
}

/// The archived hours, then the hours aggregated from raw readings, of a meter, starting
/// in [`from`, `to`), each ordered by hour (`Store::hourly` merges them).
pub(crate) async fn hourly(
    pool: &SqlitePool,
    meter: &MeterId,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<(Vec<HourlyRow>, Vec<HourlyRow>)> {
    let archived = sqlx::query(
        "SELECT hour, first_t, first_vol, last_t, last_vol, n FROM readings_hourly
         WHERE meter_id = ?1 AND (?2 IS NULL OR hour >= ?2) AND (?3 IS NULL OR hour < ?3)
         ORDER BY hour",
    )
    .bind(meter.as_str())
    .bind(from.map(ms))
    .bind(to.map(ms))
    .fetch_all(pool)
    .await?;
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
    let rows = |rows: Vec<SqliteRow>| {
        rows.iter()
            .map(|row| {
                Ok(HourlyRow {
                    meter_id: meter.clone(),
                    hour: time(row, "hour")?,
                    first_t: time(row, "first_t")?,
                    first_vol: row.try_get("first_vol")?,
                    last_t: time(row, "last_t")?,
                    last_vol: row.try_get("last_vol")?,
                    n: row.try_get("n")?,
                })
            })
            .collect::<Result<Vec<_>>>()
    };
    Ok((rows(archived)?, rows(raw)?))
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

pub(crate) async fn list_conflicts(pool: &SqlitePool, limit: u32) -> Result<Vec<ReadingConflict>> {
    let rows = sqlx::query(
        "SELECT id, meter_id, t, stored_vol, received_vol, received_at FROM reading_conflicts
         ORDER BY id DESC LIMIT ?1",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ReadingConflict {
                id: row.try_get("id")?,
                meter_id: parse_meter_id(text(row, "meter_id")?)?,
                t: time(row, "t")?,
                stored_vol: row.try_get("stored_vol")?,
                received_vol: row.try_get("received_vol")?,
                received_at: time(row, "received_at")?,
            })
        })
        .collect()
}

pub(crate) async fn count_conflicts(pool: &SqlitePool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM reading_conflicts")
        .fetch_one(pool)
        .await?)
}

pub(crate) async fn count_readings(pool: &SqlitePool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(pool)
        .await?)
}

pub(crate) async fn insert_events(pool: &SqlitePool, events: &[MeterEvent]) -> Result<u64> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let mut n = 0;
    for e in events {
        n += sqlx::query(
            "INSERT INTO meter_events (meter_id, t, code) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
        )
        .bind(e.meter.as_str())
        .bind(ms(e.t))
        .bind(e.code.to_text())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(n)
}

pub(crate) async fn events_since(
    pool: &SqlitePool,
    from: Timestamp,
    limit: u32,
) -> Result<Vec<MeterEvent>> {
    let rows = sqlx::query(
        "SELECT meter_id, t, code FROM meter_events WHERE t >= ?1 ORDER BY t, meter_id, code LIMIT ?2",
    )
    .bind(ms(from))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(MeterEvent {
                meter: parse_meter_id(text(row, "meter_id")?)?,
                t: time(row, "t")?,
                code: EventCode::from_text(&text(row, "code")?),
            })
        })
        .collect()
}

pub(crate) async fn meter_events(
    pool: &SqlitePool,
    meter: &MeterId,
    limit: u32,
) -> Result<Vec<MeterEvent>> {
    let rows = sqlx::query(
        "SELECT t, code FROM meter_events WHERE meter_id = ?1 ORDER BY t DESC, code LIMIT ?2",
    )
    .bind(meter.as_str())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(MeterEvent {
                meter: meter.clone(),
                t: time(row, "t")?,
                code: EventCode::from_text(&text(row, "code")?),
            })
        })
        .collect()
}

// ---- dead letters ----

pub(crate) async fn dead_letter(pool: &SqlitePool, dl: &NewDeadLetter) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO dead_letters (topic, reason, detail, payload, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
    )
    .bind(&dl.topic)
    .bind(&dl.reason)
    .bind(&dl.detail)
    .bind(&dl.payload)
    .bind(ms(dl.received_at))
    .fetch_one(pool)
    .await?)
}

pub(crate) async fn list_dead_letters(pool: &SqlitePool, limit: u32) -> Result<Vec<DeadLetter>> {
    let rows = sqlx::query(
        "SELECT id, topic, reason, detail, payload, received_at FROM dead_letters
         ORDER BY id DESC LIMIT ?1",
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
                received_at: time(row, "received_at")?,
            })
        })
        .collect()
}

pub(crate) async fn count_dead_letters(pool: &SqlitePool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(pool)
        .await?)
}

// ---- alerts ----

pub(crate) fn alert_from_row(row: &SqliteRow) -> Result<Alert> {
    let meter_id: Option<String> = row.try_get("meter_id")?;
    let district_id: Option<String> = row.try_get("district_id")?;
    let Json(evidence) = row.try_get("evidence")?;
    let outcome: Option<String> = row.try_get("outcome")?;
    Ok(Alert {
        id: row.try_get("id")?,
        kind: parse_text(&text(row, "kind")?, "alert kind")?,
        severity: parse_text(&text(row, "severity")?, "severity")?,
        status: parse_text(&text(row, "status")?, "alert status")?,
        meter_id: meter_id.map(parse_meter_id).transpose()?,
        district_id: district_id.map(parse_district_id).transpose()?,
        detected_at: time(row, "detected_at")?,
        last_seen: time(row, "last_seen")?,
        count: row.try_get("count")?,
        evidence,
        work_order_id: row.try_get("work_order_id")?,
        status_reason: row.try_get("status_reason")?,
        outcome: outcome
            .map(|o| parse_text(&o, "alert outcome"))
            .transpose()?,
        created_at: time(row, "created_at")?,
    })
}

pub(crate) async fn record_finding(
    pool: &SqlitePool,
    f: &Finding,
    subject: &str,
    now: Timestamp,
) -> Result<Alert> {
    let row = sqlx::query(concat!(
        "INSERT INTO alerts (subject, kind, severity, status, meter_id, district_id,
                             detected_at, last_seen, count, evidence, created_at)
         VALUES (?1, ?2, ?3, 'open', ?4, ?5, ?6, ?6, 1, ?7, ?8)
         ON CONFLICT (subject, kind) WHERE status IN ('open', 'acknowledged', 'escalated')
         DO UPDATE SET count = alerts.count + 1,
                       last_seen = MAX(alerts.last_seen, excluded.last_seen),
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
    .bind(ms(f.detected_at))
    .bind(Json(&f.evidence))
    .bind(ms(now))
    .fetch_one(pool)
    .await?;
    alert_from_row(&row)
}

pub(crate) async fn get_alert(pool: &SqlitePool, id: i64) -> Result<Option<Alert>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        alert_cols!(),
        " FROM alerts WHERE id = ?1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(alert_from_row).transpose()
}

pub(crate) async fn list_alerts(pool: &SqlitePool, q: &AlertQuery) -> Result<Vec<Alert>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        alert_cols!(),
        " FROM alerts
         WHERE (?1 IS NULL OR status = ?1)
           AND (?2 IS NULL OR kind = ?2)
           AND (?3 IS NULL OR detected_at >= ?3)
           AND (?4 IS NULL OR meter_id = ?4)
           AND (?5 IS NULL OR id < ?5)
         ORDER BY id DESC LIMIT ?6"
    ))
    .bind(q.status.map(|s| s.as_str()))
    .bind(q.kind.map(|k| k.as_str()))
    .bind(q.since.map(ms))
    .bind(q.meter_id.as_ref().map(|m| m.as_str()))
    .bind(q.cursor)
    .bind(i64::from(q.limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(alert_from_row).collect()
}

pub(crate) async fn set_alert_status(
    pool: &SqlitePool,
    id: i64,
    from: AlertStatus,
    to: AlertStatus,
    reason: Option<&str>,
    work_order_id: Option<i64>,
) -> Result<Alert> {
    let updated = sqlx::query(concat!(
        "UPDATE alerts SET status = ?3,
                           status_reason = COALESCE(?4, status_reason),
                           work_order_id = COALESCE(?5, work_order_id)
         WHERE id = ?1 AND status = ?2 RETURNING ",
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
                sqlx::query_scalar("SELECT status FROM alerts WHERE id = ?1")
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

pub(crate) async fn count_alerts_by_status(pool: &SqlitePool) -> Result<Vec<(String, i64)>> {
    Ok(
        sqlx::query_as("SELECT status, count(*) FROM alerts GROUP BY status")
            .fetch_all(pool)
            .await?,
    )
}

pub(crate) async fn set_outcome_for_order(
    pool: &SqlitePool,
    order_id: i64,
    outcome: AlertOutcome,
    at: Timestamp,
) -> Result<u64> {
    let done =
        sqlx::query("UPDATE alerts SET outcome = ?2, outcome_at = ?3 WHERE work_order_id = ?1")
            .bind(order_id)
            .bind(outcome.as_str())
            .bind(ms(at))
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}

pub(crate) async fn outcome_stats(pool: &SqlitePool) -> Result<Vec<(String, i64, i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT kind, count(*),
                sum(CASE WHEN outcome = 'confirmed_leak' THEN 1 ELSE 0 END),
                sum(CASE WHEN outcome = 'false_positive' THEN 1 ELSE 0 END)
         FROM alerts WHERE work_order_id IS NOT NULL GROUP BY kind",
    )
    .fetch_all(pool)
    .await?)
}

pub(crate) async fn alerts_of_order(pool: &SqlitePool, order_id: i64) -> Result<Vec<Alert>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        alert_cols!(),
        " FROM alerts WHERE work_order_id = ?1 ORDER BY id"
    ))
    .bind(order_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(alert_from_row).collect()
}

// ---- crews ----

fn crew_row_from_row(row: &SqliteRow) -> Result<CrewRow> {
    let pos_lat: Option<f64> = row.try_get("pos_lat")?;
    let pos_lon: Option<f64> = row.try_get("pos_lon")?;
    let Json(skills) = row.try_get("skills")?;
    let shifts: Option<Json<WeeklyShifts>> = row.try_get("shifts")?;
    let current_id: Option<i64> = row.try_get("cur_id")?;
    let current = match current_id {
        Some(order_id) => Some(CurrentOrder {
            order_id,
            priority: parse_text(&text(row, "cur_priority")?, "priority")?,
            status: parse_text(&text(row, "cur_status")?, "work-order status")?,
        }),
        None => None,
    };
    Ok(CrewRow {
        crew: Crew {
            id: parse_crew_id(text(row, "id")?)?,
            name: row.try_get("name")?,
            skills,
            home: GeoPoint {
                lat: row.try_get("home_lat")?,
                lon: row.try_get("home_lon")?,
            },
            position: pos_lat.zip(pos_lon).map(|(lat, lon)| GeoPoint { lat, lon }),
            position_at: opt_time(row, "position_at")?,
            last_job_place: point(row.try_get("last_job_lat")?, row.try_get("last_job_lon")?),
            shifts: shifts.map(|Json(s)| s),
            on_shift: row.try_get("on_shift")?,
        },
        active_orders: row.try_get("active_orders")?,
        current,
    })
}

pub(crate) async fn upsert_crews(pool: &SqlitePool, crews: &[Crew]) -> Result<u64> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let mut n = 0;
    for c in crews {
        n += sqlx::query(
            "INSERT INTO crews (id, name, skills, home_lat, home_lon, pos_lat, pos_lon,
                                position_at, on_shift, shifts, last_job_lat, last_job_lon)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
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
        .bind(Json(&c.skills))
        .bind(c.home.lat)
        .bind(c.home.lon)
        .bind(c.position.map(|p| p.lat))
        .bind(c.position.map(|p| p.lon))
        .bind(c.position.and(c.position_at).map(ms))
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
    pool: impl sqlx::SqliteExecutor<'_>,
    id: Option<&CrewId>,
) -> Result<Vec<CrewRow>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        crew_cols!(),
        ", (SELECT count(*) FROM work_orders w
            WHERE w.crew_id = c.id
              AND w.status IN (SELECT value FROM json_each(?2))) AS active_orders,
           cur.id AS cur_id, cur.priority AS cur_priority, cur.status AS cur_status
         FROM crews c LEFT JOIN work_orders cur ON cur.id = ",
        current_order_pick!("w.status IN (SELECT value FROM json_each(?2))"),
        " WHERE (?1 IS NULL OR c.id = ?1) ORDER BY c.id"
    ))
    .bind(id.map(|c| c.as_str()))
    .bind(json_list(occupying_statuses()))
    .fetch_all(pool)
    .await?;
    rows.iter().map(crew_row_from_row).collect()
}

pub(crate) async fn set_crew_position(
    pool: &SqlitePool,
    id: &CrewId,
    at: GeoPoint,
    when: Timestamp,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE crews SET pos_lat = ?2, pos_lon = ?3, position_at = ?4
         WHERE id = ?1 AND (position_at IS NULL OR position_at <= ?4)",
    )
    .bind(id.as_str())
    .bind(at.lat)
    .bind(at.lon)
    .bind(ms(when))
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM crews WHERE id = ?1")
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
    pool: &SqlitePool,
    id: &CrewId,
    place: GeoPoint,
) -> Result<()> {
    let done = sqlx::query("UPDATE crews SET last_job_lat = ?2, last_job_lon = ?3 WHERE id = ?1")
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

pub(crate) fn work_order_from_row(row: &SqliteRow) -> Result<WorkOrder> {
    let meter_id: Option<String> = row.try_get("meter_id")?;
    let district_id: Option<String> = row.try_get("district_id")?;
    let crew_id: Option<String> = row.try_get("crew_id")?;
    let finding: Option<Json<SiteFinding>> = row.try_get("finding")?;
    Ok(WorkOrder {
        id: row.try_get("id")?,
        kind: parse_text(&text(row, "kind")?, "work-order kind")?,
        priority: parse_text(&text(row, "priority")?, "priority")?,
        status: parse_text(&text(row, "status")?, "work-order status")?,
        alert_id: row.try_get("alert_id")?,
        meter_id: meter_id.map(parse_meter_id).transpose()?,
        district_id: district_id.map(parse_district_id).transpose()?,
        location: GeoPoint {
            lat: row.try_get("lat")?,
            lon: row.try_get("lon")?,
        },
        crew_id: crew_id.map(parse_crew_id).transpose()?,
        summary: row.try_get("summary")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        due_at: opt_time(row, "due_at")?,
        parent_id: row.try_get("parent_id")?,
        assigned_at: opt_time(row, "assigned_at")?,
        reached_at: opt_time(row, "reached_at")?,
        breached_at: opt_time(row, "breached_at")?,
        finding: finding.map(|Json(f)| f),
    })
}

fn transition_from_row(row: &SqliteRow) -> Result<TransitionRecord> {
    let crew_id: Option<String> = row.try_get("crew_id")?;
    Ok(TransitionRecord {
        order_id: row.try_get("order_id")?,
        from: parse_text(&text(row, "from_status")?, "work-order status")?,
        to: parse_text(&text(row, "to_status")?, "work-order status")?,
        action: row.try_get("action")?,
        actor: row.try_get("actor")?,
        at: time(row, "at")?,
        crew_id: crew_id.map(parse_crew_id).transpose()?,
        note: row.try_get("note")?,
        position: point(row.try_get("lat")?, row.try_get("lon")?),
    })
}

async fn insert_transition(
    conn: &mut sqlx::SqliteConnection,
    id: i64,
    rec: &TransitionRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO work_order_transitions
             (order_id, from_status, to_status, action, actor, at, crew_id, note, lat, lon)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .bind(id)
    .bind(rec.from.as_str())
    .bind(rec.to.as_str())
    .bind(&rec.action)
    .bind(&rec.actor)
    .bind(ms(rec.at))
    .bind(rec.crew_id.as_ref().map(|c| c.as_str()))
    .bind(&rec.note)
    .bind(rec.position.map(|p| p.lat))
    .bind(rec.position.map(|p| p.lon))
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn create_work_order(
    pool: &SqlitePool,
    wo: &NewWorkOrder,
    now: Timestamp,
) -> Result<WorkOrder> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    if let Some(parent) = wo.parent_id {
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM work_orders WHERE id = ?1")
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
         VALUES (?1, ?2, 'created', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11) RETURNING ",
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
    .bind(ms(now))
    .bind(wo.due_at.map(ms))
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

pub(crate) async fn get_work_order(pool: &SqlitePool, id: i64) -> Result<Option<WorkOrder>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        work_order_cols!(),
        " FROM work_orders WHERE id = ?1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(work_order_from_row).transpose()
}

pub(crate) async fn list_work_orders(
    pool: &SqlitePool,
    q: &WorkOrderQuery,
) -> Result<Vec<WorkOrder>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        work_order_cols!(),
        " FROM work_orders
         WHERE (?1 IS NULL OR status = ?1)
           AND (?2 IS NULL OR crew_id = ?2)
           AND (?3 IS NULL OR id < ?3)
           AND (?5 IS NULL OR parent_id = ?5)
           AND (?6 IS NULL OR alert_id = ?6)
         ORDER BY id DESC LIMIT ?4"
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
    pool: &SqlitePool,
    id: i64,
    rec: &TransitionRecord,
    change: &OrderChange,
    times: TransitionTimes,
) -> Result<WorkOrder> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let crew = change.crew.as_ref().map(|c| c.as_ref());
    let updated = sqlx::query(concat!(
        "UPDATE work_orders SET status = ?3, updated_at = ?4,
                                crew_id = CASE WHEN ?5 THEN ?6 ELSE crew_id END,
                                assigned_at = CASE WHEN ?7 THEN ?8 ELSE assigned_at END,
                                reached_at = CASE WHEN ?9 THEN COALESCE(reached_at, ?4)
                                                  ELSE reached_at END,
                                finding = COALESCE(?10, finding)
         WHERE id = ?1 AND status = ?2 RETURNING ",
        work_order_cols!()
    ))
    .bind(id)
    .bind(rec.from.as_str())
    .bind(rec.to.as_str())
    .bind(ms(rec.at))
    .bind(crew.is_some())
    .bind(crew.flatten().map(|c| c.as_str()))
    .bind(times.assigned_at.is_some())
    .bind(times.assigned_at.flatten().map(ms))
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
            sqlx::query_scalar("SELECT status FROM work_orders WHERE id = ?1")
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

pub(crate) async fn work_order_history(
    pool: &SqlitePool,
    id: i64,
) -> Result<Vec<TransitionRecord>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        transition_cols!(),
        " FROM work_order_transitions WHERE order_id = ?1 ORDER BY seq"
    ))
    .bind(id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(transition_from_row).collect()
}

pub(crate) async fn jobs_for_crew(pool: &SqlitePool, crew: &CrewId) -> Result<Vec<WorkOrder>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        work_order_cols!(),
        " FROM work_orders
         WHERE crew_id = ?1 AND status NOT IN (SELECT value FROM json_each(?2))
         ORDER BY ",
        priority_rank!(),
        ", created_at, id"
    ))
    .bind(crew.as_str())
    .bind(json_list(final_statuses()))
    .fetch_all(pool)
    .await?;
    rows.iter().map(work_order_from_row).collect()
}

pub(crate) async fn active_work_orders(pool: &SqlitePool) -> Result<Vec<WorkOrder>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        work_order_cols!(),
        " FROM work_orders WHERE status NOT IN (SELECT value FROM json_each(?1)) ORDER BY id"
    ))
    .bind(json_list(final_statuses()))
    .fetch_all(pool)
    .await?;
    rows.iter().map(work_order_from_row).collect()
}

pub(crate) async fn orders_awaiting_acceptance(
    pool: &SqlitePool,
    assigned_before: Timestamp,
) -> Result<Vec<WorkOrder>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        work_order_cols!(),
        " FROM work_orders WHERE status = ?1 AND assigned_at < ?2
         ORDER BY assigned_at, id"
    ))
    .bind(WorkOrderStatus::Assigned.as_str())
    .bind(ms(assigned_before))
    .fetch_all(pool)
    .await?;
    rows.iter().map(work_order_from_row).collect()
}

pub(crate) async fn orders_due_before(pool: &SqlitePool, t: Timestamp) -> Result<Vec<WorkOrder>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        work_order_cols!(),
        " FROM work_orders
         WHERE breached_at IS NULL AND due_at < ?1
           AND status NOT IN (SELECT value FROM json_each(?2))
         ORDER BY due_at, id"
    ))
    .bind(ms(t))
    .bind(json_list(final_statuses()))
    .fetch_all(pool)
    .await?;
    rows.iter().map(work_order_from_row).collect()
}

pub(crate) async fn mark_breached(pool: &SqlitePool, order_id: i64, at: Timestamp) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE work_orders SET breached_at = ?2 WHERE id = ?1 AND breached_at IS NULL",
    )
    .bind(order_id)
    .bind(ms(at))
    .execute(pool)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(true);
    }
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM work_orders WHERE id = ?1")
        .bind(order_id)
        .fetch_optional(pool)
        .await?;
    match exists {
        Some(_) => Ok(false),
        None => Err(StoreError::NotFound(format!("work order {order_id}"))),
    }
}

pub(crate) async fn count_breached(pool: &SqlitePool) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM work_orders WHERE breached_at IS NOT NULL")
            .fetch_one(pool)
            .await?,
    )
}

pub(crate) async fn set_work_order_priority(
    pool: &SqlitePool,
    order_id: i64,
    priority: Priority,
    due_at: Option<Timestamp>,
) -> Result<WorkOrder> {
    let row = sqlx::query(concat!(
        "UPDATE work_orders SET priority = ?2, due_at = ?3 WHERE id = ?1 RETURNING ",
        work_order_cols!()
    ))
    .bind(order_id)
    .bind(priority.as_str())
    .bind(due_at.map(ms))
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => work_order_from_row(&row),
        None => Err(StoreError::NotFound(format!("work order {order_id}"))),
    }
}

pub(crate) async fn save_detector_state(
    pool: &SqlitePool,
    rows: &[(String, Vec<u8>)],
    now: Timestamp,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    for (subject, state) in rows {
        sqlx::query(
            "INSERT INTO detector_state (subject, state, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (subject) DO UPDATE SET state = excluded.state,
                                                 updated_at = excluded.updated_at",
        )
        .bind(subject)
        .bind(state)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn load_detector_state(pool: &SqlitePool) -> Result<Vec<(String, Vec<u8>)>> {
    Ok(
        sqlx::query_as("SELECT subject, state FROM detector_state ORDER BY subject")
            .fetch_all(pool)
            .await?,
    )
}

pub(crate) async fn readings_since(
    pool: &SqlitePool,
    from: Timestamp,
    after: Option<(Timestamp, &str)>,
    limit: u32,
) -> Result<Vec<Reading>> {
    let (after_t, after_m) = match after {
        Some((t, m)) => (Some(ms(t)), Some(m)),
        None => (None, None),
    };
    let rows = sqlx::query(
        "SELECT meter_id, t, vol, temp, flow_max, pressure FROM readings
         WHERE t >= ?1 AND t >= COALESCE(?2, ?1)
           AND (?2 IS NULL OR t > ?2 OR (t = ?2 AND meter_id > ?3))
         ORDER BY t, meter_id LIMIT ?4",
    )
    .bind(ms(from))
    .bind(after_t)
    .bind(after_m)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Reading {
                meter: crate::parse_meter_id(row.try_get("meter_id")?)?,
                t: time(row, "t")?,
                vol: row.try_get("vol")?,
                temp: row.try_get("temp")?,
                flow_max: row.try_get("flow_max")?,
                pressure: row.try_get("pressure")?,
            })
        })
        .collect()
}

pub(crate) async fn resolve_quiet_alerts(
    pool: &SqlitePool,
    seen_before: Timestamp,
    reason: &str,
) -> Result<Vec<Alert>> {
    let rows = sqlx::query(concat!(
        "UPDATE alerts SET status = 'resolved', status_reason = ?2
         WHERE status IN ('open', 'acknowledged') AND last_seen < ?1
         RETURNING ",
        alert_cols!()
    ))
    .bind(ms(seen_before))
    .bind(reason)
    .fetch_all(pool)
    .await?;
    rows.iter().map(alert_from_row).collect()
}

pub(crate) async fn resolve_quiet_alerts_in(
    pool: &SqlitePool,
    district: &DistrictId,
    seen_before: Timestamp,
    reason: &str,
) -> Result<Vec<Alert>> {
    let rows = sqlx::query(concat!(
        "UPDATE alerts SET status = 'resolved', status_reason = ?2
         WHERE status IN ('open', 'acknowledged') AND last_seen < ?1 AND district_id = ?3
         RETURNING ",
        alert_cols!()
    ))
    .bind(ms(seen_before))
    .bind(reason)
    .bind(district.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter().map(alert_from_row).collect()
}
