//! SQL of `integration_sources`: an integration, its webhook credentials' targets, its sync
//! settings and schedule, and the row locks that order the writers of its syncs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, types::Json};
use uuid::Uuid;

use crate::domain::{
    DataType, IntegrationStatus, MissedTicks, OnRunning, SourceType, SyncMode, SyncStatus,
};

/// An integration as operators list it.
#[derive(Debug, Clone)]
pub struct Integration {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub source_type: SourceType,
    pub name: String,
    pub status: IntegrationStatus,
}

pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    source_type: SourceType,
    name: &str,
    description: Option<&str>,
) -> Result<Integration, sqlx::Error> {
    sqlx::query_as!(
        Integration,
        r#"INSERT INTO integration_sources (tenant_id, source_type, name, description)
           VALUES ($1, $2, $3, $4)
           RETURNING id, tenant_id, source_type AS "source_type: SourceType", name,
                     status AS "status: IntegrationStatus""#,
        tenant_id,
        source_type.as_str(),
        name,
        description
    )
    .fetch_one(conn)
    .await
}

/// The integrations the transaction sees (a tenant's, or every one in system work), by name.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Integration>, sqlx::Error> {
    sqlx::query_as!(
        Integration,
        r#"SELECT id, tenant_id, source_type AS "source_type: SourceType", name,
                  status AS "status: IntegrationStatus"
           FROM integration_sources ORDER BY name"#
    )
    .fetch_all(conn)
    .await
}

pub async fn by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<Integration>, sqlx::Error> {
    sqlx::query_as!(
        Integration,
        r#"SELECT id, tenant_id, source_type AS "source_type: SourceType", name,
                  status AS "status: IntegrationStatus"
           FROM integration_sources WHERE id = $1"#,
        id
    )
    .fetch_optional(conn)
    .await
}

/// Sets the status. Resuming starts the schedule afresh: ticks that passed while the
/// integration was paused were not missed by a scheduler that was down.
pub async fn set_status(
    conn: &mut PgConnection,
    id: Uuid,
    status: IntegrationStatus,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE integration_sources
         SET schedule_changed_at = CASE WHEN status <> $2 AND $2 = 'active' THEN now()
                                        ELSE schedule_changed_at END,
             status = $2
         WHERE id = $1",
        id,
        status.as_str()
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A sealed secret and the id of the key that sealed it.
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub key_id: String,
}

/// The sealed signing secret, locked until the transaction ends (a rotation reads it to keep it).
pub async fn lock_signing_secret(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Sealed>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT signing_secret_encrypted, signing_secret_key_id FROM integration_sources
         WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_one(conn)
    .await?;
    Ok(
        match (row.signing_secret_encrypted, row.signing_secret_key_id) {
            (Some(ciphertext), Some(key_id)) => Some(Sealed { ciphertext, key_id }),
            _ => None,
        },
    )
}

/// Stores the sealed signing secret, or removes it (`None`).
pub async fn set_signing_secret(
    conn: &mut PgConnection,
    id: Uuid,
    sealed: Option<&Sealed>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE integration_sources SET signing_secret_encrypted = $2, signing_secret_key_id = $3
         WHERE id = $1",
        id,
        sealed.map(|s| &s.ciphertext[..]),
        sealed.map(|s| s.key_id.as_str())
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The integration a webhook reaches, with what the webhook checks against.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub source_type: SourceType,
    pub status: IntegrationStatus,
    pub sync_mode: SyncMode,
    pub sync_data_types: Vec<DataType>,
    pub signing_secret_encrypted: Option<Vec<u8>>,
    pub signing_secret_key_id: Option<String>,
}

