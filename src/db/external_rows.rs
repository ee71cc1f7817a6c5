//! SQL of the external tables (`external_contacts`, `external_tickets`, `external_deals`) outside
//! the pipeline's bulk upsert: their names per data type, and the full-sync sweep.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::DataType;

/// The external table a data type lands in.
pub fn table(data_type: DataType) -> &'static str {
    match data_type {
        DataType::Contacts => "external_contacts",
        DataType::Tickets => "external_tickets",
        DataType::Deals => "external_deals",
    }
}

/// Soft-deletes the integration's rows of `data_type` that no delivery wrote or saw since `since`
/// (rows a sync wrote or saw carry a later `last_synced_at`): the sweep after a full sync.
/// Returns the rows soft-deleted.
pub async fn sweep_unseen(
    conn: &mut PgConnection,
    data_type: DataType,
    integration_id: Uuid,
    since: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    // The table name comes from the closed list above, never from input.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {} SET deleted_at = now()
         WHERE integration_id = $1 AND deleted_at IS NULL AND last_synced_at < $2",
        table(data_type)
    )))
    .bind(integration_id)
    .bind(since)
    .execute(conn)
    .await
    .map(|done| done.rows_affected())
}
