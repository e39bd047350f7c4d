//! Retransmissions to subscribers, answered from one history per published stream.
//!
//! A subscriber that loses a forwarded video packet asks for it with a NACK. The packet it
//! names is one of its leg's, in the leg's numbering; what the server still holds is the
//! publisher's packet, in the publisher's. So the history is kept once per published stream
//! ([`SourceHistory`], shared by every leg that forwards it), and each leg keeps only how its
//! numbering maps onto its sources ([`LegMapping`]), which changes at layer switches and resumes
//! and nowhere else. A repair is rebuilt from the two when it is asked for.
//!
//! A history per leg, which is what an interceptor below the sender keeps, costs a subscriber of
//! many videos a slot array per leg plus a retained copy of every packet whose payload the leg
//! rewrote (VP8 picture ids after a switch): in a 50-person meeting the bulk of the server's
//! memory. Here memory follows the publishers' rates, not the number of legs.
//!
//! The rebuilt packets go to the subscriber's connection through [`RepairQueue`], which the
//! connection's [`RepairSender`] interceptor empties on its next write, wrapping each packet in
//! RTX (RFC 4588) where the leg negotiated it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtp;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use rtc::shared::error::Error;

use crate::forwarder::Mapping;
use crate::peer::RtcpMarking;
use crate::vp8;

/// How long a published packet stays available for repair: several round trips of a poor
/// path. A repair that comes later is of no use to a real-time decoder, whose jitter buffer has
/// played past the gap.
pub(crate) const HISTORY_AGE: Duration = Duration::from_secs(1);

/// At most this many packets per published stream, whatever their age: a second of an
/// 8 Mbit/s screen share. Memory stays bounded if a publisher floods.
pub(crate) const HISTORY_MAX_PACKETS: usize = 1024;

/// Layer switches and resumes a leg remembers; a repair asked for across more of them than
/// this is not answered. Switches are seconds apart, repairs are asked for within a second.
const MAPPINGS_KEPT: usize = 4;

/// One published packet as the history keeps it: what a leg's header and payload are rebuilt
/// from. The payload is the one received (shared, not copied).
#[derive(Debug, Clone)]
struct Kept {
    seq: u16,
    timestamp: u32,
    marker: bool,
    payload_type: u8,
    arrived: Instant,
    payload: Bytes,
}

/// The recent packets of one published video stream (a simulcast layer, or the only encoding)
/// that at least one leg forwarded, in arrival order. Entries leave by age or count as new ones come, so a quiet stream holds
/// little and a loud one at most [`HISTORY_MAX_PACKETS`]; the deque keeps its capacity, so
/// recording a packet allocates nothing once the stream's rate is reached.
#[derive(Debug, Default)]
pub(crate) struct SourceHistory {
    packets: VecDeque<Kept>,
}

impl SourceHistory {
    /// Records a packet as received.
    pub(crate) fn record(&mut self, packet: &rtp::Packet, now: Instant) {
        while let Some(front) = self.packets.front() {
            let expired = now.saturating_duration_since(front.arrived) > HISTORY_AGE;
            if !expired && self.packets.len() < HISTORY_MAX_PACKETS {
                break;
            }
            self.packets.pop_front();
        }
        self.packets.push_back(Kept {
            seq: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            payload_type: packet.header.payload_type,
            arrived: now,
            payload: packet.payload.clone(),
        });
    }

    /// The packet with sequence number `seq`, if it is still held and not too old. Packets come
    /// in order nearly always, so its position is guessed from the oldest one's number first.
    fn get(&self, seq: u16, now: Instant) -> Option<&Kept> {
        let front = self.packets.front()?;
        let guess = usize::from(seq.wrapping_sub(front.seq));
        let kept = match self.packets.get(guess) {
            Some(k) if k.seq == seq => Some(k),
            _ => self.packets.iter().rev().find(|k| k.seq == seq),
        }?;
        (now.saturating_duration_since(kept.arrived) <= HISTORY_AGE).then_some(kept)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.packets.len()
    }
}

/// How a stretch of a leg's numbering maps onto one source: every packet the leg sent from
/// `first_seq` on (until the next stretch) is the source's packet `seq - seq_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stretch {
    first_seq: u16,
    mapping: Mapping,
    /// VP8 picture id and TL0PICIDX offsets; zero when the payload is forwarded unchanged.
    picture_offset: u16,
    tl0_offset: u8,
}

