//! SQL of per-record errors (`integration_sync_errors`) written by the sync lifecycle. Each
//! function runs in the caller's transaction.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::batches::SettledChunk;

/// The one error row of a settled chunk: its first record's index, `code` and `message`.
pub async fn insert_for_chunk(
    conn: &mut PgConnection,
    batch_id: Uuid,
    chunk: &SettledChunk,
    code: &str,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO integration_sync_errors
             (tenant_id, integration_id, sync_log_id, batch_id, record_index, code, message)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(chunk.tenant_id)
    .bind(chunk.integration_id)
    .bind(chunk.sync_log_id)
    .bind(batch_id)
    .bind(chunk.record_offset)
    .bind(code)
    .bind(message)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the error row of the chunk starting at `offset` with one of `codes`; found through
/// the sync log's index (the table is large: its retention is days).
pub async fn delete_for_chunk(
    conn: &mut PgConnection,
    sync_log_id: Uuid,
    batch_id: Uuid,
    offset: i32,
    codes: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM integration_sync_errors
         WHERE sync_log_id = $1 AND batch_id = $2 AND record_index = $3 AND code = ANY($4)",
    )
    .bind(sync_log_id)
    .bind(batch_id)
    .bind(offset)
    .bind(codes)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes up to `limit` error rows written before `before`; returns how many.
pub async fn delete_older_than(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM integration_sync_errors WHERE id IN (
             SELECT id FROM integration_sync_errors WHERE created_at < $1 LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(conn)
    .await?
    .rows_affected())
}
