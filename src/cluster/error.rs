//! The one error type of the cluster modules, so that callers can tell "Redis is out of reach,
//! try again" (the contract's `UNAVAILABLE`) from "Redis holds something this node cannot read"
//! (a fault: `INTERNAL`).

use confab_signaling::{ErrorCode, SignalingError};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No answer from Redis: refused, dropped, timed out, or still loading its data. The
    /// connection manager keeps reconnecting; the same call may succeed later.
    #[error("Redis is unreachable: {0}")]
    Unreachable(#[source] redis::RedisError),
    /// Redis answered with an error (a script that failed, a key of the wrong type).
    #[error("Redis refused a command: {0}")]
    Refused(#[source] redis::RedisError),
    /// A value in Redis that this node cannot decode, e.g. a node record written by an
    /// incompatible version.
    #[error("unreadable {what} in Redis: {message}")]
    Corrupt { what: &'static str, message: String },
    /// The Redis URL itself is unusable (checked before any connection is made).
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(#[source] redis::RedisError),
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> Self {
        if is_unreachable(&e) {
            ClusterError::Unreachable(e)
        } else {
            ClusterError::Refused(e)
        }
    }
}

/// Failures of the connection rather than of the command: the ones worth retrying.
fn is_unreachable(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
            )
        )
}

impl ClusterError {
    /// The contract's code for this failure, where it reaches a client.
    pub fn code(&self) -> ErrorCode {
        match self {
            ClusterError::Unreachable(_) => ErrorCode::Unavailable,
            ClusterError::Refused(_)
            | ClusterError::Corrupt { .. }
            | ClusterError::InvalidUrl(_) => ErrorCode::Internal,
        }
    }

    /// The refusal a client sees. Its message names what failed, never Redis's own words.
    pub fn to_signaling(&self) -> SignalingError {
        let message = match self {
            ClusterError::Unreachable(_) => {
                "the cluster's shared state is unreachable; retry later"
            }
            _ => "the cluster's shared state failed",
        };
        SignalingError::new(self.code(), message)
    }
}

impl From<ClusterError> for SignalingError {
    fn from(e: ClusterError) -> Self {
        e.to_signaling()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_redis_is_unavailable() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let down = ClusterError::from(redis::RedisError::from(refused));
        assert!(matches!(down, ClusterError::Unreachable(_)), "{down:?}");
        let refusal = down.to_signaling();
        assert_eq!(
            (refusal.code, refusal.code.http_status()),
            (ErrorCode::Unavailable, 503)
        );

        let client = redis::RedisError::from((redis::ErrorKind::Client, "bad"));
        let fault = ClusterError::from(client);
        assert!(matches!(fault, ClusterError::Refused(_)), "{fault:?}");
        assert_eq!(SignalingError::from(fault).code, ErrorCode::Internal);
    }
}
