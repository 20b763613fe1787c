-- The outbox: every outbound message (a webhook now; Stripe calls and alerts later), written in
-- the transaction of the state change that causes it and delivered at least once by the
-- background deliverer (crate::outbox). `id` is the message's stable id (the webhook payload's
-- `id`), the same on every retry. `topic` says how it is delivered ('webhook'), `kind` what it
-- says ('invoice.finalized'), `destination` where (a webhook endpoint's id). A replica claims a
-- due message by setting `lease_owner`/`lease_until_ms` in one conditional UPDATE; a lease that
-- expires (its process died mid-delivery) makes the message due again. Times are wall-clock epoch
-- milliseconds. `failed_ms` is set when delivery was given up (about two days of retries).
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    env             TEXT NOT NULL,
    topic           TEXT NOT NULL,
    kind            TEXT NOT NULL,
    destination     TEXT NOT NULL,
    payload         TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    delivered_ms    INTEGER,
    failed_ms       INTEGER,
    last_error      TEXT,
    created_ms      INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until_ms  INTEGER
);
CREATE INDEX outbox_due ON outbox (next_attempt_ms)
    WHERE delivered_ms IS NULL AND failed_ms IS NULL;
CREATE INDEX outbox_by_destination ON outbox (env, destination, created_ms, id);
-- The job prunes finished messages by age (store::OUTBOX_RETENTION_MS).
CREATE INDEX outbox_by_created ON outbox (created_ms);

-- The secret webhook payloads are signed with, one per environment
-- (POST /v1/client/config/webhook_secret). Never returned by the API, never logged.
CREATE TABLE webhook_secrets (
    env        TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
