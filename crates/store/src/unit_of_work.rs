//! The dispatcher's unit of work: one transaction in which a dispatch decision reads
//! what it needs and writes everything it decided (claim an alert, create or join an
//! order, link them, assign a crew, record a finding and its follow-up...), so a crash
//! or a store error leaves either all of it or none of it. Also the durable outbox of
//! new alerts that the dispatch side processes (`dispatch_outbox`, filled by a trigger
//! in the statement that inserts the alert; migration `0007_dispatch_outbox.sql`).
//!
//! Dispatch decisions are serialised: on SQLite every unit of work is a
//! `BEGIN IMMEDIATE` transaction (one writer at a time); on PostgreSQL it takes a
//! transaction-scoped advisory lock ([`DISPATCH_LOCK`]) before reading, so two
//! escalations at the same moment see each other's orders (grouping) and crews
//! (choice) as if they had come one after the other. The lock is one for all
//! districts: grouping looks across district borders (it is by distance) and crews
//! serve several districts.
//!
//! Both backends' SQL lives here, matched on the transaction's backend.

use crate::{
    CrewRow, NewWorkOrder, OrderChange, Result, Store, StoreError, TransitionTimes, alert_conflict,
    final_statuses, is_foreign_key_violation, is_unique_violation, parse_crew_id, pg, sqlite,
    work_order_conflict,
};
use leakwatch_core::{
    Alert, AlertKind, AlertOutcome, AlertStatus, CrewId, DistrictId, GeoPoint, MeterId, Priority,
    Timestamp, TransitionRecord, WorkOrder, WorkOrderStatus,
};
use sqlx::types::Json;
use sqlx::{Postgres, Sqlite, Transaction};

/// The key of the PostgreSQL advisory lock that serialises dispatch decisions
/// (`pg_advisory_xact_lock`); an arbitrary constant (`"lwdispat"` in ASCII).
pub const DISPATCH_LOCK: i64 = 0x6c77_6469_7370_6174;

/// Why the dispatcher took a step, stored with it (`work_order_transitions.cause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepCause {
    /// The crew did not accept in time; it is not asked again for this order.
    AcceptanceTimeout,
    /// An emergency took the crew.
    Preempted,
    /// Start-up reconciliation repaired what an older version left half-done.
    Reconciled,
}

impl StepCause {
    pub fn as_str(self) -> &'static str {
        match self {
            StepCause::AcceptanceTimeout => "acceptance_timeout",
            StepCause::Preempted => "preempted",
            StepCause::Reconciled => "reconciled",
        }
    }
}

enum Tx {
    Pg(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

/// One open dispatch transaction; dropped without [`UnitOfWork::commit`], it rolls
/// back.
pub struct UnitOfWork {
    tx: Tx,
}

impl std::fmt::Debug for UnitOfWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.tx {
            Tx::Pg(_) => "UnitOfWork(postgres)",
            Tx::Sqlite(_) => "UnitOfWork(sqlite)",
        })
    }
}

impl Store {
    /// Opens a dispatch unit of work, waiting for any other one to end first (see the
    /// module doc).
    pub async fn begin_dispatch(&self) -> Result<UnitOfWork> {
        let tx = match self {
            Store::Postgres(p) => {
                let mut tx = p.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(DISPATCH_LOCK)
                    .execute(&mut *tx)
                    .await?;
                Tx::Pg(tx)
            }
            Store::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
        };
        Ok(UnitOfWork { tx })
    }

    /// Alerts waiting in the dispatch outbox, oldest first, at most `limit`.
    pub async fn outbox_pending(&self, limit: u32) -> Result<Vec<i64>> {
        let sql = "SELECT alert_id FROM dispatch_outbox ORDER BY alert_id LIMIT $1";
        Ok(match self {
            Store::Postgres(p) => {
                sqlx::query_scalar(sql)
                    .bind(i64::from(limit))
                    .fetch_all(&p.pool)
                    .await?
            }
            Store::Sqlite(p) => {
                sqlx::query_scalar(lite(sql))
                    .bind(i64::from(limit))
                    .fetch_all(p)
                    .await?
            }
        })
    }

