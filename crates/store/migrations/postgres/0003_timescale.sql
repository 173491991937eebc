-- TimescaleDB, when the server has it; a no-op on plain PostgreSQL.
--
-- With the extension available (and loadable: it must be in shared_preload_libraries),
-- this migration:
--   * makes `readings` a hypertable of 1-day chunks on `t` (the primary key
--     (meter_id, t) includes the partitioning column, as Timescale requires; existing
--     rows are migrated into chunks, which may take a while on a large table);
--   * compresses chunks older than 7 days, segmented by meter and ordered by time
--     (late readings into a compressed chunk still work: Timescale checks the primary
--     key and inserts them, INSERT ... ON CONFLICT DO NOTHING included);
--   * creates the continuous aggregate `readings_hourly_cagg` (time_bucket of 1 hour,
--     first/last volume by time, count), refreshed hourly over the last 3 days.
--
-- The continuous aggregate is an extra for analysts. leakwatch itself keeps maintaining
-- its own rollup `readings_hourly` in Store::insert_batch's transaction and reads
-- Store::hourly from it on every backend: it is exact at commit (no refresh lag), counts
-- late readings at once, and behaves the same on PostgreSQL, TimescaleDB and SQLite.
-- Retention (Store::drop_raw_readings_before) uses drop_chunks on a hypertable; the
-- aggregate keeps the buckets of dropped chunks as long as its refresh window (3 days)
-- stays shorter than the retention period.
--
-- If the extension is listed but cannot be created (not preloaded, no privilege), a
-- warning is raised and the database stays plain PostgreSQL. Store::has_timescale()
-- reports which one it is.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            EXECUTE 'CREATE EXTENSION IF NOT EXISTS timescaledb';
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'timescaledb is available but could not be created (%); '
                          'readings stay a plain table', SQLERRM;
            RETURN;
        END;

        EXECUTE $sql$
            SELECT create_hypertable('readings', by_range('t', INTERVAL '1 day'),
                                     create_default_indexes => false,
                                     migrate_data => true)
        $sql$;

        EXECUTE $sql$
            ALTER TABLE readings SET (timescaledb.compress,
                                      timescaledb.compress_segmentby = 'meter_id',
                                      timescaledb.compress_orderby = 't DESC')
        $sql$;
        EXECUTE $sql$
            SELECT add_compression_policy('readings', compress_after => INTERVAL '7 days')
        $sql$;

        -- WITH NO DATA: creating it WITH DATA cannot run inside a transaction block.
        EXECUTE $sql$
            CREATE MATERIALIZED VIEW readings_hourly_cagg
            WITH (timescaledb.continuous) AS
            SELECT meter_id,
                   time_bucket(INTERVAL '1 hour', t) AS hour,
                   min(t) AS first_t,
                   first(vol, t) AS first_vol,
                   max(t) AS last_t,
                   last(vol, t) AS last_vol,
                   count(*) AS n
            FROM readings
            GROUP BY meter_id, time_bucket(INTERVAL '1 hour', t)
            WITH NO DATA
        $sql$;
        EXECUTE $sql$
            SELECT add_continuous_aggregate_policy('readings_hourly_cagg',
                                                   start_offset => INTERVAL '3 days',
                                                   end_offset => INTERVAL '1 hour',
                                                   schedule_interval => INTERVAL '1 hour')
        $sql$;
    END IF;
END
$$;
