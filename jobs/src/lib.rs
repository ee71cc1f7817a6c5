//! A durable PostgreSQL job queue: jobs, queues, workers, retries and crash recovery.
//!
//! The engine is generic: it knows jobs and queues, never integrations, and never imports the
//! application. It is filled in by the queue-engine issue; until then the crate only reserves its
//! place in the workspace so that the application can depend on it from the first day.

/// The name this crate stores in its tables and logs, so operators can tell its rows apart.
pub const ENGINE_NAME: &str = "syncbridge-jobs";
