//! The work orders and crews aggregate: crews with their calendars and positions, work
//! orders with their lifecycle (compare-and-set status changes) and audit trail.

use crate::db::{Arg, Exec, Row, args, sql};
use crate::{
    Result, Store, StoreError, is_foreign_key_violation, last_by_key, parse_crew_id,
    parse_district_id, parse_meter_id, parse_text, point,
};
use leakwatch_core::{
    Crew, CrewId, CrewStatus, DistrictId, GeoPoint, MeterId, Priority, SiteFinding, Timestamp,
    TransitionRecord, WorkOrder, WorkOrderKind, WorkOrderStatus,
};
use serde::{Serialize, Serializer};
use std::future::Future;

/// A crew's most urgent active order: among the orders assigned to it in a status that
/// [`WorkOrderStatus::occupies_crew`], the most urgent priority, then the oldest
/// (`created_at`, then id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CurrentOrder {
    pub order_id: i64,
    pub priority: Priority,
    pub status: WorkOrderStatus,
}

/// A crew with the number of work orders that keep it busy (assigned to it and in a
/// status that [`WorkOrderStatus::occupies_crew`]) and the most urgent of them.
///
/// Serializes as the crew's fields plus `"status"` ([`CrewRow::status`], at the time of
/// serializing), `"active_orders"` and `"current"` (`null` when the crew has no active
/// order).
#[derive(Debug, Clone)]
pub struct CrewRow {
    pub crew: Crew,
    pub active_orders: i64,
    pub current: Option<CurrentOrder>,
}

impl CrewRow {
    /// The crew's availability now ([`CrewRow::status_at`] with the clock).
    pub fn status(&self) -> CrewStatus {
        self.status_at(chrono::Utc::now())
    }

    /// The crew's availability at `now`: on shift by [`Crew::on_shift_at`] (its calendar
    /// when it has one, else the `on_shift` flag), and busy with any active order.
    pub fn status_at(&self, now: Timestamp) -> CrewStatus {
        CrewStatus::derive(self.crew.on_shift_at(now), self.active_orders)
    }
}

impl Serialize for CrewRow {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Flat<'a> {
            #[serde(flatten)]
            crew: &'a Crew,
            status: CrewStatus,
            active_orders: i64,
            current: Option<CurrentOrder>,
        }
        Flat {
            crew: &self.crew,
            status: self.status(),
            active_orders: self.active_orders,
            current: self.current,
        }
        .serialize(s)
    }
}

/// What a transition changes besides the status (see [`WorkOrderStore::apply_transition`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderChange {
    /// `None` leaves the crew, `Some(None)` clears it, `Some(Some(c))` sets it.
    pub crew: Option<Option<CrewId>>,
    /// The crew's finding, stored when given (`None` leaves the stored one).
    pub finding: Option<SiteFinding>,
}

/// A work order to create (status `created`).
#[derive(Debug, Clone, Serialize)]
pub struct NewWorkOrder {
    pub kind: WorkOrderKind,
    pub priority: Priority,
    pub alert_id: Option<i64>,
    pub meter_id: Option<MeterId>,
    pub district_id: Option<DistrictId>,
    pub location: GeoPoint,
    pub summary: String,
    pub due_at: Option<Timestamp>,
    /// The order this one follows up (a repair after an investigation found a leak).
    pub parent_id: Option<i64>,
    /// Who creates it; recorded in the first transition record.
    pub actor: String,
}

/// Filters for [`WorkOrderStore::list_work_orders`]; every filter set must hold; newest
/// (highest id) first, `cursor` as in [`AlertQuery`](crate::AlertQuery).
#[derive(Debug, Clone, Serialize)]
pub struct WorkOrderQuery {
    pub status: Option<WorkOrderStatus>,
    pub crew_id: Option<CrewId>,
    /// Only the follow-ups of this order.
    pub parent_id: Option<i64>,
    /// Only the orders of this alert (the order's own `alert_id`).
    pub alert_id: Option<i64>,
    pub limit: u32,
    pub cursor: Option<i64>,
}

impl Default for WorkOrderQuery {
    fn default() -> Self {
        Self {
            status: None,
            crew_id: None,
            parent_id: None,
            alert_id: None,
            limit: 100,
            cursor: None,
        }
    }
}

