//! Operator use cases over the bootstrap records: tenants, integrations, their API keys, signing
//! secrets and mappings, and accounts. Each validates its input, then runs in one transaction of
//! its own over the `db` layer.
//!
//! Tenant creation and lookup are system work; everything inside a tenant is written in a
//! tenant-scoped transaction, so row level security checks it like any other tenant write.

pub mod console;
pub mod settings;
pub mod tenant_api;
pub mod tokens;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

pub use crate::db::{
    accounts::Account, integrations::Integration, mappings::StoredMapping, tenants::Tenant,
};
use crate::{
    crypto::{Sealer, SigningSecrets, generate_signing_secret, signing_secret_context},
    db::{self, system_tx, tenant_tx},
    domain::{
        DataType, IntegrationStatus, SourceType, api_key::NewApiKey, domain_name::normalize_domain,
    },
    mapping,
};

#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub tenant_id: Uuid,
    pub key: NewApiKey,
}

pub async fn create_tenant(pool: &PgPool, name: &str) -> Result<Tenant> {
    let name = name.trim();
    if name.is_empty() {
        bail!("a tenant name must not be blank");
    }
    let mut tx = system_tx(pool).await?;
    let tenant = db::tenants::insert(&mut tx, name)
        .await
        .map_err(|e| unique_violation_as(e, format!("a tenant named `{name}` already exists")))?;
    tx.commit().await?;
    Ok(tenant)
}

pub async fn list_tenants(pool: &PgPool) -> Result<Vec<Tenant>> {
    let mut tx = system_tx(pool).await?;
    let tenants = db::tenants::list(&mut tx).await?;
    tx.commit().await?;
    Ok(tenants)
}

/// Whether a tenant with this id exists.
pub async fn tenant_exists(pool: &PgPool, id: Uuid) -> Result<bool> {
    let mut tx = system_tx(pool).await?;
    let found = db::tenants::by_id(&mut tx, id).await?.is_some();
    tx.commit().await?;
    Ok(found)
}

