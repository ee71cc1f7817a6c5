//! Who is delivering: webhook credentials (integration keys, the global key), the integration they
//! reach, its Standard Webhooks signature check, and the per-integration rate limit.
//!
//! Keys are looked up by their public prefix as system work (the tenant is not known yet), then
//! compared by hash in constant time; everything after that runs in the key's tenant.

use std::{num::NonZeroU32, sync::Arc};

use axum::http::{HeaderMap, StatusCode, header};
use chrono::Utc;
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::error::{ApiError, ErrorCode};
use crate::{
    config::IngestConfig,
    crypto::{Sealer, SigningSecrets, signing_secret_context},
    db::{self, system_tx},
    domain::api_key,
};

/// What the webhook endpoints need beyond the pool, built once per process.
pub struct WebhookState {
    pub config: IngestConfig,
    global_key_hash: Option<[u8; 32]>,
    pub sealer: Option<Sealer>,
    limiter: DefaultKeyedRateLimiter<Uuid>,
    /// Permits to handle a body before its caller is known (its key is in it).
    pub unauthenticated_bodies: Arc<tokio::sync::Semaphore>,
}

impl WebhookState {
    pub fn new(
        config: IngestConfig,
        global_key: Option<&SecretString>,
        sealer: Option<Sealer>,
    ) -> Arc<Self> {
        let per_second = NonZeroU32::new(config.rate_limit_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.rate_limit_burst).unwrap_or(NonZeroU32::MIN);
        Arc::new(Self {
            global_key_hash: global_key.map(|k| Sha256::digest(k.expose_secret()).into()),
            sealer,
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            unauthenticated_bodies: Arc::new(tokio::sync::Semaphore::new(
                config.max_unauthenticated_bodies.max(1),
            )),
            config,
        })
    }

    /// Takes one request from the integration's bucket, or says how long to wait.
    pub fn rate_limit(&self, integration_id: Uuid) -> Result<(), ApiError> {
        match self.limiter.check_key(&integration_id) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                crate::telemetry::metrics::delivery_refused("rate_limited", integration_id);
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::RateLimited,
                    format!(
                        "this integration may make {} webhook requests per second (bursts of {}); \
                         retry after the time in Retry-After",
                        self.config.rate_limit_per_second, self.config.rate_limit_burst
                    ),
                )
                .retry_after(wait.as_secs_f64().ceil() as u64))
            }
        }
    }

    fn is_global_key(&self, presented: &str) -> bool {
        self.global_key_hash.is_some_and(|expected| {
            let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
            presented.ct_eq(&expected).into()
        })
    }
}

/// A presented key (from a header or the body).
pub struct Credential {
    pub key: String,
}

/// `Authorization: Bearer <key>` or `X-API-Key: <key>`; `None` when neither header is present.
pub fn header_credential(headers: &HeaderMap) -> Result<Option<Credential>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or_default();
        return match super::bearer_token(value) {
            Some(key) => Ok(Some(Credential {
                key: key.to_string(),
            })),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidAuthorization,
                "the Authorization header must be `Bearer <api key>`",
            )),
        };
    }
    Ok(headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| Credential { key: k.to_string() }))
}

pub fn missing_key() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::MissingApiKey,
        "send the integration's API key as `Authorization: Bearer <key>` (or `X-API-Key`)",
    )
}

fn invalid_key() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidApiKey,
        "the API key is not valid (unknown, revoked or mistyped)",
    )
}

use crate::db::integrations::WebhookTarget;

/// Who the credential speaks for.
pub enum Caller {
    /// An integration key: this integration only.
    Integration(WebhookTarget),
    /// The global key: any integration named in the request.
    Global,
}

pub async fn authenticate(
    pool: &PgPool,
    state: &WebhookState,
    credential: &Credential,
) -> Result<Caller, ApiError> {
    if state.is_global_key(&credential.key) {
        return Ok(Caller::Global);
    }
    let Some(prefix) = api_key::prefix_of(&credential.key) else {
        return Err(invalid_key());
    };
    let mut tx = system_tx(pool).await?;
    let Some(found) = db::api_keys::by_prefix(&mut tx, prefix).await? else {
        return Err(invalid_key());
    };
    if found.revoked || !api_key::verify(&credential.key, &found.key_hash) {
        return Err(invalid_key());
    }
    db::api_keys::touch(&mut tx, found.key_id).await?;
    tx.commit().await?;
    Ok(Caller::Integration(found.integration))
}

/// The integration `requested` as the caller may reach it: 404 when it does not exist, 403 when
/// the key belongs to another integration.
pub async fn resolve_integration(
    pool: &PgPool,
    caller: Caller,
    requested: Uuid,
) -> Result<WebhookTarget, ApiError> {
    match caller {
        Caller::Integration(row) if row.id == requested => Ok(row),
        Caller::Integration(row) => Err(forbidden(row.id, requested)),
        Caller::Global => {
            let mut tx = system_tx(pool).await?;
            let found = db::integrations::webhook_target(&mut tx, requested).await?;
            tx.commit().await?;
            found.ok_or_else(|| integration_not_found(requested))
        }
    }
}

/// 403: the key belongs to `own`, the request names `requested`.
pub fn forbidden(own: Uuid, requested: Uuid) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::IntegrationForbidden,
        format!("this API key belongs to integration {own}, not to {requested}"),
    )
}

pub fn integration_not_found(id: Uuid) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::IntegrationNotFound,
        format!("integration {id} does not exist"),
    )
}

/// Checks the Standard Webhooks signature when the integration has a signing secret. `body` is
/// the payload exactly as received (after transport decompression), never a re-serialisation.
pub fn verify_signature(
    state: &WebhookState,
    integration: &WebhookTarget,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let (Some(sealed), Some(key_id)) = (
        &integration.signing_secret_encrypted,
        &integration.signing_secret_key_id,
    ) else {
        return Ok(());
    };
    let Some(sealer) = &state.sealer else {
        return Err(ApiError::internal(
            "an integration has a signing secret but SYNCBRIDGE_ENCRYPTION_KEY is not set",
        ));
    };
    let secrets = sealer
        .open(key_id, sealed, &signing_secret_context(integration.id))
        .and_then(|plain| SigningSecrets::from_bytes(&plain))
        .map_err(ApiError::internal)?;
    let mut last = None;
    for secret in secrets.accepted_at(Utc::now()) {
        let webhook = standardwebhooks::Webhook::new(secret).map_err(ApiError::internal)?;
        match webhook.verify(body, headers) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    use standardwebhooks::WebhookError as E;
    let (code, message) = match last {
        Some(E::MissingHeader(_)) | Some(E::InvalidHeader(_)) => (
            ErrorCode::SignatureRequired,
            "this integration requires Standard Webhooks signatures: send webhook-id, \
             webhook-timestamp and webhook-signature"
                .to_string(),
        ),
        Some(E::InvalidTimestamp) => (
            ErrorCode::InvalidSignature,
            "webhook-timestamp must be unix seconds".to_string(),
        ),
        Some(E::TimestampTooOldError) | Some(E::FutureTimestampError) => (
            ErrorCode::SignatureExpired,
            "webhook-timestamp is more than 5 minutes away from the server's clock".to_string(),
        ),
        _ => (
            ErrorCode::InvalidSignature,
            "no webhook-signature entry matches the body with this integration's secret"
                .to_string(),
        ),
    };
    Err(ApiError::new(StatusCode::UNAUTHORIZED, code, message))
}
