//! Simulcast layers: which layer a subscriber asked for, how a publisher's RIDs rank, and where
//! a layer may be switched to (the start of a keyframe, per codec).
//!
//! A decoder can only start on a keyframe, so a leg moves to another layer (or resumes after a
//! pause) at the first keyframe of that layer and keeps forwarding what it had until then.

use std::time::{Duration, Instant};

/// What a subscriber asked to receive of one video track (`rtc:subscribe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VideoQuality {
    /// Paused: nothing is forwarded until another quality is chosen.
    Off,
    /// The lowest layer.
    Low,
    /// The middle layer of three; the lower of two.
    Medium,
    /// The highest layer, which a new leg starts with.
    #[default]
    High,
}

impl VideoQuality {
    /// Index of the chosen layer among `n` layers sorted lowest first; `None` when paused or
    /// when no layer is known yet.
    pub(crate) fn layer_index(self, n: usize) -> Option<usize> {
        if n == 0 {
            return None;
        }
        match self {
            VideoQuality::Off => None,
            VideoQuality::Low => Some(0),
            VideoQuality::Medium => Some((n - 1) / 2),
            VideoQuality::High => Some(n - 1),
        }
    }
}

/// Rank of a RID among a publisher's layers, lowest first. Browsers and most clients name them
/// `q`/`h`/`f` (quarter, half, full resolution); other common spellings are accepted too.
/// Unknown names rank after the known ones, in the order they appeared.
pub(crate) fn rid_rank(rid: &str) -> u8 {
    match rid.to_ascii_lowercase().as_str() {
        "q" | "l" | "low" | "lo" | "0" => 0,
        "h" | "m" | "mid" | "medium" | "1" => 1,
        "f" | "high" | "hi" | "full" | "2" => 2,
        _ => u8::MAX,
    }
}

/// The video codecs whose keyframes the forwarding path recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VideoCodec {
    Vp8,
    Vp9,
    H264,
    /// A codec without a keyframe test here: a switch happens at its next packet, and the
    /// keyframe requested for the switch repairs the picture shortly after.
    Other,
}

impl VideoCodec {
    pub(crate) fn from_mime(mime: &str) -> Self {
        if mime.eq_ignore_ascii_case("video/vp8") {
            VideoCodec::Vp8
        } else if mime.eq_ignore_ascii_case("video/vp9") {
            VideoCodec::Vp9
        } else if mime.eq_ignore_ascii_case("video/h264") {
            VideoCodec::H264
        } else {
            VideoCodec::Other
        }
    }

    /// Whether a leg may start forwarding this stream at this packet: the first packet of a
    /// keyframe (for H264, of the SPS or IDR that begins one).
    pub(crate) fn is_switch_point(self, payload: &[u8]) -> bool {
        match self {
            VideoCodec::Vp8 => crate::vp8::is_keyframe_start(payload),
            VideoCodec::Vp9 => vp9_is_keyframe_start(payload),
            VideoCodec::H264 => h264_is_keyframe_start(payload),
            VideoCodec::Other => true,
        }
    }
}

/// RFC 9628: the descriptor's B bit (start of a frame) set and P bit (inter-picture predicted)
/// clear.
fn vp9_is_keyframe_start(payload: &[u8]) -> bool {
    payload
        .first()
        .is_some_and(|&b| b & 0x40 == 0 && b & 0x08 != 0)
}

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

/// RFC 6184, packetization mode 1: a single IDR or SPS NAL unit, a STAP-A aggregating one, or
/// the first fragment (FU-A with S set) of one. Senders put SPS and PPS before an IDR, so a
/// switch at the SPS hands the decoder everything it needs.
fn h264_is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let starts_key = |nal_type: u8| nal_type == H264_IDR || nal_type == H264_SPS;
    match first & 0x1f {
        H264_STAP_A => {
            let mut at = 1;
            while let (Some(&hi), Some(&lo)) = (payload.get(at), payload.get(at + 1)) {
                let size = usize::from(u16::from_be_bytes([hi, lo]));
                match payload.get(at + 2) {
                    Some(&nal) if size > 0 => {
                        if starts_key(nal & 0x1f) {
                            return true;
                        }
                    }
                    _ => return false,
                }
                at += 2 + size;
            }
            false
        }
        H264_FU_A => payload
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && starts_key(fu & 0x1f)),
        nal_type => starts_key(nal_type),
    }
}

