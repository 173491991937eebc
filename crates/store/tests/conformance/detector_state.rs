//! Detector checkpoints ([`leakwatch_store::DetectorStateStore`]).

use crate::support::*;

conformance!(case_detector_state_round_trip,);

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
