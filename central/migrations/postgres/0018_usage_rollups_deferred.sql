-- Rollups computed from the hours after the fact (issue 17). Ingest writes only the hourly rows
-- and marks each (customer ref, metric, UTC day) it changed as dirty in `usage_dirty`; the
-- compactor (`store::usage::compact`) brings that day's rollup rows (the day, the aligned spans
-- of 2, 4, 8 and 16 days, the calendar month) up to its hours and clears the mark. Readers read
-- dirty days hour by hour (`tally_core::rollup::cover`), so a lagging rollup is never read.
DROP TABLE usage_rollups_pending;
CREATE TABLE usage_days2 (
    env          TEXT NOT NULL,
    customer_ref TEXT NOT NULL,
    metric_id    TEXT NOT NULL,
    hour_ms      BIGINT NOT NULL,
    groups       TEXT NOT NULL,
    acc          TEXT NOT NULL,
    PRIMARY KEY (env, customer_ref, metric_id, hour_ms, groups)
);
CREATE TABLE usage_days4 (
    env          TEXT NOT NULL,
    customer_ref TEXT NOT NULL,
    metric_id    TEXT NOT NULL,
    hour_ms      BIGINT NOT NULL,
    groups       TEXT NOT NULL,
    acc          TEXT NOT NULL,
    PRIMARY KEY (env, customer_ref, metric_id, hour_ms, groups)
);
CREATE TABLE usage_days8 (
    env          TEXT NOT NULL,
    customer_ref TEXT NOT NULL,
    metric_id    TEXT NOT NULL,
    hour_ms      BIGINT NOT NULL,
    groups       TEXT NOT NULL,
    acc          TEXT NOT NULL,
    PRIMARY KEY (env, customer_ref, metric_id, hour_ms, groups)
);
CREATE TABLE usage_days16 (
    env          TEXT NOT NULL,
    customer_ref TEXT NOT NULL,
    metric_id    TEXT NOT NULL,
    hour_ms      BIGINT NOT NULL,
    groups       TEXT NOT NULL,
    acc          TEXT NOT NULL,
    PRIMARY KEY (env, customer_ref, metric_id, hour_ms, groups)
);
-- `gen` counts the writes since the mark was set: the compactor clears a mark only at the gen
-- it read, so a write during its run leaves the day dirty. `failed_gen`: the gen at which the
-- day could not be rolled up (a total past the decimal range); it is skipped until written again.
CREATE TABLE usage_dirty (
    env          TEXT NOT NULL,
    customer_ref TEXT NOT NULL,
    metric_id    TEXT NOT NULL,
    day_ms       BIGINT NOT NULL,
    gen          BIGINT NOT NULL,
    failed_gen   BIGINT,
    PRIMARY KEY (env, customer_ref, metric_id, day_ms)
);
-- Every stored day is rolled up afresh, into the new spans too: the old day and month rows are
-- dropped and each day with hours is marked.
DELETE FROM usage_daily;
DELETE FROM usage_monthly;
INSERT INTO usage_dirty (env, customer_ref, metric_id, day_ms, gen)
SELECT DISTINCT env, customer_ref, metric_id, hour_ms - (hour_ms % 86400000), 1 FROM usage_hourly;
