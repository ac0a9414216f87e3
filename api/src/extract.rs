//! Request extractors whose every rejection is an [`ApiError`] (axum's own rejections are plain
//! text): JSON bodies with the field path of a type error, sandbox ids, and raw queries.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use berth_core::ErrorCode;
use berth_core::model::SandboxId;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body, refused with 415 (content type), 413 (size) or 400 (syntax, type, unknown or
/// missing field — the message names the field path).
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub T);

fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !is_json(&content_type) {
            return Err(ApiError::new(
                ErrorCode::GeneralUnsupportedMediaType,
                format!(
                    "the body must be application/json (got {})",
                    if content_type.is_empty() {
                        "no Content-Type"
                    } else {
                        &content_type
                    }
                ),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorCode::GeneralPayloadTooLarge,
                    "the body is larger than 1 MiB",
                )
            } else {
                ApiError::new(
                    ErrorCode::GeneralInvalidBody,
                    format!("the body could not be read: {rejection}"),
                )
            }
        })?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            };
            ApiError::new(ErrorCode::GeneralInvalidBody, message)
        })?;
        deserializer.end().map_err(|e| {
            ApiError::new(
                ErrorCode::GeneralInvalidBody,
                format!("trailing data after the JSON body: {e}"),
            )
        })?;
        Ok(Self(value))
    }
}

/// The `{sandboxId}` path segment. An id that cannot be valid cannot exist: 404.
#[derive(Debug)]
pub(crate) struct SandboxPath(pub SandboxId);

impl<S: Send + Sync> FromRequestParts<S> for SandboxPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(params) =
            axum::extract::Path::<Vec<(String, String)>>::from_request_parts(parts, state)
                .await
                .map_err(|e| {
                    ApiError::new(ErrorCode::GeneralInvalidPathParameter, e.body_text())
                })?;
        let raw = params
            .iter()
            .find(|(k, _)| k == "sandbox_id")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        SandboxId::new(raw).map(Self).map_err(|_| {
            ApiError::new(
                ErrorCode::SandboxNotFound,
                format!("sandbox {raw:?} not found"),
            )
        })
    }
}

/// The query string as ordered key/value pairs (repeated keys kept, percent-decoded once).
#[derive(Debug, Default)]
pub(crate) struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        Ok(Self(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        ))
    }
}
