-- `POST /v1/invoices/regenerate`: a voided invoice's period gets a new invoice (a new id) beside
-- it. `revision` counts the invoices of one (contract, kind, period) (0 the first, each
-- regeneration one more), and `regenerated_from` names the voided invoice a regeneration
-- replaces; each voided invoice is regenerated at most once. SQLite cannot change a table
-- constraint, so the table is rebuilt with the same rows.
CREATE TABLE invoices_by_revision (
    env              TEXT NOT NULL,
    id               TEXT NOT NULL,
    contract_id      TEXT NOT NULL,
    customer_id      TEXT NOT NULL,
    period_start_ms  INTEGER NOT NULL,
    period_end_ms    INTEGER NOT NULL,
    status           TEXT NOT NULL,
    body             TEXT,
    kind             TEXT NOT NULL DEFAULT 'USAGE',
    revision         INTEGER NOT NULL DEFAULT 0,
    regenerated_from TEXT,
    PRIMARY KEY (env, id),
    UNIQUE (env, contract_id, kind, period_start_ms, revision),
    UNIQUE (env, regenerated_from)
);
INSERT INTO invoices_by_revision
    (env, id, contract_id, customer_id, period_start_ms, period_end_ms, status, body, kind)
SELECT env, id, contract_id, customer_id, period_start_ms, period_end_ms, status, body, kind
FROM invoices;
DROP TABLE invoices;
ALTER TABLE invoices_by_revision RENAME TO invoices;
CREATE INDEX invoices_by_customer ON invoices (env, customer_id, period_start_ms);
