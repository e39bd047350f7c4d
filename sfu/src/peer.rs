//! One peer connection (publisher or subscriber): how it is configured and what the engine tracks
//! about it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::dtls::cipher_suite::CipherSuiteId;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{
    Attribute, CongestionControlBuilder, Gcc, Interceptor, NackGeneratorBuilder, Packet,
    ReceiverReportBuilder, Registry, Slot, StreamInfo, TaggedPacket, TwccSenderBuilder,
};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine as RtcMediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpHeaderExtensionCapability, RtpCodecKind, TYPE_RTCP_FB_NACK,
    TYPE_RTCP_FB_TRANSPORT_CC,
};
use rtc::sansio::Protocol;
use uuid::Uuid;

use crate::bwe::{Estimator, INITIAL_BPS, MAX_BPS, MIN_BPS};
use crate::demux::PeerKey;
use crate::error::EngineError;
use crate::forwarder::Forwarder;
use crate::layers::{LayerView, MAX_LAYERS, Selection, VideoCodec, rid_rank};
use crate::probe::Prober;
use crate::quality::{ReceptionStats, RemoteReports};
use crate::repair::{LegMapping, RepairQueue, RepairSender, SourceHistory};
use crate::sdp::with_candidates_in_every_section;
use crate::sender_report::SentCounts;
use crate::speaker::{AudioGate, LevelWindow};
use crate::transport_cc::VideoTransportCc;
use crate::vp8::Vp8Rewriter;
use crate::{ForwardedTrack, MediaKind, PeerRole, RoomId, TrackSource};

/// A peer connection and the engine's bookkeeping for it.
pub(crate) struct Peer {
    pub(crate) key: PeerKey,
    pub(crate) room: RoomId,
    pub(crate) participant: String,
    pub(crate) role: PeerRole,
    pub(crate) pc: RTCPeerConnection,
    /// The deadline this peer currently has in the worker's timer heap, already rounded; heap
    /// entries that do not match it are stale and skipped.
    pub(crate) armed: Option<Instant>,
    /// Whether the peer is already queued for servicing in this loop pass.
    pub(crate) dirty: bool,
    pub(crate) connected: bool,
    /// Per-SSRC reception counters; keyed by SSRC because RTP can arrive before the track event
    /// that names its kind and mid.
    pub(crate) tracks: HashMap<u32, TrackCounters>,
    /// Publisher only: the tracks it publishes, once their first packet opened them.
    pub(crate) published: Vec<PublishedTrack>,
    /// Subscriber only: forwarded tracks, in slots that never move so the publishers' fan-out
    /// lists can point at them by index; a freed slot is reused by the next track.
    pub(crate) legs: Vec<Option<Leg>>,
    /// Subscriber only: transceivers whose leg was removed, ready to carry the next track of
    /// their kind on their m-line.
    pub(crate) free_transceivers: Vec<FreeTransceiver>,
    /// Subscriber only: an offer is out and its answer not applied yet.
    pub(crate) offer_pending: bool,
    /// Subscriber only: the forwarded set changed while an offer was out; offer again once the
    /// answer is in.
    pub(crate) renegotiate: bool,
    /// Subscriber only: the next offer waits until then (see the worker's renegotiation gap);
    /// set by every applied answer, so `None` until the client's first.
    pub(crate) offer_not_before: Option<Instant>,
    /// Subscriber only: connectivity checks that arrived before the first answer was applied.
    /// A client starts checking as soon as it has answered, and its checks often beat the answer,
    /// which travels through the signaling server; rtc's agent cannot verify a check before it
    /// knows the client's ufrag and drops it, and the client repeats it only at its next tick.
    /// Held here (a few at most) and handed to the agent with the answer.
    pub(crate) early_checks: Vec<(BytesMut, SocketAddr)>,
    /// Subscriber only: the host candidate is added once, after the first local description.
    pub(crate) candidate_added: bool,
    /// Subscriber only: packets handed to this peer's legs since its datagrams were last flushed,
    /// and when the oldest of them was read from the socket, for the forwarding-latency histogram.
    pub(crate) unflushed: u64,
    pub(crate) oldest_unflushed: Option<Instant>,
    /// Subscriber only: the connection's bandwidth estimate.
    pub(crate) bwe: Estimator,
    /// Subscriber only: tries videos the estimate left paused or lowered (see `probe`).
    pub(crate) prober: Prober,
    /// Subscriber only: video payload bytes sent since the last bandwidth interval.
    pub(crate) video_sent: u64,
    /// Subscriber only: rtc's GCC estimate from the subscriber's transport-cc feedback, in bits
    /// per second; 0 until the first feedback.
    pub(crate) twcc_estimate: TwccEstimate,
    /// Subscriber only: retransmissions on their way to the connection's repair sender.
    pub(crate) repairs: RepairQueue,
    /// Publisher only: sources whose packets are not forwarded at all (held by the server,
    /// whatever the client sends), copied from the room member when the peer is created.
    pub(crate) held: HashSet<TrackSource>,
}

