//! SQL of a full sync's sweep: how many live rows of a data type it saw, the soft-delete of the
//! rest, and `integration_sync_sweeps`, which records each decision.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{DataType, SweepState};

/// One sweep decision of a sync.
#[derive(Debug, Clone, serde::Serialize)]
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
    sqlx::query!(
        "INSERT INTO integration_sync_sweeps
             (tenant_id, sync_log_id, data_type, live_rows, seen_rows, deleted_rows, state, reason,
              applied_at)
         SELECT tenant_id, id, $2, $3, $4, $5, $6, $7, CASE WHEN $6 = 'applied' THEN now() END
         FROM integration_sync_logs WHERE id = $1",
        sync_log_id,
        data_type.as_str(),
        live,
        seen,
        deleted,
        state.as_str(),
        reason
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The sweeps of a sync, locked for an operator applying them.
pub async fn of_sync_locked(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
) -> Result<Vec<Sweep>, sqlx::Error> {
    sqlx::query_as!(
        Sweep,
        r#"SELECT sync_log_id, data_type AS "data_type: DataType", live_rows, seen_rows,
                  deleted_rows, state AS "state: SweepState", reason, applied_at, applied_by
           FROM integration_sync_sweeps WHERE sync_log_id = $1 ORDER BY data_type FOR UPDATE"#,
        sync_log_id
    )
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
    sqlx::query_as!(
        Sweep,
        r#"UPDATE integration_sync_sweeps
           SET state = 'applied', deleted_rows = $3, applied_at = now(), applied_by = $4
           WHERE sync_log_id = $1 AND data_type = $2
           RETURNING sync_log_id, data_type AS "data_type: DataType", live_rows, seen_rows,
                     deleted_rows, state AS "state: SweepState", reason, applied_at, applied_by"#,
        sync_log_id,
        data_type.as_str(),
        deleted,
        by
    )
    .fetch_one(conn)
    .await
}
