//! The call operations: initiate, read, accept, reject, join, leave, end, media.
//! Each is a thin shell over [`crate::calls::CallService`]; the WebSocket mirrors them.

use axum::extract::State;
use axum::http::StatusCode;
use confab_signaling::wire::{CallObject, ParticipantObject};
use confab_signaling::{
    Call, CallKind, ConversationId, ErrorCode, LeaveReason, MediaKind, MediaPatch, SignalingError,
    UserId,
};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::calls::{InitiateRequest, Initiated, now_ms};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{AuthUser, CallIdPath, Json, OptionalJson};
use crate::ice::IceServer;

/// A reason longer than this is refused: it is stored with the call and shown to people.
const MAX_REASON_CHARS: usize = 256;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct InitiateBody {
    conversation_id: Option<ConversationId>,
    invitees: Vec<UserId>,
    media: MediaKind,
    kind: Option<CallKind>,
}

/// The body of `POST /calls` and of the `call:initiate` ack.
#[derive(Serialize, utoipa::ToSchema)]
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
#[derive(Serialize, utoipa::ToSchema)]
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

#[derive(Default, Deserialize, utoipa::ToSchema)]
pub struct ReasonBody {
    reason: Option<String>,
}

/// Trims a reason and refuses an over-long one; an empty reason is no reason.
pub fn check_reason(reason: Option<String>) -> Result<Option<String>, SignalingError> {
    let reason = reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(SignalingError::invalid_argument(format!(
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

#[utoipa::path(
    post,
    path = "/calls",
    tag = "calls",
    summary = "Initiate a call",
    description = "Starts a direct call (one invitee) or a group call in a conversation; the online invitees are rung.",
    request_body = InitiateBody,
    responses(
        (status = 201, description = "The call, and which invitees were online", body = InitiatedResponse),
        (status = 400, description = "`INVALID_ARGUMENT`: a malformed body, or a direct call without exactly one invitee", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`NOT_A_MEMBER`: the caller or an invitee is not a member of the conversation", body = crate::http::api::openapi::ErrorBody),
        (status = 404, description = "`CONVERSATION_NOT_FOUND`: no such conversation", body = crate::http::api::openapi::ErrorBody),
        (status = 409, description = "`ACTIVE_CALL_EXISTS` or `USER_BUSY`, with `details.call_id`; `ROOM_FULL`", body = crate::http::api::openapi::ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: the body is over 64 KiB", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
        (status = 503, description = "`UNAVAILABLE`: this node is draining", body = crate::http::api::openapi::ErrorBody),
    ),
)]
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

#[utoipa::path(
    get,
    path = "/calls/{id}",
    operation_id = "get_call",
    tag = "calls",
    summary = "Read a call",
    description = "Participants and admins.",
    params(("id" = Uuid, Path, description = "The call id (a UUID)")),
    responses(
        (status = 200, body = CallObject),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`: no such call, or not one the caller may see", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    CallIdPath(call_id): CallIdPath,
) -> ApiResult<axum::Json<CallObject>> {
    Ok(call_json(&state.calls.get(&actor, call_id).await?))
}

#[utoipa::path(
    post,
    path = "/calls/{id}/accept",
    tag = "calls",
    summary = "Accept a call",
    description = "An invitee accepts a ringing call and joins it.",
    params(("id" = Uuid, Path, description = "The call id (a UUID)")),
    responses(
        (status = 200, description = "The call and the joiner's ICE servers", body = JoinedResponse),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`FORBIDDEN` or `NOT_A_MEMBER`: the caller may not do this to this call", body = crate::http::api::openapi::ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`: no such call, or not one the caller may see", body = crate::http::api::openapi::ErrorBody),
        (status = 409, description = "`INVALID_STATE`: the call or the caller is not in a state that allows this", body = crate::http::api::openapi::ErrorBody),
        (status = 410, description = "`CALL_ENDED`: the call has ended", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn accept(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    CallIdPath(call_id): CallIdPath,
) -> ApiResult<axum::Json<JoinedResponse>> {
    let call = state.calls.accept(&actor, call_id).await?;
    Ok(joined(&state, &call, &actor.user_id))
}

#[utoipa::path(
    post,
    path = "/calls/{id}/reject",
    tag = "calls",
    summary = "Reject a call",
    description = "An invitee declines a ringing call. The body is optional.",
    params(("id" = Uuid, Path, description = "The call id (a UUID)")),
    request_body = Option<ReasonBody>,
    responses(
        (status = 200, body = CallObject),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id, or a reason over 256 characters", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`FORBIDDEN` or `NOT_A_MEMBER`: the caller may not do this to this call", body = crate::http::api::openapi::ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`: no such call, or not one the caller may see", body = crate::http::api::openapi::ErrorBody),
        (status = 409, description = "`INVALID_STATE`: the call or the caller is not in a state that allows this", body = crate::http::api::openapi::ErrorBody),
        (status = 410, description = "`CALL_ENDED`: the call has ended", body = crate::http::api::openapi::ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: the body is over 64 KiB", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
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

#[utoipa::path(
    post,
    path = "/calls/{id}/join",
    tag = "calls",
    summary = "Join a call",
    description = "A participant (or, in a group call, a member of its conversation) joins a live call.",
    params(("id" = Uuid, Path, description = "The call id (a UUID)")),
    responses(
        (status = 200, description = "The call and the joiner's ICE servers", body = JoinedResponse),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`FORBIDDEN` or `NOT_A_MEMBER`: the caller may not do this to this call", body = crate::http::api::openapi::ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`: no such call, or not one the caller may see", body = crate::http::api::openapi::ErrorBody),
        (status = 409, description = "`INVALID_STATE`, `USER_BUSY` (with `details.call_id`) or `ROOM_FULL`", body = crate::http::api::openapi::ErrorBody),
        (status = 410, description = "`CALL_ENDED`: the call has ended", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn join(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    CallIdPath(call_id): CallIdPath,
) -> ApiResult<axum::Json<JoinedResponse>> {
    let call = state.calls.join(&actor, call_id).await?;
    Ok(joined(&state, &call, &actor.user_id))
}

#[utoipa::path(
    post,
    path = "/calls/{id}/leave",
    tag = "calls",
    summary = "Leave a call",
    description = "A joined participant leaves.",
    params(("id" = Uuid, Path, description = "The call id (a UUID)")),
    responses(
        (status = 200, body = CallObject),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`FORBIDDEN` or `NOT_A_MEMBER`: the caller may not do this to this call", body = crate::http::api::openapi::ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`: no such call, or not one the caller may see", body = crate::http::api::openapi::ErrorBody),
        (status = 409, description = "`INVALID_STATE`: the call or the caller is not in a state that allows this", body = crate::http::api::openapi::ErrorBody),
        (status = 410, description = "`CALL_ENDED`: the call has ended", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
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

#[utoipa::path(
    post,
    path = "/calls/{id}/end",
    tag = "calls",
    summary = "End a call",
    description = "The initiator, a participant of a direct call, or an admin ends the call for everyone. The body is optional.",
    params(("id" = Uuid, Path, description = "The call id (a UUID)")),
    request_body = Option<ReasonBody>,
    responses(
        (status = 200, body = CallObject),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id, or a reason over 256 characters", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`FORBIDDEN` or `NOT_A_MEMBER`: the caller may not do this to this call", body = crate::http::api::openapi::ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`: no such call, or not one the caller may see", body = crate::http::api::openapi::ErrorBody),
        (status = 409, description = "`INVALID_STATE`: the call or the caller is not in a state that allows this", body = crate::http::api::openapi::ErrorBody),
        (status = 410, description = "`CALL_ENDED`: the call has ended", body = crate::http::api::openapi::ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: the body is over 64 KiB", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn end(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    CallIdPath(call_id): CallIdPath,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> ApiResult<axum::Json<CallObject>> {
    let reason = check_reason(body.reason)?;
    Ok(call_json(&state.calls.end(&actor, call_id, reason).await?))
}

#[utoipa::path(
    patch,
    path = "/calls/{id}/media",
    tag = "calls",
    summary = "Change own media switches",
    description = "A joined participant announces its mute, camera and screen-share state; absent fields stay as they are.",
    params(("id" = Uuid, Path, description = "The call id (a UUID)")),
    request_body = MediaPatch,
    responses(
        (status = 200, description = "The caller as a participant", body = ParticipantObject),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id, or a malformed body", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`FORBIDDEN` or `NOT_A_MEMBER`: the caller may not do this to this call", body = crate::http::api::openapi::ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`: no such call, or not one the caller may see", body = crate::http::api::openapi::ErrorBody),
        (status = 409, description = "`INVALID_STATE`: the call or the caller is not in a state that allows this", body = crate::http::api::openapi::ErrorBody),
        (status = 410, description = "`CALL_ENDED`: the call has ended", body = crate::http::api::openapi::ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: the body is over 64 KiB", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
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
