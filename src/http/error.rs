//! The one error type of the HTTP layer, mapped once to the contract's JSON error body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use confab_signaling::{ErrorCode, SignalingError};
use serde_json::json;

use crate::auth::AuthError;
use crate::store::StoreError;

/// `{"error": {"code", "message", "details"?}}` with the code's HTTP status.
#[derive(Debug)]
pub struct ApiError(pub SignalingError);

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(SignalingError::new(code, message))
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn code(&self) -> ErrorCode {
        self.0.code
    }

    /// The JSON object inside `error`, shared with the WebSocket `error` message.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({ "code": self.0.code.as_str(), "message": self.0.message });
        if let Some(details) = &self.0.details {
            body["details"] = details.clone();
        }
        body
    }
}

impl From<SignalingError> for ApiError {
    fn from(e: SignalingError) -> Self {
        ApiError(e)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        tracing::debug!(error = %e, "authentication failed");
        ApiError::new(
            ErrorCode::Unauthenticated,
            "missing, invalid or expired token",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(json!({ "error": self.body() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