/// The latest transport-cc based estimate of one connection, written by its interceptor chain
/// and read by the worker, both on the worker's thread (atomic only because interceptors must
/// be `Send`).
#[derive(Debug, Clone, Default)]
pub(crate) struct TwccEstimate(Arc<TwccShared>);

#[derive(Debug, Default)]
pub(crate) struct TwccShared {
    bps: AtomicU64,
    /// Transport-cc feedback packets seen since the worker last took the estimate.
    feedback: AtomicU64,
}

impl TwccEstimate {
    /// The estimate, once transport-cc feedback produced one.
    pub(crate) fn get(&self) -> Option<u64> {
        Some(self.0.bps.load(Ordering::Relaxed)).filter(|&bps| bps > 0)
    }

    /// The estimate if transport-cc feedback arrived since the last call: without feedback
    /// (nothing sent, or a client that stopped reporting) it describes nothing current.
    pub(crate) fn take_fresh(&self) -> Option<u64> {
        (self.0.feedback.swap(0, Ordering::Relaxed) > 0)
            .then(|| self.get())
            .flatten()
    }

    fn set(&self, bps: f64) {
        self.0.bps.store(bps.max(1.0) as u64, Ordering::Relaxed);
    }

    fn on_feedback(&self) {
        self.0.feedback.fetch_add(1, Ordering::Relaxed);
    }
}

impl Peer {
    /// Subscriber only: the client has answered an offer at least once.
    pub(crate) fn has_answered(&self) -> bool {
        self.offer_not_before.is_some()
    }

    pub(crate) fn new(
        key: PeerKey,
        room: RoomId,
        participant: String,
        role: PeerRole,
        pc: RTCPeerConnection,
    ) -> Self {
        Self {
            key,
            room,
            participant,
            role,
            pc,
            armed: None,
            dirty: false,
            connected: false,
            tracks: HashMap::new(),
            published: Vec::new(),
            legs: Vec::new(),
            free_transceivers: Vec::new(),
            offer_pending: false,
            renegotiate: false,
            offer_not_before: None,
            early_checks: Vec::new(),
            candidate_added: false,
            unflushed: 0,
            oldest_unflushed: None,
            bwe: Estimator::default(),
            prober: Prober::default(),
            video_sent: 0,
            twcc_estimate: TwccEstimate::default(),
            repairs: RepairQueue::default(),
            held: HashSet::new(),
        }
    }
}

/// A publisher's track as the forwarding path sees it.
pub(crate) struct PublishedTrack {
    /// The track's identity: the SSRC of its first layer to arrive (its only one without
    /// simulcast). Legs and fan-out entries name the track by it.
    pub(crate) ssrc: u32,
    pub(crate) receiver_id: RTCRtpReceiverId,
    pub(crate) kind: MediaKind,
    pub(crate) source: TrackSource,
    /// Whether the track arrives as RID-tagged simulcast layers.
    pub(crate) simulcast: bool,
    /// The layers seen so far, lowest first; one entry without simulcast.
    pub(crate) layers: Vec<Layer>,
    /// The codec of the first packet; the track is offered to subscribers only once it is known,
    /// because a subscriber leg is created for exactly that codec.
    pub(crate) codec: Option<RTCRtpCodec>,
    pub(crate) video_codec: VideoCodec,
    /// Subscriber legs fed by this track: (subscriber peer, leg slot).
    pub(crate) fanout: Vec<(PeerKey, usize)>,
    /// Audio only: the id the publisher negotiated for `ssrc-audio-level`, looked up once when
    /// the track opens; `None` when it sends no levels, and then loudest-N never gates it.
    pub(crate) audio_level_id: Option<u8>,
    /// Audio only: levels received in the current detection interval.
    pub(crate) levels: LevelWindow,
    /// Audio only: whether loudest-N forwards the track.
    pub(crate) gate: AudioGate,
}

