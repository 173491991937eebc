//! Storage for leakwatch: one handle ([`Store`]), two backends (PostgreSQL and SQLite,
//! both through sqlx), with the schema of each backend kept as embedded migrations under
//! `migrations/postgres` and `migrations/sqlite` and applied by [`Store::connect`].
//!
//! The store is cut by aggregate, each a trait a consumer can depend on (and fake in
//! its tests) and a part of the store implementing it:
//!
//! | aggregate | trait | part ([`Store`] accessor) | module |
//! |---|---|---|---|
//! | readings, conflicts, hourly rollup, device events | [`ReadingStore`] | [`Readings`] ([`Store::reading_store`]) | `readings` |
//! | the meter registry | [`MeterStore`] | [`Meters`] ([`Store::meter_store`]) | `meters` |
//! | alerts | [`AlertStore`] | [`Alerts`] ([`Store::alert_store`]) | `alerts` |
//! | crews and work orders | [`WorkOrderStore`] | [`WorkOrders`] ([`Store::work_order_store`]) | `work_orders` |
//! | dead letters | [`DeadLetterStore`] | [`DeadLetters`] ([`Store::dead_letter_store`]) | `dead_letters` |
//! | detector checkpoints | [`DetectorStateStore`] | [`DetectorState`] ([`Store::detector_state_store`]) | `detector_state` |
//! | accounts, sessions, API tokens, their audit | [`AccountStore`] | [`Accounts`] ([`Store::account_store`]) | `accounts` |
//! | broker credentials of devices | [`DeviceCredentialStore`] | [`DeviceCredentials`] ([`Store::device_credential_store`]) | `devices` |
//! | pipe segments, survey and leak history | [`NetworkStore`] | [`Network`] ([`Store::network_store`]) | `network` |
//!
//! [`Store`] opens the database, hands out the parts, and still answers every call of
//! every part itself (each forwards to the part).
//!
//! Statements are written once where the dialects agree (`db`: PostgreSQL text with
//! `$n` placeholders, translated for SQLite; one row mapping over both); `pg.rs` and
//! `sqlite.rs` hold only what differs for a reason: binary `COPY` and `UNNEST` bulk
//! writes, `BEGIN IMMEDIATE`, hour arithmetic on each time representation, TimescaleDB.
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
//! Readings: [`ReadingStore::insert_batch`] stores each (meter, t) once. A repeat with the same
//! volume is a duplicate (nothing written); a repeat with another volume is a conflict:
//! the stored reading stays as it is and the repeat is logged in `reading_conflicts`.
//! Inserting writes `readings` only: `readings_hourly` is the archive of the hours whose
//! raw readings retention ([`ReadingStore::drop_raw_readings_before`]) dropped, filled by that
//! call in the same transaction as the delete, and [`ReadingStore::hourly`] merges it with hours
//! aggregated on the fly from the raw readings still stored. On
//! PostgreSQL with the TimescaleDB extension, `readings` is also a compressed hypertable
//! (migration `0003_timescale.sql`) and retention drops whole chunks.

mod accounts;
mod alerts;
// The console's history of alert actions and the crews' client action ids (issue 12).
mod console;
mod db;
mod dead_letter_bounds;
mod dead_letters;
mod detector_state;
mod devices;
mod error_class;
mod meters;
mod network;
mod pg;
// Scale-out (issue 14): the partitioned worker's fenced commit.
pub mod partitions;
mod readings;
mod registry_feed;
mod sqlite;
// Dismissals that stick (issue 12): suppressions made with a dismissal.
mod suppressions;
#[cfg(feature = "testing")]
pub mod testing;
mod unit_of_work;
mod work_orders;

pub use dead_letter_bounds::{KeyedDeadLetter, Pruned, dead_letter_key};
pub use registry_feed::{METERS_CHANNEL, Registered, RegistryFeed, RegistryUpdate};
pub use unit_of_work::{DISPATCH_LOCK, StepCause, UnitOfWork};

pub use accounts::{
    Account, AccountStore, Accounts, ApiToken, AuthAuditRecord, NewAccount, NewApiToken, Session,
};
pub use alerts::{AlertQuery, AlertStore, Alerts, OutcomeStat};
pub use console::{AlertHistoryEntry, ClientAction};
pub use dead_letters::{DeadLetter, DeadLetterStore, DeadLetters, NewDeadLetter};
pub use detector_state::{DetectorState, DetectorStateStore};
pub use devices::{DeviceCredentialStore, DeviceCredentials};
/// Decided by the ingestor, kept with each reading; re-exported from `leakwatch-core`.
pub use leakwatch_core::ReadingFlags;
pub use meters::{MeterStore, Meters};
pub use suppressions::FindingRecorded;
// Programmed leak survey: the network's segments and their survey and leak history.
pub use network::{ImportOutcome, LeakEntry, Network, NetworkStore, SurveyEntry};
pub use readings::{
    HourlyRow, InsertOutcome, ReadingConflict, ReadingStore, Readings, same_volume,
};
pub use work_orders::{
    CrewRow, CurrentOrder, NewWorkOrder, OrderChange, WorkOrderQuery, WorkOrderStore, WorkOrders,
};

