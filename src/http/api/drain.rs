//! `POST /admin/drain` (contract sections 5 and 10): an admin drains this node.
//!
//! The node then takes no new calls, ends its calls after the drain timeout, closes every
//! socket with 1001 and flushes its history, like SIGTERM does; unlike SIGTERM it keeps running,
//! draining (`/readyz` 503), until it is restarted.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use confab_signaling::SignalingError;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::http::error::ApiResult;
use crate::http::extract::AuthUser;

pub async fn drain(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !actor.admin {
        return Err(SignalingError::forbidden("draining the node needs an admin token").into());
    }
    let started = crate::drain::start(&state);
    if started {
        tracing::info!(by = %actor.user_id, "drain requested");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "draining": true,
            "already_draining": !started,
            "drain_timeout_s": state.settings.drain_timeout.as_secs(),
        })),
    ))
}
