//! The network of pipe segments and its survey and leak history
//! ([`leakwatch_store::NetworkStore`]).

use crate::support::*;
use chrono::NaiveDate;
use leakwatch_store::{LeakEntry, NetworkStore, SurveyEntry};
use leakwatch_survey::geojson::Imported;
use leakwatch_survey::{Material, Segment};

conformance!(
    case_network_import_is_idempotent_and_updates,
    case_surveys_and_leaks_history
);

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn segment(id: &str, district: &str, material: Material) -> Segment {
    Segment {
        id: id.into(),
        district: did(district),
        geometry: vec![
            GeoPoint::new(43.77, 11.25).unwrap(),
            GeoPoint::new(43.771, 11.25).unwrap(),
            GeoPoint::new(43.771, 11.2512345).unwrap(),
        ],
        pressure_class: "it_bp".into(),
        material,
        diameter_mm: 110,
        year_laid: 1968,
        added_on: day(1968, 1, 1),
    }
}

async fn case_network_import_is_idempotent_and_updates(store: &Store) {
    let net = store.network_store();
    let items = vec![
        Imported {
            segment: segment("S2", "D1", Material::Steel),
            last_surveyed: Some(day(2025, 5, 2)),
        },
        Imported {
            segment: segment("S1", "D2", Material::CastIron),
            last_surveyed: None,
        },
    ];
    let first = net.import_network(&items, t(10)).await.unwrap();
    assert_eq!(
        (first.segments, first.new_segments, first.surveys_added),
        (2, 2, 1)
    );
    let again = net.import_network(&items, t(20)).await.unwrap();
    assert_eq!(
        (again.segments, again.new_segments, again.surveys_added),
        (2, 0, 0)
    );

    let all = net.segments(None).await.unwrap();
    assert_eq!(
        all.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["S1", "S2"]
    );
    assert_eq!(all[1], items[0].segment);
    assert_eq!(
        net.segments(Some(&did("D2"))).await.unwrap(),
        vec![items[1].segment.clone()]
    );
    assert_eq!(net.get_segment("nope").await.unwrap(), None);

    // A new version of the file: the material was wrong, a later survey is known.
    let mut fixed = items[0].clone();
    fixed.segment.material = Material::Polyethylene;
    fixed.last_surveyed = Some(day(2026, 1, 9));
    let third = net.import_network(&[fixed.clone()], t(30)).await.unwrap();
    assert_eq!((third.new_segments, third.surveys_added), (0, 1));
    assert_eq!(net.get_segment("S2").await.unwrap(), Some(fixed.segment));
    let hist = net.surveys(Some("S2")).await.unwrap();
    assert_eq!(
        hist.iter().map(|s| s.date).collect::<Vec<_>>(),
        [day(2025, 5, 2), day(2026, 1, 9)]
    );
    assert!((hist[0].covered_m - items[0].segment.length_m()).abs() < 1e-6);
}

async fn case_surveys_and_leaks_history(store: &Store) {
    let net = store.network_store();
    net.import_network(
        &[Imported {
            segment: segment("S1", "D1", Material::Steel),
            last_surveyed: None,
        }],
        t(0),
    )
    .await
    .unwrap();
    let s = SurveyEntry {
        segment: "S1".into(),
        date: day(2026, 3, 4),
        crew: Some("C1".into()),
        instrument: Some("vehicle_analyser".into()),
        covered_m: 120.5,
        work_order_id: Some(7),
        source_key: Some("wo:7:S1".into()),
    };
    assert_eq!(
        net.record_surveys(std::slice::from_ref(&s), t(1))
            .await
            .unwrap(),
        1
    );
    // The crew's phone resends its report: nothing new.
    assert_eq!(
        net.record_surveys(std::slice::from_ref(&s), t(2))
            .await
            .unwrap(),
        0
    );
    let unknown = SurveyEntry {
        segment: "ghost".into(),
        source_key: None,
        ..s.clone()
    };
    assert!(matches!(
        net.record_surveys(&[unknown], t(3)).await,
        Err(StoreError::NotFound(m)) if m.contains("ghost")
    ));
    let negative = SurveyEntry {
        covered_m: -1.0,
        source_key: None,
        ..s.clone()
    };
    assert!(net.record_surveys(&[negative], t(3)).await.is_err());
    assert_eq!(net.surveys(None).await.unwrap(), vec![s]);

    let leak = LeakEntry {
        segment: "S1".into(),
        date: day(2026, 3, 4),
        class: Some("B".into()),
        source: "survey".into(),
        work_order_id: Some(7),
        repair_order_id: Some(8),
        source_key: Some("wo:7:leak:0".into()),
    };
    let (id, new) = net.record_leak(&leak, t(4)).await.unwrap();
    assert!(new);
    assert_eq!(net.record_leak(&leak, t(5)).await.unwrap(), (id, false));
    assert_eq!(net.leaks(Some("S1")).await.unwrap(), vec![(id, leak)]);
    assert!(net.leaks(Some("S2")).await.unwrap().is_empty());
}
