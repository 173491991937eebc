//! The meter registry ([`leakwatch_store::MeterStore`]).

use crate::support::*;

conformance!(
    case_meters_upsert_get_list,
    case_meter_installation_and_capacity,
);

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
