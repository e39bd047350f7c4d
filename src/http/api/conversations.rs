//! Conversations: who may call whom. The host application owns them and mirrors them here
//! with an admin token; members may read them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use confab_signaling::{Actor, Conversation, ConversationId, ErrorCode, SignalingError, UserId};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::calls::now_ms;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{AuthUser, ConversationIdPath, Json};
use confab_signaling::wire::CallObject;

/// A conversation with more members than this is refused; calls are capped far lower anyway.
const MAX_MEMBERS: usize = 10_000;
const MAX_NAME_CHARS: usize = 256;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PutBody {
    name: Option<String>,
    members: Vec<UserId>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ConversationObject {
    id: ConversationId,
    name: Option<String>,
    members: Vec<UserId>,
}

impl From<Conversation> for ConversationObject {
    fn from(c: Conversation) -> Self {
        ConversationObject {
            id: c.id,
            name: c.name,
            members: c.members,
        }
    }
}

fn require_admin(actor: &Actor) -> ApiResult<()> {
    if actor.admin {
        Ok(())
    } else {
        Err(SignalingError::forbidden("this needs an admin token").into())
    }
}

/// Loads a conversation the actor may read: a member, or an admin.
async fn readable(state: &AppState, actor: &Actor, id: &str) -> ApiResult<Conversation> {
    let conversation = state.store.get_conversation(id).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::ConversationNotFound,
            format!("no conversation {id}"),
        )
    })?;
    if actor.admin || conversation.is_member(actor.user_id.as_str()) {
        Ok(conversation)
    } else {
        Err(ApiError::new(
            ErrorCode::NotAMember,
            "you are not a member of this conversation",
        ))
    }
}

#[utoipa::path(
    put,
    path = "/conversations/{id}",
    operation_id = "put_conversation",
    tag = "conversations",
    summary = "Create or replace a conversation",
    description = "Admin only. The host application mirrors its conversations here; members are deduplicated.",
    params(("id" = String, Path, description = "The conversation id: 1..128 of `[A-Za-z0-9._:@-]`")),
    request_body = PutBody,
    responses(
        (status = 200, body = ConversationObject),
        (status = 400, description = "`INVALID_ARGUMENT`: a malformed id or body, too many members or a name over 256 characters", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the token is not an admin's", body = crate::http::api::openapi::ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: the body is over 64 KiB", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn put(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    ConversationIdPath(id): ConversationIdPath,
    Json(body): Json<PutBody>,
) -> ApiResult<axum::Json<ConversationObject>> {
    require_admin(&actor)?;
    if body.members.len() > MAX_MEMBERS {
        return Err(ApiError::invalid_argument(format!(
            "a conversation has at most {MAX_MEMBERS} members"
        )));
    }
    let name = body.name.filter(|n| !n.trim().is_empty());
    if name
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NAME_CHARS)
    {
        return Err(ApiError::invalid_argument(format!(
            "name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    let mut members = body.members;
    members.sort();
    members.dedup();
    let conversation = Conversation { id, name, members };
    state
        .store
        .put_conversation(&conversation, now_ms())
        .await?;
    Ok(axum::Json(conversation.into()))
}

#[utoipa::path(
    get,
    path = "/conversations/{id}",
    operation_id = "get_conversation",
    tag = "conversations",
    summary = "Read a conversation",
    description = "Members and admins.",
    params(("id" = String, Path, description = "The conversation id: 1..128 of `[A-Za-z0-9._:@-]`")),
    responses(
        (status = 200, body = ConversationObject),
        (status = 400, description = "`INVALID_ARGUMENT`: a malformed id", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`NOT_A_MEMBER`: the caller is neither a member nor an admin", body = crate::http::api::openapi::ErrorBody),
        (status = 404, description = "`CONVERSATION_NOT_FOUND`: no such conversation", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    ConversationIdPath(id): ConversationIdPath,
) -> ApiResult<axum::Json<ConversationObject>> {
    Ok(axum::Json(
        readable(&state, &actor, id.as_str()).await?.into(),
    ))
}

#[utoipa::path(
    delete,
    path = "/conversations/{id}",
    operation_id = "delete_conversation",
    tag = "conversations",
    summary = "Delete a conversation",
    description = "Admin only.",
    params(("id" = String, Path, description = "The conversation id: 1..128 of `[A-Za-z0-9._:@-]`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`INVALID_ARGUMENT`: a malformed id", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`FORBIDDEN`: the token is not an admin's", body = crate::http::api::openapi::ErrorBody),
        (status = 404, description = "`CONVERSATION_NOT_FOUND`: no such conversation", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    ConversationIdPath(id): ConversationIdPath,
) -> ApiResult<Response> {
    require_admin(&actor)?;
    if state.store.delete_conversation(id.as_str()).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::new(
            ErrorCode::ConversationNotFound,
            format!("no conversation {id}"),
        ))
    }
}

#[utoipa::path(
    get,
    path = "/conversations/{id}/active-call",
    tag = "conversations",
    summary = "The ringing or ongoing call of a conversation",
    description = "Members and admins.",
    params(("id" = String, Path, description = "The conversation id: 1..128 of `[A-Za-z0-9._:@-]`")),
    responses(
        (status = 200, body = CallObject),
        (status = 400, description = "`INVALID_ARGUMENT`: a malformed id", body = crate::http::api::openapi::ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: no, an invalid or an expired token", body = crate::http::api::openapi::ErrorBody),
        (status = 403, description = "`NOT_A_MEMBER`: the caller is neither a member nor an admin", body = crate::http::api::openapi::ErrorBody),
        (status = 404, description = "`CONVERSATION_NOT_FOUND`: no such conversation", body = crate::http::api::openapi::ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`: the conversation has no live call", body = crate::http::api::openapi::ErrorBody),
        (status = 500, description = "`INTERNAL`: the history store is unavailable", body = crate::http::api::openapi::ErrorBody),
    ),
)]
pub async fn active_call(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    ConversationIdPath(id): ConversationIdPath,
) -> ApiResult<axum::Json<CallObject>> {
    readable(&state, &actor, id.as_str()).await?;
    state
        .calls
        .active_call_of_conversation(id.as_str())
        .map(|call| axum::Json(CallObject::from(&call)))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::CallNotFound,
                "this conversation has no ringing or ongoing call",
            )
        })
}
