//! Storage for leakwatch: one interface ([`Store`]), two backends (PostgreSQL and SQLite,
//! both through sqlx), with the schema of each backend kept as embedded migrations under
//! `migrations/postgres` and `migrations/sqlite` and applied by [`Store::connect`].
//!
//! This crate owns the database schema and every SQL statement of the project: meters,
//! readings and device events, dead letters, alerts, crews, work orders and their audit
//! trail. It maps rows to and from the domain types of `leakwatch-core` and enforces the
//! storage-level guarantees (idempotent ingestion, one active alert per subject and kind,
//! compare-and-set status changes).
//!
//! It must not decide domain rules: whether a work order may move from `assigned` to
//! `on_site` is `leakwatch-core`'s call; the store only records a transition the caller
//! has already validated, and refuses it if the stored status is no longer the expected
//! one. It knows nothing of MQTT, HTTP or detection.
//!
//! Conventions:
//! * PostgreSQL stores times as `TIMESTAMPTZ`; SQLite as `INTEGER` Unix epoch
//!   milliseconds, so times round-trip through SQLite at millisecond precision (and
//!   through PostgreSQL at microsecond precision).
//! * Enums are stored as their `as_str()` text; alert evidence, crews' calendars
//!   (`shifts`) and work orders' findings as JSON (PG `JSONB`, SQLite `TEXT`); crew
//!   skills as `TEXT[]` (PG) or a JSON array (SQLite).
//! * Identifiers are ordered bytewise on both backends (PG columns use `COLLATE "C"`).
//!
//! Readings: [`Store::insert_batch`] stores each (meter, t) once. A repeat with the same
//! volume is a duplicate (nothing written); a repeat with another volume is a conflict:
//! the stored reading stays as it is and the repeat is logged in `reading_conflicts`.
//! Inserting writes `readings` only: `readings_hourly` is the archive of the hours whose
//! raw readings retention ([`Store::drop_raw_readings_before`]) dropped, filled by that
//! call in the same transaction as the delete, and [`Store::hourly`] merges it with hours
//! aggregated on the fly from the raw readings still stored. On
//! PostgreSQL with the TimescaleDB extension, `readings` is also a compressed hypertable
//! (migration `0003_timescale.sql`) and retention drops whole chunks.

/// The columns of `meters` that make a [`Meter`].
macro_rules! meter_cols {
    () => {
        "id, district_id, kind, lat, lon, report_every_h, status, installed_at, max_flow_m3h"
    };
}

/// The columns of `alerts` that make an [`Alert`], in the order the row mappers read.
macro_rules! alert_cols {
    () => {
        "id, kind, severity, status, meter_id, district_id, detected_at, last_seen, count, \
         evidence, work_order_id, status_reason, outcome, created_at"
    };
}

/// The columns of `work_orders` that make a [`WorkOrder`].
macro_rules! work_order_cols {
    () => {
        "id, kind, priority, status, alert_id, meter_id, district_id, lat, lon, crew_id, \
         summary, created_at, updated_at, due_at, parent_id, assigned_at, reached_at, \
         breached_at, finding"
    };
}

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

/// `ORDER BY` rank of the `priority` column, most urgent first (as [`Priority`]'s `Ord`).
macro_rules! priority_rank {
    () => {
        "CASE priority WHEN 'emergency' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END"
    };
}

/// The id of the most urgent active order of the crew `c` ([`CurrentOrder`]): a subquery
/// over `work_orders w`, most urgent priority first, then oldest. `$occ` is the
/// backend's test that `w.status` is one of the statuses occupying a crew.
macro_rules! current_order_pick {
    ($occ:literal) => {
        concat!(
            "(SELECT w.id FROM work_orders w WHERE w.crew_id = c.id AND ",
            $occ,
            " ORDER BY CASE w.priority WHEN 'emergency' THEN 0 WHEN 'high' THEN 1 \
              WHEN 'normal' THEN 2 ELSE 3 END, w.created_at, w.id LIMIT 1)"
        )
    };
}

/// The higher of the stored and the incoming severity, in an alerts upsert.
macro_rules! severity_max {
    () => {
        "CASE WHEN (CASE excluded.severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END) \
              > (CASE alerts.severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END) \
         THEN excluded.severity ELSE alerts.severity END"
    };
}

mod dead_letter_bounds;
mod devices;
mod error_class;
mod pg;
mod registry_feed;
mod sqlite;
pub mod testing;
mod unit_of_work;

pub use unit_of_work::{DISPATCH_LOCK, StepCause, UnitOfWork};

pub use dead_letter_bounds::{KeyedDeadLetter, Pruned, dead_letter_key};
pub use registry_feed::{METERS_CHANNEL, Registered, RegistryFeed, RegistryUpdate};

