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
//! The statements are the store's own (one SQL for both backends, `db`), run in this
//! transaction.

use crate::db::{Exec, Row, Tx, args, sql};
use crate::work_orders::{work_order_cols, work_order_from_row};
use crate::{
    CrewRow, NewWorkOrder, OrderChange, Result, Store, StoreError, alerts, parse_crew_id,
    work_orders,
};
use leakwatch_core::{
    Alert, AlertKind, AlertOutcome, AlertStatus, CrewId, DistrictId, GeoPoint, MeterId, Priority,
    Timestamp, TransitionRecord, WorkOrder,
};

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

fn ids(rows: Vec<Row>, col: &str) -> Result<Vec<i64>> {
    rows.iter().map(|r| r.int(col)).collect()
}

fn location(row: Option<Row>) -> Result<Option<GeoPoint>> {
    row.map(|r| {
        Ok(GeoPoint {
            lat: r.float("lat")?,
            lon: r.float("lon")?,
        })
    })
    .transpose()
}

impl Store {
    /// Opens a dispatch unit of work, waiting for any other one to end first (see the
    /// module doc).
    pub async fn begin_dispatch(&self) -> Result<UnitOfWork> {
        let mut tx = self.begin().await?;
        if let Tx::Pg(t) = &mut tx {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(DISPATCH_LOCK)
                .execute(&mut **t)
                .await?;
        }
        Ok(UnitOfWork { tx })
    }

    /// Alerts waiting in the dispatch outbox, oldest first, at most `limit`.
    pub async fn outbox_pending(&self, limit: u32) -> Result<Vec<i64>> {
        let rows = self
            .exec()
            .fetch_all(
                sql!("SELECT alert_id FROM dispatch_outbox ORDER BY alert_id LIMIT $1"),
                args![limit],
            )
            .await?;
        ids(rows, "alert_id")
    }

    /// Escalated alerts without a work order (what a crash between escalation's
    /// writes left behind in versions that did not write them in one transaction),
    /// and escalated alerts whose order has ended: by id, at most `limit` of each.
    pub async fn half_done_escalations(&self, limit: u32) -> Result<(Vec<i64>, Vec<i64>)> {
        let unlinked = self
            .exec()
            .fetch_all(
                sql!(
                    "SELECT id FROM alerts WHERE status = 'escalated' AND work_order_id IS NULL
                     ORDER BY id LIMIT $1"
                ),
                args![limit],
            )
            .await?;
        let ended = self
            .exec()
            .fetch_all(
                sql!(
                    "SELECT a.id FROM alerts a JOIN work_orders w ON w.id = a.work_order_id
                     WHERE a.status = 'escalated' AND w.status = ANY($2)
                     ORDER BY a.id LIMIT $1"
                ),
                args![limit, work_orders::final_statuses()],
            )
            .await?;
        Ok((ids(unlinked, "id")?, ids(ended, "id")?))
    }
}

