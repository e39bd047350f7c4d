//! A WebSocket request becomes the same call operation as its REST twin, answering with the
//! same body in its `ack`.

use confab_signaling::protocol::ClientRequest;
use confab_signaling::wire::{CallObject, ParticipantObject};
use confab_signaling::{Actor, ErrorCode, LeaveReason, SignalingError};
use serde_json::Value;

use crate::app::AppState;
use crate::calls::{CallResult, InitiateRequest};
use crate::delivery::{Reply, SocketId};
use crate::http::api::calls::{InitiatedResponse, JoinedResponse, check_reason};

fn to_value<T: serde::Serialize>(body: &T) -> CallResult<Value> {
    serde_json::to_value(body).map_err(|e| {
        tracing::error!(error = %e, "encoding an ack failed");
        SignalingError::new(ErrorCode::Internal, "could not encode the answer")
    })
}

pub async fn handle(
    state: &AppState,
    actor: &Actor,
    socket: SocketId,
    request: ClientRequest,
) -> CallResult<Reply> {
    let calls = &state.calls;
    let media = &state.media;
    let me = &actor.user_id;
    let data = match request {
        ClientRequest::Initiate(data) => {
            let initiated = calls
                .initiate(
                    actor,
                    InitiateRequest {
                        conversation_id: data.conversation_id,
                        invitees: data.invitees,
                        media: data.media,
                        kind: data.kind,
                    },
                )
                .await?;
            media.bind_socket(initiated.call.id, me, socket);
            to_value(&InitiatedResponse::from(initiated))
        }
        ClientRequest::Accept(data) => {
            let call = calls.accept(actor, data.call_id).await?;
            media.bind_socket(call.id, me, socket);
            to_value(&JoinedResponse::new(state, &call, &actor.user_id))
        }
        ClientRequest::Join(data) => {
            let call = calls.join(actor, data.call_id).await?;
            media.bind_socket(call.id, me, socket);
            to_value(&JoinedResponse::new(state, &call, &actor.user_id))
        }
        ClientRequest::Reject(data) => {
            let reason = check_reason(data.reason)?;
            let call = calls.reject(actor, data.call_id, reason).await?;
            to_value(&CallObject::from(&call))
        }
        ClientRequest::Leave(data) => {
            let call = calls.leave(actor, data.call_id, LeaveReason::Left).await?;
            to_value(&CallObject::from(&call))
        }
        ClientRequest::End(data) => {
            let reason = check_reason(data.reason)?;
            let call = calls.end(actor, data.call_id, reason).await?;
            to_value(&CallObject::from(&call))
        }
        ClientRequest::Media(data) => {
            let call = calls.set_media(actor, data.call_id, data.patch).await?;
            let me = call.participant(actor.user_id.as_str()).ok_or_else(|| {
                SignalingError::new(
                    ErrorCode::Internal,
                    "participant vanished from its own call",
                )
            })?;
            to_value(&ParticipantObject::from(me))
        }
        ClientRequest::Offer(d) => {
            return media
                .offer(actor, Some(socket), d.call_id, d.target, d.sdp)
                .await;
        }
        ClientRequest::Answer(d) => media.answer(actor, d.call_id, d.target, d.sdp).await,
        ClientRequest::Candidate(d) => {
            media
                .candidate(actor, d.call_id, d.target, d.candidate)
                .await
        }
        ClientRequest::Data(d) => {
            calls.relay_data(actor, d.call_id, d.payload, d.to).await?;
            Ok(serde_json::json!({}))
        }
        ClientRequest::Subscribe(d) => {
            media
                .subscribe(actor, d.call_id, &d.user_id, d.source, d.quality)
                .await
        }
    };
    data.map(Reply::from)
}
