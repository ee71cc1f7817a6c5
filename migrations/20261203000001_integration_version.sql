-- Optimistic concurrency for an integration's settings: `version` counts the writes of what a
-- caller edits (name, description, n8n URL and credentials, signing secret, schedule and its
-- policies, sync mode, data types, sweep share). The platform API answers it as the `ETag` and
-- takes `If-Match`, so two admins editing at once cannot silently undo each other.
ALTER TABLE integration_sources ADD COLUMN version bigint NOT NULL DEFAULT 1;

-- Bumped here, not by each statement, so no writer can forget it. What a sync writes (its
-- bookkeeping), the status and the moment ticks count from (changed by pause/resume, never by
-- an edit alone) do not count: a version read before a sync ran still matches after it.
-- Everything else does, a column added later included.
CREATE FUNCTION integration_sources_bump_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bookkeeping constant text[] := ARRAY['version', 'updated_at', 'status',
        'schedule_changed_at', 'last_sync_at',
        'last_sync_status', 'last_sync_log_id', 'last_successful_sync_at', 'total_syncs',
        'failed_syncs', 'total_records_synced'];
BEGIN
    IF (to_jsonb(NEW) - bookkeeping) IS DISTINCT FROM (to_jsonb(OLD) - bookkeeping) THEN
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER integration_sources_version
    BEFORE UPDATE ON integration_sources
    FOR EACH ROW EXECUTE FUNCTION integration_sources_bump_version();
