-- Webhook ingestion stores a batch's records in chunks, one per processing job, so a job reads and
-- decompresses only its own records instead of the whole batch (a 100,000-record batch would
-- otherwise be decompressed once per job, 100 times over).

ALTER TABLE ingest_batches
    DROP COLUMN payload,
    DROP COLUMN payload_encoding,
    ADD CONSTRAINT ingest_batches_tenant_id_id_key UNIQUE (tenant_id, id),
    ADD CONSTRAINT ingest_batches_jobs_check CHECK (jobs_done <= jobs_total);

-- Backpressure sums the unprocessed records of one tenant on every delivery.
CREATE INDEX ingest_batches_tenant_unfinished_idx ON ingest_batches (tenant_id)
    INCLUDE (record_count, records_processed)
    WHERE state IN ('received', 'processing');
-- Deduplication of deliveries that carry neither an idempotency key nor a sync log id.
CREATE INDEX ingest_batches_recent_content_idx ON ingest_batches (integration_id, content_hash, received_at);

CREATE TABLE ingest_batch_chunks (
    tenant_id        uuid        NOT NULL,
    batch_id         uuid        NOT NULL,
    chunk_index      integer     NOT NULL,
    -- Position of the chunk's first record in the batch, for error reports by record index.
    record_offset    integer     NOT NULL,
    record_count     integer     NOT NULL,
    -- The chunk's records as a JSON array, each record's bytes exactly as received.
    payload          bytea       NOT NULL,
    payload_encoding text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ingest_batch_chunks_pkey PRIMARY KEY (batch_id, chunk_index),
    CONSTRAINT ingest_batch_chunks_batch_fkey FOREIGN KEY (tenant_id, batch_id)
        REFERENCES ingest_batches (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT ingest_batch_chunks_payload_encoding_check CHECK (payload_encoding IN ('identity', 'gzip', 'zstd')),
    CONSTRAINT ingest_batch_chunks_record_count_check CHECK (record_count >= 0 AND record_offset >= 0)
);
-- Already compressed by the application: PostgreSQL's own compression would only cost CPU.
ALTER TABLE ingest_batch_chunks ALTER COLUMN payload SET STORAGE EXTERNAL;

CREATE TRIGGER ingest_batch_chunks_set_updated_at BEFORE UPDATE ON ingest_batch_chunks
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE INDEX ingest_batch_chunks_tenant_idx ON ingest_batch_chunks (tenant_id);
ALTER TABLE ingest_batch_chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE ingest_batch_chunks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ingest_batch_chunks TO syncbridge_app
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());
CREATE POLICY system_access ON ingest_batch_chunks TO syncbridge_system USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON ingest_batch_chunks TO syncbridge_app, syncbridge_system;
