//! SQL of a full sync's sweep: how many live rows of a data type it saw, the soft-delete of the
//! rest, and `integration_sync_sweeps`, which records each decision.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::external_rows::table;
use crate::domain::{DataType, SweepState};

/// The integration's live rows of `data_type`, and how many of them a delivery wrote or saw at
/// or after `since`.
pub async fn live_and_seen(
    conn: &mut PgConnection,
    data_type: DataType,
    integration_id: Uuid,
    since: DateTime<Utc>,
) -> Result<(i64, i64), sqlx::Error> {
    // The table name comes from a closed list, never from input.
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), count(*) FILTER (WHERE last_synced_at >= $2)
         FROM {} WHERE integration_id = $1 AND deleted_at IS NULL",
        table(data_type)
    )))
    .bind(integration_id)
    .bind(since)
    .fetch_one(conn)
    .await
}

/// One sweep decision of a sync.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Sweep {
    pub sync_log_id: Uuid,
    pub data_type: DataType,
    pub live_rows: i64,
    pub seen_rows: i64,
    pub deleted_rows: i64,
    pub state: SweepState,
    pub reason: Option<String>,
    pub applied_at: Option<DateTime<Utc>>,
    pub applied_by: Option<String>,
}

/// Records the sweep of `data_type` by the closing sync: the live rows, those it saw, those it
/// soft-deleted.
pub async fn record(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    data_type: DataType,
    (live, seen, deleted): (i64, i64, i64),
    state: SweepState,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO integration_sync_sweeps
             (tenant_id, sync_log_id, data_type, live_rows, seen_rows, deleted_rows, state, reason,
              applied_at)
         SELECT tenant_id, id, $2, $3, $4, $5, $6, $7, CASE WHEN $6 = 'applied' THEN now() END
         FROM integration_sync_logs WHERE id = $1",
    )
    .bind(sync_log_id)
    .bind(data_type)
    .bind(live)
    .bind(seen)
    .bind(deleted)
    .bind(state)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// The sweeps of a sync, locked for an operator applying them.
pub async fn of_sync_locked(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
) -> Result<Vec<Sweep>, sqlx::Error> {
    sqlx::query_as(
        "SELECT sync_log_id, data_type, live_rows, seen_rows, deleted_rows, state, reason,
                applied_at, applied_by
         FROM integration_sync_sweeps WHERE sync_log_id = $1 ORDER BY data_type FOR UPDATE",
    )
    .bind(sync_log_id)
    .fetch_all(conn)
    .await
}

/// Marks a skipped sweep applied by an operator, with the rows it soft-deleted; returns it so.
pub async fn mark_applied(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    data_type: DataType,
    deleted: i64,
    by: &str,
) -> Result<Sweep, sqlx::Error> {
    sqlx::query_as(
        "UPDATE integration_sync_sweeps
         SET state = 'applied', deleted_rows = $3, applied_at = now(), applied_by = $4
         WHERE sync_log_id = $1 AND data_type = $2
         RETURNING sync_log_id, data_type, live_rows, seen_rows, deleted_rows, state, reason,
                   applied_at, applied_by",
    )
    .bind(sync_log_id)
    .bind(data_type)
    .bind(deleted)
    .bind(by)
    .fetch_one(conn)
    .await
}
