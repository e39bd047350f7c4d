//! The call as Confab remembers it: statuses, participants and media state.
//!
//! These are plain data. The rules that move a call from one status to the next live in
//! [`crate::book`]; the JSON shape clients see lives in [`crate::wire`]. Keeping the three apart
//! lets the store rebuild a `Call` from rows without going through the state machine.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{ErrorCode, SignalingError};

/// A user or conversation id: opaque, 1..=128 characters of `[A-Za-z0-9._:@-]`.
///
/// Validated once at the edge so that everything behind it can trust the string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(value_type = String, pattern = "^[A-Za-z0-9._:@-]{1,128}$")
)]
pub struct OpaqueId(String);

impl OpaqueId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(value: &str) -> Result<Self, SignalingError> {
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-')
            });
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(SignalingError::new(
                ErrorCode::InvalidArgument,
                format!("invalid id {value:?}: expected 1..128 characters of [A-Za-z0-9._:@-]"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for OpaqueId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        OpaqueId::parse(&s).map_err(|e| serde::de::Error::custom(e.message))
    }
}

impl fmt::Display for OpaqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for OpaqueId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

pub type UserId = OpaqueId;
pub type ConversationId = OpaqueId;
pub type CallId = Uuid;

/// Defines a string enum whose wire names are fixed by the contract, with `as_str`/`FromStr`
/// so the store can keep the same names in its TEXT columns.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = SignalingError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(SignalingError::new(
                        ErrorCode::InvalidArgument,
                        format!(concat!("unknown ", stringify!($name), " {:?}"), other),
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// Direct calls have exactly one invitee; group calls belong to a conversation.
    CallKind { Direct = "direct", Group = "group" }
);

wire_enum!(
    /// What the call was started as; a video call may still have cameras off.
    MediaKind { Audio = "audio", Video = "video" }
);

wire_enum!(
    CallStatus {
        Ringing = "ringing",
        Ongoing = "ongoing",
        Completed = "completed",
        Missed = "missed",
        Rejected = "rejected",
        Cancelled = "cancelled",
        Busy = "busy",
        Failed = "failed",
    }
);

impl CallStatus {
    /// A live call is one that can still change: ringing or ongoing.
    pub fn is_live(self) -> bool {
        matches!(self, CallStatus::Ringing | CallStatus::Ongoing)
    }
}

wire_enum!(
    ParticipantStatus {
        Invited = "invited",
        Ringing = "ringing",
        Joined = "joined",
        Left = "left",
        Declined = "declined",
        Missed = "missed",
        Busy = "busy",
    }
);

wire_enum!(
    /// Why a participant stopped being joined (`call:participant-left`).
    LeaveReason { Left = "left", Disconnected = "disconnected", Removed = "removed" }
);

/// Why a call ended: `end_reason` of the call and `reason` of `call:ended` (contract section 6).
///
/// Either the text the person who rejected or ended the call gave, or one of the contract's
/// fixed words. `Drained` and `NodeLost` belong to draining and cluster mode; they are here so
/// that the type already says everything a reason can be.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The caller's own text (`call:end`/`call:reject` `reason`).
    Given(String),
    /// Ended by `call:end` without a reason.
    Ended,
    /// The leave of the last one who had to stay (`call:leave`).
    Left,
    /// The ring timeout passed with no accept.
    Timeout,
    /// Rejected without a reason.
    Rejected,
    /// A direct call to a user joined elsewhere.
    Busy,
    /// A participant's disconnect grace ran out and that ended the call.
    Disconnected,
    /// The node hosting the call drained.
    Drained,
    /// The node hosting the call was lost.
    NodeLost,
    /// The call was live when the server stopped; recorded at the next start.
    ServerRestart,
}

impl EndReason {
    /// Every fixed word, in the contract's order.
    pub const FIXED: &'static [EndReason] = &[
        EndReason::Ended,
        EndReason::Left,
        EndReason::Timeout,
        EndReason::Rejected,
        EndReason::Busy,
        EndReason::Disconnected,
        EndReason::Drained,
        EndReason::NodeLost,
        EndReason::ServerRestart,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            EndReason::Given(text) => text,
            EndReason::Ended => "ended",
            EndReason::Left => "left",
            EndReason::Timeout => "timeout",
            EndReason::Rejected => "rejected",
            EndReason::Busy => "busy",
            EndReason::Disconnected => "disconnected",
            EndReason::Drained => "drained",
            EndReason::NodeLost => "node_lost",
            EndReason::ServerRestart => "server_restart",
        }
    }

    /// The caller's text, or `fallback` when it gave none.
    pub fn given_or(text: Option<String>, fallback: EndReason) -> EndReason {
        text.map_or(fallback, EndReason::Given)
    }
}

