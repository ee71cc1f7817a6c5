//! What a job is: its stored kind name, arguments, queue and limits, and how it runs.

use std::{future::Future, time::Duration};

use serde::{Serialize, de::DeserializeOwned};
use sqlx::PgConnection;

/// A job's description. The `KIND` is stored with every row and must never change once released,
/// because enqueued payloads outlive deployments.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stored name that routes a row to its handler.
    const KIND: &'static str;
    /// The queue the job runs on; each queue has its own concurrency limit.
    const QUEUE: &'static str = "default";
    /// Lower runs first among available jobs of a queue.
    const PRIORITY: i16 = 0;
    /// Attempts before the job is dead (`failed`).
    const MAX_ATTEMPTS: i32 = 20;
    /// An attempt running longer fails.
    const TIMEOUT: Duration = Duration::from_secs(300);

    /// While a job with this key is live (not finished), enqueueing another returns the live one.
    fn unique_key(&self) -> Option<String> {
        None
    }

    /// A free-form tag usable in admin filters (the application stores tenant and integration).
    fn tag(&self) -> Option<String> {
        None
    }

    /// Overrides the engine's exponential backoff for every retry of this job.
    fn retry_delay(&self) -> Option<Duration> {
        None
    }
}

/// The attempt being run, as the handler sees it.
#[derive(Debug, Clone)]
pub struct JobMeta {
    pub id: i64,
    pub kind: String,
    pub queue: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub tag: Option<String>,
}

/// Why an attempt failed; the message is stored in the job's error history.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth retrying (network, database, a peer's 5xx). Optional delay overrides the backoff.
    #[error("{message}")]
    Retry {
        message: String,
        after: Option<Duration>,
    },
    /// Retrying cannot help (bad arguments, a peer's 4xx): the job is dead at once.
    #[error("{0}")]
    Permanent(String),
}

impl JobError {
    pub fn retry(message: impl std::fmt::Display) -> Self {
        Self::Retry {
            message: message.to_string(),
            after: None,
        }
    }

    pub fn permanent(message: impl std::fmt::Display) -> Self {
        Self::Permanent(message.to_string())
    }
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        Self::retry(format!("database: {e}"))
    }
}

impl From<anyhow::Error> for JobError {
    fn from(e: anyhow::Error) -> Self {
        Self::retry(format!("{e:#}"))
    }
}

/// A job with effects outside the database (HTTP): completed after the handler returns, so it may
/// run again if the process dies between its effect and its completion.
pub trait PlainJob<C>: Job {
    fn run(&self, ctx: &C, meta: &JobMeta) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// A job whose effects are only in the database: the handler writes through `tx`, and the job's
/// completion commits in that same transaction, so its effect happens exactly once even if the
/// process dies at any point.
pub trait TransactionalJob<C>: Job {
    fn run(
        &self,
        ctx: &C,
        meta: &JobMeta,
        tx: &mut PgConnection,
    ) -> impl Future<Output = Result<(), JobError>> + Send;
}
