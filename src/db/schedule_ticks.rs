//! SQL of recorded schedule ticks (`integration_schedule_ticks`) outside the scheduler's own
//! round: retention.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Deletes up to `limit` ticks before `before`, never an integration's newest (the scheduler
/// reads it); returns how many.
pub async fn delete_older_than(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM integration_schedule_ticks WHERE (integration_id, tick_at) IN (
             SELECT t.integration_id, t.tick_at FROM integration_schedule_ticks t
             WHERE t.tick_at < $1
               AND t.tick_at < (SELECT max(n.tick_at) FROM integration_schedule_ticks n
                                WHERE n.integration_id = t.integration_id)
             LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(conn)
    .await?
    .rows_affected())
}
