//! What one tenant sees and does through the platform API: its integrations (summaries with the
//! next scheduled tick) and their API keys. Every function runs in a transaction scoped to the
//! caller's tenant, so row level security decides what exists: another tenant's id is simply
//! not found, never forbidden, and ids do not leak.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

pub use crate::db::{api_keys::KeyInfo, integrations::Summary};
use crate::{
    db::{self, tenant_tx},
    domain::{IntegrationStatus, api_key::NewApiKey, schedule::Schedule},
};

/// An integration as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IntegrationView {
    #[serde(flatten)]
    pub summary: Summary,
    /// The next tick of its schedule (before its jitter), when it has one and is active.
    pub next_tick: Option<DateTime<Utc>>,
}

impl IntegrationView {
    fn new(summary: Summary, now: DateTime<Utc>) -> Self {
        let next_tick = summary
            .schedule
            .as_deref()
            .filter(|_| summary.status == IntegrationStatus::Active)
            .and_then(|s| Schedule::parse(s, &summary.timezone).ok())
            .and_then(|s| s.next_tick(now));
        Self { summary, next_tick }
    }
}

/// The tenant's integrations, by name.
pub async fn integrations(pool: &PgPool, tenant_id: Uuid) -> Result<Vec<IntegrationView>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let summaries = db::integrations::summaries(&mut tx, None).await?;
    tx.commit().await?;
    let now = Utc::now();
    Ok(summaries
        .into_iter()
        .map(|s| IntegrationView::new(s, now))
        .collect())
}

/// One of the tenant's integrations; `None` when the tenant has no such integration.
pub async fn integration(
    pool: &PgPool,
    tenant_id: Uuid,
    integration_id: Uuid,
) -> Result<Option<IntegrationView>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let summary = db::integrations::summaries(&mut tx, Some(integration_id))
        .await?
        .pop();
    tx.commit().await?;
    Ok(summary.map(|s| IntegrationView::new(s, Utc::now())))
}

/// A key just made: `key.plaintext` is shown once.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub info: KeyInfo,
    pub key: NewApiKey,
}

/// Makes an API key for one of the tenant's integrations; `None` when it has no such integration.
pub async fn create_key(
    pool: &PgPool,
    tenant_id: Uuid,
    integration_id: Uuid,
    name: Option<&str>,
) -> Result<Option<CreatedKey>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    if db::integrations::by_id(&mut tx, integration_id)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let key = NewApiKey::generate();
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    let info = db::api_keys::insert(
        &mut tx,
        tenant_id,
        integration_id,
        name,
        &key.prefix,
        &key.hash[..],
    )
    .await?;
    tx.commit().await?;
    Ok(Some(CreatedKey { info, key }))
}

/// The keys of one of the tenant's integrations, newest first; `None` when it has no such
/// integration.
pub async fn keys(
    pool: &PgPool,
    tenant_id: Uuid,
    integration_id: Uuid,
) -> Result<Option<Vec<KeyInfo>>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    if db::integrations::by_id(&mut tx, integration_id)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let keys = db::api_keys::list(&mut tx, integration_id).await?;
    tx.commit().await?;
    Ok(Some(keys))
}

/// Revokes one key of one of the tenant's integrations: deliveries with it are refused at once.
/// `None` when there is no such key there.
pub async fn revoke_key(
    pool: &PgPool,
    tenant_id: Uuid,
    integration_id: Uuid,
    key_id: Uuid,
) -> Result<Option<KeyInfo>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let revoked = db::api_keys::revoke(&mut tx, integration_id, key_id).await?;
    tx.commit().await?;
    Ok(revoked)
}

pub use crate::db::{
    batches::BatchProgress,
    sync_errors::SyncError,
    sync_logs::{SyncFilter, SyncLog},
};

