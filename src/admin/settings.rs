//! Changing an integration: its name and description, its sync settings (the n8n webhook URL and
//! credentials, the schedule and its policies), in one transaction, optionally only if nobody
//! changed it since the caller read its version. Every write is validated first (the error says
//! what is wrong) and credentials are sealed before they reach the database; no read ever
//! returns them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    crypto::Sealer,
    db::{
        self,
        integrations::{Sealed, Settings, SettingsWrite},
        system_tx, tenant_tx,
    },
    domain::{
        DataType, IntegrationStatus, MissedTicks, OnRunning, SourceType, SyncMode,
        schedule::{Schedule, ScheduleError},
    },
    n8n::{Credentials, UrlError, UrlPolicy, credentials_context},
};

/// A change of settings; `None` leaves a setting as it is. For the URL and the schedule,
/// `Some(None)` removes them.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    /// The n8n Webhook trigger's URL (http or https); `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub webhook_url: Option<Option<String>>,
    /// A cron expression or preset (`@hourly`, `every 15m`); `null` removes the schedule.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub schedule: Option<Option<String>>,
    /// IANA time zone of the schedule.
    pub timezone: Option<String>,
    pub sync_mode: Option<SyncMode>,
    pub data_types: Option<Vec<DataType>>,
    /// Ticks missed while no scheduler ran: `skip` or `run_latest`.
    #[schema(value_type = Option<String>)]
    pub missed_ticks: Option<MissedTicks>,
    /// A tick while a sync is open: `skip` or `queue`.
    #[schema(value_type = Option<String>)]
    pub on_running: Option<OnRunning>,
    /// Each tick fires up to this many seconds late (at most 86400).
    pub jitter_secs: Option<u32>,
    /// The share of live rows (percent, per data type) a full sync must see to sweep.
    pub sweep_min_seen_percent: Option<u8>,
    /// Write-only: `{"kind": "header", "name", "value"}`, `{"kind": "basic", "username",
    /// "password"}` or `{"kind": "none"}`.
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<Credentials>,
}

/// Tells a field given as `null` (remove it) from a field left out (keep it).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// What operators see of the settings: never the credentials, only their kind.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct SyncSettings {
    pub integration_id: Uuid,
    pub status: IntegrationStatus,
    pub webhook_url: Option<String>,
    pub auth: String,
    pub schedule: Option<String>,
    pub timezone: String,
    pub sync_mode: SyncMode,
    pub data_types: Vec<DataType>,
    #[schema(value_type = String)]
    pub missed_ticks: MissedTicks,
    #[schema(value_type = String)]
    pub on_running: OnRunning,
    pub jitter_secs: i32,
    pub sweep_min_seen_percent: i16,
    /// Where the next incremental sync of each data type starts (before the overlap); a type
    /// missing here is fetched in full.
    pub cursors: BTreeMap<DataType, DateTime<Utc>>,
    /// The next tick of the schedule (before jitter), when scheduled and active.
    pub next_tick: Option<DateTime<Utc>>,
    /// Counts the writes of the integration's settings (name and description included); what
    /// `If-Match` is compared with.
    pub version: i64,
}

/// One edit of an integration: name, description and sync settings together.
#[derive(Debug, Clone, Copy)]
pub struct Edit<'a> {
    pub name: Option<&'a str>,
    /// `Some(None)` removes the description.
    pub description: Option<Option<&'a str>>,
    pub settings: &'a SettingsChange,
    /// Apply only if the integration's version is one of these (`If-Match`); `None`: always.
    pub if_version: Option<&'a [i64]>,
}

impl<'a> Edit<'a> {
    /// A change of the sync settings alone, unconditionally.
    pub fn settings(settings: &'a SettingsChange) -> Self {
        Self {
            name: None,
            description: None,
            settings,
            if_version: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("no integration {0}")]
    NotFound(Uuid),
    #[error(
        "the integration changed since you read it (it is at version {current}): read it again and re-apply your change"
    )]
    VersionMismatch { current: i64 },
    #[error(transparent)]
    Field(#[from] super::tenant_api::FieldError),
    #[error("this tenant already has an integration named `{0}`")]
    NameTaken(String),
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("a schedule needs the n8n webhook URL it triggers: set the webhook URL too")]
    WebhookUrlRequired,
    #[error("the credentials are not valid: {0}")]
    Credentials(String),
    #[error(
        "credentials are stored sealed: set SYNCBRIDGE_ENCRYPTION_KEY (32 random bytes, base64: `openssl rand -base64 32`)"
    )]
    NoEncryptionKey,
    #[error("jitter may be at most 86400 s (a day), not {0}")]
    Jitter(u32),
    #[error("the sweep's share of seen rows is a percentage (0 to 100), not {0}")]
    SweepShare(u8),
    #[error("{source_type} has no {data_type}; it provides {provides}")]
    DataTypeNotSupported {
        source_type: SourceType,
        data_type: DataType,
        provides: String,
    },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for SettingsError {
    fn from(e: sqlx::Error) -> Self {
        Self::Other(e.into())
    }
}

