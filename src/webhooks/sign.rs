//! The `Confab-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//!
//! The time is part of the signed text so that a receiver can refuse an old request replayed
//! later; it is the time of each attempt, not of the event, so a retried event carries a fresh
//! one.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The name of the header that carries [`signature`].
pub const SIGNATURE_HEADER: &str = "Confab-Signature";
/// The name of the header that carries the event id.
pub const EVENT_ID_HEADER: &str = "Confab-Event-Id";

/// The header value signing `body` at `unix_seconds` with `secret`.
pub fn signature(secret: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independently_computed_vector() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec_test",
        //   b"1700000000.{\"id\":\"e1\",\"type\":\"call.started\"}", hashlib.sha256).hexdigest())'
        let body = br#"{"id":"e1","type":"call.started"}"#;
        assert_eq!(
            signature(b"whsec_test", 1_700_000_000, body),
            "t=1700000000,v1=059d1cfb76a5f96264d5aad16b60a1d5b5b0acd3cf03777cb4201ad57779dbc7"
        );
    }

    #[test]
    fn depends_on_secret_time_and_every_body_byte() {
        let base = signature(b"k", 1, b"{}");
        assert_ne!(base, signature(b"K", 1, b"{}"));
        assert_ne!(base, signature(b"k", 2, b"{}"));
        assert_ne!(base, signature(b"k", 1, b"{ }"));
    }
}