/// What a repair is rebuilt from: the source packet and how the leg numbered it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The source SSRC (the layer) whose history holds the packet.
    pub(crate) source: u32,
    pub(crate) source_seq: u16,
    stretch: Stretch,
}

/// One leg's recent stretches, newest last.
#[derive(Debug, Default)]
pub(crate) struct LegMapping {
    stretches: VecDeque<Stretch>,
}

/// Whether `a` is `b` or comes after it, across the 16-bit wrap.
fn seq_at_or_after(a: u16, b: u16) -> bool {
    a.wrapping_sub(b) < 0x8000
}

impl LegMapping {
    /// Notes that the leg just sent `seq` under `mapping` and the given VP8 offsets. A new
    /// stretch starts only when they changed, so this is a comparison per packet.
    pub(crate) fn on_sent(&mut self, seq: u16, mapping: Mapping, vp8_offsets: (u16, u8)) {
        let (picture_offset, tl0_offset) = vp8_offsets;
        if let Some(last) = self.stretches.back()
            && last.mapping == mapping
            && last.picture_offset == picture_offset
            && last.tl0_offset == tl0_offset
        {
            return;
        }
        if self.stretches.len() == MAPPINGS_KEPT {
            self.stretches.pop_front();
        }
        self.stretches.push_back(Stretch {
            first_seq: seq,
            mapping,
            picture_offset,
            tl0_offset,
        });
    }

    /// Which source packet the leg sent as `seq`: the newest stretch that starts at or before it.
    pub(crate) fn resolve(&self, seq: u16) -> Option<Resolved> {
        let stretch = *self
            .stretches
            .iter()
            .rev()
            .find(|s| seq_at_or_after(seq, s.first_seq))?;
        Some(Resolved {
            source: stretch.mapping.source,
            source_seq: seq.wrapping_sub(stretch.mapping.seq_offset),
            stretch,
        })
    }
}

/// Rebuilds the packet a leg sent as `seq`, from the history of the source it resolved to.
/// `leg_ssrc` and `payload_type` are the leg's own (the payload type resolved for the source's).
/// `None` when the packet has left the history.
pub(crate) fn rebuild(
    resolved: &Resolved,
    history: &SourceHistory,
    leg_ssrc: u32,
    payload_type: impl Fn(u8) -> Option<u8>,
    now: Instant,
) -> Option<rtp::Packet> {
    let kept = history.get(resolved.source_seq, now)?;
    let stretch = &resolved.stretch;
    let payload = if stretch.picture_offset == 0 && stretch.tl0_offset == 0 {
        kept.payload.clone()
    } else {
        vp8::with_offsets(&kept.payload, stretch.picture_offset, stretch.tl0_offset)
    };
    Some(rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            marker: kept.marker,
            payload_type: payload_type(kept.payload_type)?,
            sequence_number: resolved.source_seq.wrapping_add(stretch.mapping.seq_offset),
            timestamp: kept.timestamp.wrapping_add(stretch.mapping.ts_offset),
            ssrc: leg_ssrc,
            ..Default::default()
        },
        payload,
    })
}

/// Repairs on their way from the worker to one subscriber connection's [`RepairSender`].
/// Both sides run on the worker's thread; the lock is there only because interceptors must be
/// `Send`, and the flag keeps it off the path of every other packet the connection writes.
#[derive(Debug, Clone, Default)]
pub(crate) struct RepairQueue(Arc<RepairShared>);

#[derive(Debug, Default)]
pub(crate) struct RepairShared {
    pending: AtomicBool,
    packets: Mutex<Vec<rtp::Packet>>,
}

impl RepairQueue {
    /// Queues repairs for the connection's next write.
    pub(crate) fn push(&self, repairs: impl IntoIterator<Item = rtp::Packet>) {
        let mut packets = self.0.packets.lock().unwrap_or_else(|e| e.into_inner());
        packets.extend(repairs);
        self.0.pending.store(!packets.is_empty(), Ordering::Release);
    }

    fn take(&self, into: &mut VecDeque<rtp::Packet>) {
        // A plain load first: this runs on every write the connection makes, and a swap is a
        // locked instruction even when there is nothing to take.
        if self.0.pending.load(Ordering::Relaxed) && self.0.pending.swap(false, Ordering::Acquire) {
            let mut packets = self.0.packets.lock().unwrap_or_else(|e| e.into_inner());
            into.extend(packets.drain(..));
        }
    }
}

