-- Reading quality flags, the conflict log, the hourly rollup, and the meters'
-- installation date and rated capacity. Times are epoch milliseconds, as in 0001.

ALTER TABLE meters ADD COLUMN installed_at INTEGER;
ALTER TABLE meters ADD COLUMN max_flow_m3h REAL;

-- ReadingFlags bitmask (1 late, 2 counter regression, 4 jump).
ALTER TABLE readings ADD COLUMN flags INTEGER NOT NULL DEFAULT 0;

-- Retention deletes by time across meters.
CREATE INDEX readings_t ON readings (t);

-- A reading whose (meter, t) was already stored with another volume. The stored row is
-- never changed; what arrived is kept here for a person to look at.
CREATE TABLE reading_conflicts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    meter_id     TEXT NOT NULL,
    t            INTEGER NOT NULL,
    stored_vol   REAL NOT NULL,
    received_vol REAL NOT NULL,
    received_at  INTEGER NOT NULL
);
CREATE INDEX reading_conflicts_meter ON reading_conflicts (meter_id, t);

-- One row per meter and UTC hour holding readings: the first and last reading of the
-- hour by time, and how many. Maintained by Store::insert_batch in the same transaction
-- as the readings, and kept when raw readings are dropped (retention).
CREATE TABLE readings_hourly (
    meter_id  TEXT NOT NULL,
    hour      INTEGER NOT NULL,
    first_t   INTEGER NOT NULL,
    first_vol REAL NOT NULL,
    last_t    INTEGER NOT NULL,
    last_vol  REAL NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (meter_id, hour)
) WITHOUT ROWID;

-- Roll up what is already stored (floor to the hour, also before 1970).
INSERT INTO readings_hourly (meter_id, hour, first_t, first_vol, last_t, last_vol, n)
SELECT g.meter_id, g.hour, g.first_t,
       (SELECT r.vol FROM readings r WHERE r.meter_id = g.meter_id AND r.t = g.first_t),
       g.last_t,
       (SELECT r.vol FROM readings r WHERE r.meter_id = g.meter_id AND r.t = g.last_t),
       g.n
FROM (SELECT meter_id, t - ((t % 3600000) + 3600000) % 3600000 AS hour,
             min(t) AS first_t, max(t) AS last_t, count(*) AS n
      FROM readings GROUP BY 1, 2) AS g;
