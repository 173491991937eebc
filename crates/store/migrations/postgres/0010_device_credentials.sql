-- Per-device MQTT credentials: one row per broker username (a meter id, a crew id, a
-- head-end or leakwatch's own service user). `secret_hash` is in Mosquitto's
-- PBKDF2-SHA512 password-file format ($7$...), so the same hash feeds Mosquitto's
-- password file and the embedded broker's login check; the secret itself is never kept.
CREATE TABLE device_credentials (
    username    TEXT COLLATE "C" PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('meter', 'crew', 'headend', 'service')),
    secret_hash TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    rotated_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);