/// A page of the tenant's sync logs, newest first, after the previous page's last (its
/// `(created_at, id)`); with one more asked for to know whether another page follows.
pub async fn sync_logs(
    pool: &PgPool,
    tenant_id: Uuid,
    filter: &SyncFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<(Vec<SyncLog>, bool)> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let mut page = db::sync_logs::page(&mut tx, filter, after, limit + 1).await?;
    tx.commit().await?;
    let more = page.len() as i64 > limit;
    page.truncate(limit as usize);
    Ok((page, more))
}

/// A sync log with its batches and the first page of its errors.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SyncDetail {
    #[serde(flatten)]
    pub sync: SyncLog,
    /// Whether `records_received` equals `created + updated + unchanged + skipped + failed`:
    /// always once the sync has closed; while it runs, the difference is still in flight.
    pub accounted: bool,
    pub batches: Vec<BatchProgress>,
    pub errors: Vec<SyncError>,
    /// Pass as `cursor` to `/errors` for the errors after these; `None` when there are no more.
    pub errors_next_cursor: Option<String>,
}

/// One of the tenant's sync logs with its batches and first `errors` errors; `None` when the
/// tenant has no such sync.
pub async fn sync_detail(
    pool: &PgPool,
    tenant_id: Uuid,
    sync_log_id: Uuid,
    errors: i64,
) -> Result<Option<SyncDetail>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let Some(sync) = db::sync_logs::one(&mut tx, sync_log_id).await? else {
        return Ok(None);
    };
    let batches = db::batches::progress_of_sync(&mut tx, sync_log_id).await?;
    let (errors, next) = error_page(&mut tx, sync_log_id, None, errors).await?;
    tx.commit().await?;
    let accounted = sync.records_received
        == sync.records_created
            + sync.records_updated
            + sync.records_unchanged
            + sync.records_skipped
            + sync.records_failed;
    Ok(Some(SyncDetail {
        sync,
        accounted,
        batches,
        errors,
        errors_next_cursor: next.map(|id| id.to_string()),
    }))
}

/// A page of a sync's errors, oldest first, after error id `after`; `None` when the tenant has
/// no such sync. The second value is the cursor of the next page, if there is one.
pub async fn sync_errors(
    pool: &PgPool,
    tenant_id: Uuid,
    sync_log_id: Uuid,
    after: Option<i64>,
    limit: i64,
) -> Result<Option<(Vec<SyncError>, Option<i64>)>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    if db::sync_logs::one(&mut tx, sync_log_id).await?.is_none() {
        return Ok(None);
    }
    let page = error_page(&mut tx, sync_log_id, after, limit).await?;
    tx.commit().await?;
    Ok(Some(page))
}

async fn error_page(
    conn: &mut sqlx::PgConnection,
    sync_log_id: Uuid,
    after: Option<i64>,
    limit: i64,
) -> Result<(Vec<SyncError>, Option<i64>)> {
    let mut errors = db::sync_errors::page(conn, sync_log_id, after, limit + 1).await?;
    let more = errors.len() as i64 > limit;
    errors.truncate(limit as usize);
    let next = more.then(|| errors.last().map(|e| e.id)).flatten();
    Ok((errors, next))
}

/// One of the tenant's sync logs, the row alone (to act on it with the lifecycle's functions,
/// which find their sync across tenants, or to follow it while it runs).
pub async fn sync_log(
    pool: &PgPool,
    tenant_id: Uuid,
    sync_log_id: Uuid,
) -> Result<Option<SyncLog>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let sync = db::sync_logs::one(&mut tx, sync_log_id).await?;
    tx.commit().await?;
    Ok(sync)
}

pub use crate::db::records::{Deleted, Record, RecordFilter};

/// A page of the tenant's records of `data_type` by (updated_at, id), after the previous page's
/// last; whether another page follows.
pub async fn records(
    pool: &PgPool,
    tenant_id: Uuid,
    data_type: crate::domain::DataType,
    filter: &RecordFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<(Vec<Record>, bool)> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let mut page = db::records::page(&mut tx, data_type, filter, after, limit + 1).await?;
    tx.commit().await?;
    let more = page.len() as i64 > limit;
    page.truncate(limit as usize);
    Ok((page, more))
}

