//! `RunRetention`: deletes stored chunks, sync errors and schedule ticks past their age.

use jobs::{JobError, JobMeta, PlainJob};

use super::JobContext;
use crate::sync::{RunRetention, retention};

impl PlainJob<JobContext> for RunRetention {
    async fn run(&self, ctx: &JobContext, _meta: &JobMeta) -> Result<(), JobError> {
        retention::prune(&ctx.pool, &ctx.retention, chrono::Utc::now()).await?;
        Ok(())
    }
}
