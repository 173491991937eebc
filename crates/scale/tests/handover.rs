//! A meter moved to a district of another partition hands its detectors' state to
//! that partition's owner (issue 14): the state its former partition last committed
//! is adopted by the new partition's detectors at the meter's first message there.
//! One moved between two districts of the same partition is judged under its new
//! district once the worker's registry feed has the change, and keeps its state.
//! PostgreSQL (`LEAKWATCH_TEST_PG`) and an in-memory log; no NATS.

use chrono::{DurationRound, TimeDelta, Utc};
use leakwatch_core::{DistrictId, GeoPoint, Meter, MeterId, MeterKind, MeterStatus, Reading};
use leakwatch_detect::DetectConfig;
use leakwatch_ingest::IngestConfig;
use leakwatch_log::memory::MemoryLog;
use leakwatch_log::{Append, Log, partition_of};
use leakwatch_scale::status::WorkerStatus;
use leakwatch_scale::worker::{Shared, WorkerConfig, follow_registry, partition_task};
use leakwatch_store::Store;
use leakwatch_store::testing::{PG_ENV, drop_pg_database, fresh_pg_database, required_env};
use leakwatch_wire::Uplink;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const P: u32 = 8;
const PREFIX: &str = "gas";

fn meter(id: &str, district: &DistrictId) -> Meter {
    Meter {
        id: MeterId::parse(id).unwrap(),
        district: district.clone(),
        kind: MeterKind::Customer,
        location: GeoPoint { lat: 0.0, lon: 0.0 },
        report_every_h: 24,
        status: MeterStatus::Active,
        installed_at: None,
        max_flow_m3h: None,
    }
}

/// One message of `m` with hourly readings `hours` (index `vol(h)`).
async fn push(
    log: &MemoryLog,
    m: &Meter,
    t0: chrono::DateTime<Utc>,
    hours: std::ops::Range<i64>,
    vol: impl Fn(i64) -> f64,
) -> u64 {
    let readings: Vec<Reading> = hours
        .clone()
        .map(|h| Reading {
            meter: m.id.clone(),
            t: t0 + TimeDelta::hours(h),
            vol: vol(h),
            temp: Some(10.0),
            flow_max: None,
            pressure: None,
        })
        .collect();
    let up = Uplink {
        district: m.district.clone(),
        meter: m.id.clone(),
        readings,
        events: vec![],
        battery: None,
        valve: None,
    };
    log.append(Append {
        partition: partition_of(m.district.as_str(), P),
        key: m.district.to_string(),
        dedupe_id: format!("{}:{}:{}", m.id, m.district, hours.start),
        topic: leakwatch_wire::uplink_topic(PREFIX, &m.district, &m.id),
        received_at_ms: Utc::now().timestamp_millis(),
        payload: leakwatch_wire::encode(&up).into(),
    })
    .await
    .unwrap()
    .seq
}

