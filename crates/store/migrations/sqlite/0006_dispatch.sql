-- Dispatch: crews' calendars and last job place, follow-up orders, the times an order
-- was assigned, reached and found past its deadline, the crew's finding, where each
-- transition happened, and what the finding said about the alerts. Times are epoch
-- milliseconds and JSON is TEXT, as in 0001.

-- `shifts`: the crew's WeeklyShifts as JSON; NULL: the `on_shift` flag decides.
ALTER TABLE crews ADD COLUMN shifts TEXT;
ALTER TABLE crews ADD COLUMN last_job_lat REAL;
ALTER TABLE crews ADD COLUMN last_job_lon REAL
    CHECK ((last_job_lat IS NULL) = (last_job_lon IS NULL));

-- `finding`: the crew's SiteFinding as JSON.
ALTER TABLE work_orders ADD COLUMN parent_id INTEGER REFERENCES work_orders (id);
ALTER TABLE work_orders ADD COLUMN assigned_at INTEGER;
ALTER TABLE work_orders ADD COLUMN reached_at INTEGER;
ALTER TABLE work_orders ADD COLUMN breached_at INTEGER;
ALTER TABLE work_orders ADD COLUMN finding TEXT;
CREATE INDEX work_orders_parent ON work_orders (parent_id);

-- Orders stored before this migration: when their current crew was given them (the
-- latest move to `assigned`, for orders that still have a crew) and when a crew first
-- got on site, from the audit trail.
UPDATE work_orders SET
    assigned_at = CASE WHEN crew_id IS NULL THEN NULL ELSE
        (SELECT max(t.at) FROM work_order_transitions t
         WHERE t.order_id = work_orders.id AND t.to_status = 'assigned') END,
    reached_at = (SELECT min(t.at) FROM work_order_transitions t
                  WHERE t.order_id = work_orders.id AND t.to_status = 'on_site');

ALTER TABLE work_order_transitions ADD COLUMN lat REAL;
ALTER TABLE work_order_transitions ADD COLUMN lon REAL
    CHECK ((lat IS NULL) = (lon IS NULL));

ALTER TABLE alerts ADD COLUMN outcome TEXT
    CHECK (outcome IN ('confirmed_leak', 'false_positive'));
ALTER TABLE alerts ADD COLUMN outcome_at INTEGER
    CHECK ((outcome IS NULL) = (outcome_at IS NULL));
CREATE INDEX alerts_work_order ON alerts (work_order_id);
