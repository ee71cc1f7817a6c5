-- The external tables' `raw` column holds each record exactly as n8n delivered it. As `json` the
-- server only validates the text and stores it as is; as `jsonb` it decomposed every record into
-- a binary tree on every upsert, a cost measured in the pipeline benchmark, for a column that is
-- read rarely (debugging, re-mapping) and never indexed. `->`/`->>` still work on `json`.
-- Rows of ~2 KB and more are compressed when stored; lz4 costs a fraction of the default pglz.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['external_contacts', 'external_tickets', 'external_deals'] LOOP
        EXECUTE format('ALTER TABLE %I ALTER COLUMN raw DROP DEFAULT, '
                       'ALTER COLUMN raw TYPE json USING raw::json, '
                       'ALTER COLUMN raw SET DEFAULT ''{}''', t);
        BEGIN
            EXECUTE format('ALTER TABLE %I ALTER COLUMN raw SET COMPRESSION lz4, '
                           'ALTER COLUMN properties SET COMPRESSION lz4', t);
        EXCEPTION WHEN feature_not_supported THEN
            -- A server built without lz4 keeps its default compression.
            NULL;
        END;
    END LOOP;
END
$$;
