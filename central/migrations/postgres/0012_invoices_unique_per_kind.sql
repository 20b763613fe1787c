-- A SCHEDULED invoice may fall at the instant a USAGE period starts (a commit bought on the
-- contract's first day): one row of each kind per contract and instant, not one in all.
ALTER TABLE invoices DROP CONSTRAINT invoices_env_contract_id_period_start_ms_key;
ALTER TABLE invoices
    ADD CONSTRAINT invoices_env_contract_id_kind_period_start_ms_key
    UNIQUE (env, contract_id, kind, period_start_ms);
