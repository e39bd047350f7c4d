//! What can go wrong when the async side asks the media engine for something.

use thiserror::Error;

/// An engine command that could not be carried out.
///
/// The variants are split by who is at fault, because the binary maps them to different wire
/// errors: [`EngineError::InvalidSdp`] is the client's (INVALID_ARGUMENT), the unknown-* ones
/// are a state mismatch between signaling and the engine, and the rest are the server's.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The session description could not be parsed or negotiated. Nothing was created or kept.
    #[error("invalid session description: {0}")]
    InvalidSdp(String),
    /// No peer connection of that participant lives in that room.
    #[error("unknown participant {participant:?} in room {room}")]
    UnknownParticipant {
        /// The room that was named.
        room: crate::RoomId,
        /// The participant that was named.
        participant: String,
    },
    /// A publisher offer sends more tracks than a participant may publish. Nothing was created.
    #[error(
        "too many tracks: at most {max_audio} audio and {max_video} video tracks may be published"
    )]
    TooManyTracks {
        /// Most sending audio m-lines allowed.
        max_audio: usize,
        /// Most sending video m-lines allowed (camera and screen).
        max_video: usize,
    },
    /// A subscriber answer arrived but the engine has no offer outstanding for that participant
    /// (a duplicate or late answer); the connection is left as it was.
    #[error("no subscriber offer is pending")]
    NoOfferPending,
    /// The worker thread that owns the room has stopped (shutdown, or a panic).
    #[error("media worker is gone")]
    WorkerGone,
    /// The configuration cannot work, e.g. zero workers or nothing to announce.
    #[error("invalid engine configuration: {0}")]
    Config(String),
    /// Binding or configuring a media socket failed.
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
    /// The WebRTC core refused something that is not the client's fault.
    #[error("webrtc core: {0}")]
    Rtc(String),
}
