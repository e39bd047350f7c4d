//! Simulcast for bots: a publisher that sends two or three RID layers of generated VP8, and the
//! per-track log a subscriber keeps to check what a server did with them.
//!
//! Each layer is its own SSRC with its own sequence numbers, picture ids and TL0PICIDX (started
//! far apart on purpose, so a server that forwards them unchanged across a switch is caught),
//! and answers keyframe requests for its own SSRC. Every VP8 payload ends in filler bytes equal
//! to [`LAYER_MARK`] plus the layer index, so a subscriber can tell which layer it is receiving
//! without decoding anything. Layer `i` sends `i + 1` packets per frame, so higher layers cost
//! more bandwidth as real ones do.
//!
//! Packets are built per send (a `Bytes` each); a simulcast publisher is a test tool, not the
//! load generator's path.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters,
};

/// RIDs of the layers, lowest first; a two-layer publisher uses the first two.
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];
/// SSRCs of the layers, lowest first.
pub const SIMULCAST_SSRCS: [u32; 3] = [0x3333_0001, 0x3333_0002, 0x3333_0003];
/// Filler byte of layer 0's VP8 payloads; layer `i` uses `LAYER_MARK + i`. The single-layer
/// publisher's filler (0x42) reads as layer 2.
pub const LAYER_MARK: u8 = 0x40;
const VP8_PT: u8 = 96;
/// Filler bytes per packet of each layer.
const CHUNK: [usize; 3] = [300, 700, 1100];
const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// The layer a VP8 payload of a bot belongs to, read from its last byte.
pub fn layer_of(payload: &[u8]) -> Option<u8> {
    payload
        .last()
        .and_then(|b| b.checked_sub(LAYER_MARK))
        .filter(|l| usize::from(*l) < SIMULCAST_RIDS.len())
}

/// What a VP8 payload descriptor says: (frame start, picture id, TL0PICIDX).
fn vp8_ids(payload: &[u8]) -> Option<(bool, Option<u16>, Option<u8>)> {
    let first = *payload.first()?;
    let start = first & 0x10 != 0 && first & 0x0f == 0;
    if first & 0x80 == 0 {
        return Some((start, None, None));
    }
    let ext = *payload.get(1)?;
    let mut at = 2;
    let mut picture = None;
    if ext & 0x80 != 0 {
        let b = *payload.get(at)?;
        if b & 0x80 != 0 {
            picture = Some(u16::from_be_bytes([b & 0x7f, *payload.get(at + 1)?]));
            at += 2;
        } else {
            picture = Some(u16::from(b));
            at += 1;
        }
    }
    let tl0 = if ext & 0x40 != 0 {
        Some(*payload.get(at)?)
    } else {
        None
    };
    Some((start, picture, tl0))
}

/// Numbering of one layer, kept across `send_media` calls.
struct LayerCursor {
    seq: u16,
    picture_id: u16,
    tl0: u8,
    started: bool,
}

struct Layer {
    ssrc: u32,
    rid: &'static str,
    /// Stopped, as a browser stops an upper layer when its uplink or CPU runs short.
    stopped: AtomicBool,
    wanted: AtomicBool,
    keyframes_sent: AtomicU64,
    cursor: Mutex<LayerCursor>,
}

/// Header extension ids and the mid the answer negotiated for the video section.
#[derive(Clone)]
struct Extensions {
    mid_id: u8,
    rid_id: u8,
    mid: Bytes,
}

/// The sending side of a simulcast publisher.
pub(crate) struct SimulcastSender {
    layers: Vec<Layer>,
    extensions: Mutex<Option<Extensions>>,
}