impl PublishedTrack {
    pub(crate) fn has_ssrc(&self, ssrc: u32) -> bool {
        self.layers.iter().any(|l| l.ssrc == ssrc)
    }

    /// The layers in the form the per-packet path reads.
    pub(crate) fn layer_view(&self) -> LayerView {
        let mut ssrcs = [0; MAX_LAYERS];
        for (slot, layer) in ssrcs.iter_mut().zip(&self.layers) {
            *slot = layer.ssrc;
        }
        LayerView {
            ssrcs,
            len: self.layers.len().min(MAX_LAYERS),
            codec: self.video_codec,
        }
    }

    /// Adds a simulcast layer in its place by RID rank (arrival order among equal ranks).
    pub(crate) fn add_layer(&mut self, ssrc: u32, rid: &str) {
        if self.has_ssrc(ssrc) || self.layers.len() >= MAX_LAYERS {
            return;
        }
        let rank = rid_rank(rid);
        let at = self
            .layers
            .iter()
            .position(|l| l.rank > rank)
            .unwrap_or(self.layers.len());
        self.layers.insert(at, Layer::new(ssrc, rank));
    }
}

/// One encoding of a published track: the only one, or one simulcast layer.
pub(crate) struct Layer {
    pub(crate) ssrc: u32,
    /// [`rid_rank`] of its RID; orders the layers.
    pub(crate) rank: u8,
    /// When a PLI was last sent upstream for this layer.
    pub(crate) last_pli: Option<Instant>,
    /// A request arrived inside the 500 ms window; one PLI goes out when it ends.
    pub(crate) pli_pending: bool,
    /// Payload bitrate over the last bandwidth interval, and the byte count it started from.
    pub(crate) rate_bps: u64,
    pub(crate) bytes_seen: u64,
    /// Video only: the recent packets, which subscribers' retransmissions are rebuilt from.
    pub(crate) history: SourceHistory,
}

impl Layer {
    pub(crate) fn new(ssrc: u32, rank: u8) -> Self {
        Self {
            ssrc,
            rank,
            last_pli: None,
            pli_pending: false,
            rate_bps: 0,
            bytes_seen: 0,
            history: SourceHistory::default(),
        }
    }
}

/// A subscriber transceiver whose leg was removed. The next track of its kind takes it over
/// with the same SSRC and a continuing [`Forwarder`], so to the client its m-line simply goes
/// on with a new `msid`: a client that maps packets to receivers by SSRC (aiortc registers a
/// receiver's SSRCs once) keeps working, and a long call's SDP does not grow with every join.
pub(crate) struct FreeTransceiver {
    /// The transceiver's index, which is what rtc's sender ids wrap.
    pub(crate) index: usize,
    pub(crate) kind: MediaKind,
    pub(crate) forwarder: Forwarder,
    /// What its SSRC has sent so far; a reused transceiver's reports carry on counting.
    pub(crate) sent: SentCounts,
}

/// One forwarded track on a subscriber connection.
pub(crate) struct Leg {
    pub(crate) publisher: PeerKey,
    pub(crate) source_ssrc: u32,
    pub(crate) sender_id: RTCRtpSenderId,
    pub(crate) info: ForwardedTrack,
    pub(crate) forwarder: Forwarder,
    /// Video only: which layer the subscriber wants and which is being forwarded.
    pub(crate) selection: Option<Selection>,
    /// Keeps VP8 picture ids continuous across layer switches and resumes.
    pub(crate) vp8: Vp8Rewriter,
    /// How the leg's numbering maps onto its sources, to answer the subscriber's NACKs.
    pub(crate) mapping: LegMapping,
    /// The client has answered an offer that carries this leg.
    pub(crate) negotiated: bool,
    /// A keyframe was requested for this leg's start.
    pub(crate) keyframe_requested: bool,
    /// Bytes sent on the leg and the subscriber's receiver reports about it: the outbound half of
    /// the quality reports.
    pub(crate) reports: RemoteReports,
    /// What the leg has sent, for its sender reports.
    pub(crate) sent: SentCounts,
}

