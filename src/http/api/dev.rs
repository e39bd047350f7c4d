//! `POST /dev/token`, only under `serve --dev`: lets the demo page sign in with just a name.

use std::time::Duration;

use axum::extract::State;
use confab_signaling::{ErrorCode, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::Json;

/// Long enough for a day of trying things out.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Deserialize)]
pub struct TokenBody {
    user_id: UserId,
    name: Option<String>,
}

pub async fn token(
    State(state): State<AppState>,
    Json(body): Json<TokenBody>,
) -> ApiResult<axum::Json<Value>> {
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
    Ok(axum::Json(json!({ "token": token })))
}
