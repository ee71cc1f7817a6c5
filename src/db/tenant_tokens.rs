//! SQL of `tenant_api_tokens`: the tokens the platform's backend calls the API with (only their
//! hash is stored).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    name: Option<&str>,
    read_only: bool,
    prefix: &str,
    hash: &[u8],
) -> Result<TokenInfo, sqlx::Error> {
    sqlx::query_as!(
        TokenInfo,
        "INSERT INTO tenant_api_tokens (tenant_id, name, read_only, token_prefix, token_hash)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING id, tenant_id, name, token_prefix AS prefix, read_only, created_at,
                   last_used_at, revoked_at",
        tenant_id,
        name,
        read_only,
        prefix,
        hash
    )
    .fetch_one(conn)
    .await
}

/// A token as its tenant's admins see it: never its secret.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: Option<String>,
    pub prefix: String,
    pub read_only: bool,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The tenant's tokens, newest first (the caller's tenant transaction decides whose).
pub async fn list(conn: &mut PgConnection) -> Result<Vec<TokenInfo>, sqlx::Error> {
    sqlx::query_as!(
        TokenInfo,
        "SELECT id, tenant_id, name, token_prefix AS prefix, read_only, created_at, last_used_at,
                revoked_at
         FROM tenant_api_tokens ORDER BY created_at DESC, id"
    )
    .fetch_all(conn)
    .await
}

/// Revokes the token (the caller's tenant transaction decides which tenant's); the token as it
/// now is, or `None` when the tenant has no such token. Revoking twice keeps the first time.
pub async fn revoke(conn: &mut PgConnection, id: Uuid) -> Result<Option<TokenInfo>, sqlx::Error> {
    sqlx::query_as!(
        TokenInfo,
        "UPDATE tenant_api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1
         RETURNING id, tenant_id, name, token_prefix AS prefix, read_only, created_at,
                   last_used_at, revoked_at",
        id
    )
    .fetch_optional(conn)
    .await
}

/// A token found by its prefix.
pub struct PresentedToken {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub token_hash: Vec<u8>,
    pub read_only: bool,
    pub revoked: bool,
}

/// The token with this public prefix; system work, since the tenant is not known yet.
pub async fn by_prefix(
    conn: &mut PgConnection,
    prefix: &str,
) -> Result<Option<PresentedToken>, sqlx::Error> {
    sqlx::query_as!(
        PresentedToken,
        r#"SELECT id, tenant_id, token_hash, read_only, revoked_at IS NOT NULL AS "revoked!"
           FROM tenant_api_tokens WHERE token_prefix = $1"#,
        prefix
    )
    .fetch_optional(conn)
    .await
}

/// Records the token's use, at most once a minute, so that a busy caller does not rewrite its
/// row on every request.
pub async fn touch(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenant_api_tokens SET last_used_at = now()
         WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}
