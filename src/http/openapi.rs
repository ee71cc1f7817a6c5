//! The OpenAPI 3.1 document of the HTTP API (`GET /api/openapi.json`), generated from the
//! handlers' `#[utoipa::path]` annotations and the types they answer with, so it cannot describe
//! a body the code does not send. `tests/api/openapi.rs` checks that every route the router
//! serves is in it, with the methods the router takes.

use std::sync::OnceLock;

use axum::{Json, http::header, response::IntoResponse};
use serde_json::Value;
use utoipa::{
    Modify, OpenApi,
    openapi::{
        ContentBuilder, Ref, RefOr, ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use super::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "syncbridge",
        description = "Brings customer data from external systems, delivered by n8n, into the \
                       customer-success platform. Every refusal is an `Error` with a \
                       machine-readable `code`; the codes an operation can answer are listed \
                       with its responses.",
    ),
    paths(
        openapi_json,
        super::health::healthz,
        super::health::readyz,
        super::metrics::scrape,
        super::webhooks::receive,
        super::webhooks::batch_status,
        super::admin::jobs::list,
        super::admin::jobs::stats,
        super::admin::jobs::retry,
        super::admin::jobs::cancel,
        super::admin::integrations::get,
        super::admin::integrations::update,
        super::admin::integrations::sync,
        super::admin::mappings::list,
        super::admin::mappings::set,
        super::admin::mappings::preview,
        api::accounts::list,
        api::accounts::create,
        api::accounts::update,
        api::accounts::delete,
        api::integrations::list,
        api::integrations::get,
        api::integrations::create,
        api::integrations::update,
        api::integrations::delete,
        api::integrations::pause,
        api::integrations::resume,
        api::integrations::start_sync,
        api::mappings::overrides,
        api::mappings::effective,
        api::mappings::preview,
        api::mappings::set,
        api::mappings::delete,
        api::integrations::list_keys,
        api::integrations::create_key,
        api::integrations::revoke_key,
        api::records::list,
        api::records::get,
        api::stats::get,
        api::syncs::list,
        api::syncs::get,
        api::syncs::errors,
        api::syncs::close,
        api::syncs::reprocess,
        api::tokens::list,
        api::tokens::create,
        api::tokens::revoke,
    ),
    // Types used only as parameters are not collected from the handlers.
    components(schemas(crate::domain::DataType)),
    modifiers(&BearerAuth, &TenantAuthRefusals),
    tags(
        (name = "accounts", description = "A tenant's customer accounts, which records are matched to"),
        (name = "integrations", description = "A tenant's integrations and their API keys"),
        (name = "records", description = "A tenant's contacts, tickets and deals"),
        (name = "stats", description = "A tenant's dashboard numbers"),
        (name = "syncs", description = "A tenant's sync history, each sync's counts, batches and errors"),
        (name = "tokens", description = "A tenant's API tokens"),
        (name = "webhooks", description = "Deliveries from n8n, with an integration's API key"),
        (name = "admin", description = "Install-wide operations, with the admin token"),
        (name = "health", description = "Liveness and readiness"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// The `bearer` security scheme: a tenant API token, a platform JWT, the admin token or an
/// integration key, as each operation says.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "`/api/v1`: a tenant API token (`sbt_…`), a platform JWT (when `[jwt]` is \
                 configured) or the admin token with a `Syncbridge-Tenant` header; \
                 `/api/admin`: the admin token; the webhook: an integration's API key; \
                 `/metrics`: SYNCBRIDGE_METRICS_TOKEN",
            ))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The authentication refusals every `/api/v1` operation shares, written once here instead of
/// on each handler: the 401 codes of tokens and JWTs, and the 503 of an unreachable JWKS.
struct TenantAuthRefusals;

const TENANT_AUTH_401: &str = "`missing_token`, `invalid_token`, `token_revoked`, \
    `jwt_malformed`, `jwt_algorithm_refused`, `jwt_key_unknown`, `jwt_signature_invalid`, \
    `jwt_expired`, `jwt_not_yet_valid`, `jwt_audience_mismatch`, `jwt_issuer_mismatch`, \
    `jwt_claim_missing`, `jwt_tenant_invalid`";

impl Modify for TenantAuthRefusals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = || {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/v1/") {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                responses.insert(
                    "401".into(),
                    RefOr::T(
                        ResponseBuilder::new()
                            .description(TENANT_AUTH_401)
                            .content("application/json", error())
                            .build(),
                    ),
                );
                match responses.get_mut("503") {
                    Some(RefOr::T(unavailable)) => {
                        unavailable.description.push_str(", `jwks_unavailable`");
                    }
                    _ => {
                        responses.insert(
                            "503".into(),
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description("`jwks_unavailable`")
                                    .content("application/json", error())
                                    .build(),
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// The document, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises")
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object))
)]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(document()),
    )
}
