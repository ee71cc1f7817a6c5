//! Replay: re-running a closed sync's stored chunks (mapping, matching, upserts) as a new sync
//! log with trigger `replay`, without asking n8n again, while retention still keeps the chunks.
//! What a changed mapping makes of data already delivered.

use sqlx::PgPool;
use uuid::Uuid;

use super::{SyncAdminError, chunk::enqueue_chunk_jobs, close_sync_if_done};
use crate::db::{batches, sync_logs};

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
/// `tenant_id`: the caller's tenant (another tenant's sync is `NotFound`); `None`: the install's
/// operator.
pub async fn reprocess(
    pool: &PgPool,
    queue: &jobs::Queue,
    tenant_id: Option<Uuid>,
    sync_log_id: Uuid,
) -> Result<Replay, SyncAdminError> {
    let mut tx = crate::db::scoped_tx(pool, tenant_id).await?;
    let original = sync_logs::for_replay(&mut tx, sync_log_id)
        .await?
        .ok_or(SyncAdminError::NotFound(sync_log_id))?;
    if original.status.is_open() {
        return Err(SyncAdminError::StillOpen {
            id: sync_log_id,
            status: original.status,
        });
    }
    let stored = batches::of_sync(&mut tx, sync_log_id).await?;
    if stored.iter().any(|b| b.chunks_deleted) {
        return Err(SyncAdminError::ChunksDeleted(sync_log_id));
    }
    let (tenant_id, integration_id) = (original.tenant_id, original.integration_id);
    let replay_id = Uuid::new_v4();
    sync_logs::insert_replay(&mut tx, replay_id, sync_log_id, &original).await?;
    crate::telemetry::metrics::sync_started(crate::domain::SyncTrigger::Replay.as_str());
    let (mut records, mut jobs, mut empty) = (0i64, 0usize, 0i32);
    for batch in &stored {
        let new_id =
            batches::insert_copy(&mut tx, tenant_id, integration_id, replay_id, batch).await?;
        let indexes = batches::chunk_indexes(&mut tx, batch.id).await?;
        if indexes.len() != batch.jobs_total as usize {
            return Err(SyncAdminError::ChunksDeleted(sync_log_id));
        }
        if indexes.is_empty() {
            empty += 1;
            continue;
        }
        let job_ids =
            enqueue_chunk_jobs(&mut tx, queue, tenant_id, integration_id, new_id, &indexes).await?;
        batches::copy_chunks(&mut tx, batch.id, new_id, &indexes, &job_ids).await?;
        records += i64::from(batch.record_count);
        jobs += job_ids.len();
    }
    sync_logs::set_received(&mut tx, replay_id, stored.len() as i32, empty, records).await?;
    // Nothing to process (a sync of empty batches): it closes now; otherwise its last chunk does.
    close_sync_if_done(&mut tx, replay_id).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    tracing::info!(sync.id = %sync_log_id, replay.id = %replay_id, replay.batches = stored.len(), replay.records = records, "sync replayed from its stored chunks");
    Ok(Replay {
        sync_log_id: replay_id,
        replay_of: sync_log_id,
        batches: stored.len(),
        records,
        jobs,
    })
}
