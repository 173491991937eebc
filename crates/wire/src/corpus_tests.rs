//! Keeps the shared corpus (`tests/corpus/*.json`), the docs and the decoder in step:
//! every case's `decode` and `rejected_items` expectations are checked here, and every
//! reason code must be documented in `docs/wire.md`.

use crate::corpus::Case;
use crate::{ITEM_REASONS, MESSAGE_REASONS, decode};
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cases() -> Vec<(String, Case)> {
    let dir = workspace_root().join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus cases in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let case = Case::from_json(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, case)
        })
        .collect()
}

#[test]
fn every_corpus_case_decodes_as_expected() {
    let cases = cases();
    assert!(cases.len() >= 30, "only {} corpus cases", cases.len());
    for (name, case) in &cases {
        let expect = &case.expect;
        for (i, before) in case.before.iter().enumerate() {
            let d = decode("gas", &case.topic, before)
                .unwrap_or_else(|e| panic!("{name}: before[{i}] must decode: {e}"));
            assert!(d.rejected.is_empty(), "{name}: before[{i}] must be clean");
        }
        match decode("gas", &case.topic, &case.payload) {
            Ok(d) => {
                assert_eq!(expect.decode, "ok", "{name}: decoded, {:?}", d.rejected);
                let got: Vec<&str> = d.rejected.iter().map(|r| r.reason).collect();
                assert_eq!(got, expect.rejected_items, "{name}: {:?}", d.rejected);
                for reason in &expect.rejected_items {
                    assert!(ITEM_REASONS.contains(&reason.as_str()), "{name}: {reason}");
                }
                // The ingest dead-letters a message with rejected items under the
                // reason of the first one.
                if let Some(first) = d.dead_letter_reason() {
                    assert_eq!(expect.dead_letter.as_deref(), Some(first), "{name}");
                }
                assert!(
                    expect.stored <= d.uplink.readings.len(),
                    "{name}: stores {} of {} decoded readings",
                    expect.stored,
                    d.uplink.readings.len()
                );
            }
            Err(e) => {
                assert_eq!(expect.decode, e.reason(), "{name}: {e}");
                assert!(expect.rejected_items.is_empty(), "{name}");
                assert_eq!(expect.stored, 0, "{name}");
                assert_eq!(expect.dead_letter.as_deref(), Some(e.reason()), "{name}");
            }
        }
    }
}

#[test]
fn the_corpus_covers_every_reason() {
    let cases = cases();
    let mut seen: Vec<&str> = Vec::new();
    for (_, case) in &cases {
        seen.push(&case.expect.decode);
        seen.extend(case.expect.rejected_items.iter().map(String::as_str));
    }
    for reason in MESSAGE_REASONS.iter().chain(ITEM_REASONS) {
        assert!(seen.contains(reason), "no corpus case for {reason}");
    }
}

#[test]
fn every_reason_is_documented() {
    let path = workspace_root().join("docs/wire.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for reason in MESSAGE_REASONS.iter().chain(ITEM_REASONS) {
        assert!(
            doc.contains(&format!("`{reason}`")),
            "docs/wire.md does not document `{reason}`"
        );
    }
}
