//! WebRTC peers of a bot: a publisher that sends generated Opus and VP8 RTP, and a subscriber
//! that answers server offers and counts what arrives.
//!
//! Nothing here knows how SDP and candidates travel: every method takes or returns strings, so the
//! same peers serve engine-level tests (which call the media engine directly) and the signaling
//! client (which carries them over a WebSocket).
//!
//! Peers bind 127.0.0.1 by default (a wildcard bind skips loopback), disable mDNS and use no ICE
//! servers, so tests stay on the machine and can run in parallel on ephemeral ports.
//!
//! The hot paths are kept cheap because the same code backs a load generator: a received packet
//! costs a few atomic increments, and a sent packet one `Bytes` built from a preallocated frame.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::simulcast::{LayerStats, ReceiveLog, SimulcastSender};
use bytes::Bytes;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use tokio::sync::watch;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
    register_default_interceptors,
};

/// Audio or video, re-exported so users of the bot need no direct `rtc` dependency.
pub use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

/// Any failure of a bot operation; bots are test and load tools, so one boxed type is enough.
pub type BotResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Payload types of Opus and VP8 in the default codec set, which every webrtc-rs peer registers.
const OPUS_PT: u8 = 111;
const VP8_PT: u8 = 96;
/// SSRC of the publisher's audio track, so tests can find it in the engine's counters.
pub const AUDIO_SSRC: u32 = 0x1111_0001;
/// SSRC of the publisher's video track.
pub const VIDEO_SSRC: u32 = 0x2222_0002;
/// Bytes of each generated VP8 packet after the payload descriptor: large enough to look like
/// video on the wire, small enough to stay under the MTU.
const VP8_CHUNK: usize = 800;
/// Packets per generated video frame.
const VP8_PACKETS_PER_FRAME: usize = 3;
/// RFC 6464 level of silence, in -dBov; what a publisher sends until told otherwise.
pub const SILENT_DBOV: u8 = 127;
/// The one-byte audio-level payload for each level (-dBov) with the voice bit set on all but
/// silence, so a packet's extension is a refcount on static memory rather than an allocation.
static AUDIO_LEVEL_BYTES: [u8; 128] = {
    let mut bytes = [0u8; 128];
    let mut level = 0;
    while level < 128 {
        bytes[level] = if level < 127 {
            0x80 | level as u8
        } else {
            level as u8
        };
        level += 1;
    }
    bytes
};

/// How a bot's peer is set up. Loopback and no simulated loss by default; a load generator may
/// pick another address.
#[derive(Debug, Clone)]
pub struct BotConfig {
    /// UDP address the peer connection binds, e.g. `127.0.0.1:0`.
    pub bind: String,
    /// Subscriber only: drop every n-th original video RTP packet as it arrives, before the NACK
    /// generator sees it, so the bot asks for it again as a receiver on a lossy path would.
    /// Retransmissions (RTX, or a repeat of a dropped sequence number) are never dropped. `None`
    /// or `Some(0)` drops nothing; see [`Subscriber::simulated_loss`] for what came back.
    pub drop_every_nth_video: Option<u32>,
    /// Subscriber only: never send RTCP receiver reports, as a client behind a path that loses
    /// its feedback would; the server then knows nothing of what arrives.
    pub drop_receiver_reports: bool,
    /// Publisher only: never send every n-th video sequence number (single-layer camera), as a
    /// path that loses them on the way to the server would. They were never sent, so no NACK
    /// can repair them: the server's requests for them show how often it asks.
    pub skip_every_nth_video: Option<u16>,
}

impl Default for BotConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:0".to_owned(),
            drop_every_nth_video: None,
            drop_receiver_reports: false,
            skip_every_nth_video: None,
        }
    }
}

/// What the simulated receive loss dropped, and what the track got back. Sequence numbers are
/// kept per SSRC and not unwrapped, which is plenty for a test run (far fewer than 65536 packets).
#[derive(Default)]
struct LossLog {
    /// (SSRC, sequence number) of every packet dropped, with what it carried (timestamp, marker
    /// and payload), to check that a repair delivers the same packet.
    dropped: HashMap<(u32, u16), (u32, bool, Bytes)>,
    /// Dropped packets that later reached the track.
    recovered: HashSet<(u32, u16)>,
    /// Packets that arrived on a negotiated RTX (repair) SSRC.
    rtx_packets: u64,
    /// Repeats of a dropped sequence number on the original SSRC: plain retransmissions.
    plain_retransmissions: u64,
    /// The path healed: nothing more is dropped.
    stopped: bool,
    /// Deliveries to the track of a packet that was already recovered (duplicate repairs).
    duplicate_recoveries: u64,
    /// Recovered packets whose timestamp, marker or payload differ from the dropped original.
    mismatched_recoveries: u64,
}