async fn load(pool: &PgPool, integration_id: Uuid) -> Result<Settings, SettingsError> {
    let mut tx = system_tx(pool).await?;
    let row = db::integrations::settings(&mut tx, integration_id).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    row.ok_or(SettingsError::NotFound(integration_id))
}

fn view(row: Settings) -> SyncSettings {
    let next_tick = row
        .sync_schedule
        .as_deref()
        .filter(|_| row.status == IntegrationStatus::Active)
        .and_then(|s| Schedule::parse(s, &row.sync_timezone).ok())
        .and_then(|s| s.next_tick(Utc::now()));
    SyncSettings {
        integration_id: row.id,
        status: row.status,
        webhook_url: row.n8n_webhook_url,
        auth: row.n8n_auth_kind,
        schedule: row.sync_schedule,
        timezone: row.sync_timezone,
        sync_mode: row.sync_mode,
        data_types: row.sync_data_types,
        missed_ticks: row.sync_missed_ticks,
        on_running: row.sync_on_running,
        jitter_secs: row.sync_jitter_secs,
        sweep_min_seen_percent: row.sweep_min_seen_percent,
        cursors: row.cursors.0,
        next_tick,
        version: row.version,
    }
}

pub async fn get(pool: &PgPool, integration_id: Uuid) -> Result<SyncSettings, SettingsError> {
    Ok(view(load(pool, integration_id).await?))
}

/// Validates and applies `change` to the sync settings alone (the admin route and the CLI).
pub async fn update(
    pool: &PgPool,
    policy: &UrlPolicy,
    sealer: Option<&Sealer>,
    integration_id: Uuid,
    change: &SettingsChange,
) -> Result<SyncSettings, SettingsError> {
    edit(
        pool,
        policy,
        sealer,
        None,
        integration_id,
        Edit::settings(change),
    )
    .await
}

/// Validates and applies `edit` in one transaction, on the row as locked there: two concurrent
/// edits never undo each other's other fields, and with `if_version` the second is refused
/// instead of overwriting what it did not see. `tenant_id`: the caller's tenant (another
/// tenant's integration is `NotFound`); `None`: the install's operator. A new schedule or time
/// zone starts from now: ticks before the change are not missed ticks.
pub async fn edit(
    pool: &PgPool,
    policy: &UrlPolicy,
    sealer: Option<&Sealer>,
    tenant_id: Option<Uuid>,
    integration_id: Uuid,
    edit: Edit<'_>,
) -> Result<SyncSettings, SettingsError> {
    // A new URL is resolved (DNS) before the row is locked; everything else is decided from the
    // row as locked in the writing transaction.
    let new_url = resolve_url(policy, edit.settings).await?;
    let tenant_id = match tenant_id {
        Some(t) => t,
        None => {
            super::integration(pool, integration_id)
                .await?
                .ok_or(SettingsError::NotFound(integration_id))?
                .tenant_id
        }
    };
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let settings = edit_in(&mut tx, sealer, integration_id, edit, new_url).await?;
    tx.commit().await?;
    Ok(settings)
}

/// Adds an integration to the tenant with its settings, in one transaction: when a setting is
/// refused, no integration is left behind.
#[allow(clippy::too_many_arguments)]
pub async fn create(
    pool: &PgPool,
    policy: &UrlPolicy,
    sealer: Option<&Sealer>,
    tenant_id: Uuid,
    source_type: SourceType,
    name: &str,
    description: Option<&str>,
    change: &SettingsChange,
) -> Result<Uuid, SettingsError> {
    let new_url = resolve_url(policy, change).await?;
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let integration =
        super::tenant_api::insert_integration(&mut tx, tenant_id, source_type, name, description)
            .await
            .map_err(|e| match e {
                super::tenant_api::IntegrationError::Invalid(field) => SettingsError::Field(field),
                super::tenant_api::IntegrationError::NameTaken(name) => {
                    SettingsError::NameTaken(name)
                }
                super::tenant_api::IntegrationError::NotFound(id) => SettingsError::NotFound(id),
                super::tenant_api::IntegrationError::Other(e) => SettingsError::Other(e),
            })?;
    edit_in(
        &mut tx,
        sealer,
        integration.id,
        Edit::settings(change),
        new_url,
    )
    .await?;
    tx.commit().await?;
    Ok(integration.id)
}

