//! The ingestion jobs: `ProcessChunk` turns one stored chunk of a webhook batch into synced
//! records (see `pipeline`); `FinalizeSync` closes a sync whose final batch arrived after the
//! others were processed. Both are transactional: their effects commit with their completion.

use jobs::{Job, JobError, JobMeta, TransactionalJob};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::JobContext;
use crate::pipeline::{self, PipelineError};

/// The queue of ingestion work, separate so its concurrency is tuned apart from other jobs.
pub const INGEST_QUEUE: &str = "ingest";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessChunk {
    pub tenant_id: Uuid,
    pub batch_id: Uuid,
    pub chunk: i32,
}

impl Job for ProcessChunk {
    const KIND: &'static str = "ingest.process_chunk";
    const QUEUE: &'static str = INGEST_QUEUE;
    const MAX_ATTEMPTS: i32 = 10;
}

/// The tag of every job working for one integration: admins filter on it.
pub fn job_tag(tenant_id: Uuid, integration_id: Uuid) -> String {
    format!("tenant:{tenant_id}/integration:{integration_id}")
}

impl TransactionalJob<JobContext> for ProcessChunk {
    async fn run(
        &self,
        ctx: &JobContext,
        _meta: &JobMeta,
        tx: &mut PgConnection,
    ) -> Result<(), JobError> {
        match pipeline::process_chunk(
            tx,
            self.tenant_id,
            self.batch_id,
            self.chunk,
            &ctx.pipeline,
            &ctx.matchers,
        )
        .await
        {
            Ok(Some(counts)) => {
                tracing::debug!(batch_id = %self.batch_id, chunk = self.chunk, ?counts, "chunk processed");
                Ok(())
            }
            Ok(None) => {
                tracing::info!(batch_id = %self.batch_id, chunk = self.chunk, "chunk already processed; nothing to do");
                Ok(())
            }
            Err(PipelineError::Database(e)) => Err(e.into()),
            Err(e @ PipelineError::Corrupt(_)) => Err(JobError::permanent(e)),
        }
    }
}

/// Closes a sync once its final batch is in and every batch is processed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FinalizeSync {
    pub tenant_id: Uuid,
    pub sync_log_id: Uuid,
}

impl Job for FinalizeSync {
    const KIND: &'static str = "ingest.finalize_sync";
    const QUEUE: &'static str = INGEST_QUEUE;
}

impl TransactionalJob<JobContext> for FinalizeSync {
    async fn run(
        &self,
        _ctx: &JobContext,
        _meta: &JobMeta,
        tx: &mut PgConnection,
    ) -> Result<(), JobError> {
        crate::db::set_tenant(tx, self.tenant_id).await?;
        pipeline::close_sync_if_done(tx, self.sync_log_id).await?;
        Ok(())
    }
}
