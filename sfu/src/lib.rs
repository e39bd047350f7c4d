//! Where media is forwarded.
//!
//! The SFU knows rooms, peers and tracks; it knows nothing of calls, users' rights or the
//! store. The media engine drives webrtc-rs's sans-I/O core from Confab's own UDP loop: each
//! worker thread owns one socket and every peer connection of the rooms placed on it, so the
//! rest of the server talks to it only through [`MediaEngine`]'s commands and [`EngineEvent`]s
//! and never sees a webrtc type.

mod backlog;
mod bwe;
mod demux;
mod engine;
mod error;
mod forwarder;
mod layers;
mod peer;
mod probe;
mod quality;
mod repair;
mod sdp;
mod sender_report;
mod speaker;
mod transport_cc;
mod udp;
mod vp8;
mod worker;

/// What the forwarding benchmark (`benches/forwarding.rs`) needs from the crate's internals.
/// Not part of the crate's interface.
#[doc(hidden)]
pub mod bench_support {
    pub use crate::forwarder::Forwarder;
    pub use crate::vp8::Vp8Rewriter;
}

pub use engine::{
    EngineConfig, EngineEvent, EngineEvents, EngineStats, FORWARDING_LATENCY_BOUNDS_US,
    ForwardDrops, ForwardedTrack, LatencyHistogram, MediaEngine, MediaKind, PeerRole, ProbeCounts,
    QualityDirection, QualityReport, RoomId, TrackSource, TrackStats, VideoLayerCounts,
};
pub use error::EngineError;
pub use layers::VideoQuality;
pub use sdp::{ServerCandidate, server_candidates};
pub use worker::RENEGOTIATION_GAP;
