//! What every conformance case shares: the runners that give a case a fresh store of
//! each backend, the `conformance!` macro, and builders of domain values.

pub use leakwatch_core::{
    AlertKind, AlertOutcome, AlertStatus, Crew, CrewId, CrewStatus, DistrictId, EventCode,
    Evidence, Finding, GasReading, GeoPoint, Meter, MeterEvent, MeterId, MeterKind, MeterStatus,
    Priority, Reading, Severity, SiteFinding, Timestamp, TransitionRecord, WeeklyShifts,
    WorkOrderKind, WorkOrderStatus,
};
pub use leakwatch_store::testing::{
    PG_ENV, drop_pg_database, fresh_pg_database, required_env, unique_suffix,
};
pub use leakwatch_store::{
    AlertQuery, CurrentOrder, HourlyRow, InsertOutcome, NewDeadLetter, NewWorkOrder, OrderChange,
    OutcomeStat, ReadingFlags, Store, StoreError, WorkOrderQuery,
};
pub use std::future::Future;

pub async fn run_isolated<Fut>(
    store: Store,
    case: impl FnOnce(Store) -> Fut,
) -> std::thread::Result<()>
where
    Fut: Future<Output = ()> + Send + 'static,
{
    // A panicking case must not skip the clean-up: run it as a task and re-raise after.
    let result = tokio::spawn(case(store.clone())).await;
    store.close().await;
    result.map_err(|e| e.into_panic())
}

pub async fn run_sqlite_file<Fut>(case: impl FnOnce(Store) -> Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = std::env::temp_dir().join(format!("leakwatch-store-{}", unique_suffix()));
    // The `db` directory does not exist yet: connect must create it.
    let url = format!("sqlite://{}/db/leakwatch.db", dir.display());
    let store = Store::connect(&url).await.expect("connect to sqlite file");
    assert_eq!(store.backend(), "sqlite");
    let result = run_isolated(store, case).await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

pub async fn run_sqlite_memory<Fut>(case: impl FnOnce(Store) -> Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let store = Store::connect("sqlite::memory:")
        .await
        .expect("connect to sqlite memory");
    if let Err(panic) = run_isolated(store, case).await {
        std::panic::resume_unwind(panic);
    }
}

pub async fn run_postgres<Fut>(case: impl FnOnce(Store) -> Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(admin) = required_env(PG_ENV) else {
        return;
    };
    let url = fresh_pg_database(&admin)
        .await
        .expect("create test database");
    let result = match Store::connect(&url).await {
        Ok(store) => {
            assert_eq!(store.backend(), "postgres");
            run_isolated(store, case).await
        }
        Err(e) => Err(Box::new(format!("connect to {url}: {e}")) as Box<_>),
    };
    drop_pg_database(&admin, &url).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// For each `case_x` of the calling module, a module `case_x` with the tests
/// `sqlite_file`, `sqlite_memory` and `postgres`: every case written once, run on every
/// backend.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_file() {
                $crate::support::run_sqlite_file(|s| async move { super::$case(&s).await }).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_memory() {
                $crate::support::run_sqlite_memory(|s| async move { super::$case(&s).await }).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::support::run_postgres(|s| async move { super::$case(&s).await }).await;
            }
        }
    )*};
}
pub(crate) use conformance;

/// A whole-second time (exact on both backends), `secs` after 2023-11-14.
pub fn t(secs: i64) -> Timestamp {
    chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
}

pub fn mid(s: &str) -> MeterId {
    MeterId::parse(s).unwrap()
}

pub fn did(s: &str) -> DistrictId {
    DistrictId::parse(s).unwrap()
}

pub fn cid(s: &str) -> CrewId {
    CrewId::parse(s).unwrap()
}

pub fn meter(id: &str, district: &str) -> Meter {
    Meter {
        id: mid(id),
        district: did(district),
        kind: MeterKind::Customer,
        location: GeoPoint::new(45.46, 9.19).unwrap(),
        report_every_h: 24,
        status: MeterStatus::Active,
        installed_at: None,
        max_flow_m3h: None,
    }
}

pub fn reading(m: &str, secs: i64, vol: f64) -> Reading {
    Reading {
        meter: mid(m),
        t: t(secs),
        vol,
        temp: None,
        flow_max: None,
        pressure: None,
    }
}

pub fn evidence(observed: f64, at: i64) -> Evidence {
    Evidence {
        rule: "no zero-flow hour in 24 h".into(),
        observed,
        expected: Some(0.0),
        threshold: 0.01,
        unit: "m3/h".into(),
        window_start: t(at - 86_400),
        window_end: t(at),
        explanation: format!("lowest hourly flow {observed} m3/h"),
        known: None,
    }
}

pub fn finding(m: &str, at: i64, severity: Severity) -> Finding {
    Finding {
        kind: AlertKind::ContinuousFlow,
        severity,
        meter_id: Some(mid(m)),
        district_id: Some(did("D1")),
        detected_at: t(at),
        evidence: evidence(0.05, at),
    }
}

