-- Scale-out (issue 14, docs/scale-out.md): one row per log partition, the fencing row
-- of its owners. A worker that takes a partition's lease raises `epoch` to its own
-- (never lowers it); every batch commits only while `epoch` is still the committer's,
-- together with the partition's last stream sequence and its watermark.
CREATE TABLE lw_partitions (
    partition    INT PRIMARY KEY,
    epoch        BIGINT NOT NULL DEFAULT 0,
    owner        TEXT NOT NULL DEFAULT '',
    last_seq     BIGINT NOT NULL DEFAULT 0,
    watermark    TIMESTAMPTZ,
    committed_at TIMESTAMPTZ,
    -- The largest delay seen from a bridge's receipt to this commit, milliseconds.
    max_lag_ms   BIGINT NOT NULL DEFAULT 0
);

-- Commits refused because a newer owner had raised the epoch (kept for operators and
-- for the fault test, which must see at least one).
CREATE TABLE lw_partition_refusals (
    id            BIGSERIAL PRIMARY KEY,
    partition     INT NOT NULL,
    epoch         BIGINT NOT NULL,
    current_epoch BIGINT NOT NULL,
    owner         TEXT NOT NULL,
    at            TIMESTAMPTZ NOT NULL DEFAULT now()
);
