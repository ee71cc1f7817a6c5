//! SQL of integrations as the sync lifecycle reads them.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{DataType, IntegrationStatus, MissedTicks, OnRunning, SourceType, SyncMode};

/// What starting a sync reads of its integration, from the row locked for it.
#[derive(sqlx::FromRow)]
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
    sqlx::query_as(
        "SELECT id, tenant_id, status, source_type, n8n_webhook_url, sync_schedule, sync_mode,
                sync_data_types, sync_missed_ticks, sync_on_running
         FROM integration_sources WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(integration_id)
    .fetch_optional(tx)
    .await
}

/// The share of live rows (per data type) a full sync of the integration must see to sweep.
pub async fn sweep_min_seen_percent(
    conn: &mut PgConnection,
    integration_id: Uuid,
) -> Result<i16, sqlx::Error> {
    sqlx::query_scalar("SELECT sweep_min_seen_percent FROM integration_sources WHERE id = $1")
        .bind(integration_id)
        .fetch_one(conn)
        .await
}