impl UnitOfWork {
    pub(crate) fn exec(&mut self) -> Exec<'_> {
        self.tx.exec()
    }

    pub(crate) fn tx_mut(&mut self) -> &mut Tx {
        &mut self.tx
    }

    /// Makes everything written durable and visible.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await
    }

    // ---- reads ----

    pub async fn alert(&mut self, id: i64) -> Result<Option<Alert>> {
        alerts::get_alert(self.exec(), id).await
    }

    /// The alerts linked to an order, by id.
    pub async fn alerts_of_order(&mut self, order_id: i64) -> Result<Vec<Alert>> {
        alerts::alerts_of_order(self.exec(), order_id).await
    }

    /// Alerts of `kind` on `meter` created since `since` whose crew found no leak.
    pub async fn false_positives(
        &mut self,
        kind: AlertKind,
        meter: &MeterId,
        since: Timestamp,
    ) -> Result<Vec<Alert>> {
        alerts::false_positives(self.exec(), kind, meter, since).await
    }

    pub async fn work_order(&mut self, id: i64) -> Result<Option<WorkOrder>> {
        work_orders::get_work_order(self.exec(), id).await
    }

    /// The orders created for an alert (`work_orders.alert_id`), by id.
    pub async fn orders_of_alert(&mut self, alert_id: i64) -> Result<Vec<WorkOrder>> {
        let rows = self
            .exec()
            .fetch_all(
                sql!(
                    "SELECT ",
                    work_order_cols!(),
                    " FROM work_orders WHERE alert_id = $1 ORDER BY id"
                ),
                args![alert_id],
            )
            .await?;
        rows.iter().map(work_order_from_row).collect()
    }

    /// Every order not in a final status, by id.
    pub async fn active_work_orders(&mut self) -> Result<Vec<WorkOrder>> {
        work_orders::active_work_orders(self.exec()).await
    }

    /// Every crew with its current order, by id (as [`Store::list_crews`]).
    pub async fn crews(&mut self) -> Result<Vec<CrewRow>> {
        work_orders::crews(self.exec(), None).await
    }

    /// The crews that let this order time out before (steps with cause
    /// `acceptance_timeout`), in the order it happened.
    pub async fn timed_out_crews(&mut self, order_id: i64) -> Result<Vec<CrewId>> {
        let rows = self
            .exec()
            .fetch_all(
                sql!(
                    "SELECT crew_id FROM work_order_transitions
                     WHERE order_id = $1 AND cause = 'acceptance_timeout' AND crew_id IS NOT NULL
                     ORDER BY seq"
                ),
                args![order_id],
            )
            .await?;
        rows.iter()
            .map(|r| parse_crew_id(r.text("crew_id")?))
            .collect()
    }

    /// Where a meter is.
    pub async fn meter_location(&mut self, id: &MeterId) -> Result<Option<GeoPoint>> {
        let row = self
            .exec()
            .fetch_optional(
                sql!("SELECT lat, lon FROM meters WHERE id = $1"),
                args![id.as_str()],
            )
            .await?;
        location(row)
    }

    /// Where a district's station (its first by id) is.
    pub async fn station_location(&mut self, district: &DistrictId) -> Result<Option<GeoPoint>> {
        let row = self
            .exec()
            .fetch_optional(
                sql!(
                    "SELECT lat, lon FROM meters WHERE district_id = $1 AND kind = 'station'
                     ORDER BY id LIMIT 1"
                ),
                args![district.as_str()],
            )
            .await?;
        location(row)
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
        alerts::set_alert_status(self.exec(), id, from, to, reason, work_order_id).await
    }

    /// Records who moved the alert to `status` (acknowledged, dismissed, resolved)
    /// and when; `None` for other statuses.
    pub async fn record_alert_review(
        &mut self,
        id: i64,
        status: AlertStatus,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<Alert>> {
        alerts::record_review(self.exec(), id, status, actor, at).await
    }

    /// Records what the crew found for every alert linked to the order; returns how
    /// many changed.
    pub async fn set_outcome_for_order(
        &mut self,
        order_id: i64,
        outcome: AlertOutcome,
        at: Timestamp,
    ) -> Result<u64> {
        alerts::set_outcome_for_order(self.exec(), order_id, outcome, at).await
    }

    /// Creates an order in status `created` with its first audit step, as
    /// [`Store::create_work_order`].
    pub async fn create_work_order(
        &mut self,
        wo: &NewWorkOrder,
        now: Timestamp,
    ) -> Result<WorkOrder> {
        work_orders::create_work_order(self.exec(), wo, now).await
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
        work_orders::apply_transition(self.exec(), id, rec, change, cause.map(StepCause::as_str))
            .await
    }

    /// Sets an order's priority and deadline, as [`Store::set_work_order_priority`].
    pub async fn set_work_order_priority(
        &mut self,
        order_id: i64,
        priority: Priority,
        due_at: Option<Timestamp>,
    ) -> Result<WorkOrder> {
        work_orders::set_work_order_priority(self.exec(), order_id, priority, due_at).await
    }

    /// Sets `breached_at` unless set; returns whether it changed.
    pub async fn mark_breached(&mut self, order_id: i64, at: Timestamp) -> Result<bool> {
        Ok(work_orders::mark_breached(self.exec(), order_id, at)
            .await?
            .unwrap_or(false))
    }

    /// Records a crew's position at `when` unless a newer one is stored (an unknown
    /// crew changes nothing).
    pub async fn set_crew_position(
        &mut self,
        id: &CrewId,
        at: GeoPoint,
        when: Timestamp,
    ) -> Result<()> {
        match work_orders::set_crew_position(self.exec(), id, at, when).await {
            Err(StoreError::NotFound(_)) => Ok(()),
            r => r,
        }
    }

    /// Records where the crew's last job was (an unknown crew changes nothing).
    pub async fn set_crew_last_job_place(&mut self, id: &CrewId, place: GeoPoint) -> Result<()> {
        match work_orders::set_crew_last_job_place(self.exec(), id, place).await {
            Err(StoreError::NotFound(_)) => Ok(()),
            r => r,
        }
    }

    /// Takes an alert out of the dispatch outbox (it has been acted on).
    pub async fn outbox_done(&mut self, alert_id: i64) -> Result<()> {
        self.exec()
            .execute(
                sql!("DELETE FROM dispatch_outbox WHERE alert_id = $1"),
                args![alert_id],
            )
            .await?;
        Ok(())
    }
}
