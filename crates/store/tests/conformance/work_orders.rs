//! Crews and work orders ([`leakwatch_store::WorkOrderStore`]).

use crate::support::*;

conformance!(
    case_crews_upsert_list_positions,
    case_crews_active_orders,
    case_work_order_lifecycle,
    case_work_order_conflicts_and_not_found,
    case_jobs_for_crew_ordering,
    case_list_work_orders_filters_and_cursor,
    case_concurrent_transitions_one_wins,
    case_crew_calendar_and_last_job_place,
    case_crew_current_order,
    case_work_order_parent_and_filters,
    case_transition_times_position_and_finding,
    case_orders_awaiting_acceptance,
    case_deadlines_due_and_breached,
    case_set_work_order_priority,
);

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
