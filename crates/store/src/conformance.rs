//! The conformance suite: every case runs against a fresh SQLite file, a fresh SQLite
//! in-memory database and (when `LEAKWATCH_TEST_PG` names an admin URL) a fresh
//! PostgreSQL database, so both backends are held to the same behaviour.

use crate::testing::{PG_ENV, drop_pg_database, fresh_pg_database, unique_suffix};
use crate::{
    AlertQuery, CurrentOrder, HourlyRow, InsertOutcome, NewDeadLetter, NewWorkOrder, OrderChange,
    OutcomeStat, ReadingFlags, Store, StoreError, WorkOrderQuery,
};
use leakwatch_core::{
    AlertKind, AlertOutcome, AlertStatus, Crew, CrewId, CrewStatus, DistrictId, EventCode,
    Evidence, Finding, GasReading, GeoPoint, Meter, MeterEvent, MeterId, MeterKind, MeterStatus,
    Priority, Reading, Severity, SiteFinding, Timestamp, TransitionRecord, WeeklyShifts,
    WorkOrderKind, WorkOrderStatus,
};
use std::future::Future;

// ---- runners ----

async fn run_isolated<Fut>(store: Store, case: impl FnOnce(Store) -> Fut) -> std::thread::Result<()>
where
    Fut: Future<Output = ()> + Send + 'static,
{
    // A panicking case must not skip the clean-up: run it as a task and re-raise after.
    let result = tokio::spawn(case(store.clone())).await;
    store.close().await;
    result.map_err(|e| e.into_panic())
}

async fn run_sqlite_file<Fut>(case: impl FnOnce(Store) -> Fut)
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

async fn run_sqlite_memory<Fut>(case: impl FnOnce(Store) -> Fut)
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

async fn run_postgres<Fut>(case: impl FnOnce(Store) -> Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let Ok(admin) = std::env::var(PG_ENV) else {
        println!("skipped: {PG_ENV} not set");
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

/// For each `case_x`, a module `case_x` with the tests `sqlite_file`, `sqlite_memory`
/// and `postgres`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_file() {
                super::run_sqlite_file(|s| async move { super::$case(&s).await }).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_memory() {
                super::run_sqlite_memory(|s| async move { super::$case(&s).await }).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::run_postgres(|s| async move { super::$case(&s).await }).await;
            }
        }
    )*};
}

conformance!(
    case_ping_and_empty_store,
    case_meters_upsert_get_list,
    case_readings_idempotent,
    case_readings_range_query,
    case_readings_values_round_trip,
    case_events_idempotent,
    case_dead_letters_round_trip,
    case_record_finding_creates_then_updates,
    case_new_alert_after_dismiss_or_resolve,
    case_alert_status_compare_and_set,
    case_list_alerts_filters_and_cursor,
    case_concurrent_findings_make_one_alert,
    case_crews_upsert_list_positions,
    case_crews_active_orders,
    case_work_order_lifecycle,
    case_work_order_conflicts_and_not_found,
    case_jobs_for_crew_ordering,
    case_list_work_orders_filters_and_cursor,
    case_concurrent_transitions_one_wins,
    case_duplicates_and_conflicts,
    case_reading_flags_round_trip,
    case_latest_readings,
    case_hourly_rollup_across_batches,
    case_retention_keeps_the_rollup,
    case_retention_archives_partial_hours_and_late_readings,
    case_meter_installation_and_capacity,
    case_migrations_apply_without_timescale,
    case_detector_state_round_trip,
    case_readings_since_pages_in_time_order,
    case_quiet_alerts_resolve,
    case_quiet_alerts_resolve_per_district,
    case_crew_calendar_and_last_job_place,
    case_crew_current_order,
    case_work_order_parent_and_filters,
    case_transition_times_position_and_finding,
    case_alert_outcomes_and_stats,
    case_orders_awaiting_acceptance,
    case_deadlines_due_and_breached,
    case_set_work_order_priority,
);

async fn case_detector_state_round_trip(store: &Store) {
    assert!(store.load_detector_state().await.unwrap().is_empty());
    store.save_detector_state(&[]).await.unwrap();
    let rows = vec![
        ("meter:M1".to_owned(), vec![1u8, 2, 3]),
        ("engine".to_owned(), vec![]),
        ("district:D1".to_owned(), vec![0u8; 700]),
    ];
    store.save_detector_state(&rows).await.unwrap();
    // Replacing one subject leaves the others.
    store
        .save_detector_state(&[("meter:M1".to_owned(), vec![9u8])])
        .await
        .unwrap();
    let loaded = store.load_detector_state().await.unwrap();
    assert_eq!(
        loaded,
        vec![
            ("district:D1".to_owned(), vec![0u8; 700]),
            ("engine".to_owned(), vec![]),
            ("meter:M1".to_owned(), vec![9u8]),
        ]
    );
}

async fn case_readings_since_pages_in_time_order(store: &Store) {
    let rows = vec![
        reading("M2", 100, 1.0),
        reading("M1", 100, 2.0),
        reading("M1", 50, 1.5),
        reading("M1", 200, 3.0),
        reading("M3", 150, 4.0),
    ];
    store.insert_readings(&rows).await.unwrap();
    let first = store.readings_since(t(100), None, 2).await.unwrap();
    let keys: Vec<_> = first.iter().map(|r| (r.meter.to_string(), r.t)).collect();
    assert_eq!(keys, vec![("M1".into(), t(100)), ("M2".into(), t(100))]);
    let last = first.last().unwrap();
    let rest = store
        .readings_since(t(100), Some((last.t, &last.meter)), 10)
        .await
        .unwrap();
    let keys: Vec<_> = rest.iter().map(|r| (r.meter.to_string(), r.t)).collect();
    assert_eq!(keys, vec![("M3".into(), t(150)), ("M1".into(), t(200))]);
    assert_eq!(rest[1].vol, 3.0);
}

async fn case_quiet_alerts_resolve_per_district(store: &Store) {
    let (d1, _) = store
        .record_finding(&finding("M1", 1000, Severity::Warning))
        .await
        .unwrap();
    let (d2, _) = store
        .record_finding(&Finding {
            district_id: Some(did("D2")),
            ..finding("M2", 1000, Severity::Warning)
        })
        .await
        .unwrap();
    let resolved = store
        .resolve_quiet_alerts_in(&did("D2"), t(5000), "clear in D2")
        .await
        .unwrap();
    assert_eq!(resolved.iter().map(|a| a.id).collect::<Vec<_>>(), [d2.id]);
    let d1 = store.get_alert(d1.id).await.unwrap().unwrap();
    assert_eq!(d1.status, AlertStatus::Open);
}

async fn case_quiet_alerts_resolve(store: &Store) {
    let (quiet, _) = store
        .record_finding(&finding("M1", 1000, Severity::Warning))
        .await
        .unwrap();
    let (recent, _) = store
        .record_finding(&finding("M2", 9000, Severity::Warning))
        .await
        .unwrap();
    let (escalated, _) = store
        .record_finding(&finding("M3", 1000, Severity::Warning))
        .await
        .unwrap();
    store
        .set_alert_status(
            escalated.id,
            AlertStatus::Open,
            AlertStatus::Escalated,
            None,
            None,
        )
        .await
        .unwrap();
    let resolved = store
        .resolve_quiet_alerts(t(5000), "condition clear")
        .await
        .unwrap();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].id, quiet.id);
    assert_eq!(resolved[0].status, AlertStatus::Resolved);
    assert_eq!(
        resolved[0].status_reason.as_deref(),
        Some("condition clear")
    );
    let recent = store.get_alert(recent.id).await.unwrap().unwrap();
    assert_eq!(recent.status, AlertStatus::Open);
    let escalated = store.get_alert(escalated.id).await.unwrap().unwrap();
    assert_eq!(escalated.status, AlertStatus::Escalated);
    // The condition again: a new alert.
    let (again, created) = store
        .record_finding(&finding("M1", 20000, Severity::Warning))
        .await
        .unwrap();
    assert!(created);
    assert_ne!(again.id, quiet.id);
}

// ---- fixtures ----

/// A whole-second time (exact on both backends), `secs` after 2023-11-14.
fn t(secs: i64) -> Timestamp {
    chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
}

fn mid(s: &str) -> MeterId {
    MeterId::parse(s).unwrap()
}

fn did(s: &str) -> DistrictId {
    DistrictId::parse(s).unwrap()
}

fn cid(s: &str) -> CrewId {
    CrewId::parse(s).unwrap()
}

