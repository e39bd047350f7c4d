//! The contract's error codes (section 3) and the one error type every decision returns.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// Every failure a client can see. The names are the contract's; HTTP statuses are mapped
/// once, at the edge, by [`ErrorCode::http_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    NotAMember,
    CallNotFound,
    ConversationNotFound,
    InvalidArgument,
    ActiveCallExists,
    UserBusy,
    RoomFull,
    InvalidState,
    CallEnded,
    PayloadTooLarge,
    RateLimited,
    /// Not in the contract's table: an unknown route or method.
    NotFound,
    /// Not in the contract's table: a fault on the server's side (store unreachable, bug).
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotAMember => "NOT_A_MEMBER",
            ErrorCode::CallNotFound => "CALL_NOT_FOUND",
            ErrorCode::ConversationNotFound => "CONVERSATION_NOT_FOUND",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::ActiveCallExists => "ACTIVE_CALL_EXISTS",
            ErrorCode::UserBusy => "USER_BUSY",
            ErrorCode::RoomFull => "ROOM_FULL",
            ErrorCode::InvalidState => "INVALID_STATE",
            ErrorCode::CallEnded => "CALL_ENDED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden | ErrorCode::NotAMember => 403,
            ErrorCode::CallNotFound | ErrorCode::ConversationNotFound | ErrorCode::NotFound => 404,
            ErrorCode::InvalidArgument => 400,
            ErrorCode::ActiveCallExists
            | ErrorCode::UserBusy
            | ErrorCode::RoomFull
            | ErrorCode::InvalidState => 409,
            ErrorCode::CallEnded => 410,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: the code, a sentence for humans and, where the contract asks for it,
/// machine-readable details such as `{"call_id": ...}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SignalingError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<serde_json::Value>,
}

impl SignalingError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// Attaches `details.call_id`, as the contract asks for `ACTIVE_CALL_EXISTS` and `USER_BUSY`.
    pub fn with_call_id(mut self, call_id: Uuid) -> Self {
        self.details = Some(serde_json::json!({ "call_id": call_id }));
        self
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidState, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
}