/// A snapshot of a subscriber's simulated receive loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimulatedLossStats {
    /// Original video packets dropped on arrival.
    pub dropped: u64,
    /// Of those, how many were delivered to their track later anyway (by retransmission).
    pub recovered: u64,
    /// Packets that arrived on a negotiated RTX SSRC (RFC 4588 repair stream).
    pub rtx_packets: u64,
    /// Dropped sequence numbers that arrived again on the original SSRC (retransmission without
    /// RTX).
    pub plain_retransmissions: u64,
    /// Recovered packets delivered to the track more than once.
    pub duplicate_recoveries: u64,
    /// Recovered packets that were not the packet dropped: another timestamp, marker or payload.
    pub mismatched_recoveries: u64,
}

/// Shared between the dropping interceptor and the track readers.
type SharedLossLog = Arc<Mutex<LossLog>>;

/// Simulated receive loss: drops every n-th original video RTP packet before the rest of the
/// receive chain (the NACK generator above all) sees it.
///
/// Which SSRCs are video, and which are their RTX repair streams, comes from the remote stream
/// bindings, so a repair packet (or a packet on an unbound SSRC) is never dropped. rtc unwraps RTX
/// only after the interceptor chain, so at this slot a repair packet still carries its RTX SSRC
/// and payload type.
struct LossSimulator {
    every: u32,
    /// Bound primary video streams: SSRC -> (payload type, original packets seen).
    video: HashMap<u32, (u8, u32)>,
    /// RTX SSRCs and payload types of the bound streams.
    repair_ssrcs: HashSet<u32>,
    repair_pts: HashSet<u8>,
    log: SharedLossLog,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl LossSimulator {
    fn new(every: u32, log: SharedLossLog) -> Self {
        Self {
            every,
            video: HashMap::new(),
            repair_ssrcs: HashSet::new(),
            repair_pts: HashSet::new(),
            log,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    /// Whether an inbound RTP packet is to be dropped; notes what it saw either way.
    fn drops(&mut self, packet: &rtp::Packet) -> bool {
        let header = &packet.header;
        let Ok(mut log) = self.log.lock() else {
            return false;
        };
        if log.stopped {
            return false;
        }
        if self.repair_ssrcs.contains(&header.ssrc) {
            log.rtx_packets += 1;
            return false;
        }
        let Some((pt, seen)) = self.video.get_mut(&header.ssrc) else {
            return false;
        };
        if header.payload_type != *pt || self.repair_pts.contains(&header.payload_type) {
            return false;
        }
        let key = (header.ssrc, header.sequence_number);
        if log.dropped.contains_key(&key) {
            log.plain_retransmissions += 1;
            return false;
        }
        *seen = seen.wrapping_add(1);
        if seen.is_multiple_of(self.every) {
            let kept = (header.timestamp, header.marker, packet.payload.clone());
            log.dropped.insert(key, kept);
            return true;
        }
        false
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for LossSimulator {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &msg.message.packet
            && self.drops(packet)
        {
            return Ok(());
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
        self.write_queue.pop_front()
    }
}

impl Interceptor for LossSimulator {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        // A repair stream is bound in its own right too (with the RTX payload type), after its
        // primary, whose binding names it; both are recorded so neither is taken for media.
        if let Some(ssrc) = info.ssrc_rtx {
            self.repair_ssrcs.insert(ssrc);
        }
        if let Some(pt) = info.payload_type_rtx {
            self.repair_pts.insert(pt);
        }
        if info.mime_type.to_ascii_lowercase().starts_with("video/")
            && !self.repair_ssrcs.contains(&info.ssrc)
        {
            self.video
                .entry(info.ssrc)
                .or_insert((info.payload_type, 0));
        }
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.video.remove(&info.ssrc);
    }
}

/// Drops every outgoing RTCP compound that carries a receiver report.
#[derive(Default)]
struct ReportDropper {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for ReportDropper {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets.iter().any(|p| p.as_any().is::<ReceiverReport>())
        {
            return Ok(());
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for ReportDropper {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Marks inbound keyframe requests for the application.
///
/// Inbound RTCP stops at the end of rtc's interceptor chain unless something marks it
/// `DeliverToApplication`; without this the publisher would never see a PLI and could not answer
/// it with a keyframe. Only compounds holding a PLI or FIR are marked, so reports stay with the
/// interceptors that already acted on them.
#[derive(Default)]
struct KeyframeRequestMarker {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
    /// How often each sequence number was asked for in a NACK.
    nacks: NackLog,
}

/// NACK requests received, per sequence number (all SSRCs together).
type NackLog = Arc<Mutex<HashMap<u16, u32>>>;

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// The media SSRCs that PLI and FIR packets ask keyframes of.
fn keyframe_request_ssrcs(packets: &[Box<dyn rtc::rtcp::Packet>]) -> Vec<u32> {
    let mut out = Vec::new();
    for packet in packets {
        let any = packet.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            out.push(pli.media_ssrc);
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            out.extend(fir.fir.iter().map(|e| e.ssrc));
        }
    }
    out
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestMarker {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        let mut deliver = false;
        if let Packet::Rtcp(packets) = &msg.message.packet {
            deliver = packets.iter().any(|p| is_keyframe_request(p.as_ref()));
            if let Ok(mut log) = self.nacks.lock() {
                for nack in packets
                    .iter()
                    .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
                {
                    for seq in nack.nacks.iter().flat_map(|pair| pair.packet_list()) {
                        *log.entry(seq).or_default() += 1;
                    }
                }
            }
        }
        if deliver {
            msg.message.add(Attribute::DeliverToApplication);
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
        self.write_queue.pop_front()
    }
}

impl Interceptor for KeyframeRequestMarker {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// State every bot peer reports, shared with its event handler.
struct PeerState {
    state: watch::Sender<RTCPeerConnectionState>,
    connected_at: OnceLock<Instant>,
    local_candidates: Mutex<Vec<String>>,
    /// Only a subscriber collects remote tracks; a publisher receives none.
    tracks: Option<Arc<Mutex<Vec<Arc<RemoteTrack>>>>>,
    /// Subscriber with simulated loss only: what was dropped and recovered.
    loss: Option<SharedLossLog>,
}

/// The handler holds only shared state, never the peer connection, so dropping a bot frees it.
struct Handler {
    shared: Arc<PeerState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            let _ = self.shared.connected_at.set(Instant::now());
        }
        let _ = self.shared.state.send(state);
    }

    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json()
            && let Ok(mut list) = self.shared.local_candidates.lock()
        {
            list.push(init.candidate);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let Some(tracks) = &self.shared.tracks else {
            return;
        };
        let remote = Arc::new(RemoteTrack {
            track_id: track.track_id().await.to_string(),
            stream_id: track.stream_id().await.to_string(),
            kind: track.kind().await,
            ssrc: AtomicU32::new(0),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last_seq: AtomicU32::new(u32::MAX),
            seq_gaps: AtomicU64::new(0),
            keyframes: AtomicU64::new(0),
            first_packet: OnceLock::new(),
            first_keyframe: OnceLock::new(),
            ended: AtomicBool::new(false),
            layers: ReceiveLog::default(),
            remote: track.clone(),
            loss: self.shared.loss.clone(),
        });
        if let Ok(mut list) = tracks.lock() {
            list.push(remote.clone());
        }
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => remote.record(&packet),
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
            remote.ended.store(true, Ordering::Relaxed);
        });
    }
}

/// The peer connection and the state its handler fills in, common to both bot roles.
struct BotPeer {
    pc: Arc<dyn PeerConnection>,
    shared: Arc<PeerState>,
    state: watch::Receiver<RTCPeerConnectionState>,
    /// The NACK requests the connection received.
    nacks: NackLog,
}

impl BotPeer {
    async fn new(config: &BotConfig, collect_tracks: bool) -> BotResult<Self> {
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        // As a browser does: a publisher tags its audio with its level, which the server's
        // speaker detection reads.
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: rtc::sdp::extmap::AUDIO_LEVEL_URI.to_owned(),
            },
            RtpCodecKind::Audio,
            None,
        )?;
        let nacks = NackLog::default();
        let mut registry = register_default_interceptors(Registry::new(), &mut media)?
            // Application-most, so every interceptor that acts on RTCP has seen it first.
            .with(
                Slot::from(14_000),
                KeyframeRequestMarker {
                    nacks: nacks.clone(),
                    ..Default::default()
                },
            );
        let loss = match config.drop_every_nth_video {
            Some(every) if every > 0 && collect_tracks => {
                let log = SharedLossLog::default();
                // Wire-most (below every named slot), so the loss looks like the path's to the
                // NACK generator and the report interceptors alike.
                registry = registry.with(Slot::from(500), LossSimulator::new(every, log.clone()));
                Some(log)
            }
            _ => None,
        };
        if config.drop_receiver_reports && collect_tracks {
            // Wire-most, below the loss simulator: the reports are built, then lost.
            registry = registry.with(Slot::from(400), ReportDropper::default());
        }
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .build();
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let shared = Arc::new(PeerState {
            state: state_tx,
            connected_at: OnceLock::new(),
            local_candidates: Mutex::new(Vec::new()),
            tracks: collect_tracks.then(|| Arc::new(Mutex::new(Vec::new()))),
            loss,
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                shared: shared.clone(),
            }))
            .with_udp_addrs(vec![config.bind.clone()])
            .build()
            .await?;
        Ok(Self {
            pc: Arc::new(pc),
            shared,
            state,
            nacks,
        })
    }

    async fn wait_connected(&self, timeout: Duration) -> BotResult<()> {
        let mut state = self.state.clone();
        tokio::time::timeout(
            timeout,
            state.wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await??;
        Ok(())
    }

    async fn add_remote_candidate(&self, candidate: String) -> BotResult<()> {
        self.pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    fn take_local_candidates(&self) -> Vec<String> {
        self.shared
            .local_candidates
            .lock()
            .map(|mut list| std::mem::take(&mut *list))
            .unwrap_or_default()
    }
}

fn local_track(
    stream_id: &str,
    track_id: &str,
    kind: RtpCodecKind,
    ssrc: u32,
    codec: RTCRtpCodec,
) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        stream_id.to_owned(),
        track_id.to_owned(),
        track_id.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            active: true,
            codec,
            ..Default::default()
        }],
    )))
}

