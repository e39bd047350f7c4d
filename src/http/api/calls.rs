//! The call operations: initiate, read, accept, reject, join, leave, end, media.
//! Each is a thin shell over [`crate::calls::CallService`]; the WebSocket mirrors them.

use axum::extract::State;
use axum::http::StatusCode;
use confab_signaling::wire::{CallObject, ParticipantObject};
use confab_signaling::{
    Call, CallKind, ConversationId, ErrorCode, LeaveReason, MediaKind, MediaPatch, UserId,
};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::calls::{InitiateRequest, Initiated, now_ms};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{AuthUser, CallIdPath, Json, OptionalJson};
use crate::ice::IceServer;

/// A reason longer than this is refused: it is stored with the call and shown to people.
const MAX_REASON_CHARS: usize = 256;

#[derive(Deserialize)]
pub struct InitiateBody {
    conversation_id: Option<ConversationId>,
    invitees: Vec<UserId>,
    media: MediaKind,
    kind: Option<CallKind>,
}

/// The body of `POST /calls` and of the `call:initiate` ack.
#[derive(Serialize)]
pub struct InitiatedResponse {
    call: CallObject,
    online: Vec<UserId>,
    offline: Vec<UserId>,
}

impl From<Initiated> for InitiatedResponse {
    fn from(initiated: Initiated) -> Self {
        InitiatedResponse {
            call: CallObject::from(&initiated.call),
            online: initiated.online,
            offline: initiated.offline,
        }
    }
}

/// The body of accept and join, REST or WebSocket: the call and the joiner's ICE servers.
#[derive(Serialize)]
pub struct JoinedResponse {
    call: CallObject,
    ice_servers: Vec<IceServer>,
}

impl JoinedResponse {
    pub fn new(state: &AppState, call: &Call, user: &UserId) -> JoinedResponse {
        JoinedResponse {
            call: CallObject::from(call),
            ice_servers: state.ice.servers_for(user.as_str(), now_ms()),
        }
    }
}

#[derive(Default, Deserialize)]
pub struct ReasonBody {
    reason: Option<String>,
}

/// Trims a reason and refuses an over-long one; an empty reason is no reason.
pub fn check_reason(reason: Option<String>) -> ApiResult<Option<String>> {
    let reason = reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(ApiError::invalid_argument(format!(
            "reason is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    Ok(reason)
}

fn call_json(call: &Call) -> axum::Json<CallObject> {
    axum::Json(CallObject::from(call))
}

fn joined(state: &AppState, call: &Call, user: &UserId) -> axum::Json<JoinedResponse> {
    axum::Json(JoinedResponse::new(state, call, user))
}

pub async fn initiate(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    Json(body): Json<InitiateBody>,
) -> ApiResult<(StatusCode, axum::Json<InitiatedResponse>)> {
    let request = InitiateRequest {
        conversation_id: body.conversation_id,
        invitees: body.invitees,
        media: body.media,
        kind: body.kind,
    };
    let initiated = state.calls.initiate(&actor, request).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(InitiatedResponse::from(initiated)),
    ))
}

pub async fn get(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    CallIdPath(call_id): CallIdPath,
) -> ApiResult<axum::Json<CallObject>> {
    Ok(call_json(&state.calls.get(&actor, call_id).await?))
}

pub async fn accept(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    CallIdPath(call_id): CallIdPath,
) -> ApiResult<axum::Json<JoinedResponse>> {
    let call = state.calls.accept(&actor, call_id).await?;
    Ok(joined(&state, &call, &actor.user_id))
}

pub async fn reject(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    CallIdPath(call_id): CallIdPath,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> ApiResult<axum::Json<CallObject>> {
    let reason = check_reason(body.reason)?;
    Ok(call_json(
        &state.calls.reject(&actor, call_id, reason).await?,
    ))
}

pub async fn join(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    CallIdPath(call_id): CallIdPath,
) -> ApiResult<axum::Json<JoinedResponse>> {
    let call = state.calls.join(&actor, call_id).await?;
    Ok(joined(&state, &call, &actor.user_id))
}

pub async fn leave(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    CallIdPath(call_id): CallIdPath,
) -> ApiResult<axum::Json<CallObject>> {
    let call = state
        .calls
        .leave(&actor, call_id, LeaveReason::Left)
        .await?;
    Ok(call_json(&call))
}

pub async fn end(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    CallIdPath(call_id): CallIdPath,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> ApiResult<axum::Json<CallObject>> {
    let reason = check_reason(body.reason)?;
    Ok(call_json(&state.calls.end(&actor, call_id, reason).await?))
}

pub async fn media(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    CallIdPath(call_id): CallIdPath,
    Json(patch): Json<MediaPatch>,
) -> ApiResult<axum::Json<ParticipantObject>> {
    let call = state.calls.set_media(&actor, call_id, patch).await?;
    let participant = call.participant(actor.user_id.as_str()).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Internal,
            "participant vanished from its own call",
        )
    })?;
    Ok(axum::Json(ParticipantObject::from(participant)))
}
