-- Where each (alert, customer) stands (service::alerts): 'evaluating' (reset, or never
-- evaluated: no row), 'ok' or 'in_alarm'. Every change is a compare-and-set on `version` (the
-- version the evaluator read before it computed the value), written in the transaction of the
-- outbox messages an ok -> in_alarm change sends, so two evaluators racing (replicas) change it
-- once and fire once. `fires` counts the ok -> in_alarm changes: the n-th crossing's messages
-- have ids derived from n, so a re-armed alert's next crossing is a new message. `value` is the
-- exact decimal text the alert compared at the last change; times are epoch milliseconds.
CREATE TABLE alert_states (
    env          TEXT NOT NULL,
    alert_id     TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    status       TEXT NOT NULL,
    fires        INTEGER NOT NULL DEFAULT 0,
    value        TEXT,
    triggered_by TEXT,
    version      INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL,
    PRIMARY KEY (env, alert_id, customer_id)
);
CREATE INDEX alert_states_by_customer ON alert_states (env, customer_id);