/// Most layers a published track is split into; further RIDs are ignored.
pub(crate) const MAX_LAYERS: usize = 3;

/// How long a leg waits for the keyframe it asked for before asking again: the request or the
/// keyframe may have been lost.
const KEYFRAME_RETRY: Duration = Duration::from_secs(1);

/// A published video track's layers as the forwarding path reads them for each packet: the
/// layer SSRCs lowest first, and the codec that tells where a switch may happen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerView {
    pub(crate) ssrcs: [u32; MAX_LAYERS],
    pub(crate) len: usize,
    pub(crate) codec: VideoCodec,
}

/// What a leg does with one packet of its track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Forward it: it belongs to the layer being forwarded.
    Forward,
    /// Forward it, and re-base the numbering first: it is the keyframe that starts a new layer
    /// or resumes a paused leg.
    Switch,
    /// Not for this leg (another layer, or paused).
    Skip,
    /// Not yet: the leg waits for a keyframe of this layer, which must be asked for.
    RequestKeyframe(u32),
}

/// What congestion control allows a leg, on top of what the subscriber asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// No constraint (yet).
    None,
    /// At most this layer index.
    Layer(usize),
    /// Nothing: the connection cannot carry even the lowest layer.
    Paused,
}

/// One video leg's layer choice: what the subscriber asked for and what is being forwarded.
#[derive(Debug, Clone)]
pub(crate) struct Selection {
    pub(crate) quality: VideoQuality,
    /// What the subscriber's bandwidth allows.
    pub(crate) limit: Limit,
    /// The layer SSRC being forwarded; `None` while paused or waiting for the first keyframe.
    pub(crate) current: Option<u32>,
    /// The layer a keyframe was asked for, and when.
    requested: Option<(u32, Instant)>,
}

impl Selection {
    /// A new leg: a single-layer track is forwarded from its next packet, as it always was; a
    /// simulcast one from the first keyframe of the chosen layer.
    pub(crate) fn new(quality: VideoQuality, single_layer: Option<u32>) -> Self {
        Self {
            quality,
            limit: Limit::None,
            current: single_layer.filter(|_| quality != VideoQuality::Off),
            requested: None,
        }
    }

    /// The layer SSRC to forward: the subscriber's choice, lowered to the bandwidth limit.
    pub(crate) fn target(&self, view: &LayerView) -> Option<u32> {
        let index = self.quality.layer_index(view.len)?;
        let index = match self.limit {
            Limit::None => index,
            Limit::Layer(max) => index.min(max),
            Limit::Paused => return None,
        };
        Some(view.ssrcs[index])
    }

    /// Applies a new bandwidth limit; returns the layer SSRC to ask a keyframe of, if the leg
    /// now waits for one.
    pub(crate) fn set_limit(
        &mut self,
        limit: Limit,
        view: &LayerView,
        now: Instant,
    ) -> Option<u32> {
        if limit == self.limit {
            return None;
        }
        self.limit = limit;
        self.retarget(Some(view), now)
    }

    /// After the choice or the limit changed: stops a leg that has nothing to forward, and
    /// asks for a keyframe of a new target.
    fn retarget(&mut self, view: Option<&LayerView>, now: Instant) -> Option<u32> {
        let target = view.and_then(|v| self.target(v));
        if target.is_none() && (self.quality == VideoQuality::Off || self.limit == Limit::Paused) {
            self.current = None;
            self.requested = None;
            return None;
        }
        let target = target?;
        if self.current == Some(target) {
            return None;
        }
        self.requested = Some((target, now));
        Some(target)
    }

    /// Applies a new choice; returns the layer SSRC to ask a keyframe of, if the leg now waits
    /// for one. Pausing takes effect at once.
    pub(crate) fn set_quality(
        &mut self,
        quality: VideoQuality,
        view: Option<&LayerView>,
        now: Instant,
    ) -> Option<u32> {
        self.quality = quality;
        self.retarget(view, now)
    }