/// Counters of the keyframes a publisher was asked for and sent.
#[derive(Default)]
struct KeyframeState {
    wanted: AtomicBool,
    requests: AtomicU64,
    sent: AtomicU64,
    watching: AtomicBool,
}

/// A client with one sendonly Opus and one sendonly VP8 transceiver, in that order (so the server
/// sees microphone then camera). The camera is one stream, or two or three simulcast layers
/// ([`Publisher::with_simulcast`]).
pub struct Publisher {
    peer: BotPeer,
    audio: Arc<TrackLocalStaticRTP>,
    /// Level every audio packet announces, in -dBov (0 loudest, 127 silence).
    audio_level: AtomicU8,
    /// The id negotiated for the audio-level extension; 0 until the answer names one.
    audio_level_id: AtomicU8,
    video: Arc<TrackLocalStaticRTP>,
    keyframes: Arc<KeyframeState>,
    simulcast: Option<Arc<SimulcastSender>>,
    /// [`BotConfig::skip_every_nth_video`].
    skip_every_nth_video: Option<u16>,
    /// Generator state, kept across `send_media` calls so sequence numbers and timestamps continue.
    cursor: Mutex<Cursor>,
}

#[derive(Default, Clone, Copy)]
struct Cursor {
    tick: u32,
    audio_seq: u16,
    video_seq: u16,
}