/// A tenant by id or, failing that, by name (case-insensitive).
pub async fn find_tenant(pool: &PgPool, id_or_name: &str) -> Result<Tenant> {
    let mut tx = system_tx(pool).await?;
    let tenant = match Uuid::parse_str(id_or_name) {
        Ok(id) => db::tenants::by_id(&mut tx, id).await?,
        Err(_) => db::tenants::by_name(&mut tx, id_or_name.trim()).await?,
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
    let integration = db::integrations::insert(&mut tx, tenant_id, source_type, name, description)
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
    let rows = db::integrations::list(&mut tx).await?;
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
    integration_of(pool, None, id).await
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
    let id = db::api_keys::insert(
        &mut tx,
        integration.tenant_id,
        integration.id,
        name,
        &key.prefix,
        &key.hash[..],
    )
    .await?
    .id;
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
    let account = db::accounts::insert(&mut tx, tenant_id, name, &normalized).await?;
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
    let previous = match db::integrations::lock_signing_secret(&mut tx, integration.id).await? {
        Some(sealed) => Some(
            SigningSecrets::from_bytes(&sealer.open(
                &sealed.key_id,
                &sealed.ciphertext,
                &context,
            )?)?
            .current,
        ),
        None => None,
    };
    let secrets = SigningSecrets {
        current: generate_signing_secret(),
        previous_until: previous.as_ref().map(|_| Utc::now() + keep_previous),
        previous,
    };
    let sealed = db::integrations::Sealed {
        ciphertext: sealer.seal(&secrets.to_bytes(), &context),
        key_id: sealer.key_id().to_string(),
    };
    db::integrations::set_signing_secret(&mut tx, integration.id, Some(&sealed)).await?;
    tx.commit().await?;
    Ok(secrets.current)
}

pub async fn remove_signing_secret(pool: &PgPool, integration_id: Uuid) -> Result<()> {
    let integration = find_integration(pool, integration_id).await?;
    let mut tx = tenant_tx(pool, integration.tenant_id).await?;
    db::integrations::set_signing_secret(&mut tx, integration.id, None).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn set_integration_status(
    pool: &PgPool,
    integration_id: Uuid,
    status: IntegrationStatus,
) -> Result<()> {
    let integration = find_integration(pool, integration_id).await?;
    if !tenant_api::set_status(pool, integration.tenant_id, integration_id, status).await? {
        bail!("no integration {integration_id}");
    }
    Ok(())
}

/// Why a mapping could not be stored or listed.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("no integration {0}")]
    NotFound(Uuid),
    /// The mapping does not compile; the problem names its target.
    #[error("mapping for `{}` refused: {}", .0.target, .0.message)]
    Refused(mapping::MappingProblem),
    /// The target cannot be disabled (unknown, or the external id).
    #[error("{0}")]
    NotDisableable(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for MappingError {
    fn from(e: sqlx::Error) -> Self {
        Self::Other(e.into())
    }
}

/// The integration `id` of `tenant_id` (another tenant's is `None`, like one that does not
/// exist), or of any tenant when `tenant_id` is `None` (the install's operator).
pub async fn integration_of(
    pool: &PgPool,
    tenant_id: Option<Uuid>,
    id: Uuid,
) -> Result<Option<Integration>> {
    let mut tx = db::scoped_tx(pool, tenant_id).await?;
    let found = db::integrations::by_id(&mut tx, id).await?;
    tx.commit().await?;
    Ok(found)
}

async fn mapped_integration(
    pool: &PgPool,
    tenant_id: Option<Uuid>,
    id: Uuid,
) -> Result<Integration, MappingError> {
    integration_of(pool, tenant_id, id)
        .await?
        .ok_or(MappingError::NotFound(id))
}

/// Stores the mapping of one target after validating it; the error names the problem. Mapping
/// functions take the caller's tenant (`None`: the install's operator): another tenant's
/// integration is `NotFound`.
pub async fn set_mapping(
    pool: &PgPool,
    tenant_id: Option<Uuid>,
    integration_id: Uuid,
    data_type: DataType,
    target: &str,
    mapping: &serde_json::Value,
    enabled: bool,
) -> Result<(), MappingError> {
    let integration = mapped_integration(pool, tenant_id, integration_id).await?;
    if enabled {
        mapping::compile_field(data_type, target, mapping).map_err(MappingError::Refused)?;
    } else {
        mapping::parse_target(data_type, target).map_err(MappingError::NotDisableable)?;
        if target == mapping::EXTERNAL_ID {
            return Err(MappingError::NotDisableable(
                "external_id cannot be disabled: every record needs one".into(),
            ));
        }
    }
    let mut tx = tenant_tx(pool, integration.tenant_id).await?;
    db::mappings::upsert(
        &mut tx,
        integration.tenant_id,
        integration.id,
        data_type,
        target,
        mapping,
        enabled,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn remove_mapping(
    pool: &PgPool,
    tenant_id: Option<Uuid>,
    integration_id: Uuid,
    data_type: DataType,
    target: &str,
) -> Result<bool, MappingError> {
    let integration = mapped_integration(pool, tenant_id, integration_id).await?;
    let mut tx = tenant_tx(pool, integration.tenant_id).await?;
    let removed = db::mappings::delete(&mut tx, integration.id, data_type, target).await?;
    tx.commit().await?;
    Ok(removed)
}

/// An integration's stored mappings.
pub async fn list_mappings(
    pool: &PgPool,
    tenant_id: Option<Uuid>,
    integration_id: Uuid,
) -> Result<Vec<StoredMapping>, MappingError> {
    let integration = mapped_integration(pool, tenant_id, integration_id).await?;
    let mut tx = tenant_tx(pool, integration.tenant_id).await?;
    let rows = db::mappings::of_integration(&mut tx, integration.id).await?;
    tx.commit().await?;
    Ok(rows)
}

/// At most this many records per mapping preview.
pub const PREVIEW_MAX_RECORDS: usize = 100;
/// At most this much JSON in a mapping preview's results (1 MiB).
pub const PREVIEW_MAX_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("no integration {0}")]
    NotFound(Uuid),
    #[error("a preview takes at most {max} records, not {got}")]
    TooManyRecords { got: usize, max: usize },
    #[error("the stored mappings do not compile: {0}")]
    StoredMappingsInvalid(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for PreviewError {
    fn from(e: sqlx::Error) -> Self {
        Self::Other(e.into())
    }
}

/// The integration's effective mappings applied to `records`: one result per record (see
/// [`mapping::preview`] for the bound on the answer). Mapping is CPU work a request thread must
/// not do: it runs on the blocking pool, holding one of `permits`, so previews queue behind each
/// other instead of slowing health checks and deliveries.
pub async fn preview_mappings(
    pool: &PgPool,
    permits: &tokio::sync::Semaphore,
    tenant_id: Option<Uuid>,
    integration_id: Uuid,
    data_type: DataType,
    records: Vec<serde_json::Value>,
) -> Result<mapping::Preview, PreviewError> {
    if records.len() > PREVIEW_MAX_RECORDS {
        return Err(PreviewError::TooManyRecords {
            got: records.len(),
            max: PREVIEW_MAX_RECORDS,
        });
    }
    let integration = integration_of(pool, tenant_id, integration_id)
        .await?
        .ok_or(PreviewError::NotFound(integration_id))?;
    let mut tx = tenant_tx(pool, integration.tenant_id).await?;
    let set = db::mappings::effective(&mut tx, integration.id, integration.source_type, data_type)
        .await?;
    tx.commit().await?;
    let set = set.map_err(|problems| {
        PreviewError::StoredMappingsInvalid(
            problems
                .iter()
                .map(|p| format!("{}: {}", p.target, p.message))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let _permit = permits
        .acquire()
        .await
        .map_err(|e| PreviewError::Other(e.into()))?;
    tokio::task::spawn_blocking(move || mapping::preview(&set, &records, PREVIEW_MAX_BYTES))
        .await
        .map_err(|e| PreviewError::Other(e.into()))
}
