//! The JSON objects of the contract (section 4), built from the model.
//!
//! REST responses and WebSocket acks carry exactly these shapes; the field names and the
//! RFC 3339 UTC times are part of the wire contract.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{Call, ConversationId};
use crate::model::{
    CallKind, CallStatus, Direction, MediaKind, Participant, ParticipantStatus, UserId,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParticipantObject {
    pub user_id: UserId,
    pub name: String,
    pub status: ParticipantStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub joined_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub left_at: Option<OffsetDateTime>,
    pub audio_muted: bool,
    pub video_enabled: bool,
    pub screen_sharing: bool,
}

impl From<&Participant> for ParticipantObject {
    fn from(p: &Participant) -> Self {
        Self {
            user_id: p.user_id.clone(),
            name: p.name.clone(),
            status: p.status,
            joined_at: p.joined_at,
            left_at: p.left_at,
            audio_muted: p.media.audio_muted,
            video_enabled: p.media.video_enabled,
            screen_sharing: p.media.screen_sharing,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallObject {
    pub id: Uuid,
    pub conversation_id: Option<ConversationId>,
    pub kind: CallKind,
    pub media: MediaKind,
    pub initiated_by: UserId,
    pub status: CallStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    pub duration_s: i64,
    pub end_reason: Option<String>,
    pub participants: Vec<ParticipantObject>,
    /// Only in history listings: which side of the call the viewer was on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
}

impl From<&Call> for CallObject {
    fn from(c: &Call) -> Self {
        Self {
            id: c.id,
            conversation_id: c.conversation_id.clone(),
            kind: c.kind,
            media: c.media,
            initiated_by: c.initiated_by.clone(),
            status: c.status,
            created_at: c.created_at,
            started_at: c.started_at,
            ended_at: c.ended_at,
            duration_s: c.duration_s(),
            end_reason: c.end_reason.clone(),
            participants: c.participants.iter().map(ParticipantObject::from).collect(),
            direction: None,
        }
    }
}

impl CallObject {
    pub fn with_direction(mut self, viewer: &str) -> Self {
        self.direction = Some(if self.initiated_by.as_str() == viewer {
            Direction::Outgoing
        } else {
            Direction::Incoming
        });
        self
    }
}
