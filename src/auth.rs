//! JWT verification and issuance (contract section 2).
//!
//! Tokens are issued by the host application (or by `confab token` and the dev route); Confab
//! only verifies them. Every way a token can be wrong maps to one error, `UNAUTHENTICATED`,
//! so that a client cannot probe which check failed.

use confab_signaling::{Actor, OpaqueId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use time::OffsetDateTime;

/// Accepted clock skew between the token issuer and this server.
const LEEWAY_S: u64 = 30;
/// A display name longer than this is cut; it only labels tiles and history rows.
const MAX_NAME_CHARS: usize = 128;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no JWT key configured: set CONFAB_JWT_SECRET or CONFAB_JWT_PUBLIC_KEY (or run with --dev)"
    )]
    NoKey,
    #[error("cannot read JWT public key file {path}: {source}")]
    ReadFile {
        path: String,
        source: std::io::Error,
    },
    #[error("CONFAB_JWT_PUBLIC_KEY is not an RSA, Ed25519 or EC public key in PEM")]
    BadPublicKey,
    #[error("signing tokens needs CONFAB_JWT_SECRET; a public key can only verify")]
    CannotSign,
    #[error("cannot sign token: {0}")]
    Sign(String),
}

/// The verification keys, one per accepted algorithm family, and the signing key if any.
pub struct JwtKeys {
    hmac: Option<(DecodingKey, EncodingKey)>,
    public: Option<(DecodingKey, Vec<Algorithm>)>,
}

impl JwtKeys {
    /// `public_key` is PEM text, or a path to a PEM file.
    pub fn new(secret: Option<&str>, public_key: Option<&str>) -> Result<JwtKeys, KeyError> {
        let hmac = secret.map(|s| {
            (
                DecodingKey::from_secret(s.as_bytes()),
                EncodingKey::from_secret(s.as_bytes()),
            )
        });
        let public = public_key.map(load_public_key).transpose()?;
        if hmac.is_none() && public.is_none() {
            return Err(KeyError::NoKey);
        }
        Ok(JwtKeys { hmac, public })
    }

    /// Verifies signature, expiry and the required claims, and returns who is acting.
    pub fn verify(&self, token: &str) -> Result<Actor, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let (key, algorithms) = match (header.alg, &self.hmac, &self.public) {
            (Algorithm::HS256, Some((key, _)), _) => (key, vec![Algorithm::HS256]),
            (alg, _, Some((key, algs))) if algs.contains(&alg) => (key, algs.clone()),
            (alg, _, _) => {
                return Err(AuthError::Invalid(format!(
                    "algorithm {alg:?} not accepted"
                )));
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = LEEWAY_S;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let user_id = OpaqueId::parse(&claims.sub)
            .map_err(|_| AuthError::Invalid("sub is not a valid user id".into()))?;
        let name = claims
            .name
            .map(|n| n.trim().chars().take(MAX_NAME_CHARS).collect::<String>())
            .filter(|n| !n.is_empty());
        Ok(Actor {
            user_id,
            name,
            admin: claims.admin,
        })
    }

    /// Issues an HS256 token; only possible when a secret is configured.
    pub fn issue(
        &self,
        user_id: &OpaqueId,
        name: Option<&str>,
        admin: bool,
        ttl: Duration,
    ) -> Result<String, KeyError> {
        let (_, encoding) = self.hmac.as_ref().ok_or(KeyError::CannotSign)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub: user_id.as_str().to_owned(),
            exp: now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
            iat: Some(now),
            name: name.map(str::to_owned),
            admin,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }
}

fn load_public_key(value: &str) -> Result<(DecodingKey, Vec<Algorithm>), KeyError> {
    let pem = if value.trim_start().starts_with("-----BEGIN") {
        value.to_owned()
    } else {
        std::fs::read_to_string(value).map_err(|source| KeyError::ReadFile {
            path: value.to_owned(),
            source,
        })?
    };
    let bytes = pem.as_bytes();
    if let Ok(key) = DecodingKey::from_rsa_pem(bytes) {
        return Ok((
            key,
            vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        ));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(bytes) {
        return Ok((key, vec![Algorithm::EdDSA]));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(bytes) {
        return Ok((key, vec![Algorithm::ES256, Algorithm::ES384]));
    }
    Err(KeyError::BadPublicKey)
}

/// Pulls the token out of `Authorization: Bearer <token>`.
pub fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token.trim())
}

/// A fresh random HS256 secret for `serve --dev`.
pub fn generate_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> OpaqueId {
        OpaqueId::parse(id).unwrap()
    }

