//! `GET /ice-servers`: STUN/TURN for the client's peer connections.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::app::AppState;
use crate::calls::now_ms;
use crate::http::extract::AuthUser;
use crate::ice::IceServer;

#[derive(Serialize, utoipa::ToSchema)]
pub struct IceServersResponse {
    ice_servers: Vec<IceServer>,
    /// How long the TURN credentials stay valid, in seconds.
    ttl_s: i64,
}

#[utoipa::path(
    get,
    path = "/ice-servers",
    tag = "calls",
    summary = "STUN and TURN servers",
    description = "For the caller's peer connections; TURN credentials expire after `ttl_s`.",
    responses(
        (status = 200, body = IceServersResponse),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn ice_servers(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
) -> Json<IceServersResponse> {
    Json(IceServersResponse {
        ice_servers: state.ice.servers_for(actor.user_id.as_str(), now_ms()),
        ttl_s: state.ice.ttl_s(),
    })
}
