//! Alerts ([`leakwatch_store::AlertStore`]).

use crate::support::*;

conformance!(
    case_record_finding_creates_then_updates,
    case_new_alert_after_dismiss_or_resolve,
    case_alert_status_compare_and_set,
    case_list_alerts_filters_and_cursor,
    case_concurrent_findings_make_one_alert,
    case_quiet_alerts_resolve,
    case_quiet_alerts_resolve_per_district,
    case_alert_outcomes_and_stats,
    case_suppressions_hold_count_break_and_revoke,
);

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

    // Raised: burst 2, continuous_flow 3, tamper 1, battery_low 1 (never escalated).
    let stat = |kind, escalated: i64, confirmed: i64, false_positive: i64| OutcomeStat {
        kind,
        raised: escalated,
        escalated,
        confirmed,
        false_positive,
        known: 0,
        pending: escalated - confirmed - false_positive,
    };
    let battery = OutcomeStat {
        raised: 1,
        ..stat(AlertKind::BatteryLow, 0, 0, 0)
    };
    // Escalated, no outcome yet. Sorted by kind text: burst, continuous_flow, tamper.
    assert_eq!(
        store.outcome_stats().await.unwrap(),
        vec![
            battery,
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
            battery,
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
            battery,
            stat(AlertKind::Burst, 2, 0, 2),
            stat(AlertKind::ContinuousFlow, 3, 0, 3),
            stat(AlertKind::Tamper, 1, 0, 0),
        ]
    );
    let json = serde_json::to_value(store.outcome_stats().await.unwrap()).unwrap();
    assert_eq!(
        json[1],
        serde_json::json!({"kind": "burst", "raised": 2, "escalated": 2, "confirmed": 0,
                           "false_positive": 2, "known": 0, "pending": 0})
    );

    // An alert folded into the open repair of a known leak: escalated, its outcome
    // confirmed_leak, but not counted as confirmed on site.
    let (folded, _) = store
        .record_finding(&finding_of(AlertKind::Tamper, "M9", 400))
        .await
        .unwrap();
    let mut uow = store.begin_dispatch().await.unwrap();
    uow.set_alert_status(
        folded.id,
        AlertStatus::Open,
        AlertStatus::Escalated,
        None,
        Some(o3.id),
    )
    .await
    .unwrap();
    uow.mark_known_leak(folded.id, t(410)).await.unwrap();
    uow.commit().await.unwrap();
    let folded = store.get_alert(folded.id).await.unwrap().unwrap();
    assert_eq!(folded.outcome, Some(AlertOutcome::ConfirmedLeak));
    let tamper = store
        .outcome_stats()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.kind == AlertKind::Tamper)
        .unwrap();
    assert_eq!(
        tamper,
        OutcomeStat {
            raised: 2,
            escalated: 2,
            known: 1,
            ..stat(AlertKind::Tamper, 1, 0, 0)
        }
    );
}

