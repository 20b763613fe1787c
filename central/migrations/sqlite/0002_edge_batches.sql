-- Edge batches applied exactly once: a replayed (shard_id, seq) is a no-op.
CREATE TABLE applied_batches (
    shard_id   TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    applied_ms INTEGER NOT NULL,
    PRIMARY KEY (shard_id, seq)
) WITHOUT ROWID;
