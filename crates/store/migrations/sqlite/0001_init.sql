-- leakwatch schema, SQLite. Times are INTEGER Unix epoch milliseconds (UTC); enums are
-- stored as their text (the `as_str()` of the Rust enum); JSON is stored as TEXT.

CREATE TABLE meters (
    id             TEXT PRIMARY KEY NOT NULL,
    district_id    TEXT NOT NULL,
    kind           TEXT NOT NULL,
    lat            REAL NOT NULL,
    lon            REAL NOT NULL,
    report_every_h INTEGER NOT NULL,
    status         TEXT NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX meters_district ON meters (district_id);

-- No foreign key to meters: readings may arrive before the registry knows the meter.
CREATE TABLE readings (
    meter_id TEXT NOT NULL,
    t        INTEGER NOT NULL,
    vol      REAL NOT NULL,
    temp     REAL,
    flow_max REAL,
    pressure REAL,
    PRIMARY KEY (meter_id, t)
) WITHOUT ROWID;

CREATE TABLE meter_events (
    meter_id TEXT NOT NULL,
    t        INTEGER NOT NULL,
    code     TEXT NOT NULL,
    PRIMARY KEY (meter_id, t, code)
) WITHOUT ROWID;

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    topic       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    payload     BLOB NOT NULL,
    received_at INTEGER NOT NULL
);

CREATE TABLE crews (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    -- JSON array of strings.
    skills      TEXT NOT NULL DEFAULT '[]',
    home_lat    REAL NOT NULL,
    home_lon    REAL NOT NULL,
    pos_lat     REAL,
    pos_lon     REAL,
    position_at INTEGER,
    on_shift    INTEGER NOT NULL DEFAULT 0,
    CHECK ((pos_lat IS NULL) = (pos_lon IS NULL))
);

CREATE TABLE alerts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Finding::subject().key(), e.g. `meter:M1` or `district:D1`.
    subject       TEXT NOT NULL,
    kind          TEXT NOT NULL,
    severity      TEXT NOT NULL,
    status        TEXT NOT NULL,
    meter_id      TEXT,
    district_id   TEXT,
    detected_at   INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    count         INTEGER NOT NULL DEFAULT 1,
    evidence      TEXT NOT NULL,
    work_order_id INTEGER,
    status_reason TEXT,
    created_at    INTEGER NOT NULL
);
-- At most one active alert per (subject, kind): repeats update it (see record_finding).
CREATE UNIQUE INDEX alerts_one_active ON alerts (subject, kind)
    WHERE status IN ('open', 'acknowledged', 'escalated');
CREATE INDEX alerts_status ON alerts (status, id);
CREATE INDEX alerts_meter ON alerts (meter_id, id);

CREATE TABLE work_orders (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    priority    TEXT NOT NULL,
    status      TEXT NOT NULL,
    alert_id    INTEGER REFERENCES alerts (id),
    meter_id    TEXT,
    district_id TEXT,
    lat         REAL NOT NULL,
    lon         REAL NOT NULL,
    crew_id     TEXT REFERENCES crews (id),
    summary     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    due_at      INTEGER
);
CREATE INDEX work_orders_status ON work_orders (status, id);
CREATE INDEX work_orders_crew ON work_orders (crew_id, status);

-- The audit trail: append-only.
CREATE TABLE work_order_transitions (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id    INTEGER NOT NULL REFERENCES work_orders (id),
    from_status TEXT NOT NULL,
    to_status   TEXT NOT NULL,
    action      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    at          INTEGER NOT NULL,
    crew_id     TEXT,
    note        TEXT
);
CREATE INDEX work_order_transitions_order ON work_order_transitions (order_id, seq);
