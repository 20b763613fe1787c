-- Tally's PostgreSQL schema: the same tables and columns as migrations/sqlite.
-- Every row is scoped by `env` ('sandbox' | 'production'). Times are epoch milliseconds (BIGINT);
-- decimals are exact text inside TEXT JSON bodies (never float, never JSONB, which would rewrite
-- number literals), so every number survives byte for byte.

CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,          -- hex SHA-256 of the token; the token itself is never stored
    env        TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

-- Configuration documents: billable metrics, products, rate cards, rates, customers, contracts.
CREATE TABLE documents (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- creation order, the pagination keyset
    env        TEXT NOT NULL,
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    parent_id  TEXT,                                -- rate → rate card, contract → customer
    unique_key TEXT,                                -- contract uniqueness_key
    archived   BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms BIGINT NOT NULL,
    body       TEXT NOT NULL,
    UNIQUE (env, kind, id),
    UNIQUE (env, kind, unique_key)
);
CREATE INDEX documents_by_parent ON documents (env, kind, parent_id, seq);

-- Ingest aliases are unique per environment, archived customers included.
CREATE TABLE customer_aliases (
    env         TEXT NOT NULL,
    alias       TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    PRIMARY KEY (env, alias)
);
CREATE INDEX customer_aliases_by_customer ON customer_aliases (env, customer_id);

-- Dedupe keys, claimed in the same transaction that merges the event's usage.
CREATE TABLE dedupe (
    env            TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    recorded_ms    BIGINT NOT NULL,
    PRIMARY KEY (env, transaction_id)
);
CREATE INDEX dedupe_by_age ON dedupe (recorded_ms);

-- Hourly partial aggregates at each metric's finest grain, keyed by the customer reference as sent.
CREATE TABLE usage_hourly (
    env          TEXT NOT NULL,
    customer_ref TEXT NOT NULL,
    metric_id    TEXT NOT NULL,
    hour_ms      BIGINT NOT NULL,
    groups       TEXT NOT NULL,   -- JSON array aligned with the metric's grain
    acc          TEXT NOT NULL,   -- JSON accumulator (tally_core::accumulate::Accumulator)
    PRIMARY KEY (env, customer_ref, metric_id, hour_ms, groups)
);

-- One row per begun contract period. Drafts have no body (they are computed on read);
-- FINALIZED and VOID rows carry the frozen invoice.
CREATE TABLE invoices (
    env             TEXT NOT NULL,
    id              TEXT NOT NULL,
    contract_id     TEXT NOT NULL,
    customer_id     TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    period_end_ms   BIGINT NOT NULL,
    status          TEXT NOT NULL,
    body            TEXT,
    PRIMARY KEY (env, id),
    UNIQUE (env, contract_id, period_start_ms)
);
CREATE INDEX invoices_by_customer ON invoices (env, customer_id, period_start_ms);
