-- The product schema. Every table carries tenant_id and is protected by row level security
-- (policies at the end of this file). Timestamps are timestamptz; updated_at is set by trigger.

CREATE TABLE tenants (
    id               uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id        uuid        NOT NULL GENERATED ALWAYS AS (id) STORED,
    name             text        NOT NULL,
    -- The tenant's own email domains: never matched to a customer account.
    own_domains      text[]      NOT NULL DEFAULT '{}',
    -- Further domains never matched (the vendor's staff, partners).
    excluded_domains text[]      NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_pkey PRIMARY KEY (id),
    CONSTRAINT tenants_name_not_blank CHECK (btrim(name) <> '')
);
CREATE UNIQUE INDEX tenants_name_key ON tenants (lower(name));

-- The platform's customer accounts that external records are matched to.
CREATE TABLE accounts (
    id          uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id   uuid        NOT NULL,
    name        text        NOT NULL,
    -- Normalised (lowercase, no scheme, no www., no path) by the application before writing.
    domains     text[]      NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_pkey PRIMARY KEY (id),
    CONSTRAINT accounts_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT accounts_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT accounts_name_not_blank CHECK (btrim(name) <> '')
);
CREATE INDEX accounts_domains_idx ON accounts USING gin (domains);
CREATE INDEX accounts_tenant_name_idx ON accounts (tenant_id, lower(name));

CREATE TABLE integration_sources (
    id                      uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id               uuid        NOT NULL,
    source_type             text        NOT NULL,
    name                    text        NOT NULL,
    description             text,
    status                  text        NOT NULL DEFAULT 'active',
    n8n_webhook_url         text,
    -- AES-256-GCM ciphertext of the credentials toward n8n; the key id says which key sealed it.
    credentials_encrypted   bytea,
    credentials_key_id      text,
    -- Standard Webhooks signing secret (sealed like the credentials); NULL: signatures not required.
    signing_secret_encrypted bytea,
    signing_secret_key_id   text,
    config                  jsonb       NOT NULL DEFAULT '{}',
    sync_schedule           text,
    sync_timezone           text        NOT NULL DEFAULT 'UTC',
    sync_mode               text        NOT NULL DEFAULT 'incremental',
    sync_data_types         text[]      NOT NULL DEFAULT '{}',
    last_sync_at            timestamptz,
    last_sync_status        text,
    last_sync_log_id        uuid,
    last_successful_sync_at timestamptz,
    total_syncs             bigint      NOT NULL DEFAULT 0,
    failed_syncs            bigint      NOT NULL DEFAULT 0,
    total_records_synced    bigint      NOT NULL DEFAULT 0,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT integration_sources_pkey PRIMARY KEY (id),
    CONSTRAINT integration_sources_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT integration_sources_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT integration_sources_source_type_check CHECK (source_type IN
        ('zoho_crm', 'zoho_desk', 'jira', 'salesforce', 'hubspot', 'zendesk', 'intercom', 'slack', 'custom')),
    CONSTRAINT integration_sources_status_check CHECK (status IN ('active', 'paused', 'error')),
    CONSTRAINT integration_sources_sync_mode_check CHECK (sync_mode IN ('incremental', 'full')),
    CONSTRAINT integration_sources_last_sync_status_check CHECK (last_sync_status IS NULL OR last_sync_status IN
        ('pending', 'running', 'success', 'partial', 'failed')),
    CONSTRAINT integration_sources_name_not_blank CHECK (btrim(name) <> '')
);
CREATE UNIQUE INDEX integration_sources_tenant_name_key ON integration_sources (tenant_id, lower(name));
-- The scheduler scans integrations that have a schedule.
CREATE INDEX integration_sources_scheduled_idx ON integration_sources (id)
    WHERE sync_schedule IS NOT NULL AND status = 'active';

CREATE TABLE integration_api_keys (
    id             uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id      uuid        NOT NULL,
    integration_id uuid        NOT NULL,
    name           text,
    -- The public part of the key, used to find its row; the key itself is only stored hashed.
    key_prefix     text        NOT NULL,
    key_hash       bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz,
    revoked_at     timestamptz,
    CONSTRAINT integration_api_keys_pkey PRIMARY KEY (id),
    CONSTRAINT integration_api_keys_key_prefix_key UNIQUE (key_prefix),
    CONSTRAINT integration_api_keys_integration_fkey FOREIGN KEY (tenant_id, integration_id)
        REFERENCES integration_sources (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT integration_api_keys_key_hash_length CHECK (octet_length(key_hash) = 32)
);
CREATE INDEX integration_api_keys_integration_idx ON integration_api_keys (integration_id);

CREATE TABLE integration_field_mappings (
    id             uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id      uuid        NOT NULL,
    integration_id uuid        NOT NULL,
    data_type      text        NOT NULL,
    target_field   text        NOT NULL,
    -- The mapping as validated JSON: source path, ops, options. Never interpolated into SQL.
    mapping        jsonb       NOT NULL,
    position       integer     NOT NULL DEFAULT 0,
    enabled        boolean     NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT integration_field_mappings_pkey PRIMARY KEY (id),
    CONSTRAINT integration_field_mappings_integration_fkey FOREIGN KEY (tenant_id, integration_id)
        REFERENCES integration_sources (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT integration_field_mappings_data_type_check CHECK (data_type IN ('contacts', 'tickets', 'deals')),
    CONSTRAINT integration_field_mappings_target_key UNIQUE (integration_id, data_type, target_field)
);

CREATE TABLE integration_sync_logs (
    id                 uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id          uuid        NOT NULL,
    integration_id     uuid        NOT NULL,
    trigger            text        NOT NULL,
    sync_mode          text        NOT NULL DEFAULT 'incremental',
    -- NULL: the sync covers several data types.
    data_type          text,
    status             text        NOT NULL DEFAULT 'pending',
    started_at         timestamptz,
    completed_at       timestamptz,
    duration_ms        bigint,
    records_per_second double precision,
    records_received   bigint      NOT NULL DEFAULT 0,
    records_created    bigint      NOT NULL DEFAULT 0,
    records_updated    bigint      NOT NULL DEFAULT 0,
    records_unchanged  bigint      NOT NULL DEFAULT 0,
    records_skipped    bigint      NOT NULL DEFAULT 0,
    records_failed     bigint      NOT NULL DEFAULT 0,
    records_unmatched  bigint      NOT NULL DEFAULT 0,
    -- Set when the batch flagged final has arrived; the sync closes once all batches are processed.
    final_received_at  timestamptz,
    batches_received   integer     NOT NULL DEFAULT 0,
    batches_processed  integer     NOT NULL DEFAULT 0,
    error_summary      text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT integration_sync_logs_pkey PRIMARY KEY (id),
    CONSTRAINT integration_sync_logs_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT integration_sync_logs_integration_fkey FOREIGN KEY (tenant_id, integration_id)
        REFERENCES integration_sources (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT integration_sync_logs_trigger_check CHECK (trigger IN ('webhook', 'schedule', 'manual', 'retry')),
    CONSTRAINT integration_sync_logs_sync_mode_check CHECK (sync_mode IN ('incremental', 'full')),
    CONSTRAINT integration_sync_logs_data_type_check CHECK (data_type IS NULL OR data_type IN ('contacts', 'tickets', 'deals')),
    CONSTRAINT integration_sync_logs_status_check CHECK (status IN ('pending', 'running', 'success', 'partial', 'failed'))
);
CREATE INDEX integration_sync_logs_integration_created_idx ON integration_sync_logs (integration_id, created_at DESC);
-- The watchdog and the "is a sync running" check look only at open syncs.
CREATE INDEX integration_sync_logs_open_idx ON integration_sync_logs (integration_id, updated_at)
    WHERE status IN ('pending', 'running');

ALTER TABLE integration_sources
    ADD CONSTRAINT integration_sources_last_sync_log_fkey FOREIGN KEY (tenant_id, last_sync_log_id)
        REFERENCES integration_sync_logs (tenant_id, id) ON DELETE SET NULL (last_sync_log_id);

-- Batches as n8n delivered them: the raw records kept as compressed bytes, not jsonb, because
-- re-parsing every record server-side was measured about ten times slower.
CREATE TABLE ingest_batches (
    id                uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id         uuid        NOT NULL,
    integration_id    uuid        NOT NULL,
    sync_log_id       uuid        NOT NULL,
    data_type         text        NOT NULL,
    source_type       text        NOT NULL,
    sync_mode         text        NOT NULL DEFAULT 'incremental',
    idempotency_key   text,
    content_hash      bytea       NOT NULL,
    payload           bytea       NOT NULL,
    payload_encoding  text        NOT NULL,
    is_final          boolean     NOT NULL DEFAULT false,
    state             text        NOT NULL DEFAULT 'received',
    record_count      integer     NOT NULL,
    jobs_total        integer     NOT NULL DEFAULT 0,
    jobs_done         integer     NOT NULL DEFAULT 0,
    records_processed integer     NOT NULL DEFAULT 0,
    records_created   integer     NOT NULL DEFAULT 0,
    records_updated   integer     NOT NULL DEFAULT 0,
    records_unchanged integer     NOT NULL DEFAULT 0,
    records_skipped   integer     NOT NULL DEFAULT 0,
    records_failed    integer     NOT NULL DEFAULT 0,
    records_unmatched integer     NOT NULL DEFAULT 0,
    received_at       timestamptz NOT NULL DEFAULT now(),
    processed_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ingest_batches_pkey PRIMARY KEY (id),
    CONSTRAINT ingest_batches_integration_fkey FOREIGN KEY (tenant_id, integration_id)
        REFERENCES integration_sources (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT ingest_batches_sync_log_fkey FOREIGN KEY (tenant_id, sync_log_id)
        REFERENCES integration_sync_logs (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT ingest_batches_data_type_check CHECK (data_type IN ('contacts', 'tickets', 'deals')),
    CONSTRAINT ingest_batches_sync_mode_check CHECK (sync_mode IN ('incremental', 'full')),
    CONSTRAINT ingest_batches_state_check CHECK (state IN ('received', 'processing', 'processed', 'failed')),
    CONSTRAINT ingest_batches_payload_encoding_check CHECK (payload_encoding IN ('identity', 'gzip', 'zstd')),
    CONSTRAINT ingest_batches_record_count_check CHECK (record_count >= 0)
);
-- Idempotency: a repeated delivery finds its original batch by key, or by content within its sync.
CREATE UNIQUE INDEX ingest_batches_idempotency_key ON ingest_batches (integration_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX ingest_batches_content_key ON ingest_batches (sync_log_id, content_hash);
CREATE INDEX ingest_batches_unfinished_idx ON ingest_batches (sync_log_id)
    WHERE state IN ('received', 'processing');

CREATE TABLE integration_sync_errors (
    id             bigint      GENERATED ALWAYS AS IDENTITY,
    tenant_id      uuid        NOT NULL,
    integration_id uuid        NOT NULL,
    sync_log_id    uuid        NOT NULL,
    batch_id       uuid,
    record_index   integer,
    external_id    text,
    field          text,
    code           text        NOT NULL,
    message        text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT integration_sync_errors_pkey PRIMARY KEY (id),
    CONSTRAINT integration_sync_errors_sync_log_fkey FOREIGN KEY (tenant_id, sync_log_id)
        REFERENCES integration_sync_logs (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT integration_sync_errors_integration_fkey FOREIGN KEY (tenant_id, integration_id)
        REFERENCES integration_sources (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT integration_sync_errors_batch_fkey FOREIGN KEY (batch_id)
        REFERENCES ingest_batches (id) ON DELETE SET NULL
);
CREATE INDEX integration_sync_errors_sync_log_idx ON integration_sync_errors (sync_log_id, id);

-- Which internal row each external record became, with the hash of what was last written.
CREATE TABLE integration_synced_records (
    tenant_id      uuid        NOT NULL,
    integration_id uuid        NOT NULL,
    data_type      text        NOT NULL,
    external_id    text        NOT NULL,
    internal_id    uuid        NOT NULL,
    content_hash   bytea       NOT NULL,
    last_sync_log_id uuid,
    first_synced_at timestamptz NOT NULL DEFAULT now(),
    last_synced_at timestamptz NOT NULL DEFAULT now(),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT integration_synced_records_pkey PRIMARY KEY (integration_id, data_type, external_id),
    CONSTRAINT integration_synced_records_integration_fkey FOREIGN KEY (tenant_id, integration_id)
        REFERENCES integration_sources (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT integration_synced_records_data_type_check CHECK (data_type IN ('contacts', 'tickets', 'deals'))
);
CREATE INDEX integration_synced_records_internal_idx ON integration_synced_records (internal_id);

CREATE TABLE external_contacts (
    id                uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id         uuid        NOT NULL,
    integration_id    uuid        NOT NULL,
    external_id       text        NOT NULL,
    account_id        uuid,
    match_method      text        NOT NULL DEFAULT 'none',
    email             text,
    email_domain      text,
    first_name        text,
    last_name         text,
    full_name         text,
    phone             text,
    title             text,
    company_name      text,
    lifecycle_stage   text,
    source_created_at timestamptz,
    source_updated_at timestamptz,
    properties        jsonb       NOT NULL DEFAULT '{}',
    raw               jsonb       NOT NULL DEFAULT '{}',
    content_hash      bytea,
    last_sync_log_id  uuid,
    deleted_at        timestamptz,
    last_synced_at    timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT external_contacts_pkey PRIMARY KEY (id),
    CONSTRAINT external_contacts_external_key UNIQUE (tenant_id, integration_id, external_id),
    CONSTRAINT external_contacts_integration_fkey FOREIGN KEY (tenant_id, integration_id)
        REFERENCES integration_sources (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT external_contacts_account_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES accounts (tenant_id, id) ON DELETE SET NULL (account_id),
    CONSTRAINT external_contacts_match_method_check CHECK (match_method IN ('exact_domain', 'registrable_domain', 'name', 'none'))
);
CREATE INDEX external_contacts_account_idx ON external_contacts (tenant_id, account_id);
CREATE INDEX external_contacts_email_domain_idx ON external_contacts (tenant_id, email_domain);
CREATE INDEX external_contacts_sweep_idx ON external_contacts (integration_id, last_synced_at) WHERE deleted_at IS NULL;

CREATE TABLE external_tickets (
    id                uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id         uuid        NOT NULL,
    integration_id    uuid        NOT NULL,
    external_id       text        NOT NULL,
    account_id        uuid,
    match_method      text        NOT NULL DEFAULT 'none',
    ticket_number     text,
    subject           text,
    description       text,
    status            text,
    priority          text,
    ticket_type       text,
    channel           text,
    requester_email   text,
    requester_domain  text,
    requester_name    text,
    assignee          text,
    opened_at         timestamptz,
    closed_at         timestamptz,
    due_at            timestamptz,
    source_created_at timestamptz,
    source_updated_at timestamptz,
    properties        jsonb       NOT NULL DEFAULT '{}',
    raw               jsonb       NOT NULL DEFAULT '{}',
    content_hash      bytea,
    last_sync_log_id  uuid,
    deleted_at        timestamptz,
    last_synced_at    timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT external_tickets_pkey PRIMARY KEY (id),
    CONSTRAINT external_tickets_external_key UNIQUE (tenant_id, integration_id, external_id),
    CONSTRAINT external_tickets_integration_fkey FOREIGN KEY (tenant_id, integration_id)
        REFERENCES integration_sources (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT external_tickets_account_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES accounts (tenant_id, id) ON DELETE SET NULL (account_id),
    CONSTRAINT external_tickets_match_method_check CHECK (match_method IN ('exact_domain', 'registrable_domain', 'name', 'none'))
);
CREATE INDEX external_tickets_account_idx ON external_tickets (tenant_id, account_id);
CREATE INDEX external_tickets_status_idx ON external_tickets (tenant_id, status);
CREATE INDEX external_tickets_sweep_idx ON external_tickets (integration_id, last_synced_at) WHERE deleted_at IS NULL;

CREATE TABLE external_deals (
    id                uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id         uuid        NOT NULL,
    integration_id    uuid        NOT NULL,
    external_id       text        NOT NULL,
    account_id        uuid,
    match_method      text        NOT NULL DEFAULT 'none',
    name              text,
    amount            numeric(20, 4),
    currency          text,
    stage             text,
    pipeline          text,
    probability       numeric(7, 4),
    close_date        date,
    is_closed         boolean,
    is_won            boolean,
    deal_type         text,
    owner_name        text,
    owner_email       text,
    company_name      text,
    company_domain    text,
    contact_email     text,
    source_created_at timestamptz,
    source_updated_at timestamptz,
    properties        jsonb       NOT NULL DEFAULT '{}',
    raw               jsonb       NOT NULL DEFAULT '{}',
    content_hash      bytea,
    last_sync_log_id  uuid,
    deleted_at        timestamptz,
    last_synced_at    timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT external_deals_pkey PRIMARY KEY (id),
    CONSTRAINT external_deals_external_key UNIQUE (tenant_id, integration_id, external_id),
    CONSTRAINT external_deals_integration_fkey FOREIGN KEY (tenant_id, integration_id)
        REFERENCES integration_sources (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT external_deals_account_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES accounts (tenant_id, id) ON DELETE SET NULL (account_id),
    CONSTRAINT external_deals_match_method_check CHECK (match_method IN ('exact_domain', 'registrable_domain', 'name', 'none'))
);
CREATE INDEX external_deals_account_idx ON external_deals (tenant_id, account_id);
CREATE INDEX external_deals_stage_idx ON external_deals (tenant_id, stage);
CREATE INDEX external_deals_sweep_idx ON external_deals (integration_id, last_synced_at) WHERE deleted_at IS NULL;

-- updated_at triggers and row level security on every tenant table, in one loop so that no table
-- is forgotten. Policies:
--   tenant_isolation (syncbridge_app): rows of the transaction's tenant only, for reads and writes;
--   system_access (syncbridge_system): every row, for cross-tenant system work.
-- FORCE makes the table owner subject to the policies too; it has none, so it sees nothing unless
-- it switches role (superusers bypass RLS regardless, which is why the service never stays one).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'tenants', 'accounts', 'integration_sources', 'integration_api_keys',
        'integration_field_mappings', 'integration_sync_logs', 'ingest_batches',
        'integration_sync_errors', 'integration_synced_records',
        'external_contacts', 'external_tickets', 'external_deals'
    ] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION set_updated_at()',
                       t || '_set_updated_at', t);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (tenant_id)', t || '_tenant_idx', t);
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I TO syncbridge_app '
                       'USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant())', t);
        EXECUTE format('CREATE POLICY system_access ON %I TO syncbridge_system USING (true) WITH CHECK (true)', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO syncbridge_app, syncbridge_system', t);
    END LOOP;
END
$$;
