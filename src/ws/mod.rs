//! WebSocket signaling (contract section 6): `GET /ws?token=JWT`.
//!
//! `session` runs one socket (registered with `crate::delivery`), `dispatch` turns a client
//! request into the same call operation the REST API performs.

mod dispatch;
mod session;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use confab_signaling::ErrorCode;
use serde::Deserialize;

use crate::app::AppState;
use crate::http::access::AccessUser;
use crate::http::error::ApiError;
use crate::http::extract::Query;

/// Frames above this are refused with `PAYLOAD_TOO_LARGE` and close code 1009.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// The transport's own cap, above the contract's, so that an oversized message still reaches
/// the session and gets its `error` before the close.
const TRANSPORT_MAX_BYTES: usize = 4 * MAX_MESSAGE_BYTES;
/// Each socket's read buffer, allocated when it opens. Signaling is a few small messages a
/// second, and a description larger than this is read in several turns; tungstenite's 128 KiB
/// default was a tenth of a participant's server memory in a 50-person audio call.
const READ_BUFFER_BYTES: usize = 8 * 1024;

#[derive(Deserialize)]
pub struct WsParams {
    token: Option<String>,
}

/// Checks the token and the origin before upgrading: a refused client gets a plain HTTP
/// error (401 or 403) and never a socket.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "signaling",
    summary = "Open the signaling WebSocket",
    description = "Upgrades to a WebSocket carrying JSON text frames: client requests, acks and server events, described in docs/api.md section 8. The token travels as `?token=`, since browsers cannot set headers on a WebSocket.",
    params(("token" = String, Query, description = "The caller's JWT")),
    security(("query_token" = [])),
    responses(
        (status = 101, description = "Switching Protocols: the socket is open"),
        (status = 400, description = "`INVALID_ARGUMENT`: not a WebSocket upgrade request", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the Origin is not allowed", body = crate::http::api::openapi::ErrorBody),
        (status = 503, description = "`UNAVAILABLE`: this node is draining", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn upgrade(
    State(state): State<AppState>,
    Query(params): Query<WsParams>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Response {
    let actor = match params.token.as_deref().map(|t| state.jwt.verify(t)) {
        Some(Ok(actor)) => actor,
        Some(Err(e)) => return ApiError::from(e).into_response(),
        None => return ApiError::from(crate::auth::AuthError::Missing).into_response(),
    };
    if let Some(user) = request.extensions().get::<AccessUser>() {
        user.set(actor.user_id.as_str());
    }
    if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| state.settings.allowed_origins.allows(o));
        if !allowed {
            return ApiError::new(ErrorCode::Forbidden, "origin not allowed").into_response();
        }
    }
    if !state.drain.accepts_sockets() {
        return ApiError::new(
            ErrorCode::Unavailable,
            "this node is draining; connect to another node",
        )
        .into_response();
    }
    let (mut parts, _body) = request.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::invalid_argument(format!("not a WebSocket upgrade: {rejection}"))
                .into_response();
        }
    };
    // Registered before the 101 goes out, so that the client is online once it sees it; if
    // the upgrade fails, the callback and the seat in it are dropped, which unregisters it.
    let seat = session::Seat::take(state, actor);
    ws.max_message_size(TRANSPORT_MAX_BYTES)
        .max_frame_size(TRANSPORT_MAX_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| session::run(socket, seat))
}
