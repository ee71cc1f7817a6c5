//! `ProcessChunk`: the job that turns one stored chunk of a webhook batch into synced records.
//!
//! Enqueued by webhook ingestion in the transaction that stores the chunk. Its handler (mapping,
//! matching, upserting) is registered with the worker by the worker pipeline; until then the jobs
//! wait in their own `ingest` queue, which no worker of this build consumes.

use jobs::Job;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The queue of ingestion work, separate so its concurrency is tuned apart from other jobs.
pub const INGEST_QUEUE: &str = "ingest";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessChunk {
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
