-- An operator's console session is bound to the admin token it signed in with: SHA-256 of the
-- session's secret and that token. When the admin token changes, every operator session ends at
-- its next request (the binding no longer matches); the table alone tells nothing about the token.
-- Operator sessions from before this column have no binding: they end now.
DELETE FROM console_sessions WHERE install;
ALTER TABLE console_sessions ADD COLUMN admin_binding bytea;
ALTER TABLE console_sessions ADD CONSTRAINT console_sessions_admin_binding
    CHECK (install = (admin_binding IS NOT NULL) AND (admin_binding IS NULL OR octet_length(admin_binding) = 32));
