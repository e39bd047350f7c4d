//! The measurement stamp every generated payload carries in its last bytes.
//!
//! Receivers learn from it which publisher stream a packet belongs to, its position in that
//! stream and when it was sent, so latency and loss need no cooperation from the server. It sits
//! at the tail so the codec-specific head (the VP8 payload descriptor and frame tag) stays intact.

use std::sync::OnceLock;
use std::time::Instant;

/// Bytes the stamp occupies: send time (8), publisher index (4), stream (1), sequence (4).
pub const STAMP_LEN: usize = 17;

/// A generated packet's identity and send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Microseconds since [`epoch`] when the packet was handed to the publisher's connection.
    pub sent_us: u64,
    pub publisher: u32,
    pub stream: u8,
    /// Per-stream counter, never wrapping within a run.
    pub seq: u32,
}

/// Stream numbers: audio, and video layers from the lowest.
pub const STREAM_AUDIO: u8 = 0;
pub const STREAM_VIDEO: u8 = 1;

impl Stamp {
    /// Writes the stamp over the last [`STAMP_LEN`] bytes of `payload`.
    pub fn write(&self, payload: &mut [u8]) {
        let Some(start) = payload.len().checked_sub(STAMP_LEN) else {
            return;
        };
        let tail = &mut payload[start..];
        tail[0..8].copy_from_slice(&self.sent_us.to_be_bytes());
        tail[8..12].copy_from_slice(&self.publisher.to_be_bytes());
        tail[12] = self.stream;
        tail[13..17].copy_from_slice(&self.seq.to_be_bytes());
    }

    /// Reads the stamp from the tail of a payload, if it is long enough to hold one.
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let start = payload.len().checked_sub(STAMP_LEN)?;
        let tail = &payload[start..];
        Some(Stamp {
            sent_us: u64::from_be_bytes(tail[0..8].try_into().ok()?),
            publisher: u32::from_be_bytes(tail[8..12].try_into().ok()?),
            stream: tail[12],
            seq: u32::from_be_bytes(tail[13..17].try_into().ok()?),
        })
    }
}

/// The process-wide time origin of stamps; publishers and receivers live in one process, so a
/// monotonic clock shared by both is exact.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since [`epoch`].
pub fn now_us() -> u64 {
    us_at(Instant::now())
}

/// Microseconds from [`epoch`] to `at` (0 for an instant before it).
pub fn us_at(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_round_trips_through_the_payload_tail() {
        let stamp = Stamp {
            sent_us: 123_456_789,
            publisher: 42,
            stream: STREAM_VIDEO,
            seq: 7,
        };
        let mut payload = vec![0xAB; 60];
        stamp.write(&mut payload);
        assert_eq!(&payload[..43], &[0xAB; 43][..]);
        assert_eq!(Stamp::read(&payload), Some(stamp));
        assert_eq!(Stamp::read(&payload[..10]), None);
    }
}
