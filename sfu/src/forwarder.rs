//! Per-(subscriber, track) RTP rewriting: SSRC, payload type, sequence numbers and timestamps.
//!
//! A subscriber's leg has its own SSRC and its own negotiated payload types, and its receiver
//! expects one continuous sequence-number and timestamp space for the life of the leg, even when
//! the source behind it changes (a publisher restarting its encoder, or later a simulcast layer or
//! speaker switch). So each leg keeps offsets from the current source's numbering to its own, and
//! recomputes them only when the source changes, so that the output just continues.

use std::time::Instant;

use rtc::rtp;

/// How a leg currently numbers its source: the leg's sequence number and timestamp are the
/// source's plus these offsets. Retransmissions map a leg's packet back to its source with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub(crate) source: u32,
    pub(crate) seq_offset: u16,
    pub(crate) ts_offset: u32,
}

/// Rewrites one source's packets into one subscriber leg's numbering.
///
/// Public only so that the forwarding benchmark can reach it through [`crate::bench_support`].
#[derive(Debug, Clone)]
pub struct Forwarder {
    /// The leg's own SSRC, announced in the subscriber offer.
    ssrc: u32,
    /// RTP clock rate of the codec, to turn a pause at a source switch into timestamp ticks.
    clock_rate: u32,
    /// Last resolved (source payload type, leg payload type) pair; a source rarely changes codec,
    /// so one cached pair makes the lookup free.
    pt: Option<(u8, u8)>,
    /// The source SSRC the offsets belong to; `None` before the first packet.
    source: Option<u32>,
    seq_offset: u16,
    ts_offset: u32,
    /// Highest output sequence number sent, and its timestamp and send time.
    last_seq: u16,
    last_ts: u32,
    last_at: Option<Instant>,
}