pub async fn webhook_target(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<WebhookTarget>, sqlx::Error> {
    sqlx::query_as!(
        WebhookTarget,
        r#"SELECT id, tenant_id, source_type AS "source_type: SourceType",
                  status AS "status: IntegrationStatus", sync_mode AS "sync_mode: SyncMode",
                  sync_data_types AS "sync_data_types: Vec<DataType>",
                  signing_secret_encrypted, signing_secret_key_id
           FROM integration_sources WHERE id = $1"#,
        id
    )
    .fetch_optional(conn)
    .await
}

/// What starting a sync reads of its integration, from the row locked for it.
pub struct LockedIntegration {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub status: IntegrationStatus,
    pub source_type: SourceType,
    pub n8n_webhook_url: Option<String>,
    pub sync_schedule: Option<String>,
    pub sync_mode: SyncMode,
    pub sync_data_types: Vec<DataType>,
    pub sync_missed_ticks: MissedTicks,
    pub sync_on_running: OnRunning,
}

/// The integration's row, locked until the transaction ends against schedulers and operators
/// starting a sync of it. `FOR NO KEY UPDATE`, not `FOR UPDATE`: chunks being written hold the
/// row `FOR KEY SHARE` and need not be waited for.
pub async fn lock_for_sync(
    tx: &mut PgConnection,
    integration_id: Uuid,
) -> Result<Option<LockedIntegration>, sqlx::Error> {
    sqlx::query_as!(
        LockedIntegration,
        r#"SELECT id, tenant_id, status AS "status: IntegrationStatus",
                  source_type AS "source_type: SourceType", n8n_webhook_url, sync_schedule,
                  sync_mode AS "sync_mode: SyncMode",
                  sync_data_types AS "sync_data_types: Vec<DataType>",
                  sync_missed_ticks AS "sync_missed_ticks: MissedTicks",
                  sync_on_running AS "sync_on_running: OnRunning"
           FROM integration_sources WHERE id = $1 FOR NO KEY UPDATE"#,
        integration_id
    )
    .fetch_optional(tx)
    .await
}

/// The share of live rows (per data type) a full sync of the integration must see to sweep.
pub async fn sweep_min_seen_percent(
    conn: &mut PgConnection,
    integration_id: Uuid,
) -> Result<i16, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT sweep_min_seen_percent FROM integration_sources WHERE id = $1",
        integration_id
    )
    .fetch_one(conn)
    .await
}

/// An integration's sync settings as stored (credentials only by kind).
pub struct Settings {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub version: i64,
    pub status: IntegrationStatus,
    pub source_type: SourceType,
    pub n8n_webhook_url: Option<String>,
    pub n8n_auth_kind: String,
    pub sync_schedule: Option<String>,
    pub sync_timezone: String,
    pub sync_mode: SyncMode,
    pub sync_data_types: Vec<DataType>,
    pub sync_missed_ticks: MissedTicks,
    pub sync_on_running: OnRunning,
    pub sync_jitter_secs: i32,
    pub sweep_min_seen_percent: i16,
    /// Where each data type's next incremental sync starts.
    pub cursors: Json<BTreeMap<DataType, DateTime<Utc>>>,
}

pub async fn settings(conn: &mut PgConnection, id: Uuid) -> Result<Option<Settings>, sqlx::Error> {
    sqlx::query_as!(
        Settings,
        r#"SELECT i.id, i.tenant_id, i.name, i.description, i.version,
                  i.status AS "status: IntegrationStatus",
                  i.source_type AS "source_type: SourceType", i.n8n_webhook_url, i.n8n_auth_kind,
                  i.sync_schedule, i.sync_timezone, i.sync_mode AS "sync_mode: SyncMode",
                  i.sync_data_types AS "sync_data_types: Vec<DataType>",
                  i.sync_missed_ticks AS "sync_missed_ticks: MissedTicks",
                  i.sync_on_running AS "sync_on_running: OnRunning",
                  i.sync_jitter_secs, i.sweep_min_seen_percent,
                  (SELECT COALESCE(jsonb_object_agg(c.data_type, c.cursor_at), '{}')
                   FROM integration_cursors c WHERE c.integration_id = i.id)
                      AS "cursors!: Json<BTreeMap<DataType, DateTime<Utc>>>"
           FROM integration_sources i WHERE i.id = $1"#,
        id
    )
    .fetch_optional(conn)
    .await
}

/// Locks the integration's row until the transaction ends, so that two concurrent changes of
/// its settings never undo each other: its settings version as locked, `None` when there is no
/// such integration (in the transaction's tenant).
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT version FROM integration_sources WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_optional(conn)
    .await
}