/// One of the tenant's records, with its raw payload; `None` when it has no such record.
pub async fn record(
    pool: &PgPool,
    tenant_id: Uuid,
    data_type: crate::domain::DataType,
    id: Uuid,
) -> Result<Option<Record>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let record = db::records::one(&mut tx, data_type, id).await?;
    tx.commit().await?;
    Ok(record)
}

pub use crate::db::accounts::AccountView;

/// A field of a write that is not valid: `field` names it (`name`, `domains[2]`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why an account write was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("no account {0}")]
    NotFound(Uuid),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for AccountError {
    fn from(e: sqlx::Error) -> Self {
        Self::Other(e.into())
    }
}

/// Something the caller should know about an account it wrote, though the write succeeded.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountWarning {
    /// `domain_claimed` or `name_claimed`.
    pub code: String,
    /// The other account.
    pub account_id: Uuid,
    pub message: String,
}

/// An account just written, and what the caller should know about it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WrittenAccount {
    #[serde(flatten)]
    pub account: AccountView,
    /// Other accounts that claim one of its domains or its name: records of those then match
    /// neither account (matching never guesses between two).
    pub warnings: Vec<AccountWarning>,
}

/// The tenant's accounts by name, with their matched live records.
pub async fn accounts(pool: &PgPool, tenant_id: Uuid) -> Result<Vec<AccountView>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let accounts = db::accounts::views(&mut tx, None).await?;
    tx.commit().await?;
    Ok(accounts)
}

fn account_name(name: &str) -> Result<String, AccountError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(
            FieldError::new("name", "an account name is 1 to 200 characters, not blank").into(),
        );
    }
    Ok(name.to_string())
}

fn account_domains(domains: &[String]) -> Result<Vec<String>, AccountError> {
    let mut normalized = Vec::with_capacity(domains.len());
    for (i, domain) in domains.iter().enumerate() {
        let domain = crate::domain::domain_name::normalize_domain(domain)
            .map_err(|e| FieldError::new(format!("domains[{i}]"), e.to_string()))?;
        if !normalized.contains(&domain) {
            normalized.push(domain);
        }
    }
    Ok(normalized)
}

async fn written(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    name: &str,
    domains: &[String],
) -> Result<WrittenAccount, AccountError> {
    let mut warnings = Vec::new();
    for claim in db::accounts::claims(conn, Some(id), name, domains).await? {
        for domain in &claim.domains {
            warnings.push(AccountWarning {
                code: "domain_claimed".into(),
                account_id: claim.account_id,
                message: format!(
                    "account `{}` claims {domain} too: records of {domain} match neither",
                    claim.account_name
                ),
            });
        }
        if claim.same_name {
            warnings.push(AccountWarning {
                code: "name_claimed".into(),
                account_id: claim.account_id,
                message: format!(
                    "account `{}` has this name too: records matched by company name match neither",
                    claim.account_name
                ),
            });
        }
    }
    let account = db::accounts::views(conn, Some(id))
        .await?
        .pop()
        .ok_or(AccountError::NotFound(id))?;
    Ok(WrittenAccount { account, warnings })
}

/// Adds an account to the tenant (domains normalised: `https://www.Northwind.io/` →
/// `northwind.io`); records of its domains match it from their next sync on.
pub async fn create_account(
    pool: &PgPool,
    tenant_id: Uuid,
    name: &str,
    domains: &[String],
) -> Result<WrittenAccount, AccountError> {
    let name = account_name(name)?;
    let domains = account_domains(domains)?;
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let account = db::accounts::insert(&mut tx, tenant_id, &name, &domains).await?;
    let written = written(&mut tx, account.id, &name, &domains).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(written)
}