/// What the engine has seen of one inbound RTP stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrackCounters {
    pub(crate) kind: Option<MediaKind>,
    pub(crate) mid: Option<String>,
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
    /// RTP clock rate of the stream's codec, 0 until the codec is known.
    pub(crate) clock_rate: u32,
    /// Loss, jitter and bitrate as the server received the stream: the inbound half of the
    /// quality reports.
    pub(crate) reception: ReceptionStats,
}

/// ICE credentials the engine chooses itself, so the demultiplexer knows the ufrag up front.
pub(crate) struct IceCredentials {
    pub(crate) ufrag: String,
    pub(crate) pwd: String,
}

impl IceCredentials {
    /// Fresh random credentials: 16 hex chars of ufrag (ICE needs at least 4) and 32 of password
    /// (at least 22), drawn from v4 UUIDs so no extra RNG dependency is needed.
    pub(crate) fn random() -> Self {
        let ufrag = Uuid::new_v4().simple().to_string()[..16].to_owned();
        let pwd = Uuid::new_v4().simple().to_string();
        Self { ufrag, pwd }
    }
}

/// Builds a publisher peer connection that answers the client's `offer_sdp`, and returns it with
/// the answer SDP (which carries the worker's host candidate in every m-section).
///
/// Any failure before the answer exists is reported as [`EngineError::InvalidSdp`] when the offer
/// is to blame; the half-built connection is simply dropped, so a bad offer leaves nothing behind.
pub(crate) fn answer_publisher(
    now: Instant,
    announced: SocketAddr,
    creds: &IceCredentials,
    offer_sdp: String,
) -> Result<(RTCPeerConnection, String), EngineError> {
    let offer = RTCSessionDescription::offer(offer_sdp)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    let mut pc = build_pc(now, creds, PeerRole::Publisher, None, None)?;
    pc.set_remote_description(now, offer)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    let answer = pc
        .create_answer(None)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    pc.set_local_description(now, answer)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    add_host_candidate(&mut pc, announced)?;
    let sdp = pc
        .local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| EngineError::Rtc("no local description after answering".into()))?;
    Ok((pc, with_candidates_in_every_section(&sdp)?))
}

/// Renegotiates an existing publisher with a new client offer (a track added or removed).
pub(crate) fn reanswer_publisher(
    now: Instant,
    pc: &mut RTCPeerConnection,
    offer_sdp: String,
) -> Result<String, EngineError> {
    let offer = RTCSessionDescription::offer(offer_sdp)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    pc.set_remote_description(now, offer)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    let answer = pc
        .create_answer(None)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    pc.set_local_description(now, answer)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    let sdp = pc
        .local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| EngineError::Rtc("no local description after answering".into()))?;
    with_candidates_in_every_section(&sdp)
}

/// Builds an empty subscriber peer connection; transceivers are added before each offer. Its
/// transport-cc estimate is written to `estimate`, and it sends the retransmissions pushed to
/// `repairs`.
pub(crate) fn new_subscriber(
    now: Instant,
    creds: &IceCredentials,
    estimate: &TwccEstimate,
    repairs: &RepairQueue,
) -> Result<RTCPeerConnection, EngineError> {
    build_pc(
        now,
        creds,
        PeerRole::Subscriber,
        Some(estimate),
        Some(repairs),
    )
}

/// Creates and applies a subscriber offer (`actpass`, ICE-lite) and returns its SDP, with the
/// host candidate in every m-section. The candidate can only be added once a local description
/// exists, so the first offer adds it.
pub(crate) fn offer_subscriber(
    now: Instant,
    announced: SocketAddr,
    peer: &mut Peer,
) -> Result<String, EngineError> {
    let rtc_err = |e: rtc::shared::error::Error| EngineError::Rtc(e.to_string());
    let offer = peer.pc.create_offer(None).map_err(rtc_err)?;
    peer.pc.set_local_description(now, offer).map_err(rtc_err)?;
    if !peer.candidate_added {
        add_host_candidate(&mut peer.pc, announced)?;
        peer.candidate_added = true;
    }
    let sdp = peer
        .pc
        .local_description()
        .map(|d| with_msid_semantic(d.sdp))
        .ok_or_else(|| EngineError::Rtc("no local description after offering".into()))?;
    with_candidates_in_every_section(&sdp)
}