/// Suppressions (migration 0015): made in a unit of work, consulted when a finding
/// would open a new alert, counted, broken through, revoked.
async fn case_suppressions_hold_count_break_and_revoke(store: &Store) {
    use leakwatch_core::{NewSuppression, SuppressionScope, Verdict};
    let (a, _) = store
        .record_finding(&finding("M1", 1000, Severity::Warning))
        .await
        .unwrap();
    store
        .set_alert_status(
            a.id,
            AlertStatus::Open,
            AlertStatus::Dismissed,
            Some("pilot"),
            None,
        )
        .await
        .unwrap();
    let mut uow = store.begin_dispatch().await.unwrap();
    let s = uow
        .add_suppression(
            &NewSuppression {
                kind: AlertKind::ContinuousFlow,
                scope: SuppressionScope::Meter(mid("M1")),
                alert_id: a.id,
                reason: "pilot".into(),
                until: Some(t(90_000)),
                observed: 0.05,
                unit: "m3/h".into(),
                margin: 0.25,
            },
            "eng",
            t(1100),
        )
        .await
        .unwrap();
    uow.commit().await.unwrap();
    assert_eq!(s.created_by, "eng");
    assert_eq!(
        (s.until, s.suppressed, s.is_active()),
        (Some(t(90_000)), 0, true)
    );
    assert_eq!(store.get_suppression(s.id).await.unwrap(), Some(s.clone()));

    // The judge sees exactly the suppression covering the finding; kept quiet twice.
    for at in [2000, 1500] {
        let r = store
            .record_finding_judged(&finding("M1", at, Severity::Warning), |active| {
                assert_eq!(active.iter().map(|x| x.id).collect::<Vec<_>>(), [s.id]);
                Verdict::Suppressed { id: active[0].id }
            })
            .await
            .unwrap();
        assert_eq!((r.alert, r.created), (None, false));
    }
    let held = store.get_suppression(s.id).await.unwrap().unwrap();
    assert_eq!(
        (held.suppressed, held.last_suppressed_at),
        (2, Some(t(2000)))
    );
    // Another meter: no suppression covers it, the judge is not asked.
    let r = store
        .record_finding_judged(&finding("M2", 2000, Severity::Warning), |_| {
            panic!("not asked")
        })
        .await
        .unwrap();
    assert!(r.created);
    // Broken through: the alert opens, the suppression ends, the history says why.
    let r = store
        .record_finding_judged(&finding("M1", 3000, Severity::Warning), |active| {
            Verdict::BreaksThrough {
                id: active[0].id,
                reason: "grew".into(),
            }
        })
        .await
        .unwrap();
    let opened = r.alert.unwrap();
    assert!(r.created && opened.id != a.id);
    let ended = store.get_suppression(s.id).await.unwrap().unwrap();
    assert_eq!(
        (
            ended.ended_by.as_deref(),
            ended.end_reason.as_deref(),
            ended.broken_by_alert
        ),
        (Some("detector"), Some("grew"), Some(opened.id))
    );
    assert!(ended.ended_at.is_some());
    let h = store.alert_history(opened.id).await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].action, "suppression_broken");
    // While that alert is open, findings repeat it without asking the judge.
    store
        .record_finding_judged(&finding("M1", 3500, Severity::Warning), |_| panic!("open"))
        .await
        .unwrap();
    assert_eq!(store.list_suppressions(true, 10).await.unwrap(), vec![]);
    assert_eq!(store.list_suppressions(false, 10).await.unwrap().len(), 1);
    assert_eq!(
        store.suppressions_of_meter(&mid("M1")).await.unwrap().len(),
        1
    );
    assert!(matches!(
        store.revoke_suppression(s.id, "eng", t(4000)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.revoke_suppression(9_999, "eng", t(4000)).await,
        Err(StoreError::NotFound(_))
    ));
    // A district suppression, revoked by hand.
    let mut uow = store.begin_dispatch().await.unwrap();
    let d = uow
        .add_suppression(
            &NewSuppression {
                kind: AlertKind::Burst,
                scope: SuppressionScope::District(did("D1")),
                alert_id: a.id,
                reason: "works".into(),
                until: None,
                observed: 1.0,
                unit: "m3/h".into(),
                margin: 0.0,
            },
            "eng",
            t(5000),
        )
        .await
        .unwrap();
    uow.commit().await.unwrap();
    store
        .record_finding_judged(&finding_of(AlertKind::Burst, "M7", 5100), |active| {
            assert_eq!(active.iter().map(|x| x.id).collect::<Vec<_>>(), [d.id]);
            Verdict::Suppressed { id: d.id }
        })
        .await
        .unwrap();
    let r = store
        .revoke_suppression(d.id, "boss", t(6000))
        .await
        .unwrap();
    assert_eq!(
        (r.ended_by.as_deref(), r.end_reason.as_deref(), r.ended_at),
        (Some("boss"), Some("revoked"), Some(t(6000)))
    );
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
