//! Where calls are decided.
//!
//! This crate holds the call lifecycle of the Confab contract as plain, synchronous code: no
//! sockets, no clocks, no webrtc. Every operation takes the current time as an argument and
//! returns either a refusal with a contract error code, or the call's new snapshot plus the
//! events that the transition produced. The binary persists the snapshot and delivers the
//! events; the SFU forwards media. Nothing here needs either of them to be tested.

pub mod book;
pub mod error;
pub mod events;
pub mod model;
pub mod protocol;
pub mod wire;

pub use book::{CallBook, Limits, Outcome};
pub use error::{ErrorCode, SignalingError};
pub use model::*;
