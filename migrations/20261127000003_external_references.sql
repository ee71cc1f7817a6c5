-- The external tables' references to their integration and matched account, kept by the
-- pipeline and by triggers instead of foreign keys.
--
-- A foreign key checks every inserted row with its own query and row lock: in the pipeline
-- benchmark these checks were 16 % of all CPU of an initial sync (one lookup and one
-- FOR KEY SHARE lock on the account and one on the integration per row, four workers locking the
-- same rows at once). The pipeline now takes each guarantee once per 1,000-record chunk:
-- * integration: the chunk transaction locks its integration row FOR KEY SHARE (what the
--   foreign key did per row), so a deletion waits for it and then removes the rows it wrote;
-- * account: the chunk transaction holds `lock_tenant_accounts(tenant, false)` from before it
--   reads the tenant's accounts until it commits; deleting an account takes the same lock
--   exclusively, so it waits for chunks that may be writing that account's id, then clears the
--   id from every row, theirs included (each statement of the trigger sees what committed
--   before it). A chunk starting after the deletion sees the account gone.
ALTER TABLE external_contacts
    DROP CONSTRAINT external_contacts_account_fkey,
    DROP CONSTRAINT external_contacts_integration_fkey;
ALTER TABLE external_tickets
    DROP CONSTRAINT external_tickets_account_fkey,
    DROP CONSTRAINT external_tickets_integration_fkey;
ALTER TABLE external_deals
    DROP CONSTRAINT external_deals_account_fkey,
    DROP CONSTRAINT external_deals_integration_fkey;

-- Two-key advisory locks (a separate space from the one-key locks of batch deduplication);
-- 0x53594e43 is 'SYNC'. Tenants whose hashes collide only wait for each other.
CREATE FUNCTION lock_tenant_accounts(tenant uuid, exclusive boolean) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF exclusive THEN
        PERFORM pg_advisory_xact_lock(1398361667, hashtext(tenant::text));
    ELSE
        PERFORM pg_advisory_xact_lock_shared(1398361667, hashtext(tenant::text));
    END IF;
END
$$;

-- Deleting accounts was ON DELETE SET NULL (account_id); the match is now reset as a whole, and
-- the next sync of a record matches it afresh (its content hash included the account). Deleting
-- integrations was ON DELETE CASCADE.
CREATE FUNCTION external_rows_follow_deletion() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    t text;
BEGIN
    IF TG_TABLE_NAME = 'accounts' THEN
        PERFORM lock_tenant_accounts(tenant_id, true)
        FROM (SELECT DISTINCT tenant_id FROM deleted ORDER BY tenant_id) d;
    END IF;
    FOREACH t IN ARRAY ARRAY['external_contacts', 'external_tickets', 'external_deals'] LOOP
        IF TG_TABLE_NAME = 'accounts' THEN
            EXECUTE format('UPDATE %I e SET account_id = NULL, match_method = ''none'', '
                           'match_reason = ''account_deleted'' FROM deleted d '
                           'WHERE e.tenant_id = d.tenant_id AND e.account_id = d.id', t);
        ELSE
            EXECUTE format('DELETE FROM %I e USING deleted d '
                           'WHERE e.tenant_id = d.tenant_id AND e.integration_id = d.id', t);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
CREATE TRIGGER accounts_unmatch_external_rows
    AFTER DELETE ON accounts REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION external_rows_follow_deletion();
CREATE TRIGGER integration_sources_delete_external_rows
    AFTER DELETE ON integration_sources REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION external_rows_follow_deletion();

-- A foreign key also refused changing a referenced key; ids of accounts and integrations never
-- change. AFTER, so that row level security refuses a move to another tenant first, as itself.
CREATE FUNCTION refuse_key_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'the id and tenant of % rows never change', TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;
CREATE TRIGGER accounts_key_unchanged
    AFTER UPDATE OF id, tenant_id ON accounts FOR EACH ROW
    WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION refuse_key_change();
CREATE TRIGGER integration_sources_key_unchanged
    AFTER UPDATE OF id, tenant_id ON integration_sources FOR EACH ROW
    WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION refuse_key_change();
