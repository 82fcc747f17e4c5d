-- Relay registry shared by every master on the same database (several masters behind a
-- load balancer). Each master keeps an in-memory copy, writes through on change and merges
-- the table every couple of seconds; rows carry `updated_ms` so the newest change wins.
CREATE TABLE relays (
    relay_id             TEXT PRIMARY KEY,
    endpoints            TEXT NOT NULL,
    region               TEXT,
    asn                  BIGINT,
    max_sessions         BIGINT,
    max_bitrate_kbps     BIGINT NOT NULL,
    load_pct             DOUBLE PRECISION NOT NULL,
    state                TEXT NOT NULL,
    last_seen_ms         BIGINT NOT NULL,
    heartbeats           BIGINT NOT NULL,
    identity             TEXT,
    heartbeat_token_hash TEXT NOT NULL,
    updated_ms           BIGINT NOT NULL
);
