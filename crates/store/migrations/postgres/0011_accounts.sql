-- Accounts, browser sessions, API tokens and the audit of their changes (issue 12).
-- Secrets are never stored: passwords as argon2id PHC strings, session ids and API
-- token secrets as SHA-256 (hex) of the random value handed out.
CREATE TABLE accounts (
    name          TEXT COLLATE "C" PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'engineer', 'dispatcher', 'crew')),
    crew_id       TEXT COLLATE "C",
    password_hash TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    CHECK ((role = 'crew') = (crew_id IS NOT NULL))
);

CREATE TABLE sessions (
    id_hash      TEXT COLLATE "C" PRIMARY KEY,
    account      TEXT COLLATE "C" NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_account ON sessions (account);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE api_tokens (
    name        TEXT COLLATE "C" PRIMARY KEY,
    secret_hash TEXT COLLATE "C" NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'engineer', 'dispatcher', 'crew')),
    crew_id     TEXT COLLATE "C",
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ,
    CHECK ((role = 'crew') = (crew_id IS NOT NULL))
);

CREATE TABLE auth_audit (
    id      BIGSERIAL PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  TEXT
);

-- Who reviewed an alert, and when (the actor comes from the credential).
ALTER TABLE alerts ADD COLUMN acknowledged_by TEXT;
ALTER TABLE alerts ADD COLUMN acknowledged_at TIMESTAMPTZ;
ALTER TABLE alerts ADD COLUMN dismissed_by TEXT;
ALTER TABLE alerts ADD COLUMN dismissed_at TIMESTAMPTZ;
ALTER TABLE alerts ADD COLUMN resolved_by TEXT;
ALTER TABLE alerts ADD COLUMN resolved_at TIMESTAMPTZ;
