-- Stripe pushes (crate::stripe): one row per finalized Tally invoice that bills through Stripe,
-- written as QUEUED in the finalization transaction (beside its 'stripe' outbox message), and the
-- record of what was sent: the Stripe invoice id as soon as Stripe created it, each invoice item
-- as soon as Stripe created it (stripe_push_items), and the external status the invoice reads
-- back (QUEUED, DRAFT, FINALIZED, INVALID_REQUEST_ERROR with `error`). A retried or duplicated
-- delivery reads this first and never creates what is recorded here again.
CREATE TABLE stripe_pushes (
    env                TEXT NOT NULL,
    invoice_id         TEXT NOT NULL,
    customer_id        TEXT NOT NULL,
    stripe_customer_id TEXT,
    stripe_invoice_id  TEXT,
    status             TEXT NOT NULL,
    error              TEXT,
    created_ms         INTEGER NOT NULL,
    updated_ms         INTEGER NOT NULL,
    PRIMARY KEY (env, invoice_id)
);
CREATE INDEX stripe_pushes_by_customer ON stripe_pushes (env, customer_id);

CREATE TABLE stripe_push_items (
    env            TEXT NOT NULL,
    invoice_id     TEXT NOT NULL,
    line_index     INTEGER NOT NULL,
    stripe_item_id TEXT NOT NULL,
    amount         INTEGER NOT NULL,
    created_ms     INTEGER NOT NULL,
    PRIMARY KEY (env, invoice_id, line_index)
);