/// rtc omits `a=msid-semantic` from a first offer. Clients such as aiortc only take a track's
/// id from `a=msid` when that line is present, and `rtc:tracks` names tracks by that id, so it
/// is added at session level (after `t=`) when missing. It describes nothing the server
/// negotiates, so the offer applied locally and the one sent may differ in this line alone.
fn with_msid_semantic(sdp: String) -> String {
    if sdp.contains("\na=msid-semantic:") {
        return sdp;
    }
    match sdp
        .find("\nt=")
        .and_then(|t| sdp[t + 1..].find('\n').map(|end| t + 1 + end + 1))
    {
        Some(after_t) => format!(
            "{}a=msid-semantic:WMS *\r\n{}",
            &sdp[..after_t],
            &sdp[after_t..]
        ),
        None => sdp,
    }
}

/// Applies a client's answer to the outstanding subscriber offer.
pub(crate) fn apply_subscriber_answer(
    now: Instant,
    pc: &mut RTCPeerConnection,
    answer_sdp: String,
) -> Result<(), EngineError> {
    let answer = RTCSessionDescription::answer(answer_sdp)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))?;
    pc.set_remote_description(now, answer)
        .map_err(|e| EngineError::InvalidSdp(e.to_string()))
}

/// Counts the m-lines of an offer that send audio and video, to refuse an offer that publishes
/// more than a participant may before anything is created for it. Rejected m-lines (port 0) and
/// ones that do not send (recvonly, inactive) do not count; no direction means sendrecv.
pub(crate) fn count_sending_tracks(sdp: &str) -> (usize, usize) {
    let (mut audio, mut video) = (0, 0);
    for section in sdp.split("\nm=").skip(1) {
        let mut words = section.split_whitespace();
        let kind = words.next();
        let rejected = words.next() == Some("0");
        let direction = section.lines().find_map(|l| {
            let l = l.trim();
            ["a=sendonly", "a=sendrecv", "a=recvonly", "a=inactive"]
                .into_iter()
                .find(|d| l == *d)
        });
        let sends = matches!(direction, None | Some("a=sendonly") | Some("a=sendrecv"));
        if rejected || !sends {
            continue;
        }
        match kind {
            Some("audio") => audio += 1,
            Some("video") => video += 1,
            _ => {}
        }
    }
    (audio, video)
}

/// Marks the inbound RTCP the worker needs for the application.
///
/// Inbound RTCP stops at the end of rtc's interceptor chain unless something marks it
/// `DeliverToApplication`; without this a subscriber's PLI/FIR would never reach the worker and
/// could not be relayed to the publisher, and its receiver reports (the outbound quality) and
/// NACKs (a counter) would never be seen either. Only compounds holding one of those are marked
/// (no copy, no allocation); the interceptors wire-ward of the one that marks have already acted
/// on them. A publisher's RTCP (its sender reports) is of no use to the worker, so a publisher's
/// marking passes only keyframe requests and the rest stays inside the chain.
///
/// On a subscriber connection the [`RepairSender`] marks (every forwarded packet is moved
/// through each interceptor of the chain, so one fewer is measurably cheaper); a publisher's
/// chain ends in an [`RtcpMarker`].
pub(crate) struct RtcpMarking {
    deliver_reports: bool,
    /// Subscriber only: where the transport-cc estimate goes, read off the feedback packets
    /// rtc's congestion-control interceptor annotates.
    estimate: Option<TwccEstimate>,
}

impl RtcpMarking {
    fn new(role: PeerRole, estimate: Option<TwccEstimate>) -> Self {
        Self {
            deliver_reports: role == PeerRole::Subscriber,
            estimate,
        }
    }

    /// Reads the estimate off an inbound packet and marks it if the worker needs it.
    pub(crate) fn mark(&self, msg: &mut TaggedPacket) {
        if let Some(estimate) = &self.estimate {
            for attribute in &msg.message.attributes {
                if let Attribute::TargetBitrateChanged { bits_per_second } = attribute {
                    estimate.set(*bits_per_second);
                }
            }
            if let Packet::Rtcp(packets) = &msg.message.packet
                && packets.iter().any(|p| p.as_any().is::<TransportLayerCc>())
            {
                estimate.on_feedback();
            }
        }
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets.iter().any(|p| self.wanted(p.as_ref()))
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
    }

    fn wanted(&self, packet: &dyn rtc::rtcp::Packet) -> bool {
        if is_keyframe_request(packet) {
            return true;
        }
        let any = packet.as_any();
        self.deliver_reports
            && (any.is::<ReceiverReport>()
                || any.is::<TransportLayerNack>()
                || any
                    .downcast_ref::<SenderReport>()
                    .is_some_and(|sr| !sr.reports.is_empty()))
    }
}