    /// Escalated alerts without a work order (what a crash between escalation's
    /// writes left behind in versions that did not write them in one transaction),
    /// and escalated alerts whose order has ended: by id, at most `limit` of each.
    pub async fn half_done_escalations(&self, limit: u32) -> Result<(Vec<i64>, Vec<i64>)> {
        let unlinked = "SELECT id FROM alerts WHERE status = 'escalated' AND work_order_id IS NULL
                        ORDER BY id LIMIT $1";
        let ended = "SELECT a.id FROM alerts a JOIN work_orders w ON w.id = a.work_order_id
                     WHERE a.status = 'escalated' AND w.status IN (SELECT * FROM unnest($2::text[]))
                     ORDER BY a.id LIMIT $1";
        let ended_lite = "SELECT a.id FROM alerts a JOIN work_orders w ON w.id = a.work_order_id
                     WHERE a.status = 'escalated' AND w.status IN (SELECT value FROM json_each($2))
                     ORDER BY a.id LIMIT $1";
        Ok(match self {
            Store::Postgres(p) => (
                sqlx::query_scalar(unlinked)
                    .bind(i64::from(limit))
                    .fetch_all(&p.pool)
                    .await?,
                sqlx::query_scalar(ended)
                    .bind(i64::from(limit))
                    .bind(final_statuses())
                    .fetch_all(&p.pool)
                    .await?,
            ),
            Store::Sqlite(p) => (
                sqlx::query_scalar(lite(unlinked))
                    .bind(i64::from(limit))
                    .fetch_all(p)
                    .await?,
                sqlx::query_scalar(lite(ended_lite))
                    .bind(i64::from(limit))
                    .bind(sqlite::json_list(final_statuses()))
                    .fetch_all(p)
                    .await?,
            ),
        })
    }
}

/// PostgreSQL's `$N` placeholders as SQLite's `?N` (the text is this module's own
/// constant SQL; only placeholders change).
fn lite(sql: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql.replace('$', "?"))
}

macro_rules! on {
    ($self:ident, $pg:ident => $p:expr, $lite:ident => $l:expr) => {
        match &mut $self.tx {
            Tx::Pg($pg) => $p,
            Tx::Sqlite($lite) => $l,
        }
    };
}

