//! The admin routes of contract section 5 (v2): live calls and nodes, removing and muting a
//! participant. `POST /admin/drain` lives with the drain in [`super::drain`].
//!
//! Every route needs an admin token; a valid token without the admin claim is `FORBIDDEN`,
//! whether or not its user takes part in the call.

use axum::extract::State;
use confab_signaling::wire::{CallObject, ParticipantObject};
use confab_signaling::{Actor, AdminMute, ErrorCode, SignalingError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::AppState;
use crate::http::api::calls::check_reason;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{AuthUser, CallIdPath, CallUserPath, OptionalJson};

fn require_admin(actor: &Actor, what: &str) -> ApiResult<()> {
    if actor.admin {
        Ok(())
    } else {
        Err(SignalingError::forbidden(format!("{what} needs an admin token")).into())
    }
}

/// A live call with the node hosting it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HostedCall {
    #[serde(flatten)]
    call: CallObject,
    node_id: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HostedCalls {
    calls: Vec<HostedCall>,
}

/// `GET /admin/calls`: every ringing or ongoing call, oldest first. Without cluster mode
/// every call is hosted here.
#[utoipa::path(
    get,
    path = "/admin/calls",
    tag = "admin",
    summary = "List live calls",
    description = "Admin only. Every ringing or ongoing call, with the node hosting it.",
    responses(
        (status = 200, body = HostedCalls),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the token is not an admin's", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn calls(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
) -> ApiResult<axum::Json<HostedCalls>> {
    require_admin(&actor, "listing calls")?;
    let calls: Vec<HostedCall> = state
        .calls
        .live_calls()
        .iter()
        .map(|call| HostedCall {
            call: CallObject::from(call),
            node_id: state.settings.node_id.clone(),
        })
        .collect();
    Ok(axum::Json(HostedCalls { calls }))
}

/// One node of the deployment, as `GET /admin/nodes` lists it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Node {
    id: String,
    started_at: String,
    draining: bool,
    calls: usize,
    participants: usize,
    /// CPU time over the process's lifetime as a share of the machine's cores.
    cpu_ratio: f64,
    http_url: String,
    /// The media addresses the node announces, one per worker.
    #[schema(value_type = Vec<String>)]
    rtc_addrs: Vec<std::net::SocketAddr>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Nodes {
    nodes: Vec<Node>,
}

/// `GET /admin/nodes`: this node (one entry without cluster mode). `cpu_ratio` is the
/// process's CPU time over its lifetime as a share of the machine's cores.
#[utoipa::path(
    get,
    path = "/admin/nodes",
    tag = "admin",
    summary = "List nodes",
    description = "Admin only. The nodes of the deployment: this one without cluster mode.",
    responses(
        (status = 200, body = Nodes),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the token is not an admin's", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn nodes(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
) -> ApiResult<axum::Json<Nodes>> {
    require_admin(&actor, "listing nodes")?;
    let addr = state
        .bound_addr
        .get()
        .copied()
        .unwrap_or(state.settings.http_addr);
    let uptime = (crate::calls::now_ms() - state.started_at).as_seconds_f64();
    let node = Node {
        id: state.settings.node_id.clone(),
        started_at: rfc3339(state.started_at),
        draining: state.drain.is_draining(),
        calls: state.calls.live_call_count(),
        participants: state.calls.joined_participants(),
        cpu_ratio: cpu_ratio(uptime),
        http_url: format!("http://{addr}"),
        rtc_addrs: state.media.engine().announced_addrs(),
    };
    Ok(axum::Json(Nodes { nodes: vec![node] }))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveBody {
    reason: Option<String>,
}

/// `POST /calls/{id}/participants/{user}/remove`.
#[utoipa::path(
    post,
    path = "/calls/{id}/participants/{user}/remove",
    tag = "admin",
    summary = "Remove a participant",
    description = "Admin only. The participant leaves with reason `removed`; its connections are closed.",
    params(
        ("id" = Uuid, Path, description = "The call id (a UUID)"),
        ("user" = String, Path, description = "The participant's user id"),
    ),
    request_body(content = RemoveBody, description = "Optional; an empty body is `{}`"),
    responses(
        (status = 200, body = CallObject),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id or user id, a bad body, or a user not in the call", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the token is not an admin's", body = crate::http::api::openapi::ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`: no such call", body = crate::http::api::openapi::ErrorBody),
        (status = 409, description = "`INVALID_STATE`: the user is not joined", body = crate::http::api::openapi::ErrorBody),
        (status = 410, description = "`CALL_ENDED`: the call is over", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn remove(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    CallUserPath(call_id, user): CallUserPath,
    OptionalJson(body): OptionalJson<RemoveBody>,
) -> ApiResult<axum::Json<CallObject>> {
    require_admin(&actor, "removing a participant")?;
    let reason = check_reason(body.reason)?;
    let call = state.calls.remove(&actor, call_id, &user, reason).await?;
    Ok(axum::Json(CallObject::from(&call)))
}

/// `POST /calls/{id}/participants/{user}/mute`.
#[utoipa::path(
    post,
    path = "/calls/{id}/participants/{user}/mute",
    tag = "admin",
    summary = "Mute a participant's sources",
    description = "Admin only. `true` mutes a source: the server stops forwarding it at once. Only the participant unmutes.",
    params(
        ("id" = Uuid, Path, description = "The call id (a UUID)"),
        ("user" = String, Path, description = "The participant's user id"),
    ),
    request_body = AdminMute,
    responses(
        (status = 200, body = ParticipantObject),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id or user id, a bad body, or a user not in the call", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the token is not an admin's", body = crate::http::api::openapi::ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`: no such call", body = crate::http::api::openapi::ErrorBody),
        (status = 409, description = "`INVALID_STATE`: the user is not joined", body = crate::http::api::openapi::ErrorBody),
        (status = 410, description = "`CALL_ENDED`: the call is over", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn mute(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    CallUserPath(call_id, user): CallUserPath,
    OptionalJson(mute): OptionalJson<AdminMute>,
) -> ApiResult<axum::Json<ParticipantObject>> {
    require_admin(&actor, "muting a participant")?;
    let call = state.calls.admin_mute(&actor, call_id, &user, mute).await?;
    let participant = call
        .participant(user.as_str())
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "participant vanished from its call"))?;
    Ok(axum::Json(ParticipantObject::from(participant)))
}

/// One admin action in a call's history.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ActionObject {
    /// `removed` or `muted`.
    action: String,
    /// The acting admin.
    by: String,
    /// The participant acted on.
    user_id: String,
    at: String,
    /// `{"reason"}` for a removal, the muted sources for a mute.
    detail: Value,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Actions {
    actions: Vec<ActionObject>,
}

/// `GET /calls/{id}/admin-actions`: the call's admin actions, oldest first.
#[utoipa::path(
    get,
    path = "/calls/{id}/admin-actions",
    tag = "admin",
    summary = "Read a call's admin actions",
    description = "Admin only. Removals and mutes of the call, oldest first, with the acting admin.",
    params(("id" = Uuid, Path, description = "The call id (a UUID)")),
    responses(
        (status = 200, body = Actions),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the token is not an admin's", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn actions(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    CallIdPath(call_id): CallIdPath,
) -> ApiResult<axum::Json<Actions>> {
    require_admin(&actor, "reading admin actions")?;
    let actions = state
        .calls
        .admin_actions(call_id)
        .await?
        .into_iter()
        .map(|a| ActionObject {
            action: a.action,
            by: a.by.as_str().to_owned(),
            user_id: a.user_id.as_str().to_owned(),
            at: rfc3339(a.at),
            detail: a.detail,
        })
        .collect();
    Ok(axum::Json(Actions { actions }))
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The process's user and system CPU time (from `/proc/self/stat`) over `uptime_s` and the
/// cores available; 0.0 where that file cannot be read.
fn cpu_ratio(uptime_s: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the file, 12 and 13 after the name.
    let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) else {
        return 0.0;
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let ticks_per_s = 100.0;
    if uptime_s <= 0.0 {
        return 0.0;
    }
    ((utime + stime) / ticks_per_s / uptime_s / cores).clamp(0.0, 1.0)
}
