-- Detector state, checkpointed by the detection task and restored at start-up.
-- subject: 'meter:<id>', 'district:<id>' or 'engine' (the watermark); state: the
-- detect crate's versioned binary encoding (under 1 KiB per meter).
CREATE TABLE detector_state (
    subject    TEXT PRIMARY KEY,
    state      BLOB NOT NULL,
    updated_at INTEGER NOT NULL
);