    /// Whether a packet of layer `ssrc` concerns this leg at all; cheap, checked before anything
    /// else so the layers a leg does not receive cost it nothing.
    pub(crate) fn wants(&self, view: &LayerView, ssrc: u32) -> bool {
        self.current == Some(ssrc) || self.target(view) == Some(ssrc)
    }

    /// Decides for one packet of layer `ssrc`. The current layer keeps flowing until the target
    /// layer's keyframe arrives, so a switch never leaves the subscriber without a picture.
    pub(crate) fn decide(
        &mut self,
        view: &LayerView,
        ssrc: u32,
        payload: &[u8],
        now: Instant,
    ) -> Decision {
        if self.current == Some(ssrc) {
            return Decision::Forward;
        }
        if self.target(view) != Some(ssrc) {
            return Decision::Skip;
        }
        if view.codec.is_switch_point(payload) {
            self.current = Some(ssrc);
            self.requested = None;
            return Decision::Switch;
        }
        match self.requested {
            Some((asked, at)) if asked == ssrc && now < at + KEYFRAME_RETRY => Decision::Skip,
            _ => {
                self.requested = Some((ssrc, now));
                Decision::RequestKeyframe(ssrc)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VP8_KEY: &[u8] = &[0x10, 0x00];
    const VP8_DELTA: &[u8] = &[0x10, 0x01];

    fn view() -> LayerView {
        LayerView {
            ssrcs: [10, 20, 30],
            len: 3,
            codec: VideoCodec::Vp8,
        }
    }

    #[test]
    fn a_switch_waits_for_the_target_keyframe() {
        let t0 = Instant::now();
        let v = view();
        let mut s = Selection::new(VideoQuality::High, None);
        assert!(!s.wants(&v, 10) && s.wants(&v, 30));
        assert_eq!(
            s.decide(&v, 30, VP8_DELTA, t0),
            Decision::RequestKeyframe(30)
        );
        assert_eq!(
            s.decide(&v, 30, VP8_DELTA, t0),
            Decision::Skip,
            "asked once"
        );
        assert_eq!(
            s.decide(&v, 30, VP8_DELTA, t0 + KEYFRAME_RETRY),
            Decision::RequestKeyframe(30),
            "asked again after a while"
        );
        assert_eq!(s.decide(&v, 30, VP8_KEY, t0), Decision::Switch);
        assert_eq!(s.decide(&v, 30, VP8_DELTA, t0), Decision::Forward);

        // Down to low: high keeps flowing until low's keyframe.
        assert_eq!(s.set_quality(VideoQuality::Low, Some(&v), t0), Some(10));
        assert_eq!(s.decide(&v, 30, VP8_DELTA, t0), Decision::Forward);
        assert_eq!(s.decide(&v, 10, VP8_DELTA, t0), Decision::Skip);
        assert_eq!(s.decide(&v, 10, VP8_KEY, t0), Decision::Switch);
        assert!(!s.wants(&v, 30));
        assert_eq!(s.decide(&v, 30, VP8_KEY, t0), Decision::Skip);

        // Pause stops at once; resume waits for a keyframe of the same layer.
        assert_eq!(s.set_quality(VideoQuality::Off, Some(&v), t0), None);
        assert!(!s.wants(&v, 10));
        assert_eq!(s.set_quality(VideoQuality::Low, Some(&v), t0), Some(10));
        assert_eq!(s.decide(&v, 10, VP8_DELTA, t0), Decision::Skip);
        assert_eq!(s.decide(&v, 10, VP8_KEY, t0), Decision::Switch);
        assert_eq!(s.set_quality(VideoQuality::Low, Some(&v), t0), None);
    }

    #[test]
    fn the_bandwidth_limit_lowers_and_pauses() {
        let t0 = Instant::now();
        let v = view();
        let mut s = Selection::new(VideoQuality::High, None);
        assert_eq!(s.decide(&v, 30, VP8_KEY, t0), Decision::Switch);
        assert_eq!(s.set_limit(Limit::Layer(1), &v, t0), Some(20));
        assert_eq!(s.decide(&v, 20, VP8_KEY, t0), Decision::Switch);
        // The subscriber's own lower choice still wins.
        assert_eq!(s.set_quality(VideoQuality::Low, Some(&v), t0), Some(10));
        assert_eq!(s.decide(&v, 10, VP8_KEY, t0), Decision::Switch);
        assert_eq!(s.set_limit(Limit::Paused, &v, t0), None);
        assert!(!s.wants(&v, 10));
        assert_eq!(s.set_limit(Limit::None, &v, t0), Some(10));
        assert_eq!(s.set_limit(Limit::None, &v, t0), None, "unchanged");
    }

    #[test]
    fn a_single_layer_leg_forwards_at_once() {
        let v = LayerView {
            ssrcs: [10, 0, 0],
            len: 1,
            codec: VideoCodec::Vp8,
        };
        let mut s = Selection::new(VideoQuality::High, Some(10));
        assert_eq!(
            s.decide(&v, 10, VP8_DELTA, Instant::now()),
            Decision::Forward
        );
        assert_eq!(Selection::new(VideoQuality::Off, Some(10)).current, None);
    }

    #[test]
    fn qualities_pick_layers() {
        assert_eq!(VideoQuality::High.layer_index(3), Some(2));
        assert_eq!(VideoQuality::Medium.layer_index(3), Some(1));
        assert_eq!(VideoQuality::Low.layer_index(3), Some(0));
        assert_eq!(VideoQuality::Medium.layer_index(2), Some(0));
        assert_eq!(VideoQuality::High.layer_index(2), Some(1));
        assert_eq!(VideoQuality::High.layer_index(1), Some(0));
        assert_eq!(VideoQuality::Low.layer_index(1), Some(0));
        assert_eq!(VideoQuality::Off.layer_index(3), None);
        assert_eq!(VideoQuality::High.layer_index(0), None);
    }

    #[test]
    fn rids_rank_low_to_high() {
        assert!(rid_rank("q") < rid_rank("h") && rid_rank("h") < rid_rank("f"));
        assert_eq!(rid_rank("LOW"), 0);
        assert_eq!(rid_rank("mid"), 1);
        assert_eq!(rid_rank("x"), u8::MAX);
    }

    #[test]
    fn h264_switch_points() {
        let h264 = VideoCodec::H264;
        assert!(h264.is_switch_point(&[0x65, 0x88])); // IDR
        assert!(h264.is_switch_point(&[0x67, 0x42])); // SPS
        assert!(!h264.is_switch_point(&[0x41, 0x9a])); // non-IDR slice
        assert!(!h264.is_switch_point(&[0x68, 0xce])); // PPS alone
        // STAP-A holding SPS and PPS.
        assert!(h264.is_switch_point(&[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]));
        // STAP-A holding only a PPS, and a truncated one.
        assert!(!h264.is_switch_point(&[0x78, 0x00, 0x02, 0x68, 0xce]));
        assert!(!h264.is_switch_point(&[0x78, 0x00]));
        // FU-A: start of an IDR, middle of an IDR, start of a non-IDR slice.
        assert!(h264.is_switch_point(&[0x7c, 0x85, 0x00]));
        assert!(!h264.is_switch_point(&[0x7c, 0x05, 0x00]));
        assert!(!h264.is_switch_point(&[0x7c, 0x81, 0x00]));
        assert!(!h264.is_switch_point(&[]));
    }

    #[test]
    fn vp9_switch_points() {
        assert!(VideoCodec::Vp9.is_switch_point(&[0x88]));
        assert!(!VideoCodec::Vp9.is_switch_point(&[0xc8])); // predicted
        assert!(!VideoCodec::Vp9.is_switch_point(&[0x80])); // not a frame start
    }

    #[test]
    fn codecs_from_mime() {
        assert_eq!(VideoCodec::from_mime("video/VP8"), VideoCodec::Vp8);
        assert_eq!(VideoCodec::from_mime("video/h264"), VideoCodec::H264);
        assert_eq!(VideoCodec::from_mime("video/AV1"), VideoCodec::Other);
    }
}