fn meter(id: &str, district: &str) -> Meter {
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

fn reading(m: &str, secs: i64, vol: f64) -> Reading {
    Reading {
        meter: mid(m),
        t: t(secs),
        vol,
        temp: None,
        flow_max: None,
        pressure: None,
    }
}

fn evidence(observed: f64, at: i64) -> Evidence {
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

fn finding(m: &str, at: i64, severity: Severity) -> Finding {
    Finding {
        kind: AlertKind::ContinuousFlow,
        severity,
        meter_id: Some(mid(m)),
        district_id: Some(did("D1")),
        detected_at: t(at),
        evidence: evidence(0.05, at),
    }
}

fn crew(id: &str, on_shift: bool) -> Crew {
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

fn new_order(priority: Priority, alert_id: Option<i64>) -> NewWorkOrder {
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

fn rec(
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
fn to_crew(c: &str) -> OrderChange {
    OrderChange {
        crew: Some(Some(cid(c))),
        ..Default::default()
    }
}

/// A change of nothing but the status.
fn keep() -> OrderChange {
    OrderChange::default()
}

fn assert_conflict<T: std::fmt::Debug>(r: crate::Result<T>, expected: &str) {
    match r {
        Err(StoreError::Conflict(m)) => assert_eq!(m, expected),
        other => panic!("expected Conflict({expected:?}), got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(r: crate::Result<T>, expected: &str) {
    match r {
        Err(StoreError::NotFound(m)) => assert_eq!(m, expected),
        other => panic!("expected NotFound({expected:?}), got {other:?}"),
    }
}

// ---- cases ----

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

async fn case_meters_upsert_get_list(store: &Store) {
    // Ids chosen so that bytewise order differs from a locale-aware one.
    let ids = ["m-1", "M-10", "M-2", "M_3", "A9", "Z.0"];
    let mut meters: Vec<Meter> = ids.iter().map(|id| meter(id, "D1")).collect();
    let mut changed = meter("M-2", "D2");
    changed.kind = MeterKind::Station;
    changed.report_every_h = 1;
    changed.status = MeterStatus::Inactive;
    changed.location = GeoPoint::new(-33.5, -70.25).unwrap();
    meters.push(changed.clone()); // same id twice in a batch: the last wins
    assert_eq!(store.upsert_meters(&meters).await.unwrap(), 6);

    assert_eq!(store.get_meter(&mid("M-2")).await.unwrap(), Some(changed));
    assert_eq!(
        store.get_meter(&mid("A9")).await.unwrap(),
        Some(meter("A9", "D1"))
    );
    assert_eq!(store.get_meter(&mid("nope")).await.unwrap(), None);

    // Update by id.
    let mut a9 = meter("A9", "D7");
    a9.report_every_h = 6;
    assert_eq!(
        store
            .upsert_meters(std::slice::from_ref(&a9))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.get_meter(&mid("A9")).await.unwrap(), Some(a9));

    // Keyset pagination walks every meter once, in bytewise id order.
    let mut expected: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    expected.sort();
    let mut seen = Vec::new();
    let mut after: Option<MeterId> = None;
    loop {
        let page = store.list_meters(after.as_ref(), 4).await.unwrap();
        assert!(page.len() <= 4);
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().id.clone());
        seen.extend(page.into_iter().map(|m| m.id.to_string()));
    }
    assert_eq!(seen, expected);
    let all: Vec<String> = store
        .all_meters()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id.to_string())
        .collect();
    assert_eq!(all, expected);
    assert!(store.list_meters(None, 0).await.unwrap().is_empty());
}

async fn case_readings_idempotent(store: &Store) {
    let batch: Vec<Reading> = (0..10).map(|i| reading("M1", i * 3600, i as f64)).collect();
    assert_eq!(
        store.insert_readings(&batch).await.unwrap(),
        InsertOutcome {
            inserted: 10,
            duplicates: 0,
            conflicts: 0
        }
    );
    assert_eq!(
        store.insert_readings(&batch).await.unwrap(),
        InsertOutcome {
            inserted: 0,
            duplicates: 10,
            conflicts: 0
        }
    );
    // Overlap: 5 old ones with other volumes (conflicts), 5 new, and a new one repeated
    // within the batch with another volume (a conflict with the first of the batch).
    let mut overlap: Vec<Reading> = (5..15)
        .map(|i| reading("M1", i * 3600, 100.0 + i as f64))
        .collect();
    overlap.push(reading("M1", 14 * 3600, 999.0));
    assert_eq!(
        store.insert_readings(&overlap).await.unwrap(),
        InsertOutcome {
            inserted: 5,
            duplicates: 0,
            conflicts: 6
        }
    );
    // Same times on another meter are not duplicates.
    assert_eq!(
        store
            .insert_readings(
                &batch[..3]
                    .iter()
                    .map(|r| Reading {
                        meter: mid("M2"),
                        ..r.clone()
                    })
                    .collect::<Vec<_>>()
            )
            .await
            .unwrap()
            .inserted,
        3
    );
    assert_eq!(store.count_readings().await.unwrap(), 18);

    // Duplicates and conflicts left the first values in place.
    let stored = store.readings(&mid("M1"), None, None, 100).await.unwrap();
    assert_eq!(stored.len(), 15);
    assert_eq!(stored[5].vol, 5.0);
    assert_eq!(stored[14].vol, 114.0);

    // A non-finite volume refuses the whole batch.
    let bad = vec![reading("M3", 0, 1.0), reading("M3", 1, f64::NAN)];
    assert!(matches!(
        store.insert_readings(&bad).await,
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(store.count_readings().await.unwrap(), 18);
}

async fn case_readings_range_query(store: &Store) {
    // Inserted out of order, with millisecond times.
    let ms = chrono::Duration::milliseconds(250);
    let mut batch: Vec<Reading> = (0..10)
        .rev()
        .map(|i| Reading {
            t: t(i * 60) + ms,
            ..reading("M1", 0, i as f64)
        })
        .collect();
    batch.push(reading("M2", 120, 42.0));
    store.insert_readings(&batch).await.unwrap();

    let all = store.readings(&mid("M1"), None, None, 100).await.unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].t < w[1].t));
    assert_eq!(all[0].t, t(0) + ms);
    assert!(all.iter().all(|r| r.meter == mid("M1")));

    // from inclusive, to exclusive.
    let some = store
        .readings(&mid("M1"), Some(t(120) + ms), Some(t(300) + ms), 100)
        .await
        .unwrap();
    let vols: Vec<f64> = some.iter().map(|r| r.vol).collect();
    assert_eq!(vols, vec![2.0, 3.0, 4.0]);

    let from_only = store
        .readings(&mid("M1"), Some(t(480)), None, 100)
        .await
        .unwrap();
    assert_eq!(from_only.len(), 2);
    let to_only = store
        .readings(&mid("M1"), None, Some(t(60)), 100)
        .await
        .unwrap();
    assert_eq!(to_only.len(), 1);
    let limited = store.readings(&mid("M1"), None, None, 3).await.unwrap();
    assert_eq!(limited.len(), 3);
    assert_eq!(limited[2].vol, 2.0);
    assert!(
        store
            .readings(&mid("nope"), None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn case_readings_values_round_trip(store: &Store) {
    let full = Reading {
        meter: mid("P1"),
        t: t(0),
        vol: 12_345.678,
        temp: Some(-3.5),
        flow_max: Some(0.25),
        pressure: Some(101.325),
    };
    let nan_temp = Reading {
        t: t(60),
        temp: Some(f64::NAN),
        flow_max: Some(f64::INFINITY),
        ..full.clone()
    };
    let integral = Reading {
        t: t(120),
        vol: 5.0,
        temp: Some(0.0),
        ..reading("P1", 0, 0.0)
    };
    store
        .insert_readings(&[full.clone(), nan_temp, integral.clone()])
        .await
        .unwrap();
    let got = store.readings(&mid("P1"), None, None, 10).await.unwrap();
    assert_eq!(got[0], full);
    assert_eq!(got[1].temp, None, "NaN is stored as NULL");
    assert_eq!(got[1].flow_max, None, "infinity is stored as NULL");
    assert_eq!(got[1].pressure, Some(101.325));
    assert_eq!(got[2], integral);
}

async fn case_events_idempotent(store: &Store) {
    let ev = |secs: i64, code: EventCode| MeterEvent {
        meter: mid("M1"),
        t: t(secs),
        code,
    };
    let events = vec![
        ev(0, EventCode::Named("tamper".into())),
        ev(0, EventCode::Named("battery_low".into())), // same time, other code
        ev(60, EventCode::Numeric(1234)),
        ev(120, EventCode::Named("valve_closed".into())),
    ];
    assert_eq!(store.insert_events(&events).await.unwrap(), 4);
    assert_eq!(store.insert_events(&events).await.unwrap(), 0);
    let mut more = events[..2].to_vec();
    more.push(ev(180, EventCode::Numeric(7)));
    more.push(ev(180, EventCode::Numeric(7)));
    assert_eq!(store.insert_events(&more).await.unwrap(), 1);

    let got = store.meter_events(&mid("M1"), 10).await.unwrap();
    assert_eq!(got.len(), 5);
    assert_eq!(got[0], ev(180, EventCode::Numeric(7)), "newest first");
    assert_eq!(got[1], ev(120, EventCode::Named("valve_closed".into())));
    assert_eq!(got[2], ev(60, EventCode::Numeric(1234)));
    assert_eq!(store.meter_events(&mid("M1"), 2).await.unwrap().len(), 2);
    assert!(store.meter_events(&mid("M2"), 10).await.unwrap().is_empty());

    // Every meter's events from a time on, oldest first, for the replay.
    let m2 = MeterEvent {
        meter: mid("M2"),
        t: t(60),
        code: EventCode::Named("tamper".into()),
    };
    assert_eq!(
        store
            .insert_events(std::slice::from_ref(&m2))
            .await
            .unwrap(),
        1
    );
    let since = store.events_since(t(60), 100).await.unwrap();
    assert_eq!(
        since,
        vec![
            ev(60, EventCode::Numeric(1234)),
            m2,
            ev(120, EventCode::Named("valve_closed".into())),
            ev(180, EventCode::Numeric(7)),
        ]
    );
    assert_eq!(store.events_since(t(60), 2).await.unwrap().len(), 2);
    assert!(store.events_since(t(181), 10).await.unwrap().is_empty());
}

async fn case_dead_letters_round_trip(store: &Store) {
    let first = NewDeadLetter {
        topic: "leakwatch/v1/readings/M1".into(),
        reason: "bad_json".into(),
        detail: "expected value at line 1 column 1".into(),
        payload: vec![0xff, 0xfe, 0x00, b'{', 0x80],
        received_at: t(0) + chrono::Duration::milliseconds(7),
    };
    let second = NewDeadLetter {
        topic: "leakwatch/v1/events/M2".into(),
        reason: "unknown_meter".into(),
        detail: "meter M2 is not registered".into(),
        payload: b"{\"meter\":\"M2\"}".to_vec(),
        received_at: t(10),
    };
    let id1 = store.dead_letter(&first).await.unwrap();
    let id2 = store.dead_letter(&second).await.unwrap();
    assert!(id2 > id1);
    assert_eq!(store.count_dead_letters().await.unwrap(), 2);

    let got = store.list_dead_letters(10).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id, id2, "newest first");
    assert_eq!(got[1].id, id1);
    assert_eq!(got[1].payload, first.payload, "bytes preserved exactly");
    assert_eq!(got[1].topic, first.topic);
    assert_eq!(got[1].reason, first.reason);
    assert_eq!(got[1].detail, first.detail);
    assert_eq!(got[1].received_at, first.received_at);
    assert_eq!(got[0].payload, second.payload);
    let json = serde_json::to_value(&got[0]).unwrap();
    assert_eq!(json["payload"], "{\"meter\":\"M2\"}");
    assert_eq!(store.list_dead_letters(1).await.unwrap().len(), 1);
}

async fn case_record_finding_creates_then_updates(store: &Store) {
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let (a, created) = store
        .record_finding(&finding("M1", 1000, Severity::Warning))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(a.status, AlertStatus::Open);
    assert_eq!(a.count, 1);
    assert_eq!(a.kind, AlertKind::ContinuousFlow);
    assert_eq!(a.severity, Severity::Warning);
    assert_eq!(a.meter_id, Some(mid("M1")));
    assert_eq!(a.district_id, Some(did("D1")));
    assert_eq!(a.detected_at, t(1000));
    assert_eq!(a.last_seen, t(1000));
    assert_eq!(a.evidence, evidence(0.05, 1000));
    assert_eq!(a.work_order_id, None);
    assert_eq!(a.status_reason, None);
    assert!(
        a.created_at > before && a.created_at < chrono::Utc::now() + chrono::Duration::seconds(5)
    );
    assert_eq!(store.get_alert(a.id).await.unwrap(), Some(a.clone()));

    // A later, more severe repeat.
    let mut f2 = finding("M1", 5000, Severity::Critical);
    f2.evidence = evidence(0.5, 5000);
    let (b, created) = store.record_finding(&f2).await.unwrap();
    assert!(!created);
    assert_eq!(b.id, a.id);
    assert_eq!(b.count, 2);
    assert_eq!(b.detected_at, t(1000));
    assert_eq!(b.last_seen, t(5000));
    assert_eq!(b.severity, Severity::Critical);
    assert_eq!(b.evidence, evidence(0.5, 5000));
    assert_eq!(b.created_at, a.created_at);

    // An older, milder repeat (out of order): last_seen and severity do not go back;
    // evidence is still replaced.
    let (c, created) = store
        .record_finding(&finding("M1", 3000, Severity::Info))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!((c.id, c.count), (a.id, 3));
    assert_eq!(c.last_seen, t(5000));
    assert_eq!(c.severity, Severity::Critical);
    assert_eq!(c.evidence, evidence(0.05, 3000));

    // An acknowledged alert is still active: repeats update it.
    store
        .set_alert_status(
            a.id,
            AlertStatus::Open,
            AlertStatus::Acknowledged,
            None,
            None,
        )
        .await
        .unwrap();
    let (d, created) = store
        .record_finding(&finding("M1", 6000, Severity::Warning))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(
        (d.id, d.count, d.status),
        (a.id, 4, AlertStatus::Acknowledged)
    );

    // Another subject is another alert: a meter, and a district-only finding.
    let (e, created) = store
        .record_finding(&finding("M2", 1000, Severity::Warning))
        .await
        .unwrap();
    assert!(created);
    assert_ne!(e.id, a.id);
    let district_finding = Finding {
        meter_id: None,
        ..finding("M1", 1000, Severity::Info)
    };
    let (g, created) = store.record_finding(&district_finding).await.unwrap();
    assert!(created);
    assert_eq!(g.meter_id, None);
    assert_eq!(g.district_id, Some(did("D1")));
    let (g2, created) = store.record_finding(&district_finding).await.unwrap();
    assert!(!created);
    assert_eq!((g2.id, g2.count), (g.id, 2));
}

async fn case_new_alert_after_dismiss_or_resolve(store: &Store) {
    let (a, _) = store
        .record_finding(&finding("M1", 0, Severity::Warning))
        .await
        .unwrap();
    let dismissed = store
        .set_alert_status(
            a.id,
            AlertStatus::Open,
            AlertStatus::Dismissed,
            Some("pilot flame"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(dismissed.status, AlertStatus::Dismissed);
    assert_eq!(dismissed.status_reason.as_deref(), Some("pilot flame"));

    let (b, created) = store
        .record_finding(&finding("M1", 100, Severity::Warning))
        .await
        .unwrap();
    assert!(created, "a dismissed alert does not absorb repeats");
    assert_ne!(b.id, a.id);
    assert_eq!(b.count, 1);
    assert_eq!(b.detected_at, t(100));
    assert_eq!(
        store.get_alert(a.id).await.unwrap().unwrap().count,
        1,
        "the dismissed alert is untouched"
    );

    // Escalate, then resolve: the next finding opens a third alert.
    store
        .set_alert_status(
            b.id,
            AlertStatus::Open,
            AlertStatus::Escalated,
            None,
            Some(77),
        )
        .await
        .unwrap();
    let (b2, created) = store
        .record_finding(&finding("M1", 200, Severity::Warning))
        .await
        .unwrap();
    assert!(!created, "an escalated alert is still active");
    assert_eq!(b2.id, b.id);
    let resolved = store
        .set_alert_status(
            b.id,
            AlertStatus::Escalated,
            AlertStatus::Resolved,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        resolved.work_order_id,
        Some(77),
        "None leaves the work order"
    );
    let (c, created) = store
        .record_finding(&finding("M1", 300, Severity::Warning))
        .await
        .unwrap();
    assert!(created);
    assert!(c.id != a.id && c.id != b.id);
}

async fn case_alert_status_compare_and_set(store: &Store) {
    let (a, _) = store
        .record_finding(&finding("M1", 0, Severity::Warning))
        .await
        .unwrap();
    let acked = store
        .set_alert_status(
            a.id,
            AlertStatus::Open,
            AlertStatus::Acknowledged,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(acked.status, AlertStatus::Acknowledged);
    assert_eq!(acked.count, a.count);
    assert_eq!(acked.evidence, a.evidence);

    // Stale `from`.
    assert_conflict(
        store
            .set_alert_status(
                a.id,
                AlertStatus::Open,
                AlertStatus::Acknowledged,
                None,
                None,
            )
            .await,
        &format!("alert {} is acknowledged", a.id),
    );
    assert_conflict(
        store
            .set_alert_status(
                a.id,
                AlertStatus::Open,
                AlertStatus::Dismissed,
                Some("x"),
                None,
            )
            .await,
        &format!("alert {} is acknowledged", a.id),
    );
    assert_eq!(
        store.get_alert(a.id).await.unwrap().unwrap().status,
        AlertStatus::Acknowledged,
        "a failed compare-and-set changes nothing"
    );
    assert_not_found(
        store
            .set_alert_status(
                9999,
                AlertStatus::Open,
                AlertStatus::Acknowledged,
                None,
                None,
            )
            .await,
        "alert 9999",
    );

    // Escalation records the work order; a reason given later replaces the old one.
    let esc = store
        .set_alert_status(
            a.id,
            AlertStatus::Acknowledged,
            AlertStatus::Escalated,
            Some("sent a crew"),
            Some(5),
        )
        .await
        .unwrap();
    assert_eq!(esc.work_order_id, Some(5));
    assert_eq!(esc.status_reason.as_deref(), Some("sent a crew"));
    let res = store
        .set_alert_status(
            a.id,
            AlertStatus::Escalated,
            AlertStatus::Resolved,
            Some("valve replaced"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(res.status_reason.as_deref(), Some("valve replaced"));
    assert_eq!(res.work_order_id, Some(5));

    // Re-opening an old alert while a newer one is active for the same subject and
    // kind would break "one active alert": refused as a conflict.
    let (b, created) = store
        .record_finding(&finding("M1", 10, Severity::Warning))
        .await
        .unwrap();
    assert!(created);
    let err = store
        .set_alert_status(a.id, AlertStatus::Resolved, AlertStatus::Open, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store.get_alert(a.id).await.unwrap().unwrap().status,
        AlertStatus::Resolved
    );
    assert_eq!(
        store.get_alert(b.id).await.unwrap().unwrap().status,
        AlertStatus::Open
    );
}

async fn case_list_alerts_filters_and_cursor(store: &Store) {
    // Ten meters, detected at 0, 100, ..., 900.
    let mut ids = Vec::new();
    for i in 0..10 {
        let (a, _) = store
            .record_finding(&finding(&format!("M{i}"), i * 100, Severity::Warning))
            .await
            .unwrap();
        ids.push(a.id);
    }
    // M0..M2 acknowledged, M3 dismissed.
    for id in &ids[..3] {
        store
            .set_alert_status(
                *id,
                AlertStatus::Open,
                AlertStatus::Acknowledged,
                None,
                None,
            )
            .await
            .unwrap();
    }
    store
        .set_alert_status(
            ids[3],
            AlertStatus::Open,
            AlertStatus::Dismissed,
            Some("r"),
            None,
        )
        .await
        .unwrap();

    let all = store.list_alerts(&AlertQuery::default()).await.unwrap();
    let got: Vec<i64> = all.iter().map(|a| a.id).collect();
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(got, expected, "highest id first");

    let open = store
        .list_alerts(&AlertQuery {
            status: Some(AlertStatus::Open),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(open.len(), 6);
    assert!(open.iter().all(|a| a.status == AlertStatus::Open));

    let kind = store
        .list_alerts(&AlertQuery {
            kind: Some(AlertKind::ContinuousFlow),
            status: Some(AlertStatus::Acknowledged),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(kind.len(), 3);

    let since = store
        .list_alerts(&AlertQuery {
            since: Some(t(700)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        since.iter().map(|a| a.detected_at).collect::<Vec<_>>(),
        vec![t(900), t(800), t(700)],
        "since is inclusive"
    );

    let m4 = store
        .list_alerts(&AlertQuery {
            meter_id: Some(mid("M4")),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(m4.len(), 1);
    assert_eq!(m4[0].id, ids[4]);

    // Cursor pagination: pages of 4 cover everything once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_alerts(&AlertQuery {
                limit: 4,
                cursor,
                ..Default::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        cursor = Some(page.last().unwrap().id);
        seen.extend(page.iter().map(|a| a.id));
    }
    assert_eq!(seen, expected);
    let after_cursor = store
        .list_alerts(&AlertQuery {
            cursor: Some(ids[2]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        after_cursor.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![ids[1], ids[0]]
    );

    let counts = store.count_alerts_by_status().await.unwrap();
    let count = |s: AlertStatus| counts.iter().find(|(k, _)| *k == s).unwrap().1;
    assert_eq!(count(AlertStatus::Open), 6);
    assert_eq!(count(AlertStatus::Acknowledged), 3);
    assert_eq!(count(AlertStatus::Dismissed), 1);
    assert_eq!(count(AlertStatus::Escalated), 0);
    assert_eq!(count(AlertStatus::Resolved), 0);
    assert_eq!(
        counts.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        AlertStatus::ALL.to_vec()
    );
}

async fn case_concurrent_findings_make_one_alert(store: &Store) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .record_finding(&finding("M1", i * 10, Severity::Warning))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let (alert, new) = task.await.unwrap();
        created += usize::from(new);
        ids.insert(alert.id);
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    let id = *ids.iter().next().unwrap();
    let alert = store.get_alert(id).await.unwrap().unwrap();
    assert_eq!(alert.count, 8);
    assert_eq!(alert.last_seen, t(70));
    assert_eq!(
        store
            .list_alerts(&AlertQuery::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn case_crews_upsert_list_positions(store: &Store) {
    let mut b = crew("C-2", false);
    b.skills = vec![];
    let a = crew("C-1", true);
    assert_eq!(
        store
            .upsert_crews(&[b.clone(), a.clone(), crew("C-3", true)])
            .await
            .unwrap(),
        3
    );
    let rows = store.list_crews().await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.crew.id.as_str()).collect::<Vec<_>>(),
        vec!["C-1", "C-2", "C-3"]
    );
    assert_eq!(rows[0].crew, a);
    assert_eq!(rows[1].crew, b);
    assert!(rows.iter().all(|r| r.active_orders == 0));
    assert_eq!(rows[0].status(), CrewStatus::Available);
    assert_eq!(rows[1].status(), CrewStatus::OffShift);

    let pos = GeoPoint::new(45.5, 9.25).unwrap();
    store
        .set_crew_position(&cid("C-1"), pos, t(100))
        .await
        .unwrap();
    let got = store.get_crew(&cid("C-1")).await.unwrap().unwrap();
    assert_eq!(got.crew.position, Some(pos));
    assert_eq!(got.crew.position_at, Some(t(100)));

    // An older position is ignored; a newer one replaces it.
    let old = GeoPoint::new(44.0, 8.0).unwrap();
    store
        .set_crew_position(&cid("C-1"), old, t(50))
        .await
        .unwrap();
    let got = store.get_crew(&cid("C-1")).await.unwrap().unwrap();
    assert_eq!(got.crew.position, Some(pos));
    let newer = GeoPoint::new(45.6, 9.3).unwrap();
    store
        .set_crew_position(&cid("C-1"), newer, t(200))
        .await
        .unwrap();
    let got = store.get_crew(&cid("C-1")).await.unwrap().unwrap();
    assert_eq!(got.crew.position, Some(newer));
    assert_eq!(got.crew.position_at, Some(t(200)));

    assert_not_found(
        store.set_crew_position(&cid("C-9"), pos, t(0)).await,
        "crew C-9",
    );
    assert!(store.get_crew(&cid("C-9")).await.unwrap().is_none());

    // Re-loading the registry (no position) updates the rest, keeps the position.
    let mut a2 = crew("C-1", false);
    a2.name = "Renamed".into();
    a2.skills = vec!["meter".into()];
    a2.home = GeoPoint::new(46.0, 10.0).unwrap();
    store.upsert_crews(&[a2]).await.unwrap();
    let got = store.get_crew(&cid("C-1")).await.unwrap().unwrap();
    assert_eq!(got.crew.name, "Renamed");
    assert_eq!(got.crew.skills, vec!["meter".to_string()]);
    assert_eq!(got.crew.home, GeoPoint::new(46.0, 10.0).unwrap());
    assert!(!got.crew.on_shift);
    assert_eq!(got.crew.position, Some(newer));
    assert_eq!(got.crew.position_at, Some(t(200)));

    // A registry entry with a position replaces it.
    let mut a3 = crew("C-1", true);
    a3.position = Some(pos);
    a3.position_at = Some(t(300));
    store.upsert_crews(std::slice::from_ref(&a3)).await.unwrap();
    assert_eq!(store.get_crew(&cid("C-1")).await.unwrap().unwrap().crew, a3);
}

async fn case_crews_active_orders(store: &Store) {
    use WorkOrderStatus as S;
    store
        .upsert_crews(&[crew("C1", true), crew("C2", true), crew("C3", false)])
        .await
        .unwrap();
    let mut orders = Vec::new();
    for _ in 0..4 {
        orders.push(
            store
                .create_work_order(&new_order(Priority::High, None))
                .await
                .unwrap(),
        );
    }
    // Order 0: assigned to C1. Order 1: assigned to C1 and accepted.
    // Order 2: assigned to C2, then cancelled. Order 3: unassigned (created).
    store
        .apply_transition(
            orders[0].id,
            &rec(
                orders[0].id,
                S::Created,
                S::Assigned,
                "assign",
                10,
                Some("C1"),
            ),
            &to_crew("C1"),
        )
        .await
        .unwrap();
    store
        .apply_transition(
            orders[1].id,
            &rec(
                orders[1].id,
                S::Created,
                S::Assigned,
                "assign",
                10,
                Some("C1"),
            ),
            &to_crew("C1"),
        )
        .await
        .unwrap();
    store
        .apply_transition(
            orders[1].id,
            &rec(orders[1].id, S::Assigned, S::Accepted, "accept", 20, None),
            &keep(),
        )
        .await
        .unwrap();
    store
        .apply_transition(
            orders[2].id,
            &rec(
                orders[2].id,
                S::Created,
                S::Assigned,
                "assign",
                10,
                Some("C2"),
            ),
            &to_crew("C2"),
        )
        .await
        .unwrap();
    store
        .apply_transition(
            orders[2].id,
            &rec(orders[2].id, S::Assigned, S::Cancelled, "cancel", 30, None),
            &keep(),
        )
        .await
        .unwrap();

    let rows = store.list_crews().await.unwrap();
    let active: Vec<(String, i64)> = rows
        .iter()
        .map(|r| (r.crew.id.to_string(), r.active_orders))
        .collect();
    assert_eq!(
        active,
        vec![("C1".into(), 2), ("C2".into(), 0), ("C3".into(), 0)]
    );
    // Both of C1's orders are high: the older (lower id, created first) is current.
    assert_eq!(
        rows[0].current,
        Some(CurrentOrder {
            order_id: orders[0].id,
            priority: Priority::High,
            status: S::Assigned,
        })
    );
    assert_eq!(rows[1].current, None);
    assert_eq!(rows[2].current, None);
    assert_eq!(rows[0].status(), CrewStatus::Busy);
    assert_eq!(rows[1].status(), CrewStatus::Available);
    assert_eq!(rows[2].status(), CrewStatus::OffShift);
    let json = serde_json::to_value(&rows[0]).unwrap();
    assert_eq!(json["status"], "busy");
    assert_eq!(json["active_orders"], 2);
    assert_eq!(json["id"], "C1");
    assert_eq!(json["current"]["order_id"], orders[0].id);
    assert_eq!(json["current"]["priority"], "high");
    assert_eq!(json["current"]["status"], "assigned");
    assert!(serde_json::to_value(&rows[1]).unwrap()["current"].is_null());
    let c1 = store.get_crew(&cid("C1")).await.unwrap().unwrap();
    assert_eq!(c1.active_orders, 2);
    assert_eq!(c1.current, rows[0].current);
}

async fn case_work_order_lifecycle(store: &Store) {
    use WorkOrderStatus as S;
    store
        .upsert_crews(&[crew("C1", true), crew("C2", true)])
        .await
        .unwrap();
    let (alert, _) = store
        .record_finding(&finding("M1", 0, Severity::Critical))
        .await
        .unwrap();
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let wo = store
        .create_work_order(&new_order(Priority::Emergency, Some(alert.id)))
        .await
        .unwrap();
    assert_eq!(wo.status, S::Created);
    assert_eq!(wo.kind, WorkOrderKind::LeakInvestigation);
    assert_eq!(wo.priority, Priority::Emergency);
    assert_eq!(wo.alert_id, Some(alert.id));
    assert_eq!(wo.meter_id, Some(mid("M1")));
    assert_eq!(wo.district_id, Some(did("D1")));
    assert_eq!(wo.location, GeoPoint::new(45.47, 9.2).unwrap());
    assert_eq!(wo.crew_id, None);
    assert_eq!(wo.summary, "continuous flow at M1");
    assert_eq!(wo.due_at, Some(t(3_600)));
    assert_eq!(wo.created_at, wo.updated_at);
    assert!(wo.created_at > before);
    assert_eq!(store.get_work_order(wo.id).await.unwrap(), Some(wo.clone()));

    let history = store.work_order_history(wo.id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].order_id, wo.id);
    assert_eq!((history[0].from, history[0].to), (S::Created, S::Created));
    assert_eq!(history[0].action, "create");
    assert_eq!(history[0].actor, "alice");
    assert_eq!(history[0].at, wo.created_at);

    // Assign to C1 (sets the crew), move to C2, accept (crew left as is),
    // unassign (crew cleared), assign again, travel, arrive, complete.
    // (the record, the crew change asked for, the crew afterwards)
    type Step = (
        TransitionRecord,
        Option<Option<&'static str>>,
        Option<&'static str>,
    );
    let steps: Vec<Step> = vec![
        (
            rec(wo.id, S::Created, S::Assigned, "assign", 10, Some("C1")),
            Some(Some("C1")),
            Some("C1"),
        ),
        (
            rec(wo.id, S::Assigned, S::Assigned, "assign", 20, Some("C2")),
            Some(Some("C2")),
            Some("C2"),
        ),
        (
            rec(wo.id, S::Assigned, S::Accepted, "accept", 30, None),
            None,
            Some("C2"),
        ),
        (
            rec(wo.id, S::Accepted, S::Created, "unassign", 40, None),
            Some(None),
            None,
        ),
        (
            rec(wo.id, S::Created, S::Assigned, "assign", 50, Some("C1")),
            Some(Some("C1")),
            Some("C1"),
        ),
        (
            rec(wo.id, S::Assigned, S::Accepted, "accept", 60, None),
            None,
            Some("C1"),
        ),
        (
            rec(wo.id, S::Accepted, S::EnRoute, "start_travel", 70, None),
            None,
            Some("C1"),
        ),
        (
            rec(wo.id, S::EnRoute, S::OnSite, "arrive", 80, None),
            None,
            Some("C1"),
        ),
        (
            TransitionRecord {
                note: Some("valve replaced".into()),
                actor: "crew:C1".into(),
                ..rec(wo.id, S::OnSite, S::Completed, "complete", 90, None)
            },
            None,
            Some("C1"),
        ),
    ];
    for (r, crew_change, crew_after) in &steps {
        let change = OrderChange {
            crew: crew_change.map(|c| c.map(cid)),
            ..Default::default()
        };
        let updated = store.apply_transition(wo.id, r, &change).await.unwrap();
        assert_eq!(updated.status, r.to, "{}", r.action);
        assert_eq!(updated.updated_at, r.at);
        assert_eq!(updated.created_at, wo.created_at);
        assert_eq!(
            updated.crew_id.as_ref().map(|c| c.as_str()),
            *crew_after,
            "{}",
            r.action
        );
        assert_eq!(store.get_work_order(wo.id).await.unwrap(), Some(updated));
    }

    let history = store.work_order_history(wo.id).await.unwrap();
    assert_eq!(history.len(), 1 + steps.len());
    for (got, (want, _, _)) in history[1..].iter().zip(&steps) {
        assert_eq!(got, want);
    }
    assert!(
        store
            .work_order_history(wo.id + 1000)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn case_work_order_conflicts_and_not_found(store: &Store) {
    use WorkOrderStatus as S;
    store.upsert_crews(&[crew("C1", true)]).await.unwrap();
    let wo = store
        .create_work_order(&new_order(Priority::High, None))
        .await
        .unwrap();

    // Wrong `from`: nothing changes, nothing is recorded.
    assert_conflict(
        store
            .apply_transition(
                wo.id,
                &rec(wo.id, S::Assigned, S::Accepted, "accept", 10, None),
                &keep(),
            )
            .await,
        &format!("work order {} is created", wo.id),
    );
    // Unknown order.
    assert_not_found(
        store
            .apply_transition(
                9999,
                &rec(9999, S::Created, S::Assigned, "assign", 10, Some("C1")),
                &to_crew("C1"),
            )
            .await,
        "work order 9999",
    );
    // Unknown crew: the whole transition is refused.
    assert_not_found(
        store
            .apply_transition(
                wo.id,
                &rec(wo.id, S::Created, S::Assigned, "assign", 10, Some("C9")),
                &to_crew("C9"),
            )
            .await,
        "crew C9",
    );
    assert_eq!(store.get_work_order(wo.id).await.unwrap(), Some(wo.clone()));
    assert_eq!(store.work_order_history(wo.id).await.unwrap().len(), 1);

    // After a real move, the old `from` is stale.
    store
        .apply_transition(
            wo.id,
            &rec(wo.id, S::Created, S::Cancelled, "cancel", 20, None),
            &keep(),
        )
        .await
        .unwrap();
    assert_conflict(
        store
            .apply_transition(
                wo.id,
                &rec(wo.id, S::Created, S::Assigned, "assign", 30, Some("C1")),
                &to_crew("C1"),
            )
            .await,
        &format!("work order {} is cancelled", wo.id),
    );
    assert_eq!(store.work_order_history(wo.id).await.unwrap().len(), 2);

    // An order for an alert that does not exist.
    assert_not_found(
        store
            .create_work_order(&new_order(Priority::High, Some(4242)))
            .await,
        "alert 4242",
    );
    assert_eq!(
        store
            .list_work_orders(&WorkOrderQuery::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn case_jobs_for_crew_ordering(store: &Store) {
    use WorkOrderStatus as S;
    store
        .upsert_crews(&[crew("C1", true), crew("C2", true)])
        .await
        .unwrap();
    let priorities = [
        Priority::Low,
        Priority::Emergency,
        Priority::Normal,
        Priority::High,
        Priority::Emergency,
        Priority::High,
    ];
    let mut orders = Vec::new();
    for p in priorities {
        let wo = store.create_work_order(&new_order(p, None)).await.unwrap();
        orders.push(wo);
        // Distinct creation times, even at SQLite's millisecond precision.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let assign =
        |id: i64, crew: &'static str| rec(id, S::Created, S::Assigned, "assign", 10, Some(crew));
    for wo in &orders[..5] {
        store
            .apply_transition(wo.id, &assign(wo.id, "C1"), &to_crew("C1"))
            .await
            .unwrap();
    }
    store
        .apply_transition(orders[5].id, &assign(orders[5].id, "C2"), &to_crew("C2"))
        .await
        .unwrap();
    // Order 2 (normal) is finished: it leaves the crew's list.
    for (from, to, action) in [
        (S::Assigned, S::Accepted, "accept"),
        (S::Accepted, S::EnRoute, "start_travel"),
        (S::EnRoute, S::UnableToComplete, "unable_to_complete"),
    ] {
        store
            .apply_transition(
                orders[2].id,
                &rec(orders[2].id, from, to, action, 20, None),
                &keep(),
            )
            .await
            .unwrap();
    }

    let jobs = store.jobs_for_crew(&cid("C1")).await.unwrap();
    let got: Vec<i64> = jobs.iter().map(|w| w.id).collect();
    assert_eq!(
        got,
        vec![orders[1].id, orders[4].id, orders[3].id, orders[0].id],
        "emergency (oldest first), high, low"
    );
    assert_eq!(
        store
            .jobs_for_crew(&cid("C2"))
            .await
            .unwrap()
            .iter()
            .map(|w| w.id)
            .collect::<Vec<_>>(),
        vec![orders[5].id]
    );
    assert!(store.jobs_for_crew(&cid("C9")).await.unwrap().is_empty());
}

async fn case_list_work_orders_filters_and_cursor(store: &Store) {
    use WorkOrderStatus as S;
    store.upsert_crews(&[crew("C1", true)]).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(
            store
                .create_work_order(&new_order(Priority::Normal, None))
                .await
                .unwrap()
                .id,
        );
    }
    for id in &ids[..3] {
        store
            .apply_transition(
                *id,
                &rec(*id, S::Created, S::Assigned, "assign", 10, Some("C1")),
                &to_crew("C1"),
            )
            .await
            .unwrap();
    }
    let mut expected = ids.clone();
    expected.reverse();
    let all: Vec<i64> = store
        .list_work_orders(&WorkOrderQuery::default())
        .await
        .unwrap()
        .iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(all, expected);

    let assigned = store
        .list_work_orders(&WorkOrderQuery {
            status: Some(S::Assigned),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        assigned.iter().map(|w| w.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1], ids[0]]
    );
    let by_crew = store
        .list_work_orders(&WorkOrderQuery {
            crew_id: Some(cid("C1")),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_crew.len(), 3);
    let none = store
        .list_work_orders(&WorkOrderQuery {
            crew_id: Some(cid("C1")),
            status: Some(S::Created),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_work_orders(&WorkOrderQuery {
                limit: 3,
                cursor,
                ..Default::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        cursor = Some(page.last().unwrap().id);
        seen.extend(page.iter().map(|w| w.id));
    }
    assert_eq!(seen, expected);
}

async fn case_concurrent_transitions_one_wins(store: &Store) {
    use WorkOrderStatus as S;
    store
        .upsert_crews(&[crew("C1", true), crew("C2", true)])
        .await
        .unwrap();
    let wo = store
        .create_work_order(&new_order(Priority::High, None))
        .await
        .unwrap();
    let tasks: Vec<_> = ["C1", "C2", "C1", "C2"]
        .into_iter()
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .apply_transition(
                        wo.id,
                        &rec(wo.id, S::Created, S::Assigned, "assign", 10, Some(c)),
                        &to_crew(c),
                    )
                    .await
            })
        })
        .collect();
    let mut ok = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(w) => ok.push(w),
            Err(StoreError::Conflict(m)) => {
                assert_eq!(m, format!("work order {} is assigned", wo.id))
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok.len(), 1, "exactly one compare-and-set wins");
    let history = store.work_order_history(wo.id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].crew_id, ok[0].crew_id);
}

// ---- dispatch: calendars, current orders, times, outcomes, deadlines ----

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
    use chrono::TimeZone;
    chrono::Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

fn leak_finding(class: &str) -> SiteFinding {
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
async fn assigned_order(store: &Store, priority: Priority, crew: &str, at: i64) -> i64 {
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
async fn walk(store: &Store, id: i64, at: i64, steps: &[(WorkOrderStatus, WorkOrderStatus, &str)]) {
    for (from, to, action) in steps {
        store
            .apply_transition(id, &rec(id, *from, *to, action, at, None), &keep())
            .await
            .unwrap();
    }
}

async fn case_crew_calendar_and_last_job_place(store: &Store) {
    use chrono::Weekday::*;
    // Every day 08:00-16:00 UTC; the `on_shift` flag says otherwise and is overruled.
    let shifts = WeeklyShifts::new(0)
        .with_shifts(&[Mon, Tue, Wed, Thu, Fri, Sat, Sun], &[(480, 960)])
        .with_exception(chrono::NaiveDate::from_ymd_opt(2026, 12, 25).unwrap(), &[]);
    let home = GeoPoint::new(45.0, 9.0).unwrap();
    let job = GeoPoint::new(45.123_456_7, 9.765_432_1).unwrap();
    let mut a = crew("C1", false);
    a.shifts = Some(shifts.clone());
    a.last_job_place = Some(job);
    let b = crew("C2", true);
    store.upsert_crews(&[a.clone(), b.clone()]).await.unwrap();
    let rows = store.list_crews().await.unwrap();
    assert_eq!(rows[0].crew, a);
    assert_eq!(rows[1].crew, b);
    let got = store.get_crew(&cid("C1")).await.unwrap().unwrap();
    assert_eq!(got.crew.shifts, Some(shifts.clone()));
    assert_eq!(got.crew.last_job_place, Some(job));
    // The calendar decides the status; without one, the flag does.
    assert_eq!(
        got.status_at(utc(2026, 11, 26, 10, 0)),
        CrewStatus::Available
    );
    assert_eq!(
        got.status_at(utc(2026, 11, 26, 17, 0)),
        CrewStatus::OffShift
    );
    assert_eq!(
        got.status_at(utc(2026, 12, 25, 10, 0)),
        CrewStatus::OffShift
    );
    assert_eq!(
        rows[1].status_at(utc(2026, 11, 26, 3, 0)),
        CrewStatus::Available
    );
    let json = serde_json::to_value(&got).unwrap();
    assert_eq!(json["last_job_place"]["lat"], 45.123_456_7);
    assert_eq!(json["shifts"]["days"][0][0][0], 480);

    // Re-loading the registry without a last job place keeps it; the calendar is
    // replaced as given.
    let mut a2 = crew("C1", true);
    a2.name = "Renamed".into();
    store.upsert_crews(&[a2]).await.unwrap();
    let got = store.get_crew(&cid("C1")).await.unwrap().unwrap();
    assert_eq!(got.crew.name, "Renamed");
    assert_eq!(got.crew.last_job_place, Some(job));
    assert_eq!(got.crew.shifts, None);
    assert_eq!(
        got.status_at(utc(2026, 11, 26, 17, 0)),
        CrewStatus::Available
    );

    // Set by hand when the crew gets on site; the position is untouched.
    let next = GeoPoint::new(45.2, 9.1).unwrap();
    store
        .set_crew_last_job_place(&cid("C1"), next)
        .await
        .unwrap();
    store
        .set_crew_last_job_place(&cid("C2"), job)
        .await
        .unwrap();
    let rows = store.list_crews().await.unwrap();
    assert_eq!(rows[0].crew.last_job_place, Some(next));
    assert_eq!(rows[0].crew.position, None);
    assert_eq!(rows[1].crew.last_job_place, Some(job));
    assert_eq!(rows[1].crew.home, home);
    assert_not_found(
        store.set_crew_last_job_place(&cid("C9"), next).await,
        "crew C9",
    );
    // A registry entry with a last job place replaces it.
    let mut b2 = crew("C2", true);
    b2.last_job_place = Some(next);
    store.upsert_crews(std::slice::from_ref(&b2)).await.unwrap();
    assert_eq!(store.get_crew(&cid("C2")).await.unwrap().unwrap().crew, b2);
}

async fn case_crew_current_order(store: &Store) {
    use WorkOrderStatus as S;
    store
        .upsert_crews(&[crew("C1", true), crew("C2", true)])
        .await
        .unwrap();
    // No orders: nothing current.
    assert_eq!(
        store.get_crew(&cid("C1")).await.unwrap().unwrap().current,
        None
    );
    let normal = assigned_order(store, Priority::Normal, "C1", 10).await;
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let high_old = assigned_order(store, Priority::High, "C1", 20).await;
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let high_new = assigned_order(store, Priority::High, "C1", 30).await;
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let emergency = assigned_order(store, Priority::Emergency, "C1", 40).await;
    let other = assigned_order(store, Priority::Emergency, "C2", 40).await;
    walk(
        store,
        high_old,
        50,
        &[
            (S::Assigned, S::Accepted, "accept"),
            (S::Accepted, S::EnRoute, "start_travel"),
        ],
    )
    .await;
    // The emergency is finished (cancelled): no longer current.
    walk(
        store,
        emergency,
        60,
        &[(S::Assigned, S::Cancelled, "cancel")],
    )
    .await;

    let c1 = store.get_crew(&cid("C1")).await.unwrap().unwrap();
    assert_eq!(c1.active_orders, 3);
    assert_eq!(
        c1.current,
        Some(CurrentOrder {
            order_id: high_old,
            priority: Priority::High,
            status: S::EnRoute,
        })
    );
    assert_eq!(c1.status_at(t(0)), CrewStatus::Busy);
    let c2 = store.get_crew(&cid("C2")).await.unwrap().unwrap();
    assert_eq!(c2.current.map(|c| c.order_id), Some(other));

    // Unassigned (back to created, no crew) orders do not count; then the newer high,
    // then the normal one.
    store
        .apply_transition(
            high_old,
            &rec(high_old, S::EnRoute, S::Created, "unassign", 70, None),
            &OrderChange {
                crew: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let rows = store.list_crews().await.unwrap();
    assert_eq!(rows[0].current.map(|c| c.order_id), Some(high_new));
    walk(
        store,
        high_new,
        80,
        &[(S::Assigned, S::Cancelled, "cancel")],
    )
    .await;
    let c1 = store.get_crew(&cid("C1")).await.unwrap().unwrap();
    assert_eq!(
        c1.current,
        Some(CurrentOrder {
            order_id: normal,
            priority: Priority::Normal,
            status: S::Assigned,
        })
    );
    assert_eq!(c1.active_orders, 1);
}

async fn case_work_order_parent_and_filters(store: &Store) {
    let (alert, _) = store
        .record_finding(&finding("M1", 0, Severity::Warning))
        .await
        .unwrap();
    let parent = store
        .create_work_order(&new_order(Priority::High, Some(alert.id)))
        .await
        .unwrap();
    assert_eq!(parent.parent_id, None);
    let follow_up = |p| NewWorkOrder {
        kind: WorkOrderKind::Repair,
        parent_id: Some(p),
        ..new_order(Priority::Normal, None)
    };
    let child = store
        .create_work_order(&follow_up(parent.id))
        .await
        .unwrap();
    assert_eq!(child.parent_id, Some(parent.id));
    assert_eq!(child.kind, WorkOrderKind::Repair);
    assert_eq!(
        store.get_work_order(child.id).await.unwrap(),
        Some(child.clone())
    );
    let grandchild = store.create_work_order(&follow_up(child.id)).await.unwrap();
    let other = store
        .create_work_order(&new_order(Priority::Low, None))
        .await
        .unwrap();

    // A parent that does not exist: nothing is created.
    assert_not_found(
        store.create_work_order(&follow_up(9_999)).await,
        "parent work order 9999",
    );
    // Unknown alert and unknown parent: the parent is named first.
    assert_not_found(
        store
            .create_work_order(&NewWorkOrder {
                parent_id: Some(9_999),
                ..new_order(Priority::Low, Some(4_242))
            })
            .await,
        "parent work order 9999",
    );
    assert_not_found(
        store
            .create_work_order(&NewWorkOrder {
                parent_id: Some(parent.id),
                ..new_order(Priority::Low, Some(4_242))
            })
            .await,
        "alert 4242",
    );

    let ids = |q: WorkOrderQuery| async move {
        store
            .list_work_orders(&q)
            .await
            .unwrap()
            .iter()
            .map(|w| w.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(WorkOrderQuery::default()).await,
        vec![other.id, grandchild.id, child.id, parent.id]
    );
    assert_eq!(
        ids(WorkOrderQuery {
            parent_id: Some(parent.id),
            ..Default::default()
        })
        .await,
        vec![child.id]
    );
    assert_eq!(
        ids(WorkOrderQuery {
            parent_id: Some(child.id),
            ..Default::default()
        })
        .await,
        vec![grandchild.id]
    );
    assert_eq!(
        ids(WorkOrderQuery {
            alert_id: Some(alert.id),
            ..Default::default()
        })
        .await,
        vec![parent.id]
    );
    assert!(
        ids(WorkOrderQuery {
            alert_id: Some(alert.id),
            parent_id: Some(parent.id),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert!(
        ids(WorkOrderQuery {
            parent_id: Some(parent.id),
            status: Some(WorkOrderStatus::Assigned),
            ..Default::default()
        })
        .await
        .is_empty()
    );
}

async fn case_transition_times_position_and_finding(store: &Store) {
    use WorkOrderStatus as S;
    store
        .upsert_crews(&[crew("C1", true), crew("C2", true)])
        .await
        .unwrap();
    let wo = store
        .create_work_order(&new_order(Priority::Emergency, None))
        .await
        .unwrap();
    assert_eq!(
        (wo.assigned_at, wo.reached_at, wo.breached_at, &wo.finding),
        (None, None, None, &None)
    );
    let id = wo.id;
    let here = GeoPoint::new(45.470_123_4, 9.200_987_6).unwrap();
    let step = |r: TransitionRecord, change: OrderChange| async move {
        store.apply_transition(id, &r, &change).await.unwrap()
    };

    // Assign: assigned_at = the transition's time; re-assign: moved to the new one.
    let w = step(
        rec(id, S::Created, S::Assigned, "assign", 10, Some("C1")),
        to_crew("C1"),
    )
    .await;
    assert_eq!(w.assigned_at, Some(t(10)));
    let w = step(
        rec(id, S::Assigned, S::Assigned, "assign", 20, Some("C2")),
        to_crew("C2"),
    )
    .await;
    assert_eq!(w.assigned_at, Some(t(20)));
    // Accepting keeps it.
    let w = step(
        rec(id, S::Assigned, S::Accepted, "accept", 30, None),
        keep(),
    )
    .await;
    assert_eq!(w.assigned_at, Some(t(20)));
    // Unassign clears it (and the crew).
    let unassign = OrderChange {
        crew: Some(None),
        ..Default::default()
    };
    let w = step(
        rec(id, S::Accepted, S::Created, "unassign", 40, None),
        unassign,
    )
    .await;
    assert_eq!((w.assigned_at, w.crew_id.clone()), (None, None));
    let w = step(
        rec(id, S::Created, S::Assigned, "assign", 50, Some("C1")),
        to_crew("C1"),
    )
    .await;
    assert_eq!(w.assigned_at, Some(t(50)));
    step(
        rec(id, S::Assigned, S::Accepted, "accept", 60, None),
        keep(),
    )
    .await;
    let w = step(
        TransitionRecord {
            position: Some(here),
            ..rec(id, S::Accepted, S::EnRoute, "start_travel", 70, None)
        },
        keep(),
    )
    .await;
    assert_eq!(w.reached_at, None);
    // On site: reached_at set; a second on-site record (the field app repeating
    // itself) leaves it.
    let w = step(
        TransitionRecord {
            position: Some(here),
            ..rec(id, S::EnRoute, S::OnSite, "arrive", 80, None)
        },
        keep(),
    )
    .await;
    assert_eq!(w.reached_at, Some(t(80)));
    let w = step(rec(id, S::OnSite, S::OnSite, "arrive", 90, None), keep()).await;
    assert_eq!(w.reached_at, Some(t(80)));
    assert_eq!(w.assigned_at, Some(t(50)));
    assert_eq!(w.finding, None);

    // A stale compare-and-set changes nothing, the finding included.
    assert_conflict(
        store
            .apply_transition(
                id,
                &rec(id, S::EnRoute, S::Completed, "complete", 95, None),
                &OrderChange {
                    finding: Some(leak_finding("B")),
                    ..Default::default()
                },
            )
            .await,
        &format!("work order {id} is on_site"),
    );
    assert_eq!(
        store.get_work_order(id).await.unwrap().unwrap().finding,
        None
    );

    // Complete with the finding: stored, and it round-trips.
    let finding = leak_finding("A2");
    let w = step(
        TransitionRecord {
            note: Some("valve replaced".into()),
            ..rec(id, S::OnSite, S::Completed, "complete", 100, None)
        },
        OrderChange {
            finding: Some(finding.clone()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(w.finding, Some(finding.clone()));
    assert_eq!(w.status, S::Completed);
    assert_eq!(w.crew_id, Some(cid("C1")));
    assert_eq!(
        (w.assigned_at, w.reached_at, w.updated_at),
        (Some(t(50)), Some(t(80)), t(100))
    );
    assert_eq!(store.get_work_order(id).await.unwrap(), Some(w.clone()));
    let json = serde_json::to_value(&w).unwrap();
    assert_eq!(json["finding"]["leak_class"], "A2");
    assert_eq!(json["finding"]["gas_readings"][0]["percent_lel"], 12.5);

    // The history keeps each record's position (or none).
    let history = store.work_order_history(id).await.unwrap();
    let positions: Vec<(String, Option<GeoPoint>)> = history
        .iter()
        .map(|r| (r.action.clone(), r.position))
        .collect();
    assert_eq!(
        positions,
        vec![
            ("create".into(), None),
            ("assign".into(), None),
            ("assign".into(), None),
            ("accept".into(), None),
            ("unassign".into(), None),
            ("assign".into(), None),
            ("accept".into(), None),
            ("start_travel".into(), Some(here)),
            ("arrive".into(), Some(here)),
            ("arrive".into(), None),
            ("complete".into(), None),
        ]
    );
    assert_eq!(
        history[8],
        TransitionRecord {
            position: Some(here),
            ..rec(id, S::EnRoute, S::OnSite, "arrive", 80, None)
        }
    );
}

/// A finding of `kind` for meter `m`.
fn finding_of(kind: AlertKind, m: &str, at: i64) -> Finding {
    Finding {
        kind,
        ..finding(m, at, Severity::Warning)
    }
}

async fn case_alert_outcomes_and_stats(store: &Store) {
    assert!(store.outcome_stats().await.unwrap().is_empty());
    let mut alerts = Vec::new();
    for (kind, m) in [
        (AlertKind::ContinuousFlow, "M1"),
        (AlertKind::ContinuousFlow, "M2"),
        (AlertKind::Burst, "M1"),
        (AlertKind::Burst, "M3"),
        (AlertKind::ContinuousFlow, "M3"),
        (AlertKind::Tamper, "M4"),
        (AlertKind::BatteryLow, "M5"),
    ] {
        alerts.push(
            store
                .record_finding(&finding_of(kind, m, 100))
                .await
                .unwrap()
                .0,
        );
    }
    assert!(alerts.iter().all(|a| a.outcome.is_none()));
    let o1 = store
        .create_work_order(&new_order(Priority::High, Some(alerts[0].id)))
        .await
        .unwrap();
    let o2 = store
        .create_work_order(&new_order(Priority::High, Some(alerts[3].id)))
        .await
        .unwrap();
    let o3 = store
        .create_work_order(&new_order(Priority::Normal, Some(alerts[5].id)))
        .await
        .unwrap();
    // Order 1 covers alerts 0, 1 and 2; order 2 alerts 3 and 4; order 3 alert 5.
    // Alert 6 is never escalated.
    for (i, order) in [(0, &o1), (1, &o1), (2, &o1), (3, &o2), (4, &o2), (5, &o3)] {
        store
            .set_alert_status(
                alerts[i].id,
                AlertStatus::Open,
                AlertStatus::Escalated,
                None,
                Some(order.id),
            )
            .await
            .unwrap();
    }
    let ids = |v: Vec<leakwatch_core::Alert>| v.iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.alerts_of_order(o1.id).await.unwrap()),
        vec![alerts[0].id, alerts[1].id, alerts[2].id]
    );
    assert_eq!(
        ids(store.alerts_of_order(o2.id).await.unwrap()),
        vec![alerts[3].id, alerts[4].id]
    );
    assert!(store.alerts_of_order(9_999).await.unwrap().is_empty());

    let stat = |kind, escalated, confirmed, false_positive| OutcomeStat {
        kind,
        escalated,
        confirmed,
        false_positive,
    };
    // Escalated, no outcome yet. Sorted by kind text: burst, continuous_flow, tamper.
    assert_eq!(
        store.outcome_stats().await.unwrap(),
        vec![
            stat(AlertKind::Burst, 2, 0, 0),
            stat(AlertKind::ContinuousFlow, 3, 0, 0),
            stat(AlertKind::Tamper, 1, 0, 0),
        ]
    );

    assert_eq!(
        store
            .set_outcome_for_order(o1.id, AlertOutcome::ConfirmedLeak, t(200))
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .set_outcome_for_order(o2.id, AlertOutcome::FalsePositive, t(210))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .set_outcome_for_order(9_999, AlertOutcome::FalsePositive, t(210))
            .await
            .unwrap(),
        0
    );
    let a0 = store.get_alert(alerts[0].id).await.unwrap().unwrap();
    assert_eq!(a0.outcome, Some(AlertOutcome::ConfirmedLeak));
    assert_eq!(
        serde_json::to_value(&a0).unwrap()["outcome"],
        "confirmed_leak"
    );
    assert_eq!(
        store
            .get_alert(alerts[6].id)
            .await
            .unwrap()
            .unwrap()
            .outcome,
        None
    );
    assert!(
        store
            .alerts_of_order(o2.id)
            .await
            .unwrap()
            .iter()
            .all(|a| a.outcome == Some(AlertOutcome::FalsePositive))
    );
    assert_eq!(
        store.outcome_stats().await.unwrap(),
        vec![
            stat(AlertKind::Burst, 2, 1, 1),
            stat(AlertKind::ContinuousFlow, 3, 2, 1),
            stat(AlertKind::Tamper, 1, 0, 0),
        ]
    );
    // A later finding overwrites.
    store
        .set_outcome_for_order(o1.id, AlertOutcome::FalsePositive, t(300))
        .await
        .unwrap();
    assert_eq!(
        store.outcome_stats().await.unwrap(),
        vec![
            stat(AlertKind::Burst, 2, 0, 2),
            stat(AlertKind::ContinuousFlow, 3, 0, 3),
            stat(AlertKind::Tamper, 1, 0, 0),
        ]
    );
    let json = serde_json::to_value(store.outcome_stats().await.unwrap()).unwrap();
    assert_eq!(
        json[0],
        serde_json::json!({"kind": "burst", "escalated": 2, "confirmed": 0, "false_positive": 2})
    );
}

async fn case_orders_awaiting_acceptance(store: &Store) {
    use WorkOrderStatus as S;
    store
        .upsert_crews(&[crew("C1", true), crew("C2", true)])
        .await
        .unwrap();
    let late = assigned_order(store, Priority::High, "C1", 20).await;
    let early = assigned_order(store, Priority::Normal, "C2", 10).await;
    let accepted = assigned_order(store, Priority::High, "C1", 5).await;
    walk(store, accepted, 15, &[(S::Assigned, S::Accepted, "accept")]).await;
    let recent = assigned_order(store, Priority::High, "C2", 40).await;
    let unassigned = assigned_order(store, Priority::High, "C1", 5).await;
    store
        .apply_transition(
            unassigned,
            &rec(unassigned, S::Assigned, S::Created, "unassign", 12, None),
            &OrderChange {
                crew: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let never = store
        .create_work_order(&new_order(Priority::High, None))
        .await
        .unwrap()
        .id;
    let ids = |before: i64| async move {
        store
            .orders_awaiting_acceptance(t(before))
            .await
            .unwrap()
            .iter()
            .map(|w| w.id)
            .collect::<Vec<_>>()
    };
    assert!(ids(10).await.is_empty(), "strictly before");
    assert_eq!(ids(11).await, vec![early]);
    assert_eq!(ids(30).await, vec![early, late], "oldest assignment first");
    assert_eq!(ids(1_000).await, vec![early, late, recent]);
    // Re-assigning restarts the clock.
    store
        .apply_transition(
            early,
            &rec(early, S::Assigned, S::Assigned, "assign", 35, Some("C1")),
            &to_crew("C1"),
        )
        .await
        .unwrap();
    assert_eq!(ids(30).await, vec![late]);
    let all = ids(1_000).await;
    assert_eq!(all, vec![late, early, recent]);
    assert!(!all.contains(&never) && !all.contains(&unassigned) && !all.contains(&accepted));
}

async fn case_deadlines_due_and_breached(store: &Store) {
    use WorkOrderStatus as S;
    store.upsert_crews(&[crew("C1", true)]).await.unwrap();
    let due = |secs: Option<i64>| NewWorkOrder {
        due_at: secs.map(t),
        ..new_order(Priority::High, None)
    };
    let mut ids = Vec::new();
    for secs in [Some(300), Some(100), Some(200), None, Some(150), Some(50)] {
        ids.push(store.create_work_order(&due(secs)).await.unwrap().id);
    }
    // ids[4] (due 150) is completed; ids[5] (due 50) is cancelled.
    let four = ids[4];
    store
        .apply_transition(
            four,
            &rec(four, S::Created, S::Assigned, "assign", 10, Some("C1")),
            &to_crew("C1"),
        )
        .await
        .unwrap();
    walk(
        store,
        four,
        20,
        &[
            (S::Assigned, S::Accepted, "accept"),
            (S::Accepted, S::EnRoute, "start_travel"),
            (S::EnRoute, S::OnSite, "arrive"),
            (S::OnSite, S::Completed, "complete"),
        ],
    )
    .await;
    walk(store, ids[5], 20, &[(S::Created, S::Cancelled, "cancel")]).await;
    // ids[0] is on its way: still active.
    let zero = ids[0];
    store
        .apply_transition(
            zero,
            &rec(zero, S::Created, S::Assigned, "assign", 10, Some("C1")),
            &to_crew("C1"),
        )
        .await
        .unwrap();

    let active: Vec<i64> = store
        .active_work_orders()
        .await
        .unwrap()
        .iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(active, vec![ids[0], ids[1], ids[2], ids[3]]);

    let due_ids = |before: i64| async move {
        store
            .orders_due_before(t(before))
            .await
            .unwrap()
            .iter()
            .map(|w| w.id)
            .collect::<Vec<_>>()
    };
    assert!(
        due_ids(100).await.is_empty(),
        "strictly before; final ones excluded"
    );
    assert_eq!(
        due_ids(201).await,
        vec![ids[1], ids[2]],
        "earliest deadline first"
    );
    assert_eq!(due_ids(10_000).await, vec![ids[1], ids[2], ids[0]]);

    // Marking: once; the first time stays.
    assert_eq!(store.count_breached().await.unwrap(), 0);
    assert!(store.mark_breached(ids[1], t(110)).await.unwrap());
    assert!(!store.mark_breached(ids[1], t(500)).await.unwrap());
    assert_eq!(
        store
            .get_work_order(ids[1])
            .await
            .unwrap()
            .unwrap()
            .breached_at,
        Some(t(110))
    );
    assert_eq!(store.count_breached().await.unwrap(), 1);
    assert_eq!(due_ids(10_000).await, vec![ids[2], ids[0]]);
    // A final order can be marked too (the caller decides), and counts.
    assert!(store.mark_breached(four, t(160)).await.unwrap());
    assert_eq!(store.count_breached().await.unwrap(), 2);
    assert_not_found(store.mark_breached(9_999, t(0)).await, "work order 9999");
    // Marking changes nothing else.
    let w = store.get_work_order(ids[1]).await.unwrap().unwrap();
    assert_eq!((w.status, w.updated_at), (S::Created, w.created_at));
}

async fn case_set_work_order_priority(store: &Store) {
    let wo = store
        .create_work_order(&new_order(Priority::Normal, None))
        .await
        .unwrap();
    let up = store
        .set_work_order_priority(wo.id, Priority::Emergency, Some(t(900)))
        .await
        .unwrap();
    assert_eq!(up.priority, Priority::Emergency);
    assert_eq!(up.due_at, Some(t(900)));
    assert_eq!(up.updated_at, wo.updated_at, "updated_at is left");
    assert_eq!(up.status, wo.status);
    assert_eq!(store.get_work_order(wo.id).await.unwrap(), Some(up.clone()));
    // No history entry either.
    assert_eq!(store.work_order_history(wo.id).await.unwrap().len(), 1);
    let down = store
        .set_work_order_priority(wo.id, Priority::Low, None)
        .await
        .unwrap();
    assert_eq!((down.priority, down.due_at), (Priority::Low, None));
    assert_not_found(
        store
            .set_work_order_priority(9_999, Priority::Low, None)
            .await,
        "work order 9999",
    );
}

/// A whole-second time `min` minutes into hour `h` (hour 0 starts on a UTC hour).
fn at(h: i64, min: i64) -> Timestamp {
    // t(2_800) = 1_700_002_800 s = 472_223 h exactly.
    t(2_800 + h * 3_600 + min * 60)
}

fn flagged(m: &str, when: Timestamp, vol: f64, flags: u16) -> (Reading, ReadingFlags) {
    (
        Reading {
            t: when,
            ..reading(m, 0, vol)
        },
        ReadingFlags(flags),
    )
}

/// How many rows `readings_hourly` (the archive of dropped hours) holds.
async fn archived_hours(store: &Store) -> i64 {
    let sql = "SELECT count(*) FROM readings_hourly";
    match store {
        Store::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        Store::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p.pool()).await.unwrap(),
    }
}

fn hour_row(m: &str, h: i64, first: (Timestamp, f64), last: (Timestamp, f64), n: i64) -> HourlyRow {
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

async fn case_duplicates_and_conflicts(store: &Store) {
    let first = vec![
        flagged("M1", at(0, 0), 1.0, 0),
        flagged("M1", at(0, 10), 2.0, 0),
    ];
    assert_eq!(
        store.insert_batch(&first, t(100)).await.unwrap(),
        InsertOutcome {
            inserted: 2,
            duplicates: 0,
            conflicts: 0
        }
    );
    let second = vec![
        flagged("M1", at(0, 0), 1.0, 0),  // duplicate of a stored reading
        flagged("M1", at(0, 10), 2.5, 0), // conflict with a stored reading
        flagged("M1", at(0, 20), 3.0, 0), // new
        flagged("M1", at(0, 20), 3.0, 1), // duplicate within the batch
        flagged("M1", at(0, 20), 3.5, 0), // conflict within the batch
        flagged("M1", at(0, 0), 1.0 + 1e-12, 0), // same volume after rounding
        flagged("M2", at(0, 0), 7.0, 0),  // same time, other meter: new
    ];
    assert_eq!(
        store.insert_batch(&second, t(200)).await.unwrap(),
        InsertOutcome {
            inserted: 2,
            duplicates: 3,
            conflicts: 2
        }
    );
    // Stored readings are never changed.
    let vols: Vec<f64> = store
        .readings(&mid("M1"), None, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.vol)
        .collect();
    assert_eq!(vols, vec![1.0, 2.0, 3.0]);
    assert_eq!(store.count_readings().await.unwrap(), 4);

    // The conflicts, newest first, as they arrived.
    assert_eq!(store.count_conflicts().await.unwrap(), 2);
    let c = store.list_conflicts(10).await.unwrap();
    assert_eq!(c.len(), 2);
    assert!(c[0].id > c[1].id);
    assert_eq!(
        (&c[0].meter_id, c[0].t, c[0].stored_vol, c[0].received_vol),
        (&mid("M1"), at(0, 20), 3.0, 3.5)
    );
    assert_eq!(
        (&c[1].meter_id, c[1].t, c[1].stored_vol, c[1].received_vol),
        (&mid("M1"), at(0, 10), 2.0, 2.5)
    );
    assert!(c.iter().all(|c| c.received_at == t(200)));
    let json = serde_json::to_value(&c[1]).unwrap();
    assert_eq!(json["meter_id"], "M1");
    assert_eq!(json["stored_vol"], 2.0);
    assert_eq!(json["received_vol"], 2.5);

    // Every arrival of a conflicting value is logged; limits apply.
    let third = vec![flagged("M1", at(0, 10), 2.5, 0)];
    assert_eq!(
        store.insert_batch(&third, t(300)).await.unwrap(),
        InsertOutcome {
            inserted: 0,
            duplicates: 0,
            conflicts: 1
        }
    );
    assert_eq!(store.count_conflicts().await.unwrap(), 3);
    let newest = store.list_conflicts(1).await.unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].received_at, t(300));
    // Only the stored readings count in the hourly rollup.
    let hours = store.hourly(&mid("M1"), None, None).await.unwrap();
    assert_eq!(
        hours,
        vec![hour_row("M1", 0, (at(0, 0), 1.0), (at(0, 20), 3.0), 3)]
    );
}

async fn case_reading_flags_round_trip(store: &Store) {
    let rows = vec![
        flagged("M1", at(0, 0), 1.0, 0),
        flagged("M1", at(0, 10), 0.5, ReadingFlags::COUNTER_REGRESSION),
        flagged(
            "M1",
            at(0, 20),
            90.0,
            ReadingFlags::JUMP | ReadingFlags::LATE,
        ),
        flagged("M1", at(0, 30), 91.0, 0x8000), // a bit the store does not know
    ];
    store.insert_batch(&rows, t(0)).await.unwrap();
    let got = store
        .readings_flagged(&mid("M1"), None, None, 10)
        .await
        .unwrap();
    assert_eq!(got, rows);
    assert_eq!(got[2].1.names(), vec!["late", "jump"]);
    // A duplicate with other flags changes nothing.
    let again = vec![flagged("M1", at(0, 0), 1.0, ReadingFlags::LATE)];
    assert_eq!(
        store.insert_batch(&again, t(1)).await.unwrap().duplicates,
        1
    );
    let got = store
        .readings_flagged(&mid("M1"), Some(at(0, 0)), Some(at(0, 15)), 10)
        .await
        .unwrap();
    assert_eq!(got, rows[..2].to_vec());
    // insert_readings stores no flags.
    store
        .insert_readings(&[Reading {
            t: at(1, 0),
            ..reading("M1", 0, 92.0)
        }])
        .await
        .unwrap();
    let last = store
        .readings_flagged(&mid("M1"), Some(at(1, 0)), None, 10)
        .await
        .unwrap();
    assert_eq!(last[0].1, ReadingFlags::default());
}

async fn case_latest_readings(store: &Store) {
    assert!(store.latest_readings(&[]).await.unwrap().is_empty());
    let rows = vec![
        flagged("M1", at(0, 0), 1.0, 0),
        flagged("M1", at(2, 30), 3.0, 0),
        flagged("M2", at(5, 0), 50.0, 0),
    ];
    store.insert_batch(&rows, t(0)).await.unwrap();
    // A late reading does not move the latest.
    store
        .insert_batch(&[flagged("M1", at(1, 0), 2.0, ReadingFlags::LATE)], t(1))
        .await
        .unwrap();
    let latest = store
        .latest_readings(&[mid("M1"), mid("M2"), mid("M3"), mid("M1")])
        .await
        .unwrap();
    assert_eq!(latest.len(), 2, "{latest:?}");
    assert_eq!(latest[&mid("M1")], (at(2, 30), 3.0));
    assert_eq!(latest[&mid("M2")], (at(5, 0), 50.0));
    // Newer in the same hour, then in a later hour.
    store
        .insert_batch(
            &[
                flagged("M1", at(2, 45), 3.5, 0),
                flagged("M2", at(7, 1), 51.0, 0),
            ],
            t(2),
        )
        .await
        .unwrap();
    let latest = store
        .latest_readings(&[mid("M1"), mid("M2")])
        .await
        .unwrap();
    assert_eq!(latest[&mid("M1")], (at(2, 45), 3.5));
    assert_eq!(latest[&mid("M2")], (at(7, 1), 51.0));
    // Retention does not make the ingestor forget: the archive answers.
    store.drop_raw_readings_before(at(10, 0)).await.unwrap();
    assert_eq!(store.count_readings().await.unwrap(), 0);
    let after = store
        .latest_readings(&[mid("M1"), mid("M2")])
        .await
        .unwrap();
    assert_eq!(after, latest);
    // A late reading stored after archiving is raw again, but older than the archive's
    // latest: the latest stays. A newer one moves it.
    store
        .insert_batch(
            &[
                flagged("M1", at(1, 30), 2.5, ReadingFlags::LATE),
                flagged("M2", at(8, 0), 52.0, 0),
            ],
            t(3),
        )
        .await
        .unwrap();
    let latest = store
        .latest_readings(&[mid("M1"), mid("M2"), mid("M3")])
        .await
        .unwrap();
    assert_eq!(latest.len(), 2, "{latest:?}");
    assert_eq!(latest[&mid("M1")], (at(2, 45), 3.5));
    assert_eq!(latest[&mid("M2")], (at(8, 0), 52.0));
    // Only part of the raw readings dropped: the newest raw reading answers.
    store.drop_raw_readings_before(at(7, 30)).await.unwrap();
    assert_eq!(store.count_readings().await.unwrap(), 1);
    assert_eq!(
        store.latest_readings(&[mid("M2")]).await.unwrap()[&mid("M2")],
        (at(8, 0), 52.0)
    );
}

async fn case_hourly_rollup_across_batches(store: &Store) {
    let first = vec![
        flagged("M1", at(0, 30), 2.0, 0),
        flagged("M1", at(0, 10), 1.0, 0),
        flagged("M1", at(1, 0), 3.0, 0),
        flagged("M1", at(1, 50), 4.0, 0),
        flagged("M2", at(0, 59), 10.0, 0),
    ];
    store.insert_batch(&first, t(0)).await.unwrap();
    // Inserting writes no rollup: the hours are aggregated from the raw readings.
    assert_eq!(archived_hours(store).await, 0);
    assert_eq!(
        store.hourly(&mid("M1"), None, None).await.unwrap(),
        vec![
            hour_row("M1", 0, (at(0, 10), 1.0), (at(0, 30), 2.0), 2),
            hour_row("M1", 1, (at(1, 0), 3.0), (at(1, 50), 4.0), 2),
        ]
    );
    let ms = chrono::Duration::milliseconds(1);
    let second = vec![
        flagged("M1", at(0, 5), 0.5, ReadingFlags::LATE), // late: the new first of hour 0
        flagged("M1", at(0, 40), 2.5, 0),                 // the new last of hour 0
        flagged("M1", at(1, 20), 3.5, 0),                 // in between: first/last stay
        flagged("M1", at(2, 0), 5.0, 0),                  // a new hour, on its boundary
        flagged("M1", at(3, 0) - ms, 5.5, 0),             // the last instant of hour 2
        flagged("M1", at(0, 10), 1.0, 0),                 // duplicate: not counted
        flagged("M1", at(1, 0), 9.0, 0),                  // conflict: not counted
    ];
    assert_eq!(
        store.insert_batch(&second, t(1)).await.unwrap(),
        InsertOutcome {
            inserted: 5,
            duplicates: 1,
            conflicts: 1
        }
    );
    let all = store.hourly(&mid("M1"), None, None).await.unwrap();
    assert_eq!(
        all,
        vec![
            hour_row("M1", 0, (at(0, 5), 0.5), (at(0, 40), 2.5), 4),
            hour_row("M1", 1, (at(1, 0), 3.0), (at(1, 50), 4.0), 3),
            hour_row("M1", 2, (at(2, 0), 5.0), (at(3, 0) - ms, 5.5), 2),
        ]
    );
    // Hours starting in [from, to).
    assert_eq!(
        store
            .hourly(&mid("M1"), Some(at(1, 0)), Some(at(2, 0)))
            .await
            .unwrap(),
        all[1..2].to_vec()
    );
    assert_eq!(
        store
            .hourly(&mid("M1"), Some(at(0, 30)), None)
            .await
            .unwrap(),
        all[1..].to_vec()
    );
    assert_eq!(
        store
            .hourly(&mid("M1"), None, Some(at(0, 1)))
            .await
            .unwrap(),
        all[..1].to_vec()
    );
    assert_eq!(
        store.hourly(&mid("M2"), None, None).await.unwrap(),
        vec![hour_row("M2", 0, (at(0, 59), 10.0), (at(0, 59), 10.0), 1)]
    );
    assert!(
        store
            .hourly(&mid("M3"), None, None)
            .await
            .unwrap()
            .is_empty()
    );
    let json = serde_json::to_value(&all[0]).unwrap();
    assert_eq!(json["meter_id"], "M1");
    assert_eq!(json["n"], 4);
    assert_eq!(json["first_vol"], 0.5);
    assert_eq!(archived_hours(store).await, 0);
}

async fn case_retention_keeps_the_rollup(store: &Store) {
    let rows: Vec<_> = (0..6)
        .flat_map(|h| {
            [
                flagged("M1", at(h, 0), h as f64, 0),
                flagged("M1", at(h, 30), h as f64 + 0.5, 0),
                flagged("M2", at(h, 15), 100.0 + h as f64, 0),
            ]
        })
        .collect();
    store.insert_batch(&rows, t(0)).await.unwrap();
    let before = store.hourly(&mid("M1"), None, None).await.unwrap();
    assert_eq!(before.len(), 6);

    let before_m2 = store.hourly(&mid("M2"), None, None).await.unwrap();
    assert_eq!(before_m2.len(), 6);
    assert_eq!(archived_hours(store).await, 0);

    // Everything before hour 4 goes: 4 hours x 3 readings, archived as 4 x 2 hours.
    assert_eq!(store.drop_raw_readings_before(at(4, 0)).await.unwrap(), 12);
    assert_eq!(store.count_readings().await.unwrap(), 6);
    assert_eq!(archived_hours(store).await, 8);
    let left = store.readings(&mid("M1"), None, None, 100).await.unwrap();
    assert_eq!(left.first().unwrap().t, at(4, 0));
    assert_eq!(store.hourly(&mid("M1"), None, None).await.unwrap(), before);
    assert_eq!(
        store.hourly(&mid("M2"), None, None).await.unwrap(),
        before_m2
    );
    // Ranges cut across archived and raw hours alike.
    assert_eq!(
        store
            .hourly(&mid("M1"), Some(at(3, 0)), Some(at(5, 0)))
            .await
            .unwrap(),
        before[3..5].to_vec()
    );
    // Nothing more to drop.
    assert_eq!(store.drop_raw_readings_before(at(4, 0)).await.unwrap(), 0);
    assert_eq!(archived_hours(store).await, 8);

    // A late reading into an archived hour is merged with it when read...
    let outcome = store
        .insert_batch(&[flagged("M1", at(1, 10), 1.25, ReadingFlags::LATE)], t(1))
        .await
        .unwrap();
    assert_eq!(outcome.inserted, 1);
    let h1 = hour_row("M1", 1, (at(1, 0), 1.0), (at(1, 30), 1.5), 3);
    let got = store
        .hourly(&mid("M1"), Some(at(1, 0)), Some(at(2, 0)))
        .await
        .unwrap();
    assert_eq!(got, vec![h1.clone()]);
    // ... and into it when dropped in turn.
    assert_eq!(store.drop_raw_readings_before(at(4, 0)).await.unwrap(), 1);
    assert_eq!(archived_hours(store).await, 8);
    let got = store
        .hourly(&mid("M1"), Some(at(1, 0)), Some(at(2, 0)))
        .await
        .unwrap();
    assert_eq!(got, vec![h1]);
}

async fn case_retention_archives_partial_hours_and_late_readings(store: &Store) {
    let rows = vec![
        flagged("M1", at(0, 10), 1.0, 0),
        flagged("M1", at(0, 20), 2.0, 0),
        flagged("M1", at(0, 40), 4.0, 0),
        flagged("M1", at(1, 0), 5.0, 0),
    ];
    store.insert_batch(&rows, t(0)).await.unwrap();
    let whole = vec![
        hour_row("M1", 0, (at(0, 10), 1.0), (at(0, 40), 4.0), 3),
        hour_row("M1", 1, (at(1, 0), 5.0), (at(1, 0), 5.0), 1),
    ];
    assert_eq!(store.hourly(&mid("M1"), None, None).await.unwrap(), whole);
    // Retention cuts hour 0 in two: its first two readings are archived, the last stays
    // raw; read back, the hour is whole.
    assert_eq!(store.drop_raw_readings_before(at(0, 30)).await.unwrap(), 2);
    assert_eq!(archived_hours(store).await, 1);
    assert_eq!(store.hourly(&mid("M1"), None, None).await.unwrap(), whole);
    // Late readings into the archived part: a new first, and one in between.
    store
        .insert_batch(
            &[
                flagged("M1", at(0, 5), 0.5, ReadingFlags::LATE),
                flagged("M1", at(0, 15), 1.5, ReadingFlags::LATE),
            ],
            t(1),
        )
        .await
        .unwrap();
    let merged = vec![
        hour_row("M1", 0, (at(0, 5), 0.5), (at(0, 40), 4.0), 5),
        hour_row("M1", 1, (at(1, 0), 5.0), (at(1, 0), 5.0), 1),
    ];
    assert_eq!(store.hourly(&mid("M1"), None, None).await.unwrap(), merged);
    // The rest of the hour goes: the archived row absorbs it, nothing changes when read.
    assert_eq!(store.drop_raw_readings_before(at(1, 0)).await.unwrap(), 3);
    assert_eq!(archived_hours(store).await, 1);
    assert_eq!(store.hourly(&mid("M1"), None, None).await.unwrap(), merged);
    assert_eq!(store.drop_raw_readings_before(at(2, 0)).await.unwrap(), 1);
    assert_eq!(archived_hours(store).await, 2);
    assert_eq!(store.count_readings().await.unwrap(), 0);
    assert_eq!(store.hourly(&mid("M1"), None, None).await.unwrap(), merged);
    assert_eq!(
        store.latest_readings(&[mid("M1")]).await.unwrap()[&mid("M1")],
        (at(1, 0), 5.0)
    );
    // Other meters are untouched.
    assert!(
        store
            .hourly(&mid("M2"), None, None)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn case_meter_installation_and_capacity(store: &Store) {
    let mut g4 = meter("M1", "D1");
    g4.installed_at = Some(t(-86_400 * 365));
    g4.max_flow_m3h = Some(6.0);
    let plain = meter("M2", "D1");
    let mut odd = meter("M3", "D1");
    odd.max_flow_m3h = Some(f64::NAN);
    store
        .upsert_meters(&[g4.clone(), plain.clone(), odd])
        .await
        .unwrap();
    assert_eq!(store.get_meter(&mid("M1")).await.unwrap(), Some(g4.clone()));
    assert_eq!(store.get_meter(&mid("M2")).await.unwrap(), Some(plain));
    let m3 = store.get_meter(&mid("M3")).await.unwrap().unwrap();
    assert_eq!(m3.max_flow_m3h, None, "NaN is stored as NULL");
    let listed = store.list_meters(None, 10).await.unwrap();
    assert_eq!(listed[0], g4);
    assert_eq!(store.all_meters().await.unwrap()[0], g4);
    // Updates replace them, back to unknown too.
    let mut changed = g4.clone();
    changed.installed_at = None;
    changed.max_flow_m3h = Some(10.0);
    store.upsert_meters(&[changed.clone()]).await.unwrap();
    assert_eq!(store.get_meter(&mid("M1")).await.unwrap(), Some(changed));
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
            let latest = sqlx::migrate!("./migrations/sqlite")
                .migrations
                .iter()
                .map(|m| m.version)
                .max();
            assert_eq!(Some(v), latest);
        }
        Store::Postgres(p) => {
            let pool = p.pool();
            let v: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
                .fetch_one(pool)
                .await
                .unwrap();
            let latest = sqlx::migrate!("./migrations/postgres")
                .migrations
                .iter()
                .map(|m| m.version)
                .max();
            assert_eq!(Some(v), latest);
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
    let Ok(admin) = std::env::var(PG_ENV) else {
        println!("skipped: {PG_ENV} not set");
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
    let Ok(admin) = std::env::var(PG_ENV) else {
        println!("skipped: {PG_ENV} not set");
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
    let Ok(admin) = std::env::var(PG_ENV) else {
        println!("skipped: {PG_ENV} not set");
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
    let Ok(admin) = std::env::var(PG_ENV) else {
        println!("skipped: {PG_ENV} not set");
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

/// A scenario touching every outcome: new rows, late rows, repeats across and within
/// batches, conflicts, several meters and hours.
fn scenario() -> Vec<Vec<(Reading, ReadingFlags)>> {
    vec![
        vec![
            flagged("M1", at(0, 10), 1.0, 0),
            flagged("M1", at(0, 40), 2.0, 0),
            flagged("M2", at(0, 0), 5.0, ReadingFlags::JUMP),
            flagged("M1", at(0, 40), 2.0, 0), // within the batch: duplicate
            flagged("M1", at(1, 5), 3.0, 0),
        ],
        vec![
            flagged("M1", at(1, 5), 3.0, 0),                  // duplicate
            flagged("M1", at(0, 40), 2.2, 0),                 // conflict
            flagged("M1", at(0, 0), 0.5, ReadingFlags::LATE), // late, new first of hour 0
            flagged("M1", at(1, 30), 3.5, 0),                 // same hour as the latest
            flagged("M1", at(1, 30), 3.6, 0),                 // within the batch: conflict
            flagged("M2", at(2, 0), 6.0, 0),
            flagged("M3", at(2, 0), 9.0, 0), // a meter never seen
        ],
        vec![flagged("M2", at(2, 0), 6.0, 0)],
    ]
}

type Observed = (
    Vec<InsertOutcome>,
    Vec<Vec<(Reading, ReadingFlags)>>,
    Vec<Vec<HourlyRow>>,
    Vec<(String, Timestamp, f64, f64)>,
);

async fn observe(store: &Store, path: Option<crate::PgInsertPath>) -> Observed {
    let mut outcomes = Vec::new();
    for batch in scenario() {
        outcomes.push(match path {
            Some(p) => store.insert_batch_via(p, &batch, t(0)).await.unwrap(),
            None => store.insert_batch(&batch, t(0)).await.unwrap(),
        });
    }
    let mut readings = Vec::new();
    let mut hours = Vec::new();
    for m in ["M1", "M2", "M3"] {
        readings.push(
            store
                .readings_flagged(&mid(m), None, None, 100)
                .await
                .unwrap(),
        );
        hours.push(store.hourly(&mid(m), None, None).await.unwrap());
    }
    let conflicts = store
        .list_conflicts(100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.meter_id.to_string(), c.t, c.stored_vol, c.received_vol))
        .collect();
    (outcomes, readings, hours, conflicts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_insert_paths_agree_with_sqlite() {
    let Ok(admin) = std::env::var(PG_ENV) else {
        println!("skipped: {PG_ENV} not set");
        return;
    };
    let reference = {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        observe(&store, None).await
    };
    assert_eq!(
        reference.0,
        vec![
            InsertOutcome {
                inserted: 4,
                duplicates: 1,
                conflicts: 0
            },
            InsertOutcome {
                inserted: 4,
                duplicates: 1,
                conflicts: 2
            },
            InsertOutcome {
                inserted: 0,
                duplicates: 1,
                conflicts: 0
            },
        ]
    );
    for path in crate::PgInsertPath::ALL {
        let url = fresh_pg_database(&admin).await.unwrap();
        let store = Store::connect(&url).await.unwrap();
        let got = tokio::spawn({
            let store = store.clone();
            async move { observe(&store, Some(path)).await }
        })
        .await;
        store.close().await;
        drop_pg_database(&admin, &url).await;
        assert_eq!(got.unwrap(), reference, "{path:?}");
    }
}

/// Another writer stores a key after the default path probed for its meters: the COPY
/// meets it, rolls back to its savepoint, and the upserting statement takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_copy_falls_back_when_another_writer_races() {
    let Ok(admin) = std::env::var(PG_ENV) else {
        println!("skipped: {PG_ENV} not set");
        return;
    };
    let url = fresh_pg_database(&admin).await.unwrap();
    let store = Store::connect(&url).await.unwrap();
    let result = tokio::spawn({
        let store = store.clone();
        async move {
            let Store::Postgres(pg) = &store else {
                unreachable!()
            };
            // The other writer: a reading of M1 at hour 0 and one of M2 at 0:10, not
            // committed yet.
            let mut other = pg.pool().begin().await.unwrap();
            for (m, when, vol) in [("M1", at(0, 0), 1.0), ("M2", at(0, 10), 10.0)] {
                sqlx::query("INSERT INTO readings (meter_id, t, vol) VALUES ($1, $2, $3)")
                    .bind(m)
                    .bind(when)
                    .bind(vol)
                    .execute(&mut *other)
                    .await
                    .unwrap();
            }
            // M1: same key, another volume (a conflict). M2: the same reading again (a
            // duplicate) and a new one. Both COPYs wait for the other writer, then meet
            // its keys.
            let first = tokio::spawn({
                let store = store.clone();
                async move {
                    store
                        .insert_batch(
                            &[
                                flagged("M1", at(0, 0), 1.5, 0),
                                flagged("M1", at(1, 0), 2.0, 0),
                            ],
                            t(0),
                        )
                        .await
                }
            });
            let second = tokio::spawn({
                let store = store.clone();
                async move {
                    store
                        .insert_batch(
                            &[
                                flagged("M2", at(0, 10), 10.0, 0),
                                flagged("M2", at(0, 20), 11.0, 0),
                            ],
                            t(0),
                        )
                        .await
                }
            });
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            assert!(!first.is_finished() && !second.is_finished(), "both wait");
            other.commit().await.unwrap();
            assert_eq!(
                first.await.unwrap().unwrap(),
                InsertOutcome {
                    inserted: 1,
                    duplicates: 0,
                    conflicts: 1
                }
            );
            assert_eq!(
                second.await.unwrap().unwrap(),
                InsertOutcome {
                    inserted: 1,
                    duplicates: 1,
                    conflicts: 0
                }
            );
            assert_eq!(
                store.hourly(&mid("M1"), None, None).await.unwrap(),
                vec![
                    hour_row("M1", 0, (at(0, 0), 1.0), (at(0, 0), 1.0), 1),
                    hour_row("M1", 1, (at(1, 0), 2.0), (at(1, 0), 2.0), 1),
                ]
            );
            assert_eq!(
                store.hourly(&mid("M2"), None, None).await.unwrap(),
                vec![hour_row("M2", 0, (at(0, 10), 10.0), (at(0, 20), 11.0), 2)]
            );
            assert_eq!(store.count_conflicts().await.unwrap(), 1);
            assert_eq!(store.count_readings().await.unwrap(), 4);
        }
    })
    .await;
    store.close().await;
    drop_pg_database(&admin, &url).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
