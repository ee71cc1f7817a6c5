//! Bootstrap records an operator creates: tenants, integrations, their API keys, and accounts.
//!
//! Tenant creation and lookup by name are system work; everything inside a tenant is written in a
//! tenant-scoped transaction, so row level security checks it like any other tenant write.

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{system_tx, tenant_tx};
use crate::{
    crypto::{Sealer, SigningSecrets, generate_signing_secret, signing_secret_context},
    domain::{
        DataType, IntegrationStatus, SourceType, api_key::NewApiKey, domain_name::normalize_domain,
    },
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Integration {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub source_type: String,
    pub name: String,
    pub status: String,
}

#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub tenant_id: Uuid,
    pub key: NewApiKey,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Account {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub domains: Vec<String>,
}

pub async fn create_tenant(pool: &PgPool, name: &str) -> Result<Tenant> {
    let name = name.trim();
    if name.is_empty() {
        bail!("a tenant name must not be blank");
    }
    let mut tx = system_tx(pool).await?;
    let tenant = sqlx::query_as::<_, Tenant>(
        "INSERT INTO tenants (name) VALUES ($1) RETURNING id, name, created_at",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| unique_violation_as(e, format!("a tenant named `{name}` already exists")))?;
    tx.commit().await?;
    Ok(tenant)
}

pub async fn list_tenants(pool: &PgPool) -> Result<Vec<Tenant>> {
    let mut tx = system_tx(pool).await?;
    let tenants =
        sqlx::query_as::<_, Tenant>("SELECT id, name, created_at FROM tenants ORDER BY name")
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(tenants)
}

/// A tenant by id or, failing that, by name (case-insensitive).
pub async fn find_tenant(pool: &PgPool, id_or_name: &str) -> Result<Tenant> {
    let mut tx = system_tx(pool).await?;
    let tenant = match Uuid::parse_str(id_or_name) {
        Ok(id) => {
            sqlx::query_as::<_, Tenant>("SELECT id, name, created_at FROM tenants WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
        }
        Err(_) => {
            sqlx::query_as::<_, Tenant>(
                "SELECT id, name, created_at FROM tenants WHERE lower(name) = lower($1)",
            )
            .bind(id_or_name.trim())
            .fetch_optional(&mut *tx)
            .await?
        }
    };
    tx.commit().await?;
    tenant.with_context(|| format!("no tenant `{id_or_name}`"))
}

pub async fn create_integration(
    pool: &PgPool,
    tenant_id: Uuid,
    source_type: SourceType,
    name: &str,
    description: Option<&str>,
) -> Result<Integration> {
    let name = name.trim();
    if name.is_empty() {
        bail!("an integration name must not be blank");
    }
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let integration = sqlx::query_as::<_, Integration>(
        "INSERT INTO integration_sources (tenant_id, source_type, name, description)
         VALUES ($1, $2, $3, $4)
         RETURNING id, tenant_id, source_type, name, status",
    )
    .bind(tenant_id)
    .bind(source_type.as_str())
    .bind(name)
    .bind(description)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        unique_violation_as(
            e,
            format!("this tenant already has an integration named `{name}`"),
        )
    })?;
    tx.commit().await?;
    Ok(integration)
}

