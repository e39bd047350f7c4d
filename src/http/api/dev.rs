//! `POST /dev/token`, only under `serve --dev`: lets the demo page sign in with just a name.

use std::time::Duration;

use axum::extract::State;
use confab_signaling::{ErrorCode, UserId};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::Json;

/// Long enough for a day of trying things out.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Deserialize, utoipa::ToSchema)]
pub struct TokenBody {
    user_id: UserId,
    name: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// A JWT for `user_id`, valid for 24 hours.
    token: String,
}

#[utoipa::path(
    post,
    path = "/dev/token",
    tag = "dev",
    summary = "Sign a token (only with serve --dev)",
    description = "Signs a 24-hour user token for any user id; exists only when the server runs with --dev.",
    request_body = TokenBody,
    security(()),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, description = "`INVALID_ARGUMENT`: a malformed body", body = crate::http::api::openapi::ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: the body is over 64 KiB", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn token(
    State(state): State<AppState>,
    Json(body): Json<TokenBody>,
) -> ApiResult<axum::Json<TokenResponse>> {
    let name = body
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let token = state
        .jwt
        .issue(&body.user_id, name, false, DEV_TOKEN_TTL)
        .map_err(|e| {
            tracing::error!(error = %e, "signing a dev token failed");
            ApiError::new(ErrorCode::Internal, "could not sign a token")
        })?;
    Ok(axum::Json(TokenResponse { token }))
}
