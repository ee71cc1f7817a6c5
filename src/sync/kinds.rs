//! The jobs of the sync lifecycle, as stored: their kinds, arguments and queues. The handlers
//! that run them are in `tasks`; the lifecycle enqueues them.
//!
//! A job's `KIND` is stored with every enqueued row: once released it never changes.

use jobs::Job;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The queue of ingestion work, separate so its concurrency is tuned apart from other jobs.
pub const INGEST_QUEUE: &str = "ingest";

/// The tag of every job working for one integration: admins filter on it.
pub fn job_tag(tenant_id: Uuid, integration_id: Uuid) -> String {
    format!("tenant:{tenant_id}/integration:{integration_id}")
}

/// Turns one stored chunk of a batch into synced records (see `pipeline`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessChunk {
    pub tenant_id: Uuid,
    pub batch_id: Uuid,
    pub chunk: i32,
    /// The id of the delivery's request (`x-request-id`), so its processing is found from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The delivery's trace context (W3C `traceparent`) when traces are exported: the job's span
    /// links to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Job for ProcessChunk {
    const KIND: &'static str = "ingest.process_chunk";
    const QUEUE: &'static str = INGEST_QUEUE;
    const MAX_ATTEMPTS: i32 = 10;
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

/// Asks n8n to start an integration's workflow for one pending sync.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TriggerSync {
    pub tenant_id: Uuid,
    pub integration_id: Uuid,
    pub sync_log_id: Uuid,
    /// The id of the request that asked for the sync (a manual sync), if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Its attempts are `n8n.trigger_max_attempts`, set on each job by `sync::create_sync`.
impl Job for TriggerSync {
    const KIND: &'static str = "sync.trigger";
}

/// Deletes what is past its retention (`sync::retention`); enqueued every 10 minutes by the
/// queue's leader.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunRetention {}

impl Job for RunRetention {
    const KIND: &'static str = "sync.retention";
    const MAX_ATTEMPTS: i32 = 3;
}
