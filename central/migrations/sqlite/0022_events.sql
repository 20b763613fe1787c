-- The event store (issue 13; store::usage, ARCHITECTURE.md "Event store"): every accepted event,
-- written in the transaction that claims its dedupe key (native ingest) or applies the edge batch
-- that carries it. duplicate = 0 is the counted event; duplicate = 1 is the latest duplicate
-- delivery of that transaction id (upserted: at most one per id), counted nowhere.
-- customer_ref is the customer id or ingest alias as sent (attributed at read time, as usage is);
-- properties is the canonical JSON object of exact text values; matched_metrics the sorted JSON
-- array of the ids of the billable metrics the event contributed to when it was metered.
CREATE TABLE events (
    env             TEXT NOT NULL,
    transaction_id  TEXT NOT NULL,
    duplicate       INTEGER NOT NULL,
    customer_ref    TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    timestamp_ms    INTEGER NOT NULL,
    properties      TEXT NOT NULL,
    matched_metrics TEXT NOT NULL,
    processed_ms    INTEGER NOT NULL
);
-- A rowid table, so rows are appended in arrival order rather than placed at random by their
-- transaction id: only this narrow unique index takes random inserts, and far more of its
-- entries fit in the page cache than whole rows would (the ingest benchmark's commits read and
-- wrote much less).
CREATE UNIQUE INDEX events_by_id ON events (env, transaction_id, duplicate);
-- A customer's events in time order (SQL billable metrics, `UsageStore::events_between`).
CREATE INDEX events_by_customer ON events (env, customer_ref, timestamp_ms);
-- Retention: the background job deletes events whose timestamp is past it, oldest first.
CREATE INDEX events_by_time ON events (timestamp_ms);
