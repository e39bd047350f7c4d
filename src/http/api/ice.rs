//! `GET /ice-servers`: STUN/TURN for the client's peer connections.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::calls::now_ms;
use crate::http::extract::AuthUser;

pub async fn ice_servers(State(state): State<AppState>, AuthUser(actor): AuthUser) -> Json<Value> {
    Json(json!({
        "ice_servers": state.ice.servers_for(actor.user_id.as_str(), now_ms()),
        "ttl_s": state.ice.ttl_s(),
    }))
}
