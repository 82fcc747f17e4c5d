-- wavry-gateway schema. Portable between SQLite and Postgres: TEXT / BIGINT / DOUBLE PRECISION
-- only, times as Unix seconds, no autoincrement (audit/usage ids are UUIDs).
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    public_key    TEXT NOT NULL UNIQUE,
    totp_secret   TEXT,
    totp_last_step BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL
);

-- token_hash = "h1:" + hex(SHA-256(token)); raw tokens are never stored.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL,
    ip_address TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE login_failures (
    identifier   TEXT PRIMARY KEY,
    count        BIGINT NOT NULL DEFAULT 1,
    last_failure BIGINT NOT NULL
);

CREATE TABLE user_bans (
    user_id    TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    reason     TEXT,
    banned_at  BIGINT NOT NULL,
    expires_at BIGINT
);

-- Relay sessions brokered by this gateway (what a relay report must refer to).
CREATE TABLE relay_sessions (
    session_id   TEXT PRIMARY KEY,
    relay_id     TEXT NOT NULL,
    requester_id TEXT NOT NULL,
    target_id    TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE relay_reputation (
    relay_id       TEXT PRIMARY KEY,
    success_count  BIGINT NOT NULL DEFAULT 0,
    failure_count  BIGINT NOT NULL DEFAULT 0,
    bytes_total    BIGINT NOT NULL DEFAULT 0,
    duration_total BIGINT NOT NULL DEFAULT 0,
    last_updated   BIGINT NOT NULL
);

-- One report per user per relay session.
CREATE TABLE relay_usage (
    session_id        TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    relay_id          TEXT NOT NULL,
    success           BIGINT NOT NULL,
    bytes_transferred BIGINT NOT NULL,
    duration_secs     BIGINT NOT NULL,
    ended_at          BIGINT NOT NULL,
    PRIMARY KEY (session_id, user_id)
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
CREATE INDEX admin_audit_log_action ON admin_audit_log (action);
