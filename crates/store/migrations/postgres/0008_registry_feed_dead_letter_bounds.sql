-- Registry changes reach a running service, readings are bounded by the meter's
-- registration, and dead letters are idempotent and bounded.

-- When the registry first knew the meter (never changed by a later import). Meters
-- registered before this migration take their last update as the best guess.
ALTER TABLE meters ADD COLUMN registered_at TIMESTAMPTZ;
UPDATE meters SET registered_at = updated_at;
ALTER TABLE meters ALTER COLUMN registered_at SET DEFAULT now();
ALTER TABLE meters ALTER COLUMN registered_at SET NOT NULL;

-- Every insert or update of a meter tells the listeners (channel `leakwatch_meters`,
-- payload: the meter id) once the transaction commits; a running ingestor reloads it.
CREATE FUNCTION leakwatch_meters_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('leakwatch_meters', NEW.id);
    RETURN NULL;
END
$$;
CREATE TRIGGER meters_changed AFTER INSERT OR UPDATE ON meters
    FOR EACH ROW EXECUTE FUNCTION leakwatch_meters_changed();

-- `msg_key`: a digest of the message (topic, reason, whole payload): writing the same
-- dead letter twice (a retry after a partial commit, a redelivery) stores it once.
-- `meter_id`: the meter the topic names, for the per-meter bound.
ALTER TABLE dead_letters
    ADD COLUMN msg_key  TEXT,
    ADD COLUMN meter_id TEXT COLLATE "C";
CREATE UNIQUE INDEX dead_letters_msg_key ON dead_letters (msg_key);
CREATE INDEX dead_letters_meter ON dead_letters (meter_id, id);
CREATE INDEX dead_letters_received ON dead_letters (received_at);