impl Publisher {
    /// A publisher on loopback.
    pub async fn new() -> BotResult<Self> {
        Self::with_config(&BotConfig::default()).await
    }

    /// A publisher bound as `config` says.
    pub async fn with_config(config: &BotConfig) -> BotResult<Self> {
        Self::build(config, None).await
    }

    /// A publisher whose camera is sent as `layers` (2 or 3) RID simulcast layers, `q`, `h` and
    /// `f`, on [`SIMULCAST_SSRCS`](crate::simulcast::SIMULCAST_SSRCS).
    pub async fn with_simulcast(config: &BotConfig, layers: usize) -> BotResult<Self> {
        Self::build(config, Some(Arc::new(SimulcastSender::new(layers)))).await
    }

    async fn build(config: &BotConfig, simulcast: Option<Arc<SimulcastSender>>) -> BotResult<Self> {
        let peer = BotPeer::new(config, false).await?;
        let audio = local_track(
            "bot",
            "microphone",
            RtpCodecKind::Audio,
            AUDIO_SSRC,
            RTCRtpCodec {
                mime_type: "audio/opus".to_owned(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
        );
        let vp8 = RTCRtpCodec {
            mime_type: "video/VP8".to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        };
        let video = match &simulcast {
            Some(sender) => Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                "bot".to_owned(),
                "camera".to_owned(),
                "camera".to_owned(),
                RtpCodecKind::Video,
                sender.codings(&vp8),
            ))),
            None => local_track("bot", "camera", RtpCodecKind::Video, VIDEO_SSRC, vp8),
        };
        for track in [&audio, &video] {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            };
            peer.pc
                .add_transceiver_from_track(track.clone(), Some(init))
                .await?;
        }
        Ok(Self {
            peer,
            audio,
            audio_level: AtomicU8::new(SILENT_DBOV),
            audio_level_id: AtomicU8::new(0),
            video,
            keyframes: Arc::new(KeyframeState::default()),
            simulcast,
            skip_every_nth_video: config.skip_every_nth_video.filter(|n| *n > 0),
            cursor: Mutex::new(Cursor::default()),
        })
    }

    /// Creates and applies the offer. The server is ICE-lite and learns our address from our
    /// checks, so the offer need not wait for gathering.
    pub async fn offer(&self) -> BotResult<String> {
        let offer = self.peer.pc.create_offer(None).await?;
        self.peer.pc.set_local_description(offer.clone()).await?;
        Ok(offer.sdp)
    }

    /// Applies the server's answer, and notes the id it gave the audio-level extension.
    pub async fn accept_answer(&self, sdp: String) -> BotResult<()> {
        if let Some(simulcast) = &self.simulcast {
            simulcast.learn_extensions(&sdp);
        }
        self.peer
            .pc
            .set_remote_description(RTCSessionDescription::answer(sdp)?)
            .await?;
        for sender in self.peer.pc.get_senders().await {
            if sender.track().kind().await != RtpCodecKind::Audio {
                continue;
            }
            let id = sender
                .get_parameters()
                .await?
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|e| e.uri == rtc::sdp::extmap::AUDIO_LEVEL_URI)
                .and_then(|e| u8::try_from(e.id).ok())
                .unwrap_or(0);
            self.audio_level_id.store(id, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Sets the level the following audio packets announce, in -dBov: 0 is the loudest, 127
    /// (and anything above) silence. Takes effect at the next packet, also while sending.
    pub fn set_audio_level(&self, dbov: u8) {
        self.audio_level
            .store(dbov.min(SILENT_DBOV), Ordering::Relaxed);
    }

    /// Whether the server's answer accepted the audio-level extension, so levels are sent.
    pub fn sends_audio_level(&self) -> bool {
        self.audio_level_id.load(Ordering::Relaxed) != 0
    }

    /// The header of one generated audio packet, tagged with the current level when the
    /// extension was negotiated.
    fn audio_header(&self, sequence_number: u16, timestamp: u32) -> rtp::Header {
        let id = self.audio_level_id.load(Ordering::Relaxed);
        let level = usize::from(self.audio_level.load(Ordering::Relaxed).min(SILENT_DBOV));
        let extensions = if id == 0 {
            Vec::new()
        } else {
            vec![rtp::header::Extension {
                id,
                payload: Bytes::from_static(&AUDIO_LEVEL_BYTES[level..=level]),
            }]
        };
        rtp::Header {
            version: 2,
            payload_type: OPUS_PT,
            sequence_number,
            timestamp,
            ssrc: AUDIO_SSRC,
            extension: id != 0,
            // RFC 8285 one-byte header extensions.
            extension_profile: if id == 0 { 0 } else { 0xBEDE },
            extensions,
            ..Default::default()
        }
    }

    /// Hands a trickled server candidate to the peer.
    pub async fn add_remote_candidate(&self, candidate: String) -> BotResult<()> {
        self.peer.add_remote_candidate(candidate).await
    }

    /// Local candidates gathered since the last call, as `candidate:` strings.
    pub fn take_local_candidates(&self) -> Vec<String> {
        self.peer.take_local_candidates()
    }

    /// Waits until ICE and DTLS are up.
    pub async fn wait_connected(&self, timeout: Duration) -> BotResult<()> {
        self.peer.wait_connected(timeout).await
    }

    /// Keyframes sent so far (the first frame, and one per keyframe request received).
    pub fn keyframes_sent(&self) -> u64 {
        self.keyframes.sent.load(Ordering::Relaxed)
    }

    /// Simulcast only: stops or restarts sending one layer (0 = lowest).
    pub fn set_layer_sending(&self, layer: usize, sending: bool) {
        if let Some(simulcast) = &self.simulcast {
            simulcast.set_layer_sending(layer, sending);
        }
    }

    /// Simulcast only: keyframes each layer sent, lowest layer first (empty without simulcast).
    pub fn layer_keyframes_sent(&self) -> Vec<u64> {
        self.simulcast
            .as_ref()
            .map(|s| s.keyframes_sent())
            .unwrap_or_default()
    }

    /// PLI/FIR packets received from the server.
    pub fn keyframe_requests(&self) -> u64 {
        self.keyframes.requests.load(Ordering::Relaxed)
    }

    /// Starts the task that turns keyframe requests into a flag the generator reads. The video
    /// sender is bound only once negotiated, so this is started lazily from `send_media`.
    fn watch_keyframe_requests(&self) {
        if self.keyframes.watching.swap(true, Ordering::Relaxed) {
            return;
        }
        let video = self.video.clone();
        let keyframes = self.keyframes.clone();
        let simulcast = self.simulcast.clone();
        tokio::spawn(async move {
            while let Some(TrackLocalEvent::OnRtcpPacket(packets)) = video.poll().await {
                let asked = packets
                    .iter()
                    .filter(|p| is_keyframe_request(p.as_ref()))
                    .count() as u64;
                if asked > 0 {
                    keyframes.requests.fetch_add(asked, Ordering::Relaxed);
                    keyframes.wanted.store(true, Ordering::Relaxed);
                }
                if let Some(simulcast) = &simulcast {
                    for ssrc in keyframe_request_ssrcs(&packets) {
                        simulcast.on_keyframe_request(ssrc);
                    }
                }
            }
            keyframes.watching.store(false, Ordering::Relaxed);
        });
    }

    /// Sends generated RTP for `duration`: one Opus packet per 20 ms and a 3-packet VP8 frame per
    /// 40 ms. The first frame ever sent, and the next frame after any PLI/FIR, is a keyframe.
    /// Returns (audio, video) packets written.
    pub async fn send_media(&self, duration: Duration) -> BotResult<(u64, u64)> {
        self.watch_keyframe_requests();
        let mut cursor = self.cursor.lock().map(|c| *c).unwrap_or_default();
        let audio_payload = Bytes::from(vec![0xF8u8; 60]);
        let frames = Vp8Frames::new();
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let (mut a_sent, mut v_sent) = (0u64, 0u64);
        while start.elapsed() < duration {
            tick.tick().await;
            let n = cursor.tick;
            let audio = rtp::Packet {
                header: self.audio_header(cursor.audio_seq, n.wrapping_mul(960)),
                payload: audio_payload.clone(),
            };
            self.audio.write_rtp(audio).await?;
            cursor.audio_seq = cursor.audio_seq.wrapping_add(1);
            a_sent += 1;
            if n.is_multiple_of(2)
                && let Some(simulcast) = &self.simulcast
            {
                for video in simulcast.frame((n / 2).wrapping_mul(3600)) {
                    self.video.write_rtp(video).await?;
                    v_sent += 1;
                }
            } else if n.is_multiple_of(2) {
                let key = n == 0 || self.keyframes.wanted.swap(false, Ordering::Relaxed);
                if key {
                    self.keyframes.sent.fetch_add(1, Ordering::Relaxed);
                }
                for part in 0..VP8_PACKETS_PER_FRAME {
                    let video = rtp::Packet {
                        header: rtp::Header {
                            version: 2,
                            payload_type: VP8_PT,
                            sequence_number: cursor.video_seq,
                            timestamp: (n / 2).wrapping_mul(3600),
                            ssrc: VIDEO_SSRC,
                            marker: part + 1 == VP8_PACKETS_PER_FRAME,
                            ..Default::default()
                        },
                        payload: frames.packet(part == 0, key),
                    };
                    let skipped = self
                        .skip_every_nth_video
                        .is_some_and(|n| cursor.video_seq % n == n - 1);
                    if !skipped {
                        self.video.write_rtp(video).await?;
                        v_sent += 1;
                    }
                    cursor.video_seq = cursor.video_seq.wrapping_add(1);
                }
            }
            cursor.tick = n.wrapping_add(1);
        }
        if let Ok(mut c) = self.cursor.lock() {
            *c = cursor;
        }
        Ok((a_sent, v_sent))
    }

    /// How often the server asked for each video sequence number in a NACK.
    pub fn nacks_received(&self) -> HashMap<u16, u32> {
        self.peer
            .nacks
            .lock()
            .map(|log| log.clone())
            .unwrap_or_default()
    }

    /// Closes the peer connection.
    pub async fn close(&self) -> BotResult<()> {
        self.peer.pc.close().await?;
        Ok(())
    }
}

/// Preallocated VP8 packets, so generating video costs a refcount per packet, not a buffer.
struct Vp8Frames {
    key_start: Bytes,
    delta_start: Bytes,
    continuation: Bytes,
}

impl Vp8Frames {
    fn new() -> Self {
        let build = |head: &[u8]| {
            let mut p = Vec::with_capacity(head.len() + VP8_CHUNK);
            p.extend_from_slice(head);
            p.resize(head.len() + VP8_CHUNK, 0x42);
            Bytes::from(p)
        };
        Self {
            // Descriptor S=1 PID=0, then a VP8 frame tag with P=0 (keyframe), the keyframe start
            // code and a 320x240 size, which is what a depacketizer checks.
            key_start: build(&[
                0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00,
            ]),
            // Same, with P=1: an interframe.
            delta_start: build(&[0x10, 0x01, 0x00, 0x00]),
            // Descriptor S=0: continues the frame.
            continuation: build(&[0x00]),
        }
    }

    fn packet(&self, first: bool, key: bool) -> Bytes {
        match (first, key) {
            (true, true) => self.key_start.clone(),
            (true, false) => self.delta_start.clone(),
            (false, _) => self.continuation.clone(),
        }
    }
}

/// Whether a VP8 RTP payload starts a keyframe (RFC 7741: the first packet of a frame, partition
/// 0, whose frame tag has the inverse-keyframe bit P clear).
pub fn vp8_is_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let (extended, start, partition) = (first & 0x80 != 0, first & 0x10 != 0, first & 0x0f);
    if !start || partition != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&ext) = payload.get(at) else {
            return false;
        };
        at += 1;
        if ext & 0x80 != 0 {
            // PictureID: one byte, or two when its M bit is set.
            let Some(&pid) = payload.get(at) else {
                return false;
            };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    payload.get(at).is_some_and(|tag| tag & 0x01 == 0)
}

