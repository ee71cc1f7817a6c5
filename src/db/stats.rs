//! SQL of the platform's dashboard numbers for one tenant. Each function runs in the caller's
//! tenant transaction and names the tenant too, so the planner uses the tenant-leading indexes
//! (`tenants_stats` in the tests checks the plans).

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

pub struct IntegrationCounts {
    pub total: i64,
    pub active: i64,
    pub paused: i64,
    pub failing: i64,
}

pub async fn integrations(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<IntegrationCounts, sqlx::Error> {
    sqlx::query_as!(
        IntegrationCounts,
        r#"SELECT count(*) AS "total!",
                  count(*) FILTER (WHERE status = 'active') AS "active!",
                  count(*) FILTER (WHERE status = 'paused') AS "paused!",
                  count(*) FILTER (WHERE status = 'error') AS "failing!"
           FROM integration_sources WHERE tenant_id = $1"#,
        tenant_id
    )
    .fetch_one(conn)
    .await
}

pub struct RecordCounts {
    pub contacts: i64,
    pub tickets: i64,
    pub deals: i64,
}

/// Live (not soft-deleted) records per type.
pub async fn records(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<RecordCounts, sqlx::Error> {
    sqlx::query_as!(
        RecordCounts,
        r#"SELECT (SELECT count(*) FROM external_contacts
                   WHERE tenant_id = $1 AND deleted_at IS NULL) AS "contacts!",
                  (SELECT count(*) FROM external_tickets
                   WHERE tenant_id = $1 AND deleted_at IS NULL) AS "tickets!",
                  (SELECT count(*) FROM external_deals
                   WHERE tenant_id = $1 AND deleted_at IS NULL) AS "deals!""#,
        tenant_id
    )
    .fetch_one(conn)
    .await
}

/// Syncs created on one UTC day, by outcome.
pub struct SyncDay {
    pub day: NaiveDate,
    pub syncs: i64,
    pub succeeded: i64,
    pub partial: i64,
    pub failed: i64,
    pub open: i64,
}

/// Per UTC day since `since`: the syncs created, by status (an index range scan of
/// `(tenant_id, created_at, id)`).
pub async fn syncs_per_day(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    since: DateTime<Utc>,
) -> Result<Vec<SyncDay>, sqlx::Error> {
    sqlx::query_as!(
        SyncDay,
        r#"SELECT (created_at AT TIME ZONE 'UTC')::date AS "day!",
                  count(*) AS "syncs!",
                  count(*) FILTER (WHERE status = 'success') AS "succeeded!",
                  count(*) FILTER (WHERE status = 'partial') AS "partial!",
                  count(*) FILTER (WHERE status = 'failed') AS "failed!",
                  count(*) FILTER (WHERE status IN ('pending', 'running')) AS "open!"
           FROM integration_sync_logs
           WHERE tenant_id = $1 AND created_at >= $2
           GROUP BY 1 ORDER BY 1"#,
        tenant_id,
        since
    )
    .fetch_all(conn)
    .await
}

/// Records and bytes delivered on one UTC day.
pub struct ReceivedDay {
    pub day: NaiveDate,
    pub records: i64,
    pub bytes: i64,
}

/// Per UTC day since `since`: the records and bytes delivered (replays excluded: nothing was
/// received), an index-only range scan of `(tenant_id, received_at) INCLUDE (record_count,
/// body_bytes)`.
pub async fn received_per_day(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    since: DateTime<Utc>,
) -> Result<Vec<ReceivedDay>, sqlx::Error> {
    sqlx::query_as!(
        ReceivedDay,
        r#"SELECT (received_at AT TIME ZONE 'UTC')::date AS "day!",
                  sum(record_count)::bigint AS "records!",
                  COALESCE(sum(body_bytes), 0)::bigint AS "bytes!"
           FROM ingest_batches
           WHERE tenant_id = $1 AND received_at >= $2 AND body_bytes IS NOT NULL
           GROUP BY 1 ORDER BY 1"#,
        tenant_id,
        since
    )
    .fetch_all(conn)
    .await
}

/// The syncs created in the last day, and in the last week by how they ended.
pub struct RecentSyncs {
    pub created_last_day: i64,
    pub failed_last_week: i64,
    pub closed_last_week: i64,
    pub succeeded_last_week: i64,
}

/// [`RecentSyncs`] in one index range scan of the week (`day_ago` is within it).
pub async fn recent_syncs(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    day_ago: DateTime<Utc>,
    week_ago: DateTime<Utc>,
) -> Result<RecentSyncs, sqlx::Error> {
    sqlx::query_as!(
        RecentSyncs,
        r#"SELECT count(*) FILTER (WHERE created_at >= $2) AS "created_last_day!",
                  count(*) FILTER (WHERE status = 'failed') AS "failed_last_week!",
                  count(*) FILTER (WHERE status IN ('success', 'partial', 'failed'))
                      AS "closed_last_week!",
                  count(*) FILTER (WHERE status = 'success') AS "succeeded_last_week!"
           FROM integration_sync_logs
           WHERE tenant_id = $1 AND created_at >= $3"#,
        tenant_id,
        day_ago,
        week_ago
    )
    .fetch_one(conn)
    .await
}
