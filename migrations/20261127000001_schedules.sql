-- Scheduled syncs: per-integration schedule policies, the record of every schedule tick (whose
-- primary key makes a tick fire at most once however many schedulers run), and what a sync log
-- needs to report triggers, time-outs and late batches.

ALTER TABLE integration_sources
    -- What to do with ticks that passed while no scheduler ran: 'skip' them, or 'run_latest' once.
    ADD COLUMN sync_missed_ticks text NOT NULL DEFAULT 'run_latest',
    -- A tick that comes while a sync of the integration is still open: 'skip' it (recorded), or
    -- 'queue' a new sync anyway.
    ADD COLUMN sync_on_running text NOT NULL DEFAULT 'skip',
    -- Each tick fires up to this many seconds late, a fixed offset per integration, so that many
    -- integrations on one schedule do not all ask n8n at the same second.
    ADD COLUMN sync_jitter_secs integer NOT NULL DEFAULT 0,
    -- Ticks before this moment are not missed ticks: a new or changed schedule starts from here.
    ADD COLUMN schedule_changed_at timestamptz,
    -- How syncbridge authenticates toward n8n; the secret parts are in credentials_encrypted.
    ADD COLUMN n8n_auth_kind text NOT NULL DEFAULT 'none',
    ADD CONSTRAINT integration_sources_sync_missed_ticks_check CHECK (sync_missed_ticks IN ('skip', 'run_latest')),
    ADD CONSTRAINT integration_sources_sync_on_running_check CHECK (sync_on_running IN ('skip', 'queue')),
    ADD CONSTRAINT integration_sources_sync_jitter_check CHECK (sync_jitter_secs BETWEEN 0 AND 86400),
    ADD CONSTRAINT integration_sources_n8n_auth_kind_check CHECK (n8n_auth_kind IN ('none', 'header', 'basic')),
    ADD CONSTRAINT integration_sources_credentials_sealed CHECK (
        (n8n_auth_kind = 'none') = (credentials_encrypted IS NULL));

ALTER TABLE integration_sync_logs
    -- The data types asked of n8n (NULL for syncs started by a delivery).
    ADD COLUMN data_types text[],
    -- The schedule tick that started the sync.
    ADD COLUMN scheduled_for timestamptz,
    -- When n8n accepted the trigger, and the job that sent it.
    ADD COLUMN triggered_at timestamptz,
    ADD COLUMN trigger_job_id bigint,
    -- Why a sync failed as a whole, machine-readable: 'trigger_rejected', 'trigger_failed',
    -- 'timed_out'.
    ADD COLUMN failure_reason text,
    -- The last delivery for this sync: the watchdog closes a sync silent for too long.
    ADD COLUMN last_batch_at timestamptz,
    -- Batches delivered after the watchdog had closed the sync; they are stored and processed.
    ADD COLUMN late_batches integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT integration_sync_logs_failure_reason_check CHECK (failure_reason IS NULL OR failure_reason IN
        ('trigger_rejected', 'trigger_failed', 'timed_out'));

CREATE TABLE integration_schedule_ticks (
    tenant_id      uuid        NOT NULL,
    integration_id uuid        NOT NULL,
    -- The cron tick (UTC), before jitter.
    tick_at        timestamptz NOT NULL,
    -- 'triggered': a sync and its TriggerSync job were created; 'skipped_running': a sync was
    -- still open; 'skipped_missed': the tick passed while no scheduler ran and the policy is skip.
    outcome        text        NOT NULL,
    sync_log_id    uuid,
    job_id         bigint,
    detail         text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- One row per tick: the scheduler inserts it in the transaction that creates the tick's job,
    -- so a second scheduler's insert of the same tick conflicts and creates nothing.
    CONSTRAINT integration_schedule_ticks_pkey PRIMARY KEY (integration_id, tick_at),
    CONSTRAINT integration_schedule_ticks_integration_fkey FOREIGN KEY (tenant_id, integration_id)
        REFERENCES integration_sources (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT integration_schedule_ticks_sync_log_fkey FOREIGN KEY (tenant_id, sync_log_id)
        REFERENCES integration_sync_logs (tenant_id, id) ON DELETE SET NULL (sync_log_id),
    CONSTRAINT integration_schedule_ticks_outcome_check CHECK (outcome IN
        ('triggered', 'skipped_running', 'skipped_missed'))
);

CREATE TRIGGER integration_schedule_ticks_set_updated_at BEFORE UPDATE ON integration_schedule_ticks
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
ALTER TABLE integration_schedule_ticks ENABLE ROW LEVEL SECURITY;
ALTER TABLE integration_schedule_ticks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON integration_schedule_ticks TO syncbridge_app
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());
CREATE POLICY system_access ON integration_schedule_ticks TO syncbridge_system USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON integration_schedule_ticks TO syncbridge_app, syncbridge_system;

-- The watchdog looks for open syncs by their last delivery.
CREATE INDEX integration_sync_logs_open_last_batch_idx
    ON integration_sync_logs (COALESCE(last_batch_at, created_at)) WHERE status IN ('pending', 'running');