/// What a subscriber received on one remote track, updated from the track's reader task.
pub struct RemoteTrack {
    track_id: String,
    stream_id: String,
    kind: RtpCodecKind,
    ssrc: AtomicU32,
    packets: AtomicU64,
    bytes: AtomicU64,
    /// Highest sequence number seen, or `u32::MAX` before the first packet.
    last_seq: AtomicU32,
    seq_gaps: AtomicU64,
    keyframes: AtomicU64,
    first_packet: OnceLock<Instant>,
    first_keyframe: OnceLock<Instant>,
    ended: AtomicBool,
    /// Video only: layers and continuity of what arrived.
    layers: ReceiveLog,
    /// Kept to send keyframe requests back on the track.
    remote: Arc<dyn TrackRemote>,
    /// Set when the subscriber simulates loss: each packet is checked against the dropped set.
    loss: Option<SharedLossLog>,
}

impl RemoteTrack {
    fn record(&self, packet: &rtp::Packet) {
        if self.first_packet.get().is_none() {
            let _ = self.first_packet.set(Instant::now());
            self.ssrc.store(packet.header.ssrc, Ordering::Relaxed);
        }
        self.packets.fetch_add(1, Ordering::Relaxed);
        let seq = packet.header.sequence_number;
        let last = self.last_seq.load(Ordering::Relaxed);
        if last == u32::MAX {
            self.last_seq.store(u32::from(seq), Ordering::Relaxed);
        } else {
            // Only forward jumps count; a late or repeated packet moves nothing.
            let ahead = seq.wrapping_sub(last as u16);
            if ahead != 0 && ahead < 0x8000 {
                self.seq_gaps
                    .fetch_add(u64::from(ahead - 1), Ordering::Relaxed);
                self.last_seq.store(u32::from(seq), Ordering::Relaxed);
            }
        }
        if let Some(loss) = &self.loss
            && let Ok(mut log) = loss.lock()
        {
            let key = (packet.header.ssrc, packet.header.sequence_number);
            if let Some((timestamp, marker, payload)) = log.dropped.get(&key) {
                let same = *timestamp == packet.header.timestamp
                    && *marker == packet.header.marker
                    && *payload == packet.payload;
                if !log.recovered.insert(key) {
                    log.duplicate_recoveries += 1;
                } else if !same {
                    log.mismatched_recoveries += 1;
                }
            }
        }
        self.bytes
            .fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
        if self.kind == RtpCodecKind::Video {
            let keyframe = vp8_is_keyframe(&packet.payload);
            if keyframe {
                self.keyframes.fetch_add(1, Ordering::Relaxed);
                if self.first_keyframe.get().is_none() {
                    let _ = self.first_keyframe.set(Instant::now());
                }
            }
            self.layers.record(packet, keyframe);
        }
    }