/// Renames an account or replaces its domains (what is not given stays); records already
/// stored keep their match until their next sync matches them afresh.
pub async fn update_account(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Uuid,
    name: Option<&str>,
    domains: Option<&[String]>,
) -> Result<WrittenAccount, AccountError> {
    let name = name.map(account_name).transpose()?;
    let domains = domains.map(account_domains).transpose()?;
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let current = db::accounts::views(&mut tx, Some(id))
        .await?
        .pop()
        .ok_or(AccountError::NotFound(id))?;
    let name = name.unwrap_or(current.name);
    let domains = domains.unwrap_or(current.domains);
    db::accounts::update(&mut tx, id, &name, &domains).await?;
    let written = written(&mut tx, id, &name, &domains).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(written)
}

/// Deletes an account: the records it matched are unmatched at once (`match_method: none`,
/// `match_reason: account_deleted`) and match afresh on their next sync. Answers the account as
/// it was, with the counts of records it had matched.
pub async fn delete_account(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<AccountView, AccountError> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let account = db::accounts::views(&mut tx, Some(id))
        .await?
        .pop()
        .ok_or(AccountError::NotFound(id))?;
    db::accounts::delete(&mut tx, id).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(account)
}

/// The dashboard's numbers for one tenant, in one answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub integrations: IntegrationStats,
    /// Live (not soft-deleted) records per type.
    pub records: RecordStats,
    pub syncs_last_24h: i64,
    pub failed_syncs_last_7d: i64,
    /// Of the syncs created in the last 7 days that have closed, the share that succeeded
    /// (`partial` and `failed` are not successes); `null` when none has closed.
    pub success_rate_last_7d: Option<f64>,
    /// The window of `days` and `received`, in UTC days, today included.
    pub window_days: i64,
    /// Records and bytes delivered over the window.
    pub received: Received,
    /// Each day of the window, oldest first, zeros included (for a chart).
    pub days: Vec<DayStats>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IntegrationStats {
    pub total: i64,
    pub active: i64,
    pub paused: i64,
    /// Status `error`.
    pub failing: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecordStats {
    pub contacts: i64,
    pub tickets: i64,
    pub deals: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Received {
    pub records: i64,
    /// As delivered, after transport decompression.
    pub bytes: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DayStats {
    pub day: chrono::NaiveDate,
    /// Syncs created that day, and how they stand now.
    pub syncs: i64,
    pub succeeded: i64,
    pub partial: i64,
    pub failed: i64,
    pub open: i64,
    pub records_received: i64,
    pub bytes_received: i64,
}

/// The tenant's dashboard numbers over the last `window_days` UTC days (today included).
pub async fn stats(pool: &PgPool, tenant_id: Uuid, window_days: i64) -> Result<Stats> {
    let now = Utc::now();
    let today = now.date_naive();
    let first = today - chrono::Days::new(window_days.max(1) as u64 - 1);
    let window_start = first.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let integrations = db::stats::integrations(&mut tx, tenant_id).await?;
    let records = db::stats::records(&mut tx, tenant_id).await?;
    let recent = db::stats::recent_syncs(
        &mut tx,
        tenant_id,
        now - chrono::Duration::hours(24),
        now - chrono::Duration::days(7),
    )
    .await?;
    let syncs = db::stats::syncs_per_day(&mut tx, tenant_id, window_start).await?;
    let received = db::stats::received_per_day(&mut tx, tenant_id, window_start).await?;
    tx.commit().await?;

    let days: Vec<DayStats> = first
        .iter_days()
        .take_while(|d| *d <= today)
        .map(|day| {
            let s = syncs.iter().find(|s| s.day == day);
            let r = received.iter().find(|r| r.day == day);
            DayStats {
                day,
                syncs: s.map_or(0, |s| s.syncs),
                succeeded: s.map_or(0, |s| s.succeeded),
                partial: s.map_or(0, |s| s.partial),
                failed: s.map_or(0, |s| s.failed),
                open: s.map_or(0, |s| s.open),
                records_received: r.map_or(0, |r| r.records),
                bytes_received: r.map_or(0, |r| r.bytes),
            }
        })
        .collect();
    Ok(Stats {
        integrations: IntegrationStats {
            total: integrations.total,
            active: integrations.active,
            paused: integrations.paused,
            failing: integrations.failing,
        },
        records: RecordStats {
            contacts: records.contacts,
            tickets: records.tickets,
            deals: records.deals,
        },
        syncs_last_24h: recent.created_last_day,
        failed_syncs_last_7d: recent.failed_last_week,
        success_rate_last_7d: (recent.closed_last_week > 0)
            .then(|| recent.succeeded_last_week as f64 / recent.closed_last_week as f64),
        window_days: days.len() as i64,
        received: Received {
            records: days.iter().map(|d| d.records_received).sum(),
            bytes: days.iter().map(|d| d.bytes_received).sum(),
        },
        days,
    })
}

pub use crate::db::integrations::Footprint;

/// Why an integration write was refused.
#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("this tenant already has an integration named `{0}`")]
    NameTaken(String),
    #[error("integration {0} does not exist")]
    NotFound(Uuid),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for IntegrationError {
    fn from(e: sqlx::Error) -> Self {
        Self::Other(e.into())
    }
}

pub(super) fn integration_name(name: &str) -> Result<String, FieldError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(FieldError::new(
            "name",
            "an integration name is 1 to 200 characters, not blank",
        ));
    }
    Ok(name.to_string())
}

fn name_taken(e: sqlx::Error, name: &str) -> IntegrationError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            IntegrationError::NameTaken(name.to_string())
        }
        _ => e.into(),
    }
}

