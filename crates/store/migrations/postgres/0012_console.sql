-- The console (issue 12): who did what to an alert from the pages (acknowledge,
-- dismiss, escalate, note), and the crews' phone actions by their client action id,
-- so a repeat of the same action (sent again after a lost answer, or replayed from an
-- offline queue) is recognised and answered with the first answer.
CREATE TABLE alert_history (
    id       BIGSERIAL PRIMARY KEY,
    alert_id BIGINT NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    note     TEXT
);
CREATE INDEX alert_history_alert ON alert_history (alert_id, id);

CREATE TABLE client_actions (
    client_id TEXT COLLATE "C" PRIMARY KEY,
    order_id  BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    response  JSONB NOT NULL,
    at        TIMESTAMPTZ NOT NULL
);
