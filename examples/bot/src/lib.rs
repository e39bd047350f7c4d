//! Client bots for Confab: real WebRTC peers on the async `webrtc` crate.
//!
//! They exist so the media path can be exercised end to end without a browser: in tests, and as
//! the building block of a load generator. [`media`] holds the peer logic and is transport
//! agnostic (SDP and candidates in and out as strings); [`signaling`] talks to a Confab server.

pub mod media;
pub mod participant;
pub mod signaling;
pub mod simulcast;
