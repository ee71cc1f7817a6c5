//! SQL of `accounts`: the tenant's customer accounts records are matched to.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Account {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub domains: Vec<String>,
}

pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    name: &str,
    domains: &[String],
) -> Result<Account, sqlx::Error> {
    sqlx::query_as!(
        Account,
        "INSERT INTO accounts (tenant_id, name, domains) VALUES ($1, $2, $3)
         RETURNING id, tenant_id, name, domains",
        tenant_id,
        name,
        domains
    )
    .fetch_one(conn)
    .await
}

/// Every account of the transaction's tenant.
pub async fn all(conn: &mut PgConnection) -> Result<Vec<Account>, sqlx::Error> {
    sqlx::query_as!(Account, "SELECT id, tenant_id, name, domains FROM accounts")
        .fetch_all(conn)
        .await
}

/// Holds the tenant's accounts until the transaction ends: deleting one waits for this (see the
/// migration `external_references`), so no row written meanwhile refers to a deleted account.
/// A statement of its own: a statement's snapshot is taken before it could wait for the lock,
/// and the accounts must be read after any deletion it waited for.
pub async fn lock_for_matching(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT FROM lock_tenant_accounts($1, false)", tenant_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// What identifies the state of a tenant's matching data: its accounts' count and newest change,
/// and the tenant's own last change (its own and excluded domains).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchingVersion {
    pub accounts: i64,
    pub accounts_changed: Option<DateTime<Utc>>,
    pub tenant_changed: Option<DateTime<Utc>>,
}

pub async fn matching_version(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<MatchingVersion, sqlx::Error> {
    sqlx::query_as!(
        MatchingVersion,
        r#"SELECT count(*) AS "accounts!", max(updated_at) AS accounts_changed,
                  (SELECT updated_at FROM tenants WHERE id = $1) AS tenant_changed
           FROM accounts"#,
        tenant_id
    )
    .fetch_one(conn)
    .await
}
