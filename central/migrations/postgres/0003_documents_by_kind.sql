-- The metrics version (MAX(seq) of billable metrics) is read on every ingest request when replicas
-- share the database; this index makes it one index lookup.
CREATE INDEX documents_by_kind ON documents (kind, seq);