impl SimulcastSender {
    /// `layers` is clamped to 2..=3.
    pub(crate) fn new(layers: usize) -> Self {
        let n = layers.clamp(2, SIMULCAST_RIDS.len());
        let layers = (0..n)
            .map(|i| Layer {
                ssrc: SIMULCAST_SSRCS[i],
                rid: SIMULCAST_RIDS[i],
                stopped: AtomicBool::new(false),
                wanted: AtomicBool::new(false),
                keyframes_sent: AtomicU64::new(0),
                cursor: Mutex::new(LayerCursor {
                    seq: 1000 * i as u16,
                    picture_id: 100 + 9000 * i as u16,
                    tl0: 10 + 80 * i as u8,
                    started: false,
                }),
            })
            .collect();
        Self {
            layers,
            extensions: Mutex::new(None),
        }
    }

    /// One encoding per layer, each with its RID and SSRC: what makes rtc offer
    /// `a=rid:<rid> send` lines and `a=simulcast:send q;h;f`.
    pub(crate) fn codings(&self, codec: &RTCRtpCodec) -> Vec<RTCRtpEncodingParameters> {
        self.layers
            .iter()
            .map(|l| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: l.rid.to_owned(),
                    ssrc: Some(l.ssrc),
                    ..Default::default()
                },
                active: true,
                codec: codec.clone(),
                ..Default::default()
            })
            .collect()
    }

    /// Learns the mid and the mid/rid extension ids of the video section from the answer: the
    /// sender does not add them itself, and the server ties each layer's SSRC to its RID by them.
    pub(crate) fn learn_extensions(&self, answer_sdp: &str) {
        let Some(section) = answer_sdp
            .split("\nm=")
            .skip(1)
            .find(|s| s.starts_with("video"))
        else {
            return;
        };
        let mut mid = None;
        let (mut mid_id, mut rid_id) = (None, None);
        for line in section.lines().map(str::trim) {
            if let Some(value) = line.strip_prefix("a=mid:") {
                mid = Some(Bytes::from(value.to_owned()));
            } else if let Some(rest) = line.strip_prefix("a=extmap:") {
                let mut words = rest.split_whitespace();
                let id = words
                    .next()
                    .and_then(|w| w.split('/').next())
                    .and_then(|w| w.parse::<u8>().ok());
                match words.next() {
                    Some(MID_URI) => mid_id = id,
                    Some(RID_URI) => rid_id = id,
                    _ => {}
                }
            }
        }
        if let (Some(mid), Some(mid_id), Some(rid_id)) = (mid, mid_id, rid_id)
            && let Ok(mut ext) = self.extensions.lock()
        {
            *ext = Some(Extensions {
                mid_id,
                rid_id,
                mid,
            });
        }
    }

    /// Notes a keyframe request for one layer's SSRC; returns whether it was one of ours.
    pub(crate) fn on_keyframe_request(&self, media_ssrc: u32) -> bool {
        match self.layers.iter().find(|l| l.ssrc == media_ssrc) {
            Some(layer) => {
                layer.wanted.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Stops or restarts sending one layer (0 = lowest). A restarted layer continues its
    /// numbering and starts with a keyframe, as a browser's encoder does.
    pub(crate) fn set_layer_sending(&self, layer: usize, sending: bool) {
        if let Some(l) = self.layers.get(layer) {
            let was_stopped = l.stopped.swap(!sending, Ordering::Relaxed);
            if was_stopped && sending {
                l.wanted.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Keyframes each layer sent so far, lowest layer first.
    pub(crate) fn keyframes_sent(&self) -> Vec<u64> {
        self.layers
            .iter()
            .map(|l| l.keyframes_sent.load(Ordering::Relaxed))
            .collect()
    }

    /// Every layer's packets of one frame at RTP timestamp `timestamp`. A layer's first frame,
    /// and its next frame after a keyframe request for it, is a keyframe.
    pub(crate) fn frame(&self, timestamp: u32) -> Vec<rtp::Packet> {
        let ext = self.extensions.lock().ok().and_then(|e| e.clone());
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            if layer.stopped.load(Ordering::Relaxed) {
                continue;
            }
            let Ok(mut cursor) = layer.cursor.lock() else {
                continue;
            };
            let key = !cursor.started || layer.wanted.swap(false, Ordering::Relaxed);
            cursor.started = true;
            if key {
                layer.keyframes_sent.fetch_add(1, Ordering::Relaxed);
            }
            let parts = i + 1;
            let [pid_hi, pid_lo] = cursor.picture_id.to_be_bytes();
            for part in 0..parts {
                let mut payload = Vec::with_capacity(16 + CHUNK[i]);
                // X=1, S on the first packet, PID 0; I (15-bit picture id), L, T; TID 0, Y=1.
                payload.extend_from_slice(&[
                    if part == 0 { 0x90 } else { 0x80 },
                    0xe0,
                    0x80 | pid_hi,
                    pid_lo,
                    cursor.tl0,
                    0x20,
                ]);
                if part == 0 {
                    if key {
                        // Frame tag with P=0, start code, and a size per layer.
                        let width = 320u16 << i;
                        let height = 180u16 << i;
                        payload.extend_from_slice(&[0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a]);
                        payload.extend_from_slice(&width.to_le_bytes());
                        payload.extend_from_slice(&height.to_le_bytes());
                    } else {
                        payload.extend_from_slice(&[0x01, 0x00, 0x00]);
                    }
                }
                payload.resize(payload.len() + CHUNK[i], LAYER_MARK + i as u8);
                let mut header = rtp::Header {
                    version: 2,
                    payload_type: VP8_PT,
                    sequence_number: cursor.seq,
                    timestamp,
                    ssrc: layer.ssrc,
                    marker: part + 1 == parts,
                    ..Default::default()
                };
                if let Some(ext) = &ext {
                    let _ = header.set_extension(ext.mid_id, ext.mid.clone());
                    let _ =
                        header.set_extension(ext.rid_id, Bytes::from_static(layer.rid.as_bytes()));
                }
                out.push(rtp::Packet {
                    header,
                    payload: Bytes::from(payload),
                });
                cursor.seq = cursor.seq.wrapping_add(1);
            }
            cursor.picture_id = cursor.picture_id.wrapping_add(1) & 0x7fff;
            cursor.tl0 = cursor.tl0.wrapping_add(1);
        }
        out
    }
}

/// A silence this long before a packet makes it count as a resume, logged like a layer change.
const RESUME_GAP: Duration = Duration::from_millis(300);

/// One change of layer on a received track, its first packet, or its first packet after a
/// silence of at least 300 ms (a resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSwitch {
    /// When the first packet of the new layer arrived.
    pub at: Instant,
    /// The layer before, `None` for the track's first packet.
    pub from: Option<u8>,
    /// The layer now arriving.
    pub to: u8,
    /// Whether that first packet starts a keyframe.
    pub keyframe: bool,
    /// How far its sequence number is from the previous packet's (1 when continuous; `None` for
    /// the first packet).
    pub seq_step: Option<u16>,
    /// How far its VP8 picture id and TL0PICIDX are from the previous frame's (1 when
    /// continuous), when both packets carried them.
    pub picture_id_step: Option<u16>,
    pub tl0_step: Option<u8>,
}

/// What a video track's packets say about layers and continuity.
#[derive(Debug, Clone, Default)]
pub struct LayerStats {
    /// The layer of the latest packet.
    pub layer: Option<u8>,
    /// Packets received per layer.
    pub packets_by_layer: [u64; 3],
    /// Packets whose sequence number is not the previous one plus one (a loss, or a server that
    /// did not keep the numbering continuous). Late packets (retransmissions, reordering) are
    /// left out of every count below and of the layer log.
    pub seq_gaps: u64,
    /// Frame starts whose VP8 picture id is not the previous frame's plus one.
    pub picture_id_gaps: u64,
    /// Frame starts whose TL0PICIDX is not the previous frame's plus one (every frame of the
    /// bot is in the base temporal layer).
    pub tl0_gaps: u64,
    /// Every change of layer, the first packet included.
    pub switches: Vec<LayerSwitch>,
}

/// No value yet, in the atomics below (all real values fit in 16 bits).
const NONE: u32 = u32::MAX;

/// Per-track receive log: atomics on the per-packet path, a lock only at a layer change.
pub(crate) struct ReceiveLog {
    created: Instant,
    /// Arrival of the latest packet, in microseconds since `created`.
    last_at_us: AtomicU64,
    layer: AtomicU32,
    seq: AtomicU32,
    picture_id: AtomicU32,
    tl0: AtomicU32,
    by_layer: [AtomicU64; 3],
    seq_gaps: AtomicU64,
    picture_id_gaps: AtomicU64,
    tl0_gaps: AtomicU64,
    switches: Mutex<Vec<LayerSwitch>>,
}

impl Default for ReceiveLog {
    fn default() -> Self {
        Self {
            created: Instant::now(),
            last_at_us: AtomicU64::new(0),
            layer: AtomicU32::new(NONE),
            seq: AtomicU32::new(NONE),
            picture_id: AtomicU32::new(NONE),
            tl0: AtomicU32::new(NONE),
            by_layer: Default::default(),
            seq_gaps: AtomicU64::new(0),
            picture_id_gaps: AtomicU64::new(0),
            tl0_gaps: AtomicU64::new(0),
            switches: Mutex::new(Vec::new()),
        }
    }
}

impl ReceiveLog {
    /// Records one video packet; `keyframe` says whether it starts a keyframe.
    pub(crate) fn record(&self, packet: &rtp::Packet, keyframe: bool) {
        let now = Instant::now();
        let now_us =
            u64::try_from(now.duration_since(self.created).as_micros()).unwrap_or(u64::MAX);
        let last_us = self.last_at_us.swap(now_us, Ordering::Relaxed);
        let resumed =
            last_us != 0 && now_us.saturating_sub(last_us) >= RESUME_GAP.as_micros() as u64;
        let seq = u32::from(packet.header.sequence_number);
        let prev = self.seq.load(Ordering::Relaxed);
        let seq_step = (prev != NONE).then(|| (seq.wrapping_sub(prev) & 0xffff) as u16);
        if seq_step.is_some_and(|step| step == 0 || step >= 0x8000) {
            // A late packet (a retransmission, or reordered): it says nothing about what the
            // server forwards now.
            return;
        }
        self.seq.store(seq, Ordering::Relaxed);
        if seq_step.is_some_and(|step| step != 1) {
            self.seq_gaps.fetch_add(1, Ordering::Relaxed);
        }
        let (mut picture_id_step, mut tl0_step) = (None, None);
        if let Some((true, picture, tl0)) = vp8_ids(&packet.payload) {
            if let Some(pid) = picture {
                let prev = self.picture_id.swap(u32::from(pid), Ordering::Relaxed);
                picture_id_step =
                    (prev != NONE).then(|| (u32::from(pid).wrapping_sub(prev) & 0x7fff) as u16);
                if picture_id_step.is_some_and(|step| step != 1) {
                    self.picture_id_gaps.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(tl0) = tl0 {
                let prev = self.tl0.swap(u32::from(tl0), Ordering::Relaxed);
                tl0_step = (prev != NONE).then(|| (u32::from(tl0).wrapping_sub(prev) & 0xff) as u8);
                if tl0_step.is_some_and(|step| step != 1) {
                    self.tl0_gaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let Some(layer) = layer_of(&packet.payload) else {
            return;
        };
        self.by_layer[usize::from(layer)].fetch_add(1, Ordering::Relaxed);
        let prev = self.layer.swap(u32::from(layer), Ordering::Relaxed);
        if (prev != u32::from(layer) || resumed)
            && let Ok(mut switches) = self.switches.lock()
        {
            switches.push(LayerSwitch {
                at: now,
                from: u8::try_from(prev).ok(),
                to: layer,
                keyframe,
                seq_step,
                picture_id_step,
                tl0_step,
            });
        }
    }

    pub(crate) fn snapshot(&self) -> LayerStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LayerStats {
            layer: u8::try_from(self.layer.load(Ordering::Relaxed)).ok(),
            packets_by_layer: [
                load(&self.by_layer[0]),
                load(&self.by_layer[1]),
                load(&self.by_layer[2]),
            ],
            seq_gaps: load(&self.seq_gaps),
            picture_id_gaps: load(&self.picture_id_gaps),
            tl0_gaps: load(&self.tl0_gaps),
            switches: self.switches.lock().map(|s| s.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::vp8_is_keyframe;

    #[test]
    fn frames_carry_layer_marks_and_advancing_ids() {
        let sender = SimulcastSender::new(3);
        let first = sender.frame(0);
        assert_eq!(first.len(), 1 + 2 + 3);
        let log = ReceiveLog::default();
        for p in first.iter().filter(|p| p.header.ssrc == SIMULCAST_SSRCS[2]) {
            log.record(p, vp8_is_keyframe(&p.payload));
        }
        assert!(vp8_is_keyframe(&first[0].payload));
        assert_eq!(layer_of(&first[0].payload), Some(0));
        assert_eq!(layer_of(&first[5].payload), Some(2));
        let second = sender.frame(3000);
        assert!(!vp8_is_keyframe(&second[0].payload));
        for p in second
            .iter()
            .filter(|p| p.header.ssrc == SIMULCAST_SSRCS[2])
        {
            log.record(p, vp8_is_keyframe(&p.payload));
        }
        let stats = log.snapshot();
        assert_eq!(stats.packets_by_layer, [0, 0, 6]);
        assert_eq!(
            (stats.seq_gaps, stats.picture_id_gaps, stats.tl0_gaps),
            (0, 0, 0)
        );
        assert_eq!(stats.switches.len(), 1);
        assert!(stats.switches[0].keyframe);
        // A keyframe request for one layer makes only that layer's next frame a keyframe.
        assert!(sender.on_keyframe_request(SIMULCAST_SSRCS[1]));
        assert!(!sender.on_keyframe_request(1));
        let third = sender.frame(6000);
        let keys: Vec<bool> = third.iter().map(|p| vp8_is_keyframe(&p.payload)).collect();
        assert_eq!(keys, [false, true, false, false, false, false]);
        assert_eq!(sender.keyframes_sent(), [1, 2, 1]);
    }

    #[test]
    fn jumps_in_numbering_are_counted() {
        let sender_a = SimulcastSender::new(2);
        let log = ReceiveLog::default();
        for p in sender_a
            .frame(0)
            .iter()
            .filter(|p| p.header.ssrc == SIMULCAST_SSRCS[0])
        {
            log.record(p, true);
        }
        // The other layer unchanged: its own sequence numbers and picture ids.
        for p in sender_a
            .frame(0)
            .iter()
            .filter(|p| p.header.ssrc == SIMULCAST_SSRCS[1])
        {
            log.record(p, false);
        }
        let stats = log.snapshot();
        assert_eq!(stats.seq_gaps, 1);
        assert_eq!(stats.picture_id_gaps, 1);
        assert_eq!(stats.tl0_gaps, 1);
        assert_eq!(stats.switches.len(), 2);
        assert!(!stats.switches[1].keyframe);
    }

    #[test]
    fn extension_ids_come_from_the_video_section() {
        let sender = SimulcastSender::new(2);
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
                   a=extmap:5/recvonly urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n";
        sender.learn_extensions(sdp);
        let frame = sender.frame(0);
        assert_eq!(frame[0].header.get_extension(4).as_deref(), Some(&b"1"[..]));
        assert_eq!(frame[0].header.get_extension(5).as_deref(), Some(&b"q"[..]));
        assert_eq!(frame[1].header.get_extension(5).as_deref(), Some(&b"h"[..]));
    }
}
