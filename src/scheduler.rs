//! The scheduler process: turns integration schedules into trigger jobs. Schedules arrive with a
//! later issue; until then it says, honestly and periodically, that it has nothing to do.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{app::idle_until_shutdown, config::SchedulerConfig};

pub async fn run(_pool: PgPool, config: SchedulerConfig, shutdown: CancellationToken) {
    idle_until_shutdown(
        "scheduler",
        "no schedules are implemented yet; idle",
        Duration::from_secs(config.idle_log_interval_secs),
        shutdown,
    )
    .await;
}
