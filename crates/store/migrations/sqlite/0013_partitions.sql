-- Scale-out (issue 14): the tables exist on SQLite for one schema, but the scaled-out
-- shape (`leakwatch worker`) runs on PostgreSQL only.
CREATE TABLE lw_partitions (
    partition    INTEGER PRIMARY KEY,
    epoch        INTEGER NOT NULL DEFAULT 0,
    owner        TEXT NOT NULL DEFAULT '',
    last_seq     INTEGER NOT NULL DEFAULT 0,
    watermark    INTEGER,
    committed_at INTEGER,
    max_lag_ms   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE lw_partition_refusals (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    partition     INTEGER NOT NULL,
    epoch         INTEGER NOT NULL,
    current_epoch INTEGER NOT NULL,
    owner         TEXT NOT NULL,
    at            INTEGER NOT NULL DEFAULT 0
);
