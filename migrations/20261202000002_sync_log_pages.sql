-- The platform API pages a tenant's sync logs newest first by (created_at, id): keyset pages
-- served by this index however many sync logs the tenant has.
CREATE INDEX integration_sync_logs_tenant_created_idx
    ON integration_sync_logs (tenant_id, created_at DESC, id DESC);