/// Whether sequence number `a` comes after `b`, across the 16-bit wrap.
fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl Forwarder {
    pub fn new(ssrc: u32, clock_rate: u32) -> Self {
        Self {
            ssrc,
            clock_rate,
            pt: None,
            source: None,
            seq_offset: 0,
            ts_offset: 0,
            last_seq: 0,
            last_ts: 0,
            last_at: None,
        }
    }

    /// The leg's SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// RTP clock rate of the leg's codec, which the subscriber's reported jitter is counted in.
    pub(crate) fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// The mapping the last packet was numbered with; `None` before the first and after a
    /// re-base.
    pub(crate) fn mapping(&self) -> Option<Mapping> {
        Some(Mapping {
            source: self.source?,
            seq_offset: self.seq_offset,
            ts_offset: self.ts_offset,
        })
    }

    /// Makes the next packet re-base the offsets even if it comes from the same source, so a
    /// leg resumed after a pause (a paused video, audio loudest-N held back) continues its
    /// numbering instead of showing the pause as loss, and its timestamps advance by the pause.
    pub fn rebase(&mut self) {
        self.source = None;
    }

    /// The leg is taken over by another source (a reused transceiver): its numbering goes on,
    /// as after a pause, and the payload type is resolved afresh for the new source.
    pub(crate) fn take_over(&mut self) {
        self.rebase();
        self.pt = None;
    }

    /// The leg's payload type for a source payload type, if already resolved.
    pub fn payload_type(&self, source_pt: u8) -> Option<u8> {
        match self.pt {
            Some((from, to)) if from == source_pt => Some(to),
            _ => None,
        }
    }

    /// Remembers the leg's payload type for a source payload type.
    pub fn set_payload_type(&mut self, source_pt: u8, leg_pt: u8) {
        self.pt = Some((source_pt, leg_pt));
    }

    /// The leg's header for a source packet whose payload type `pt` was already resolved for
    /// this leg. Header extensions are dropped: their ids were negotiated on the publisher's
    /// connection, not this one. Allocates nothing (the CSRC list is empty in practice).
    pub fn leg_header(&mut self, source: &rtp::Header, pt: u8, now: Instant) -> rtp::Header {
        let (seq, ts) = self.rewrite(source.ssrc, source.sequence_number, source.timestamp, now);
        rtp::Header {
            version: 2,
            padding: false,
            extension: false,
            marker: source.marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc: self.ssrc,
            csrc: source.csrc.clone(),
            extension_profile: 0,
            extensions: Vec::new(),
            extensions_padding: 0,
        }
    }

    /// Maps a source packet's sequence number and timestamp onto the leg.
    ///
    /// On the first packet of a new source the offsets are chosen so the leg's sequence numbers
    /// continue at the next number and its timestamps advance by the wall time since the last
    /// packet (at least one tick), which is what a receiver's jitter buffer expects of a stream
    /// that merely paused. Packets of the current source keep their relative order and gaps, so
    /// losses and reordering stay visible to the receiver (and its NACKs stay meaningful).
    pub fn rewrite(&mut self, source: u32, seq: u16, ts: u32, now: Instant) -> (u16, u32) {
        if self.source != Some(source) {
            match self.last_at {
                None => {
                    // First packet ever: the source's own numbering is as good as any.
                    self.seq_offset = 0;
                    self.ts_offset = 0;
                }
                Some(last_at) => {
                    let elapsed = now.saturating_duration_since(last_at);
                    let ticks = (elapsed.as_micros() * u128::from(self.clock_rate) / 1_000_000)
                        .clamp(1, u128::from(u32::MAX / 2));
                    // The clamp keeps the value well inside u32.
                    let ticks = u32::try_from(ticks).unwrap_or(1);
                    self.seq_offset = self.last_seq.wrapping_add(1).wrapping_sub(seq);
                    self.ts_offset = self.last_ts.wrapping_add(ticks).wrapping_sub(ts);
                }
            }
            self.source = Some(source);
            let out = (
                seq.wrapping_add(self.seq_offset),
                ts.wrapping_add(self.ts_offset),
            );
            self.last_seq = out.0;
            self.last_ts = out.1;
            self.last_at = Some(now);
            return out;
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        if seq_newer(out_seq, self.last_seq) {
            self.last_seq = out_seq;
            self.last_ts = out_ts;
            self.last_at = Some(now);
        }
        (out_seq, out_ts)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_leg_header_carries_the_legs_ids_and_no_extensions() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(7, 90_000);
        let source = rtp::Header {
            version: 2,
            marker: true,
            payload_type: 96,
            sequence_number: 100,
            timestamp: 5000,
            ssrc: 1,
            extension: true,
            extension_profile: 0xBEDE,
            extensions: vec![rtp::header::Extension {
                id: 3,
                payload: bytes::Bytes::from_static(&[1, 2]),
            }],
            ..Default::default()
        };
        let out = f.leg_header(&source, 98, t0);
        assert_eq!(
            (
                out.ssrc,
                out.payload_type,
                out.sequence_number,
                out.timestamp
            ),
            (7, 98, 100, 5000)
        );
        assert!(out.marker);
        assert!(!out.extension && out.extensions.is_empty());
    }

    #[test]
    fn first_source_keeps_its_numbering() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(7, 90_000);
        assert_eq!(f.ssrc(), 7);
        assert_eq!(f.rewrite(1, 100, 5000, t0), (100, 5000));
        assert_eq!(f.rewrite(1, 101, 8000, t0), (101, 8000));
        // A gap stays a gap, and a late packet keeps its place.
        assert_eq!(f.rewrite(1, 104, 9000, t0), (104, 9000));
        assert_eq!(f.rewrite(1, 103, 9000, t0), (103, 9000));
    }

    #[test]
    fn source_switch_continues_sequence_and_timestamp() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(7, 90_000);
        f.rewrite(1, 65_534, 4_294_967_000, t0);
        f.rewrite(1, 65_535, 4_294_967_200, t0);
        // A new source with unrelated numbering, 100 ms later.
        let t1 = t0 + Duration::from_millis(100);
        let (seq, ts) = f.rewrite(2, 10, 1_000, t1);
        assert_eq!(seq, 0, "continues across the wrap");
        assert_eq!(
            ts,
            4_294_967_200u32.wrapping_add(9_000),
            "advances by 100 ms"
        );
        assert_eq!(f.rewrite(2, 11, 4_000, t1), (1, ts.wrapping_add(3_000)));
        // Switching back re-bases again rather than jumping to the old offsets.
        let (seq, _) = f.rewrite(1, 0, 0, t1);
        assert_eq!(seq, 2);
    }

    #[test]
    fn switch_without_pause_still_advances_timestamp() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(7, 48_000);
        f.rewrite(1, 5, 960, t0);
        let (_, ts) = f.rewrite(2, 900, 123, t0);
        assert_eq!(ts, 961);
    }

    #[test]
    fn late_packet_does_not_move_the_switch_point() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(7, 90_000);
        f.rewrite(1, 10, 100, t0);
        f.rewrite(1, 12, 300, t0);
        f.rewrite(1, 11, 200, t0);
        assert_eq!(f.rewrite(2, 0, 0, t0).0, 13);
    }

    #[test]
    fn a_suppressed_stretch_leaves_no_sequence_gap() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(7, 48_000);
        assert_eq!(f.rewrite(1, 100, 960, t0), (100, 960));
        assert_eq!(f.rewrite(1, 101, 1_920, t0), (101, 1_920));
        // 102..=149 were not forwarded (loudest-N), for one second.
        f.rebase();
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            f.rewrite(1, 150, 48_000, t1),
            (102, 1_920 + 48_000),
            "the timestamp advances by the pause, like after DTX"
        );
        assert_eq!(f.rewrite(1, 151, 48_960, t1), (103, 1_920 + 48_960));
    }

    #[test]
    fn a_rebase_before_the_first_packet_keeps_the_source_numbering() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(7, 48_000);
        f.rebase();
        assert_eq!(f.rewrite(1, 500, 960, t0), (500, 960));
    }

    #[test]
    fn a_resume_continues_the_numbering() {
        let t0 = Instant::now();
        let mut f = Forwarder::new(7, 90_000);
        f.rewrite(1, 10, 100, t0);
        f.rebase();
        // The same source, 50 packets later: no gap on the leg.
        assert_eq!(f.rewrite(1, 60, 5_000, t0).0, 11);
        assert_eq!(f.rewrite(1, 61, 5_000, t0).0, 12);
    }

    #[test]
    fn payload_type_cache() {
        let mut f = Forwarder::new(7, 90_000);
        assert_eq!(f.payload_type(96), None);
        f.set_payload_type(96, 102);
        assert_eq!(f.payload_type(96), Some(102));
        assert_eq!(f.payload_type(98), None);
    }
}
