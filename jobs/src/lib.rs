//! A durable PostgreSQL job queue: jobs, queues, workers, retries with durable backoff, crash
//! recovery, leader-run maintenance and exactly-once periodic jobs.
//!
//! The engine is generic: it knows jobs, queues and workers, never integrations, and never
//! imports the application. The application implements [`PlainJob`] or [`TransactionalJob`] for
//! its jobs, registers them in a [`Registry`] and runs a [`Worker`] and a [`Maintenance`] per
//! process. All of the engine's SQL lives in this crate. See `README.md` for the state diagram.

pub mod admin;
mod backoff;
mod enqueue;
mod job;
mod maintenance;
pub mod metrics;
mod queue;
mod registry;
#[cfg(feature = "testing")]
pub mod testing;
mod worker;

pub use admin::{BulkAction, JobFilter, JobState, JobSummary, QueueStats};
pub use backoff::Backoff;
pub use enqueue::{Enqueued, NewJob};
pub use job::{Job, JobError, JobMeta, PlainJob, TransactionalJob};
// One duty of the leader at a time (`enqueue_due_tick`, `rescue_stale`, `prune`), for tools and tests.
pub use maintenance::{
    Maintenance, MaintenanceConfig, MissedTicks, Periodic, UnknownMissedTicks, enqueue_due_tick,
    prune, rescue_stale,
};
pub use queue::{DEFAULT_CHANNEL, DEFAULT_SCHEMA, MIGRATIONS_TABLE, Queue};
pub use registry::Registry;
pub use worker::{Worker, WorkerConfig};

use sqlx::migrate::Migrator;

/// The engine's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("job arguments do not serialise: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("the unique key `{0}` is contended by concurrent enqueues; try again")]
    UniqueContention(String),
    #[error("invalid schedule {0}")]
    Schedule(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The engine's migrations, recorded in [`MIGRATIONS_TABLE`]; [`Queue::migrate`] applies them
/// in the queue's schema.
pub fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}
