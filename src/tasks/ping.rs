//! `Ping`: a job that does nothing, for health checks, tests and the queue benchmark.

use jobs::{Job, JobError, JobMeta, PlainJob};
use serde::{Deserialize, Serialize};

use super::JobContext;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ping {
    /// Free text, shown in job listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Job for Ping {
    const KIND: &'static str = "ping";
}

impl PlainJob<JobContext> for Ping {
    async fn run(&self, _ctx: &JobContext, _meta: &JobMeta) -> Result<(), JobError> {
        Ok(())
    }
}
