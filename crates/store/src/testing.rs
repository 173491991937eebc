//! Helpers for tests that need a database of their own: a fresh, uniquely named
//! PostgreSQL database (`lw_test_…`) made through an admin URL, a unique name for
//! temporary SQLite files, and the one rule for tests that need a service
//! ([`required_env`]). Used by this crate's conformance suite and benchmark and by other
//! crates' tests; only built with the `testing` feature (never in the service).

use crate::{ReadingFlags, Result, StoreError, redact};
use leakwatch_core::Reading;
use sqlx::Connection;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Environment variable naming the admin URL of a PostgreSQL server for tests, e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub const PG_ENV: &str = "LEAKWATCH_TEST_PG";

/// Prefix of every database [`fresh_pg_database`] creates (and the only kind
/// [`drop_pg_database`] drops).
pub const PG_PREFIX: &str = "lw_test_";

/// Environment variable naming an MQTT broker for tests, e.g. `mqtt://127.0.0.1:1883`.
pub const MQTT_ENV: &str = "LEAKWATCH_TEST_MQTT";

/// Whether the tests run in CI: `CI` is set to anything but empty, `false` or `0`
/// (CI services set `CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The one rule for tests that need a service (a PostgreSQL server at [`PG_ENV`], a
/// broker at [`MQTT_ENV`]): the value of the environment variable `name` when it is set;
/// when it is not, in CI ([`in_ci`]) the test fails (a missing service must not pass as
/// skipped), elsewhere the test is skipped with a printed note (`None`).
pub fn required_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if in_ci() => panic!("{name} is not set: in CI this test must run, not skip"),
        _ => {
            println!("skipped: {name} not set");
            None
        }
    }
}

/// A name unique within this machine for practical purposes: 16 hex digits mixing
/// the time, the process id, a per-process counter and std's random hasher keys.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", h.finish())
}

/// Creates a new, empty database `lw_test_<random>` on the server of `admin_url` and
/// returns a URL for it (the admin URL with the database name replaced). The store's
/// migrations are not applied: [`crate::Store::connect`] does that.
pub async fn fresh_pg_database(admin_url: &str) -> Result<String> {
    let name = format!("{PG_PREFIX}{}", unique_suffix());
    let url = with_database(admin_url, &name)?;
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    // The name is ours ([a-z0-9_]), so it is safe to splice into the statement.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(url)
}

/// Drops the database named in `url` (made by [`fresh_pg_database`]), forcing other
/// sessions off it. Refuses (with a warning) names that do not start with `lw_test_`;
/// failures are logged, not returned, since this is clean-up.
pub async fn drop_pg_database(admin_url: &str, url: &str) {
    let Some(name) = database_name(url) else {
        tracing::warn!(url = %redact(url), "no database name in URL; nothing dropped");
        return;
    };
    if !name.starts_with(PG_PREFIX)
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        tracing::warn!(name, "not a test database; not dropped");
        return;
    }
    let result = async {
        let mut conn = sqlx::PgConnection::connect(admin_url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await?;
        conn.close().await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(name, error = %e, "could not drop test database");
    }
}

/// `COPY`s rows straight into `readings` (binary format, the same encoding the store
/// uses) in one statement, with no duplicate check: the database's own
/// speed for storing readings, as a yardstick for benchmarks. Fails with a unique
/// violation if any (meter, t) is already stored. Returns the number of rows copied.
pub async fn copy_readings(pool: &sqlx::PgPool, rows: &[(Reading, ReadingFlags)]) -> Result<u64> {
    let mut copy =
        sqlx::postgres::PgPoolCopyExt::copy_in_raw(pool, crate::pg::COPY_READINGS).await?;
    copy.send(crate::pg::encode_readings(
        &rows.iter().collect::<Vec<_>>(),
        false,
    ))
    .await?;
    Ok(copy.finish().await?)
}

/// Splits a URL into (everything before the path, path, query-and-fragment).
fn split_url(url: &str) -> Result<(&str, &str, &str)> {
    let scheme_end = url
        .find("://")
        .ok_or_else(|| StoreError::BadUrl(format!("{}: no scheme", redact(url))))?
        + 3;
    let rest = &url[scheme_end..];
    let tail_at = rest.find(['?', '#']).unwrap_or(rest.len());
    let path_at = rest[..tail_at].find('/').unwrap_or(tail_at);
    Ok((
        &url[..scheme_end + path_at],
        &rest[path_at..tail_at],
        &rest[tail_at..],
    ))
}

/// `url` with its database (path) replaced by `name`.
fn with_database(url: &str, name: &str) -> Result<String> {
    let (base, _, tail) = split_url(url)?;
    Ok(format!("{base}/{name}{tail}"))
}

/// The database (path) named in `url`.
fn database_name(url: &str) -> Option<String> {
    let (_, path, _) = split_url(url).ok()?;
    let name = path.trim_start_matches('/');
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced_and_read() {
        let admin = "postgres://postgres@127.0.0.1:5432/postgres";
        assert_eq!(
            with_database(admin, "lw_test_x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/lw_test_x"
        );
        assert_eq!(
            with_database("postgres://u:p@h?sslmode=disable", "d").unwrap(),
            "postgres://u:p@h/d?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql://h:1/a?x=1", "d").unwrap(),
            "postgresql://h:1/d?x=1"
        );
        assert_eq!(database_name("postgres://h/db?x=1").as_deref(), Some("db"));
        assert_eq!(database_name("postgres://h"), None);
        assert!(with_database("nonsense", "d").is_err());
    }

    #[test]
    fn suffixes_differ() {
        let a = unique_suffix();
        let b = unique_suffix();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
    }
}
