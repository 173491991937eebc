-- Dispatch: crews' calendars and last job place, follow-up orders, the times an order
-- was assigned, reached and found past its deadline, the crew's finding, where each
-- transition happened, and what the finding said about the alerts.

-- `shifts`: the crew's WeeklyShifts as JSON; NULL: the `on_shift` flag decides.
ALTER TABLE crews
    ADD COLUMN shifts       JSONB,
    ADD COLUMN last_job_lat DOUBLE PRECISION,
    ADD COLUMN last_job_lon DOUBLE PRECISION,
    ADD CONSTRAINT crews_last_job_both CHECK ((last_job_lat IS NULL) = (last_job_lon IS NULL));

-- `finding`: the crew's SiteFinding as JSON.
ALTER TABLE work_orders
    ADD COLUMN parent_id   BIGINT REFERENCES work_orders (id),
    ADD COLUMN assigned_at TIMESTAMPTZ,
    ADD COLUMN reached_at  TIMESTAMPTZ,
    ADD COLUMN breached_at TIMESTAMPTZ,
    ADD COLUMN finding     JSONB;
CREATE INDEX work_orders_parent ON work_orders (parent_id);

-- Orders stored before this migration: when their current crew was given them (the
-- latest move to `assigned`, for orders that still have a crew) and when a crew first
-- got on site, from the audit trail.
UPDATE work_orders AS w SET
    assigned_at = CASE WHEN w.crew_id IS NULL THEN NULL ELSE
        (SELECT max(t.at) FROM work_order_transitions t
         WHERE t.order_id = w.id AND t.to_status = 'assigned') END,
    reached_at = (SELECT min(t.at) FROM work_order_transitions t
                  WHERE t.order_id = w.id AND t.to_status = 'on_site');

ALTER TABLE work_order_transitions
    ADD COLUMN lat DOUBLE PRECISION,
    ADD COLUMN lon DOUBLE PRECISION,
    ADD CONSTRAINT work_order_transitions_position_both CHECK ((lat IS NULL) = (lon IS NULL));

ALTER TABLE alerts
    ADD COLUMN outcome    TEXT CHECK (outcome IN ('confirmed_leak', 'false_positive')),
    ADD COLUMN outcome_at TIMESTAMPTZ,
    ADD CONSTRAINT alerts_outcome_at CHECK ((outcome IS NULL) = (outcome_at IS NULL));
CREATE INDEX alerts_work_order ON alerts (work_order_id);
