//! The admin routes of contract section 5 (v2): live calls and nodes, removing and muting a
//! participant. `POST /admin/drain` lives with the drain in [`super::drain`].
//!
//! Every route needs an admin token; a valid token without the admin claim is `FORBIDDEN`,
//! whether or not its user takes part in the call.

use axum::extract::State;
use confab_signaling::wire::{CallObject, ParticipantObject};
use confab_signaling::{Actor, AdminMute, ErrorCode, SignalingError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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
#[derive(Serialize)]
struct HostedCall {
    #[serde(flatten)]
    call: CallObject,
    node_id: String,
}

/// `GET /admin/calls`: every ringing or ongoing call, oldest first. Without cluster mode
/// every call is hosted here.
pub async fn calls(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
) -> ApiResult<axum::Json<Value>> {
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
    Ok(axum::Json(json!({ "calls": calls })))
}

/// `GET /admin/nodes`: this node (one entry without cluster mode). `cpu_ratio` is the
/// process's CPU time over its lifetime as a share of the machine's cores.
pub async fn nodes(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
) -> ApiResult<axum::Json<Value>> {
    require_admin(&actor, "listing nodes")?;
    let addr = state
        .bound_addr
        .get()
        .copied()
        .unwrap_or(state.settings.http_addr);
    let uptime = (crate::calls::now_ms() - state.started_at).as_seconds_f64();
    let node = json!({
        "id": state.settings.node_id,
        "started_at": rfc3339(state.started_at),
        "draining": state.drain.is_draining(),
        "calls": state.calls.live_call_count(),
        "participants": state.calls.joined_participants(),
        "cpu_ratio": cpu_ratio(uptime),
        "http_url": format!("http://{addr}"),
        "rtc_addrs": state.media.engine().announced_addrs(),
    });
    Ok(axum::Json(json!({ "nodes": [node] })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RemoveBody {
    reason: Option<String>,
}

/// `POST /calls/{id}/participants/{user}/remove`.
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

/// `GET /calls/{id}/admin-actions`: the call's admin actions, oldest first.
pub async fn actions(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    CallIdPath(call_id): CallIdPath,
) -> ApiResult<axum::Json<Value>> {
    require_admin(&actor, "reading admin actions")?;
    let actions: Vec<Value> = state
        .calls
        .admin_actions(call_id)
        .await?
        .into_iter()
        .map(|a| {
            json!({
                "action": a.action,
                "by": a.by,
                "user_id": a.user_id,
                "at": rfc3339(a.at),
                "detail": a.detail,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "actions": actions })))
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
