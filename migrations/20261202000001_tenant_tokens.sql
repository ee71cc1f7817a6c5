-- Tenant API tokens: how the platform's backend calls the API on behalf of one tenant. Only the
-- token's SHA-256 is stored (like integration keys); its public prefix finds the row.
CREATE TABLE tenant_api_tokens (
    id           uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id    uuid        NOT NULL,
    name         text,
    token_prefix text        NOT NULL,
    token_hash   bytea       NOT NULL,
    -- A read-only token may read everything of its tenant and change nothing.
    read_only    boolean     NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT tenant_api_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT tenant_api_tokens_token_prefix_key UNIQUE (token_prefix),
    CONSTRAINT tenant_api_tokens_tenant_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT tenant_api_tokens_token_hash_length CHECK (octet_length(token_hash) = 32)
);

-- As every tenant table (see the schema migration): updated_at, tenant index, row level
-- security forced, the app role sees its tenant's rows, the system role every row.
CREATE TRIGGER tenant_api_tokens_set_updated_at BEFORE UPDATE ON tenant_api_tokens
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE INDEX tenant_api_tokens_tenant_idx ON tenant_api_tokens (tenant_id);
ALTER TABLE tenant_api_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_api_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_api_tokens TO syncbridge_app
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());
CREATE POLICY system_access ON tenant_api_tokens TO syncbridge_system USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_api_tokens TO syncbridge_app, syncbridge_system;
