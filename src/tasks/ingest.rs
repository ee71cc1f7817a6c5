//! The ingestion jobs: `ProcessChunk` turns one stored chunk of a webhook batch into synced
//! records (see `pipeline`); `FinalizeSync` closes a sync whose final batch arrived after the
//! others were processed. Both are transactional: their effects commit with their completion.

use jobs::{JobError, JobMeta, TransactionalJob};
use sqlx::PgConnection;
use tracing::Instrument;

use super::JobContext;
use crate::{
    pipeline::{self, PipelineError},
    sync::{self, FinalizeSync, ProcessChunk},
};

impl TransactionalJob<JobContext> for ProcessChunk {
    async fn run(
        &self,
        ctx: &JobContext,
        meta: &JobMeta,
        tx: &mut PgConnection,
    ) -> Result<(), JobError> {
        // Every line of the chunk's processing names the delivery's request and the job.
        let span = tracing::info_span!(
            "job.process_chunk",
            job.id = meta.id,
            job.attempt = meta.attempt,
            batch.id = %self.batch_id,
            request.id = self.request_id.as_deref(),
        );
        if let Some(traceparent) = &self.traceparent {
            crate::telemetry::traces::link_to(&span, traceparent);
        }
        let processed = pipeline::process_chunk(
            tx,
            self.tenant_id,
            self.batch_id,
            self.chunk,
            &ctx.pipeline,
            &ctx.matchers,
            // Every attempt after the first isolates records the database refuses.
            meta.attempt > 1,
        )
        .instrument(span.clone())
        .await;
        let _entered = span.enter();
        match processed {
            Ok(Some(counts)) => {
                tracing::debug!(batch.id = %self.batch_id, batch.chunk = self.chunk, ?counts, "chunk processed");
                Ok(())
            }
            Ok(None) => {
                tracing::info!(batch.id = %self.batch_id, batch.chunk = self.chunk, "chunk already processed; nothing to do");
                Ok(())
            }
            Err(PipelineError::Database(e)) => Err(e.into()),
            Err(e @ PipelineError::Corrupt(_)) => Err(JobError::permanent(e)),
            Err(e @ PipelineError::Refused(_)) => Err(JobError::Retry {
                message: e.to_string(),
                after: Some(std::time::Duration::ZERO),
            }),
        }
    }
}

impl TransactionalJob<JobContext> for FinalizeSync {
    async fn run(
        &self,
        _ctx: &JobContext,
        _meta: &JobMeta,
        tx: &mut PgConnection,
    ) -> Result<(), JobError> {
        crate::db::set_tenant(tx, self.tenant_id).await?;
        sync::close_sync_if_done(tx, self.sync_log_id).await?;
        Ok(())
    }
}