impl From<LeaveReason> for EndReason {
    /// A leave that ends the call ends it for the same reason. An admin removing the last
    /// participant ends the call as `call:end` would.
    fn from(reason: LeaveReason) -> Self {
        match reason {
            LeaveReason::Left => EndReason::Left,
            LeaveReason::Disconnected => EndReason::Disconnected,
            LeaveReason::Removed => EndReason::Ended,
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EndReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

wire_enum!(
    /// Which side of the call the viewing user was on.
    Direction { Incoming = "incoming", Outgoing = "outgoing" }
);

/// A participant's media switches, as the participant last announced them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaState {
    pub audio_muted: bool,
    pub video_enabled: bool,
    pub screen_sharing: bool,
}

impl MediaState {
    /// Everyone starts unmuted, with the camera on only in a video call.
    pub fn initial(media: MediaKind) -> Self {
        Self {
            audio_muted: false,
            video_enabled: media == MediaKind::Video,
            screen_sharing: false,
        }
    }
}

/// A change to some of the media switches; absent fields stay as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MediaPatch {
    pub audio_muted: Option<bool>,
    pub video_enabled: Option<bool>,
    pub screen_sharing: Option<bool>,
}

impl MediaPatch {
    pub fn is_empty(&self) -> bool {
        self.audio_muted.is_none() && self.video_enabled.is_none() && self.screen_sharing.is_none()
    }

    pub fn apply(&self, state: MediaState) -> MediaState {
        MediaState {
            audio_muted: self.audio_muted.unwrap_or(state.audio_muted),
            video_enabled: self.video_enabled.unwrap_or(state.video_enabled),
            screen_sharing: self.screen_sharing.unwrap_or(state.screen_sharing),
        }
    }
}

/// The sources an admin mutes (`POST /calls/{id}/participants/{user}/mute`): `true` mutes,
/// `false` or absent leaves the source as it is. An admin cannot unmute: a muted source is
/// unmuted only by the participant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdminMute {
    pub audio: Option<bool>,
    pub video: Option<bool>,
    pub screen: Option<bool>,
}

impl AdminMute {
    /// Whether the request mutes anything at all.
    pub fn mutes_something(&self) -> bool {
        [self.audio, self.video, self.screen].contains(&Some(true))
    }

    /// The switches after the mute: a muted microphone, a camera and a screen share off.
    pub fn apply(&self, state: MediaState) -> MediaState {
        MediaState {
            audio_muted: state.audio_muted || self.audio == Some(true),
            video_enabled: state.video_enabled && self.video != Some(true),
            screen_sharing: state.screen_sharing && self.screen != Some(true),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Participant {
    pub user_id: UserId,
    /// Display name; the user id until the user's own token tells us better.
    pub name: String,
    pub status: ParticipantStatus,
    /// Time of the latest join (a group participant may leave and join again).
    pub joined_at: Option<OffsetDateTime>,
    pub left_at: Option<OffsetDateTime>,
    pub left_reason: Option<LeaveReason>,
    pub media: MediaState,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: CallId,
    pub conversation_id: Option<ConversationId>,
    pub kind: CallKind,
    pub media: MediaKind,
    pub initiated_by: UserId,
    pub status: CallStatus,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub ended_at: Option<OffsetDateTime>,
    pub end_reason: Option<String>,
    /// Who ended it, when a person did (`None` for timeouts and automatic endings).
    pub ended_by: Option<UserId>,
    /// The initiator first, then invitees in invitation order, then later joiners.
    pub participants: Vec<Participant>,
    /// Bumped by every change; the store keeps only the newest snapshot of a call, so
    /// writes that finish out of order cannot roll a call back.
    pub version: i64,
}

impl Call {
    pub fn participant(&self, user: &str) -> Option<&Participant> {
        self.participants
            .iter()
            .find(|p| p.user_id.as_str() == user)
    }

    pub fn participant_mut(&mut self, user: &str) -> Option<&mut Participant> {
        self.participants
            .iter_mut()
            .find(|p| p.user_id.as_str() == user)
    }

    pub fn is_participant(&self, user: &str) -> bool {
        self.participant(user).is_some()
    }

    pub fn joined(&self) -> impl Iterator<Item = &Participant> {
        self.participants
            .iter()
            .filter(|p| p.status == ParticipantStatus::Joined)
    }

    /// Whole seconds between start and end; 0 for a call that never started.
    pub fn duration_s(&self) -> i64 {
        match (self.started_at, self.ended_at) {
            (Some(start), Some(end)) => (end - start).whole_seconds().max(0),
            _ => 0,
        }
    }

    pub fn direction_for(&self, viewer: &str) -> Direction {
        if self.initiated_by.as_str() == viewer {
            Direction::Outgoing
        } else {
            Direction::Incoming
        }
    }
}

/// A conversation as the state machine needs it: who may call whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: ConversationId,
    pub name: Option<String>,
    pub members: Vec<UserId>,
}

impl Conversation {
    pub fn is_member(&self, user: &str) -> bool {
        self.members.iter().any(|m| m.as_str() == user)
    }
}

/// The person acting: their id, display name and whether their token is a service token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user_id: UserId,
    pub name: Option<String>,
    pub admin: bool,
}

impl Actor {
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.user_id.as_str().to_owned())
    }
}
