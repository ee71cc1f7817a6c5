-- Console sign-ins: a browser session is a random secret in an HttpOnly cookie; only its
-- SHA-256 is stored. A session signed in with a tenant API token acts for that token's tenant and
-- ends when the token is revoked; one signed in with the admin token (`install`) acts for the
-- tenant it has chosen (`tenant_id`, changeable, NULL before it chose). Each carries the CSRF
-- token every state-changing form must send back.
CREATE TABLE console_sessions (
    id           uuid        NOT NULL DEFAULT gen_random_uuid(),
    secret_hash  bytea       NOT NULL,
    install      boolean     NOT NULL,
    tenant_id    uuid,
    token_id     uuid,
    read_only    boolean     NOT NULL DEFAULT false,
    csrf_token   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    CONSTRAINT console_sessions_pkey PRIMARY KEY (id),
    CONSTRAINT console_sessions_secret_hash_key UNIQUE (secret_hash),
    CONSTRAINT console_sessions_tenant_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT console_sessions_token_fkey FOREIGN KEY (token_id)
        REFERENCES tenant_api_tokens (id) ON DELETE CASCADE,
    CONSTRAINT console_sessions_scope CHECK (install OR (tenant_id IS NOT NULL AND token_id IS NOT NULL)),
    CONSTRAINT console_sessions_secret_hash_length CHECK (octet_length(secret_hash) = 32)
);
CREATE TRIGGER console_sessions_set_updated_at BEFORE UPDATE ON console_sessions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE INDEX console_sessions_tenant_idx ON console_sessions (tenant_id);
CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);
-- As every tenant table: row level security forced; sessions are found by their secret before
-- any tenant is known, so the service reads them as the system role.
ALTER TABLE console_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE console_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON console_sessions TO syncbridge_app
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());
CREATE POLICY system_access ON console_sessions TO syncbridge_system USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON console_sessions TO syncbridge_app, syncbridge_system;
