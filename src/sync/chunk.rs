//! Stored chunks: a batch's records cut into compressed slices, one per processing job, byte for
//! byte as received; and how a chunk that cannot be processed is settled so its records are
//! still accounted for.

use std::collections::HashMap;

use jobs::JobState;
use serde_json::value::RawValue;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{ProcessChunk, job_tag};
use crate::db::{batches, sync_errors, sync_logs, system_tx};

/// zstd level 1: ~4x smaller than JSON at several hundred MB/s; higher levels cost more CPU per
/// request than they save in storage for data kept `ingest.keep_chunks_days` for replay.
const ZSTD_LEVEL: i32 = 1;

/// A stored slice of a batch: one processing job's records.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub index: i32,
    pub record_offset: i32,
    pub record_count: i32,
    /// zstd of `[record,record,…]`.
    pub payload: Vec<u8>,
}

pub const CHUNK_ENCODING: &str = "zstd";

/// Cuts the records into chunks of at most `per_chunk`, each compressed.
pub fn chunks(records: &[&RawValue], per_chunk: usize) -> std::io::Result<Vec<Chunk>> {
    let mut out = Vec::with_capacity(records.len().div_ceil(per_chunk.max(1)));
    let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
    let mut plain = Vec::new();
    for (index, part) in records.chunks(per_chunk.max(1)).enumerate() {
        plain.clear();
        plain.push(b'[');
        for (i, record) in part.iter().enumerate() {
            if i > 0 {
                plain.push(b',');
            }
            plain.extend_from_slice(record.get().as_bytes());
        }
        plain.push(b']');
        out.push(Chunk {
            index: index as i32,
            record_offset: (index * per_chunk) as i32,
            record_count: part.len() as i32,
            payload: compressor.compress(&plain)?,
        });
    }
    Ok(out)
}

/// The records of a stored chunk, for the job that processes it.
pub fn decode_chunk(payload: &[u8], encoding: &str) -> std::io::Result<Vec<u8>> {
    match encoding {
        "zstd" => zstd::stream::decode_all(payload),
        "identity" => Ok(payload.to_vec()),
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unknown chunk encoding {other}"),
        )),
    }
}

/// Enqueues one `ProcessChunk` job per chunk index; returns their ids in the order of `indexes`.
pub async fn enqueue_chunk_jobs(
    tx: &mut PgConnection,
    queue: &::jobs::Queue,
    tenant_id: Uuid,
    integration_id: Uuid,
    batch_id: Uuid,
    indexes: &[i32],
) -> anyhow::Result<Vec<i64>> {
    let tag = job_tag(tenant_id, integration_id);
    // Enqueued while serving a request (a delivery, a replay), the jobs name it.
    let request_id = crate::telemetry::request_id();
    let traceparent = crate::telemetry::traces::current_traceparent();
    let jobs: Vec<::jobs::NewJob> = indexes
        .iter()
        .map(|&chunk| {
            ::jobs::NewJob::new(&ProcessChunk {
                tenant_id,
                batch_id,
                chunk,
                request_id: request_id.clone(),
                traceparent: traceparent.clone(),
            })
            .map(|j| j.tag(tag.clone()))
        })
        .collect::<Result<_, _>>()?;
    let enqueued = queue.enqueue_many(&mut *tx, &jobs).await?;
    // Each chunk names its job, so a dead job's chunk can be found and settled. No unique keys:
    // the engine returns the ids in the order of the jobs.
    anyhow::ensure!(
        enqueued.ids.len() == indexes.len(),
        "{} chunk jobs were enqueued for {} chunks",
        enqueued.ids.len(),
        indexes.len()
    );
    Ok(enqueued.ids)
}

/// The error code of records whose chunk's job died (failed at its last attempt or
/// permanently, cancelled, or deleted).
pub const PROCESSING_FAILED: &str = "processing_failed";
/// The error code of records of a batch an operator discarded.
pub const BATCH_DISCARDED: &str = "batch_discarded";

/// Settles the chunks whose job is dead while the chunk is unprocessed: their records count as
/// failed in the batch and the sync, with one error row per chunk naming the job's last error;
/// the batch ends (`failed`) once every chunk is settled or processed, which releases its records
/// from the tenant's backlog, and the sync closes when it was waiting only for them. Run every
/// scheduler round; any number may run at once (`SKIP LOCKED`). Returns the chunks settled.
pub async fn settle_dead_chunks(pool: &PgPool, queue: &jobs::Queue) -> anyhow::Result<u64> {
    let mut tx = system_tx(pool).await?;
    let waiting = batches::pending_chunk_jobs(&mut tx).await?;
    let dead: HashMap<i64, jobs::admin::Unrunnable> =
        jobs::admin::unrunnable(&mut tx, queue, &waiting)
            .await?
            .into_iter()
            .map(|u| (u.id, u))
            .collect();
    if dead.is_empty() {
        return Ok(0);
    }
    let job_ids: Vec<i64> = dead.keys().copied().collect();
    let mut settled = 0;
    for chunk in batches::lock_chunks_of_jobs(&mut tx, &job_ids, 1_000).await? {
        let job = &dead[&chunk.job_id];
        let how = match job.state {
            None => "was deleted".to_string(),
            Some(JobState::Cancelled) => "was cancelled".to_string(),
            Some(_) => format!(
                "died: {}",
                job.last_error.as_deref().unwrap_or("no error recorded")
            ),
        };
        let message = format!(
            "job {} processing this chunk {how}; retry the job to process it again",
            job.id
        );
        let (batch_id, chunk) = (chunk.batch_id, chunk.chunk_index);
        if settle_chunk(&mut tx, batch_id, chunk, PROCESSING_FAILED, &message).await? {
            settled += 1;
        }
    }
    tx.commit().await?;
    if settled > 0 {
        tracing::warn!(
            chunks.settled = settled,
            "settled the chunks of dead jobs as failed"
        );
    }
    Ok(settled)
}

