//! Where media is forwarded.
//!
//! The SFU knows rooms, peers and tracks; it knows nothing of calls, users' rights or the
//! store. The media engine drives webrtc-rs's sans-I/O core from Confab's own UDP loop.
