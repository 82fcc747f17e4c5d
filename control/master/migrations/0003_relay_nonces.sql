-- One-time nonces of relay identity registrations (v2 proofs sign the whole request), shared
-- by every master on the database so a captured request cannot be replayed on another.
CREATE TABLE relay_nonces (
    wavry_id   TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (wavry_id, nonce)
);
CREATE INDEX relay_nonces_created_at ON relay_nonces (created_at);
