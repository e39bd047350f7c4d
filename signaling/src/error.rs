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
    /// An unknown route, or a method the route does not have.
    NotFound,
    /// A fault on the server's side (e.g. the store is unreachable); its message names what
    /// failed and never carries the fault's internals.
    Internal,
    /// The node cannot serve this now (draining, or a peer node out of reach); retrying later
    /// may succeed.
    Unavailable,
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
            ErrorCode::Unavailable => "UNAVAILABLE",
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
            ErrorCode::Unavailable => 503,
        }
    }

    /// Every code, in the contract's order (section 3).
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotAMember,
        ErrorCode::CallNotFound,
        ErrorCode::ConversationNotFound,
        ErrorCode::InvalidArgument,
        ErrorCode::ActiveCallExists,
        ErrorCode::UserBusy,
        ErrorCode::RoomFull,
        ErrorCode::InvalidState,
        ErrorCode::CallEnded,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::NotFound,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
    ];

    /// The code of a wire name, e.g. `"CALL_NOT_FOUND"`.
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|code| code.as_str() == name)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's table of section 3: each code's name and HTTP status.
    #[test]
    fn codes_have_the_contract_names_and_statuses() {
        let table = [
            ("UNAUTHENTICATED", 401),
            ("FORBIDDEN", 403),
            ("NOT_A_MEMBER", 403),
            ("CALL_NOT_FOUND", 404),
            ("CONVERSATION_NOT_FOUND", 404),
            ("INVALID_ARGUMENT", 400),
            ("ACTIVE_CALL_EXISTS", 409),
            ("USER_BUSY", 409),
            ("ROOM_FULL", 409),
            ("INVALID_STATE", 409),
            ("CALL_ENDED", 410),
            ("PAYLOAD_TOO_LARGE", 413),
            ("RATE_LIMITED", 429),
            ("NOT_FOUND", 404),
            ("INTERNAL", 500),
            ("UNAVAILABLE", 503),
        ];
        assert_eq!(ErrorCode::ALL.len(), table.len());
        for (code, (name, status)) in ErrorCode::ALL.into_iter().zip(table) {
            assert_eq!(code.as_str(), name);
            assert_eq!(code.http_status(), status, "{name}");
            assert_eq!(ErrorCode::from_name(name), Some(code));
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, name, "serde spells {name} as the wire does");
        }
        assert_eq!(ErrorCode::from_name("TEAPOT"), None);
    }
}
