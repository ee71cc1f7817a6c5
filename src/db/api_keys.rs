//! SQL of `integration_api_keys`: the keys n8n delivers with (only their hash is stored).

use sqlx::PgConnection;
use uuid::Uuid;

use super::integrations::WebhookTarget;
use crate::domain::{DataType, IntegrationStatus, SourceType, SyncMode};

pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    integration_id: Uuid,
    name: Option<&str>,
    prefix: &str,
    hash: &[u8],
) -> Result<KeyInfo, sqlx::Error> {
    sqlx::query_as!(
        KeyInfo,
        "INSERT INTO integration_api_keys (tenant_id, integration_id, name, key_prefix, key_hash)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING id, integration_id, name, key_prefix AS prefix, created_at, last_used_at,
                   revoked_at",
        tenant_id,
        integration_id,
        name,
        prefix,
        hash
    )
    .fetch_one(conn)
    .await
}

/// A key found by its prefix, with the integration it reaches.
pub struct PresentedKey {
    pub key_id: Uuid,
    pub key_hash: Vec<u8>,
    pub revoked: bool,
    pub integration: WebhookTarget,
}

/// The key with this public prefix and its integration, in one round trip (it runs on every
/// delivery); system work, since the tenant is not known yet.
pub async fn by_prefix(
    conn: &mut PgConnection,
    prefix: &str,
) -> Result<Option<PresentedKey>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT k.id AS key_id, k.key_hash, k.revoked_at IS NOT NULL AS "revoked!",
                  i.id, i.tenant_id, i.source_type AS "source_type: SourceType",
                  i.status AS "status: IntegrationStatus", i.sync_mode AS "sync_mode: SyncMode",
                  i.sync_data_types AS "sync_data_types: Vec<DataType>",
                  i.signing_secret_encrypted, i.signing_secret_key_id
           FROM integration_api_keys k JOIN integration_sources i ON i.id = k.integration_id
           WHERE k.key_prefix = $1"#,
        prefix
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| PresentedKey {
        key_id: r.key_id,
        key_hash: r.key_hash,
        revoked: r.revoked,
        integration: WebhookTarget {
            id: r.id,
            tenant_id: r.tenant_id,
            source_type: r.source_type,
            status: r.status,
            sync_mode: r.sync_mode,
            sync_data_types: r.sync_data_types,
            signing_secret_encrypted: r.signing_secret_encrypted,
            signing_secret_key_id: r.signing_secret_key_id,
        },
    }))
}

/// Records the key's use, at most once a minute, so that a busy integration does not rewrite its
/// key row on every request.
pub async fn touch(conn: &mut PgConnection, key_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE integration_api_keys SET last_used_at = now()
         WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        key_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An integration key as its tenant's admins see it: never its secret.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub name: Option<String>,
    pub prefix: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The integration's keys, newest first, revoked ones included.
pub async fn list(
    conn: &mut PgConnection,
    integration_id: Uuid,
) -> Result<Vec<KeyInfo>, sqlx::Error> {
    sqlx::query_as!(
        KeyInfo,
        "SELECT id, integration_id, name, key_prefix AS prefix, created_at, last_used_at, revoked_at
         FROM integration_api_keys WHERE integration_id = $1 ORDER BY created_at DESC, id",
        integration_id
    )
    .fetch_all(conn)
    .await
}

/// Revokes one key of the integration (revoking twice keeps the first time); `None` when the
/// integration has no such key.
pub async fn revoke(
    conn: &mut PgConnection,
    integration_id: Uuid,
    key_id: Uuid,
) -> Result<Option<KeyInfo>, sqlx::Error> {
    sqlx::query_as!(
        KeyInfo,
        "UPDATE integration_api_keys SET revoked_at = COALESCE(revoked_at, now())
         WHERE id = $1 AND integration_id = $2
         RETURNING id, integration_id, name, key_prefix AS prefix, created_at, last_used_at,
                   revoked_at",
        key_id,
        integration_id
    )
    .fetch_optional(conn)
    .await
}
