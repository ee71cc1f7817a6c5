//! The worker process: runs the application's jobs on the queue engine.

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    tasks::{self, JobContext},
};

pub async fn run(pool: PgPool, config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker = jobs::Worker::new(
        pool.clone(),
        JobContext::new(pool, &config)?,
        tasks::registry(&config.worker),
        tasks::worker_config(&config),
    );
    worker.run(shutdown).await?;
    Ok(())
}