use leakwatch_core::device::{DeviceCredential, DeviceKind};
use leakwatch_core::{
    Alert, AlertOutcome, AlertStatus, Crew, CrewId, DistrictId, Finding, GeoPoint, Meter,
    MeterEvent, MeterId, Priority, Reading, Timestamp, TransitionRecord, WorkOrder,
};
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

/// The database behind leakwatch: a PostgreSQL or an SQLite connection pool. Cheap to
/// clone (the pools are reference-counted).
#[derive(Clone, Debug)]
pub enum Store {
    /// A PostgreSQL pool (10 connections) and what the server offers.
    Postgres(PgStore),
    /// An SQLite pool (4 connections to a WAL file, or 1 to an in-memory database).
    Sqlite(sqlx::SqlitePool),
}

/// How the PostgreSQL backend stores a batch of readings. [`ReadingStore::insert_batch`] takes
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
        self.exec().execute(db::sql!("SELECT 1"), vec![]).await?;
        Ok(())
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        match self {
            Store::Postgres(p) => p.pool.close().await,
            Store::Sqlite(p) => p.close().await,
        }
    }

    // ---- the parts ----

    /// The readings, their conflicts, hourly rollup and device events.
    pub fn reading_store(&self) -> Readings {
        Readings(self.clone())
    }

    /// The meter registry.
    pub fn meter_store(&self) -> Meters {
        Meters(self.clone())
    }

    /// The alerts.
    pub fn alert_store(&self) -> Alerts {
        Alerts(self.clone())
    }

    /// The crews and work orders.
    pub fn work_order_store(&self) -> WorkOrders {
        WorkOrders(self.clone())
    }

    /// The dead letters.
    pub fn dead_letter_store(&self) -> DeadLetters {
        DeadLetters(self.clone())
    }

    /// The detectors' checkpoint.
    pub fn detector_state_store(&self) -> DetectorState {
        DetectorState(self.clone())
    }

    /// The broker credentials of devices.
    pub fn device_credential_store(&self) -> DeviceCredentials {
        DeviceCredentials(self.clone())
    }

    /// Accounts, sessions, API tokens and their audit.
    pub fn account_store(&self) -> Accounts {
        Accounts(self.clone())
    }

    /// The network's pipe segments and their survey and leak history.
    pub fn network_store(&self) -> Network {
        Network(self.clone())
    }

    /// [`ReadingStore::insert_batch`] along a chosen PostgreSQL path (SQLite has one).
    /// Only for the benchmark that compares them (`benches/store_pg.rs`).
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
        readings::check_volumes(rows)?;
        let counts = match self {
            Store::Postgres(p) => pg::insert_batch_via(&p.pool, path, rows, received_at).await?,
            Store::Sqlite(p) => sqlite::insert_batch(p, rows, received_at).await?,
        };
        Ok(InsertOutcome::of(rows.len(), counts))
    }
}

/// Every call of every part, on the whole store: each forwards to its part (see the
/// trait for what it does). New code should take the part it needs.
macro_rules! forward {
    ($($part:ident: $Trait:ident { $(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)* })*) => {
        impl Store {
            $($(
                #[doc = concat!("See [`", stringify!($Trait), "::", stringify!($name), "`].")]
                pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    self.$part().$name($($arg),*).await
                }
            )*)*
        }
    };
}

