-- The worker pipeline.

-- A chunk is claimed by setting processed_at in the processing job's transaction: running the same
-- chunk again (an admin retry of a completed job, a duplicate enqueue) finds it processed and
-- changes nothing.
ALTER TABLE ingest_batch_chunks ADD COLUMN processed_at timestamptz;

-- Why a record matched no account (free_mail_domain, ambiguous_domain, excluded_domain, ...).
ALTER TABLE external_contacts ADD COLUMN match_reason text;
ALTER TABLE external_tickets ADD COLUMN match_reason text;
ALTER TABLE external_deals ADD COLUMN match_reason text;

-- The external tables already hold external id, internal id, content hash and last sync per
-- record; a second table written in step with them would double every upsert's writes for no
-- information. The synced-records view keeps the seed's name and shape. security_invoker makes
-- the callers' row level security apply to the underlying tables.
DROP TABLE integration_synced_records;
CREATE VIEW integration_synced_records WITH (security_invoker = true) AS
    SELECT tenant_id, integration_id, 'contacts'::text AS data_type, external_id, id AS internal_id,
           content_hash, last_sync_log_id, created_at AS first_synced_at, last_synced_at, deleted_at
    FROM external_contacts
    UNION ALL
    SELECT tenant_id, integration_id, 'tickets', external_id, id, content_hash, last_sync_log_id,
           created_at, last_synced_at, deleted_at
    FROM external_tickets
    UNION ALL
    SELECT tenant_id, integration_id, 'deals', external_id, id, content_hash, last_sync_log_id,
           created_at, last_synced_at, deleted_at
    FROM external_deals;
GRANT SELECT ON integration_synced_records TO syncbridge_app, syncbridge_system;
