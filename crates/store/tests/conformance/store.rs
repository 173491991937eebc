//! Opening, closing and pinging the store; test databases.

use crate::support::*;

conformance!(
    case_ping_and_empty_store,
    case_migrations_apply_without_timescale,
);

async fn case_ping_and_empty_store(store: &Store) {
    store.ping().await.unwrap();
    assert_eq!(store.count_readings().await.unwrap(), 0);
    assert_eq!(store.count_dead_letters().await.unwrap(), 0);
    assert!(store.all_meters().await.unwrap().is_empty());
    assert!(store.list_crews().await.unwrap().is_empty());
    assert!(store.get_alert(1).await.unwrap().is_none());
    assert!(store.get_work_order(1).await.unwrap().is_none());
    assert!(store.work_order_history(1).await.unwrap().is_empty());
    let counts = store.count_alerts_by_status().await.unwrap();
    assert_eq!(counts.len(), AlertStatus::ALL.len());
    assert!(counts.iter().all(|(_, n)| *n == 0));
    // Empty batches are fine and touch nothing.
    assert_eq!(store.upsert_meters(&[]).await.unwrap(), 0);
    assert_eq!(
        store.insert_readings(&[]).await.unwrap(),
        InsertOutcome::default()
    );
    assert_eq!(store.insert_events(&[]).await.unwrap(), 0);
    assert_eq!(store.upsert_crews(&[]).await.unwrap(), 0);
}

/// The highest version among a backend's migrations.
fn latest(migrator: &sqlx::migrate::Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap()
}

async fn case_migrations_apply_without_timescale(store: &Store) {
    // Connecting applied every migration; 0003 (PostgreSQL only) is a no-op without the
    // extension, and SQLite has no 0003.
    match store {
        Store::Sqlite(p) => {
            assert!(!store.has_timescale());
            let v: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
                .fetch_one(p)
                .await
                .unwrap();
            assert_eq!(v, latest(&sqlx::migrate!("./migrations/sqlite")));
        }
        Store::Postgres(p) => {
            let pool = p.pool();
            let v: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(v, latest(&sqlx::migrate!("./migrations/postgres")));
            let available: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_available_extensions
                                WHERE name = 'timescaledb')",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            let installed: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            if !available {
                assert!(!installed);
                assert!(!store.has_timescale());
            } else {
                println!(
                    "timescaledb available: has_timescale = {}",
                    store.has_timescale()
                );
            }
            // The plain-PostgreSQL schema of 0002 is there either way.
            let brin: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = 'readings_t_brin')",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            assert!(brin);
        }
    }
    store.ping().await.unwrap();
}

// ---- backend-specific checks ----

#[tokio::test]
async fn sqlite_file_persists_across_reconnects() {
    let dir = std::env::temp_dir().join(format!("leakwatch-store-{}", unique_suffix()));
    let url = format!("sqlite://{}/a/b/lw.db", dir.display());
    let store = Store::connect(&url).await.unwrap();
    store.upsert_meters(&[meter("M1", "D1")]).await.unwrap();
    store
        .insert_readings(&[reading("M1", 0, 1.0)])
        .await
        .unwrap();
    store.close().await;
    assert!(store.ping().await.is_err(), "a closed store refuses calls");

    // Migrations are applied once; data is still there.
    let again = Store::connect(&url).await.unwrap();
    assert_eq!(again.count_readings().await.unwrap(), 1);
    assert!(again.get_meter(&mid("M1")).await.unwrap().is_some());
    let mode: String = match &again {
        Store::Sqlite(p) => sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(p)
            .await
            .unwrap(),
        Store::Postgres(_) => unreachable!(),
    };
    assert_eq!(mode, "wal");
    again.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn memory_stores_are_separate() {
    let a = Store::connect("sqlite::memory:").await.unwrap();
    let b = Store::connect("sqlite::memory:").await.unwrap();
    a.upsert_meters(&[meter("M1", "D1")]).await.unwrap();
    assert_eq!(a.all_meters().await.unwrap().len(), 1);
    assert!(b.all_meters().await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_sqlite_urls_are_refused() {
    assert!(matches!(
        Store::connect("sqlite://").await,
        Err(StoreError::BadUrl(_))
    ));
    assert!(matches!(
        Store::connect("sqlite://x.db?mode=bogus").await,
        Err(StoreError::BadUrl(_))
    ));
}

#[tokio::test]
async fn unreachable_postgres_is_retryable() {
    // Nothing listens on port 1 of the loopback address.
    let err = Store::connect("postgres://u@127.0.0.1:1/db")
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn postgres_test_databases_are_dropped() {
    let Some(admin) = required_env(PG_ENV) else {
        return;
    };
    let url = fresh_pg_database(&admin).await.unwrap();
    let name = url.rsplit('/').next().unwrap().to_owned();
    let store = Store::connect(&url).await.unwrap();
    store.ping().await.unwrap();
    // Dropped even while the store still holds connections.
    drop_pg_database(&admin, &url).await;
    let Store::Postgres(_) = &store else {
        unreachable!()
    };
    let admin_store = sqlx::PgPool::connect(&admin).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&admin_store)
        .await
        .unwrap();
    assert_eq!(left, 0);
    admin_store.close().await;
    // Names that are not ours are never dropped.
    drop_pg_database(&admin, &admin).await;
    let still: i64 = {
        let p = sqlx::PgPool::connect(&admin).await.unwrap();
        let n = sqlx::query_scalar("SELECT count(*) FROM pg_database")
            .fetch_one(&p)
            .await
            .unwrap();
        p.close().await;
        n
    };
    assert!(still > 0);
}
