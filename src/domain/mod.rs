//! The domain: pure types and rules of syncbridge, with no HTTP and no database in them.

pub mod api_key;
pub mod domain_name;
pub mod kinds;
pub mod schedule;
pub mod sweep;

pub use kinds::{
    BatchState, DataType, FailureReason, IntegrationStatus, MatchMethod, MissedTicks, OnRunning,
    SourceType, SweepState, SyncMode, SyncStatus, SyncTrigger, TickOutcome,
};