pub fn crew(id: &str, on_shift: bool) -> Crew {
    Crew {
        id: cid(id),
        name: format!("Crew {id}"),
        skills: vec!["emergency".into(), "repair".into()],
        home: GeoPoint::new(45.0, 9.0).unwrap(),
        position: None,
        position_at: None,
        last_job_place: None,
        shifts: None,
        on_shift,
    }
}

pub fn new_order(priority: Priority, alert_id: Option<i64>) -> NewWorkOrder {
    NewWorkOrder {
        kind: WorkOrderKind::LeakInvestigation,
        priority,
        alert_id,
        meter_id: Some(mid("M1")),
        district_id: Some(did("D1")),
        location: GeoPoint::new(45.47, 9.2).unwrap(),
        summary: "continuous flow at M1".into(),
        due_at: Some(t(3_600)),
        parent_id: None,
        actor: "alice".into(),
    }
}

pub fn rec(
    id: i64,
    from: WorkOrderStatus,
    to: WorkOrderStatus,
    action: &str,
    at: i64,
    crew: Option<&str>,
) -> TransitionRecord {
    TransitionRecord {
        order_id: id,
        from,
        to,
        action: action.into(),
        actor: "dispatcher".into(),
        at: t(at),
        crew_id: crew.map(cid),
        note: None,
        position: None,
    }
}

/// A change that sets the crew.
pub fn to_crew(c: &str) -> OrderChange {
    OrderChange {
        crew: Some(Some(cid(c))),
        ..Default::default()
    }
}

/// A change of nothing but the status.
pub fn keep() -> OrderChange {
    OrderChange::default()
}

pub fn assert_conflict<T: std::fmt::Debug>(r: leakwatch_store::Result<T>, expected: &str) {
    match r {
        Err(StoreError::Conflict(m)) => assert_eq!(m, expected),
        other => panic!("expected Conflict({expected:?}), got {other:?}"),
    }
}

pub fn assert_not_found<T: std::fmt::Debug>(r: leakwatch_store::Result<T>, expected: &str) {
    match r {
        Err(StoreError::NotFound(m)) => assert_eq!(m, expected),
        other => panic!("expected NotFound({expected:?}), got {other:?}"),
    }
}

// ---- cases ----

pub fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
    use chrono::TimeZone;
    chrono::Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

pub fn leak_finding(class: &str) -> SiteFinding {
    SiteFinding {
        leak_found: true,
        leak_class: Some(class.into()),
        gas_readings: vec![GasReading {
            percent_lel: 12.5,
            place: "kerb box".into(),
        }],
        repaired: false,
        notes: "corroded joint".into(),
    }
}

/// Creates an order and assigns it to `crew` at `t(at)`.
pub async fn assigned_order(store: &Store, priority: Priority, crew: &str, at: i64) -> i64 {
    let id = store
        .create_work_order(&new_order(priority, None))
        .await
        .unwrap()
        .id;
    store
        .apply_transition(
            id,
            &rec(
                id,
                WorkOrderStatus::Created,
                WorkOrderStatus::Assigned,
                "assign",
                at,
                Some(crew),
            ),
            &to_crew(crew),
        )
        .await
        .unwrap();
    id
}

/// Moves an order along `steps` of (from, to, action), all at `t(at)`, crew unchanged.
pub async fn walk(
    store: &Store,
    id: i64,
    at: i64,
    steps: &[(WorkOrderStatus, WorkOrderStatus, &str)],
) {
    for (from, to, action) in steps {
        store
            .apply_transition(id, &rec(id, *from, *to, action, at, None), &keep())
            .await
            .unwrap();
    }
}

/// A finding of `kind` for meter `m`.
pub fn finding_of(kind: AlertKind, m: &str, at: i64) -> Finding {
    Finding {
        kind,
        ..finding(m, at, Severity::Warning)
    }
}

/// A whole-second time `min` minutes into hour `h` (hour 0 starts on a UTC hour).
pub fn at(h: i64, min: i64) -> Timestamp {
    // t(2_800) = 1_700_002_800 s = 472_223 h exactly.
    t(2_800 + h * 3_600 + min * 60)
}

pub fn flagged(m: &str, when: Timestamp, vol: f64, flags: u16) -> (Reading, ReadingFlags) {
    (
        Reading {
            t: when,
            ..reading(m, 0, vol)
        },
        ReadingFlags(flags),
    )
}

/// How many rows `readings_hourly` (the archive of dropped hours) holds.
pub async fn archived_hours(store: &Store) -> i64 {
    let sql = "SELECT count(*) FROM readings_hourly";
    match store {
        Store::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        Store::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p.pool()).await.unwrap(),
    }
}

pub fn hour_row(
    m: &str,
    h: i64,
    first: (Timestamp, f64),
    last: (Timestamp, f64),
    n: i64,
) -> HourlyRow {
    HourlyRow {
        meter_id: mid(m),
        hour: at(h, 0),
        first_t: first.0,
        first_vol: first.1,
        last_t: last.0,
        last_vol: last.1,
        n,
    }
}
