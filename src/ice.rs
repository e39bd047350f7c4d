//! ICE servers handed to clients: STUN URLs as configured and time-limited TURN credentials
//! in the coturn REST API convention, so Confab and coturn need share nothing but a secret.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;
use std::time::Duration;
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Debug, Clone)]
pub struct IceConfig {
    pub stun_urls: Vec<String>,
    pub turn_urls: Vec<String>,
    pub turn_secret: Option<String>,
    pub ttl: Duration,
}

impl IceConfig {
    /// The list for one user: STUN first, then TURN with credentials valid for `ttl`.
    pub fn servers_for(&self, user_id: &str, now: OffsetDateTime) -> Vec<IceServer> {
        let mut servers = Vec::with_capacity(2);
        if !self.stun_urls.is_empty() {
            servers.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if let (Some(secret), false) = (&self.turn_secret, self.turn_urls.is_empty()) {
            let expiry = now.unix_timestamp() + self.ttl_s();
            let username = format!("{expiry}:{user_id}");
            servers.push(IceServer {
                urls: self.turn_urls.clone(),
                credential: Some(turn_credential(secret, &username)),
                username: Some(username),
            });
        }
        servers
    }

    pub fn ttl_s(&self) -> i64 {
        i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX)
    }
}

/// base64(HMAC-SHA1(secret, username)), what coturn's `use-auth-secret` checks.
pub fn turn_credential(secret: &str, username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credential_matches_coturn_convention() {
        // Reference value: printf '%s' '1700000000:alice' | openssl dgst -sha1 -hmac secret -binary | base64
        assert_eq!(
            turn_credential("secret", "1700000000:alice"),
            "d8soP47RbdIKLDUOpnJPVQyq5Ts="
        );
    }

    #[test]
    fn servers_list_stun_then_turn() {
        let cfg = IceConfig {
            stun_urls: vec!["stun:stun.example:3478".into()],
            turn_urls: vec!["turn:turn.example:3478?transport=udp".into()],
            turn_secret: Some("secret".into()),
            ttl: Duration::from_secs(3600),
        };
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let servers = cfg.servers_for("alice", now);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].username.as_deref(), Some("1700003600:alice"));
    }

    #[test]
    fn turn_without_secret_is_not_listed() {
        let cfg = IceConfig {
            stun_urls: vec![],
            turn_urls: vec!["turn:t".into()],
            turn_secret: None,
            ttl: Duration::from_secs(60),
        };
        assert!(cfg.servers_for("a", OffsetDateTime::UNIX_EPOCH).is_empty());
    }
}
