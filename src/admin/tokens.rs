//! Tenant API tokens: created (shown once, only the hash kept), listed, revoked, and checked when
//! presented. The platform's backend calls the API with one on behalf of its tenant; a read-only
//! token may read and change nothing.

use anyhow::Result;
use sqlx::PgPool;
use uuid::Uuid;

pub use crate::db::tenant_tokens::TokenInfo;
use crate::{
    db::{self, system_tx, tenant_tx},
    domain::api_key::{self, NewApiKey, Scheme},
};

/// A token just made: `token.plaintext` is shown once.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    pub info: TokenInfo,
    pub token: NewApiKey,
}

/// Makes a token for `tenant_id`, optionally named and read-only.
pub async fn create(
    pool: &PgPool,
    tenant_id: Uuid,
    name: Option<&str>,
    read_only: bool,
) -> Result<CreatedToken> {
    let token = NewApiKey::generate_for(Scheme::TenantToken);
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let info = db::tenant_tokens::insert(
        &mut tx,
        tenant_id,
        name,
        read_only,
        &token.prefix,
        &token.hash[..],
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedToken { info, token })
}

/// The tenant's tokens, newest first, revoked ones included (with `revoked_at`).
pub async fn list(pool: &PgPool, tenant_id: Uuid) -> Result<Vec<TokenInfo>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let tokens = db::tenant_tokens::list(&mut tx).await?;
    tx.commit().await?;
    Ok(tokens)
}

/// Revokes one of the tenant's tokens: it stops working at once. `None` when the tenant has no
/// such token (another tenant's id included: ids do not leak across tenants).
pub async fn revoke(pool: &PgPool, tenant_id: Uuid, token_id: Uuid) -> Result<Option<TokenInfo>> {
    let mut tx = tenant_tx(pool, tenant_id).await?;
    let revoked = db::tenant_tokens::revoke(&mut tx, token_id).await?;
    tx.commit().await?;
    Ok(revoked)
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPrincipal {
    pub token_id: Uuid,
    pub tenant_id: Uuid,
    pub read_only: bool,
}

/// Why a presented token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("not a syncbridge tenant token (they look like `sbt_<id>_<secret>`)")]
    Malformed,
    #[error("the token is not valid")]
    Unknown,
    #[error("the token was revoked")]
    Revoked,
}

/// Checks a presented token and records its use (at most once a minute).
pub async fn authenticate(
    pool: &PgPool,
    presented: &str,
) -> Result<std::result::Result<TokenPrincipal, TokenRefusal>> {
    let Some(prefix) = api_key::prefix_of_scheme(presented, Scheme::TenantToken) else {
        return Ok(Err(TokenRefusal::Malformed));
    };
    let mut tx = system_tx(pool).await?;
    let Some(found) = db::tenant_tokens::by_prefix(&mut tx, prefix).await? else {
        return Ok(Err(TokenRefusal::Unknown));
    };
    if !api_key::verify(presented, &found.token_hash) {
        return Ok(Err(TokenRefusal::Unknown));
    }
    if found.revoked {
        return Ok(Err(TokenRefusal::Revoked));
    }
    db::tenant_tokens::touch(&mut tx, found.id).await?;
    tx.commit().await?;
    Ok(Ok(TokenPrincipal {
        token_id: found.id,
        tenant_id: found.tenant_id,
        read_only: found.read_only,
    }))
}
