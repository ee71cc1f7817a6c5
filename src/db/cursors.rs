//! SQL of `integration_cursors`: where each data type's next incremental sync starts.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::DataType;

/// The cursors of `data_types` of the integration, `None` for a type never synced successfully.
pub async fn of_types(
    conn: &mut PgConnection,
    integration_id: Uuid,
    data_types: &[DataType],
) -> Result<Vec<(DataType, Option<DateTime<Utc>>)>, sqlx::Error> {
    let found = sqlx::query!(
        r#"SELECT data_type AS "data_type: DataType", cursor_at FROM integration_cursors
           WHERE integration_id = $1 AND data_type = ANY($2)"#,
        integration_id,
        data_types as _
    )
    .fetch_all(conn)
    .await?;
    Ok(data_types
        .iter()
        .map(|t| {
            let at = found
                .iter()
                .find(|f| f.data_type == *t)
                .map(|f| f.cursor_at);
            (*t, at)
        })
        .collect())
}

/// Moves the cursor of every data type the closed sync asked for, except types of which a batch
/// failed as a whole (its records were never processed), to the sync's start: its trigger, or
/// its first batch when the workflow started it. Never backwards, so an older sync closing late
/// cannot undo a newer one. Returns the types moved.
pub async fn advance_for_sync(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
) -> Result<Vec<DataType>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"WITH s AS (
             SELECT tenant_id, integration_id, COALESCE(triggered_at, started_at, created_at) AS start_at,
                    COALESCE(data_types, ARRAY[data_type]) AS types
             FROM integration_sync_logs WHERE id = $1)
         INSERT INTO integration_cursors AS c (tenant_id, integration_id, data_type, cursor_at, sync_log_id)
         SELECT s.tenant_id, s.integration_id, t.data_type, s.start_at, $1
         FROM s CROSS JOIN LATERAL unnest(s.types) AS t(data_type)
         WHERE t.data_type IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM ingest_batches b
                           WHERE b.sync_log_id = $1 AND b.data_type = t.data_type AND b.state = 'failed')
         ON CONFLICT (integration_id, data_type) DO UPDATE
         SET cursor_at = EXCLUDED.cursor_at, sync_log_id = EXCLUDED.sync_log_id
         WHERE c.cursor_at < EXCLUDED.cursor_at
         RETURNING data_type AS "data_type: DataType""#,
        sync_log_id
    )
    .fetch_all(conn)
    .await
}
