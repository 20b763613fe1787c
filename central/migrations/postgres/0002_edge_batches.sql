-- Edge batches applied exactly once: a replayed (shard_id, seq) is a no-op.
CREATE TABLE applied_batches (
    shard_id   TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    applied_ms BIGINT NOT NULL,
    PRIMARY KEY (shard_id, seq)
);
