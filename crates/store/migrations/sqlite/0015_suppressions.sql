-- Dismissals that stick (issue 12): a suppression made when an engineer dismisses an
-- alert keeps new alerts of its kind on its meter (or district) quiet until a date
-- (event time), until revoked, or until new evidence exceeds the dismissed one
-- (`observed`) by `margin` (a fraction). Times are Unix epoch milliseconds.
CREATE TABLE suppressions (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    kind               TEXT NOT NULL,
    scope              TEXT NOT NULL CHECK (scope IN ('meter', 'district')),
    scope_id           TEXT NOT NULL,
    alert_id           INTEGER NOT NULL,
    reason             TEXT NOT NULL,
    created_by         TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    until              INTEGER,
    observed           REAL NOT NULL,
    unit               TEXT NOT NULL,
    margin             REAL NOT NULL CHECK (margin >= 0),
    suppressed         INTEGER NOT NULL DEFAULT 0,
    last_suppressed_at INTEGER,
    ended_at           INTEGER,
    ended_by           TEXT,
    end_reason         TEXT,
    broken_by_alert    INTEGER
);
CREATE INDEX suppressions_active ON suppressions (kind, scope, scope_id) WHERE ended_at IS NULL;
CREATE INDEX suppressions_alert ON suppressions (alert_id);

-- An alert folded into the open repair of a leak already found on its meter: its
-- outcome says the leak is real, but nobody went out for it, so the detector's
-- quality does not count it as confirmed on site.
ALTER TABLE alerts ADD COLUMN known_leak INTEGER NOT NULL DEFAULT 0;