/// A new webhook URL, checked against the outbound policy after DNS; `Some(None)` removes it.
async fn resolve_url(
    policy: &UrlPolicy,
    change: &SettingsChange,
) -> Result<Option<Option<String>>, SettingsError> {
    Ok(match &change.webhook_url {
        Some(Some(url)) => Some(Some(policy.check_resolved(url).await?.to_string())),
        Some(None) => Some(None),
        None => None,
    })
}

/// Applies `edit` in `tx` (which sees the integration): locks the row, checks the version,
/// validates every field against the row as locked, writes.
async fn edit_in(
    tx: &mut sqlx::PgConnection,
    sealer: Option<&Sealer>,
    integration_id: Uuid,
    edit: Edit<'_>,
    new_url: Option<Option<String>>,
) -> Result<SyncSettings, SettingsError> {
    let change = edit.settings;
    let name = edit
        .name
        .map(super::tenant_api::integration_name)
        .transpose()?;
    let version = db::integrations::lock(tx, integration_id)
        .await?
        .ok_or(SettingsError::NotFound(integration_id))?;
    if edit
        .if_version
        .is_some_and(|accepted| !accepted.contains(&version))
    {
        return Err(SettingsError::VersionMismatch { current: version });
    }
    let row = db::integrations::settings(tx, integration_id)
        .await?
        .ok_or(SettingsError::NotFound(integration_id))?;
    if name.is_some() || edit.description.is_some() {
        let description = edit
            .description
            .map(|d| d.map(str::trim).filter(|d| !d.is_empty()));
        let name = name.as_deref().unwrap_or(&row.name);
        db::integrations::rename(
            tx,
            integration_id,
            name,
            description.unwrap_or(row.description.as_deref()),
        )
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                SettingsError::NameTaken(name.to_string())
            }
            _ => e.into(),
        })?;
    }
    let url = new_url.unwrap_or_else(|| row.n8n_webhook_url.clone());
    let schedule_text = match &change.schedule {
        Some(Some(s)) => Some(s.trim().to_string()),
        Some(None) => None,
        None => row.sync_schedule.clone(),
    };
    let timezone = change
        .timezone
        .as_deref()
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|| row.sync_timezone.clone());
    crate::domain::schedule::parse_timezone(&timezone)?;
    if let Some(s) = &schedule_text {
        Schedule::parse(s, &timezone)?;
        if url.is_none() {
            return Err(SettingsError::WebhookUrlRequired);
        }
    }
    if let Some(j) = change.jitter_secs
        && j > 86_400
    {
        return Err(SettingsError::Jitter(j));
    }
    if let Some(p) = change.sweep_min_seen_percent
        && p > 100
    {
        return Err(SettingsError::SweepShare(p));
    }
    if let Some(data_type) = change
        .data_types
        .iter()
        .flatten()
        .find(|t| !row.source_type.provides(**t))
    {
        return Err(SettingsError::DataTypeNotSupported {
            source_type: row.source_type,
            data_type: *data_type,
            provides: DataType::list(row.source_type.default_data_types()),
        });
    }
    let credentials = match &change.credentials {
        None => None,
        Some(Credentials::None) => Some((None, "none")),
        Some(c) => {
            c.validate().map_err(SettingsError::Credentials)?;
            let sealer = sealer.ok_or(SettingsError::NoEncryptionKey)?;
            let plain = serde_json::to_vec(c).map_err(anyhow::Error::from)?;
            let sealed = Sealed {
                ciphertext: sealer.seal(&plain, &credentials_context(integration_id)),
                key_id: sealer.key_id().to_string(),
            };
            Some((Some(sealed), c.kind()))
        }
    };
    let write = SettingsWrite {
        webhook_url: url.as_deref(),
        schedule: schedule_text.as_deref(),
        timezone: &timezone,
        sync_mode: change.sync_mode,
        data_types: change.data_types.as_deref(),
        missed_ticks: change.missed_ticks,
        on_running: change.on_running,
        jitter_secs: change.jitter_secs.map(|j| j as i32),
        sweep_min_seen_percent: change.sweep_min_seen_percent.map(i16::from),
        schedule_changed: schedule_text != row.sync_schedule || timezone != row.sync_timezone,
        credentials,
    };
    db::integrations::write_settings(tx, integration_id, &write).await?;
    let updated = db::integrations::settings(tx, integration_id)
        .await?
        .ok_or(SettingsError::NotFound(integration_id))?;
    Ok(view(updated))
}