/// RTX parameters of one leg, from the stream rtc binds.
#[derive(Debug)]
struct RtxStream {
    ssrc: u32,
    payload_type: u8,
    next_seq: u16,
}

/// The interceptor that sends a subscriber's repairs, in the NACK responder's place in the
/// chain: application-ward of the transport-wide numbering and the send history, so repairs are
/// numbered and counted like any packet, and tagged as retransmissions so the bandwidth
/// estimate does not take them for new media.
pub(crate) struct RepairSender {
    queue: RepairQueue,
    /// Marks the inbound RTCP the worker needs; see [`RtcpMarking`].
    marking: Option<RtcpMarking>,
    rtx: HashMap<u32, RtxStream>,
    repairs: VecDeque<rtp::Packet>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RepairSender {
    pub(crate) fn new(queue: RepairQueue) -> Self {
        Self {
            queue,
            marking: None,
            rtx: HashMap::new(),
            repairs: VecDeque::new(),
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    /// Also marks inbound RTCP for the application, as the last interceptor app-ward would.
    pub(crate) fn with_marking(mut self, marking: RtcpMarking) -> Self {
        self.marking = Some(marking);
        self
    }

    /// The packet as it goes on the wire: on the leg's RTX stream, with the original sequence
    /// number ahead of the payload, when the leg has one; as it was sent otherwise.
    fn wrap(&mut self, packet: rtp::Packet) -> rtp::Packet {
        let Some(rtx) = self.rtx.get_mut(&packet.header.ssrc) else {
            return packet;
        };
        let mut payload = BytesMut::with_capacity(2 + packet.payload.len());
        payload.put_u16(packet.header.sequence_number);
        payload.put_slice(&packet.payload);
        let seq = rtx.next_seq;
        rtx.next_seq = rtx.next_seq.wrapping_add(1);
        rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: packet.header.marker,
                payload_type: rtx.payload_type,
                sequence_number: seq,
                timestamp: packet.header.timestamp,
                ssrc: rtx.ssrc,
                ..Default::default()
            },
            payload: payload.freeze(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RepairSender {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Some(marking) = &self.marking {
            marking.mark(&mut msg);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        if let Some(msg) = self.write_queue.pop_front() {
            return Some(msg);
        }
        if self.repairs.is_empty() {
            self.queue.take(&mut self.repairs);
        }
        let packet = self.repairs.pop_front()?;
        let packet = self.wrap(packet);
        Some(TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(packet)).with(Attribute::Retransmission),
        })
    }
}

impl Interceptor for RepairSender {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let nack = info
            .rtcp_feedback
            .iter()
            .any(|fb| fb.typ == "nack" && fb.parameter.is_empty());
        if let (true, Some(ssrc), Some(payload_type)) = (nack, info.ssrc_rtx, info.payload_type_rtx)
        {
            self.rtx.insert(
                info.ssrc,
                RtxStream {
                    ssrc,
                    payload_type,
                    next_seq: 0,
                },
            );
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.rtx.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forwarder::Forwarder;
    use crate::vp8::Vp8Rewriter;

    /// A VP8 packet with a 15-bit picture id and TL0PICIDX, keyframe or not.
    fn vp8_packet(ssrc: u32, seq: u16, pid: u16, key: bool) -> rtp::Packet {
        let [hi, lo] = pid.to_be_bytes();
        rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: 96,
                sequence_number: seq,
                timestamp: u32::from(seq) * 3000,
                marker: true,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from(vec![
                0x90,
                0xe0,
                0x80 | hi,
                lo,
                pid as u8,
                0x20,
                if key { 0x00 } else { 0x01 },
                seq as u8,
            ]),
        }
    }

    /// Forwards packets of two layers through a leg, switching once, and checks that every
    /// packet the leg sent is rebuilt exactly from the shared histories and the leg's mapping.
    #[test]
    fn repairs_are_rebuilt_as_sent_across_a_layer_switch() {
        let (low, high) = (1111, 2222);
        let mut histories: HashMap<u32, SourceHistory> = HashMap::new();
        let mut forwarder = Forwarder::new(9999, 90_000);
        let mut vp8 = Vp8Rewriter::default();
        let mut mapping = LegMapping::default();
        let mut sent = Vec::new();
        let start = Instant::now();
        let mut send =
            |p: &rtp::Packet, forward: bool, histories: &mut HashMap<u32, SourceHistory>| {
                histories.entry(p.header.ssrc).or_default().record(p, start);
                if !forward {
                    return;
                }
                let payload = vp8.rewrite(p.header.ssrc, &p.payload);
                let header = forwarder.leg_header(&p.header, 100, start);
                mapping.on_sent(
                    header.sequence_number,
                    forwarder.mapping().expect("mapped"),
                    vp8.offsets(),
                );
                sent.push(rtp::Packet { header, payload });
            };
        // The low layer is forwarded first, then the leg switches to high at its keyframe.
        for i in 0..20u16 {
            let l = vp8_packet(low, 500 + i, 40 + i, i == 0);
            let h = vp8_packet(high, 9000 + i, 7000 + i, i == 10);
            send(&l, i < 10, &mut histories);
            send(&h, i >= 10, &mut histories);
        }
        assert_eq!(sent.len(), 20);
        for original in &sent {
            let seq = original.header.sequence_number;
            let resolved = mapping.resolve(seq).expect("resolves");
            let history = &histories[&resolved.source];
            let rebuilt = rebuild(
                &resolved,
                history,
                9999,
                |pt| (pt == 96).then_some(100),
                start,
            )
            .expect("still held");
            assert_eq!(rebuilt.header.sequence_number, seq);
            assert_eq!(rebuilt.header.timestamp, original.header.timestamp);
            assert_eq!(rebuilt.header.ssrc, 9999);
            assert_eq!(rebuilt.header.payload_type, 100);
            assert_eq!(rebuilt.header.marker, original.header.marker);
            assert_eq!(rebuilt.payload, original.payload, "seq {seq}");
        }
        // The switch rewrote the high layer's picture ids, and the repairs carry them rewritten.
        assert_ne!(sent[10].payload, vp8_packet(high, 9010, 7010, true).payload);
        assert_eq!(
            mapping
                .resolve(sent[9].header.sequence_number)
                .map(|r| r.source),
            Some(low)
        );
        assert_eq!(
            mapping
                .resolve(sent[10].header.sequence_number)
                .map(|r| r.source),
            Some(high)
        );
    }

    #[test]
    fn the_history_forgets_by_age_and_by_count() {
        let start = Instant::now();
        let mut history = SourceHistory::default();
        for i in 0..10u16 {
            history.record(&vp8_packet(1, i, i, false), start);
        }
        assert!(history.get(3, start).is_some());
        // Too old to be of use, though still held until the next packet comes.
        let late = start + HISTORY_AGE + Duration::from_millis(1);
        assert!(history.get(3, late).is_none());
        history.record(&vp8_packet(1, 10, 10, false), late);
        assert_eq!(
            history.len(),
            1,
            "the expired packets left with the next one"
        );
        for i in 11..(11 + HISTORY_MAX_PACKETS as u16 + 5) {
            history.record(&vp8_packet(1, i, i, false), late);
        }
        assert_eq!(history.len(), HISTORY_MAX_PACKETS);
        assert!(history.get(11, late).is_none(), "pushed out by count");
        let newest = 10 + HISTORY_MAX_PACKETS as u16 + 5;
        assert!(history.get(newest, late).is_some());
    }

    #[test]
    fn a_late_packet_is_found_out_of_order() {
        let start = Instant::now();
        let mut history = SourceHistory::default();
        for seq in [1u16, 2, 4, 5, 3, 6] {
            history.record(&vp8_packet(1, seq, seq, false), start);
        }
        for seq in 1..=6 {
            assert_eq!(history.get(seq, start).map(|k| k.seq), Some(seq));
        }
        assert!(history.get(7, start).is_none());
        assert!(history.get(0, start).is_none());
    }

    #[test]
    fn a_seq_before_every_stretch_is_not_resolved() {
        let mut mapping = LegMapping::default();
        let m = Mapping {
            source: 1,
            seq_offset: 0,
            ts_offset: 0,
        };
        mapping.on_sent(100, m, (0, 0));
        mapping.on_sent(101, m, (0, 0));
        assert_eq!(mapping.stretches.len(), 1);
        assert!(mapping.resolve(99).is_none());
        assert_eq!(mapping.resolve(101).map(|r| r.source_seq), Some(101));
    }
}
