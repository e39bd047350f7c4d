//! The VP8 payload descriptor (RFC 7741 section 4.2): keyframe detection, and rewriting the
//! picture id and TL0PICIDX so a subscriber sees one continuous numbering across layer switches.
//!
//! Each simulcast layer is its own encoder with its own picture ids. A receiver that sees the
//! picture id jump at a switch takes it for lost frames, so after a switch every packet's ids
//! are shifted by an offset chosen to continue where the previous layer stopped. That means
//! writing into the payload, which is shared by every leg, so a leg that has switched copies
//! each payload once. While a leg has never switched the offsets are zero and the shared
//! payload is forwarded as is.
//!
//! The copy is one exact-size allocation per packet, freed once the packet is sent:
//! retransmissions are rebuilt from the publisher's payload (see [`crate::repair`]), so no
//! per-leg buffer keeps it. A per-leg arena handing out slices of larger chunks was measured
//! slower (`vp8_49` in `benches/forwarding.rs`, 49 legs, 1100-byte payloads, kept as long as
//! a per-leg NACK buffer kept them at the time): about 440 ns per leg with 64 KiB
//! chunks and 180 ns with 16 KiB ones, against 95-135 ns with a plain allocation, because a
//! chunk lives until its last packet leaves the retransmission buffer. The plain header
//! rewrite with a shared payload is 35-45 ns per leg, and parsing the descriptor of a leg that
//! never switched adds nothing measurable.

use bytes::{Bytes, BytesMut};

/// Where a packet's picture id and TL0PICIDX sit, and their values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Descriptor {
    /// Start of a VP8 partition (S bit) with partition index 0: the first packet of a frame.
    pub(crate) frame_start: bool,
    /// (offset, value, 15-bit) of the picture id.
    pub(crate) picture_id: Option<(usize, u16, bool)>,
    /// (offset, value) of TL0PICIDX.
    pub(crate) tl0: Option<(usize, u8)>,
    /// Offset of the VP8 payload after the descriptor.
    pub(crate) payload_at: usize,
}

/// Parses the payload descriptor; `None` when the packet is too short to hold what its bits
/// announce.
pub(crate) fn parse(payload: &[u8]) -> Option<Descriptor> {
    let first = *payload.first()?;
    let mut d = Descriptor {
        frame_start: first & 0x10 != 0 && first & 0x0f == 0,
        picture_id: None,
        tl0: None,
        payload_at: 1,
    };
    if first & 0x80 == 0 {
        return Some(d);
    }
    let ext = *payload.get(1)?;
    let mut at = 2;
    if ext & 0x80 != 0 {
        let b = *payload.get(at)?;
        if b & 0x80 != 0 {
            let lo = *payload.get(at + 1)?;
            d.picture_id = Some((at, u16::from_be_bytes([b & 0x7f, lo]), true));
            at += 2;
        } else {
            d.picture_id = Some((at, u16::from(b), false));
            at += 1;
        }
    }
    if ext & 0x40 != 0 {
        d.tl0 = Some((at, *payload.get(at)?));
        at += 1;
    }
    if ext & 0x30 != 0 {
        payload.get(at)?;
        at += 1;
    }
    d.payload_at = at;
    Some(d)
}

/// Whether a VP8 payload starts a keyframe: the first packet of a frame whose frame tag has the
/// inverse-keyframe bit P clear.
pub(crate) fn is_keyframe_start(payload: &[u8]) -> bool {
    match parse(payload) {
        Some(d) if d.frame_start => payload.get(d.payload_at).is_some_and(|t| t & 0x01 == 0),
        _ => false,
    }
}

/// Keeps one leg's picture ids and TL0PICIDX continuous across source switches.
#[derive(Debug, Default)]
pub struct Vp8Rewriter {
    /// The source SSRC the offsets belong to.
    source: Option<u32>,
    /// Re-base on the next packet even if it comes from the same source (a resume).
    rebase: bool,
    picture_offset: u16,
    tl0_offset: u8,
    /// Highest picture id and TL0PICIDX sent, in the leg's numbering.
    last_picture: Option<u16>,
    last_tl0: Option<u8>,
}

/// Whether 15-bit picture id `a` comes after `b`.
fn picture_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) & 0x7fff < 0x4000
}

impl Vp8Rewriter {
    /// Makes the next packet re-base the offsets, so a resumed stream continues the numbering
    /// instead of skipping the pictures that were not forwarded.
    pub fn rebase(&mut self) {
        self.rebase = true;
    }

    /// The payload to forward for a packet of `source`: the shared one when nothing needs
    /// changing, otherwise a rewritten copy. The first packet after a source change is a
    /// keyframe start (switches happen only there), so its picture follows the last one sent.
    pub fn rewrite(&mut self, source: u32, payload: &Bytes) -> Bytes {
        let Some(d) = parse(payload) else {
            return payload.clone();
        };
        if self.rebase || self.source != Some(source) {
            self.rebase = false;
            self.source = Some(source);
            self.picture_offset = match (self.last_picture, d.picture_id) {
                (Some(last), Some((_, pid, _))) => last.wrapping_add(1).wrapping_sub(pid) & 0x7fff,
                _ => 0,
            };
            self.tl0_offset = match (self.last_tl0, d.tl0) {
                (Some(last), Some((_, tl0))) => last.wrapping_add(1).wrapping_sub(tl0),
                _ => 0,
            };
        }
        let picture = d
            .picture_id
            .map(|(at, pid, long)| (at, pid.wrapping_add(self.picture_offset) & 0x7fff, long));
        let tl0 = d.tl0.map(|(at, v)| (at, v.wrapping_add(self.tl0_offset)));
        if let Some((_, pid, _)) = picture
            && self
                .last_picture
                .is_none_or(|last| picture_newer(pid, last))
        {
            self.last_picture = Some(pid);
        }
        if let Some((_, v)) = tl0
            && self
                .last_tl0
                .is_none_or(|last| v.wrapping_sub(last) < 0x80 && v != last)
        {
            self.last_tl0 = Some(v);
        }
        if self.picture_offset == 0 && self.tl0_offset == 0 {
            return payload.clone();
        }
        write_ids(payload, picture, tl0)
    }

