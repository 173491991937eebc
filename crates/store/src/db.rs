//! The dialect layer: one SQL text and one row mapping for both backends where they
//! agree.
//!
//! Statements are written once, in PostgreSQL's dialect, with `$n` placeholders (which
//! SQLite also reads). For SQLite the text is translated once, on first use ([`Stmt`]):
//!
//! * casts (`$1::text`, `$3::timestamptz`) are dropped (PostgreSQL needs them to type a
//!   NULL parameter; SQLite has no use for them);
//! * `x = ANY($n)` becomes `x IN (SELECT value FROM json_each($n))`: a list is bound as a
//!   `TEXT[]` on PostgreSQL and as a JSON array on SQLite ([`Arg::TextList`]);
//! * the scalar `GREATEST(..)`/`LEAST(..)` become SQLite's `MAX(..)`/`MIN(..)`.
//!
//! Values are bound as [`Arg`]s and read from a [`Row`], which know each backend's
//! representation: times are `TIMESTAMPTZ` on PostgreSQL and epoch milliseconds on
//! SQLite, JSON is `JSONB` or `TEXT`, text lists `TEXT[]` or a JSON array. What really
//! differs (binary `COPY`, `BEGIN IMMEDIATE`, `UNNEST` bulk writes, hour arithmetic)
//! stays in `pg.rs` and `sqlite.rs`.

use crate::{Result, Store, StoreError};
use leakwatch_core::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row as _;
use sqlx::postgres::{PgConnection, PgPool, PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnection, SqlitePool, SqliteRow};
use sqlx::types::Json;
use std::sync::OnceLock;

/// One statement, in PostgreSQL's dialect, with its SQLite translation made on first
/// use. Made by `sql!`.
pub(crate) struct Stmt {
    pg: &'static str,
    sqlite: OnceLock<String>,
}

impl Stmt {
    pub(crate) const fn new(pg: &'static str) -> Self {
        Stmt {
            pg,
            sqlite: OnceLock::new(),
        }
    }

    fn pg(&'static self) -> &'static str {
        self.pg
    }

    fn sqlite(&'static self) -> &'static str {
        self.sqlite.get_or_init(|| to_sqlite(self.pg))
    }
}

/// A `&'static Stmt` from string literals (concatenated), written once for both
/// backends.
macro_rules! sql {
    ($($part:expr),+ $(,)?) => {{
        static STMT: $crate::db::Stmt = $crate::db::Stmt::new(concat!($($part),+));
        &STMT
    }};
}

/// A `Vec<Arg>` from values that convert into [`Arg`].
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        vec![$($crate::db::Arg::from($arg)),*]
    };
}

pub(crate) use {args, sql};

/// PostgreSQL's SQL as SQLite reads it (see the module documentation).
fn to_sqlite(pg: &str) -> String {
    let mut s = pg.to_owned();
    // `= ANY($n)` first, while the placeholder is intact.
    while let Some(at) = s.find("= ANY($") {
        let rest = &s[at + "= ANY(".len()..];
        let end = rest.find(')').expect("= ANY($n) closes");
        let param = rest[..end]
            .split("::")
            .next()
            .unwrap_or_default()
            .to_owned();
        let tail = rest[end + 1..].to_owned();
        s.truncate(at);
        s.push_str("IN (SELECT value FROM json_each(");
        s.push_str(&param);
        s.push_str("))");
        s.push_str(&tail);
    }
    let s = s.replace("GREATEST(", "MAX(").replace("LEAST(", "MIN(");
    // Casts: `::` followed by a type name (letters, digits, `_`, and `[]`).
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(at) = rest.find("::") {
        out.push_str(&rest[..at]);
        rest = rest[at + 2..].trim_start_matches(|c: char| {
            c.is_ascii_alphanumeric() || c == '_' || c == '[' || c == ']'
        });
    }
    out.push_str(rest);
    out
}

/// A value bound to a statement.
#[derive(Debug, Clone)]
pub(crate) enum Arg<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Float(Option<f64>),
    Bool(bool),
    /// `TIMESTAMPTZ` on PostgreSQL, epoch milliseconds on SQLite.
    Time(Option<Timestamp>),
    /// `JSONB` on PostgreSQL, `TEXT` on SQLite.
    Json(Option<serde_json::Value>),
    Bytes(&'a [u8]),
    /// `TEXT[]` on PostgreSQL, a JSON array (text) on SQLite: for `= ANY($n)` and for
    /// list columns (crews' skills).
    TextList(Vec<String>),
}