pub async fn list_integrations(pool: &PgPool, tenant_id: Uuid) -> Result<Vec<Integration>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let rows = sqlx::query_as::<_, Integration>(
        "SELECT id, tenant_id, source_type, name, status FROM integration_sources ORDER BY name",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Any tenant's integration by id: the operator names it without knowing its tenant.
pub async fn find_integration(pool: &PgPool, id: Uuid) -> Result<Integration> {
    integration(pool, id)
        .await?
        .with_context(|| format!("no integration {id}"))
}

/// Any tenant's integration by id, or `None`.
pub async fn integration(pool: &PgPool, id: Uuid) -> Result<Option<Integration>> {
    super::integration_row(pool, id, "id, tenant_id, source_type, name, status").await
}

/// Creates a key for the integration; the plaintext is in the result and nowhere else.
pub async fn create_api_key(
    pool: &PgPool,
    integration_id: Uuid,
    name: Option<&str>,
) -> Result<CreatedKey> {
    let integration = find_integration(pool, integration_id).await?;
    let key = NewApiKey::generate();
    let mut tx = tenant_tx(pool, integration.tenant_id).await?;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO integration_api_keys (tenant_id, integration_id, name, key_prefix, key_hash)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(integration.tenant_id)
    .bind(integration.id)
    .bind(name)
    .bind(&key.prefix)
    .bind(&key.hash[..])
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(CreatedKey {
        id,
        integration_id: integration.id,
        tenant_id: integration.tenant_id,
        key,
    })
}

pub async fn add_account(
    pool: &PgPool,
    tenant_id: Uuid,
    name: &str,
    domains: &[String],
) -> Result<Account> {
    let name = name.trim();
    if name.is_empty() {
        bail!("an account name must not be blank");
    }
    let mut normalized = Vec::with_capacity(domains.len());
    for domain in domains {
        let domain = normalize_domain(domain)?;
        if !normalized.contains(&domain) {
            normalized.push(domain);
        }
    }
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let account = sqlx::query_as::<_, Account>(
        "INSERT INTO accounts (tenant_id, name, domains) VALUES ($1, $2, $3)
         RETURNING id, tenant_id, name, domains",
    )
    .bind(tenant_id)
    .bind(name)
    .bind(&normalized)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(account)
}

fn unique_violation_as(error: sqlx::Error, message: String) -> anyhow::Error {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => anyhow::anyhow!(message),
        _ => anyhow::Error::new(error),
    }
}

/// Sets a new signing secret and returns it; the one it replaces stays accepted for `keep_previous`.
pub async fn set_signing_secret(
    pool: &PgPool,
    sealer: &Sealer,
    integration_id: Uuid,
    keep_previous: chrono::Duration,
) -> Result<String> {
    let integration = find_integration(pool, integration_id).await?;
    let context = signing_secret_context(integration.id);
    let mut tx = tenant_tx(pool, integration.tenant_id).await?;
    let existing: (Option<Vec<u8>>, Option<String>) = sqlx::query_as(
        "SELECT signing_secret_encrypted, signing_secret_key_id FROM integration_sources
         WHERE id = $1 FOR UPDATE",
    )
    .bind(integration.id)
    .fetch_one(&mut *tx)
    .await?;
    let previous = match existing {
        (Some(sealed), Some(key_id)) => {
            Some(SigningSecrets::from_bytes(&sealer.open(&key_id, &sealed, &context)?)?.current)
        }
        _ => None,
    };
    let secrets = SigningSecrets {
        current: generate_signing_secret(),
        previous_until: previous.as_ref().map(|_| Utc::now() + keep_previous),
        previous,
    };
    sqlx::query(
        "UPDATE integration_sources SET signing_secret_encrypted = $2, signing_secret_key_id = $3
         WHERE id = $1",
    )
    .bind(integration.id)
    .bind(sealer.seal(&secrets.to_bytes(), &context))
    .bind(sealer.key_id())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(secrets.current)
}

