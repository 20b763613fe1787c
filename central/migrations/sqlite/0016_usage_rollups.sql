-- Rolled-up usage (issue 17): the hourly partials of each UTC day and each UTC calendar month,
-- merged into one row per (customer ref, metric, grain values, block), so a draft reads O(1)
-- rows per grain for any period (`tally_core::rollup`). Same columns as `usage_hourly`; `hour_ms`
-- is the block's first hour. Kept in step with `usage_hourly` in the transaction that merges an
-- hour (`store::usage`).
CREATE TABLE usage_daily (
    env          TEXT NOT NULL,
    customer_ref TEXT NOT NULL,
    metric_id    TEXT NOT NULL,
    hour_ms      INTEGER NOT NULL,
    groups       TEXT NOT NULL,
    acc          TEXT NOT NULL,
    PRIMARY KEY (env, customer_ref, metric_id, hour_ms, groups)
) WITHOUT ROWID;
CREATE TABLE usage_monthly (
    env          TEXT NOT NULL,
    customer_ref TEXT NOT NULL,
    metric_id    TEXT NOT NULL,
    hour_ms      INTEGER NOT NULL,
    groups       TEXT NOT NULL,
    acc          TEXT NOT NULL,
    PRIMARY KEY (env, customer_ref, metric_id, hour_ms, groups)
) WITHOUT ROWID;
-- Accumulators are merged in Rust, never in SQL: the store builds the day and month rows of the
-- hourly rows already stored at its next start (`store::usage::build_rollups`), in one usage
-- transaction, and deletes this row in it.
CREATE TABLE usage_rollups_pending (id INTEGER PRIMARY KEY);
INSERT INTO usage_rollups_pending (id) VALUES (1);
