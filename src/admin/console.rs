//! Console sign-in: a browser presents the admin token or a tenant API token once and gets a
//! session (a random secret for its cookie; only the hash is stored) with its CSRF token. An
//! operator's session acts for the tenant it chooses; a tenant token's for that tenant, read-only
//! when the token is, and only while the token is not revoked; an operator's only while the admin
//! token is the one it signed in with.

use anyhow::Result;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

pub use crate::db::console_sessions::Session;
use crate::{
    admin::tokens::{self, TokenRefusal},
    db::{self, console_sessions::NewSession, system_tx},
    domain::api_key,
};

/// How long a session lasts.
pub const SESSION_HOURS: i64 = 12;

/// A session just made: `secret` goes into the cookie, never anywhere else.
pub struct SignedIn {
    pub secret: String,
    pub session: Session,
}

/// Why a sign-in was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignInRefusal {
    #[error("that is neither the admin token nor a tenant API token")]
    Unknown,
    #[error("that token was revoked")]
    Revoked,
}

/// Signs in with `presented`: the admin token (when one is configured) or a tenant token.
pub async fn sign_in(
    pool: &PgPool,
    admin_token: Option<&SecretString>,
    presented: &str,
) -> Result<std::result::Result<SignedIn, SignInRefusal>> {
    let presented = presented.trim();
    let install = admin_token.is_some_and(|admin| {
        !presented.is_empty()
            && bool::from(presented.as_bytes().ct_eq(admin.expose_secret().as_bytes()))
    });
    let (tenant_id, token_id, read_only) = if install {
        (None, None, false)
    } else {
        match tokens::authenticate(pool, presented).await? {
            Ok(principal) => (
                Some(principal.tenant_id),
                Some(principal.token_id),
                principal.read_only,
            ),
            Err(TokenRefusal::Revoked) => return Ok(Err(SignInRefusal::Revoked)),
            Err(_) => return Ok(Err(SignInRefusal::Unknown)),
        }
    };
    let secret = api_key::random_secret(43);
    let csrf_token = api_key::random_secret(32);
    let binding = install
        .then(|| admin_token.map(|admin| admin_binding(&secret, admin)))
        .flatten();
    let new = NewSession {
        secret_hash: &api_key::hash_key(&secret),
        install,
        tenant_id,
        token_id,
        read_only,
        csrf_token: &csrf_token,
        expires_at: Utc::now() + chrono::Duration::hours(SESSION_HOURS),
        admin_binding: binding.as_ref().map(|b| &b[..]),
    };
    let mut tx = system_tx(pool).await?;
    let id = db::console_sessions::insert(&mut tx, &new).await?;
    db::console_sessions::delete_expired(&mut tx).await?;
    tx.commit().await?;
    Ok(Ok(SignedIn {
        secret,
        session: Session {
            id,
            install,
            tenant_id,
            read_only,
            csrf_token,
        },
    }))
}

/// What ties an operator's session to the admin token: SHA-256 of the session's secret and the
/// token, so the stored value reveals neither.
fn admin_binding(secret: &str, admin_token: &SecretString) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(secret.as_bytes());
    hasher.update([0]);
    hasher.update(admin_token.expose_secret().as_bytes());
    hasher.finalize().into()
}

/// The live session of a cookie's secret; an operator's only while `admin_token` (the one
/// configured now) is the one it signed in with.
pub async fn session(
    pool: &PgPool,
    admin_token: Option<&SecretString>,
    secret: &str,
) -> Result<Option<Session>> {
    let binding = admin_token.map(|admin| admin_binding(secret, admin));
    let mut tx = system_tx(pool).await?;
    let found = db::console_sessions::find(
        &mut tx,
        &api_key::hash_key(secret),
        binding.as_ref().map(|b| &b[..]),
    )
    .await?;
    tx.commit().await?;
    Ok(found)
}

/// Points an operator's session at `tenant_id` (which must exist).
pub async fn choose_tenant(pool: &PgPool, session: &Session, tenant_id: Uuid) -> Result<bool> {
    if !session.install || !super::tenant_exists(pool, tenant_id).await? {
        return Ok(false);
    }
    let mut tx = system_tx(pool).await?;
    db::console_sessions::choose_tenant(&mut tx, session.id, tenant_id).await?;
    tx.commit().await?;
    Ok(true)
}

pub async fn sign_out(pool: &PgPool, session: &Session) -> Result<()> {
    let mut tx = system_tx(pool).await?;
    db::console_sessions::delete(&mut tx, session.id).await?;
    tx.commit().await?;
    Ok(())
}
