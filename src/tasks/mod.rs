//! The application's jobs and the one place they are registered with the queue engine.
//!
//! A job's `KIND` is stored with every enqueued row: once released it never changes.

pub mod ingest;
mod ping;
mod retention;
mod trigger;

use std::time::Duration;

use jobs::{Backoff, MaintenanceConfig, Registry, WorkerConfig};
use sqlx::PgPool;

use crate::config::{Config, WorkerConfig as WorkerSettings};
pub use crate::sync::{FinalizeSync, ProcessChunk, RunRetention, TriggerSync};
pub use ping::Ping;

/// What every job handler may use.
#[derive(Clone)]
pub struct JobContext {
    pub pool: PgPool,
    pub pipeline: crate::pipeline::PipelineSettings,
    /// Tenants' account matchers, reused while their accounts do not change.
    pub matchers: crate::pipeline::MatcherCache,
    /// The HTTP client of the sync triggers.
    pub n8n: crate::n8n::Client,
    /// Opens integration credentials; `None` when SYNCBRIDGE_ENCRYPTION_KEY is not set.
    pub sealer: Option<crate::crypto::Sealer>,
    /// Where n8n posts the batches of a triggered sync.
    pub callback_url: String,
    pub retention: crate::sync::retention::RetentionSettings,
    /// How far before a data type's cursor an incremental sync starts fetching.
    pub cursor_overlap: Duration,
}

impl JobContext {
    pub fn new(pool: PgPool, config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            pool,
            pipeline: pipeline_settings(&config.worker),
            matchers: crate::pipeline::MatcherCache::default(),
            n8n: crate::n8n::Client::new(n8n_settings(config)?)?,
            sealer: config.sealer()?,
            callback_url: config.callback_url(),
            retention: crate::sync::retention::RetentionSettings::from_config(config),
            cursor_overlap: Duration::from_secs(config.n8n.cursor_overlap_secs),
        })
    }
}

pub fn n8n_settings(config: &Config) -> anyhow::Result<crate::n8n::ClientSettings> {
    Ok(crate::n8n::ClientSettings {
        connect_timeout: Duration::from_secs(config.n8n.connect_timeout_secs.max(1)),
        timeout: Duration::from_secs(config.n8n.timeout_secs.max(1)),
        quick_retries: config.n8n.quick_retries,
        policy: std::sync::Arc::new(crate::n8n::UrlPolicy::configured(&config.n8n)?),
    })
}

/// Every job kind this build can run, and the queues they run on.
pub fn registry(settings: &WorkerSettings) -> Registry<JobContext> {
    Registry::new()
        .queue("default", settings.concurrency)
        .queue(crate::sync::INGEST_QUEUE, settings.ingest_concurrency)
        .plain::<Ping>()
        .plain::<TriggerSync>()
        .plain::<RunRetention>()
        .transactional::<ProcessChunk>()
        .transactional::<FinalizeSync>()
}

/// The jobs the queue's leader enqueues on a schedule: retention every 10 minutes (a missed
/// run happens once when a leader is back).
pub fn periodic() -> Vec<jobs::Periodic> {
    vec![
        jobs::Periodic::new(
            <RunRetention as jobs::Job>::KIND,
            "0 */10 * * * *",
            jobs::MissedTicks::RunLatest,
            |_| jobs::NewJob::new(&RunRetention {}).expect("an empty job serialises"),
        )
        .expect("a valid cron expression"),
    ]
}

/// The worker's settings, and the queue it listens to (`jobs.channel`).
pub fn worker_config(config: &Config) -> WorkerConfig {
    let settings = &config.worker;
    WorkerConfig {
        queue: config.jobs.queue(),
        fetch_batch: settings.fetch_batch,
        poll_interval: Duration::from_millis(settings.poll_interval_ms),
        heartbeat_interval: Duration::from_secs(settings.heartbeat_interval_secs.max(1)),
        shutdown_deadline: Duration::from_secs(settings.shutdown_deadline_secs),
        backoff: Backoff {
            base: Duration::from_millis(settings.retry_base_ms),
            max: Duration::from_secs(settings.retry_max_secs),
            ..Backoff::default()
        },
        ..WorkerConfig::default()
    }
}

pub fn maintenance_config(config: &Config) -> MaintenanceConfig {
    let settings = &config.jobs;
    let interval = Duration::from_millis(settings.maintenance_interval_ms.max(10));
    MaintenanceConfig {
        sample_every: Duration::from_secs(config.metrics.sample_interval_secs.max(1)),
        interval,
        // Three renewals: a dead leader is replaced once it missed two (about 3 s by default).
        lease: interval * 3,
        stale_after: Duration::from_secs(settings.stale_after_secs),
        keep_completed: Duration::from_secs(settings.keep_completed_hours * 3600),
        keep_failed: Duration::from_secs(settings.keep_failed_days * 24 * 3600),
        queue: settings.queue(),
        ..MaintenanceConfig::default()
    }
}

pub fn pipeline_settings(settings: &WorkerSettings) -> crate::pipeline::PipelineSettings {
    crate::pipeline::PipelineSettings {
        max_errors_per_sync: settings.max_errors_per_sync,
    }
}
