-- Every upsert writes each index of the external tables. Their (tenant_id) indexes, added for
-- row level security by the schema's loop, duplicate the leading column of the unique
-- (tenant_id, integration_id, external_id) and (tenant_id, account_id) indexes, which serve the
-- same scans; one index fewer per written row.
DROP INDEX external_contacts_tenant_idx;
DROP INDEX external_tickets_tenant_idx;
DROP INDEX external_deals_tenant_idx;
