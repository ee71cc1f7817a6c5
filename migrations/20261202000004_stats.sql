-- The bytes of each delivery as received (after transport decompression), for the platform's
-- statistics; NULL for batches stored before it was kept and for replays (nothing was received).
ALTER TABLE ingest_batches ADD COLUMN body_bytes bigint;
-- The statistics sum a tenant's deliveries per day over a window.
CREATE INDEX ingest_batches_tenant_received_idx ON ingest_batches (tenant_id, received_at)
    INCLUDE (record_count, body_bytes);
