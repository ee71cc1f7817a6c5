//! `/api/v1/accounts…`: the tenant's customer accounts (what records are matched to): listed
//! with their matched records, added, renamed or re-domained (with warnings when another account
//! claims the same domain or name), deleted (their records unmatched).

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{PathIds, TenantScope};
use crate::{
    admin::tenant_api::{self, AccountError, AccountView, WrittenAccount},
    http::{
        AppState,
        error::{ApiError, ErrorBody, ErrorCode},
        extract::ApiJson,
    },
};

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Invalid(field) => field.into(),
            AccountError::NotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::AccountNotFound,
                format!("no account {id}"),
            ),
            AccountError::Other(inner) => ApiError::from(inner),
        }
    }
}

/// The tenant's accounts.
#[derive(Serialize, ToSchema)]
pub struct AccountList {
    pub data: Vec<AccountView>,
}

/// The tenant's accounts by name: domains and the live contacts, tickets and deals each matched.
#[utoipa::path(
    get,
    path = "/api/v1/accounts",
    tag = "accounts",
    params(("Syncbridge-Tenant" = Option<uuid::Uuid>, Header, description = "With the admin token: the tenant to act for")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The accounts", body = AccountList),
        (status = 400, description = "`tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn list(
    scope: TenantScope,
    State(state): State<AppState>,
) -> Result<Json<AccountList>, ApiError> {
    let data = tenant_api::accounts(&state.pool, scope.tenant_id).await?;
    Ok(Json(AccountList { data }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    name: String,
    /// Its domains, in any form (`https://www.Northwind.io/` is stored `northwind.io`).
    #[serde(default)]
    domains: Vec<String>,
}

/// Adds an account; records of its domains (or name) match it from their next sync on.
#[utoipa::path(
    post,
    path = "/api/v1/accounts",
    tag = "accounts",
    params(("Syncbridge-Tenant" = Option<uuid::Uuid>, Header, description = "With the admin token: the tenant to act for")),
    request_body = NewAccount,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The account, and `warnings` when another account claims one of its domains or its name", body = WrittenAccount),
        (status = 400, description = "`tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_field` (`details.field` names the field, e.g. `domains[1]`), `invalid_body`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn create(
    scope: TenantScope,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewAccount>,
) -> Result<(StatusCode, Json<WrittenAccount>), ApiError> {
    let written =
        tenant_api::create_account(&state.pool, scope.tenant_id, &body.name, &body.domains).await?;
    Ok((StatusCode::CREATED, Json(written)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountChange {
    name: Option<String>,
    /// Replaces the domains.
    domains: Option<Vec<String>>,
}

/// Renames an account or replaces its domains; stored records keep their match until their next
/// sync matches them afresh.
#[utoipa::path(
    patch,
    path = "/api/v1/accounts/{account_id}",
    tag = "accounts",
    params(
        ("account_id" = uuid::Uuid, Path, description = "The account"),
        ("Syncbridge-Tenant" = Option<uuid::Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    request_body = AccountChange,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account as it now is, with `warnings`", body = WrittenAccount),
        (status = 400, description = "`invalid_path`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 404, description = "`account_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_field` (`details.field`), `invalid_body`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn update(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<AccountChange>,
) -> Result<Json<WrittenAccount>, ApiError> {
    let written = tenant_api::update_account(
        &state.pool,
        scope.tenant_id,
        ids.get("account_id"),
        body.name.as_deref(),
        body.domains.as_deref(),
    )
    .await?;
    Ok(Json(written))
}

/// Deletes an account: the records it matched are unmatched at once (`match_reason:
/// account_deleted`) and match afresh on their next sync. Answers it as it was.
#[utoipa::path(
    delete,
    path = "/api/v1/accounts/{account_id}",
    tag = "accounts",
    params(
        ("account_id" = uuid::Uuid, Path, description = "The account"),
        ("Syncbridge-Tenant" = Option<uuid::Uuid>, Header, description = "With the admin token: the tenant to act for"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account as it was, with the records it had matched", body = AccountView),
        (status = 400, description = "`invalid_path`, `tenant_required`, `invalid_tenant_id`", body = ErrorBody),
        (status = 403, description = "`read_only_token`", body = ErrorBody),
        (status = 404, description = "`account_not_found`, `tenant_not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn delete(
    scope: TenantScope,
    ids: PathIds,
    State(state): State<AppState>,
) -> Result<Json<AccountView>, ApiError> {
    let deleted =
        tenant_api::delete_account(&state.pool, scope.tenant_id, ids.get("account_id")).await?;
    Ok(Json(deleted))
}
