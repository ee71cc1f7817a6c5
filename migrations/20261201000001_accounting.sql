-- Every accepted record accounted for (see docs/SYNC_LIFECYCLE.md): chunks whose job died are
-- settled as failed, batches and syncs always end, the latest delivery of a record wins, stored
-- chunks are kept for replay and then deleted.

-- Why a sync failed or closed early; `replay` syncs re-run a sync's stored chunks.
ALTER TABLE integration_sync_logs
    DROP CONSTRAINT integration_sync_logs_failure_reason_check,
    ADD CONSTRAINT integration_sync_logs_failure_reason_check CHECK (failure_reason IS NULL OR failure_reason IN
        ('trigger_rejected', 'trigger_failed', 'timed_out', 'processing_failed', 'closed_by_admin')),
    DROP CONSTRAINT integration_sync_logs_trigger_check,
    ADD CONSTRAINT integration_sync_logs_trigger_check CHECK (trigger IN
        ('webhook', 'schedule', 'manual', 'retry', 'replay')),
    -- Chunks of this sync settled as failed (their job died, or their batch was discarded).
    ADD COLUMN chunks_failed integer NOT NULL DEFAULT 0,
    -- The sync a replay re-ran.
    ADD COLUMN replay_of uuid,
    ADD CONSTRAINT integration_sync_logs_replay_of_fkey FOREIGN KEY (tenant_id, replay_of)
        REFERENCES integration_sync_logs (tenant_id, id) ON DELETE SET NULL (replay_of);

-- Delivery order: every batch takes the next number when it is stored; a row remembers the
-- number (times 2^20, plus the record's index in its batch) of the delivery that wrote it, and a
-- delivery older than that never overwrites it.
CREATE SEQUENCE ingest_delivery_seq AS bigint;
GRANT USAGE ON SEQUENCE ingest_delivery_seq TO syncbridge_app, syncbridge_system;

ALTER TABLE ingest_batches
    ADD COLUMN delivery_seq bigint NOT NULL DEFAULT nextval('ingest_delivery_seq'),
    -- Chunks settled as failed, and the first reason (the error rows hold each one).
    ADD COLUMN chunks_failed integer NOT NULL DEFAULT 0,
    ADD COLUMN failure_reason text,
    -- When retention deleted the batch's chunks: it can no longer be replayed.
    ADD COLUMN chunks_deleted_at timestamptz;
-- Retention finds old batches whose chunks are still stored by delivery time.
CREATE INDEX ingest_batches_chunks_kept_idx ON ingest_batches (received_at)
    WHERE chunks_deleted_at IS NULL;

ALTER TABLE ingest_batch_chunks
    -- The job that processes the chunk: when it is dead (failed, cancelled or deleted) and the
    -- chunk unprocessed, the chunk is settled as failed.
    ADD COLUMN job_id bigint,
    -- Set when the chunk was settled as failed; cleared when a retry of its job processes it.
    ADD COLUMN failed_at timestamptz;
CREATE INDEX ingest_batch_chunks_unsettled_idx ON ingest_batch_chunks (job_id)
    WHERE processed_at IS NULL AND failed_at IS NULL;

ALTER TABLE external_contacts ADD COLUMN delivery_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE external_tickets ADD COLUMN delivery_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE external_deals ADD COLUMN delivery_seq bigint NOT NULL DEFAULT 0;

-- Retention of per-record errors.
CREATE INDEX integration_sync_errors_created_at_idx ON integration_sync_errors (created_at);

-- Chunks stored before this migration name no job. Those still unprocessed get theirs, so a dead
-- one is settled like any other; one whose job is gone (a dead job pruned after its retention) gets
-- job id 0, which no job has: it is settled as "deleted". On a new database the queue's tables do
-- not exist yet (they are migrated after these) and there is nothing to do.
DO $$
BEGIN
    IF to_regclass('jobs') IS NOT NULL THEN
        -- The owner sees no tenant rows (row level security is forced); the system role sees all.
        SET LOCAL ROLE syncbridge_system;
        UPDATE ingest_batch_chunks c
        SET job_id = COALESCE(
            (SELECT max(j.id) FROM jobs j
             WHERE j.kind = 'ingest.process_chunk'
               AND j.args ->> 'batch_id' = c.batch_id::text
               AND (j.args ->> 'chunk')::int = c.chunk_index),
            0)
        WHERE c.processed_at IS NULL AND c.job_id IS NULL;
        RESET ROLE;
    END IF;
END
$$;
