//! Console sessions: inserted at sign-in, found by the SHA-256 of the cookie's secret (with the
//! token they came from still unrevoked, or the admin token they came from unchanged), pointed at another tenant by an operator, deleted at
//! sign-out or expiry.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A live session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: Uuid,
    pub install: bool,
    pub tenant_id: Option<Uuid>,
    pub read_only: bool,
    pub csrf_token: String,
}

pub struct NewSession<'a> {
    pub secret_hash: &'a [u8],
    pub install: bool,
    pub tenant_id: Option<Uuid>,
    pub token_id: Option<Uuid>,
    pub read_only: bool,
    pub csrf_token: &'a str,
    pub expires_at: DateTime<Utc>,
    /// An operator's: what binds the session to the admin token it signed in with.
    pub admin_binding: Option<&'a [u8]>,
}

pub async fn insert(conn: &mut PgConnection, new: &NewSession<'_>) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO console_sessions
             (secret_hash, install, tenant_id, token_id, read_only, csrf_token, expires_at,
              admin_binding)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        new.secret_hash,
        new.install,
        new.tenant_id,
        new.token_id,
        new.read_only,
        new.csrf_token,
        new.expires_at,
        new.admin_binding
    )
    .fetch_one(conn)
    .await
}

/// The unexpired session with this secret hash whose token (if it came from one) is not revoked,
/// and, if it is an operator's, whose binding is `admin_binding` (the one the admin token of now
/// makes; `None` when none is configured, which no operator session matches).
pub async fn find(
    conn: &mut PgConnection,
    secret_hash: &[u8],
    admin_binding: Option<&[u8]>,
) -> Result<Option<Session>, sqlx::Error> {
    sqlx::query_as!(
        Session,
        r#"SELECT s.id, s.install, s.tenant_id, s.read_only, s.csrf_token
           FROM console_sessions s
           LEFT JOIN tenant_api_tokens t ON t.id = s.token_id
           WHERE s.secret_hash = $1 AND s.expires_at > now()
             AND (s.token_id IS NULL OR t.revoked_at IS NULL)
             AND (NOT s.install OR s.admin_binding = $2)"#,
        secret_hash,
        admin_binding
    )
    .fetch_optional(conn)
    .await
}

/// Points an operator's session at another tenant.
pub async fn choose_tenant(
    conn: &mut PgConnection,
    id: Uuid,
    tenant_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE console_sessions SET tenant_id = $2 WHERE id = $1 AND install",
        id,
        tenant_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM console_sessions WHERE id = $1", id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes expired sessions; how many.
pub async fn delete_expired(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!("DELETE FROM console_sessions WHERE expires_at <= now()")
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
