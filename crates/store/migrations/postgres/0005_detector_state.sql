-- Detector state, checkpointed by the detection task and restored at start-up.
-- subject: 'meter:<id>', 'district:<id>' or 'engine' (the watermark); state: the
-- detect crate's versioned binary encoding (under 1 KiB per meter).
CREATE TABLE detector_state (
    subject    TEXT COLLATE "C" PRIMARY KEY,
    state      BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
