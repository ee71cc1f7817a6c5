//! Extractors whose refusals answer in the one error shape (`{"error": {...}}`): handlers take
//! these instead of axum's `Json` and `Query`, whose rejections are plain text.

use axum::{
    extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request},
    http::{StatusCode, request::Parts},
};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::{ApiError, ErrorCode};

/// The largest body the admin routes read: axum's default limit, which applies to every body
/// read through [`ApiJson`] (the webhook reads its own, with its own limits).
pub const ADMIN_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// A JSON body; an empty body reads as `{}` (every field optional). A body that is not JSON, or
/// not of the expected shape, is 422 `invalid_body` naming the field.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::PayloadTooLarge,
                    format!("the body is over the admin API's limit of {ADMIN_BODY_LIMIT} bytes"),
                )
                .with_details(serde_json::json!({ "limit_bytes": ADMIN_BODY_LIMIT }))
            } else {
                ApiError::new(
                    e.status(),
                    ErrorCode::BodyUnreadable,
                    format!("the body could not be read: {}", e.body_text()),
                )
            }
        })?;
        json_body(&body).map(ApiJson)
    }
}

/// [`ApiJson`]'s reading of a body already in hand.
fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let text: &[u8] = if body.is_empty() { b"{}" } else { body };
    let mut de = serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidBody,
            format!("the body is not valid: {e}"),
        )
    })
}

/// A query string; one that does not parse into `T` is 400 `invalid_query`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidQuery,
                    format!("the query string is not valid: {}", e.body_text()),
                )
            })
    }
}

/// The route's path parameters as sent; a path that is not valid UTF-8 once decoded is 400
/// `invalid_path`. Path extractors start here, so no handler sees axum's `Path` rejections.
pub async fn path_params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<RawPathParams, ApiError> {
    RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidPath,
                e.body_text(),
            )
        })
}

/// The `{id}` of `/api/batches/{id}`: 400 `invalid_batch_id` when it is not a UUID.
pub struct BatchId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for BatchId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = path_params(parts, state).await?;
        let text = params
            .iter()
            .find(|(name, _)| *name == "id")
            .map(|(_, value)| value)
            .unwrap_or_default();
        text.parse().map(BatchId).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidBatchId,
                format!("{text:?} is not a batch id (a UUID)"),
            )
        })
    }
}

/// An `If-Match` header of an integration write, as the versions it names: `None` when absent
/// or `*` (the write applies to the integration as it is); otherwise the write applies only if
/// its version is one of them. Entity tags are the [`etag`] of a version; a weak (`W/…`) or
/// foreign tag never matches (RFC 9110 §13.1.1 compares strongly).
pub struct IfMatch(pub Option<Vec<i64>>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut tags = Vec::new();
        let mut any = false;
        for value in parts.headers.get_all(axum::http::header::IF_MATCH) {
            let text = value.to_str().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidIfMatch,
                    "`If-Match` is not ASCII text",
                )
            })?;
            for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if tag == "*" {
                    any = true;
                } else if tag.len() >= 2 && tag.starts_with('"') && tag.ends_with('"') {
                    tags.extend(tag[1..tag.len() - 1].parse::<i64>().ok());
                } else if !tag.starts_with("W/\"") {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::InvalidIfMatch,
                        format!(
                            "`If-Match` holds {tag:?}, which is not an entity tag (`\"3\"`, as the `ETag` was) or `*`"
                        ),
                    ));
                }
            }
        }
        let present = parts.headers.contains_key(axum::http::header::IF_MATCH);
        Ok(IfMatch((present && !any).then_some(tags)))
    }
}

/// The `ETag` of an integration at settings version `version`.
pub fn etag(version: i64) -> [(axum::http::HeaderName, String); 1] {
    [(axum::http::header::ETAG, format!("\"{version}\""))]
}
