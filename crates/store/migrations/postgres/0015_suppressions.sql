-- Dismissals that stick (issue 12): a suppression made when an engineer dismisses an
-- alert keeps new alerts of its kind on its meter (or district) quiet until a date
-- (event time), until revoked, or until new evidence exceeds the dismissed one
-- (`observed`) by `margin` (a fraction).
CREATE TABLE suppressions (
    id                 BIGSERIAL PRIMARY KEY,
    kind               TEXT NOT NULL,
    scope              TEXT NOT NULL CHECK (scope IN ('meter', 'district')),
    scope_id           TEXT NOT NULL,
    alert_id           BIGINT NOT NULL,
    reason             TEXT NOT NULL,
    created_by         TEXT NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    until              TIMESTAMPTZ,
    observed           DOUBLE PRECISION NOT NULL,
    unit               TEXT NOT NULL,
    margin             DOUBLE PRECISION NOT NULL CHECK (margin >= 0),
    suppressed         BIGINT NOT NULL DEFAULT 0,
    last_suppressed_at TIMESTAMPTZ,
    ended_at           TIMESTAMPTZ,
    ended_by           TEXT,
    end_reason         TEXT,
    broken_by_alert    BIGINT
);
CREATE INDEX suppressions_active ON suppressions (kind, scope, scope_id) WHERE ended_at IS NULL;
CREATE INDEX suppressions_alert ON suppressions (alert_id);

-- An alert folded into the open repair of a leak already found on its meter: its
-- outcome says the leak is real, but nobody went out for it, so the detector's
-- quality does not count it as confirmed on site.
ALTER TABLE alerts ADD COLUMN known_leak BOOLEAN NOT NULL DEFAULT false;
