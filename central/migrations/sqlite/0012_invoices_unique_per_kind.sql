-- A SCHEDULED invoice may fall at the instant a USAGE period starts (a commit bought on the
-- contract's first day): one row of each kind per contract and instant, not one in all. SQLite
-- cannot change a table constraint, so the table is rebuilt with the same columns and rows.
CREATE TABLE invoices_by_kind (
    env             TEXT NOT NULL,
    id              TEXT NOT NULL,
    contract_id     TEXT NOT NULL,
    customer_id     TEXT NOT NULL,
    period_start_ms INTEGER NOT NULL,
    period_end_ms   INTEGER NOT NULL,
    status          TEXT NOT NULL,
    body            TEXT,
    kind            TEXT NOT NULL DEFAULT 'USAGE',
    PRIMARY KEY (env, id),
    UNIQUE (env, contract_id, kind, period_start_ms)
);
INSERT INTO invoices_by_kind
    (env, id, contract_id, customer_id, period_start_ms, period_end_ms, status, body, kind)
SELECT env, id, contract_id, customer_id, period_start_ms, period_end_ms, status, body, kind
FROM invoices;
DROP TABLE invoices;
ALTER TABLE invoices_by_kind RENAME TO invoices;
CREATE INDEX invoices_by_customer ON invoices (env, customer_id, period_start_ms);
