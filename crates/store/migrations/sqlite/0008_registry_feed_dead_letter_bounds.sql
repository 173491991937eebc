-- Registry changes reach a running service, readings are bounded by the meter's
-- registration, and dead letters are idempotent and bounded.

-- When the registry first knew the meter (never changed by a later import). Meters
-- registered before this migration take their last update as the best guess.
ALTER TABLE meters ADD COLUMN registered_at INTEGER;
UPDATE meters SET registered_at = updated_at;

-- `rev`: a registry-wide revision, raised on every insert or update of a meter; a
-- running ingestor polls for meters with a higher one than it has seen. SQLite has
-- one writer at a time, so revisions commit in order.
ALTER TABLE meters ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
UPDATE meters SET rev = rowid;
CREATE INDEX meters_rev ON meters (rev);
CREATE TRIGGER meters_inserted AFTER INSERT ON meters BEGIN
    UPDATE meters
       SET registered_at = COALESCE(NEW.registered_at, NEW.updated_at),
           rev = (SELECT MAX(rev) FROM meters) + 1
     WHERE id = NEW.id;
END;
CREATE TRIGGER meters_updated
    AFTER UPDATE OF district_id, kind, lat, lon, report_every_h, status, installed_at,
                    max_flow_m3h, updated_at ON meters BEGIN
    UPDATE meters SET rev = (SELECT MAX(rev) FROM meters) + 1 WHERE id = NEW.id;
END;

-- `msg_key`: a digest of the message (topic, reason, whole payload): writing the same
-- dead letter twice (a retry after a partial commit, a redelivery) stores it once.
-- `meter_id`: the meter the topic names, for the per-meter bound.
ALTER TABLE dead_letters ADD COLUMN msg_key TEXT;
ALTER TABLE dead_letters ADD COLUMN meter_id TEXT;
CREATE UNIQUE INDEX dead_letters_msg_key ON dead_letters (msg_key);
CREATE INDEX dead_letters_meter ON dead_letters (meter_id, id);
CREATE INDEX dead_letters_received ON dead_letters (received_at);
