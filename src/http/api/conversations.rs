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

#[derive(Deserialize)]
pub struct PutBody {
    name: Option<String>,
    members: Vec<UserId>,
}

#[derive(Serialize)]
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

pub async fn get(
    State(state): State<AppState>,
    AuthUser(actor): AuthUser,
    ConversationIdPath(id): ConversationIdPath,
) -> ApiResult<axum::Json<ConversationObject>> {
    Ok(axum::Json(
        readable(&state, &actor, id.as_str()).await?.into(),
    ))
}

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
