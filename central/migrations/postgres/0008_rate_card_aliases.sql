-- Rate card aliases, indexed: contracts created with `rate_card_alias` look up the cards that
-- ever held the name instead of reading every rate card. Rows mirror each card document's alias
-- names and are written in the same transaction as the document; which card the alias means at
-- a given time is still decided from the documents (windows, assignment order).
CREATE TABLE rate_card_aliases (
    env          TEXT NOT NULL,
    alias        TEXT NOT NULL,
    rate_card_id TEXT NOT NULL,
    PRIMARY KEY (env, alias, rate_card_id)
);
INSERT INTO rate_card_aliases (env, alias, rate_card_id)
    SELECT d.env, a.value ->> 'name', d.id
    FROM documents d, jsonb_array_elements(COALESCE(d.body::jsonb -> 'aliases', '[]'::jsonb)) a
    WHERE d.kind = 'rate_card'
    ON CONFLICT DO NOTHING;
