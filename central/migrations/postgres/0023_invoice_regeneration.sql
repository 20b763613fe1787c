-- `POST /v1/invoices/regenerate`: a voided invoice's period gets a new invoice (a new id) beside
-- it. `revision` counts the invoices of one (contract, kind, period) (0 the first, each
-- regeneration one more), and `regenerated_from` names the voided invoice a regeneration
-- replaces; each voided invoice is regenerated at most once.
ALTER TABLE invoices ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE invoices ADD COLUMN regenerated_from TEXT;
ALTER TABLE invoices DROP CONSTRAINT invoices_env_contract_id_kind_period_start_ms_key;
ALTER TABLE invoices
    ADD CONSTRAINT invoices_env_contract_id_kind_period_start_ms_revision_key
    UNIQUE (env, contract_id, kind, period_start_ms, revision);
ALTER TABLE invoices
    ADD CONSTRAINT invoices_env_regenerated_from_key UNIQUE (env, regenerated_from);
