//! `POST /admin/drain` (contract sections 5 and 10): an admin drains this node.
//!
//! The node then takes no new calls, ends its calls after the drain timeout, closes every
//! socket with 1001 and flushes its history, like SIGTERM does; unlike SIGTERM it keeps running,
//! draining (`/readyz` 503), until it is restarted.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confab_signaling::SignalingError;
use serde::Serialize;

use crate::app::AppState;
use crate::http::error::ApiResult;
use crate::http::extract::AuthUser;

#[derive(Serialize, utoipa::ToSchema)]
pub struct DrainResponse {
    draining: bool,
    /// The node was draining before this request.
    already_draining: bool,
    /// Calls still live after this many seconds are ended.
    drain_timeout_s: u64,
}

#[utoipa::path(
    post,
    path = "/admin/drain",
    tag = "admin",
    summary = "Drain this node",
    description = "Admin only. The node takes no new calls and ends its calls after the drain timeout (docs/api.md section 10.2).",
    responses(
        (status = 202, body = DrainResponse),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the token is not an admin's", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn drain(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
) -> ApiResult<(StatusCode, Json<DrainResponse>)> {
    if !actor.admin {
        return Err(SignalingError::forbidden("draining the node needs an admin token").into());
    }
    let started = crate::drain::start(&state);
    if started {
        tracing::info!(by = %actor.user_id, "drain requested");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(DrainResponse {
            draining: true,
            already_draining: !started,
            drain_timeout_s: state.settings.drain_timeout.as_secs(),
        }),
    ))
}