/// A write of sync settings: `None` keeps a setting; the URL, schedule and time zone are written
/// as given.
pub struct SettingsWrite<'a> {
    pub webhook_url: Option<&'a str>,
    pub schedule: Option<&'a str>,
    pub timezone: &'a str,
    pub sync_mode: Option<SyncMode>,
    pub data_types: Option<&'a [DataType]>,
    pub missed_ticks: Option<MissedTicks>,
    pub on_running: Option<OnRunning>,
    pub jitter_secs: Option<i32>,
    pub sweep_min_seen_percent: Option<i16>,
    /// The schedule starts afresh from now.
    pub schedule_changed: bool,
    /// New credentials (sealed, `None` for none) and their kind.
    pub credentials: Option<(Option<Sealed>, &'a str)>,
}

pub async fn write_settings(
    conn: &mut PgConnection,
    id: Uuid,
    write: &SettingsWrite<'_>,
) -> Result<(), sqlx::Error> {
    let sealed = write.credentials.as_ref().and_then(|(s, _)| s.as_ref());
    let data_types: Option<Vec<&str>> = write
        .data_types
        .map(|types| types.iter().map(|d| d.as_str()).collect());
    sqlx::query!(
        "UPDATE integration_sources SET
             n8n_webhook_url = $2, sync_schedule = $3, sync_timezone = $4,
             sync_mode = COALESCE($5, sync_mode),
             sync_data_types = COALESCE($6, sync_data_types),
             sync_missed_ticks = COALESCE($7, sync_missed_ticks),
             sync_on_running = COALESCE($8, sync_on_running),
             sync_jitter_secs = COALESCE($9, sync_jitter_secs),
             sweep_min_seen_percent = COALESCE($10, sweep_min_seen_percent),
             schedule_changed_at = CASE WHEN $11 THEN now() ELSE schedule_changed_at END,
             credentials_encrypted = CASE WHEN $12 THEN $13 ELSE credentials_encrypted END,
             credentials_key_id = CASE WHEN $12 THEN $14 ELSE credentials_key_id END,
             n8n_auth_kind = CASE WHEN $12 THEN $15 ELSE n8n_auth_kind END
         WHERE id = $1",
        id,
        write.webhook_url,
        write.schedule,
        write.timezone,
        write.sync_mode.map(|m| m.as_str()),
        data_types as Option<Vec<&str>>,
        write.missed_ticks.map(|m| m.as_str()),
        write.on_running.map(|o| o.as_str()),
        write.jitter_secs,
        write.sweep_min_seen_percent,
        write.schedule_changed,
        write.credentials.is_some(),
        sealed.map(|s| &s.ciphertext[..]),
        sealed.map(|s| s.key_id.as_str()),
        write.credentials.as_ref().map_or("none", |(_, kind)| *kind)
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An active, scheduled integration and where its schedule's ticks are counted from.
pub struct Scheduled {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub schedule: String,
    pub timezone: String,
    pub jitter_secs: i32,
    /// The later of the schedule's last change and its last settled tick.
    pub anchor: DateTime<Utc>,
}

/// Every active integration with a schedule (system work).
pub async fn scheduled(conn: &mut PgConnection) -> Result<Vec<Scheduled>, sqlx::Error> {
    sqlx::query_as!(
        Scheduled,
        r#"SELECT i.id, i.tenant_id, i.sync_schedule AS "schedule!", i.sync_timezone AS timezone,
                  i.sync_jitter_secs AS jitter_secs,
                  GREATEST(COALESCE(i.schedule_changed_at, i.created_at), t.last_tick) AS "anchor!"
           FROM integration_sources i
           LEFT JOIN LATERAL (SELECT max(tick_at) AS last_tick FROM integration_schedule_ticks
                              WHERE integration_id = i.id) t ON true
           WHERE i.sync_schedule IS NOT NULL AND i.status = 'active'"#
    )
    .fetch_all(conn)
    .await
}

/// An integration as the API lists it: what it is, its schedule, its last sync and how many
/// syncs and live records it has.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Summary {
    pub id: Uuid,
    pub source_type: SourceType,
    pub name: String,
    pub description: Option<String>,
    pub status: IntegrationStatus,
    pub schedule: Option<String>,
    pub timezone: String,
    pub webhook_url_set: bool,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_sync_status: Option<SyncStatus>,
    pub last_sync_log_id: Option<Uuid>,
    /// Its open (pending or running) sync, the newest when there are several, and when it was
    /// created: `last_sync_*` are of closed syncs.
    pub open_sync_id: Option<Uuid>,
    pub open_sync_created_at: Option<DateTime<Utc>>,
    pub total_syncs: i64,
    pub failed_syncs: i64,
    pub contacts: i64,
    pub tickets: i64,
    pub deals: i64,
    pub created_at: DateTime<Utc>,
    /// Counts the writes of its settings (name and description included): the `ETag`.
    pub version: i64,
}

/// The summaries of the integrations the transaction sees (its tenant's), by name, or of the
/// one `only` names. The record counts are of live (not soft-deleted) rows, each an index scan
/// of the external table's sweep index (`(integration_id, last_synced_at) WHERE deleted_at IS
/// NULL`).
pub async fn summaries(
    conn: &mut PgConnection,
    only: Option<Uuid>,
) -> Result<Vec<Summary>, sqlx::Error> {
    sqlx::query_as!(
        Summary,
        r#"SELECT i.id, i.source_type AS "source_type: SourceType", i.name, i.description,
                  i.status AS "status: IntegrationStatus", i.sync_schedule AS schedule,
                  i.sync_timezone AS timezone, i.n8n_webhook_url IS NOT NULL AS "webhook_url_set!",
                  i.last_sync_at, i.last_sync_status AS "last_sync_status: SyncStatus",
                  i.last_sync_log_id, o.id AS "open_sync_id?", o.created_at AS "open_sync_created_at?",
                  i.total_syncs, i.failed_syncs,
                  (SELECT count(*) FROM external_contacts r
                   WHERE r.integration_id = i.id AND r.deleted_at IS NULL) AS "contacts!",
                  (SELECT count(*) FROM external_tickets r
                   WHERE r.integration_id = i.id AND r.deleted_at IS NULL) AS "tickets!",
                  (SELECT count(*) FROM external_deals r
                   WHERE r.integration_id = i.id AND r.deleted_at IS NULL) AS "deals!",
                  i.created_at, i.version
           FROM integration_sources i
           LEFT JOIN LATERAL (
               SELECT s.id, s.created_at FROM integration_sync_logs s
               WHERE s.integration_id = i.id AND s.status IN ('pending', 'running')
               ORDER BY s.created_at DESC LIMIT 1) o ON true
           WHERE $1::uuid IS NULL OR i.id = $1
           ORDER BY i.name, i.id"#,
        only
    )
    .fetch_all(conn)
    .await
}

/// Sets the integration's name and description (the caller has locked its row); false when the
/// transaction sees no such integration.
pub async fn rename(
    conn: &mut PgConnection,
    id: Uuid,
    name: &str,
    description: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE integration_sources SET name = $2, description = $3 WHERE id = $1",
        id,
        name,
        description
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes the integration; its keys, mappings, syncs, batches and errors go with it (foreign
/// keys), its records by trigger. False when the transaction sees no such integration.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!("DELETE FROM integration_sources WHERE id = $1", id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// What deleting an integration removes, counted before it does.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Footprint {
    pub contacts: i64,
    pub tickets: i64,
    pub deals: i64,
    pub syncs: i64,
    pub batches: i64,
    pub api_keys: i64,
}

pub async fn footprint(conn: &mut PgConnection, id: Uuid) -> Result<Footprint, sqlx::Error> {
    sqlx::query_as!(
        Footprint,
        r#"SELECT (SELECT count(*) FROM external_contacts WHERE integration_id = $1) AS "contacts!",
                  (SELECT count(*) FROM external_tickets WHERE integration_id = $1) AS "tickets!",
                  (SELECT count(*) FROM external_deals WHERE integration_id = $1) AS "deals!",
                  (SELECT count(*) FROM integration_sync_logs WHERE integration_id = $1) AS "syncs!",
                  (SELECT count(*) FROM ingest_batches WHERE integration_id = $1) AS "batches!",
                  (SELECT count(*) FROM integration_api_keys WHERE integration_id = $1) AS "api_keys!""#,
        id
    )
    .fetch_one(conn)
    .await
}
