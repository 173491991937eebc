//! Readings, conflicts, the hourly rollup, retention and device events
//! ([`leakwatch_store::ReadingStore`]), and the PostgreSQL insert paths against SQLite.

use crate::support::*;

conformance!(
    case_readings_idempotent,
    case_readings_range_query,
    case_readings_values_round_trip,
    case_events_idempotent,
    case_readings_since_pages_in_time_order,
    case_duplicates_and_conflicts,
    case_reading_flags_round_trip,
    case_latest_readings,
    case_hourly_rollup_across_batches,
    case_retention_keeps_the_rollup,
    case_retention_archives_partial_hours_and_late_readings,
);

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

async fn observe(store: &Store, path: Option<leakwatch_store::PgInsertPath>) -> Observed {
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
    let Some(admin) = required_env(PG_ENV) else {
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
    for path in leakwatch_store::PgInsertPath::ALL {
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
    let Some(admin) = required_env(PG_ENV) else {
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
