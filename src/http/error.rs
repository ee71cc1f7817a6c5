//! The one error type of the HTTP boundary and its JSON shape.
//!
//! Policy: handlers return `ApiError`; every refusal is `{"error":{"code","message","details"?}}`
//! with a status that says whose fault it is, and a machine-readable `code` that never changes
//! once released. Internal errors are logged here, once, and answered without their details.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::Value;
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{ObjectBuilder, Schema, Type},
    },
};

/// Declares [`ErrorCode`]: every code the HTTP API answers with, one list.
macro_rules! error_codes {
    ($($variant:ident => $code:literal,)+) => {
        /// A machine-readable error code. Every refusal names one, so the full set is this
        /// enum's; the README's error tables list exactly these (a test compares them).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)+
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }
        }
    };
}

error_codes! {
    AccountNotFound => "account_not_found",
    AdminDisabled => "admin_disabled",
    ApiKeyNotFound => "api_key_not_found",
    BacklogFull => "backlog_full",
    BatchNotFound => "batch_not_found",
    BodyUnreadable => "body_unreadable",
    ChunksDeleted => "chunks_deleted",
    DataTypeMismatch => "data_type_mismatch",
    DataTypeNotEnabled => "data_type_not_enabled",
    DataTypeNotSupported => "data_type_not_supported",
    DatabaseUnavailable => "database_unavailable",
    EmptySelection => "empty_selection",
    EncryptionKeyMissing => "encryption_key_missing",
    IntegrationForbidden => "integration_forbidden",
    IntegrationNameTaken => "integration_name_taken",
    IntegrationNotFound => "integration_not_found",
    IntegrationPaused => "integration_paused",
    InternalError => "internal_error",
    InvalidAdminToken => "invalid_admin_token",
    InvalidApiKey => "invalid_api_key",
    InvalidAuthorization => "invalid_authorization",
    InvalidBatchId => "invalid_batch_id",
    InvalidBody => "invalid_body",
    InvalidCredentials => "invalid_credentials",
    InvalidCursor => "invalid_cursor",
    InvalidDataType => "invalid_data_type",
    InvalidField => "invalid_field",
    InvalidFilter => "invalid_filter",
    InvalidGzip => "invalid_gzip",
    InvalidIdempotencyKey => "invalid_idempotency_key",
    InvalidIfMatch => "invalid_if_match",
    InvalidIntegrationId => "invalid_integration_id",
    InvalidJitter => "invalid_jitter",
    InvalidMapping => "invalid_mapping",
    InvalidPath => "invalid_path",
    InvalidQuery => "invalid_query",
    InvalidSchedule => "invalid_schedule",
    InvalidSignature => "invalid_signature",
    InvalidSweepShare => "invalid_sweep_share",
    InvalidSyncMode => "invalid_sync_mode",
    InvalidTenantId => "invalid_tenant_id",
    InvalidTimezone => "invalid_timezone",
    InvalidToken => "invalid_token",
    InvalidWebhookUrl => "invalid_webhook_url",
    JwksUnavailable => "jwks_unavailable",
    JwtAlgorithmRefused => "jwt_algorithm_refused",
    JwtAudienceMismatch => "jwt_audience_mismatch",
    JwtClaimMissing => "jwt_claim_missing",
    JwtExpired => "jwt_expired",
    JwtIssuerMismatch => "jwt_issuer_mismatch",
    JwtKeyUnknown => "jwt_key_unknown",
    JwtMalformed => "jwt_malformed",
    JwtNotYetValid => "jwt_not_yet_valid",
    JwtSignatureInvalid => "jwt_signature_invalid",
    JwtTenantInvalid => "jwt_tenant_invalid",
    MappingNotFound => "mapping_not_found",
    MetricsDisabled => "metrics_disabled",
    MethodNotAllowed => "method_not_allowed",
    MigrationsPending => "migrations_pending",
    MissingAdminToken => "missing_admin_token",
    MissingApiKey => "missing_api_key",
    MissingToken => "missing_token",
    NotFound => "not_found",
    PayloadTooLarge => "payload_too_large",
    RateLimited => "rate_limited",
    ReadOnlyToken => "read_only_token",
    RecordNotFound => "record_not_found",
    RequestTimeout => "request_timeout",
    SignatureExpired => "signature_expired",
    SignatureRequired => "signature_required",
    SourceTypeMismatch => "source_type_mismatch",
    SyncInProgress => "sync_in_progress",
    SyncLogClosed => "sync_log_closed",
    SyncLogNotFound => "sync_log_not_found",
    SyncNotRetryable => "sync_not_retryable",
    TenantNotFound => "tenant_not_found",
    TenantRequired => "tenant_required",
    TokenNotFound => "token_not_found",
    TokenRevoked => "token_revoked",
    TooManyRecords => "too_many_records",
    UnsupportedEncoding => "unsupported_encoding",
    UnsupportedMediaType => "unsupported_media_type",
    VersionMismatch => "version_mismatch",
    WebhookUrlDenied => "webhook_url_denied",
    WebhookUrlMissing => "webhook_url_missing",
    WebhookUrlRequired => "webhook_url_required",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every refusal's body: `{"error": {"code", "message", "details"?}}`.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// What went wrong, for a human.
    pub message: String,
    /// Machine-readable specifics, when the code has any (e.g. `parameter`, `field`, `limit_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    /// The request's id (its `x-request-id`, echoed or made): quote it when asking about it; the
    /// service's log line of the request carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "Every code the service answers (see the README's tables)",
            ))
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .into()
    }
}

