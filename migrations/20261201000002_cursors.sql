-- Syncs that tell the truth (see docs/SYNC_LIFECYCLE.md): a cursor per integration and data
-- type, completion per requested data type, source errors reported by the workflow, and a sweep
-- that is skipped when a full sync saw too little.

-- Where the next incremental sync of a data type starts: the start of the last sync whose part
-- of this data type succeeded (the trigger sends it minus `n8n.cursor_overlap_secs`).
CREATE TABLE integration_cursors (
    tenant_id      uuid        NOT NULL,
    integration_id uuid        NOT NULL,
    data_type      text        NOT NULL,
    cursor_at      timestamptz NOT NULL,
    -- The sync that moved it last.
    sync_log_id    uuid,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT integration_cursors_pkey PRIMARY KEY (integration_id, data_type),
    CONSTRAINT integration_cursors_integration_fkey FOREIGN KEY (tenant_id, integration_id)
        REFERENCES integration_sources (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT integration_cursors_sync_log_fkey FOREIGN KEY (tenant_id, sync_log_id)
        REFERENCES integration_sync_logs (tenant_id, id) ON DELETE SET NULL (sync_log_id),
    CONSTRAINT integration_cursors_data_type_check CHECK (data_type IN ('contacts', 'tickets', 'deals'))
);

-- The start of every sync already closed successfully becomes its data types' cursor, so an
-- upgraded install's next incremental sync starts where the old rule would have, or earlier.
INSERT INTO integration_cursors (tenant_id, integration_id, data_type, cursor_at, sync_log_id)
SELECT DISTINCT ON (l.integration_id, t.data_type)
       l.tenant_id, l.integration_id, t.data_type,
       COALESCE(l.triggered_at, l.started_at, l.created_at), l.id
FROM integration_sync_logs l
CROSS JOIN LATERAL unnest(COALESCE(l.data_types, ARRAY[l.data_type])) AS t(data_type)
WHERE l.status = 'success' AND t.data_type IS NOT NULL
ORDER BY l.integration_id, t.data_type, COALESCE(l.triggered_at, l.started_at, l.created_at) DESC;

ALTER TABLE integration_sync_logs
    DROP CONSTRAINT integration_sync_logs_failure_reason_check,
    ADD CONSTRAINT integration_sync_logs_failure_reason_check CHECK (failure_reason IS NULL OR failure_reason IN
        ('trigger_rejected', 'trigger_failed', 'timed_out', 'processing_failed', 'closed_by_admin',
         'source_error')),
    -- The data types whose final batch has arrived; the sync is complete when every requested
    -- type is among them.
    ADD COLUMN final_data_types text[] NOT NULL DEFAULT '{}',
    -- What the source answered when the workflow reported that fetching failed.
    ADD COLUMN source_error jsonb;

UPDATE integration_sync_logs
SET final_data_types = COALESCE(data_types, ARRAY[data_type])
WHERE final_received_at IS NOT NULL AND COALESCE(data_types, ARRAY[data_type]) IS NOT NULL;

-- A full sync's sweep per data type: applied, or skipped because the sync saw fewer than
-- `sweep_min_seen_percent` of the live rows (an operator may apply it later).
CREATE TABLE integration_sync_sweeps (
    tenant_id    uuid        NOT NULL,
    sync_log_id  uuid        NOT NULL,
    data_type    text        NOT NULL,
    live_rows    bigint      NOT NULL,
    seen_rows    bigint      NOT NULL,
    deleted_rows bigint      NOT NULL DEFAULT 0,
    state        text        NOT NULL,
    reason       text,
    decided_at   timestamptz NOT NULL DEFAULT now(),
    applied_at   timestamptz,
    applied_by   text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT integration_sync_sweeps_pkey PRIMARY KEY (sync_log_id, data_type),
    CONSTRAINT integration_sync_sweeps_sync_log_fkey FOREIGN KEY (tenant_id, sync_log_id)
        REFERENCES integration_sync_logs (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT integration_sync_sweeps_state_check CHECK (state IN ('applied', 'skipped')),
    CONSTRAINT integration_sync_sweeps_data_type_check CHECK (data_type IN ('contacts', 'tickets', 'deals'))
);

-- Both new tenant tables as the schema's others: updated_at, a tenant index, forced row level
-- security with the two policies, the roles' grants.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['integration_cursors', 'integration_sync_sweeps'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION set_updated_at()',
                       t || '_set_updated_at', t);
        EXECUTE format('CREATE INDEX %I ON %I (tenant_id)', t || '_tenant_idx', t);
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I TO syncbridge_app '
                       'USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant())', t);
        EXECUTE format('CREATE POLICY system_access ON %I TO syncbridge_system USING (true) WITH CHECK (true)', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO syncbridge_app, syncbridge_system', t);
    END LOOP;
END
$$;

-- The share of an integration's live rows (per data type) a full sync must have seen for its
-- sweep to soft-delete the rest.
ALTER TABLE integration_sources
    ADD COLUMN sweep_min_seen_percent smallint NOT NULL DEFAULT 50,
    ADD CONSTRAINT integration_sources_sweep_min_seen_percent_check
        CHECK (sweep_min_seen_percent BETWEEN 0 AND 100);

-- On a final batch: how many batches its data type's part of the sync has in all (n8n posts a
-- workflow's batches concurrently, so the final one may arrive before others). The type is
-- complete once its final batch and that many batches are in.
ALTER TABLE ingest_batches ADD COLUMN batch_count integer,
    ADD CONSTRAINT ingest_batches_batch_count_check CHECK (batch_count IS NULL OR batch_count >= 1);
