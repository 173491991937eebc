-- `readings_hourly` becomes the archive of the hours whose raw readings were dropped:
-- Store::insert_batch no longer writes it, Store::drop_raw_readings_before fills it
-- before deleting, and Store::hourly merges it with hours aggregated from `readings`.
--
-- Until now it also held every hour still in `readings`. Take the readings still stored
-- out of it, so that nothing is counted twice: an hour whose readings are all still
-- stored goes; an hour partly dropped keeps the count of its dropped readings (its
-- first/last stay those of the whole hour, which the merge with the raw readings gives
-- back unchanged).
WITH raw AS (
    SELECT meter_id, date_trunc('hour', t, 'UTC') AS hour, count(*) AS n
    FROM readings GROUP BY 1, 2
)
UPDATE readings_hourly AS h SET n = h.n - raw.n
FROM raw WHERE h.meter_id = raw.meter_id AND h.hour = raw.hour;

DELETE FROM readings_hourly WHERE n <= 0;