pub async fn remove_signing_secret(pool: &PgPool, integration_id: Uuid) -> Result<()> {
    let integration = find_integration(pool, integration_id).await?;
    let mut tx = tenant_tx(pool, integration.tenant_id).await?;
    sqlx::query(
        "UPDATE integration_sources SET signing_secret_encrypted = NULL, signing_secret_key_id = NULL
         WHERE id = $1",
    )
    .bind(integration.id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn set_integration_status(
    pool: &PgPool,
    integration_id: Uuid,
    status: IntegrationStatus,
) -> Result<()> {
    let integration = find_integration(pool, integration_id).await?;
    let mut tx = tenant_tx(pool, integration.tenant_id).await?;
    // Ticks that passed while the integration was paused were not missed by a scheduler that was
    // down: resuming starts the schedule afresh instead of catching up on them.
    sqlx::query(
        "UPDATE integration_sources
         SET schedule_changed_at = CASE WHEN status <> $2 AND $2 = 'active' THEN now()
                                        ELSE schedule_changed_at END,
             status = $2
         WHERE id = $1",
    )
    .bind(integration.id)
    .bind(status.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Stores the mapping of one target after validating it; the error names the problem.
pub async fn set_mapping(
    pool: &PgPool,
    integration_id: Uuid,
    data_type: DataType,
    target: &str,
    mapping: &serde_json::Value,
    enabled: bool,
) -> Result<()> {
    let integration = find_integration(pool, integration_id).await?;
    if enabled && let Err(problem) = crate::mapping::compile_field(data_type, target, mapping) {
        bail!(
            "mapping for `{}` refused: {}",
            problem.target,
            problem.message
        );
    }
    if !enabled {
        crate::mapping::parse_target(data_type, target).map_err(anyhow::Error::msg)?;
        if target == crate::mapping::EXTERNAL_ID {
            bail!("external_id cannot be disabled: every record needs one");
        }
    }
    let mut tx = tenant_tx(pool, integration.tenant_id).await?;
    sqlx::query(
        "INSERT INTO integration_field_mappings (tenant_id, integration_id, data_type, target_field, mapping, enabled)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (integration_id, data_type, target_field)
         DO UPDATE SET mapping = EXCLUDED.mapping, enabled = EXCLUDED.enabled",
    )
    .bind(integration.tenant_id)
    .bind(integration.id)
    .bind(data_type.as_str())
    .bind(target)
    .bind(mapping)
    .bind(enabled)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn remove_mapping(
    pool: &PgPool,
    integration_id: Uuid,
    data_type: DataType,
    target: &str,
) -> Result<bool> {
    let integration = find_integration(pool, integration_id).await?;
    let mut tx = tenant_tx(pool, integration.tenant_id).await?;
    let removed = sqlx::query(
        "DELETE FROM integration_field_mappings
         WHERE integration_id = $1 AND data_type = $2 AND target_field = $3",
    )
    .bind(integration.id)
    .bind(data_type.as_str())
    .bind(target)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(removed > 0)
}

/// (data type, target, mapping, enabled) of an integration's stored mappings.
pub async fn list_mappings(
    pool: &PgPool,
    integration_id: Uuid,
) -> Result<Vec<(String, String, serde_json::Value, bool)>> {
    let integration = find_integration(pool, integration_id).await?;
    let mut tx = tenant_tx(pool, integration.tenant_id).await?;
    let rows = sqlx::query_as(
        "SELECT data_type, target_field, mapping, enabled FROM integration_field_mappings
         WHERE integration_id = $1 ORDER BY data_type, position, target_field",
    )
    .bind(integration.id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// The integration's effective mappings applied to `records`: one result per record.
pub async fn preview_mappings(
    pool: &PgPool,
    integration_id: Uuid,
    data_type: DataType,
    records: &[serde_json::Value],
) -> Result<Vec<serde_json::Value>> {
    let integration = find_integration(pool, integration_id).await?;
    let source: SourceType = integration
        .source_type
        .parse()
        .map_err(|e: crate::domain::kinds::UnknownValue| anyhow::anyhow!(e))?;
    let mut tx = tenant_tx(pool, integration.tenant_id).await?;
    let set = crate::pipeline::load_mappings(&mut tx, integration.id, source, data_type).await?;
    tx.commit().await?;
    let set = set.map_err(|problems| {
        anyhow::anyhow!(
            "the stored mappings do not compile: {}",
            problems
                .iter()
                .map(|p| format!("{}: {}", p.target, p.message))
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    Ok(crate::pipeline::preview(&set, records))
}