pub(crate) fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// The interceptor that applies [`RtcpMarking`] at the application end of a chain that has no
/// [`RepairSender`] to do it.
struct RtcpMarker {
    marking: RtcpMarking,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RtcpMarker {
    fn new(marking: RtcpMarking) -> Self {
        Self {
            marking,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpMarker {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        self.marking.mark(&mut msg);
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
        self.write_queue.pop_front()
    }
}

impl Interceptor for RtcpMarker {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

fn build_pc(
    now: Instant,
    creds: &IceCredentials,
    role: PeerRole,
    estimate: Option<&TwccEstimate>,
    repairs: Option<&RepairQueue>,
) -> Result<RTCPeerConnection, EngineError> {
    let rtc_err = |e: rtc::shared::error::Error| EngineError::Rtc(e.to_string());
    let mut media = RtcMediaEngine::default();
    media.register_default_codecs().map_err(rtc_err)?;
    if role == PeerRole::Publisher {
        // Audio levels drive active-speaker detection and loudest-N; rtc's defaults leave the
        // extension out. Subscribers need none: forwarded packets carry no extensions.
        media
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: rtc::sdp::extmap::AUDIO_LEVEL_URI.to_owned(),
                },
                RtpCodecKind::Audio,
                None,
            )
            .map_err(rtc_err)?;
    }
    // A publisher's chain keeps rtc's receiver reports; a subscriber's sender reports, whose
    // timestamps its receiver reports echo back for RTT, come from the worker. A subscriber's
    // retransmissions leave through the repair sender. The marking lets the RTCP the worker
    // acts on reach it.
    let marking = RtcpMarking::new(role, estimate.cloned());
    let registry = interceptors(&mut media, role, repairs, marking).map_err(rtc_err)?;
    let settings = SettingEngineBuilder::new()
        // Lite: the server has a reachable address and learns the client's from its checks, so it
        // never needs to send checks or gather; that is what makes one shared socket workable.
        .with_lite(true)
        // rtc's lite agent answers a nominating check on a pair it has not checked itself by
        // checking back first, on its next check tick, and takes the pair only at the client's
        // next nomination: with rtc's 200 ms tick every connection waited about 200 ms for it.
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_CHECK_ATTEMPTS))
        .with_ice_credentials(creds.ufrag.clone(), creds.pwd.clone())
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        // Only suites that match our ECDSA certificate: a peer that picks an RSA suite would stall
        // the handshake in Connecting (webrtc-rs #808).
        .with_dtls_cipher_suites(vec![
            CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256,
            CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_256_Cbc_Sha,
        ])
        .build();
    // No ICE servers: a lite agent rejects STUN/TURN URLs.
    let config = RTCConfigurationBuilder::new().build();
    RTCPeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(rtc_err)
}

/// Where an [`RtcpMarker`] goes: application-ward of every interceptor rtc places, so they have
/// all acted on a packet before it is marked.
const MARKER_SLOT: Slot = Slot::Custom(14_000);

/// How often the NACK generator asks for one lost packet. rtc's generator never sees a repair
/// that arrives over RTX (it comes under the repair SSRC), so without a cap it asks again every
/// 100 ms until the packet leaves its window: dozens of redundant retransmissions per loss. Three
/// requests cover a repair lost once more and a round trip of up to about 300 ms.
const MAX_NACKS_PER_PACKET: u16 = 3;

/// How often the ICE agent checks back on a client's nominated pair (see `build_pc`), and how
/// many times: together the 1.4 s rtc allows by default before a pair fails.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);
const ICE_CHECK_ATTEMPTS: u16 = 28;