/// Settles one unprocessed chunk as failed (see [`settle_dead_chunks`]). False when the chunk was
/// processed or settled meanwhile. `conn` may be a system transaction or the chunk's tenant's.
pub async fn settle_chunk(
    conn: &mut PgConnection,
    batch_id: Uuid,
    chunk: i32,
    code: &str,
    message: &str,
) -> Result<bool, sqlx::Error> {
    let Some(settled) = batches::mark_chunk_settled(conn, batch_id, chunk).await? else {
        return Ok(false);
    };
    let (offset, count) = (settled.record_offset, settled.record_count);
    let last = offset + count - 1;
    let row_message =
        format!("records {offset} to {last} of the batch were not processed: {message}");
    sync_errors::insert_for_chunk(conn, batch_id, &settled, code, &row_message).await?;
    let batch_done = batches::count_settled_chunk(conn, batch_id, count, code).await?;
    sync_logs::count_settled_chunk(conn, settled.sync_log_id, i64::from(count), batch_done).await?;
    if batch_done {
        super::close_sync_if_done(conn, settled.sync_log_id).await?;
    }
    tracing::warn!(batch.id = %batch_id, chunk, code, "chunk settled as failed: {message}");
    Ok(true)
}

/// Takes back a chunk settled as failed that is now being processed after all (its job was
/// retried): its records leave the failed counts, its error row goes, the batch is processing
/// again, and a sync closed for it reopens. Runs in the processing transaction, which holds the
/// chunk's row, so it happens once per settling.
pub async fn take_back_settled(
    conn: &mut PgConnection,
    batch_id: Uuid,
    offset: i32,
    count: i32,
) -> Result<(), sqlx::Error> {
    let (sync_log_id, was_done) = batches::uncount_settled_chunk(conn, batch_id, count).await?;
    sync_errors::delete_for_chunk(
        conn,
        sync_log_id,
        batch_id,
        offset,
        &[PROCESSING_FAILED, BATCH_DISCARDED],
    )
    .await?;
    super::reopen_for_processing(conn, sync_log_id, i64::from(count), was_done).await?;
    tracing::info!(batch.id = %batch_id, offset, "a chunk settled as failed is processed after all");
    Ok(())
}

/// Discards a batch an operator gave up on: its unfinished jobs are cancelled and every chunk not
/// yet processed is settled as failed with `reason` (code `batch_discarded`), so the batch and
/// its sync end. Returns the records discarded, or `None` when no such batch exists.
pub async fn discard_batch(
    pool: &PgPool,
    queue: &jobs::Queue,
    batch_id: Uuid,
    reason: &str,
) -> anyhow::Result<Option<i64>> {
    let mut tx = system_tx(pool).await?;
    if !batches::lock(&mut tx, batch_id).await? {
        return Ok(None);
    }
    let chunks = batches::unfinished_chunks(&mut tx, batch_id).await?;
    // Their jobs are cancelled before the chunks are settled, so no attempt running now can
    // commit its chunk afterwards (its completion is fenced on `state = 'running'`); the batch's
    // lock keeps new chunks of it from starting meanwhile.
    let job_ids: Vec<i64> = chunks.iter().filter_map(|c| c.job_id).collect();
    jobs::admin::cancel_unfinished(&mut tx, queue, &job_ids).await?;
    let mut discarded = 0;
    let message = format!("discarded by an operator: {reason}");
    for chunk in chunks {
        if settle_chunk(
            &mut tx,
            batch_id,
            chunk.chunk_index,
            BATCH_DISCARDED,
            &message,
        )
        .await?
        {
            discarded += i64::from(chunk.record_count);
        }
    }
    tx.commit().await?;
    Ok(Some(discarded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_cover_every_record() {
        let records: Vec<String> = (0..2_500).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
        let text = format!("[{}]", records.join(","));
        let raws: Vec<&RawValue> = serde_json::from_str(&text).unwrap();
        let chunks = chunks(&raws, 1_000).unwrap();
        assert_eq!(
            chunks
                .iter()
                .map(|c| (c.record_offset, c.record_count))
                .collect::<Vec<_>>(),
            vec![(0, 1_000), (1_000, 1_000), (2_000, 500)]
        );
        let last = decode_chunk(&chunks[2].payload, CHUNK_ENCODING).unwrap();
        let values: Vec<serde_json::Value> = serde_json::from_slice(&last).unwrap();
        assert_eq!(values.len(), 500);
        assert_eq!(values[0]["n"], 2_000);
    }
}
