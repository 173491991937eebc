//! Dead letters ([`leakwatch_store::DeadLetterStore`]).

use crate::support::*;

conformance!(case_dead_letters_round_trip,);

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
