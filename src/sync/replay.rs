//! Replay: re-running a closed sync's stored chunks (mapping, matching, upserts) as a new sync
//! log with trigger `replay`, without asking n8n again, while retention still keeps the chunks.
//! What a changed mapping makes of data already delivered.

use sqlx::PgPool;
use uuid::Uuid;

use super::{SyncAdminError, chunk::enqueue_chunk_jobs, close_sync_if_done};
use crate::{
    db::system_tx,
    domain::{DataType, SyncStatus},
};

#[derive(sqlx::FromRow)]
struct Original {
    tenant_id: Uuid,
    integration_id: Uuid,
    status: SyncStatus,
    data_type: Option<DataType>,
    data_types: Option<Vec<String>>,
}

/// The new sync log of a replay, and what it will process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Replay {
    pub sync_log_id: Uuid,
    pub replay_of: Uuid,
    pub batches: usize,
    pub records: i64,
    pub jobs: usize,
}

/// Replays sync `sync_log_id`: each of its batches becomes a batch of a new `replay` sync with
/// the same chunks (copied, so retention and replays never share rows) and fresh jobs.
///
/// The replay is incremental whatever the original was: it never sweeps, since records created
/// after the original sync must not be soft-deleted for being absent from old data. Its batches
/// keep their original place in delivery order, so a record delivered again since keeps its newer
/// version; records whose stored row came from these very batches are rewritten.
pub async fn reprocess(pool: &PgPool, sync_log_id: Uuid) -> Result<Replay, SyncAdminError> {
    let mut tx = system_tx(pool).await?;
    let original: Option<Original> = sqlx::query_as(
        "SELECT tenant_id, integration_id, status, data_type, data_types
         FROM integration_sync_logs WHERE id = $1 FOR SHARE",
    )
    .bind(sync_log_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Original {
        tenant_id,
        integration_id,
        status,
        data_type,
        data_types,
    } = original.ok_or(SyncAdminError::NotFound(sync_log_id))?;
    if status.is_open() {
        return Err(SyncAdminError::StillOpen {
            id: sync_log_id,
            status,
        });
    }
    type Batch = (Uuid, DataType, String, i32, i32, Vec<u8>, i64, bool);
    let batches: Vec<Batch> = sqlx::query_as(
        "SELECT id, data_type, source_type, record_count, jobs_total, content_hash, delivery_seq,
                chunks_deleted_at IS NOT NULL
         FROM ingest_batches WHERE sync_log_id = $1 ORDER BY delivery_seq",
    )
    .bind(sync_log_id)
    .fetch_all(&mut *tx)
    .await?;
    if batches.iter().any(|b| b.7) {
        return Err(SyncAdminError::ChunksDeleted(sync_log_id));
    }
    let replay_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO integration_sync_logs
             (id, tenant_id, integration_id, trigger, sync_mode, data_type, data_types, status,
              started_at, final_received_at, last_batch_at, replay_of)
         VALUES ($1, $2, $3, 'replay', 'incremental', $4, $5, 'running', now(), now(), now(), $6)",
    )
    .bind(replay_id)
    .bind(tenant_id)
    .bind(integration_id)
    .bind(data_type)
    .bind(&data_types)
    .bind(sync_log_id)
    .execute(&mut *tx)
    .await?;
    let (mut records, mut jobs, mut empty) = (0i64, 0usize, 0i32);
    for (old_id, data_type, source_type, record_count, jobs_total, hash, seq, _) in &batches {
        let new_id: Uuid = sqlx::query_scalar(
            "INSERT INTO ingest_batches
                 (tenant_id, integration_id, sync_log_id, data_type, source_type, sync_mode,
                  content_hash, record_count, jobs_total, delivery_seq, state, processed_at)
             VALUES ($1, $2, $3, $4, $5, 'incremental', $6, $7, $8, $9,
                     CASE WHEN $8 = 0 THEN 'processed' ELSE 'received' END,
                     CASE WHEN $8 = 0 THEN now() END)
             RETURNING id",
        )
        .bind(tenant_id)
        .bind(integration_id)
        .bind(replay_id)
        .bind(data_type)
        .bind(source_type)
        .bind(hash)
        .bind(record_count)
        .bind(jobs_total)
        .bind(seq)
        .fetch_one(&mut *tx)
        .await?;
        let indexes: Vec<i32> = sqlx::query_scalar(
            "SELECT chunk_index FROM ingest_batch_chunks WHERE batch_id = $1 ORDER BY chunk_index",
        )
        .bind(old_id)
        .fetch_all(&mut *tx)
        .await?;
        if indexes.len() != *jobs_total as usize {
            return Err(SyncAdminError::ChunksDeleted(sync_log_id));
        }
        if indexes.is_empty() {
            empty += 1;
            continue;
        }
        let job_ids =
            enqueue_chunk_jobs(&mut tx, tenant_id, integration_id, new_id, &indexes).await?;
        sqlx::query(
            "INSERT INTO ingest_batch_chunks
                 (tenant_id, batch_id, chunk_index, record_offset, record_count, payload,
                  payload_encoding, job_id)
             SELECT c.tenant_id, $2, c.chunk_index, c.record_offset, c.record_count, c.payload,
                    c.payload_encoding, u.job_id
             FROM ingest_batch_chunks c
             JOIN unnest($3::int4[], $4::int8[]) AS u(chunk_index, job_id)
               ON u.chunk_index = c.chunk_index
             WHERE c.batch_id = $1",
        )
        .bind(old_id)
        .bind(new_id)
        .bind(&indexes)
        .bind(&job_ids)
        .execute(&mut *tx)
        .await?;
        records += i64::from(*record_count);
        jobs += job_ids.len();
    }
    sqlx::query(
        "UPDATE integration_sync_logs
         SET batches_received = $2, batches_processed = $3, records_received = $4
         WHERE id = $1",
    )
    .bind(replay_id)
    .bind(batches.len() as i32)
    .bind(empty)
    .bind(records)
    .execute(&mut *tx)
    .await?;
    // Nothing to process (a sync of empty batches): it closes now; otherwise its last chunk does.
    close_sync_if_done(&mut tx, replay_id).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    tracing::info!(%sync_log_id, replay = %replay_id, batches = batches.len(), records, "sync replayed from its stored chunks");
    Ok(Replay {
        sync_log_id: replay_id,
        replay_of: sync_log_id,
        batches: batches.len(),
        records,
        jobs,
    })
}