forward! {
    meter_store: MeterStore {
        fn upsert_meters(&self, meters: &[Meter]) -> Result<u64>;
        fn get_meter(&self, id: &MeterId) -> Result<Option<Meter>>;
        fn list_meters(&self, after: Option<&MeterId>, limit: u32) -> Result<Vec<Meter>>;
        fn all_meters(&self) -> Result<Vec<Meter>>;
    }
    reading_store: ReadingStore {
        fn insert_batch(&self, rows: &[(Reading, ReadingFlags)], received_at: Timestamp) -> Result<InsertOutcome>;
        fn insert_readings(&self, readings: &[Reading]) -> Result<InsertOutcome>;
        fn readings(&self, meter: &MeterId, from: Option<Timestamp>, to: Option<Timestamp>, limit: u32) -> Result<Vec<Reading>>;
        fn readings_flagged(&self, meter: &MeterId, from: Option<Timestamp>, to: Option<Timestamp>, limit: u32) -> Result<Vec<(Reading, ReadingFlags)>>;
        fn latest_readings(&self, meters: &[MeterId]) -> Result<HashMap<MeterId, (Timestamp, f64)>>;
        fn hourly(&self, meter: &MeterId, from: Option<Timestamp>, to: Option<Timestamp>) -> Result<Vec<HourlyRow>>;
        fn drop_raw_readings_before(&self, before: Timestamp) -> Result<u64>;
        fn list_conflicts(&self, limit: u32) -> Result<Vec<ReadingConflict>>;
        fn count_conflicts(&self) -> Result<i64>;
        fn count_readings(&self) -> Result<i64>;
        fn readings_since(&self, from: Timestamp, after: Option<(Timestamp, &MeterId)>, limit: u32) -> Result<Vec<Reading>>;
        fn insert_events(&self, events: &[MeterEvent]) -> Result<u64>;
        fn events_since(&self, from: Timestamp, limit: u32) -> Result<Vec<MeterEvent>>;
        fn meter_events(&self, meter: &MeterId, limit: u32) -> Result<Vec<MeterEvent>>;
    }
    dead_letter_store: DeadLetterStore {
        fn dead_letter(&self, dl: &NewDeadLetter) -> Result<i64>;
        fn list_dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>>;
        fn count_dead_letters(&self) -> Result<i64>;
    }
    alert_store: AlertStore {
        fn record_finding(&self, f: &Finding) -> Result<(Alert, bool)>;
        fn get_alert(&self, id: i64) -> Result<Option<Alert>>;
        fn list_alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>>;
        fn set_alert_status(&self, id: i64, from: AlertStatus, to: AlertStatus, reason: Option<&str>, work_order_id: Option<i64>) -> Result<Alert>;
        fn count_alerts_by_status(&self) -> Result<Vec<(AlertStatus, i64)>>;
        fn set_outcome_for_order(&self, order_id: i64, outcome: AlertOutcome, at: Timestamp) -> Result<u64>;
        fn outcome_stats(&self) -> Result<Vec<OutcomeStat>>;
        fn alerts_of_order(&self, order_id: i64) -> Result<Vec<Alert>>;
        fn resolve_quiet_alerts(&self, seen_before: Timestamp, reason: &str) -> Result<Vec<Alert>>;
        fn resolve_quiet_alerts_in(&self, district: &DistrictId, seen_before: Timestamp, reason: &str) -> Result<Vec<Alert>>;
    }
    detector_state_store: DetectorStateStore {
        fn save_detector_state(&self, rows: &[(String, Vec<u8>)]) -> Result<()>;
        fn load_detector_state(&self) -> Result<Vec<(String, Vec<u8>)>>;
    }
    device_credential_store: DeviceCredentialStore {
        fn put_device_credential(&self, username: &str, kind: DeviceKind, secret_hash: &str, now: Timestamp) -> Result<()>;
        fn revoke_device_credential(&self, username: &str, now: Timestamp) -> Result<bool>;
        fn device_credentials(&self) -> Result<Vec<DeviceCredential>>;
    }
    work_order_store: WorkOrderStore {
        fn upsert_crews(&self, crews: &[Crew]) -> Result<u64>;
        fn list_crews(&self) -> Result<Vec<CrewRow>>;
        fn get_crew(&self, id: &CrewId) -> Result<Option<CrewRow>>;
        fn set_crew_position(&self, id: &CrewId, at: GeoPoint, when: Timestamp) -> Result<()>;
        fn set_crew_last_job_place(&self, id: &CrewId, place: GeoPoint) -> Result<()>;
        fn create_work_order(&self, wo: &NewWorkOrder) -> Result<WorkOrder>;
        fn get_work_order(&self, id: i64) -> Result<Option<WorkOrder>>;
        fn list_work_orders(&self, q: &WorkOrderQuery) -> Result<Vec<WorkOrder>>;
        fn apply_transition(&self, id: i64, rec: &TransitionRecord, change: &OrderChange) -> Result<WorkOrder>;
        fn work_order_history(&self, id: i64) -> Result<Vec<TransitionRecord>>;
        fn jobs_for_crew(&self, crew: &CrewId) -> Result<Vec<WorkOrder>>;
        fn active_work_orders(&self) -> Result<Vec<WorkOrder>>;
        fn orders_awaiting_acceptance(&self, assigned_before: Timestamp) -> Result<Vec<WorkOrder>>;
        fn orders_due_before(&self, t: Timestamp) -> Result<Vec<WorkOrder>>;
        fn mark_breached(&self, order_id: i64, at: Timestamp) -> Result<bool>;
        fn count_breached(&self) -> Result<i64>;
        fn set_work_order_priority(&self, order_id: i64, priority: Priority, due_at: Option<Timestamp>) -> Result<WorkOrder>;
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

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

/// A URL without its password, for messages: `postgres://u:***@h/db`.
pub fn redact(url: &str) -> String {
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
}
