//! SQL of `tenants`: the customers of the platform, their own and excluded domains.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

pub async fn insert(conn: &mut PgConnection, name: &str) -> Result<Tenant, sqlx::Error> {
    sqlx::query_as!(
        Tenant,
        "INSERT INTO tenants (name) VALUES ($1) RETURNING id, name, created_at",
        name
    )
    .fetch_one(conn)
    .await
}

/// Every tenant, by name (system work).
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Tenant>, sqlx::Error> {
    sqlx::query_as!(
        Tenant,
        "SELECT id, name, created_at FROM tenants ORDER BY name"
    )
    .fetch_all(conn)
    .await
}

pub async fn by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<Tenant>, sqlx::Error> {
    sqlx::query_as!(
        Tenant,
        "SELECT id, name, created_at FROM tenants WHERE id = $1",
        id
    )
    .fetch_optional(conn)
    .await
}

/// The tenant named `name`, ignoring case.
pub async fn by_name(conn: &mut PgConnection, name: &str) -> Result<Option<Tenant>, sqlx::Error> {
    sqlx::query_as!(
        Tenant,
        "SELECT id, name, created_at FROM tenants WHERE lower(name) = lower($1)",
        name
    )
    .fetch_optional(conn)
    .await
}

/// The domains a record is never matched by: the tenant's own and its excluded ones.
pub async fn never_matched_domains(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT unnest(own_domains || excluded_domains) AS "domain!" FROM tenants WHERE id = $1"#,
        tenant_id
    )
    .fetch_all(conn)
    .await
}