    fn snapshot(&self) -> RemoteTrackStats {
        RemoteTrackStats {
            track_id: self.track_id.clone(),
            stream_id: self.stream_id.clone(),
            kind: self.kind,
            ssrc: self.ssrc.load(Ordering::Relaxed),
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            seq_gaps: self.seq_gaps.load(Ordering::Relaxed),
            keyframes: self.keyframes.load(Ordering::Relaxed),
            first_packet_at: self.first_packet.get().copied(),
            first_keyframe_at: self.first_keyframe.get().copied(),
            ended: self.ended.load(Ordering::Relaxed),
            layers: self.layers.snapshot(),
        }
    }
}

/// A snapshot of one remote track's counters.
#[derive(Debug, Clone)]
pub struct RemoteTrackStats {
    /// Track id from the offer's `a=msid` line.
    pub track_id: String,
    /// Stream id from the offer's `a=msid` line (the publisher, for Confab).
    pub stream_id: String,
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// SSRC of the first packet received (0 before any).
    pub ssrc: u32,
    /// RTP packets received.
    pub packets: u64,
    /// RTP payload bytes received.
    pub bytes: u64,
    /// Sequence numbers skipped between packets in order: missing packets, as far as this
    /// track's numbering tells (a retransmission arriving later does not take them back).
    pub seq_gaps: u64,
    /// VP8 keyframes received (first packets of keyframes).
    pub keyframes: u64,
    /// When the first packet arrived.
    pub first_packet_at: Option<Instant>,
    /// When the first keyframe arrived.
    pub first_keyframe_at: Option<Instant>,
    /// Whether the track has ended (removed by renegotiation or closed).
    pub ended: bool,
    /// Video only: which layers arrived, when the layer changed, and whether the numbering
    /// stayed continuous.
    pub layers: LayerStats,
}