#[cfg(test)]
mod conformance;

use leakwatch_core::{
    Alert, AlertKind, AlertOutcome, AlertStatus, Crew, CrewId, CrewStatus, DistrictId, Finding,
    GeoPoint, Meter, MeterEvent, MeterId, Priority, Reading, SiteFinding, Timestamp,
    TransitionRecord, WorkOrder, WorkOrderKind, WorkOrderStatus,
};
use serde::{Serialize, Serializer};
use std::collections::HashMap;
use std::str::FromStr;

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database (or the connection to it) failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration could not be applied.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The thing asked for does not exist; the text names it (e.g. `work order 7`).
    #[error("not found: {0}")]
    NotFound(String),
    /// A compare-and-set failed or a uniqueness rule was hit; the text says why
    /// (e.g. `alert 3 is dismissed`).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database URL is not one the store understands.
    #[error("bad database URL: {0}")]
    BadUrl(String),
    /// Data could not be stored or read back as a domain value (unknown enum text,
    /// invalid id, out-of-range number, non-finite volume).
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether trying the same call again later may succeed: lost or refused
    /// connections, I/O errors, pool time-outs, and transient database conditions
    /// (PostgreSQL connection exceptions, shutdowns, serialization failures and
    /// deadlocks; SQLite `BUSY`/`LOCKED`).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(e) => sqlx_retryable(e),
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => sqlx_retryable(e),
            _ => false,
        }
    }
}

fn sqlx_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else { return false };
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // Extended result codes keep the primary code in the low byte.
                matches!(code.parse::<i32>().map(|c| c & 0xff), Ok(5 | 6))
            } else {
                code.starts_with("08")
                    || matches!(
                        &*code,
                        "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03"
                    )
            }
        }
        _ => false,
    }
}

/// The result of every store call.
pub type Result<T> = std::result::Result<T, StoreError>;

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
    /// `reading_conflicts` ([`Store::list_conflicts`]).
    pub conflicts: u64,
}

/// Quality flags the ingestor attaches to a stored reading (bitmask, stored as an integer
/// column `flags`). Bits the store does not know are kept as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ReadingFlags(pub u16);

impl ReadingFlags {
    /// Older than the meter's latest stored reading when it arrived.
    pub const LATE: u16 = 1;
    /// The volume index went down compared with the previous reading.
    pub const COUNTER_REGRESSION: u16 = 2;
    /// The volume index rose faster than the meter's capacity allows.
    pub const JUMP: u16 = 4;

    const NAMES: [(u16, &'static str); 3] = [
        (Self::LATE, "late"),
        (Self::COUNTER_REGRESSION, "counter_regression"),
        (Self::JUMP, "jump"),
    ];

    /// Whether every bit of `bits` is set.
    pub fn contains(&self, bits: u16) -> bool {
        self.0 & bits == bits
    }

    /// These flags with `bits` also set.
    #[must_use]
    pub fn with(self, bits: u16) -> Self {
        ReadingFlags(self.0 | bits)
    }

    /// The names of the known flags that are set, in bit order: `"late"`,
    /// `"counter_regression"`, `"jump"`.
    pub fn names(&self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, name)| *name)
            .collect()
    }

    /// From the stored integer.
    fn from_db(v: i64) -> Result<Self> {
        u16::try_from(v)
            .map(ReadingFlags)
            .map_err(|_| StoreError::Corrupt(format!("stored reading flags {v}")))
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
    /// [`Store::insert_batch`]).
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

/// A message that could not be processed, to be kept for a person to look at.
#[derive(Debug, Clone, Serialize)]
pub struct NewDeadLetter {
    /// Where the message came from (MQTT topic, HTTP route).
    pub topic: String,
    /// Short machine-friendly reason, e.g. `bad_json`, `unknown_meter`.
    pub reason: String,
    /// Human-readable detail.
    pub detail: String,
    /// The message as received, byte for byte.
    #[serde(serialize_with = "lossy_utf8")]
    pub payload: Vec<u8>,
    pub received_at: Timestamp,
}

/// A stored dead letter. Serializes `payload` as a (lossy) UTF-8 string.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub topic: String,
    pub reason: String,
    pub detail: String,
    #[serde(serialize_with = "lossy_utf8")]
    pub payload: Vec<u8>,
    pub received_at: Timestamp,
}

