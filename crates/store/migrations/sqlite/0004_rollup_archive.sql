-- `readings_hourly` becomes the archive of the hours whose raw readings were dropped:
-- Store::insert_batch no longer writes it, Store::drop_raw_readings_before fills it
-- before deleting, and Store::hourly merges it with hours aggregated from `readings`.
-- (Numbered 0004 like its PostgreSQL twin; SQLite has no 0003.)
--
-- Until now it also held every hour still in `readings`. Take the readings still stored
-- out of it, so that nothing is counted twice: an hour whose readings are all still
-- stored goes; an hour partly dropped keeps the count of its dropped readings (its
-- first/last stay those of the whole hour, which the merge with the raw readings gives
-- back unchanged).
UPDATE readings_hourly SET n = n - (
    SELECT count(*) FROM readings r
    WHERE r.meter_id = readings_hourly.meter_id
      AND r.t >= readings_hourly.hour AND r.t < readings_hourly.hour + 3600000
);

DELETE FROM readings_hourly WHERE n <= 0;
