//! Changing an integration's sync settings: the n8n webhook URL and credentials, the schedule and its
//! policies. Every write is validated first (the error says what is wrong) and credentials are
//! sealed before they reach the database; no read ever returns them.

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
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    #[serde(default, deserialize_with = "present")]
    pub webhook_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub schedule: Option<Option<String>>,
    pub timezone: Option<String>,
    pub sync_mode: Option<SyncMode>,
    pub data_types: Option<Vec<DataType>>,
    pub missed_ticks: Option<MissedTicks>,
    pub on_running: Option<OnRunning>,
    pub jitter_secs: Option<u32>,
    /// The share of live rows (percent, per data type) a full sync must see to sweep.
    pub sweep_min_seen_percent: Option<u8>,
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
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SyncSettings {
    pub integration_id: Uuid,
    pub status: IntegrationStatus,
    pub webhook_url: Option<String>,
    pub auth: String,
    pub schedule: Option<String>,
    pub timezone: String,
    pub sync_mode: SyncMode,
    pub data_types: Vec<DataType>,
    pub missed_ticks: MissedTicks,
    pub on_running: OnRunning,
    pub jitter_secs: i32,
    pub sweep_min_seen_percent: i16,
    /// Where the next incremental sync of each data type starts (before the overlap); a type
    /// missing here is fetched in full.
    pub cursors: BTreeMap<DataType, DateTime<Utc>>,
    /// The next tick of the schedule (before jitter), when scheduled and active.
    pub next_tick: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("no integration {0}")]
    NotFound(Uuid),
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("a schedule needs an n8n webhook URL to trigger; set --webhook-url too")]
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
    }
}

pub async fn get(pool: &PgPool, integration_id: Uuid) -> Result<SyncSettings, SettingsError> {
    Ok(view(load(pool, integration_id).await?))
}

/// Validates and applies `change`. A new schedule or time zone starts from now: ticks before the
/// change are not missed ticks.
pub async fn update(
    pool: &PgPool,
    policy: &UrlPolicy,
    sealer: Option<&Sealer>,
    integration_id: Uuid,
    change: &SettingsChange,
) -> Result<SyncSettings, SettingsError> {
    // A new URL is resolved (DNS) before the row is locked; everything else is decided from the
    // row as locked in the writing transaction, so two concurrent changes never undo each other.
    let new_url = match &change.webhook_url {
        Some(Some(url)) => Some(Some(policy.check_resolved(url).await?.to_string())),
        Some(None) => Some(None),
        None => None,
    };
    let tenant_id = super::integration(pool, integration_id)
        .await?
        .ok_or(SettingsError::NotFound(integration_id))?
        .tenant_id;
    let mut tx = tenant_tx(pool, tenant_id).await?;
    if !db::integrations::lock(&mut tx, integration_id).await? {
        return Err(SettingsError::NotFound(integration_id));
    }
    let row = db::integrations::settings(&mut tx, integration_id)
        .await?
        .ok_or(SettingsError::NotFound(integration_id))?;
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
    db::integrations::write_settings(&mut tx, integration_id, &write).await?;
    let updated = db::integrations::settings(&mut tx, integration_id)
        .await?
        .ok_or(SettingsError::NotFound(integration_id))?;
    tx.commit().await?;
    Ok(view(updated))
}