    #[test]
    fn issued_tokens_verify() {
        let keys = JwtKeys::new(Some("s3cret"), None).unwrap();
        let token = keys
            .issue(&user("alice"), Some("Alice"), true, Duration::from_secs(60))
            .unwrap();
        let actor = keys.verify(&token).unwrap();
        assert_eq!(actor.user_id.as_str(), "alice");
        assert_eq!(actor.name.as_deref(), Some("Alice"));
        assert!(actor.admin);
    }

    #[test]
    fn wrong_secret_expired_and_garbage_are_refused() {
        let keys = JwtKeys::new(Some("s3cret"), None).unwrap();
        let other = JwtKeys::new(Some("other"), None).unwrap();
        let token = other
            .issue(&user("alice"), None, false, Duration::from_secs(60))
            .unwrap();
        assert!(keys.verify(&token).is_err());
        assert!(keys.verify("not.a.token").is_err());

        let expired = Claims {
            sub: "alice".into(),
            exp: OffsetDateTime::now_utc().unix_timestamp() - 3600,
            iat: None,
            name: None,
            admin: false,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &expired,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(keys.verify(&token).is_err());
    }

    #[test]
    fn invalid_subject_is_refused() {
        let keys = JwtKeys::new(Some("s3cret"), None).unwrap();
        let claims = Claims {
            sub: "has space".into(),
            exp: OffsetDateTime::now_utc().unix_timestamp() + 60,
            iat: None,
            name: None,
            admin: false,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(keys.verify(&token).is_err());
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(Some("bearer abc")).unwrap(), "abc");
        assert!(bearer_token(Some("Basic abc")).is_err());
        assert!(bearer_token(Some("Bearer ")).is_err());
        assert!(bearer_token(None).is_err());
    }

    /// Test-only key pairs; never used outside the test suite.
    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    fn sign_with(private_pem: &str, alg: Algorithm, sub: &str) -> String {
        let pem = std::fs::read(format!("{FIXTURES}/{private_pem}")).unwrap();
        let key = match alg {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
        };
        let claims = Claims {
            sub: sub.into(),
            exp: OffsetDateTime::now_utc().unix_timestamp() + 60,
            iat: None,
            name: None,
            admin: true,
        };
        jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap()
    }

    #[test]
    fn public_keys_verify_rs256_and_eddsa_given_inline_or_as_a_path() {
        for (private, public, alg) in [
            ("jwt-rsa.key", "jwt-rsa.pub", Algorithm::RS256),
            ("jwt-ed25519.key", "jwt-ed25519.pub", Algorithm::EdDSA),
        ] {
            let path = format!("{FIXTURES}/{public}");
            let inline = std::fs::read_to_string(&path).unwrap();
            for source in [path.as_str(), inline.as_str()] {
                let keys = JwtKeys::new(None, Some(source)).unwrap();
                let actor = keys.verify(&sign_with(private, alg, "svc")).unwrap();
                assert_eq!(actor.user_id.as_str(), "svc");
                assert!(actor.admin);
                // A public key cannot mint tokens, and an HS256 token is not accepted.
                assert!(matches!(
                    keys.issue(&user("x"), None, false, Duration::from_secs(60)),
                    Err(KeyError::CannotSign)
                ));
                let hs = JwtKeys::new(Some("s"), None)
                    .unwrap()
                    .issue(&user("x"), None, false, Duration::from_secs(60))
                    .unwrap();
                assert!(keys.verify(&hs).is_err());
            }
        }
        // A token signed by a different RSA key than the configured Ed25519 one is refused.
        let keys = JwtKeys::new(None, Some(&format!("{FIXTURES}/jwt-ed25519.pub"))).unwrap();
        assert!(
            keys.verify(&sign_with("jwt-rsa.key", Algorithm::RS256, "svc"))
                .is_err()
        );
        assert!(matches!(
            JwtKeys::new(
                None,
                Some("-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----")
            ),
            Err(KeyError::BadPublicKey)
        ));
    }

    #[test]
    fn no_key_is_an_error() {
        assert!(matches!(JwtKeys::new(None, None), Err(KeyError::NoKey)));
    }
}
