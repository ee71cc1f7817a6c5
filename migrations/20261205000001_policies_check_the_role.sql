-- Every policy also checks that its role is the current one. The login user is a member of both
-- roles (it must be, to switch to them) and, with PostgreSQL's default INHERIT, a membership makes
-- a policy `TO syncbridge_system` apply to the login user itself. Behind a pooler in transaction
-- mode a transaction can reach a server connection on which nobody ran `SET ROLE`: such a
-- statement used to see every tenant's rows; it now matches no policy and sees none (FORCE
-- leaves the owner no other way in). The service sets the role in every transaction itself
-- (`db::tenant_tx`, `db::system_tx`), so nothing it does depends on session state.
-- (PostgreSQL 16 could grant the memberships WITH INHERIT FALSE instead; 15 cannot, and
-- `ALTER ROLE … NOINHERIT` would change every other membership of the login user too.)
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN
        SELECT tablename, policyname FROM pg_policies
        WHERE schemaname = current_schema() AND policyname IN ('tenant_isolation', 'system_access')
    LOOP
        IF p.policyname = 'tenant_isolation' THEN
            EXECUTE format('ALTER POLICY tenant_isolation ON %I '
                           'USING (current_user = ''syncbridge_app'' AND tenant_id = app_current_tenant()) '
                           'WITH CHECK (current_user = ''syncbridge_app'' AND tenant_id = app_current_tenant())',
                           p.tablename);
        ELSE
            EXECUTE format('ALTER POLICY system_access ON %I '
                           'USING (current_user = ''syncbridge_system'') '
                           'WITH CHECK (current_user = ''syncbridge_system'')',
                           p.tablename);
        END IF;
    END LOOP;
END
$$;