    /// The picture id and TL0PICIDX offsets the last packet was rewritten with.
    pub(crate) fn offsets(&self) -> (u16, u8) {
        (self.picture_offset, self.tl0_offset)
    }
}

/// A copy of `payload` with its picture id and TL0PICIDX shifted by the given offsets: a
/// retransmission of a packet a leg sent rewritten. The payload as is when it has no descriptor.
pub(crate) fn with_offsets(payload: &Bytes, picture_offset: u16, tl0_offset: u8) -> Bytes {
    let Some(d) = parse(payload) else {
        return payload.clone();
    };
    let picture = d
        .picture_id
        .map(|(at, pid, long)| (at, pid.wrapping_add(picture_offset) & 0x7fff, long));
    let tl0 = d.tl0.map(|(at, v)| (at, v.wrapping_add(tl0_offset)));
    write_ids(payload, picture, tl0)
}

/// A copy of `payload` with the given picture id and TL0PICIDX written in their places.
fn write_ids(
    payload: &Bytes,
    picture: Option<(usize, u16, bool)>,
    tl0: Option<(usize, u8)>,
) -> Bytes {
    let mut out = BytesMut::from(&payload[..]);
    if let Some((at, pid, long)) = picture {
        if long {
            let [hi, lo] = pid.to_be_bytes();
            out[at] = 0x80 | hi;
            out[at + 1] = lo;
        } else {
            out[at] = (pid & 0x7f) as u8;
        }
    }
    if let Some((at, v)) = tl0 {
        out[at] = v;
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame-start packet with a 15-bit picture id and TL0PICIDX, then a frame tag.
    fn packet(pid: u16, tl0: u8, key: bool) -> Bytes {
        let [hi, lo] = pid.to_be_bytes();
        Bytes::from(vec![
            0x90,
            0xe0,
            0x80 | hi,
            lo,
            tl0,
            0x20,
            if key { 0x00 } else { 0x01 },
            0xaa,
        ])
    }

    fn ids(payload: &[u8]) -> (u16, u8) {
        let d = parse(payload).expect("descriptor parses");
        (d.picture_id.expect("picture id").1, d.tl0.expect("tl0").1)
    }

    #[test]
    fn parses_the_extended_descriptor() {
        let d = parse(&packet(0x1234, 9, true)).expect("parses");
        assert!(d.frame_start);
        assert_eq!(d.picture_id, Some((2, 0x1234, true)));
        assert_eq!(d.tl0, Some((4, 9)));
        assert_eq!(d.payload_at, 6);
        assert!(is_keyframe_start(&packet(1, 1, true)));
        assert!(!is_keyframe_start(&packet(1, 1, false)));
        // Short form: no extension, frame start, keyframe tag.
        assert!(is_keyframe_start(&[0x10, 0x00]));
        assert!(!is_keyframe_start(&[0x00, 0x00]));
        // Truncated descriptors are not keyframes and not parsed.
        assert!(parse(&[0x90, 0xe0, 0x80]).is_none());
        assert!(!is_keyframe_start(&[0x90, 0x80, 0x80]));
    }

    #[test]
    fn the_first_source_is_forwarded_untouched() {
        let mut r = Vp8Rewriter::default();
        let p = packet(500, 7, true);
        let out = r.rewrite(1, &p);
        assert_eq!(out.as_ptr(), p.as_ptr(), "shared, not copied");
        assert_eq!(ids(&r.rewrite(1, &packet(501, 8, false))), (501, 8));
    }

    #[test]
    fn a_switch_continues_picture_id_and_tl0() {
        let mut r = Vp8Rewriter::default();
        r.rewrite(1, &packet(0x7ffe, 254, true));
        r.rewrite(1, &packet(0x7fff, 255, false));
        // Another layer with unrelated numbering: continues at 0 (wrapped) and 0.
        let out = r.rewrite(2, &packet(40, 3, true));
        assert_eq!(ids(&out), (0, 0));
        assert_eq!(&out[5..], &[0x20, 0x00, 0xaa], "the rest is unchanged");
        assert_eq!(ids(&r.rewrite(2, &packet(41, 4, false))), (1, 1));
        // A resume on the same source re-bases too.
        r.rebase();
        assert_eq!(ids(&r.rewrite(2, &packet(90, 30, true))), (2, 2));
    }

    #[test]
    fn seven_bit_picture_ids_stay_seven_bit() {
        let mut r = Vp8Rewriter::default();
        r.rewrite(1, &Bytes::from_static(&[0x90, 0x80, 0x05, 0x00]));
        let out = r.rewrite(2, &Bytes::from_static(&[0x90, 0x80, 0x7f, 0x00]));
        assert_eq!(out[2], 0x06);
    }
}
