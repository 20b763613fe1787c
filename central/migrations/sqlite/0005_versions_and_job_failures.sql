-- Optimistic concurrency for documents: every update names the version it read and bumps it;
-- an update whose version no longer matches changes nothing (the service retries or answers 409).
ALTER TABLE documents ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

-- Contracts the background job could not finalize (rating failed, a corrupt document), so
-- operators can see them (GET /v1/operations/stuck-contracts). A row is cleared by the first pass
-- that finalizes its contract; `failures` counts the passes that failed since it appeared.
CREATE TABLE job_failures (
    env             TEXT NOT NULL,
    contract_id     TEXT NOT NULL,
    error           TEXT NOT NULL,
    first_failed_ms INTEGER NOT NULL,
    last_failed_ms  INTEGER NOT NULL,
    failures        INTEGER NOT NULL,
    PRIMARY KEY (env, contract_id)
);
