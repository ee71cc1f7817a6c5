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

/// An account as the platform API shows it, with how many live records it matched.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub id: Uuid,
    pub name: String,
    pub domains: Vec<String>,
    pub contacts: i64,
    pub tickets: i64,
    pub deals: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The accounts the transaction sees (its tenant's) by name, or the one `only` names, with
/// their matched live records (each count an index scan of `(tenant_id, account_id)`).
pub async fn views(
    conn: &mut PgConnection,
    only: Option<Uuid>,
) -> Result<Vec<AccountView>, sqlx::Error> {
    sqlx::query_as!(
        AccountView,
        r#"SELECT a.id, a.name, a.domains,
                  (SELECT count(*) FROM external_contacts r WHERE r.tenant_id = a.tenant_id
                     AND r.account_id = a.id AND r.deleted_at IS NULL) AS "contacts!",
                  (SELECT count(*) FROM external_tickets r WHERE r.tenant_id = a.tenant_id
                     AND r.account_id = a.id AND r.deleted_at IS NULL) AS "tickets!",
                  (SELECT count(*) FROM external_deals r WHERE r.tenant_id = a.tenant_id
                     AND r.account_id = a.id AND r.deleted_at IS NULL) AS "deals!",
                  a.created_at, a.updated_at
           FROM accounts a
           WHERE $1::uuid IS NULL OR a.id = $1
           ORDER BY lower(a.name), a.id"#,
        only
    )
    .fetch_all(conn)
    .await
}

/// Sets the account's name and domains; false when the transaction sees no such account.
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    name: &str,
    domains: &[String],
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE accounts SET name = $2, domains = $3 WHERE id = $1",
        id,
        name,
        domains
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes the account (its matched rows are unmatched by a trigger, reason `account_deleted`);
/// false when the transaction sees no such account.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!("DELETE FROM accounts WHERE id = $1", id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Other accounts of the transaction's tenant that claim one of `domains` or the name `name`
/// (case-insensitive): matching then picks neither for those records.
pub struct Claim {
    pub account_id: Uuid,
    pub account_name: String,
    pub domains: Vec<String>,
    pub same_name: bool,
}

pub async fn claims(
    conn: &mut PgConnection,
    except: Option<Uuid>,
    name: &str,
    domains: &[String],
) -> Result<Vec<Claim>, sqlx::Error> {
    sqlx::query_as!(
        Claim,
        r#"SELECT id AS account_id, name AS account_name,
                  ARRAY(SELECT unnest(domains) INTERSECT SELECT unnest($3::text[])) AS "domains!",
                  lower(name) = lower($2) AS "same_name!"
           FROM accounts
           WHERE ($1::uuid IS NULL OR id <> $1)
             AND (domains && $3 OR lower(name) = lower($2))
           ORDER BY lower(name), id"#,
        except,
        name,
        domains
    )
    .fetch_all(conn)
    .await
}
