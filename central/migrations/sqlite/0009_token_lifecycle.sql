-- Token lifecycle: an optional name, when it was last used (updated at most once a minute per
-- process) and when it was revoked (a revoked token authenticates nothing, on every replica).
ALTER TABLE tokens ADD COLUMN name TEXT;
ALTER TABLE tokens ADD COLUMN last_used_ms INTEGER;
ALTER TABLE tokens ADD COLUMN revoked_ms INTEGER;
