//! Migrations applied over data written by older schemas.

use crate::support::*;

/// Readings stored before migration 0002 are rolled up by it.
async fn check_rollup_backfill(store: &Store) {
    let hours = store.hourly(&mid("M1"), None, None).await.unwrap();
    assert_eq!(
        hours,
        vec![
            hour_row("M1", 0, (at(0, 5), 1.0), (at(0, 50), 3.0), 3),
            hour_row("M1", 1, (at(1, 0), 4.0), (at(1, 0), 4.0), 1),
        ]
    );
    let rows = store
        .readings_flagged(&mid("M1"), None, None, 10)
        .await
        .unwrap();
    assert!(rows.iter().all(|(_, f)| *f == ReadingFlags::default()));
    assert_eq!(
        store.latest_readings(&[mid("M1")]).await.unwrap()[&mid("M1")],
        (at(1, 0), 4.0)
    );
}

const OLD_READINGS: [(i64, i64, f64); 4] = [(0, 20, 2.0), (0, 5, 1.0), (0, 50, 3.0), (1, 0, 4.0)];

#[tokio::test]
async fn sqlite_migration_0002_rolls_up_existing_readings() {
    let dir = std::env::temp_dir().join(format!("leakwatch-store-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/lw.db?mode=rwc", dir.display());
    {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::migrate!("./migrations/sqlite")
            .run_to(1, &pool)
            .await
            .unwrap();
        for (h, m, vol) in OLD_READINGS {
            sqlx::query("INSERT INTO readings (meter_id, t, vol) VALUES ('M1', ?1, ?2)")
                .bind(at(h, m).timestamp_millis())
                .bind(vol)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }
    let store = Store::connect(&url).await.unwrap();
    check_rollup_backfill(&store).await;
    store.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn postgres_migration_0002_rolls_up_existing_readings() {
    let Some(admin) = required_env(PG_ENV) else {
        return;
    };
    let url = fresh_pg_database(&admin).await.unwrap();
    let result = async {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::migrate!("./migrations/postgres")
            .run_to(1, &pool)
            .await
            .unwrap();
        for (h, m, vol) in OLD_READINGS {
            sqlx::query("INSERT INTO readings (meter_id, t, vol) VALUES ('M1', $1, $2)")
                .bind(at(h, m))
                .bind(vol)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
        let store = Store::connect(&url).await.unwrap();
        let out = tokio::spawn({
            let store = store.clone();
            async move { check_rollup_backfill(&store).await }
        })
        .await;
        store.close().await;
        out
    }
    .await;
    drop_pg_database(&admin, &url).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A database as the code before migration 0004 left it: `readings_hourly` rolled up
/// every reading at insert time, also those still stored. Hour 0 lost its first reading
/// to retention, hour 1 is whole, hour 2 was dropped entirely. Rows of (hour, minute,
/// vol, still stored).
const PRE_0004_READINGS: [(i64, i64, f64, bool); 5] = [
    (0, 5, 1.0, false),
    (0, 20, 2.0, true),
    (0, 50, 3.0, true),
    (1, 0, 4.0, true),
    (2, 10, 6.0, false),
];

/// A minute of an hour, and the volume read then.
type AtVol = (i64, f64);

/// Its `readings_hourly`: (hour, first, last, n).
const PRE_0004_HOURS: [(i64, AtVol, AtVol, i64); 3] = [
    (0, (5, 1.0), (50, 3.0), 3),
    (1, (0, 4.0), (0, 4.0), 1),
    (2, (10, 6.0), (10, 6.0), 1),
];

/// After 0004, nothing is counted twice and retention carries on from there.
async fn check_rollup_archive_migration(store: &Store) {
    let expected = vec![
        hour_row("M1", 0, (at(0, 5), 1.0), (at(0, 50), 3.0), 3),
        hour_row("M1", 1, (at(1, 0), 4.0), (at(1, 0), 4.0), 1),
        hour_row("M1", 2, (at(2, 10), 6.0), (at(2, 10), 6.0), 1),
    ];
    assert_eq!(
        store.hourly(&mid("M1"), None, None).await.unwrap(),
        expected
    );
    // Hour 1 was whole in `readings`: its rollup row went.
    assert_eq!(archived_hours(store).await, 2);
    assert_eq!(
        store.latest_readings(&[mid("M1")]).await.unwrap()[&mid("M1")],
        (at(2, 10), 6.0)
    );
    assert_eq!(store.drop_raw_readings_before(at(3, 0)).await.unwrap(), 3);
    assert_eq!(archived_hours(store).await, 3);
    assert_eq!(
        store.hourly(&mid("M1"), None, None).await.unwrap(),
        expected
    );
}

#[tokio::test]
async fn sqlite_migration_0004_keeps_only_dropped_hours() {
    let dir = std::env::temp_dir().join(format!("leakwatch-store-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/lw.db?mode=rwc", dir.display());
    {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::migrate!("./migrations/sqlite")
            .run_to(2, &pool)
            .await
            .unwrap();
        for (h, m, vol, stored) in PRE_0004_READINGS {
            if stored {
                sqlx::query("INSERT INTO readings (meter_id, t, vol) VALUES ('M1', ?1, ?2)")
                    .bind(at(h, m).timestamp_millis())
                    .bind(vol)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        }
        for (h, first, last, n) in PRE_0004_HOURS {
            sqlx::query("INSERT INTO readings_hourly VALUES ('M1', ?1, ?2, ?3, ?4, ?5, ?6)")
                .bind(at(h, 0).timestamp_millis())
                .bind(at(h, first.0).timestamp_millis())
                .bind(first.1)
                .bind(at(h, last.0).timestamp_millis())
                .bind(last.1)
                .bind(n)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }
    let store = Store::connect(&url).await.unwrap();
    check_rollup_archive_migration(&store).await;
    store.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn postgres_migration_0004_keeps_only_dropped_hours() {
    let Some(admin) = required_env(PG_ENV) else {
        return;
    };
    let url = fresh_pg_database(&admin).await.unwrap();
    let result = async {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::migrate!("./migrations/postgres")
            .run_to(3, &pool)
            .await
            .unwrap();
        for (h, m, vol, stored) in PRE_0004_READINGS {
            if stored {
                sqlx::query("INSERT INTO readings (meter_id, t, vol) VALUES ('M1', $1, $2)")
                    .bind(at(h, m))
                    .bind(vol)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        }
        for (h, first, last, n) in PRE_0004_HOURS {
            sqlx::query("INSERT INTO readings_hourly VALUES ('M1', $1, $2, $3, $4, $5, $6)")
                .bind(at(h, 0))
                .bind(at(h, first.0))
                .bind(first.1)
                .bind(at(h, last.0))
                .bind(last.1)
                .bind(n)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
        let store = Store::connect(&url).await.unwrap();
        let out = tokio::spawn({
            let store = store.clone();
            async move { check_rollup_archive_migration(&store).await }
        })
        .await;
        store.close().await;
        out
    }
    .await;
    drop_pg_database(&admin, &url).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// An order stored before 0006: (id, status, crew, [(to_status, at)] after `create`).
type Pre0006Order = (
    i64,
    &'static str,
    Option<&'static str>,
    &'static [(&'static str, i64)],
);

const PRE_0006_ORDERS: [Pre0006Order; 4] = [
    // Assigned twice: the later assignment counts.
    (
        1,
        "assigned",
        Some("C1"),
        &[("assigned", 10), ("assigned", 20)],
    ),
    // Unassigned since: no assignment time.
    (2, "created", None, &[("assigned", 10), ("created", 30)]),
    // On site, then done: reached when it got there.
    (
        3,
        "completed",
        Some("C1"),
        &[
            ("assigned", 10),
            ("accepted", 20),
            ("en_route", 30),
            ("on_site", 40),
            ("completed", 50),
        ],
    ),
    // Never touched.
    (4, "created", None, &[]),
];

/// After 0006, the assignment and arrival times are filled in from the audit trail.
async fn check_dispatch_migration(store: &Store) {
    let get = |id| async move { store.get_work_order(id).await.unwrap().unwrap() };
    let w = get(1).await;
    assert_eq!((w.assigned_at, w.reached_at), (Some(t(20)), None));
    let w = get(2).await;
    assert_eq!((w.assigned_at, w.reached_at), (None, None));
    let w = get(3).await;
    assert_eq!((w.assigned_at, w.reached_at), (Some(t(10)), Some(t(40))));
    assert_eq!((w.parent_id, w.breached_at, w.finding), (None, None, None));
    let w = get(4).await;
    assert_eq!((w.assigned_at, w.reached_at), (None, None));
    assert_eq!(
        store
            .orders_awaiting_acceptance(t(100))
            .await
            .unwrap()
            .iter()
            .map(|w| w.id)
            .collect::<Vec<_>>(),
        vec![1]
    );
    let history = store.work_order_history(3).await.unwrap();
    assert_eq!(history.len(), 6);
    assert!(history.iter().all(|r| r.position.is_none()));
    let crew = store.get_crew(&cid("C1")).await.unwrap().unwrap();
    assert_eq!((crew.crew.shifts, crew.crew.last_job_place), (None, None));
    assert_eq!(crew.current.map(|c| c.order_id), Some(1));
    let (alert, _) = store
        .record_finding(&finding("M1", 0, Severity::Warning))
        .await
        .unwrap();
    assert_eq!(alert.outcome, None);
}

#[tokio::test]
async fn sqlite_migration_0006_fills_in_order_times() {
    let dir = std::env::temp_dir().join(format!("leakwatch-store-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/lw.db?mode=rwc", dir.display());
    {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::migrate!("./migrations/sqlite")
            .run_to(5, &pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO crews (id, name, home_lat, home_lon) VALUES ('C1', 'C1', 45, 9)")
            .execute(&pool)
            .await
            .unwrap();
        for (id, status, crew, steps) in PRE_0006_ORDERS {
            sqlx::query(
                "INSERT INTO work_orders (id, kind, priority, status, lat, lon, crew_id, summary,
                                          created_at, updated_at)
                 VALUES (?1, 'repair', 'high', ?2, 45, 9, ?3, '', ?4, ?4)",
            )
            .bind(id)
            .bind(status)
            .bind(crew)
            .bind(t(0).timestamp_millis())
            .execute(&pool)
            .await
            .unwrap();
            let mut from = "created";
            for (to, at) in std::iter::once(&("created", 0)).chain(steps.iter()) {
                sqlx::query(
                    "INSERT INTO work_order_transitions
                         (order_id, from_status, to_status, action, actor, at)
                     VALUES (?1, ?2, ?3, 'x', 'test', ?4)",
                )
                .bind(id)
                .bind(from)
                .bind(*to)
                .bind(t(*at).timestamp_millis())
                .execute(&pool)
                .await
                .unwrap();
                from = to;
            }
        }
        pool.close().await;
    }
    let store = Store::connect(&url).await.unwrap();
    check_dispatch_migration(&store).await;
    store.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn postgres_migration_0006_fills_in_order_times() {
    let Some(admin) = required_env(PG_ENV) else {
        return;
    };
    let url = fresh_pg_database(&admin).await.unwrap();
    let result = async {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::migrate!("./migrations/postgres")
            .run_to(5, &pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO crews (id, name, home_lat, home_lon) VALUES ('C1', 'C1', 45, 9)")
            .execute(&pool)
            .await
            .unwrap();
        for (id, status, crew, steps) in PRE_0006_ORDERS {
            sqlx::query(
                "INSERT INTO work_orders (id, kind, priority, status, lat, lon, crew_id, summary,
                                          created_at, updated_at)
                 VALUES ($1, 'repair', 'high', $2, 45, 9, $3, '', $4, $4)",
            )
            .bind(id)
            .bind(status)
            .bind(crew)
            .bind(t(0))
            .execute(&pool)
            .await
            .unwrap();
            let mut from = "created";
            for (to, at) in std::iter::once(&("created", 0)).chain(steps.iter()) {
                sqlx::query(
                    "INSERT INTO work_order_transitions
                         (order_id, from_status, to_status, action, actor, at)
                     VALUES ($1, $2, $3, 'x', 'test', $4)",
                )
                .bind(id)
                .bind(from)
                .bind(*to)
                .bind(t(*at))
                .execute(&pool)
                .await
                .unwrap();
                from = to;
            }
        }
        pool.close().await;
        let store = Store::connect(&url).await.unwrap();
        let out = tokio::spawn({
            let store = store.clone();
            async move { check_dispatch_migration(&store).await }
        })
        .await;
        store.close().await;
        out
    }
    .await;
    drop_pg_database(&admin, &url).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
