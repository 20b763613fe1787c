-- Idempotency-Key: one row per (environment, key). `nonce` names the request that claimed it;
-- the claim is written in the same transaction as that request's first write, so a write and its
-- key commit together or not at all. `status`/`body` hold the response once it was answered
-- (replayed for 24 hours); `fingerprint` is the SHA-256 of method, path, query and body.
CREATE TABLE idempotency_keys (
    env          TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    created_ms   BIGINT NOT NULL,
    status       BIGINT,
    body         TEXT,
    completed_ms BIGINT,
    PRIMARY KEY (env, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_ms);
