-- Times (recorded_at) are Unix epoch milliseconds.
-- Programmed leak survey (issue 16): the network's pipe segments, each segment's survey
-- history and leak history. Dates are ISO `YYYY-MM-DD` text on both backends (a survey
-- is recorded by its working day, sorted as text). `source_key` makes a repeated import
-- or a repeated field report a no-op: `import:<segment>:<date>`, `wo:<order>:<segment>`.
CREATE TABLE pipe_segments (
    id             TEXT PRIMARY KEY,
    district_id    TEXT NOT NULL,
    -- [[lon, lat], ...], at least two positions (a GeoJSON LineString's coordinates).
    geometry       TEXT NOT NULL,
    length_m       REAL NOT NULL,
    pressure_class TEXT NOT NULL,
    material       TEXT NOT NULL,
    diameter_mm    INTEGER NOT NULL,
    year_laid      INTEGER NOT NULL,
    added_on       TEXT NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX pipe_segments_district ON pipe_segments (district_id);

CREATE TABLE segment_surveys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    segment_id    TEXT NOT NULL REFERENCES pipe_segments (id),
    surveyed_on   TEXT NOT NULL,
    crew_id       TEXT,
    instrument    TEXT,
    covered_m     REAL NOT NULL CHECK (covered_m >= 0),
    work_order_id INTEGER,
    source_key    TEXT UNIQUE,
    recorded_at   INTEGER NOT NULL
);
CREATE INDEX segment_surveys_segment ON segment_surveys (segment_id, surveyed_on);

CREATE TABLE segment_leaks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    segment_id    TEXT NOT NULL REFERENCES pipe_segments (id),
    found_on      TEXT NOT NULL,
    leak_class    TEXT,
    -- `survey`, `import`, `report`
    source        TEXT NOT NULL,
    work_order_id INTEGER,
    repair_order_id INTEGER,
    source_key    TEXT UNIQUE,
    recorded_at   INTEGER NOT NULL
);
CREATE INDEX segment_leaks_segment ON segment_leaks (segment_id, found_on);

-- The segments a survey work order covers, in the order the crew walks them.
CREATE TABLE survey_order_segments (
    work_order_id INTEGER NOT NULL REFERENCES work_orders (id),
    seq           INTEGER NOT NULL,
    segment_id    TEXT NOT NULL REFERENCES pipe_segments (id),
    PRIMARY KEY (work_order_id, seq)
);