/// A client that answers the server's subscriber offers and counts what it receives.
pub struct Subscriber {
    peer: BotPeer,
    tracks: Arc<Mutex<Vec<Arc<RemoteTrack>>>>,
}

impl Subscriber {
    /// A subscriber on loopback.
    pub async fn new() -> BotResult<Self> {
        Self::with_config(&BotConfig::default()).await
    }

    /// A subscriber bound as `config` says.
    pub async fn with_config(config: &BotConfig) -> BotResult<Self> {
        let peer = BotPeer::new(config, true).await?;
        let tracks = peer.shared.tracks.clone().unwrap_or_default();
        Ok(Self { peer, tracks })
    }

    /// Applies a server offer and returns the answer SDP.
    pub async fn answer(&self, offer_sdp: String) -> BotResult<String> {
        self.peer
            .pc
            .set_remote_description(RTCSessionDescription::offer(offer_sdp)?)
            .await?;
        let answer = self.peer.pc.create_answer(None).await?;
        self.peer.pc.set_local_description(answer.clone()).await?;
        Ok(answer.sdp)
    }

    /// Hands a trickled server candidate to the peer.
    pub async fn add_remote_candidate(&self, candidate: String) -> BotResult<()> {
        self.peer.add_remote_candidate(candidate).await
    }

