//! The JSON body extractor: every way a body can be bad maps to one clear error code.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Like `axum::Json`, but failures answer `payload_too_large` (413), `invalid_json` (not JSON at
/// all) or `invalid_request` (JSON of the wrong shape: types, missing or unknown fields).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = match Bytes::from_request(request, state).await {
            Ok(bytes) => bytes,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::new(
                    "payload_too_large",
                    "the request body exceeds the limit",
                ));
            }
            Err(rejection) => return Err(ApiError::new("invalid_request", rejection.body_text())),
        };
        // Two steps, so a body that is not JSON at all is always `invalid_json`, and a shape
        // error reads the same as it does for an item of a batch (which arrives as a Value).
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new("invalid_json", format!("the body is not valid JSON: {e}"))
        })?;
        let parsed = serde_json::from_value(value)
            .map_err(|e| ApiError::new("invalid_request", e.to_string()))?;
        Ok(ApiJson(parsed))
    }
}
