//! The bad-input corpus (`tests/corpus/`, one file per case) through the ingest's
//! processing step with a real store: what is stored, what is dead-lettered with
//! which reason, and which readings are flagged. The decoder-level expectations of
//! the same files are checked by `cargo test -p leakwatch-wire`.

use chrono::{TimeZone, Utc};
use leakwatch_core::{MeterId, MeterRecord};
use leakwatch_ingest::{IngestConfig, Writer};
use leakwatch_store::Store;
use leakwatch_wire::corpus::Case;

async fn fresh_store() -> Store {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let meters: Vec<_> = ["M1", "M2"]
        .iter()
        .map(|id| {
            MeterRecord {
                meter_id: (*id).into(),
                district_id: "D1".into(),
                kind: "customer".into(),
                lat: 43.77,
                lon: 11.25,
                report_every_h: Some(1),
                status: None,
                installed_at: Some("2026-01-01T00:00:00Z".into()),
                max_flow_m3h: Some(6.0),
            }
            .to_meter()
            .unwrap()
        })
        .collect();
    store.upsert_meters(&meters).await.unwrap();
    store
}

#[tokio::test]
async fn every_corpus_case_through_the_ingest() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "the corpus is missing: {}",
        dir.display()
    );
    let now = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let case = Case::from_json(&std::fs::read_to_string(path).unwrap()).unwrap();
        let store = fresh_store().await;
        let mut writer = Writer::new(store.clone(), IngestConfig::default(), "gas".into());
        for before in &case.before {
            let (out, _) = writer
                .process(&[(case.topic.clone(), before.clone())], now)
                .await
                .unwrap();
            assert_eq!(
                out.dead_letters, 0,
                "{name}: a `before` message was rejected"
            );
        }
        let dead_before = store.count_dead_letters().await.unwrap();
        let (out, _) = writer
            .process(&[(case.topic.clone(), case.payload.clone())], now)
            .await
            .unwrap();
        let e = &case.expect;
        if out.inserted as usize != e.stored {
            failures.push(format!(
                "{name}: stored {} readings, expected {}",
                out.inserted, e.stored
            ));
        }
        let dead = store.list_dead_letters(10).await.unwrap();
        let new_dead = store.count_dead_letters().await.unwrap() - dead_before;
        match (&e.dead_letter, new_dead) {
            (None, 0) => {}
            (Some(reason), 1) => {
                if dead[0].reason != *reason {
                    failures.push(format!(
                        "{name}: dead-lettered as {}, expected {reason} ({})",
                        dead[0].reason, dead[0].detail
                    ));
                }
                let limit = leakwatch_wire::DEAD_LETTER_MAX_PAYLOAD;
                assert_eq!(
                    dead[0].payload,
                    case.payload[..case.payload.len().min(limit)],
                    "{name}: the dead letter keeps the payload (truncated at {limit} bytes)"
                );
                assert_eq!(dead[0].topic, case.topic);
            }
            (expected, n) => {
                failures.push(format!("{name}: {n} dead letters, expected {expected:?}"))
            }
        }
        if let Some(flag) = &e.flag {
            let meter = MeterId::parse(case.topic.split('/').nth(2).unwrap()).unwrap();
            let rows = store
                .readings_flagged(&meter, None, None, 1000)
                .await
                .unwrap();
            if !rows.iter().any(|(_, f)| f.names().contains(&flag.as_str())) {
                failures.push(format!("{name}: no stored reading flagged {flag}"));
            }
        }
        store.close().await;
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    eprintln!("corpus: {} cases through the ingest", files.len());
}