/// Inserts an integration in `tx` (the tenant's), its name validated and unique.
pub(super) async fn insert_integration(
    tx: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    source_type: crate::domain::SourceType,
    name: &str,
    description: Option<&str>,
) -> Result<db::integrations::Integration, IntegrationError> {
    let name = integration_name(name)?;
    let description = description.map(str::trim).filter(|d| !d.is_empty());
    db::integrations::insert(tx, tenant_id, source_type, &name, description)
        .await
        .map_err(|e| name_taken(e, &name))
}

/// Adds an integration of `source_type` to the tenant (active, no schedule: settings are a
/// separate write).
pub async fn create_integration(
    pool: &PgPool,
    tenant_id: Uuid,
    source_type: crate::domain::SourceType,
    name: &str,
    description: Option<&str>,
) -> Result<IntegrationView, IntegrationError> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let integration =
        insert_integration(&mut tx, tenant_id, source_type, name, description).await?;
    let summary = db::integrations::summaries(&mut tx, Some(integration.id))
        .await?
        .pop()
        .ok_or(IntegrationError::NotFound(integration.id))?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(IntegrationView::new(summary, Utc::now()))
}

/// What deleting one of the tenant's integrations would remove; `None` when it has none such.
pub async fn integration_footprint(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<Footprint>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    if db::integrations::by_id(&mut tx, id).await?.is_none() {
        return Ok(None);
    }
    let footprint = db::integrations::footprint(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Some(footprint))
}

/// Pauses or resumes one of the tenant's integrations; false when it has no such integration.
pub async fn set_status(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Uuid,
    status: crate::domain::IntegrationStatus,
) -> Result<bool> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let found = db::integrations::set_status(&mut tx, id, status).await?;
    tx.commit().await?;
    Ok(found)
}

/// Deletes one of the tenant's integrations with everything it holds: its records, syncs,
/// batches and stored chunks, errors, mappings and keys (deliveries with them get 401 at once);
/// its unfinished jobs are cancelled. Answers what it removed.
pub async fn delete_integration(
    pool: &PgPool,
    queue: &jobs::Queue,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Footprint, IntegrationError> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    if db::integrations::lock(&mut tx, id).await?.is_none() {
        return Err(IntegrationError::NotFound(id));
    }
    let footprint = db::integrations::footprint(&mut tx, id).await?;
    db::integrations::delete(&mut tx, id).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    // Their chunks are gone, so a job that ran now would find nothing to do; cancelling them
    // keeps them out of the queue's counts and the trigger job from calling n8n.
    let tagged = jobs::JobFilter {
        tag: Some(crate::sync::job_tag(tenant_id, id)),
        ..jobs::JobFilter::default()
    };
    jobs::admin::apply(
        pool,
        queue,
        jobs::BulkAction::Cancel,
        &tagged,
        5_000,
        |_| {},
    )
    .await
    .map_err(anyhow::Error::from)?;
    Ok(footprint)
}

