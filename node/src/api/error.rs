//! One table from error code to HTTP status, and the JSON error body
//! `{"error": {"code": "...", "message": "..."}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cluster::RouteError;
use serde_json::json;

/// Every error code the HTTP API can answer, with its status. A golden test lists them.
pub const ERROR_CODES: &[(&str, u16)] = &[
    ("invalid_json", 400),
    ("invalid_request", 400),
    ("invalid_account_id", 400),
    ("invalid_transfer_id", 400),
    ("invalid_amount", 400),
    ("invalid_kind", 400),
    ("invalid_currency", 400),
    ("same_account", 400),
    ("batch_too_large", 400),
    ("unauthorized", 401),
    ("not_found", 404),
    ("account_not_found", 404),
    ("transfer_not_found", 404),
    ("method_not_allowed", 405),
    ("account_exists", 409),
    ("id_conflict", 409),
    ("transfer_not_pending", 409),
    ("already_reversed", 409),
    ("not_reversible", 409),
    ("payload_too_large", 413),
    // Business rejections of a transfer: the body is the transfer's rejection record.
    ("insufficient_funds", 422),
    ("account_frozen", 422),
    ("account_closed", 422),
    ("limit_exceeded", 422),
    ("currency_mismatch", 422),
    ("kind_not_allowed", 422),
    ("payee_unreachable", 422),
    ("overloaded", 429),
    ("internal", 500),
    ("unavailable", 503),
];

pub fn status_of(code: &str) -> StatusCode {
    let status = ERROR_CODES
        .iter()
        .find(|(known, _)| *known == code)
        .map_or(500, |(_, status)| *status);
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[derive(Debug)]
pub struct ApiError {
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        status_of(self.code)
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }

    /// A ledger refusal (not a recorded rejection).
    pub fn from_code(code: ledger::Code) -> ApiError {
        let message = match code {
            ledger::Code::IdConflict => {
                "this transfer id was already used with a different request"
            }
            ledger::Code::SameAccount => "from and to must differ",
            ledger::Code::AccountExists => "an account with this id already exists",
            ledger::Code::TransferNotFound => "no transfer has this id",
            ledger::Code::AccountNotFound => "no account has this id",
            ledger::Code::TransferNotPending => "the transfer is not pending",
            ledger::Code::AlreadyReversed => "the transfer was already reversed",
            ledger::Code::NotReversible => "only completed transfers can be reversed",
            _ => "the request was refused",
        };
        ApiError::new(code.as_str(), message)
    }
}

impl From<RouteError> for ApiError {
    fn from(error: RouteError) -> ApiError {
        if error == RouteError::Overloaded {
            return ApiError::new(
                "overloaded",
                "the shard's proposal queue is full; retry later",
            );
        }
        let message =
            format!("{error}; if this was a write its outcome is unknown: retry with the same id");
        ApiError::new("unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if self.code == "payload_too_large" {
            // The rest of the oversized body was never read: the connection cannot be reused.
            let close = axum::http::HeaderValue::from_static("close");
            response
                .headers_mut()
                .insert(axum::http::header::CONNECTION, close);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the error table is complete and stable. Method: every ledger code has a status,
    /// and the table matches the golden file (regenerate with UPDATE_GOLDEN=1).
    #[test]
    fn error_codes_golden() {
        for code in ledger::Code::ALL {
            let known = ERROR_CODES.iter().any(|(name, _)| *name == code.as_str());
            assert!(known, "{} missing from ERROR_CODES", code.as_str());
        }
        let text: String = ERROR_CODES
            .iter()
            .map(|(code, status)| format!("{code} {status}\n"))
            .collect();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/error_codes.txt");
        if std::env::var("UPDATE_GOLDEN").is_ok() {
            std::fs::write(path, &text).expect("write golden");
        }
        let golden = std::fs::read_to_string(path).expect("golden file exists");
        assert_eq!(
            text, golden,
            "error codes changed: review, then UPDATE_GOLDEN=1"
        );
    }
}