/// Crews and their work orders.
pub trait WorkOrderStore: Send + Sync {
    /// Inserts or updates crews by id, in one transaction (the last of duplicate ids
    /// wins). A crew given without a position keeps the position already stored, and
    /// one without a last job place keeps the stored one, so re-loading the registry
    /// does not forget where crews were last seen; the calendar (`shifts`) is replaced
    /// as given (`None` clears it). Returns the number of distinct crews written.
    fn upsert_crews(&self, crews: &[Crew]) -> impl Future<Output = Result<u64>> + Send;

    /// Every crew with its active order count and most urgent active order, ordered by
    /// id.
    fn list_crews(&self) -> impl Future<Output = Result<Vec<CrewRow>>> + Send;

    /// One crew with its active order count and most urgent active order.
    fn get_crew(&self, id: &CrewId) -> impl Future<Output = Result<Option<CrewRow>>> + Send;

    /// Records a crew's position at `when`. A position older than the stored one is
    /// ignored (positions may arrive out of order); an unknown crew is
    /// [`StoreError::NotFound`].
    fn set_crew_position(
        &self,
        id: &CrewId,
        at: GeoPoint,
        when: Timestamp,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Records where the crew's last job was (set when it gets on site); an unknown crew
    /// is [`StoreError::NotFound`].
    fn set_crew_last_job_place(
        &self,
        id: &CrewId,
        place: GeoPoint,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Creates a work order in status `created` with `created_at = updated_at = now`,
    /// and records its first transition (`created -> created`, action `create`, by
    /// `wo.actor`). An `alert_id` that names no alert is [`StoreError::NotFound`]
    /// `"alert N"`, a `parent_id` that names no order `"parent work order N"`.
    fn create_work_order(
        &self,
        wo: &NewWorkOrder,
    ) -> impl Future<Output = Result<WorkOrder>> + Send;

    /// One work order, if it exists.
    fn get_work_order(&self, id: i64) -> impl Future<Output = Result<Option<WorkOrder>>> + Send;

    /// Work orders matching `q`, highest id first.
    fn list_work_orders(
        &self,
        q: &WorkOrderQuery,
    ) -> impl Future<Output = Result<Vec<WorkOrder>>> + Send;

    /// Applies a transition the caller has validated, in one transaction:
    /// compare-and-set of the status from `rec.from` to `rec.to`
    /// ([`StoreError::Conflict`] `"work order N is <status>"` if it is not `rec.from`
    /// now, [`StoreError::NotFound`] if there is no such order), `updated_at = rec.at`,
    /// and `change`:
    ///
    /// * the crew: `None` leaves it, `Some(None)` clears it, `Some(Some(c))` sets it (an
    ///   unknown crew is [`StoreError::NotFound`] `"crew C"`);
    /// * the finding, stored when given.
    ///
    /// The times follow `rec.to`: `assigned` sets `assigned_at = rec.at` (also on a
    /// re-assignment), `created` (unassign) clears it, and `on_site` sets `reached_at`
    /// to `rec.at` unless it is already set. Appends `rec` (with its position) to the
    /// order's history (under `id`, whatever `rec.order_id` says).
    fn apply_transition(
        &self,
        id: i64,
        rec: &TransitionRecord,
        change: &OrderChange,
    ) -> impl Future<Output = Result<WorkOrder>> + Send;

    /// An order's transitions in the order they were applied (empty if no such order).
    fn work_order_history(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<Vec<TransitionRecord>>> + Send;

    /// A crew's current jobs: orders assigned to it and not final, most urgent priority
    /// first, then oldest first.
    fn jobs_for_crew(&self, crew: &CrewId) -> impl Future<Output = Result<Vec<WorkOrder>>> + Send;

    /// Every order not in a final status, by id.
    fn active_work_orders(&self) -> impl Future<Output = Result<Vec<WorkOrder>>> + Send;

    /// The orders in status `assigned` given to their crew before `assigned_before`
    /// (`assigned_at < assigned_before`): not accepted in time. Oldest assignment first
    /// (then by id).
    fn orders_awaiting_acceptance(
        &self,
        assigned_before: Timestamp,
    ) -> impl Future<Output = Result<Vec<WorkOrder>>> + Send;

    /// The orders not in a final status, not marked breached yet, whose `due_at` is
    /// before `t`, earliest deadline first (then by id). Whether each is a breach (an
    /// arrival deadline met in time is not) is the caller's call.
    fn orders_due_before(
        &self,
        t: Timestamp,
    ) -> impl Future<Output = Result<Vec<WorkOrder>>> + Send;

    /// Marks an order as found past its deadline: sets `breached_at = at` unless it is
    /// set already (it is never cleared or moved). Returns whether it changed; an
    /// unknown order is [`StoreError::NotFound`].
    fn mark_breached(
        &self,
        order_id: i64,
        at: Timestamp,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// How many orders have been marked breached.
    fn count_breached(&self) -> impl Future<Output = Result<i64>> + Send;

    /// Sets an order's priority and deadline (`due_at`, `None` clears it), whatever its
    /// status, and returns it. `updated_at` is left as it is: it tracks status changes
    /// (the deadline view of a completed order relies on it), and this is not one; no
    /// transition is recorded either. An unknown order is [`StoreError::NotFound`].
    fn set_work_order_priority(
        &self,
        order_id: i64,
        priority: Priority,
        due_at: Option<Timestamp>,
    ) -> impl Future<Output = Result<WorkOrder>> + Send;
}

/// The crews and work orders part of a [`Store`] ([`Store::work_order_store`]).
#[derive(Clone, Debug)]
pub struct WorkOrders(pub(crate) Store);

/// The columns of `work_orders` that make a [`WorkOrder`].
macro_rules! work_order_cols {
    () => {
        "id, kind, priority, status, alert_id, meter_id, district_id, lat, lon, crew_id, \
         summary, created_at, updated_at, due_at, parent_id, assigned_at, reached_at, \
         breached_at, finding"
    };
}
pub(crate) use work_order_cols;

/// The columns of `work_order_transitions` that make a [`TransitionRecord`].
macro_rules! transition_cols {
    () => {
        "order_id, from_status, to_status, action, actor, at, crew_id, note, lat, lon"
    };
}

/// The columns of `crews` that make a [`Crew`], qualified by the alias `c`.
macro_rules! crew_cols {
    () => {
        "c.id, c.name, c.skills, c.home_lat, c.home_lon, c.pos_lat, c.pos_lon, c.position_at, \
         c.on_shift, c.shifts, c.last_job_lat, c.last_job_lon"
    };
}

/// `ORDER BY` rank of a `priority` column, most urgent first (as [`Priority`]'s `Ord`).
macro_rules! priority_rank {
    ($col:literal) => {
        concat!(
            "CASE ",
            $col,
            " WHEN 'emergency' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END"
        )
    };
}

/// What a transition does to an order's times (see [`WorkOrderStore::apply_transition`]).
#[derive(Debug, Clone, Copy)]
struct TransitionTimes {
    /// `Some(v)`: `assigned_at = v`; `None`: left as it is.
    assigned_at: Option<Option<Timestamp>>,
    /// `reached_at = COALESCE(reached_at, rec.at)`.
    reached: bool,
}

impl TransitionTimes {
    fn of(rec: &TransitionRecord) -> Self {
        TransitionTimes {
            assigned_at: match rec.to {
                WorkOrderStatus::Assigned => Some(Some(rec.at)),
                WorkOrderStatus::Created => Some(None),
                _ => None,
            },
            reached: rec.to == WorkOrderStatus::OnSite,
        }
    }
}

/// The statuses in which an order keeps its crew busy, as stored text.
fn occupying_statuses() -> Vec<String> {
    WorkOrderStatus::ALL
        .iter()
        .filter(|s| s.occupies_crew())
        .map(|s| s.as_str().to_owned())
        .collect()
}

/// The final statuses of an order, as stored text.
pub(crate) fn final_statuses() -> Vec<String> {
    WorkOrderStatus::ALL
        .iter()
        .filter(|s| s.is_final())
        .map(|s| s.as_str().to_owned())
        .collect()
}

pub(crate) fn work_order_from_row(row: &Row) -> Result<WorkOrder> {
    Ok(WorkOrder {
        id: row.int("id")?,
        kind: parse_text(&row.text("kind")?, "work-order kind")?,
        priority: parse_text(&row.text("priority")?, "priority")?,
        status: parse_text(&row.text("status")?, "work-order status")?,
        alert_id: row.opt_int("alert_id")?,
        meter_id: row.opt_text("meter_id")?.map(parse_meter_id).transpose()?,
        district_id: row
            .opt_text("district_id")?
            .map(parse_district_id)
            .transpose()?,
        location: GeoPoint {
            lat: row.float("lat")?,
            lon: row.float("lon")?,
        },
        crew_id: row.opt_text("crew_id")?.map(parse_crew_id).transpose()?,
        summary: row.text("summary")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        due_at: row.opt_time("due_at")?,
        parent_id: row.opt_int("parent_id")?,
        assigned_at: row.opt_time("assigned_at")?,
        reached_at: row.opt_time("reached_at")?,
        breached_at: row.opt_time("breached_at")?,
        finding: row.opt_json("finding")?,
    })
}

fn work_orders_from_rows(rows: Vec<Row>) -> Result<Vec<WorkOrder>> {
    rows.iter().map(work_order_from_row).collect()
}

fn transition_from_row(row: &Row) -> Result<TransitionRecord> {
    Ok(TransitionRecord {
        order_id: row.int("order_id")?,
        from: parse_text(&row.text("from_status")?, "work-order status")?,
        to: parse_text(&row.text("to_status")?, "work-order status")?,
        action: row.text("action")?,
        actor: row.text("actor")?,
        at: row.time("at")?,
        crew_id: row.opt_text("crew_id")?.map(parse_crew_id).transpose()?,
        note: row.opt_text("note")?,
        position: point(row.opt_float("lat")?, row.opt_float("lon")?),
    })
}

fn crew_row_from_row(row: &Row) -> Result<CrewRow> {
    let current = match row.opt_int("cur_id")? {
        Some(order_id) => Some(CurrentOrder {
            order_id,
            priority: parse_text(&row.text("cur_priority")?, "priority")?,
            status: parse_text(&row.text("cur_status")?, "work-order status")?,
        }),
        None => None,
    };
    Ok(CrewRow {
        crew: Crew {
            id: parse_crew_id(row.text("id")?)?,
            name: row.text("name")?,
            skills: row.text_list("skills")?,
            home: GeoPoint {
                lat: row.float("home_lat")?,
                lon: row.float("home_lon")?,
            },
            position: point(row.opt_float("pos_lat")?, row.opt_float("pos_lon")?),
            position_at: row.opt_time("position_at")?,
            last_job_place: point(
                row.opt_float("last_job_lat")?,
                row.opt_float("last_job_lon")?,
            ),
            shifts: row.opt_json("shifts")?,
            on_shift: row.bool("on_shift")?,
        },
        active_orders: row.int("active_orders")?,
        current,
    })
}

/// Appends `rec` to the history of order `id`, with why the dispatcher took the step
/// (`cause`, when it says).
async fn insert_transition(
    exec: Exec<'_>,
    id: i64,
    rec: &TransitionRecord,
    cause: Option<&str>,
) -> Result<()> {
    exec.execute(
        sql!(
            "INSERT INTO work_order_transitions
                 (order_id, from_status, to_status, action, actor, at, crew_id, note, lat, lon,
                  cause)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ),
        args![
            id,
            rec.from.as_str(),
            rec.to.as_str(),
            &rec.action,
            &rec.actor,
            rec.at,
            rec.crew_id.as_ref().map(|c| c.as_str()),
            &rec.note,
            rec.position.map(|p| p.lat),
            rec.position.map(|p| p.lon),
            cause,
        ],
    )
    .await?;
    Ok(())
}

/// Every order not in a final status, by id.
pub(crate) async fn active_work_orders(exec: Exec<'_>) -> Result<Vec<WorkOrder>> {
    let rows = exec
        .fetch_all(
            sql!(
                "SELECT ",
                work_order_cols!(),
                " FROM work_orders WHERE NOT (status = ANY($1)) ORDER BY id"
            ),
            args![final_statuses()],
        )
        .await?;
    work_orders_from_rows(rows)
}

/// Every crew (or the one `id`) with its active order count and most urgent active
/// order, by id.
pub(crate) async fn crews(exec: Exec<'_>, id: Option<&CrewId>) -> Result<Vec<CrewRow>> {
    let rows = exec
        .fetch_all(
            sql!(
                "SELECT ",
                crew_cols!(),
                ", (SELECT count(*) FROM work_orders w
                    WHERE w.crew_id = c.id AND w.status = ANY($2)) AS active_orders,
                   cur.id AS cur_id, cur.priority AS cur_priority, cur.status AS cur_status
                 FROM crews c LEFT JOIN work_orders cur ON cur.id = (
                     SELECT w.id FROM work_orders w
                     WHERE w.crew_id = c.id AND w.status = ANY($2)
                     ORDER BY ",
                priority_rank!("w.priority"),
                ", w.created_at, w.id LIMIT 1)
                 WHERE ($1::text IS NULL OR c.id = $1) ORDER BY c.id"
            ),
            args![id.map(|c| c.as_str()), occupying_statuses()],
        )
        .await?;
    rows.iter().map(crew_row_from_row).collect()
}

/// See [`WorkOrderStore::set_crew_position`].
pub(crate) async fn set_crew_position(
    mut exec: Exec<'_>,
    id: &CrewId,
    at: GeoPoint,
    when: Timestamp,
) -> Result<()> {
    let done = exec
        .reborrow()
        .execute(
            sql!(
                "UPDATE crews SET pos_lat = $2, pos_lon = $3, position_at = $4
                 WHERE id = $1 AND (position_at IS NULL OR position_at <= $4)"
            ),
            args![id.as_str(), at.lat, at.lon, when],
        )
        .await?;
    if done == 0
        && exec
            .fetch_optional(
                sql!("SELECT 1 FROM crews WHERE id = $1"),
                args![id.as_str()],
            )
            .await?
            .is_none()
    {
        return Err(StoreError::NotFound(format!("crew {id}")));
    }
    Ok(())
}

/// See [`WorkOrderStore::set_crew_last_job_place`].
pub(crate) async fn set_crew_last_job_place(
    exec: Exec<'_>,
    id: &CrewId,
    place: GeoPoint,
) -> Result<()> {
    let done = exec
        .execute(
            sql!("UPDATE crews SET last_job_lat = $2, last_job_lon = $3 WHERE id = $1"),
            args![id.as_str(), place.lat, place.lon],
        )
        .await?;
    if done == 0 {
        return Err(StoreError::NotFound(format!("crew {id}")));
    }
    Ok(())
}

/// One work order, if it exists.
pub(crate) async fn get_work_order(exec: Exec<'_>, id: i64) -> Result<Option<WorkOrder>> {
    let row = exec
        .fetch_optional(
            sql!(
                "SELECT ",
                work_order_cols!(),
                " FROM work_orders WHERE id = $1"
            ),
            args![id],
        )
        .await?;
    row.as_ref().map(work_order_from_row).transpose()
}

/// See [`WorkOrderStore::create_work_order`]; in the caller's transaction.
pub(crate) async fn create_work_order(
    mut exec: Exec<'_>,
    wo: &NewWorkOrder,
    now: Timestamp,
) -> Result<WorkOrder> {
    if let Some(parent) = wo.parent_id
        && get_work_order(exec.reborrow(), parent).await?.is_none()
    {
        return Err(StoreError::NotFound(format!("parent work order {parent}")));
    }
    let row = exec
        .reborrow()
        .try_fetch_optional(
            sql!(
                "INSERT INTO work_orders (kind, priority, status, alert_id, meter_id,
                                          district_id, lat, lon, summary, created_at,
                                          updated_at, due_at, parent_id)
                 VALUES ($1, $2, 'created', $3, $4, $5, $6, $7, $8, $9, $9, $10, $11)
                 RETURNING ",
                work_order_cols!()
            ),
            args![
                wo.kind.as_str(),
                wo.priority.as_str(),
                wo.alert_id,
                wo.meter_id.as_ref().map(|m| m.as_str()),
                wo.district_id.as_ref().map(|d| d.as_str()),
                wo.location.lat,
                wo.location.lon,
                &wo.summary,
                now,
                wo.due_at,
                wo.parent_id,
            ],
        )
        .await
        .map_err(|e| match (is_foreign_key_violation(&e), wo.alert_id) {
            (true, Some(a)) => StoreError::NotFound(format!("alert {a}")),
            _ => e.into(),
        })?
        .ok_or(sqlx::Error::RowNotFound)?;
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
    insert_transition(exec, order.id, &rec, None).await?;
    Ok(order)
}

/// See [`WorkOrderStore::apply_transition`]; in the caller's transaction, recording why
/// the step was taken (`cause`).
pub(crate) async fn apply_transition(
    mut exec: Exec<'_>,
    id: i64,
    rec: &TransitionRecord,
    change: &OrderChange,
    cause: Option<&str>,
) -> Result<WorkOrder> {
    let times = TransitionTimes::of(rec);
    let crew = change.crew.as_ref().map(|c| c.as_ref());
    let updated = exec
        .reborrow()
        .try_fetch_optional(
            sql!(
                "UPDATE work_orders
                 SET status = $3, updated_at = $4,
                     crew_id = CASE WHEN $5 THEN $6::text ELSE crew_id END,
                     assigned_at = CASE WHEN $7 THEN $8::timestamptz ELSE assigned_at END,
                     reached_at = CASE WHEN $9 THEN COALESCE(reached_at, $4)
                                       ELSE reached_at END,
                     finding = COALESCE($10::jsonb, finding)
                 WHERE id = $1 AND status = $2 RETURNING ",
                work_order_cols!()
            ),
            vec![
                Arg::from(id),
                Arg::from(rec.from.as_str()),
                Arg::from(rec.to.as_str()),
                Arg::from(rec.at),
                Arg::from(crew.is_some()),
                Arg::from(crew.flatten().map(|c| c.as_str())),
                Arg::from(times.assigned_at.is_some()),
                Arg::from(times.assigned_at.flatten()),
                Arg::from(times.reached),
                Arg::json(change.finding.as_ref())?,
            ],
        )
        .await
        .map_err(|e| match crew {
            Some(Some(c)) if is_foreign_key_violation(&e) => {
                StoreError::NotFound(format!("crew {c}"))
            }
            _ => e.into(),
        })?;
    let Some(row) = updated else {
        return Err(match get_work_order(exec, id).await? {
            Some(o) => StoreError::Conflict(format!("work order {id} is {}", o.status.as_str())),
            None => StoreError::NotFound(format!("work order {id}")),
        });
    };
    let order = work_order_from_row(&row)?;
    insert_transition(exec, id, rec, cause).await?;
    Ok(order)
}

/// See [`WorkOrderStore::set_work_order_priority`].
pub(crate) async fn set_work_order_priority(
    exec: Exec<'_>,
    order_id: i64,
    priority: Priority,
    due_at: Option<Timestamp>,
) -> Result<WorkOrder> {
    let row = exec
        .fetch_optional(
            sql!(
                "UPDATE work_orders SET priority = $2, due_at = $3 WHERE id = $1 RETURNING ",
                work_order_cols!()
            ),
            args![order_id, priority.as_str(), due_at],
        )
        .await?;
    match row {
        Some(row) => work_order_from_row(&row),
        None => Err(StoreError::NotFound(format!("work order {order_id}"))),
    }
}

/// Sets `breached_at = at` unless set; whether it changed (`None`: no such order).
pub(crate) async fn mark_breached(
    mut exec: Exec<'_>,
    order_id: i64,
    at: Timestamp,
) -> Result<Option<bool>> {
    let done = exec
        .reborrow()
        .execute(
            sql!("UPDATE work_orders SET breached_at = $2 WHERE id = $1 AND breached_at IS NULL"),
            args![order_id, at],
        )
        .await?;
    if done == 1 {
        return Ok(Some(true));
    }
    let found = exec
        .fetch_optional(
            sql!("SELECT 1 FROM work_orders WHERE id = $1"),
            args![order_id],
        )
        .await?;
    Ok(found.map(|_| false))
}

impl WorkOrderStore for WorkOrders {
    async fn upsert_crews(&self, crews: &[Crew]) -> Result<u64> {
        let crews = last_by_key(crews, |c| c.id.as_str());
        if crews.is_empty() {
            return Ok(0);
        }
        let mut tx = self.0.begin().await?;
        let mut n = 0;
        for c in &crews {
            n += tx
                .exec()
                .execute(
                    sql!(
                        "INSERT INTO crews (id, name, skills, home_lat, home_lon, pos_lat, pos_lon,
                                            position_at, on_shift, shifts, last_job_lat,
                                            last_job_lon)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                         ON CONFLICT (id) DO UPDATE SET
                             name = excluded.name, skills = excluded.skills,
                             home_lat = excluded.home_lat, home_lon = excluded.home_lon,
                             pos_lat = COALESCE(excluded.pos_lat, crews.pos_lat),
                             pos_lon = COALESCE(excluded.pos_lon, crews.pos_lon),
                             position_at = CASE WHEN excluded.pos_lat IS NULL
                                                THEN crews.position_at
                                                ELSE excluded.position_at END,
                             on_shift = excluded.on_shift, shifts = excluded.shifts,
                             last_job_lat = COALESCE(excluded.last_job_lat, crews.last_job_lat),
                             last_job_lon = COALESCE(excluded.last_job_lon, crews.last_job_lon)"
                    ),
                    vec![
                        Arg::from(c.id.as_str()),
                        Arg::from(&c.name),
                        Arg::TextList(c.skills.clone()),
                        Arg::from(c.home.lat),
                        Arg::from(c.home.lon),
                        Arg::from(c.position.map(|p| p.lat)),
                        Arg::from(c.position.map(|p| p.lon)),
                        Arg::from(c.position.and(c.position_at)),
                        Arg::from(c.on_shift),
                        Arg::json(c.shifts.as_ref())?,
                        Arg::from(c.last_job_place.map(|p| p.lat)),
                        Arg::from(c.last_job_place.map(|p| p.lon)),
                    ],
                )
                .await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn list_crews(&self) -> Result<Vec<CrewRow>> {
        crews(self.0.exec(), None).await
    }

    async fn get_crew(&self, id: &CrewId) -> Result<Option<CrewRow>> {
        Ok(crews(self.0.exec(), Some(id)).await?.pop())
    }

    async fn set_crew_position(&self, id: &CrewId, at: GeoPoint, when: Timestamp) -> Result<()> {
        set_crew_position(self.0.exec(), id, at, when).await
    }

    async fn set_crew_last_job_place(&self, id: &CrewId, place: GeoPoint) -> Result<()> {
        set_crew_last_job_place(self.0.exec(), id, place).await
    }

    async fn create_work_order(&self, wo: &NewWorkOrder) -> Result<WorkOrder> {
        let mut tx = self.0.begin().await?;
        let order = create_work_order(tx.exec(), wo, chrono::Utc::now()).await?;
        tx.commit().await?;
        Ok(order)
    }

    async fn get_work_order(&self, id: i64) -> Result<Option<WorkOrder>> {
        get_work_order(self.0.exec(), id).await
    }

    async fn list_work_orders(&self, q: &WorkOrderQuery) -> Result<Vec<WorkOrder>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT ",
                    work_order_cols!(),
                    " FROM work_orders
                     WHERE ($1::text IS NULL OR status = $1)
                       AND ($2::text IS NULL OR crew_id = $2)
                       AND ($3::int8 IS NULL OR id < $3)
                       AND ($5::int8 IS NULL OR parent_id = $5)
                       AND ($6::int8 IS NULL OR alert_id = $6)
                     ORDER BY id DESC LIMIT $4"
                ),
                args![
                    q.status.map(|s| s.as_str()),
                    q.crew_id.as_ref().map(|c| c.as_str()),
                    q.cursor,
                    q.limit,
                    q.parent_id,
                    q.alert_id,
                ],
            )
            .await?;
        work_orders_from_rows(rows)
    }

    async fn apply_transition(
        &self,
        id: i64,
        rec: &TransitionRecord,
        change: &OrderChange,
    ) -> Result<WorkOrder> {
        let mut tx = self.0.begin().await?;
        let order = apply_transition(tx.exec(), id, rec, change, None).await?;
        tx.commit().await?;
        Ok(order)
    }

    async fn work_order_history(&self, id: i64) -> Result<Vec<TransitionRecord>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT ",
                    transition_cols!(),
                    " FROM work_order_transitions WHERE order_id = $1 ORDER BY seq"
                ),
                args![id],
            )
            .await?;
        rows.iter().map(transition_from_row).collect()
    }

    async fn jobs_for_crew(&self, crew: &CrewId) -> Result<Vec<WorkOrder>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT ",
                    work_order_cols!(),
                    " FROM work_orders WHERE crew_id = $1 AND NOT (status = ANY($2))
                     ORDER BY ",
                    priority_rank!("priority"),
                    ", created_at, id"
                ),
                args![crew.as_str(), final_statuses()],
            )
            .await?;
        work_orders_from_rows(rows)
    }

    async fn active_work_orders(&self) -> Result<Vec<WorkOrder>> {
        active_work_orders(self.0.exec()).await
    }

    async fn orders_awaiting_acceptance(
        &self,
        assigned_before: Timestamp,
    ) -> Result<Vec<WorkOrder>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT ",
                    work_order_cols!(),
                    " FROM work_orders WHERE status = $1 AND assigned_at < $2
                     ORDER BY assigned_at, id"
                ),
                args![WorkOrderStatus::Assigned.as_str(), assigned_before],
            )
            .await?;
        work_orders_from_rows(rows)
    }

    async fn orders_due_before(&self, t: Timestamp) -> Result<Vec<WorkOrder>> {
        let rows = self
            .0
            .exec()
            .fetch_all(
                sql!(
                    "SELECT ",
                    work_order_cols!(),
                    " FROM work_orders
                     WHERE breached_at IS NULL AND due_at < $1 AND NOT (status = ANY($2))
                     ORDER BY due_at, id"
                ),
                args![t, final_statuses()],
            )
            .await?;
        work_orders_from_rows(rows)
    }

    async fn mark_breached(&self, order_id: i64, at: Timestamp) -> Result<bool> {
        mark_breached(self.0.exec(), order_id, at)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("work order {order_id}")))
    }

    async fn count_breached(&self) -> Result<i64> {
        let row = self
            .0
            .exec()
            .fetch_one(
                sql!("SELECT count(*) AS n FROM work_orders WHERE breached_at IS NOT NULL"),
                args![],
            )
            .await?;
        row.int("n")
    }

    async fn set_work_order_priority(
        &self,
        order_id: i64,
        priority: Priority,
        due_at: Option<Timestamp>,
    ) -> Result<WorkOrder> {
        set_work_order_priority(self.0.exec(), order_id, priority, due_at).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakwatch_core::WeeklyShifts;

    #[test]
    fn crew_rows_serialize_flat_with_status() {
        let row = CrewRow {
            crew: Crew {
                id: CrewId::parse("C1").unwrap(),
                name: "North".into(),
                skills: vec!["emergency".into()],
                home: GeoPoint::new(45.0, 9.0).unwrap(),
                position: None,
                position_at: None,
                last_job_place: None,
                shifts: None,
                on_shift: true,
            },
            active_orders: 2,
            current: Some(CurrentOrder {
                order_id: 7,
                priority: Priority::Emergency,
                status: WorkOrderStatus::EnRoute,
            }),
        };
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(v["id"], "C1");
        assert_eq!(v["status"], "busy");
        assert_eq!(v["active_orders"], 2);
        assert_eq!(v["home"]["lat"], 45.0);
        assert_eq!(
            v["current"],
            serde_json::json!({"order_id": 7, "priority": "emergency", "status": "en_route"})
        );
        assert!(v.get("shifts").is_none());
    }

    #[test]
    fn crew_status_follows_the_calendar_when_there_is_one() {
        use chrono::{TimeZone, Weekday};
        let mut row = CrewRow {
            crew: Crew {
                id: CrewId::parse("C1").unwrap(),
                name: "North".into(),
                skills: vec![],
                home: GeoPoint::new(45.0, 9.0).unwrap(),
                position: None,
                position_at: None,
                last_job_place: None,
                shifts: Some(WeeklyShifts::new(0).with_shifts(&[Weekday::Thu], &[(480, 960)])),
                on_shift: false,
            },
            active_orders: 0,
            current: None,
        };
        let at = |h| chrono::Utc.with_ymd_and_hms(2026, 11, 26, h, 0, 0).unwrap();
        assert_eq!(row.status_at(at(9)), CrewStatus::Available);
        assert_eq!(row.status_at(at(17)), CrewStatus::OffShift);
        row.active_orders = 1;
        assert_eq!(row.status_at(at(9)), CrewStatus::Busy);
        row.crew.shifts = None;
        assert_eq!(row.status_at(at(9)), CrewStatus::OffShift);
        assert_eq!(row.status(), CrewStatus::OffShift);
    }

    #[test]
    fn transitions_move_the_order_times() {
        let t = chrono::DateTime::from_timestamp(1_000, 0).unwrap();
        let rec = |to| TransitionRecord {
            order_id: 1,
            from: WorkOrderStatus::Assigned,
            to,
            action: "x".into(),
            actor: "a".into(),
            at: t,
            crew_id: None,
            note: None,
            position: None,
        };
        let of = |to| {
            let x = TransitionTimes::of(&rec(to));
            (x.assigned_at, x.reached)
        };
        assert_eq!(of(WorkOrderStatus::Assigned), (Some(Some(t)), false));
        assert_eq!(of(WorkOrderStatus::Created), (Some(None), false));
        assert_eq!(of(WorkOrderStatus::OnSite), (None, true));
        assert_eq!(of(WorkOrderStatus::Accepted), (None, false));
        assert_eq!(of(WorkOrderStatus::Completed), (None, false));
    }
}