/// Waits until every partition has committed what the log holds.
async fn committed(store: &Store, log: &MemoryLog) {
    let started = Instant::now();
    loop {
        let cps = store.partition_checkpoints().await.unwrap();
        let mut all = true;
        for p in 0..P {
            let last = log.last_seq(p).await.unwrap();
            let done = cps
                .iter()
                .find(|c| c.partition == p)
                .map_or(0, |c| c.last_seq);
            all &= done >= last;
        }
        if all {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not committed: {cps:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_moved_to_another_partition_takes_its_detector_state_along() {
    let Some(admin) = required_env(PG_ENV) else {
        return;
    };
    let url = fresh_pg_database(&admin).await.unwrap();
    let store = Store::connect(&url).await.unwrap();
    // Two districts in different partitions.
    let da = DistrictId::parse("DA").unwrap();
    let db = (0..)
        .map(|i| DistrictId::parse(format!("DB{i}")).unwrap())
        .find(|d| partition_of(d.as_str(), P) != partition_of(da.as_str(), P))
        .unwrap();
    let (pa, pb) = (partition_of(da.as_str(), P), partition_of(db.as_str(), P));
    // And a district in the same partition as DA.
    let dc = (0..)
        .map(|i| DistrictId::parse(format!("DC{i}")).unwrap())
        .find(|d| partition_of(d.as_str(), P) == pa)
        .unwrap();
    let mover = meter("MOVER", &da);
    let neighbour = meter("NEIGHBOUR", &da);
    let mut registry = vec![mover.clone(), neighbour.clone()];
    registry.extend((0..6).map(|i| meter(&format!("A{i}"), &da)));
    registry.extend((0..8).map(|i| meter(&format!("B{i}"), &db)));
    store.upsert_meters(&registry).await.unwrap();

    let log = MemoryLog::new();
    let cfg = WorkerConfig {
        owner: "w1".into(),
        partitions: P,
        prefix: PREFIX.into(),
        batch_max: 100,
        fetch_wait: Duration::from_millis(50),
        ingest: IngestConfig::default(),
        detect: DetectConfig::default(),
    };
    let (registry_view, follow) = follow_registry(&store);
    let status = Arc::new(WorkerStatus::new("w1"));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = [pa, pb]
        .into_iter()
        .map(|p| {
            status.taken(p, 1, None);
            tokio::spawn(partition_task(
                cfg.clone(),
                log.clone(),
                store.clone(),
                p,
                1,
                stop.clone(),
                Shared {
                    status: status.clone(),
                    registry: registry_view.clone(),
                },
            ))
        })
        .collect();

    // Two days in the old district: its detectors learn the mover's index.
    let t0 = (Utc::now() - TimeDelta::days(3))
        .duration_trunc(TimeDelta::hours(1))
        .unwrap();
    for (i, m) in registry.iter().enumerate() {
        push(&log, m, t0, 0..48, |h| 100.0 + i as f64 + 0.01 * h as f64).await;
    }
    committed(&store, &log).await;

    // The mover goes to the district of the other partition, the neighbour to one of
    // the same partition; the next message of each, in its new district, has an index
    // 5 m³ below its last one: a regression only its state can see.
    let moved = Meter {
        district: db.clone(),
        ..mover.clone()
    };
    let moved_near = Meter {
        district: dc.clone(),
        ..neighbour.clone()
    };
    let mut seen_changes = registry_view.subscribe();
    store
        .upsert_meters(&[moved.clone(), moved_near.clone()])
        .await
        .unwrap();
    // The workers' registry feed has both changes (it passed them on to the tasks).
    let mut announced = Vec::new();
    while announced.len() < 2 {
        let list = tokio::time::timeout(Duration::from_secs(20), seen_changes.recv())
            .await
            .expect("the registry feed announces the moves")
            .unwrap();
        announced.extend(list.iter().map(|r| r.meter.id.to_string()));
    }
    for (i, m) in registry.iter().enumerate().skip(8) {
        push(&log, m, t0, 48..50, |h| 100.0 + i as f64 + 0.01 * h as f64).await;
    }
    push(&log, &moved, t0, 48..50, |h| 95.0 + 0.01 * h as f64).await;
    push(&log, &moved_near, t0, 48..50, |h| 96.0 + 0.01 * h as f64).await;
    committed(&store, &log).await;

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let alerts: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, subject FROM alerts ORDER BY 1, 2")
            .fetch_all(&pool)
            .await
            .unwrap();
    let dead: (i64,) = sqlx::query_as("SELECT count(*) FROM dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap();
    let stored: (i64,) = sqlx::query_as(
        "SELECT count(*) FROM readings
         WHERE meter_id IN ('MOVER', 'NEIGHBOUR') AND t >= $1",
    )
    .bind(t0 + TimeDelta::hours(48))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        dead.0, 0,
        "the moved meters' messages are accepted in their new districts"
    );
    assert_eq!(stored.0, 4);
    assert!(
        alerts.contains(&("counter_regression".into(), "meter:MOVER".into())),
        "the new partition's detectors continued from the mover's state: {alerts:?}"
    );
    assert!(
        alerts.contains(&("counter_regression".into(), "meter:NEIGHBOUR".into())),
        "{alerts:?}"
    );
    let v = status.view();
    assert_eq!(
        v.partitions[&pb].committed_seq,
        log.last_seq(pb).await.unwrap()
    );

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    follow.abort();
    let _ = follow.await;
    pool.close().await;
    store.close().await;
    drop_pg_database(&admin, &url).await;
}