impl Arg<'_> {
    /// A value as JSON (`None` for NULL).
    pub(crate) fn json<T: Serialize>(v: Option<&T>) -> Result<Arg<'static>> {
        v.map(serde_json::to_value)
            .transpose()
            .map(Arg::Json)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}
impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}
impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}
impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::Text(v.as_deref())
    }
}
impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<u32> for Arg<'_> {
    fn from(v: u32) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}
impl From<f64> for Arg<'_> {
    fn from(v: f64) -> Self {
        Arg::Float(Some(v))
    }
}
impl From<Option<f64>> for Arg<'_> {
    fn from(v: Option<f64>) -> Self {
        Arg::Float(v)
    }
}
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
impl From<Timestamp> for Arg<'_> {
    fn from(v: Timestamp) -> Self {
        Arg::Time(Some(v))
    }
}
impl From<Option<Timestamp>> for Arg<'_> {
    fn from(v: Option<Timestamp>) -> Self {
        Arg::Time(v)
    }
}
impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Bytes(v)
    }
}
impl<'a> From<&'a Vec<u8>> for Arg<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Arg::Bytes(v)
    }
}
impl From<Vec<String>> for Arg<'_> {
    fn from(v: Vec<String>) -> Self {
        Arg::TextList(v)
    }
}