    /// Local candidates gathered since the last call, as `candidate:` strings.
    pub fn take_local_candidates(&self) -> Vec<String> {
        self.peer.take_local_candidates()
    }

    /// Waits until ICE and DTLS are up.
    pub async fn wait_connected(&self, timeout: Duration) -> BotResult<()> {
        self.peer.wait_connected(timeout).await
    }

    /// When the connection first reached Connected.
    pub fn connected_at(&self) -> Option<Instant> {
        self.peer.shared.connected_at.get().copied()
    }

    /// Counters of every remote track seen so far, ended ones included.
    pub fn tracks(&self) -> Vec<RemoteTrackStats> {
        self.tracks
            .lock()
            .map(|list| list.iter().map(|t| t.snapshot()).collect())
            .unwrap_or_default()
    }

    /// What the simulated receive loss dropped and what was recovered, when
    /// [`BotConfig::drop_every_nth_video`] enabled it.
    pub fn simulated_loss(&self) -> Option<SimulatedLossStats> {
        let log = self.peer.shared.loss.as_ref()?.lock().ok()?;
        Some(SimulatedLossStats {
            dropped: log.dropped.len() as u64,
            recovered: log.recovered.len() as u64,
            rtx_packets: log.rtx_packets,
            plain_retransmissions: log.plain_retransmissions,
            duplicate_recoveries: log.duplicate_recoveries,
            mismatched_recoveries: log.mismatched_recoveries,
        })
    }

    /// Ends the simulated loss of [`BotConfig::drop_every_nth_video`]: from now on every packet
    /// arrives, as on a path that recovered. Returns whether loss was being simulated.
    pub fn stop_simulated_loss(&self) -> bool {
        match self.peer.shared.loss.as_ref().map(|l| l.lock()) {
            Some(Ok(mut log)) => {
                log.stopped = true;
                true
            }
            _ => false,
        }
    }

    /// Sends a PLI on every live video track that has received media, as a decoder that lost
    /// its reference would. Returns how many were sent.
    pub async fn request_keyframes(&self) -> BotResult<usize> {
        let targets: Vec<(Arc<dyn TrackRemote>, u32)> = self
            .tracks
            .lock()
            .map(|list| {
                list.iter()
                    .filter(|t| t.kind == RtpCodecKind::Video && !t.ended.load(Ordering::Relaxed))
                    .map(|t| (t.remote.clone(), t.ssrc.load(Ordering::Relaxed)))
                    .filter(|(_, ssrc)| *ssrc != 0)
                    .collect()
            })
            .unwrap_or_default();
        for (track, media_ssrc) in &targets {
            track
                .write_rtcp(vec![Box::new(PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: *media_ssrc,
                })])
                .await?;
        }
        Ok(targets.len())
    }

    /// Closes the peer connection.
    pub async fn close(&self) -> BotResult<()> {
        self.peer.pc.close().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_vp8_frames_are_recognised() {
        let frames = Vp8Frames::new();
        assert!(vp8_is_keyframe(&frames.packet(true, true)));
        assert!(!vp8_is_keyframe(&frames.packet(true, false)));
        assert!(!vp8_is_keyframe(&frames.packet(false, true)));
    }

    #[test]
    fn level_bytes_carry_the_voice_bit_except_for_silence() {
        assert_eq!(AUDIO_LEVEL_BYTES[0], 0x80);
        assert_eq!(AUDIO_LEVEL_BYTES[30], 0x80 | 30);
        assert_eq!(AUDIO_LEVEL_BYTES[127], 127);
    }

    #[test]
    fn extended_descriptor_is_skipped() {
        // X=1 S=1; I=1 with a two-byte picture id; then a keyframe tag.
        assert!(vp8_is_keyframe(&[0x90, 0x80, 0x80, 0x01, 0x00]));
        assert!(!vp8_is_keyframe(&[0x90, 0x80, 0x80, 0x01, 0x01]));
        // Truncated: no tag byte at all.
        assert!(!vp8_is_keyframe(&[0x90, 0x80, 0x80]));
        assert!(!vp8_is_keyframe(&[]));
    }
}