fn lossy_utf8<S: Serializer>(bytes: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

/// Filters for [`Store::list_alerts`]. Every filter set must hold; results come newest
/// (highest id) first, and `cursor` asks for ids below it (pass the last id of a page).
#[derive(Debug, Clone, Serialize)]
pub struct AlertQuery {
    pub status: Option<AlertStatus>,
    pub kind: Option<AlertKind>,
    /// Only alerts with `detected_at >= since`.
    pub since: Option<Timestamp>,
    pub meter_id: Option<MeterId>,
    pub limit: u32,
    pub cursor: Option<i64>,
}

impl Default for AlertQuery {
    fn default() -> Self {
        Self {
            status: None,
            kind: None,
            since: None,
            meter_id: None,
            limit: 100,
            cursor: None,
        }
    }
}

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

/// What a transition changes besides the status (see [`Store::apply_transition`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderChange {
    /// `None` leaves the crew, `Some(None)` clears it, `Some(Some(c))` sets it.
    pub crew: Option<Option<CrewId>>,
    /// The crew's finding, stored when given (`None` leaves the stored one).
    pub finding: Option<SiteFinding>,
}

/// How the escalated alerts of one kind turned out on site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OutcomeStat {
    pub kind: AlertKind,
    /// Alerts of this kind that have a work order.
    pub escalated: i64,
    /// Of those, the ones whose outcome is `confirmed_leak`.
    pub confirmed: i64,
    /// Of those, the ones whose outcome is `false_positive`.
    pub false_positive: i64,
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

/// Filters for [`Store::list_work_orders`]; every filter set must hold; newest
/// (highest id) first, `cursor` as in [`AlertQuery`].
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

/// The database behind leakwatch: a PostgreSQL or an SQLite connection pool. Cheap to
/// clone (the pools are reference-counted).
#[derive(Clone, Debug)]
pub enum Store {
    /// A PostgreSQL pool (10 connections) and what the server offers.
    Postgres(PgStore),
    /// An SQLite pool (4 connections to a WAL file, or 1 to an in-memory database).
    Sqlite(sqlx::SqlitePool),
}

/// How the PostgreSQL backend stores a batch of readings. [`Store::insert_batch`] takes
/// [`PgInsertPath::DEFAULT`]; the others stay for the benchmark that chose it
/// (`benches/store_pg.rs`).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgInsertPath {
    /// `INSERT ... SELECT FROM UNNEST(arrays) ON CONFLICT DO NOTHING`.
    Unnest,
    /// `COPY` into a temporary staging table, then as `Unnest` from it.
    CopyStaging,
    /// Rows after their meter's latest stored reading are COPYed, the rest go through
    /// `Unnest`.
    Split,
}

impl PgInsertPath {
    pub const DEFAULT: PgInsertPath = PgInsertPath::Split;
    pub const ALL: [PgInsertPath; 3] = [
        PgInsertPath::Unnest,
        PgInsertPath::CopyStaging,
        PgInsertPath::Split,
    ];
}

/// A PostgreSQL pool and the features found at connect.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: sqlx::PgPool,
    /// `readings` is a TimescaleDB hypertable (migration 0003 found the extension).
    timescale: bool,
}

impl PgStore {
    /// The connection pool.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }
}

macro_rules! dispatch {
    ($self:ident, $f:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Postgres(p) => pg::$f(&p.pool $(, $arg)*).await,
            Store::Sqlite(p) => sqlite::$f(p $(, $arg)*).await,
        }
    };
}