/// Epoch milliseconds, SQLite's time representation.
pub(crate) fn ms(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

/// A time from SQLite's epoch milliseconds.
pub(crate) fn from_ms(v: i64) -> Result<Timestamp> {
    chrono::DateTime::from_timestamp_millis(v)
        .ok_or_else(|| StoreError::Corrupt(format!("stored time {v} ms is out of range")))
}

/// A list of strings as a JSON array (SQLite's form of a list).
pub(crate) fn json_list(items: &[String]) -> String {
    serde_json::Value::from(items).to_string()
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;
type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>;

fn pg_query<'q>(stmt: &'static Stmt, args: Vec<Arg<'_>>) -> PgQuery<'q> {
    let mut q = sqlx::query(stmt.pg());
    for a in args {
        q = match a {
            Arg::Text(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::Float(v) => q.bind(v),
            Arg::Bool(v) => q.bind(v),
            Arg::Time(v) => q.bind(v),
            Arg::Json(v) => q.bind(v.map(Json)),
            Arg::Bytes(v) => q.bind(v),
            Arg::TextList(v) => q.bind(v),
        };
    }
    q
}

fn sqlite_query<'q>(stmt: &'static Stmt, args: Vec<Arg<'_>>) -> SqliteQuery<'q> {
    let mut q = sqlx::query(stmt.sqlite());
    for a in args {
        q = match a {
            Arg::Text(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::Float(v) => q.bind(v),
            Arg::Bool(v) => q.bind(v),
            Arg::Time(v) => q.bind(v.map(ms)),
            Arg::Json(v) => q.bind(v.map(Json)),
            Arg::Bytes(v) => q.bind(v),
            Arg::TextList(v) => q.bind(json_list(&v)),
        };
    }
    q
}

/// Where a statement runs: a pool or a connection (in a transaction) of either backend.
pub(crate) enum Exec<'a> {
    PgPool(&'a PgPool),
    Pg(&'a mut PgConnection),
    SqlitePool(&'a SqlitePool),
    Sqlite(&'a mut SqliteConnection),
}

/// Runs `$call` (`fetch_all(..)` etc.) on the statement bound for the executor's backend.
macro_rules! on_backend {
    ($exec:expr, $stmt:expr, $args:expr, |$q:ident, $e:ident| $body:expr) => {
        match $exec {
            Exec::PgPool($e) => {
                let $q = pg_query($stmt, $args);
                $body
            }
            Exec::Pg($e) => {
                let $q = pg_query($stmt, $args);
                $body
            }
            Exec::SqlitePool($e) => {
                let $q = sqlite_query($stmt, $args);
                $body
            }
            Exec::Sqlite($e) => {
                let $q = sqlite_query($stmt, $args);
                $body
            }
        }
    };
}

impl Exec<'_> {
    /// The same executor for one more statement (a connection is borrowed again).
    pub(crate) fn reborrow(&mut self) -> Exec<'_> {
        match self {
            Exec::PgPool(p) => Exec::PgPool(p),
            Exec::Pg(c) => Exec::Pg(c),
            Exec::SqlitePool(p) => Exec::SqlitePool(p),
            Exec::Sqlite(c) => Exec::Sqlite(c),
        }
    }

    /// Every row.
    pub(crate) async fn fetch_all(
        self,
        stmt: &'static Stmt,
        args: Vec<Arg<'_>>,
    ) -> Result<Vec<Row>> {
        on_backend!(self, stmt, args, |q, e| Ok(q
            .fetch_all(e)
            .await?
            .into_iter()
            .map(Row::from)
            .collect()))
    }

    /// The first row, if any.
    pub(crate) async fn fetch_optional(
        self,
        stmt: &'static Stmt,
        args: Vec<Arg<'_>>,
    ) -> Result<Option<Row>> {
        on_backend!(self, stmt, args, |q, e| Ok(q
            .fetch_optional(e)
            .await?
            .map(Row::from)))
    }

    /// The first row; none is [`sqlx::Error::RowNotFound`].
    pub(crate) async fn fetch_one(self, stmt: &'static Stmt, args: Vec<Arg<'_>>) -> Result<Row> {
        on_backend!(self, stmt, args, |q, e| Ok(Row::from(
            q.fetch_one(e).await?
        )))
    }

    /// The number of rows affected.
    pub(crate) async fn execute(self, stmt: &'static Stmt, args: Vec<Arg<'_>>) -> Result<u64> {
        on_backend!(self, stmt, args, |q, e| Ok(q
            .execute(e)
            .await?
            .rows_affected()))
    }

    /// Like [`Exec::fetch_optional`], returning the raw sqlx error so the caller can
    /// map constraint violations.
    pub(crate) async fn try_fetch_optional(
        self,
        stmt: &'static Stmt,
        args: Vec<Arg<'_>>,
    ) -> std::result::Result<Option<Row>, sqlx::Error> {
        on_backend!(self, stmt, args, |q, e| Ok(q
            .fetch_optional(e)
            .await?
            .map(Row::from)))
    }
}

/// A write transaction of either backend: PostgreSQL's `BEGIN`, SQLite's
/// `BEGIN IMMEDIATE` (so a transaction never has to upgrade a read lock, which WAL mode
/// would refuse with `SQLITE_BUSY` instead of waiting).
pub(crate) enum Tx {
    Pg(sqlx::Transaction<'static, Postgres>),
    Sqlite(sqlx::Transaction<'static, Sqlite>),
}

impl Tx {
    pub(crate) async fn begin(store: &Store) -> Result<Tx> {
        Ok(match store {
            Store::Postgres(p) => Tx::Pg(p.pool.begin().await?),
            Store::Sqlite(p) => Tx::Sqlite(p.begin_with(crate::sqlite::BEGIN_WRITE).await?),
        })
    }

    pub(crate) fn exec(&mut self) -> Exec<'_> {
        match self {
            Tx::Pg(t) => Exec::Pg(t),
            Tx::Sqlite(t) => Exec::Sqlite(t),
        }
    }

    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            Tx::Pg(t) => t.commit().await?,
            Tx::Sqlite(t) => t.commit().await?,
        }
        Ok(())
    }
}

impl Store {
    /// Begins a write transaction ([`Tx`]).
    pub(crate) async fn begin(&self) -> Result<Tx> {
        Tx::begin(self).await
    }

    /// Runs a statement on the pool.
    pub(crate) fn exec(&self) -> Exec<'_> {
        match self {
            Store::Postgres(p) => Exec::PgPool(&p.pool),
            Store::Sqlite(p) => Exec::SqlitePool(p),
        }
    }
}

/// A result row of either backend, read by column name.
pub(crate) enum Row {
    Pg(PgRow),
    Sqlite(SqliteRow),
}

impl From<PgRow> for Row {
    fn from(r: PgRow) -> Self {
        Row::Pg(r)
    }
}

impl From<SqliteRow> for Row {
    fn from(r: SqliteRow) -> Self {
        Row::Sqlite(r)
    }
}

/// Reads a column whose type is the same on both backends.
macro_rules! same {
    ($row:expr, $ty:ty, $col:expr) => {
        match $row {
            Row::Pg(r) => r.try_get::<$ty, _>($col)?,
            Row::Sqlite(r) => r.try_get::<$ty, _>($col)?,
        }
    };
}

impl Row {
    pub(crate) fn text(&self, col: &str) -> Result<String> {
        Ok(same!(self, String, col))
    }

    pub(crate) fn opt_text(&self, col: &str) -> Result<Option<String>> {
        Ok(same!(self, Option<String>, col))
    }

    pub(crate) fn float(&self, col: &str) -> Result<f64> {
        Ok(same!(self, f64, col))
    }

    pub(crate) fn opt_float(&self, col: &str) -> Result<Option<f64>> {
        Ok(same!(self, Option<f64>, col))
    }

    /// An integer column (PostgreSQL `INT4` or `INT8`).
    pub(crate) fn int(&self, col: &str) -> Result<i64> {
        Ok(match self {
            Row::Pg(r) => match r.try_get::<i64, _>(col) {
                Err(sqlx::Error::ColumnDecode { .. }) => i64::from(r.try_get::<i32, _>(col)?),
                v => v?,
            },
            Row::Sqlite(r) => r.try_get(col)?,
        })
    }

    pub(crate) fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        Ok(match self {
            Row::Pg(r) => match r.try_get::<Option<i64>, _>(col) {
                Err(sqlx::Error::ColumnDecode { .. }) => {
                    r.try_get::<Option<i32>, _>(col)?.map(i64::from)
                }
                v => v?,
            },
            Row::Sqlite(r) => r.try_get(col)?,
        })
    }

    pub(crate) fn bool(&self, col: &str) -> Result<bool> {
        Ok(same!(self, bool, col))
    }

    pub(crate) fn bytes(&self, col: &str) -> Result<Vec<u8>> {
        Ok(same!(self, Vec<u8>, col))
    }

    pub(crate) fn time(&self, col: &str) -> Result<Timestamp> {
        match self {
            Row::Pg(r) => Ok(r.try_get(col)?),
            Row::Sqlite(r) => from_ms(r.try_get(col)?),
        }
    }

    pub(crate) fn opt_time(&self, col: &str) -> Result<Option<Timestamp>> {
        match self {
            Row::Pg(r) => Ok(r.try_get(col)?),
            Row::Sqlite(r) => r.try_get::<Option<i64>, _>(col)?.map(from_ms).transpose(),
        }
    }

    pub(crate) fn opt_json<T: DeserializeOwned>(&self, col: &str) -> Result<Option<T>> {
        Ok(same!(self, Option<Json<T>>, col).map(|Json(v)| v))
    }

    pub(crate) fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T> {
        let Json(v) = same!(self, Json<T>, col);
        Ok(v)
    }

    /// A list of text: `TEXT[]` on PostgreSQL, a JSON array on SQLite.
    pub(crate) fn text_list(&self, col: &str) -> Result<Vec<String>> {
        match self {
            Row::Pg(r) => Ok(r.try_get(col)?),
            Row::Sqlite(r) => Ok(r.try_get::<Json<Vec<String>>, _>(col)?.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::to_sqlite;

    #[test]
    fn postgres_sql_translates_to_sqlite() {
        assert_eq!(
            to_sqlite("WHERE ($1::text IS NULL OR id > $1) AND t < $2::timestamptz"),
            "WHERE ($1 IS NULL OR id > $1) AND t < $2"
        );
        assert_eq!(
            to_sqlite("WHERE crew_id = $1 AND NOT (status = ANY($2)) AND s = ANY($3::text[])"),
            "WHERE crew_id = $1 AND NOT (status IN (SELECT value FROM json_each($2))) \
             AND s IN (SELECT value FROM json_each($3))"
        );
        assert_eq!(
            to_sqlite("SET last_seen = GREATEST(a, b), x = LEAST(c, $4::int8)"),
            "SET last_seen = MAX(a, b), x = MIN(c, $4)"
        );
        assert_eq!(
            to_sqlite("COALESCE($10::jsonb, finding)"),
            "COALESCE($10, finding)"
        );
    }
}
