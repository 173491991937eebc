//! The PostgreSQL backend: times are `TIMESTAMPTZ`, batches go through `UNNEST` arrays.

use crate::{
    AlertQuery, CrewRow, DeadLetter, NewDeadLetter, NewWorkOrder, Result, StoreError,
    WorkOrderQuery, alert_conflict, final_statuses, finite, is_foreign_key_violation,
    is_unique_violation, occupying_statuses, parse_crew_id, parse_district_id, parse_meter_id,
    parse_text, redact, report_every_h, work_order_conflict,
};
use leakwatch_core::{
    Alert, AlertStatus, Crew, CrewId, EventCode, Finding, GeoPoint, Meter, MeterEvent, MeterId,
    Reading, Timestamp, TransitionRecord, WorkOrder, WorkOrderStatus,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::Duration;

pub(crate) async fn connect(url: &str) -> Result<PgPool> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::BadUrl(format!("{}: {e}", redact(url))))?;
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await?;
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    tracing::debug!(url = %redact(url), "connected to postgres, migrations applied");
    Ok(pool)
}

pub(crate) async fn ping(pool: &PgPool) -> Result<()> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

// ---- meters ----

fn meter_from_row(row: &PgRow) -> Result<Meter> {
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
    let done = sqlx::query(
        "INSERT INTO meters (id, district_id, kind, lat, lon, report_every_h, status, updated_at)
         SELECT u.*, now() FROM UNNEST($1::text[], $2::text[], $3::text[], $4::float8[],
                                       $5::float8[], $6::int8[], $7::text[]) AS u
         ON CONFLICT (id) DO UPDATE SET
             district_id = excluded.district_id, kind = excluded.kind, lat = excluded.lat,
             lon = excluded.lon, report_every_h = excluded.report_every_h,
             status = excluded.status, updated_at = excluded.updated_at",
    )
    .bind(&ids)
    .bind(&districts)
    .bind(&kinds)
    .bind(&lats)
    .bind(&lons)
    .bind(&every)
    .bind(&statuses)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub(crate) async fn get_meter(pool: &PgPool, id: &MeterId) -> Result<Option<Meter>> {
    let row = sqlx::query(
        "SELECT id, district_id, kind, lat, lon, report_every_h, status FROM meters WHERE id = $1",
    )
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
    let rows = sqlx::query(
        "SELECT id, district_id, kind, lat, lon, report_every_h, status FROM meters
         WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2",
    )
    .bind(after.map(|m| m.as_str()))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(meter_from_row).collect()
}

pub(crate) async fn all_meters(pool: &PgPool) -> Result<Vec<Meter>> {
    let rows = sqlx::query(
        "SELECT id, district_id, kind, lat, lon, report_every_h, status FROM meters ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(meter_from_row).collect()
}

// ---- readings and events ----

pub(crate) async fn insert_readings(pool: &PgPool, readings: &[Reading]) -> Result<u64> {
    let meters: Vec<&str> = readings.iter().map(|r| r.meter.as_str()).collect();
    let ts: Vec<Timestamp> = readings.iter().map(|r| r.t).collect();
    let vols: Vec<f64> = readings.iter().map(|r| r.vol).collect();
    let temps: Vec<Option<f64>> = readings.iter().map(|r| finite(r.temp)).collect();
    let flows: Vec<Option<f64>> = readings.iter().map(|r| finite(r.flow_max)).collect();
    let pressures: Vec<Option<f64>> = readings.iter().map(|r| finite(r.pressure)).collect();
    let done = sqlx::query(
        "INSERT INTO readings (meter_id, t, vol, temp, flow_max, pressure)
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::float8[], $4::float8[],
                              $5::float8[], $6::float8[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&meters)
    .bind(&ts)
    .bind(&vols)
    .bind(&temps)
    .bind(&flows)
    .bind(&pressures)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub(crate) async fn readings(
    pool: &PgPool,
    meter: &MeterId,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    limit: u32,
) -> Result<Vec<Reading>> {
    let rows = sqlx::query(
        "SELECT t, vol, temp, flow_max, pressure FROM readings
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
            Ok(Reading {
                meter: meter.clone(),
                t: row.try_get("t")?,
                vol: row.try_get("vol")?,
                temp: row.try_get("temp")?,
                flow_max: row.try_get("flow_max")?,
                pressure: row.try_get("pressure")?,
            })
        })
        .collect()
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

fn alert_from_row(row: &PgRow) -> Result<Alert> {
    let meter_id: Option<String> = row.try_get("meter_id")?;
    let district_id: Option<String> = row.try_get("district_id")?;
    let Json(evidence) = row.try_get("evidence")?;
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

// ---- crews ----

fn crew_row_from_row(row: &PgRow) -> Result<CrewRow> {
    let pos_lat: Option<f64> = row.try_get("pos_lat")?;
    let pos_lon: Option<f64> = row.try_get("pos_lon")?;
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
            on_shift: row.try_get("on_shift")?,
        },
        active_orders: row.try_get("active_orders")?,
    })
}

pub(crate) async fn upsert_crews(pool: &PgPool, crews: &[Crew]) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let mut n = 0;
    for c in crews {
        n += sqlx::query(
            "INSERT INTO crews (id, name, skills, home_lat, home_lon, pos_lat, pos_lon,
                                position_at, on_shift)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (id) DO UPDATE SET
                 name = excluded.name, skills = excluded.skills,
                 home_lat = excluded.home_lat, home_lon = excluded.home_lon,
                 pos_lat = COALESCE(excluded.pos_lat, crews.pos_lat),
                 pos_lon = COALESCE(excluded.pos_lon, crews.pos_lon),
                 position_at = CASE WHEN excluded.pos_lat IS NULL THEN crews.position_at
                                    ELSE excluded.position_at END,
                 on_shift = excluded.on_shift",
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
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(n)
}

pub(crate) async fn list_crews(pool: &PgPool, id: Option<&CrewId>) -> Result<Vec<CrewRow>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        crew_cols!(),
        ", (SELECT count(*) FROM work_orders w
            WHERE w.crew_id = c.id AND w.status = ANY($2)) AS active_orders
         FROM crews c WHERE ($1::text IS NULL OR c.id = $1) ORDER BY c.id"
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

// ---- work orders ----

fn work_order_from_row(row: &PgRow) -> Result<WorkOrder> {
    let meter_id: Option<String> = row.try_get("meter_id")?;
    let district_id: Option<String> = row.try_get("district_id")?;
    let crew_id: Option<String> = row.try_get("crew_id")?;
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
    })
}