/// rtc's default chain (`register_default_interceptors`: NACK generator and responder,
/// simulcast header extensions, RTCP reports), split by role: each connection keeps only the
/// interceptors that act on the direction its media flows. The NACK generator is capped at
/// [`MAX_NACKS_PER_PACKET`], congestion control is per role (see [`transport_cc`]), and a
/// subscriber has the engine's own [`RepairSender`] in the responder's place: rtc's responder
/// keeps a history per leg, the engine one per published stream (see [`crate::repair`]). A
/// subscriber's sender reports come from the worker, not from rtc's interceptor.
/// Assembled here rather than patched afterwards, because replacing a registry slot logs a
/// warning on every connection.
fn interceptors(
    media: &mut RtcMediaEngine,
    role: PeerRole,
    repairs: Option<&RepairQueue>,
    marking: RtcpMarking,
) -> Result<Registry, rtc::shared::error::Error> {
    for parameter in ["", "pli"] {
        media.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_NACK.to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    configure_simulcast_extension_headers(media)?;
    match role {
        // A publisher's connection only receives media: lost packets are asked for again,
        // receiver reports tell the client how its streams arrive, and rtc's TWCC receiver (with
        // the extension and feedback for audio and video) is what a browser's own send-side
        // estimate needs from the server.
        PeerRole::Publisher => {
            let registry = Registry::new()
                .with(
                    Slot::NackGenerator,
                    NackGeneratorBuilder::new()
                        .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                        .build(),
                )
                .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
                .with(MARKER_SLOT, RtcpMarker::new(marking));
            configure_twcc_receiver_only(registry, media)
        }
        // A subscriber's connection only sends media, and every forwarded packet is moved
        // through each interceptor of its chain, so it holds only what acts on sent media:
        // repairs and transport-wide congestion control. Its sender reports are the worker's
        // (see `crate::sender_report`).
        PeerRole::Subscriber => {
            let registry = Registry::new();
            // The repair sender sits app-ward of congestion control, whose bitrate annotations
            // the marking reads, and marks for the worker.
            let registry = match repairs {
                Some(repairs) => registry.with(
                    Slot::NackResponder,
                    RepairSender::new(repairs.clone()).with_marking(marking),
                ),
                None => registry.with(MARKER_SLOT, RtcpMarker::new(marking)),
            };
            transport_cc(registry, media)
        }
    }
}

/// Send-side estimation on what the server forwards to a subscriber, for video only: the
/// transport-cc extension and feedback are offered in video sections alone, and
/// [`VideoTransportCc`] numbers and records only the streams that negotiated them. Audio is
/// never limited by the estimate (section 9.4 of the API notes), so it carries no
/// transport-wide sequence numbers and costs the estimator nothing; the estimate describes the
/// video, which is what it chooses layers for. rtc's GCC is fed by the subscriber's transport-cc
/// feedback. No pacer: the engine adapts by choosing layers, not by queueing, so forwarded
/// packets leave as soon as they arrive. A subscriber receives no media, so it needs no TWCC
/// receiver.
fn transport_cc(
    registry: Registry,
    media: &mut RtcMediaEngine,
) -> Result<Registry, rtc::shared::error::Error> {
    media.register_feedback(
        RTCPFeedback {
            typ: TYPE_RTCP_FB_TRANSPORT_CC.to_owned(),
            parameter: String::new(),
        },
        RtpCodecKind::Video,
    );
    media.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
        },
        RtpCodecKind::Video,
        None,
    )?;
    let controller =
        CongestionControlBuilder::new(Gcc::new(INITIAL_BPS as f64, MIN_BPS as f64, MAX_BPS as f64))
            .build();
    Ok(registry.with(
        Slot::CongestionControl,
        VideoTransportCc::new(TwccSenderBuilder::new().build(), controller),
    ))
}

/// Advertises the worker's single host candidate, then end-of-candidates so the connection does
/// not report gathering forever.
fn add_host_candidate(
    pc: &mut RTCPeerConnection,
    announced: SocketAddr,
) -> Result<(), EngineError> {
    let rtc_err = |e: rtc::shared::error::Error| EngineError::Rtc(e.to_string());
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: announced.ip().to_string(),
            port: announced.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(rtc_err)?;
    let init = RTCIceCandidate::from(&candidate)
        .to_json()
        .map_err(rtc_err)?;
    pc.add_local_candidate(init).map_err(rtc_err)?;
    pc.add_local_candidate(RTCIceCandidateInit::default())
        .map_err(rtc_err)
}

#[cfg(test)]
mod tests {
    use super::{count_sending_tracks, with_msid_semantic};

    #[test]
    fn the_line_is_added_once_after_the_timing_line() {
        let sdp =
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        let fixed = with_msid_semantic(sdp.to_owned());
        assert_eq!(
            fixed,
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=msid-semantic:WMS *\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        );
        assert_eq!(with_msid_semantic(fixed.clone()), fixed);
    }

    #[test]
    fn counts_only_sending_m_lines() {
        let sdp = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
                   m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        assert_eq!(count_sending_tracks(sdp), (1, 1));
    }
}
