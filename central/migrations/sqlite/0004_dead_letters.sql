-- Edge batch partials central could not merge into their hourly row (the total would overflow the
-- decimal range, or the row aggregates differently). They are recorded here, in the transaction
-- that applies the rest of their batch, instead of failing the batch: a failed batch is resent
-- forever and blocks every later batch of its shard. Append-only; `partial` is the partial's JSON
-- as received ({"env","key","acc"}), `partial_index` its position in the batch.
CREATE TABLE dead_letters (
    shard_id      TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    partial_index INTEGER NOT NULL,
    env           TEXT NOT NULL,
    partial       TEXT NOT NULL,
    reason        TEXT NOT NULL,
    recorded_ms   INTEGER NOT NULL,
    PRIMARY KEY (shard_id, seq, partial_index)
) WITHOUT ROWID;

CREATE INDEX dead_letters_by_env ON dead_letters (env, recorded_ms);
