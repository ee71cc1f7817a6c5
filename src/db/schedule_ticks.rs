//! SQL of recorded schedule ticks (`integration_schedule_ticks`): how each tick of a schedule
//! was settled, written once per tick whatever the number of schedulers.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::TickOutcome;

/// The integration's newest settled tick.
pub async fn last_tick(
    conn: &mut PgConnection,
    integration_id: Uuid,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT max(tick_at) FROM integration_schedule_ticks WHERE integration_id = $1",
        integration_id
    )
    .fetch_one(conn)
    .await
}

/// How one tick was settled.
pub struct SettledTick<'a> {
    pub tenant_id: Uuid,
    pub integration_id: Uuid,
    pub tick_at: DateTime<Utc>,
    pub outcome: TickOutcome,
    pub sync_log_id: Option<Uuid>,
    pub job_id: Option<i64>,
    pub detail: Option<&'a str>,
}

/// Records the tick; false when it was recorded before (another scheduler settled it).
pub async fn insert(conn: &mut PgConnection, tick: &SettledTick<'_>) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "INSERT INTO integration_schedule_ticks
             (tenant_id, integration_id, tick_at, outcome, sync_log_id, job_id, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (integration_id, tick_at) DO NOTHING",
        tick.tenant_id,
        tick.integration_id,
        tick.tick_at,
        tick.outcome.as_str(),
        tick.sync_log_id,
        tick.job_id,
        tick.detail
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes up to `limit` ticks before `before`, never an integration's newest (the scheduler
/// reads it); returns how many.
pub async fn delete_older_than(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "DELETE FROM integration_schedule_ticks WHERE (integration_id, tick_at) IN (
             SELECT t.integration_id, t.tick_at FROM integration_schedule_ticks t
             WHERE t.tick_at < $1
               AND t.tick_at < (SELECT max(n.tick_at) FROM integration_schedule_ticks n
                                WHERE n.integration_id = t.integration_id)
             LIMIT $2)",
        before,
        limit
    )
    .execute(conn)
    .await?
    .rows_affected())
}
