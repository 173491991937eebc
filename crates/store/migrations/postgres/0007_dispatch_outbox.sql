-- Dispatch: the durable outbox of new alerts for the dispatch side, and why a crew was
-- taken off an order as a column (it was only in the note's text).

-- Every alert row inserted (a new alert, not a repeat of an active one: the upsert's
-- update path does not fire AFTER INSERT triggers) is queued here in the same
-- statement, so a crash between detection and dispatch loses no escalation. The
-- dispatch side deletes the row in the transaction that acts on it.
CREATE TABLE dispatch_outbox (
    alert_id BIGINT PRIMARY KEY REFERENCES alerts (id) ON DELETE CASCADE
);

CREATE FUNCTION dispatch_outbox_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dispatch_outbox (alert_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE TRIGGER alerts_dispatch_outbox AFTER INSERT ON alerts
    FOR EACH ROW EXECUTE FUNCTION dispatch_outbox_enqueue();

-- `cause`: why the step happened when the dispatcher did it: `acceptance_timeout`
-- (the crew did not accept in time; it is not asked again for this order),
-- `preempted` (an emergency took the crew), `reconciled` (repaired at start-up).
ALTER TABLE work_order_transitions ADD COLUMN cause TEXT
    CHECK (cause IN ('acceptance_timeout', 'preempted', 'reconciled'));

-- Steps recorded before this migration carried the cause in the note only.
UPDATE work_order_transitions SET cause = 'acceptance_timeout'
    WHERE action = 'unassign' AND note LIKE 'acceptance timeout%';
UPDATE work_order_transitions SET cause = 'preempted'
    WHERE action = 'unassign' AND note LIKE 'pre-empted by emergency%';

CREATE INDEX alerts_escalated_unlinked ON alerts (id)
    WHERE status = 'escalated' AND work_order_id IS NULL;
