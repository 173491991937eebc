-- The console (issue 12): who did what to an alert from the pages (acknowledge,
-- dismiss, escalate, note), and the crews' phone actions by their client action id,
-- so a repeat of the same action (sent again after a lost answer, or replayed from an
-- offline queue) is recognised and answered with the first answer.
-- Times are Unix epoch milliseconds.
CREATE TABLE alert_history (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    note     TEXT
);
CREATE INDEX alert_history_alert ON alert_history (alert_id, id);

CREATE TABLE client_actions (
    client_id TEXT PRIMARY KEY,
    order_id  INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    response  TEXT NOT NULL,
    at        INTEGER NOT NULL
);
