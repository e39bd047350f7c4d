//! Extractors that turn every malformed request into the contract's error instead of axum's
//! plain-text rejections: JSON bodies and their content type, call and conversation ids in
//! paths, query strings and the bearer token.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use confab_signaling::{Actor, ConversationId, ErrorCode, OpaqueId};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::access::AccessUser;
use super::error::ApiError;
use crate::app::AppState;
use crate::auth::bearer_token;

/// The caller, from `Authorization: Bearer <JWT>`.
pub struct AuthUser(pub Actor);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = bearer_token(header)?;
        let actor = state.jwt.verify(token)?;
        if let Some(user) = parts.extensions.get::<AccessUser>() {
            user.set(actor.user_id.as_str());
        }
        Ok(AuthUser(actor))
    }
}

/// A JSON body. A request without a `Content-Type`, or with curl's default for `-d`
/// (`application/x-www-form-urlencoded`), is read as JSON, since that is what tools send when
/// their user did not say; one that declares another type is `INVALID_ARGUMENT`, as it says it
/// sent something else. The size limit is the router's, reported as `PAYLOAD_TOO_LARGE`.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        check_content_type(&req)?;
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(Json)
    }
}

/// A JSON body whose fields are all optional: an empty body means `{}`.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let declared = check_content_type(&req);
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        declared?;
        parse_json(&bytes).map(OptionalJson)
    }
}

/// Accepts no `Content-Type`, `application/json`, any `application/…+json` and curl's default,
/// with or without parameters (`; charset=utf-8`).
fn check_content_type(req: &Request) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(axum::http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let is_json = essence.as_deref().is_some_and(|t| {
        t == "application/json"
            || (t.starts_with("application/") && t.ends_with("+json"))
            || t == "application/x-www-form-urlencoded"
    });
    if is_json {
        Ok(())
    } else {
        Err(ApiError::invalid_argument(format!(
            "the body must be JSON (Content-Type: application/json), not {:?}",
            String::from_utf8_lossy(value.as_bytes())
        )))
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                "request body is larger than 64 KiB",
            )
        } else {
            ApiError::invalid_argument(format!("cannot read request body: {rejection}"))
        }
    })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid_argument(format!("invalid JSON body: {e}")))
}

/// The one path segment of a route, percent-decoded; a segment that is not UTF-8 once
/// decoded is `INVALID_ARGUMENT`.
async fn path_segment<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<String, ApiError> {
    let Path(raw) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::invalid_argument(e.body_text()))?;
    Ok(raw)
}

/// A call id from the path, in any spelling of a UUID (hyphenated, simple, braced, URN, any
/// case); anything else is `INVALID_ARGUMENT`.
pub struct CallIdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for CallIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = path_segment(parts, state).await?;
        Uuid::parse_str(&raw).map(CallIdPath).map_err(|_| {
            ApiError::invalid_argument(format!("{raw:?} is not a valid call id (UUID)"))
        })
    }
}

/// A call id and a participant's user id from the path (`/calls/{id}/participants/{user}/..`);
/// a malformed call id or user id is `INVALID_ARGUMENT`.
pub struct CallUserPath(pub Uuid, pub confab_signaling::UserId);

impl<S: Send + Sync> FromRequestParts<S> for CallUserPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((call, user)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid_argument(e.body_text()))?;
        let call_id = Uuid::parse_str(&call).map_err(|_| {
            ApiError::invalid_argument(format!("{call:?} is not a valid call id (UUID)"))
        })?;
        let user_id = confab_signaling::UserId::parse(&user)
            .map_err(|_| ApiError::invalid_argument(format!("{user:?} is not a valid user id")))?;
        Ok(CallUserPath(call_id, user_id))
    }
}

/// A conversation id from the path (contract: 1..128 of `[A-Za-z0-9._:@-]`); anything else
/// is `INVALID_ARGUMENT`.
pub struct ConversationIdPath(pub ConversationId);

impl<S: Send + Sync> FromRequestParts<S> for ConversationIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = path_segment(parts, state).await?;
        Ok(ConversationIdPath(OpaqueId::parse(&raw)?))
    }
}

/// A query string; unknown enum values and bad numbers are `INVALID_ARGUMENT`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(Query)
            .map_err(|e| ApiError::invalid_argument(format!("invalid query string: {e}")))
    }
}