async fn insert_transition(
    conn: &mut sqlx::PgConnection,
    id: i64,
    rec: &TransitionRecord,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO work_order_transitions
             (order_id, from_status, to_status, action, actor, at, crew_id, note)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(rec.from.as_str())
    .bind(rec.to.as_str())
    .bind(&rec.action)
    .bind(&rec.actor)
    .bind(rec.at)
    .bind(rec.crew_id.as_ref().map(|c| c.as_str()))
    .bind(&rec.note)
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
    let row = sqlx::query(concat!(
        "INSERT INTO work_orders (kind, priority, status, alert_id, meter_id, district_id,
                                  lat, lon, summary, created_at, updated_at, due_at)
         VALUES ($1, $2, 'created', $3, $4, $5, $6, $7, $8, $9, $9, $10) RETURNING ",
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
         ORDER BY id DESC LIMIT $4"
    ))
    .bind(q.status.map(|s| s.as_str()))
    .bind(q.crew_id.as_ref().map(|c| c.as_str()))
    .bind(q.cursor)
    .bind(i64::from(q.limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(work_order_from_row).collect()
}

pub(crate) async fn apply_transition(
    pool: &PgPool,
    id: i64,
    rec: &TransitionRecord,
    crew: Option<Option<&CrewId>>,
) -> Result<WorkOrder> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(concat!(
        "UPDATE work_orders SET status = $3, updated_at = $4,
                                crew_id = CASE WHEN $5 THEN $6::text ELSE crew_id END
         WHERE id = $1 AND status = $2 RETURNING ",
        work_order_cols!()
    ))
    .bind(id)
    .bind(rec.from.as_str())
    .bind(rec.to.as_str())
    .bind(rec.at)
    .bind(crew.is_some())
    .bind(crew.flatten().map(|c| c.as_str()))
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
    let rows = sqlx::query(
        "SELECT order_id, from_status, to_status, action, actor, at, crew_id, note
         FROM work_order_transitions WHERE order_id = $1 ORDER BY seq",
    )
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