impl ToSchema for ErrorCode {}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds, sent as `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The database could not do its part; the client should try again shortly. Never a 2xx.
    pub fn database_unavailable(error: impl std::fmt::Display) -> Self {
        tracing::warn!(error.message = %error, "database unavailable while handling a request");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DatabaseUnavailable,
            "the database is unavailable; nothing was stored, retry shortly",
        )
        .retry_after(5)
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error.message = %error, "internal error while handling a request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            "an internal error occurred; it has been logged",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                details: self.details,
                request_id: crate::telemetry::request_id(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        // For the request log line and the metrics (`observe`).
        response.extensions_mut().insert(self.code);
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        match error.downcast_ref::<sqlx::Error>() {
            Some(e) if is_unavailable(e) => Self::database_unavailable(format!("{error:#}")),
            _ => Self::internal(format!("{error:#}")),
        }
    }
}

impl From<jobs::Error> for ApiError {
    fn from(error: jobs::Error) -> Self {
        match error {
            jobs::Error::Database(e) => e.into(),
            other => Self::internal(other),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            Self::database_unavailable(error)
        } else {
            Self::internal(error)
        }
    }
}

/// Errors that say the database could not serve now (not that the request was wrong): no
/// connection, a closed pool, a server shutting down or out of resources, a serialisation
/// conflict. Retrying later can succeed.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources; 57P: operator intervention
            // (shutdown, crash); 40001/40P01: serialisation failure and deadlock.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}

/// A route that exists, asked with a method it does not take; axum adds the `Allow` header.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        format!(
            "{} does not take {method}; see the Allow header",
            uri.path()
        ),
    )
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no route for {}", uri.path()),
    )
}

/// The request timeout's answer, which carries no body, as the JSON error; no handler answers 408
/// itself.
pub async fn timeout_as_json(response: Response, timeout: std::time::Duration) -> Response {
    if response.status() != StatusCode::REQUEST_TIMEOUT
        || response
            .headers()
            .contains_key(axum::http::header::CONTENT_TYPE)
    {
        return response;
    }
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        ErrorCode::RequestTimeout,
        format!(
            "the request took longer than {} s (http.request_timeout_secs) and was abandoned; \
             nothing it carried was stored",
            timeout.as_secs_f64()
        ),
    )
    .into_response()
}