/// One target of an integration's effective mapping, and where it comes from.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MappingEntry {
    pub target: String,
    #[schema(value_type = Object)]
    pub mapping: serde_json::Value,
    /// `preset` (the source's default) or `override` (set for this integration).
    pub origin: String,
}

/// What fills an integration's rows of one data type: its source's preset with its overrides.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EffectiveMapping {
    pub integration_id: Uuid,
    pub data_type: crate::domain::DataType,
    /// Every target filled, in the preset's order, then the overrides' new targets.
    pub effective: Vec<MappingEntry>,
    /// Preset targets an override turned off.
    pub disabled: Vec<String>,
}

/// The effective mapping of one of the tenant's integrations; `None` when it has no such
/// integration.
pub async fn effective_mapping(
    pool: &PgPool,
    tenant_id: Uuid,
    integration_id: Uuid,
    data_type: crate::domain::DataType,
) -> Result<Option<EffectiveMapping>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let Some(integration) = db::integrations::by_id(&mut tx, integration_id).await? else {
        return Ok(None);
    };
    let stored = db::mappings::of_data_type(&mut tx, integration_id, data_type).await?;
    tx.commit().await?;
    let mut effective: Vec<MappingEntry> =
        crate::mapping::presets::preset(integration.source_type, data_type)
            .into_iter()
            .map(|(target, mapping)| MappingEntry {
                target,
                mapping,
                origin: "preset".into(),
            })
            .collect();
    let mut disabled = Vec::new();
    for m in stored {
        let at = effective.iter().position(|e| e.target == m.target);
        match (m.enabled, at) {
            (false, Some(i)) => {
                effective.remove(i);
                disabled.push(m.target);
            }
            (false, None) => disabled.push(m.target),
            (true, Some(i)) => {
                effective[i].mapping = m.mapping;
                effective[i].origin = "override".into();
            }
            (true, None) => effective.push(MappingEntry {
                target: m.target,
                mapping: m.mapping,
                origin: "override".into(),
            }),
        }
    }
    Ok(Some(EffectiveMapping {
        integration_id,
        data_type,
        effective,
        disabled,
    }))
}

/// Removes the override of one target, so the preset (or nothing) fills it again; `None` when
/// the tenant has no such integration, `Some(false)` when the target had no override.
pub async fn delete_mapping(
    pool: &PgPool,
    tenant_id: Uuid,
    integration_id: Uuid,
    data_type: crate::domain::DataType,
    target: &str,
) -> Result<Option<bool>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    if db::integrations::by_id(&mut tx, integration_id)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let deleted = db::mappings::delete(&mut tx, integration_id, data_type, target).await?;
    tx.commit().await?;
    Ok(Some(deleted))
}

/// Up to `max` records of the integration's latest stored batch of `data_type`, as n8n sent them
/// (a mapping preview's sample); `None` when the tenant has no such integration, an empty list
/// when no batch of that type is kept.
pub async fn last_batch_sample(
    pool: &PgPool,
    tenant_id: Uuid,
    integration_id: Uuid,
    data_type: crate::domain::DataType,
    max: usize,
) -> Result<Option<Vec<serde_json::Value>>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    if db::integrations::by_id(&mut tx, integration_id)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let chunk = db::batches::latest_chunk(&mut tx, integration_id, data_type).await?;
    tx.commit().await?;
    let Some((payload, encoding)) = chunk else {
        return Ok(Some(Vec::new()));
    };
    let plain = crate::sync::chunk::decode_chunk(&payload, &encoding)?;
    let mut records: Vec<serde_json::Value> = serde_json::from_slice(&plain)?;
    records.truncate(max);
    Ok(Some(records))
}