impl Store {
    /// Connects and applies the migrations.
    ///
    /// Accepts `postgres://…` / `postgresql://…`, and `sqlite://PATH` (a relative path
    /// such as `sqlite://data/leakwatch.db` is relative to the working directory; its
    /// parent directory is created if missing) or `sqlite::memory:` (a private in-memory
    /// database living as long as the store, served by a single connection).
    pub async fn connect(url: &str) -> Result<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (pool, timescale) = pg::connect(url).await?;
            Ok(Store::Postgres(PgStore { pool, timescale }))
        } else if url.starts_with("sqlite:") {
            sqlite::connect(url).await.map(Store::Sqlite)
        } else {
            Err(StoreError::BadUrl(format!(
                "{:?}: expected postgres://… or sqlite://…",
                redact(url)
            )))
        }
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Whether `readings` is a TimescaleDB hypertable (PostgreSQL with the `timescaledb`
    /// extension when the migrations ran). Always `false` on SQLite.
    pub fn has_timescale(&self) -> bool {
        matches!(self, Store::Postgres(p) if p.timescale)
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, ping())
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        match self {
            Store::Postgres(p) => p.pool.close().await,
            Store::Sqlite(p) => p.close().await,
        }
    }

    // ---- meters ----

    /// Inserts or updates meters by id, in one transaction. If the same id appears
    /// twice, the last one wins. Returns the number of distinct meters written.
    pub async fn upsert_meters(&self, meters: &[Meter]) -> Result<u64> {
        let meters = last_by_key(meters, |m| m.id.as_str());
        if meters.is_empty() {
            return Ok(0);
        }
        dispatch!(self, upsert_meters(&meters))
    }

    /// One meter, if known.
    pub async fn get_meter(&self, id: &MeterId) -> Result<Option<Meter>> {
        dispatch!(self, get_meter(id))
    }

    /// Up to `limit` meters ordered by id, starting after `after` (keyset pagination:
    /// pass the last id of the previous page).
    pub async fn list_meters(&self, after: Option<&MeterId>, limit: u32) -> Result<Vec<Meter>> {
        dispatch!(self, list_meters(after, limit))
    }

    /// Every meter, ordered by id.
    pub async fn all_meters(&self) -> Result<Vec<Meter>> {
        dispatch!(self, all_meters())
    }

    // ---- readings and events ----

    /// Stores readings with their flags, in one transaction, idempotently on (meter, t):
    ///
    /// * a (meter, t) not stored yet is inserted (only into `readings`: the hourly view
    ///   [`Store::hourly`] aggregates raw readings when read);
    /// * a (meter, t) already stored with the same volume ([`same_volume`]) is a
    ///   duplicate: nothing is written;
    /// * a (meter, t) already stored with another volume is a conflict: the stored reading
    ///   is left as it is and the row is logged in `reading_conflicts` with `received_at`.
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
    pub async fn insert_batch(
        &self,
        rows: &[(Reading, ReadingFlags)],
        received_at: Timestamp,
    ) -> Result<InsertOutcome> {
        if rows.is_empty() {
            return Ok(InsertOutcome::default());
        }
        if let Some((r, _)) = rows.iter().find(|(r, _)| !r.vol.is_finite()) {
            return Err(StoreError::Corrupt(format!(
                "reading of meter {} at {} has a non-finite volume {}",
                r.meter, r.t, r.vol
            )));
        }
        let (inserted, conflicts): (u64, u64) = dispatch!(self, insert_batch(rows, received_at))?;
        Ok(InsertOutcome {
            inserted,
            duplicates: rows.len() as u64 - inserted - conflicts,
            conflicts,
        })
    }

    /// [`Store::insert_batch`] along a chosen PostgreSQL path (SQLite has one). Only for
    /// the benchmark that compares them (`benches/store_pg.rs`).
    #[doc(hidden)]
    pub async fn insert_batch_via(
        &self,
        path: PgInsertPath,
        rows: &[(Reading, ReadingFlags)],
        received_at: Timestamp,
    ) -> Result<InsertOutcome> {
        if rows.is_empty() {
            return Ok(InsertOutcome::default());
        }
        let (inserted, conflicts) = match self {
            Store::Postgres(p) => pg::insert_batch_via(&p.pool, path, rows, received_at).await?,
            Store::Sqlite(p) => sqlite::insert_batch(p, rows, received_at).await?,
        };
        Ok(InsertOutcome {
            inserted,
            duplicates: rows.len() as u64 - inserted - conflicts,
            conflicts,
        })
    }

    /// [`Store::insert_batch`] with no flags, received now.
    pub async fn insert_readings(&self, readings: &[Reading]) -> Result<InsertOutcome> {
        let rows: Vec<(Reading, ReadingFlags)> = readings
            .iter()
            .map(|r| (r.clone(), ReadingFlags::default()))
            .collect();
        self.insert_batch(&rows, chrono::Utc::now()).await
    }

    /// A meter's readings ordered by time, `from` inclusive, `to` exclusive, at most
    /// `limit`.
    pub async fn readings(
        &self,
        meter: &MeterId,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<Reading>> {
        let rows = self.readings_flagged(meter, from, to, limit).await?;
        Ok(rows.into_iter().map(|(r, _)| r).collect())
    }

    /// [`Store::readings`] with each reading's flags.
    pub async fn readings_flagged(
        &self,
        meter: &MeterId,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<(Reading, ReadingFlags)>> {
        dispatch!(self, readings_flagged(meter, from, to, limit))
    }

    /// Each listed meter's latest reading ever stored, as (t, vol); meters with none are
    /// left out. The later of the meter's latest raw reading (an index probe backwards on
    /// the primary key) and the last reading of its latest archived hour, so a reading
    /// dropped by [`Store::drop_raw_readings_before`] still counts: this is what the
    /// ingestor judges late, regressing and jumping readings against. One statement for
    /// all the meters.
    pub async fn latest_readings(
        &self,
        meters: &[MeterId],
    ) -> Result<HashMap<MeterId, (Timestamp, f64)>> {
        if meters.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<&str> = meters.iter().map(|m| m.as_str()).collect();
        let rows: Vec<(String, Timestamp, f64)> = dispatch!(self, latest_readings(&ids))?;
        rows.into_iter()
            .map(|(m, t, vol)| Ok((parse_meter_id(m)?, (t, vol))))
            .collect()
    }

    /// A meter's hourly rollup ordered by hour: the hours starting in [`from`, `to`)
    /// (either bound may be open). The archived hours of `readings_hourly` (written by
    /// [`Store::drop_raw_readings_before`]) united with the hours aggregated from the raw
    /// readings still stored; an hour found in both (a late reading stored after its hour
    /// was archived) is merged: the earlier first, the later last, counts added.
    pub async fn hourly(
        &self,
        meter: &MeterId,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<Vec<HourlyRow>> {
        let (archived, raw) = dispatch!(self, hourly(meter, from, to))?;
        Ok(merge_hours(archived, raw))
    }

    /// Retention: archives, then deletes, the raw readings with `t` before `before`, and
    /// returns how many there were. In one transaction, their hours are aggregated into
    /// `readings_hourly` (merged with an hour already archived there) and the readings
    /// deleted, so [`Store::hourly`] and [`Store::latest_readings`] answer the same
    /// before and after. With TimescaleDB, the chunks entirely before `before` are
    /// dropped (`drop_chunks`, no dead rows left behind) and the rest deleted row by row,
    /// with inserts held off (table lock) from the aggregation to the end.
    pub async fn drop_raw_readings_before(&self, before: Timestamp) -> Result<u64> {
        match self {
            Store::Postgres(p) => pg::drop_raw_readings_before(&p.pool, p.timescale, before).await,
            Store::Sqlite(p) => sqlite::drop_raw_readings_before(p, before).await,
        }
    }

    /// The latest conflicts, newest (highest id) first.
    pub async fn list_conflicts(&self, limit: u32) -> Result<Vec<ReadingConflict>> {
        dispatch!(self, list_conflicts(limit))
    }

    /// How many conflicts are logged.
    pub async fn count_conflicts(&self) -> Result<i64> {
        dispatch!(self, count_conflicts())
    }

    /// How many readings are stored.
    pub async fn count_readings(&self) -> Result<i64> {
        dispatch!(self, count_readings())
    }

    /// Stores device events, idempotently on (meter, t, code). Returns how many were new.
    pub async fn insert_events(&self, events: &[MeterEvent]) -> Result<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        dispatch!(self, insert_events(events))
    }

    /// Every meter's events at or after `from`, oldest first (then by meter and
    /// code), at most `limit`: what detection replays after a restart.
    pub async fn events_since(&self, from: Timestamp, limit: u32) -> Result<Vec<MeterEvent>> {
        dispatch!(self, events_since(from, limit))
    }

    /// A meter's latest events, newest first, at most `limit`.
    pub async fn meter_events(&self, meter: &MeterId, limit: u32) -> Result<Vec<MeterEvent>> {
        dispatch!(self, meter_events(meter, limit))
    }

    // ---- dead letters ----

    /// Keeps a message that could not be processed; returns its id.
    pub async fn dead_letter(&self, dl: &NewDeadLetter) -> Result<i64> {
        dispatch!(self, dead_letter(dl))
    }

    /// The latest dead letters, newest (highest id) first.
    pub async fn list_dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>> {
        dispatch!(self, list_dead_letters(limit))
    }

    /// How many dead letters are stored.
    pub async fn count_dead_letters(&self) -> Result<i64> {
        dispatch!(self, count_dead_letters())
    }

    // ---- alerts ----

    /// Records a detector's finding; returns the alert and whether it was newly created.
    ///
    /// There is at most one active alert (open, acknowledged or escalated) per
    /// (`f.subject().key()`, kind). If one exists it is updated: `count += 1`,
    /// `last_seen = max(last_seen, f.detected_at)`, evidence replaced, severity raised to
    /// the higher of the two. Otherwise a new `open` alert is stored with count 1 and
    /// `detected_at = last_seen = f.detected_at`. This is a single atomic upsert on the
    /// partial unique index, so concurrent calls cannot create two active alerts.
    pub async fn record_finding(&self, f: &Finding) -> Result<(Alert, bool)> {
        let subject = f.subject().key();
        let alert: Alert = dispatch!(self, record_finding(f, &subject, chrono::Utc::now()))?;
        let created = alert.count == 1;
        Ok((alert, created))
    }

    /// One alert, if it exists.
    pub async fn get_alert(&self, id: i64) -> Result<Option<Alert>> {
        dispatch!(self, get_alert(id))
    }

    /// Alerts matching `q`, highest id first.
    pub async fn list_alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>> {
        dispatch!(self, list_alerts(q))
    }

    /// Compare-and-set of an alert's status: moves it from `from` to `to` only if it is
    /// `from` now ([`StoreError::Conflict`] `"alert N is <status>"` otherwise,
    /// [`StoreError::NotFound`] if there is no such alert). `reason` and
    /// `work_order_id`, when given, replace the stored ones; `None` leaves them as they
    /// are. Moving an alert back to an active status while another active alert exists
    /// for the same subject and kind is also a conflict.
    pub async fn set_alert_status(
        &self,
        id: i64,
        from: AlertStatus,
        to: AlertStatus,
        reason: Option<&str>,
        work_order_id: Option<i64>,
    ) -> Result<Alert> {
        dispatch!(self, set_alert_status(id, from, to, reason, work_order_id))
    }

    /// The number of alerts in each status, for every status in [`AlertStatus::ALL`]
    /// order (zero counts included).
    pub async fn count_alerts_by_status(&self) -> Result<Vec<(AlertStatus, i64)>> {
        let counts: Vec<(String, i64)> = dispatch!(self, count_alerts_by_status())?;
        let mut out: Vec<(AlertStatus, i64)> = AlertStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for (status, n) in counts {
            let status: AlertStatus = parse_text(&status, "alert status")?;
            if let Some(slot) = out.iter_mut().find(|(s, _)| *s == status) {
                slot.1 = n;
            }
        }
        Ok(out)
    }

    /// Records what the crew found for every alert whose `work_order_id` is `order_id`:
    /// `outcome` and `outcome_at = at`, replacing any outcome stored before. Returns the
    /// number of alerts changed (0 for an order without alerts, or no such order).
    pub async fn set_outcome_for_order(
        &self,
        order_id: i64,
        outcome: AlertOutcome,
        at: Timestamp,
    ) -> Result<u64> {
        dispatch!(self, set_outcome_for_order(order_id, outcome, at))
    }

    /// Per alert kind, among the alerts that have a work order (`work_order_id` set):
    /// how many there are, and how many turned out confirmed leaks and false positives.
    /// Sorted by the kind's text; kinds without such alerts are absent.
    pub async fn outcome_stats(&self) -> Result<Vec<OutcomeStat>> {
        let rows: Vec<(String, i64, i64, i64)> = dispatch!(self, outcome_stats())?;
        let mut out = rows
            .into_iter()
            .map(|(kind, escalated, confirmed, false_positive)| {
                Ok(OutcomeStat {
                    kind: parse_text(&kind, "alert kind")?,
                    escalated,
                    confirmed,
                    false_positive,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.kind.as_str().cmp(b.kind.as_str()));
        Ok(out)
    }

    /// The alerts whose `work_order_id` is `order_id`, by id.
    pub async fn alerts_of_order(&self, order_id: i64) -> Result<Vec<Alert>> {
        dispatch!(self, alerts_of_order(order_id))
    }

    /// Resolves the open and acknowledged alerts whose condition was last seen before
    /// `seen_before` (event time): the detector has stopped reporting it. Escalated
    /// alerts are left to their work order. Returns the alerts resolved.
    pub async fn resolve_quiet_alerts(
        &self,
        seen_before: Timestamp,
        reason: &str,
    ) -> Result<Vec<Alert>> {
        dispatch!(self, resolve_quiet_alerts(seen_before, reason))
    }

    /// [`Store::resolve_quiet_alerts`] for the alerts of one district, judged by that
    /// district's own event time.
    pub async fn resolve_quiet_alerts_in(
        &self,
        district: &DistrictId,
        seen_before: Timestamp,
        reason: &str,
    ) -> Result<Vec<Alert>> {
        dispatch!(self, resolve_quiet_alerts_in(district, seen_before, reason))
    }

    // ---- detector state ----

    /// Saves detector state, one row per subject (`meter:<id>`, `district:<id>`,
    /// `engine`), replacing what was there, in one statement or transaction.
    pub async fn save_detector_state(&self, rows: &[(String, Vec<u8>)]) -> Result<()> {
        dispatch!(self, save_detector_state(rows, chrono::Utc::now()))
    }

    /// Every saved detector state, by subject.
    pub async fn load_detector_state(&self) -> Result<Vec<(String, Vec<u8>)>> {
        dispatch!(self, load_detector_state())
    }

    /// Readings with `t >= from`, ordered by (t, meter), after the key `after` (keyset
    /// paging), at most `limit`: what the detectors replay after a restart.
    pub async fn readings_since(
        &self,
        from: Timestamp,
        after: Option<(Timestamp, &MeterId)>,
        limit: u32,
    ) -> Result<Vec<Reading>> {
        let after = after.map(|(t, m)| (t, m.as_str()));
        dispatch!(self, readings_since(from, after, limit))
    }

    // ---- crews ----

    /// Inserts or updates crews by id, in one transaction (the last of duplicate ids
    /// wins). A crew given without a position keeps the position already stored, and one
    /// without a last job place keeps the stored one, so re-loading the registry does not
    /// forget where crews were last seen; the calendar (`shifts`) is replaced as given
    /// (`None` clears it). Returns the number of distinct crews written.
    pub async fn upsert_crews(&self, crews: &[Crew]) -> Result<u64> {
        let crews = last_by_key(crews, |c| c.id.as_str());
        if crews.is_empty() {
            return Ok(0);
        }
        dispatch!(self, upsert_crews(&crews))
    }

    /// Every crew with its active order count and most urgent active order, ordered by
    /// id.
    pub async fn list_crews(&self) -> Result<Vec<CrewRow>> {
        dispatch!(self, list_crews(None))
    }

    /// One crew with its active order count and most urgent active order.
    pub async fn get_crew(&self, id: &CrewId) -> Result<Option<CrewRow>> {
        Ok(dispatch!(self, list_crews(Some(id)))?.pop())
    }

    /// Records a crew's position at `when`. A position older than the stored one is
    /// ignored (positions may arrive out of order); an unknown crew is
    /// [`StoreError::NotFound`].
    pub async fn set_crew_position(
        &self,
        id: &CrewId,
        at: GeoPoint,
        when: Timestamp,
    ) -> Result<()> {
        dispatch!(self, set_crew_position(id, at, when))
    }

    /// Records where the crew's last job was (set when it gets on site); an unknown crew
    /// is [`StoreError::NotFound`].
    pub async fn set_crew_last_job_place(&self, id: &CrewId, place: GeoPoint) -> Result<()> {
        dispatch!(self, set_crew_last_job_place(id, place))
    }

    // ---- work orders ----

    /// Creates a work order in status `created` with `created_at = updated_at = now`,
    /// and records its first transition (`created -> created`, action `create`, by
    /// `wo.actor`). An `alert_id` that names no alert is [`StoreError::NotFound`]
    /// `"alert N"`, a `parent_id` that names no order `"parent work order N"`.
    pub async fn create_work_order(&self, wo: &NewWorkOrder) -> Result<WorkOrder> {
        dispatch!(self, create_work_order(wo, chrono::Utc::now()))
    }

    /// One work order, if it exists.
    pub async fn get_work_order(&self, id: i64) -> Result<Option<WorkOrder>> {
        dispatch!(self, get_work_order(id))
    }

    /// Work orders matching `q`, highest id first.
    pub async fn list_work_orders(&self, q: &WorkOrderQuery) -> Result<Vec<WorkOrder>> {
        dispatch!(self, list_work_orders(q))
    }

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
    pub async fn apply_transition(
        &self,
        id: i64,
        rec: &TransitionRecord,
        change: &OrderChange,
    ) -> Result<WorkOrder> {
        let times = TransitionTimes::of(rec);
        dispatch!(self, apply_transition(id, rec, change, times))
    }

    /// An order's transitions in the order they were applied (empty if no such order).
    pub async fn work_order_history(&self, id: i64) -> Result<Vec<TransitionRecord>> {
        dispatch!(self, work_order_history(id))
    }

    /// A crew's current jobs: orders assigned to it and not final, most urgent priority
    /// first, then oldest first.
    pub async fn jobs_for_crew(&self, crew: &CrewId) -> Result<Vec<WorkOrder>> {
        dispatch!(self, jobs_for_crew(crew))
    }

    /// Every order not in a final status, by id.
    pub async fn active_work_orders(&self) -> Result<Vec<WorkOrder>> {
        dispatch!(self, active_work_orders())
    }

    /// The orders in status `assigned` given to their crew before `assigned_before`
    /// (`assigned_at < assigned_before`): not accepted in time. Oldest assignment first
    /// (then by id).
    pub async fn orders_awaiting_acceptance(
        &self,
        assigned_before: Timestamp,
    ) -> Result<Vec<WorkOrder>> {
        dispatch!(self, orders_awaiting_acceptance(assigned_before))
    }

    /// The orders not in a final status, not marked breached yet, whose `due_at` is
    /// before `t`, earliest deadline first (then by id). Whether each is a breach (an
    /// arrival deadline met in time is not) is the caller's call.
    pub async fn orders_due_before(&self, t: Timestamp) -> Result<Vec<WorkOrder>> {
        dispatch!(self, orders_due_before(t))
    }

    /// Marks an order as found past its deadline: sets `breached_at = at` unless it is
    /// set already (it is never cleared or moved). Returns whether it changed; an
    /// unknown order is [`StoreError::NotFound`].
    pub async fn mark_breached(&self, order_id: i64, at: Timestamp) -> Result<bool> {
        dispatch!(self, mark_breached(order_id, at))
    }

    /// How many orders have been marked breached.
    pub async fn count_breached(&self) -> Result<i64> {
        dispatch!(self, count_breached())
    }

    /// Sets an order's priority and deadline (`due_at`, `None` clears it), whatever its
    /// status, and returns it. `updated_at` is left as it is: it tracks status changes
    /// (the deadline view of a completed order relies on it), and this is not one; no
    /// transition is recorded either. An unknown order is [`StoreError::NotFound`].
    pub async fn set_work_order_priority(
        &self,
        order_id: i64,
        priority: Priority,
        due_at: Option<Timestamp>,
    ) -> Result<WorkOrder> {
        dispatch!(self, set_work_order_priority(order_id, priority, due_at))
    }
}

/// What a transition does to an order's times (see [`Store::apply_transition`]).
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

// ---- helpers shared by the backends ----

/// Keeps the last item of each key, in first-seen order.
fn last_by_key<T: Clone>(items: &[T], key: impl Fn(&T) -> &str) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    let mut index = std::collections::HashMap::new();
    for item in items {
        match index.get(key(item)) {
            Some(&i) => out[i] = item.clone(),
            None => {
                index.insert(key(item), out.len());
                out.push(item.clone());
            }
        }
    }
    out
}

/// Parses stored enum text.
fn parse_text<T: FromStr<Err = String>>(s: &str, what: &str) -> Result<T> {
    s.parse()
        .map_err(|e: String| StoreError::Corrupt(format!("stored {what}: {e}")))
}

fn parse_meter_id(s: String) -> Result<MeterId> {
    MeterId::parse(s).map_err(|e| StoreError::Corrupt(format!("stored meter id: {e}")))
}

fn parse_district_id(s: String) -> Result<DistrictId> {
    DistrictId::parse(s).map_err(|e| StoreError::Corrupt(format!("stored district id: {e}")))
}

fn parse_crew_id(s: String) -> Result<CrewId> {
    CrewId::parse(s).map_err(|e| StoreError::Corrupt(format!("stored crew id: {e}")))
}

fn report_every_h(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("stored report_every_h {v}")))
}

/// A point from two nullable columns stored both or neither.
fn point(lat: Option<f64>, lon: Option<f64>) -> Option<GeoPoint> {
    lat.zip(lon).map(|(lat, lon)| GeoPoint { lat, lon })
}

/// Maps NaN and infinities to NULL.
fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
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
fn final_statuses() -> Vec<String> {
    WorkOrderStatus::ALL
        .iter()
        .filter(|s| s.is_final())
        .map(|s| s.as_str().to_owned())
        .collect()
}

fn alert_conflict(id: i64, status: &str) -> StoreError {
    StoreError::Conflict(format!("alert {id} is {status}"))
}

fn work_order_conflict(id: i64, status: &str) -> StoreError {
    StoreError::Conflict(format!("work order {id} is {status}"))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

/// A URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &userinfo[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_by_key_keeps_the_last_in_first_seen_order() {
        let v = vec![("a", 1), ("b", 2), ("a", 3)];
        assert_eq!(last_by_key(&v, |x| x.0), vec![("a", 3), ("b", 2)]);
    }

    #[test]
    fn reading_flags_name_their_bits() {
        assert!(ReadingFlags::default().names().is_empty());
        let f = ReadingFlags(ReadingFlags::LATE).with(ReadingFlags::JUMP);
        assert_eq!(f.names(), vec!["late", "jump"]);
        assert!(f.contains(ReadingFlags::JUMP));
        assert!(!f.contains(ReadingFlags::COUNTER_REGRESSION));
        assert_eq!(
            ReadingFlags(0xffff).names(),
            vec!["late", "counter_regression", "jump"]
        );
        assert_eq!(serde_json::to_value(f).unwrap(), serde_json::json!(5));
        assert!(ReadingFlags::from_db(70_000).is_err());
        assert!(ReadingFlags::from_db(-1).is_err());
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

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[tokio::test]
    async fn unknown_schemes_are_bad_urls() {
        let err = Store::connect("mysql://u:pw@h/db").await.unwrap_err();
        assert!(
            matches!(err, StoreError::BadUrl(ref m) if !m.contains("pw")),
            "{err}"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn retryable_errors() {
        let io = StoreError::Database(sqlx::Error::Io(std::io::Error::other("reset")));
        assert!(io.is_retryable());
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_retryable());
        assert!(!StoreError::Conflict("x".into()).is_retryable());
    }

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

    #[test]
    fn dead_letters_serialize_payload_as_text() {
        let dl = DeadLetter {
            id: 1,
            topic: "t".into(),
            reason: "bad_json".into(),
            detail: "d".into(),
            payload: vec![b'{', 0xff, b'}'],
            received_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
        };
        let v = serde_json::to_value(&dl).unwrap();
        assert_eq!(v["payload"], "{\u{fffd}}");
    }
}
