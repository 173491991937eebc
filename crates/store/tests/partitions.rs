//! The scaled-out worker's fenced commit (migration 0013) on a fresh PostgreSQL
//! database: a newer epoch fences an older owner's commit, which writes nothing and is
//! counted; the committed sequence and the readings commit together.

use chrono::{TimeZone, Utc};
use leakwatch_core::{MeterId, Reading};
use leakwatch_store::partitions::{CommitOutcome, PartitionCommit};
use leakwatch_store::{ReadingFlags, Store};

fn reading(meter: &str, h: u32, vol: f64) -> (Reading, ReadingFlags) {
    (
        Reading {
            meter: MeterId::parse(meter).unwrap(),
            t: Utc.with_ymd_and_hms(2026, 10, 1, h, 0, 0).unwrap(),
            vol,
            temp: None,
            flow_max: None,
            pressure: None,
        },
        ReadingFlags::default(),
    )
}

#[tokio::test]
async fn a_newer_epoch_fences_the_older_owner() {
    let Some(admin) = leakwatch_store::testing::required_env(leakwatch_store::testing::PG_ENV)
    else {
        return;
    };
    let url = leakwatch_store::testing::fresh_pg_database(&admin)
        .await
        .unwrap();
    let store = Store::connect(&url).await.unwrap();
    let cp = store.claim_partition(3, 1, "a").await.unwrap().unwrap();
    assert_eq!((cp.epoch, cp.last_seq), (1, 0));
    let batch = |epoch, last_seq, rows| PartitionCommit {
        partition: 3,
        epoch,
        owner: "a".into(),
        last_seq,
        rows,
        received_at: Utc::now(),
        ..PartitionCommit::default()
    };
    let out = store
        .commit_partition(&batch(
            1,
            10,
            vec![reading("M1", 0, 1.0), reading("M1", 1, 2.0)],
        ))
        .await
        .unwrap();
    assert!(matches!(out, CommitOutcome::Committed { readings, .. } if readings.inserted == 2));
    // b takes over with epoch 2 and sees a's commit.
    let cp = store.claim_partition(3, 2, "b").await.unwrap().unwrap();
    assert_eq!((cp.epoch, cp.owner.as_str(), cp.last_seq), (2, "b", 10));
    // An older claim cannot lower the epoch.
    assert!(store.claim_partition(3, 1, "a").await.unwrap().is_none());
    // a's late commit is refused and writes nothing.
    let out = store
        .commit_partition(&batch(1, 20, vec![reading("M1", 2, 3.0)]))
        .await
        .unwrap();
    assert_eq!(out, CommitOutcome::Fenced { current: 2 });
    assert_eq!(store.partition_refusals().await.unwrap(), 1);
    assert_eq!(store.count_readings().await.unwrap(), 2);
    let cps = store.partition_checkpoints().await.unwrap();
    assert_eq!(cps[0].last_seq, 10);
    // b commits the same batch again (redelivered): stored once, sequence moves on.
    let mut again = batch(2, 20, vec![reading("M1", 1, 2.0), reading("M1", 2, 3.0)]);
    again.owner = "b".into();
    let out = store.commit_partition(&again).await.unwrap();
    assert!(
        matches!(out, CommitOutcome::Committed { readings, .. } if readings.inserted == 1 && readings.duplicates == 1)
    );
    assert_eq!(store.partition_checkpoints().await.unwrap()[0].last_seq, 20);
    store.close().await;
    leakwatch_store::testing::drop_pg_database(&admin, &url).await;
}
