-- wavry-master schema. Portable between SQLite and Postgres: TEXT / BIGINT / DOUBLE PRECISION
-- only, times as Unix seconds, no autoincrement.
CREATE TABLE identities (
    wavry_id     TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE master_sessions (
    token_hash TEXT PRIMARY KEY,
    wavry_id   TEXT NOT NULL REFERENCES identities (wavry_id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX master_sessions_wavry_id ON master_sessions (wavry_id);

-- Revoked lease subjects: Wavry IDs (master identities) or gateway usernames.
CREATE TABLE revoked_identities (
    subject    TEXT PRIMARY KEY,
    reason     TEXT,
    revoked_at BIGINT NOT NULL
);

CREATE TABLE relay_reputation (
    relay_id    TEXT PRIMARY KEY,
    success     BIGINT NOT NULL DEFAULT 0,
    failure     BIGINT NOT NULL DEFAULT 0,
    quality_sum DOUBLE PRECISION NOT NULL DEFAULT 0,
    samples     BIGINT NOT NULL DEFAULT 0,
    updated_at  BIGINT NOT NULL
);

-- One verified feedback per participant per relay session.
CREATE TABLE relay_feedback (
    session_id TEXT NOT NULL,
    reporter   TEXT NOT NULL,
    relay_id   TEXT NOT NULL,
    quality    BIGINT NOT NULL,
    success    BIGINT NOT NULL,
    issues     TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, reporter)
);

CREATE TABLE admin_audit_log (
    id            TEXT PRIMARY KEY,
    action        TEXT NOT NULL,
    target_type   TEXT NOT NULL,
    target_id     TEXT,
    outcome       TEXT NOT NULL,
    actor_ip_hash TEXT NOT NULL,
    details       TEXT,
    created_at    BIGINT NOT NULL
);
CREATE INDEX admin_audit_log_created_at ON admin_audit_log (created_at);
