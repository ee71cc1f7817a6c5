-- Database roles the service acts as. The login user (the owner of every table, who runs these
-- migrations) never reads tenant data directly: every pooled connection switches to
-- syncbridge_app, whose policies see one tenant at a time, and cross-tenant system work (API-key
-- lookup, workers) switches to syncbridge_system for one transaction.
-- Roles are cluster-wide, so creation tolerates a concurrent creator in another database.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'syncbridge_app') THEN
        BEGIN
            CREATE ROLE syncbridge_app NOLOGIN NOINHERIT;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'syncbridge_system') THEN
        BEGIN
            CREATE ROLE syncbridge_system NOLOGIN NOINHERIT;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    -- The login user must be able to SET ROLE to both; a superuser already can.
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        IF NOT pg_has_role(current_user, 'syncbridge_app', 'MEMBER') THEN
            EXECUTE format('GRANT syncbridge_app TO %I', current_user);
        END IF;
        IF NOT pg_has_role(current_user, 'syncbridge_system', 'MEMBER') THEN
            EXECUTE format('GRANT syncbridge_system TO %I', current_user);
        END IF;
    END IF;
END
$$;

-- The tenant of the current transaction, NULL when none is set (then no tenant row is visible).
CREATE FUNCTION app_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

CREATE FUNCTION set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

GRANT USAGE ON SCHEMA public TO syncbridge_app, syncbridge_system;
-- Every table and sequence created by later migrations is usable by both roles; which rows
-- they see is decided by row level security, not by grants.
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO syncbridge_app, syncbridge_system;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO syncbridge_app, syncbridge_system;
-- /readyz compares the applied migrations with the binary's.
GRANT SELECT ON _sqlx_migrations TO syncbridge_app, syncbridge_system;
