-- The ledger of commit and credit segments: one row per entry, never a JSON blob. Invoice
-- deductions and true-ups are written in the transaction that finalizes their invoice; the
-- unique index makes a second finalizer's write a no-op, so an invoice records each entry once.
-- Manual entries (addManualBalanceLedgerEntry) have no invoice. Segment starts and expirations
-- follow from the segments themselves and are not stored. `amount` is an exact decimal's text.
CREATE TABLE balance_ledger (
    env          TEXT NOT NULL,
    id           TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    balance_id   TEXT NOT NULL,
    segment_id   TEXT NOT NULL,
    entry        TEXT NOT NULL,
    amount       TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    invoice_id   TEXT,
    contract_id  TEXT,
    reason       TEXT,
    created_ms   INTEGER NOT NULL,
    PRIMARY KEY (env, id)
);
CREATE UNIQUE INDEX balance_ledger_once_per_invoice
    ON balance_ledger (env, invoice_id, segment_id, entry) WHERE invoice_id IS NOT NULL;
CREATE INDEX balance_ledger_by_customer ON balance_ledger (env, customer_id, timestamp_ms);

-- A contract's invoices are its billing periods' USAGE invoices and the SCHEDULED invoices of
-- instants (commit purchases): the kind tells them apart.
ALTER TABLE invoices ADD COLUMN kind TEXT NOT NULL DEFAULT 'USAGE';
