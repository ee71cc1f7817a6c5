//! SQL of `integration_field_mappings`: an integration's overrides of its source's preset.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{DataType, SourceType},
    mapping::{self, MappingProblem, MappingSet},
};

/// One stored mapping of a target field.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct StoredMapping {
    pub data_type: DataType,
    /// The column it fills, or `properties.<name>`.
    pub target: String,
    /// The mapping (the README's mapping language); `{}` when the target is turned off.
    #[schema(value_type = Object)]
    pub mapping: Value,
    /// `false`: the preset's mapping of the target is turned off.
    pub enabled: bool,
}

/// The integration's stored mappings of `data_type`, in their order.
pub async fn of_data_type(
    conn: &mut PgConnection,
    integration_id: Uuid,
    data_type: DataType,
) -> Result<Vec<StoredMapping>, sqlx::Error> {
    sqlx::query_as!(
        StoredMapping,
        r#"SELECT data_type AS "data_type: DataType", target_field AS target, mapping, enabled
           FROM integration_field_mappings
           WHERE integration_id = $1 AND data_type = $2 ORDER BY position, target_field"#,
        integration_id,
        data_type.as_str()
    )
    .fetch_all(conn)
    .await
}

/// Every stored mapping of the integration, by data type and order.
pub async fn of_integration(
    conn: &mut PgConnection,
    integration_id: Uuid,
) -> Result<Vec<StoredMapping>, sqlx::Error> {
    sqlx::query_as!(
        StoredMapping,
        r#"SELECT data_type AS "data_type: DataType", target_field AS target, mapping, enabled
           FROM integration_field_mappings
           WHERE integration_id = $1 ORDER BY data_type, position, target_field"#,
        integration_id
    )
    .fetch_all(conn)
    .await
}

/// Stores (or replaces) the mapping of one target.
pub async fn upsert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    integration_id: Uuid,
    data_type: DataType,
    target: &str,
    mapping: &Value,
    enabled: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO integration_field_mappings
             (tenant_id, integration_id, data_type, target_field, mapping, enabled)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (integration_id, data_type, target_field)
         DO UPDATE SET mapping = EXCLUDED.mapping, enabled = EXCLUDED.enabled",
        tenant_id,
        integration_id,
        data_type.as_str(),
        target,
        mapping,
        enabled
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes the mapping of one target; false when there was none.
pub async fn delete(
    conn: &mut PgConnection,
    integration_id: Uuid,
    data_type: DataType,
    target: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM integration_field_mappings
         WHERE integration_id = $1 AND data_type = $2 AND target_field = $3",
        integration_id,
        data_type.as_str(),
        target
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The integration's effective mappings of `data_type`: its source's preset with its stored
/// overrides, compiled (or the problems of the stored ones).
pub async fn effective(
    conn: &mut PgConnection,
    integration_id: Uuid,
    source: SourceType,
    data_type: DataType,
) -> Result<Result<MappingSet, Vec<MappingProblem>>, sqlx::Error> {
    let stored: Vec<(String, Value, bool)> = of_data_type(conn, integration_id, data_type)
        .await?
        .into_iter()
        .map(|m| (m.target, m.mapping, m.enabled))
        .collect();
    Ok(mapping::compile(source, data_type, &stored))
}
