//! The worker process: runs queued jobs. The queue engine (`jobs/`) and the job handlers arrive
//! with later issues; until then it says, honestly and periodically, that it has nothing to do.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{app::idle_until_shutdown, config::WorkerConfig};

pub async fn run(_pool: PgPool, config: WorkerConfig, shutdown: CancellationToken) {
    idle_until_shutdown(
        "worker",
        "no job handlers are registered yet; idle",
        Duration::from_secs(config.idle_log_interval_secs),
        shutdown,
    )
    .await;
}
