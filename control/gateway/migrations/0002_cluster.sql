-- Cross-instance signalling (used when several gateways share a Postgres database):
-- which instance holds each bound user's socket, and large payloads passed by reference
-- because NOTIFY payloads are limited to 8000 bytes.
CREATE TABLE ws_presence (
    username    TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    wavry_id    TEXT,
    instance_id TEXT NOT NULL,
    conn_id     BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX ws_presence_wavry_id ON ws_presence (wavry_id);

CREATE TABLE signal_outbox (
    id         TEXT PRIMARY KEY,
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
