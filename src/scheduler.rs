//! The scheduler process: turns integration schedules into trigger jobs. Integration schedules
//! arrive with a later issue; until then the role only takes part in the queue engine's
//! maintenance (started for it by `app`), and says so.

use tokio_util::sync::CancellationToken;

pub async fn run(shutdown: CancellationToken) {
    tracing::info!("scheduler: no integration schedules are implemented yet; idle");
    shutdown.cancelled().await;
    tracing::info!("scheduler stopped");
}
