//! The webhook events a call change produces, and their JSON bodies.
//!
//! Events are derived from the call before and after a transition rather than from the
//! WebSocket events, because a receiver keeping accounts needs every seat change: the
//! initiator's join at creation, and the leave of everyone still joined when a call is ended
//! (which sends only `call:ended` over WebSocket).

use confab_signaling::wire::CallObject;
use confab_signaling::{Call, ParticipantStatus};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// The `type` of a webhook event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The first accept: the call went `ongoing`. `data` is the Call.
    CallStarted,
    /// The call reached its final status. `data` is the Call.
    CallEnded,
    /// Someone took a seat. `data` is `{call_id, user_id, name}`.
    ParticipantJoined,
    /// Someone gave up their seat. `data` is `{call_id, user_id, name, reason?}`.
    ParticipantLeft,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::CallStarted => "call.started",
            EventType::CallEnded => "call.ended",
            EventType::ParticipantJoined => "participant.joined",
            EventType::ParticipantLeft => "participant.left",
        }
    }
}

/// One event, ready to be queued for every receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    pub id: Uuid,
    pub kind: EventType,
    pub call_id: Uuid,
    pub created_at: OffsetDateTime,
    pub data: Value,
}

impl WebhookEvent {
    fn new(kind: EventType, call_id: Uuid, created_at: OffsetDateTime, data: Value) -> Self {
        WebhookEvent {
            id: Uuid::new_v4(),
            kind,
            call_id,
            created_at,
            data,
        }
    }

    /// The request body: `{"id", "type", "created_at", "data"}`. Fixed when the event is
    /// queued, so that every attempt sends (and signs) the same bytes.
    pub fn body(&self) -> String {
        let created_at = self
            .created_at
            .format(&Rfc3339)
            .unwrap_or_else(|_| self.created_at.to_string());
        json!({
            "id": self.id,
            "type": self.kind.as_str(),
            "created_at": created_at,
            "data": self.data,
        })
        .to_string()
    }
}

/// The events of one transition from `before` (`None` for a new call) to `after`, in the order
/// a receiver should see them: the start, then seat changes in participant order, then the end.
pub fn events_of_change(
    before: Option<&Call>,
    after: &Call,
    at: OffsetDateTime,
) -> Vec<WebhookEvent> {
    let mut events = Vec::new();
    let call_data = || serde_json::to_value(CallObject::from(after)).unwrap_or(Value::Null);
    let started_now = after.started_at.is_some() && before.is_none_or(|b| b.started_at.is_none());
    if started_now {
        events.push(WebhookEvent::new(
            EventType::CallStarted,
            after.id,
            at,
            call_data(),
        ));
    }
    let was_joined = |user: &str| {
        before
            .and_then(|b| b.participant(user))
            .is_some_and(|p| p.status == ParticipantStatus::Joined)
    };
    for p in &after.participants {
        let joined = p.status == ParticipantStatus::Joined;
        if joined == was_joined(p.user_id.as_str()) {
            continue;
        }
        let mut data = Map::new();
        data.insert("call_id".into(), json!(after.id));
        data.insert("user_id".into(), json!(p.user_id));
        data.insert("name".into(), json!(p.name));
        let kind = if joined {
            EventType::ParticipantJoined
        } else {
            if let Some(reason) = p.left_reason {
                data.insert("reason".into(), json!(reason));
            }
            EventType::ParticipantLeft
        };
        events.push(WebhookEvent::new(kind, after.id, at, Value::Object(data)));
    }
    let ended_now = !after.status.is_live() && before.is_none_or(|b| b.status.is_live());
    if ended_now {
        events.push(WebhookEvent::new(
            EventType::CallEnded,
            after.id,
            at,
            call_data(),
        ));
    }
    events
}