impl UnitOfWork {
    /// Makes everything written durable and visible.
    pub async fn commit(self) -> Result<()> {
        match self.tx {
            Tx::Pg(tx) => tx.commit().await?,
            Tx::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }

    // ---- reads ----

    pub async fn alert(&mut self, id: i64) -> Result<Option<Alert>> {
        let sql = concat!("SELECT ", alert_cols!(), " FROM alerts WHERE id = $1");
        on!(self,
            tx => sqlx::query(sql).bind(id).fetch_optional(&mut **tx).await?
                .as_ref().map(pg::alert_from_row).transpose(),
            tx => sqlx::query(lite(sql)).bind(id).fetch_optional(&mut **tx).await?
                .as_ref().map(sqlite::alert_from_row).transpose())
    }

    /// The alerts linked to an order, by id.
    pub async fn alerts_of_order(&mut self, order_id: i64) -> Result<Vec<Alert>> {
        let sql = concat!(
            "SELECT ",
            alert_cols!(),
            " FROM alerts WHERE work_order_id = $1 ORDER BY id"
        );
        on!(self,
            tx => sqlx::query(sql).bind(order_id).fetch_all(&mut **tx).await?
                .iter().map(pg::alert_from_row).collect(),
            tx => sqlx::query(lite(sql)).bind(order_id).fetch_all(&mut **tx).await?
                .iter().map(sqlite::alert_from_row).collect())
    }

    /// Alerts of `kind` on `meter` created since `since` whose crew found no leak.
    pub async fn false_positives(
        &mut self,
        kind: AlertKind,
        meter: &MeterId,
        since: Timestamp,
    ) -> Result<Vec<Alert>> {
        let sql = concat!(
            "SELECT ",
            alert_cols!(),
            " FROM alerts WHERE kind = $1 AND meter_id = $2 AND outcome = 'false_positive'
               AND created_at >= $3 ORDER BY id"
        );
        on!(self,
            tx => sqlx::query(sql).bind(kind.as_str()).bind(meter.as_str()).bind(since)
                .fetch_all(&mut **tx).await?.iter().map(pg::alert_from_row).collect(),
            tx => sqlx::query(lite(sql)).bind(kind.as_str()).bind(meter.as_str())
                .bind(sqlite::ms(since)).fetch_all(&mut **tx).await?
                .iter().map(sqlite::alert_from_row).collect())
    }

    pub async fn work_order(&mut self, id: i64) -> Result<Option<WorkOrder>> {
        let sql = concat!(
            "SELECT ",
            work_order_cols!(),
            " FROM work_orders WHERE id = $1"
        );
        on!(self,
            tx => sqlx::query(sql).bind(id).fetch_optional(&mut **tx).await?
                .as_ref().map(pg::work_order_from_row).transpose(),
            tx => sqlx::query(lite(sql)).bind(id).fetch_optional(&mut **tx).await?
                .as_ref().map(sqlite::work_order_from_row).transpose())
    }

    /// The orders created for an alert (`work_orders.alert_id`), by id.
    pub async fn orders_of_alert(&mut self, alert_id: i64) -> Result<Vec<WorkOrder>> {
        let sql = concat!(
            "SELECT ",
            work_order_cols!(),
            " FROM work_orders WHERE alert_id = $1 ORDER BY id"
        );
        on!(self,
            tx => sqlx::query(sql).bind(alert_id).fetch_all(&mut **tx).await?
                .iter().map(pg::work_order_from_row).collect(),
            tx => sqlx::query(lite(sql)).bind(alert_id).fetch_all(&mut **tx).await?
                .iter().map(sqlite::work_order_from_row).collect())
    }

    /// Every order not in a final status, by id.
    pub async fn active_work_orders(&mut self) -> Result<Vec<WorkOrder>> {
        let pg_sql = concat!(
            "SELECT ",
            work_order_cols!(),
            " FROM work_orders WHERE status <> ALL($1) ORDER BY id"
        );
        let lite_sql = concat!(
            "SELECT ",
            work_order_cols!(),
            " FROM work_orders WHERE status NOT IN (SELECT value FROM json_each(?1)) ORDER BY id"
        );
        on!(self,
            tx => sqlx::query(pg_sql).bind(final_statuses()).fetch_all(&mut **tx).await?
                .iter().map(pg::work_order_from_row).collect(),
            tx => sqlx::query(lite_sql).bind(sqlite::json_list(final_statuses()))
                .fetch_all(&mut **tx).await?.iter().map(sqlite::work_order_from_row).collect())
    }

    /// Every crew with its current order, by id (as [`Store::list_crews`]).
    pub async fn crews(&mut self) -> Result<Vec<CrewRow>> {
        on!(self,
            tx => pg::list_crews(&mut **tx, None).await,
            tx => sqlite::list_crews(&mut **tx, None).await)
    }

    /// The crews that let this order time out before (steps with cause
    /// `acceptance_timeout`), in the order it happened.
    pub async fn timed_out_crews(&mut self, order_id: i64) -> Result<Vec<CrewId>> {
        let sql = "SELECT crew_id FROM work_order_transitions
                   WHERE order_id = $1 AND cause = 'acceptance_timeout' AND crew_id IS NOT NULL
                   ORDER BY seq";
        let ids: Vec<String> = on!(self,
            tx => sqlx::query_scalar(sql).bind(order_id).fetch_all(&mut **tx).await?,
            tx => sqlx::query_scalar(lite(sql)).bind(order_id).fetch_all(&mut **tx).await?);
        ids.into_iter().map(parse_crew_id).collect()
    }

    /// Where a meter is.
    pub async fn meter_location(&mut self, id: &MeterId) -> Result<Option<GeoPoint>> {
        let sql = "SELECT lat, lon FROM meters WHERE id = $1";
        let row: Option<(f64, f64)> = on!(self,
            tx => sqlx::query_as(sql).bind(id.as_str()).fetch_optional(&mut **tx).await?,
            tx => sqlx::query_as(lite(sql)).bind(id.as_str()).fetch_optional(&mut **tx).await?);
        Ok(row.map(|(lat, lon)| GeoPoint { lat, lon }))
    }

    /// Where a district's station (its first by id) is.
    pub async fn station_location(&mut self, district: &DistrictId) -> Result<Option<GeoPoint>> {
        let sql = "SELECT lat, lon FROM meters WHERE district_id = $1 AND kind = 'station'
                   ORDER BY id LIMIT 1";
        let row: Option<(f64, f64)> = on!(self,
            tx => sqlx::query_as(sql).bind(district.as_str()).fetch_optional(&mut **tx).await?,
            tx => sqlx::query_as(lite(sql)).bind(district.as_str())
                .fetch_optional(&mut **tx).await?);
        Ok(row.map(|(lat, lon)| GeoPoint { lat, lon }))
    }

    // ---- writes ----

    /// Compare-and-set of an alert's status, as [`Store::set_alert_status`].
    pub async fn set_alert_status(
        &mut self,
        id: i64,
        from: AlertStatus,
        to: AlertStatus,
        reason: Option<&str>,
        work_order_id: Option<i64>,
    ) -> Result<Alert> {
        let sql = concat!(
            "UPDATE alerts SET status = $3,
                               status_reason = COALESCE($4, status_reason),
                               work_order_id = COALESCE($5, work_order_id)
             WHERE id = $1 AND status = $2 RETURNING ",
            alert_cols!()
        );
        let pg_sql = sql
            .replace("COALESCE($4,", "COALESCE($4::text,")
            .replace("COALESCE($5,", "COALESCE($5::int8,");
        let updated = on!(self,
        tx => match sqlx::query(sqlx::AssertSqlSafe(pg_sql)).bind(id).bind(from.as_str()).bind(to.as_str())
            .bind(reason).bind(work_order_id).fetch_optional(&mut **tx).await {
            Ok(r) => Ok(r.as_ref().map(pg::alert_from_row).transpose()?),
            Err(e) => Err(e),
        },
        tx => match sqlx::query(lite(sql)).bind(id).bind(from.as_str()).bind(to.as_str())
            .bind(reason).bind(work_order_id).fetch_optional(&mut **tx).await {
            Ok(r) => Ok(r.as_ref().map(sqlite::alert_from_row).transpose()?),
            Err(e) => Err(e),
        });
        match updated {
            Ok(Some(a)) => Ok(a),
            Ok(None) => match self.alert(id).await? {
                Some(a) => Err(alert_conflict(id, a.status.as_str())),
                None => Err(StoreError::NotFound(format!("alert {id}"))),
            },
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "alert {id} cannot become {}: another active alert exists for its subject and kind",
                to.as_str()
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Records what the crew found for every alert linked to the order; returns how
    /// many changed.
    pub async fn set_outcome_for_order(
        &mut self,
        order_id: i64,
        outcome: AlertOutcome,
        at: Timestamp,
    ) -> Result<u64> {
        let sql = "UPDATE alerts SET outcome = $2, outcome_at = $3 WHERE work_order_id = $1";
        let done = on!(self,
            tx => sqlx::query(sql).bind(order_id).bind(outcome.as_str()).bind(at)
                .execute(&mut **tx).await?.rows_affected(),
            tx => sqlx::query(lite(sql)).bind(order_id).bind(outcome.as_str())
                .bind(sqlite::ms(at)).execute(&mut **tx).await?.rows_affected());
        Ok(done)
    }

    /// Creates an order in status `created` with its first audit step, as
    /// [`Store::create_work_order`].
    pub async fn create_work_order(
        &mut self,
        wo: &NewWorkOrder,
        now: Timestamp,
    ) -> Result<WorkOrder> {
        if let Some(parent) = wo.parent_id
            && self.work_order(parent).await?.is_none()
        {
            return Err(StoreError::NotFound(format!("parent work order {parent}")));
        }
        let sql = concat!(
            "INSERT INTO work_orders (kind, priority, status, alert_id, meter_id, district_id,
                                      lat, lon, summary, created_at, updated_at, due_at,
                                      parent_id)
             VALUES ($1, $2, 'created', $3, $4, $5, $6, $7, $8, $9, $9, $10, $11) RETURNING ",
            work_order_cols!()
        );
        let fk = |e: sqlx::Error| match (is_foreign_key_violation(&e), wo.alert_id) {
            (true, Some(a)) => StoreError::NotFound(format!("alert {a}")),
            _ => e.into(),
        };
        let order = on!(self,
            tx => pg::work_order_from_row(&sqlx::query(sql)
                .bind(wo.kind.as_str()).bind(wo.priority.as_str()).bind(wo.alert_id)
                .bind(wo.meter_id.as_ref().map(|m| m.as_str()))
                .bind(wo.district_id.as_ref().map(|d| d.as_str()))
                .bind(wo.location.lat).bind(wo.location.lon).bind(&wo.summary)
                .bind(now).bind(wo.due_at).bind(wo.parent_id)
                .fetch_one(&mut **tx).await.map_err(fk)?)?,
            tx => sqlite::work_order_from_row(&sqlx::query(lite(sql))
                .bind(wo.kind.as_str()).bind(wo.priority.as_str()).bind(wo.alert_id)
                .bind(wo.meter_id.as_ref().map(|m| m.as_str()))
                .bind(wo.district_id.as_ref().map(|d| d.as_str()))
                .bind(wo.location.lat).bind(wo.location.lon).bind(&wo.summary)
                .bind(sqlite::ms(now)).bind(wo.due_at.map(sqlite::ms)).bind(wo.parent_id)
                .fetch_one(&mut **tx).await.map_err(fk)?)?);
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
        self.insert_step(order.id, &rec, None).await?;
        Ok(order)
    }

    async fn insert_step(
        &mut self,
        id: i64,
        rec: &TransitionRecord,
        cause: Option<StepCause>,
    ) -> Result<()> {
        let sql = "INSERT INTO work_order_transitions
                       (order_id, from_status, to_status, action, actor, at, crew_id, note,
                        lat, lon, cause)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
        macro_rules! binds {
            ($q:expr, $at:expr) => {
                $q.bind(id)
                    .bind(rec.from.as_str())
                    .bind(rec.to.as_str())
                    .bind(&rec.action)
                    .bind(&rec.actor)
                    .bind($at)
                    .bind(rec.crew_id.as_ref().map(|c| c.as_str()))
                    .bind(&rec.note)
                    .bind(rec.position.map(|p| p.lat))
                    .bind(rec.position.map(|p| p.lon))
                    .bind(cause.map(|c| c.as_str()))
            };
        }
        on!(self,
            tx => binds!(sqlx::query(sql), rec.at).execute(&mut **tx).await?.rows_affected(),
            tx => binds!(sqlx::query(lite(sql)), sqlite::ms(rec.at)).execute(&mut **tx).await?.rows_affected());
        Ok(())
    }

    /// Applies a validated transition, as [`Store::apply_transition`], recording why
    /// the dispatcher took it (`cause`).
    pub async fn apply_transition(
        &mut self,
        id: i64,
        rec: &TransitionRecord,
        change: &OrderChange,
        cause: Option<StepCause>,
    ) -> Result<WorkOrder> {
        let times = TransitionTimes::of(rec);
        let crew = change.crew.as_ref().map(|c| c.as_ref());
        let fk = |e: sqlx::Error| match crew {
            Some(Some(c)) if is_foreign_key_violation(&e) => {
                StoreError::NotFound(format!("crew {c}"))
            }
            _ => e.into(),
        };
        let updated = on!(self,
            tx => sqlx::query(concat!(
                "UPDATE work_orders SET status = $3, updated_at = $4,
                        crew_id = CASE WHEN $5 THEN $6::text ELSE crew_id END,
                        assigned_at = CASE WHEN $7 THEN $8::timestamptz ELSE assigned_at END,
                        reached_at = CASE WHEN $9 THEN COALESCE(reached_at, $4) ELSE reached_at END,
                        finding = COALESCE($10::jsonb, finding)
                 WHERE id = $1 AND status = $2 RETURNING ",
                work_order_cols!()))
                .bind(id).bind(rec.from.as_str()).bind(rec.to.as_str()).bind(rec.at)
                .bind(crew.is_some()).bind(crew.flatten().map(|c| c.as_str()))
                .bind(times.assigned_at.is_some()).bind(times.assigned_at.flatten())
                .bind(times.reached).bind(change.finding.as_ref().map(Json))
                .fetch_optional(&mut **tx).await.map_err(fk)?
                .as_ref().map(pg::work_order_from_row).transpose()?,
            tx => sqlx::query(concat!(
                "UPDATE work_orders SET status = ?3, updated_at = ?4,
                        crew_id = CASE WHEN ?5 THEN ?6 ELSE crew_id END,
                        assigned_at = CASE WHEN ?7 THEN ?8 ELSE assigned_at END,
                        reached_at = CASE WHEN ?9 THEN COALESCE(reached_at, ?4) ELSE reached_at END,
                        finding = COALESCE(?10, finding)
                 WHERE id = ?1 AND status = ?2 RETURNING ",
                work_order_cols!()))
                .bind(id).bind(rec.from.as_str()).bind(rec.to.as_str()).bind(sqlite::ms(rec.at))
                .bind(crew.is_some()).bind(crew.flatten().map(|c| c.as_str()))
                .bind(times.assigned_at.is_some())
                .bind(times.assigned_at.flatten().map(sqlite::ms))
                .bind(times.reached).bind(change.finding.as_ref().map(Json))
                .fetch_optional(&mut **tx).await.map_err(fk)?
                .as_ref().map(sqlite::work_order_from_row).transpose()?);
        let Some(order) = updated else {
            return Err(match self.work_order(id).await? {
                Some(o) => work_order_conflict(id, o.status.as_str()),
                None => StoreError::NotFound(format!("work order {id}")),
            });
        };
        self.insert_step(id, rec, cause).await?;
        Ok(order)
    }

    /// Sets an order's priority and deadline, as [`Store::set_work_order_priority`].
    pub async fn set_work_order_priority(
        &mut self,
        order_id: i64,
        priority: Priority,
        due_at: Option<Timestamp>,
    ) -> Result<WorkOrder> {
        let sql = concat!(
            "UPDATE work_orders SET priority = $2, due_at = $3 WHERE id = $1 RETURNING ",
            work_order_cols!()
        );
        let row = on!(self,
            tx => sqlx::query(sql).bind(order_id).bind(priority.as_str()).bind(due_at)
                .fetch_optional(&mut **tx).await?.as_ref()
                .map(pg::work_order_from_row).transpose()?,
            tx => sqlx::query(lite(sql)).bind(order_id).bind(priority.as_str())
                .bind(due_at.map(sqlite::ms)).fetch_optional(&mut **tx).await?.as_ref()
                .map(sqlite::work_order_from_row).transpose()?);
        row.ok_or_else(|| StoreError::NotFound(format!("work order {order_id}")))
    }

    /// Sets `breached_at` unless set; returns whether it changed.
    pub async fn mark_breached(&mut self, order_id: i64, at: Timestamp) -> Result<bool> {
        let sql = "UPDATE work_orders SET breached_at = $2 WHERE id = $1 AND breached_at IS NULL";
        let n = on!(self,
            tx => sqlx::query(sql).bind(order_id).bind(at).execute(&mut **tx).await?
                .rows_affected(),
            tx => sqlx::query(lite(sql)).bind(order_id).bind(sqlite::ms(at))
                .execute(&mut **tx).await?.rows_affected());
        Ok(n == 1)
    }

    /// Records a crew's position at `when` unless a newer one is stored.
    pub async fn set_crew_position(
        &mut self,
        id: &CrewId,
        at: GeoPoint,
        when: Timestamp,
    ) -> Result<()> {
        let sql = "UPDATE crews SET pos_lat = $2, pos_lon = $3, position_at = $4
                   WHERE id = $1 AND (position_at IS NULL OR position_at <= $4)";
        on!(self,
            tx => sqlx::query(sql).bind(id.as_str()).bind(at.lat).bind(at.lon).bind(when)
                .execute(&mut **tx).await?.rows_affected(),
            tx => sqlx::query(lite(sql)).bind(id.as_str()).bind(at.lat).bind(at.lon)
                .bind(sqlite::ms(when)).execute(&mut **tx).await?.rows_affected());
        Ok(())
    }

    /// Records where the crew's last job was.
    pub async fn set_crew_last_job_place(&mut self, id: &CrewId, place: GeoPoint) -> Result<()> {
        let sql = "UPDATE crews SET last_job_lat = $2, last_job_lon = $3 WHERE id = $1";
        on!(self,
            tx => sqlx::query(sql).bind(id.as_str()).bind(place.lat).bind(place.lon)
                .execute(&mut **tx).await?.rows_affected(),
            tx => sqlx::query(lite(sql)).bind(id.as_str()).bind(place.lat).bind(place.lon)
                .execute(&mut **tx).await?.rows_affected());
        Ok(())
    }

    /// Takes an alert out of the dispatch outbox (it has been acted on).
    pub async fn outbox_done(&mut self, alert_id: i64) -> Result<()> {
        let sql = "DELETE FROM dispatch_outbox WHERE alert_id = $1";
        on!(self,
            tx => sqlx::query(sql).bind(alert_id).execute(&mut **tx).await?.rows_affected(),
            tx => sqlx::query(lite(sql)).bind(alert_id).execute(&mut **tx).await?.rows_affected());
        Ok(())
    }
}
