//! The async-facing handle of the media engine: starting workers, placing rooms, commands.

use std::fmt;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::EngineError;
use crate::layers::VideoQuality;
use crate::speaker::LoudestN;
use crate::worker::{Command, Worker, WorkerStats};

/// A room (call) as the engine sees it: an opaque id chosen by signaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub Uuid);

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Audio or video, in the engine's own terms so callers need no webrtc type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// An audio track.
    Audio,
    /// A video track.
    Video,
}

/// Which of a participant's two peer connections an event or candidate is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerRole {
    /// The connection the client offers and sends its tracks on.
    Publisher,
    /// The connection the server offers and forwards other participants' tracks on.
    Subscriber,
}

impl PeerRole {
    /// Both roles, for whoever must name every one up front (metric labels).
    pub const ALL: [PeerRole; 2] = [PeerRole::Publisher, PeerRole::Subscriber];
}

/// What a published track carries, as contract section 7 defines it: the publisher's first audio
/// is its microphone, its first video its camera and its second video its screen, unless the
/// track's msid id starts with `screen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackSource {
    /// The participant's microphone.
    Microphone,
    /// The participant's camera.
    Camera,
    /// A screen share.
    Screen,
}

/// One track a subscriber offer carries, as signaling reports it in `rtc:tracks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedTrack {
    /// The track id of the offer's `a=msid:<stream_id> <track_id>` line.
    pub track_id: String,
    /// The stream id of that line: the publisher's participant id.
    pub stream_id: String,
    /// The participant who publishes the track.
    pub publisher: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// Microphone, camera or screen.
    pub source: TrackSource,
}

/// Why a packet that should have been forwarded was not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardDrops {
    /// The subscriber leg was not negotiated or connected yet.
    pub not_ready: u64,
    /// The leg has no payload type for the packet's codec.
    pub no_codec: u64,
    /// The core refused the write (for instance a slow or closing subscriber).
    pub send_failed: u64,
}

/// How the engine binds and announces its sockets, and how often it reports quality.
///
/// [`EngineConfig::default`] is a single worker on loopback with a free port and the 5 s quality
/// interval; a server sets the addresses it was configured with and keeps the rest
/// (`..EngineConfig::default()`).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Number of worker threads; each owns one socket and its rooms.
    pub workers: usize,
    /// Address the sockets bind to.
    pub bind_ip: IpAddr,
    /// 0 lets each worker take a free port (tests); otherwise worker k binds `udp_port + k`, so a
    /// firewall can open one known range.
    pub udp_port: u16,
    /// Address announced in the host candidate when clients cannot reach `bind_ip` directly
    /// (wildcard bind, 1:1 NAT). The ICE agent only accepts traffic tagged with the announced
    /// address, so this is also what every datagram is tagged with.
    pub public_ip: Option<IpAddr>,
    /// How often each connected participant's [`EngineEvent::Quality`] reports are cut. The
    /// contract's `call:quality` cadence is [`EngineConfig::DEFAULT_QUALITY_INTERVAL`]; tests set
    /// it lower so they need not wait.
    pub quality_interval: Duration,
    /// Loudest-N audio: in a room with at least [`EngineConfig::loudest_n_min_participants`]
    /// audio publishers, only this many audio streams are forwarded (the current speakers,
    /// loudest first, plus anyone who has just started speaking), so audio fan-out stays flat as
    /// a call grows. 0 forwards every audio stream.
    pub loudest_n: usize,
    /// The room size (participants publishing audio) from which loudest-N applies.
    pub loudest_n_min_participants: usize,
}

impl EngineConfig {
    /// The contract's quality cadence: `call:quality` every 5 s.
    pub const DEFAULT_QUALITY_INTERVAL: Duration = Duration::from_secs(5);
    /// Audio streams forwarded in a large room.
    pub const DEFAULT_LOUDEST_N: usize = 3;
    /// Audio publishers from which a room is large.
    pub const DEFAULT_LOUDEST_N_MIN_PARTICIPANTS: usize = 10;
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            bind_ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            udp_port: 0,
            public_ip: None,
            quality_interval: Self::DEFAULT_QUALITY_INTERVAL,
            loudest_n: Self::DEFAULT_LOUDEST_N,
            loudest_n_min_participants: Self::DEFAULT_LOUDEST_N_MIN_PARTICIPANTS,
        }
    }
}

/// Which way the media a [`QualityReport`] describes flows, seen from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QualityDirection {
    /// Media the server receives from the participant: their publisher connection. Measured by
    /// the server's own reception statistics.
    Inbound,
    /// Media the server sends to the participant: their subscriber connection. Measured by the
    /// participant's RTCP receiver reports.
    Outbound,
}

impl QualityDirection {
    /// Both directions, for whoever must name every one up front (metric labels).
    pub const ALL: [QualityDirection; 2] = [QualityDirection::Inbound, QualityDirection::Outbound];
}

/// One participant's quality in one direction for one kind of media, over one quality interval.
///
/// Several streams of a kind (two publishers' audio forwarded to one subscriber, or a camera and
/// a screen) are summed: bitrate adds up, loss is over all their packets, jitter is the worst
/// stream's and RTT their mean.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityReport {
    /// Room of the participant.
    pub room: RoomId,
    /// The participant the report is about.
    pub participant: String,
    /// Inbound (their publisher leg) or outbound (their subscriber leg).
    pub direction: QualityDirection,
    /// Audio or video.
    pub kind: MediaKind,
    /// RTP payload bits per second over the interval (headers excluded).
    pub bitrate_bps: u64,
    /// Fraction of the interval's expected packets that were lost, in `0..=1`. Outbound, this is
    /// what the subscriber's receiver reports say; before a second report it is the fraction the
    /// latest report carries, and before any report (the first second or so of a leg) it is 0,
    /// as is jitter.
    pub packet_loss: f64,
    /// RFC 3550 interarrival jitter in milliseconds at the end of the interval.
    pub jitter_ms: f64,
    /// Round trip between the server and the participant. Outbound, from the receiver reports'
    /// LSR/DLSR against the server's sender reports; `None` until a report echoing one arrived.
    /// Inbound it is always `None`: a publisher receives no media from the server on that
    /// connection, so it answers no sender report there (the same path's RTT is in the outbound
    /// report).
    pub rtt_ms: Option<f64>,
    /// Outbound only: the subscriber connection's bandwidth estimate at the end of the interval,
    /// which its video layers are chosen to fit.
    pub available_bitrate_bps: Option<u64>,
    /// Outbound video only: how many of the subscriber's video legs forward which layer.
    pub video_layers: Option<VideoLayerCounts>,
}

/// Congestion control's probes of paused or lowered videos, by outcome (counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeCounts {
    /// Ran their course without congestion: the layer was kept.
    pub carried: u64,
    /// Met loss or a falling estimate and were dropped.
    pub failed: u64,
}

/// A subscriber's video legs by the layer they forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoLayerCounts {
    /// Forwarding nothing: paused (by choice or for bandwidth) or waiting for a keyframe.
    pub off: u32,
    /// The lowest of several layers.
    pub low: u32,
    /// A layer between the lowest and the highest.
    pub medium: u32,
    /// The highest layer, or the only one of a track without simulcast.
    pub high: u32,
}

/// Upper bounds, in microseconds, of the [`LatencyHistogram`] buckets; a final bucket above the
/// last bound catches the rest. Exposed so the server can label `confab_forwarding_latency_seconds`
/// buckets without knowing the engine's internals. Millisecond steps from 1 to 5 ms, where a
/// busy server's p99 lies and a 5 ms budget is judged: with 2.5 and 5 ms as neighbours, a p99 of
/// 2.6 ms and one of 4.9 ms read the same.
pub const FORWARDING_LATENCY_BOUNDS_US: [u64; 13] = [
    50, 100, 250, 500, 1_000, 2_000, 3_000, 4_000, 5_000, 7_500, 10_000, 25_000, 100_000,
];

/// How long forwarded packets spent in the engine: from the publisher's datagram being read off
/// the socket to the subscriber's datagram being handed to the kernel.
///
/// Packets handed to one subscriber between two of its flushes are all charged the wait of the
/// oldest of them, so each sample is an upper bound; that keeps the cost to one clock read per
/// flush rather than per packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// `counts[i]` holds samples up to `FORWARDING_LATENCY_BOUNDS_US[i]` and above the previous
    /// bound (not cumulative); the last entry holds those above every bound.
    pub counts: [u64; FORWARDING_LATENCY_BOUNDS_US.len() + 1],
    /// Sum of all samples, in microseconds.
    pub sum_us: u64,
}

impl LatencyHistogram {
    /// Adds `n` samples of `latency`.
    pub(crate) fn observe(&mut self, latency: Duration, n: u64) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = FORWARDING_LATENCY_BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(FORWARDING_LATENCY_BOUNDS_US.len());
        self.counts[bucket] += n;
        self.sum_us = self.sum_us.saturating_add(us.saturating_mul(n));
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }
}

/// Something that happened to a peer connection, for signaling to act on.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// ICE and DTLS are up; media can flow.
    PeerConnected {
        /// Room of the peer.
        room: RoomId,
        /// Participant of the peer.
        participant: String,
        /// Which of the participant's connections.
        role: PeerRole,
    },
    /// ICE or DTLS failed; the peer stays until removed, so signaling decides what to do.
    PeerFailed {
        /// Room of the peer.
        room: RoomId,
        /// Participant of the peer.
        participant: String,
        /// Which of the participant's connections.
        role: PeerRole,
    },
    /// The peer connection was closed and freed.
    PeerClosed {
        /// Room of the peer.
        room: RoomId,
        /// Participant of the peer.
        participant: String,
        /// Which of the participant's connections.
        role: PeerRole,
    },
    /// A publisher's track started arriving.
    TrackPublished {
        /// Room of the publisher.
        room: RoomId,
        /// The publishing participant.
        participant: String,
        /// Audio or video.
        kind: MediaKind,
        /// The m-line the track arrived on, which tells its source (contract section 7).
        mid: String,
        /// The publisher's SSRC of the track.
        ssrc: u32,
        /// Microphone, camera or screen.
        source: TrackSource,
    },
    /// The participant's subscriber connection needs (re)negotiating: signaling sends `rtc:tracks`
    /// with `tracks`, then `rtc:offer` with `sdp`, and hands the answer to
    /// [`MediaEngine::subscriber_answer`]. At most one is outstanding per participant.
    SubscriberOffer {
        /// Room of the subscriber.
        room: RoomId,
        /// The subscribing participant.
        participant: String,
        /// The offer SDP, with the worker's host candidate.
        sdp: String,
        /// Every track the offer carries, in no particular order.
        tracks: Vec<ForwardedTrack>,
    },
    /// One participant's quality for one direction and kind over the last quality interval.
    /// Sent every [`EngineConfig::quality_interval`] for each connected participant, direction
    /// and kind that carried media in the interval.
    Quality(QualityReport),
    /// The room's active speakers changed: who is speaking, or their order. Decided from the
    /// publishers' audio levels a few times a second, smoothed and with hysteresis, and sent
    /// only on a change (an empty list when everyone fell silent).
    ActiveSpeakers {
        /// The room.
        room: RoomId,
        /// Speaking participants, loudest first.
        participants: Vec<String>,
    },
}

/// Receiver of [`EngineEvent`]s. Unbounded so a worker never blocks on a slow consumer: events are
/// per peer state change or per quality interval, not per packet, so the queue stays small.
pub type EngineEvents = mpsc::UnboundedReceiver<EngineEvent>;

/// Reception counters of one inbound track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackStats {
    /// Room of the publisher.
    pub room: RoomId,
    /// The publishing participant.
    pub participant: String,
    /// Kind, once the track event has named it.
    pub kind: Option<MediaKind>,
    /// m-line id, once known.
    pub mid: Option<String>,
    /// The publisher's SSRC.
    pub ssrc: u32,
    /// RTP packets delivered by the core (after SRTP and the interceptors).
    pub packets: u64,
    /// RTP payload bytes of those packets.
    pub bytes: u64,
}

/// The engine's own counters, summed over workers; leak tests assert on these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Live peer connections, both roles.
    pub peers: usize,
    /// Live subscriber peer connections.
    pub subscriber_peers: usize,
    /// Joined participants, over all rooms.
    pub participants: usize,
    /// Rooms with at least one peer.
    pub rooms: usize,
    /// Ufrag routes in the demultiplexers.
    pub demux_ufrags: usize,
    /// Source-address routes in the demultiplexers.
    pub demux_addrs: usize,
    /// Entries in the timer heaps (stale ones included, so a leak shows).
    pub timers: usize,
    /// Datagrams read from the sockets.
    pub datagrams_received: u64,
    /// Datagrams that matched no peer and were dropped.
    pub dropped_unknown: u64,
    /// Datagrams the socket refused because its send buffer was full.
    pub send_dropped: u64,
    /// RTP packets delivered by the core, all tracks.
    pub rtp_packets_received: u64,
    /// RTP packets handed to subscriber legs; the sum of the two by-kind counters below.
    pub forwarded_packets: u64,
    /// RTP payload bytes of those packets; the sum of the two by-kind counters below.
    pub forwarded_bytes: u64,
    /// Audio packets handed to subscriber legs.
    pub forwarded_packets_audio: u64,
    /// Video packets handed to subscriber legs.
    pub forwarded_packets_video: u64,
    /// RTP payload bytes of the forwarded audio packets.
    pub forwarded_bytes_audio: u64,
    /// RTP payload bytes of the forwarded video packets.
    pub forwarded_bytes_video: u64,
    /// From datagram read to forwarded datagram written, per forwarded packet.
    pub forwarding_latency: LatencyHistogram,
    /// NACK packets (RTCP transport-layer NACK) received from subscribers.
    pub nacks_received: u64,
    /// Packets subscribers asked for again that were rebuilt from the publishers' recent packets
    /// and sent (over RTX where the leg negotiated it).
    pub retransmissions: u64,
    /// Packets subscribers asked for again that were no longer held (older than a second) or
    /// never forwarded to them.
    pub retransmissions_unavailable: u64,
    /// Keyframe requests received from subscribers: PLI and FIR packets.
    pub plis_received: u64,
    /// RTCP datagrams led by a sender report sent on subscriber connections.
    pub sender_reports_sent: u64,
    /// RTCP datagrams led by a receiver report sent on publisher connections.
    pub receiver_reports_sent: u64,
    /// Receiver report blocks from subscribers about forwarded legs.
    pub receiver_reports_received: u64,
    /// Packets not forwarded, by reason.
    pub dropped: ForwardDrops,
    /// Audio packets deliberately not forwarded to a subscriber leg because loudest-N did not
    /// select their track; one per packet and leg, like the forwarded counters. Not a drop.
    pub audio_suppressed: u64,
    /// Packets not forwarded to a subscriber leg because the server holds their source
    /// ([`MediaEngine::hold_source`]); one per packet and leg. Not a drop.
    pub held_packets: u64,
    /// Keyframe requests (subscriber PLI/FIR, or a leg starting) sent to publishers as PLI.
    pub plis_relayed: u64,
    /// Keyframe requests absorbed by the once-per-500-ms limit per source track (per simulcast
    /// layer).
    pub plis_suppressed: u64,
    /// Video legs that started forwarding a layer at one of its keyframes: a simulcast leg's
    /// start, a layer switch, or a resume after a pause.
    pub layer_switches: u64,
    /// Probes of a paused or lowered video (congestion control), by how they ended.
    pub probes: ProbeCounts,
    /// Video legs of connected subscribers, by the layer they forward now.
    pub video_layers: VideoLayerCounts,
    /// Connected subscriber connections, and the sum of their bandwidth estimates (bits per
    /// second); their ratio is the mean estimate.
    pub bandwidth_estimated: u64,
    pub bandwidth_estimate_bps_sum: u64,
    /// Of those connections, the ones whose transport-cc feedback gave a GCC estimate.
    pub bandwidth_from_twcc: u64,
    /// Per-track reception counters.
    pub tracks: Vec<TrackStats>,
}

/// Cheap, cloneable handle to the running media engine.
///
/// Dropping the last handle closes the command channels, and each worker then closes its peers
/// and exits; [`MediaEngine::shutdown`] does the same but waits for it.
#[derive(Clone)]
pub struct MediaEngine {
    inner: Arc<Inner>,
}

struct Inner {
    workers: Vec<WorkerHandle>,
    events: Mutex<Option<EngineEvents>>,
}

struct WorkerHandle {
    commands: mpsc::UnboundedSender<Command>,
    local_addr: SocketAddr,
    announced_addr: SocketAddr,
}

impl MediaEngine {
    /// Binds one socket per worker and starts the worker threads.
    ///
    /// Sockets are bound here, synchronously, so a taken port or a bad address fails the start
    /// instead of surfacing later inside a thread.
    pub fn start(config: EngineConfig) -> Result<MediaEngine, EngineError> {
        if config.workers == 0 {
            return Err(EngineError::Config("at least one worker is needed".into()));
        }
        if config.quality_interval.is_zero() {
            return Err(EngineError::Config(
                "quality_interval must be positive".into(),
            ));
        }
        let announce_ip = config.public_ip.unwrap_or(config.bind_ip);
        if announce_ip.is_unspecified() {
            return Err(EngineError::Config(
                "a wildcard bind address needs a public_ip to announce".into(),
            ));
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut workers = Vec::with_capacity(config.workers);
        for k in 0..config.workers {
            let port = if config.udp_port == 0 {
                0
            } else {
                u16::try_from(k)
                    .ok()
                    .and_then(|k| config.udp_port.checked_add(k))
                    .ok_or_else(|| EngineError::Config("worker port range overflows".into()))?
            };
            let socket = UdpSocket::bind(SocketAddr::new(config.bind_ip, port))?;
            socket.set_nonblocking(true)?;
            crate::udp::enlarge_buffers(&socket);
            let local_addr = socket.local_addr()?;
            let announced_addr = SocketAddr::new(announce_ip, local_addr.port());
            let (tx, rx) = mpsc::unbounded_channel();
            let events = events_tx.clone();
            let quality_interval = config.quality_interval;
            let loudest_n = LoudestN {
                n: config.loudest_n,
                min_publishers: config.loudest_n_min_participants,
            };
            thread::Builder::new()
                .name(format!("confab-media-{k}"))
                .spawn(move || {
                    Worker::run(
                        socket,
                        announced_addr,
                        quality_interval,
                        loudest_n,
                        rx,
                        events,
                    )
                })?;
            workers.push(WorkerHandle {
                commands: tx,
                local_addr,
                announced_addr,
            });
        }
        Ok(MediaEngine {
            inner: Arc::new(Inner {
                workers,
                events: Mutex::new(Some(events_rx)),
            }),
        })
    }

    /// The bound address of each worker's socket, in worker order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.workers.iter().map(|w| w.local_addr).collect()
    }

    /// The address each worker announces in its host candidate, in worker order.
    pub fn announced_addrs(&self) -> Vec<SocketAddr> {
        self.inner
            .workers
            .iter()
            .map(|w| w.announced_addr)
            .collect()
    }

    /// Takes the event receiver. There is one consumer (signaling), so the second call gets
    /// `None` rather than a receiver that would steal half the events.
    pub fn take_events(&self) -> Option<EngineEvents> {
        self.inner
            .events
            .lock()
            .map(|mut guard| guard.take())
            .unwrap_or_default()
    }

    /// Puts the participant in the room: from now on it receives everything published there, even
    /// if it never publishes (a viewer). Its subscriber connection is created when there is
    /// something to forward, announced by [`EngineEvent::SubscriberOffer`]. Joining twice is a
    /// no-op.
    pub async fn join(&self, room: RoomId, participant: String) -> Result<(), EngineError> {
        self.ask(room, |reply| Command::Join {
            room,
            participant,
            reply,
        })
        .await?
    }

    /// Applies the client's answer to the outstanding subscriber offer. A bad answer is
    /// [`EngineError::InvalidSdp`] and leaves the offer outstanding; an answer with no offer
    /// outstanding is [`EngineError::NoOfferPending`].
    pub async fn subscriber_answer(
        &self,
        room: RoomId,
        participant: String,
        answer_sdp: String,
    ) -> Result<(), EngineError> {
        self.ask(room, |reply| Command::SubscriberAnswer {
            room,
            participant,
            answer_sdp,
            reply,
        })
        .await?
    }

    /// Answers a participant's publisher offer; creates its publisher peer connection, or
    /// renegotiates it if it exists. Returns the answer SDP with the worker's host candidate.
    /// Publishing joins the room if the participant had not. An offer sending more than one
    /// audio or two video tracks is refused with [`EngineError::TooManyTracks`].
    pub async fn publish(
        &self,
        room: RoomId,
        participant: String,
        offer_sdp: String,
    ) -> Result<String, EngineError> {
        self.ask(room, |reply| Command::Publish {
            room,
            participant,
            offer_sdp,
            reply,
        })
        .await?
    }

    /// Hands a trickled client candidate to one of the participant's connections. The server is
    /// ICE-lite and learns the client's address from its checks, so an unusable candidate (or one
    /// for a connection not created yet) is ignored, not an error.
    pub async fn add_remote_candidate(
        &self,
        room: RoomId,
        participant: String,
        role: PeerRole,
        candidate: String,
    ) -> Result<(), EngineError> {
        self.ask(room, |reply| Command::AddRemoteCandidate {
            room,
            participant,
            role,
            candidate,
            reply,
        })
        .await?
    }

    /// Takes the participant out of the room: closes both its connections, frees their routes and
    /// timers, and removes its tracks from every other subscriber (which renegotiates them).
    pub async fn remove_participant(
        &self,
        room: RoomId,
        participant: String,
    ) -> Result<(), EngineError> {
        self.ask(room, |reply| Command::RemoveParticipant {
            room,
            participant,
            reply,
        })
        .await?
    }

    /// Chooses what `subscriber` receives of `publisher`'s camera or screen (`rtc:subscribe`):
    /// a simulcast layer, or [`VideoQuality::Off`] to pause it. The leg moves to the new layer
    /// (or resumes) at that layer's next keyframe, which is requested at once; its sequence
    /// numbers, timestamps and VP8 picture ids continue without a gap. A track without simulcast
    /// has one layer, which every quality but `Off` selects. The choice is kept for the pair,
    /// so it also applies to a track published later or re-published. Fails only when the
    /// subscriber is not in the room.
    pub async fn set_video_quality(
        &self,
        room: RoomId,
        subscriber: String,
        publisher: String,
        source: TrackSource,
        quality: VideoQuality,
    ) -> Result<(), EngineError> {
        self.ask(room, |reply| Command::SetVideoQuality {
            room,
            subscriber,
            publisher,
            source,
            quality,
            reply,
        })
        .await?
    }

    /// Stops (`held = true`) or resumes forwarding `participant`'s `source` to every
    /// subscriber, at once, whatever the publisher keeps sending; signaling uses it for a
    /// server-side mute. A hold may precede the track and the publisher connection, and applies
    /// to any track of that source published later. Fails only when the participant is not in
    /// the room.
    pub async fn hold_source(
        &self,
        room: RoomId,
        participant: String,
        source: TrackSource,
        held: bool,
    ) -> Result<(), EngineError> {
        self.ask(room, |reply| Command::HoldSource {
            room,
            participant,
            source,
            held,
            reply,
        })
        .await?
    }

    /// Sums every worker's counters.
    pub async fn stats(&self) -> Result<EngineStats, EngineError> {
        let mut total = EngineStats::default();
        for worker in &self.inner.workers {
            let (reply, rx) = oneshot::channel();
            worker
                .commands
                .send(Command::Stats { reply })
                .map_err(|_| EngineError::WorkerGone)?;
            let s: WorkerStats = rx.await.map_err(|_| EngineError::WorkerGone)?;
            total.peers += s.peers;
            total.subscriber_peers += s.subscriber_peers;
            total.participants += s.participants;
            let [audio_packets, video_packets] = s.forwarded_packets;
            let [audio_bytes, video_bytes] = s.forwarded_bytes;
            total.forwarded_packets += audio_packets + video_packets;
            total.forwarded_bytes += audio_bytes + video_bytes;
            total.forwarded_packets_audio += audio_packets;
            total.forwarded_packets_video += video_packets;
            total.forwarded_bytes_audio += audio_bytes;
            total.forwarded_bytes_video += video_bytes;
            total.forwarding_latency.merge(&s.forwarding_latency);
            total.nacks_received += s.nacks_received;
            total.retransmissions += s.retransmissions;
            total.retransmissions_unavailable += s.retransmissions_unavailable;
            total.plis_received += s.plis_received;
            total.sender_reports_sent += s.sender_reports_sent;
            total.receiver_reports_sent += s.receiver_reports_sent;
            total.receiver_reports_received += s.receiver_reports_received;
            total.dropped.not_ready += s.dropped.not_ready;
            total.dropped.no_codec += s.dropped.no_codec;
            total.dropped.send_failed += s.dropped.send_failed;
            total.audio_suppressed += s.audio_suppressed;
            total.held_packets += s.held_packets;
            total.plis_relayed += s.plis_relayed;
            total.plis_suppressed += s.plis_suppressed;
            total.layer_switches += s.layer_switches;
            total.probes.carried += s.probes.carried;
            total.probes.failed += s.probes.failed;
            total.video_layers.off += s.video_layers.off;
            total.video_layers.low += s.video_layers.low;
            total.video_layers.medium += s.video_layers.medium;
            total.video_layers.high += s.video_layers.high;
            total.bandwidth_estimated += s.bandwidth_estimated;
            total.bandwidth_estimate_bps_sum += s.bandwidth_estimate_bps_sum;
            total.bandwidth_from_twcc += s.bandwidth_from_twcc;
            total.rooms += s.rooms;
            total.demux_ufrags += s.demux_ufrags;
            total.demux_addrs += s.demux_addrs;
            total.timers += s.timers;
            total.datagrams_received += s.datagrams_received;
            total.dropped_unknown += s.dropped_unknown;
            total.send_dropped += s.send_dropped;
            total.rtp_packets_received += s.tracks.iter().map(|t| t.packets).sum::<u64>();
            total.tracks.extend(s.tracks);
        }
        Ok(total)
    }

    /// Asks every worker to answer, all at once: `true` for each (in worker order) that did
    /// within `within`. A worker answers once it has handled the commands queued before the
    /// ping, so a stuck or stopped worker, or one too far behind, shows as `false`.
    pub async fn ping(&self, within: Duration) -> Vec<bool> {
        let deadline = tokio::time::Instant::now() + within;
        let waiting: Vec<Option<oneshot::Receiver<()>>> = self
            .inner
            .workers
            .iter()
            .map(|worker| {
                let (reply, rx) = oneshot::channel();
                worker
                    .commands
                    .send(Command::Ping { reply })
                    .ok()
                    .map(|_| rx)
            })
            .collect();
        let mut answered = Vec::with_capacity(waiting.len());
        for rx in waiting {
            answered.push(match rx {
                Some(rx) => matches!(tokio::time::timeout_at(deadline, rx).await, Ok(Ok(()))),
                None => false,
            });
        }
        answered
    }

    /// Closes every peer connection and stops the workers, waiting until each has.
    pub async fn shutdown(&self) {
        for worker in &self.inner.workers {
            let (reply, rx) = oneshot::channel();
            if worker.commands.send(Command::Shutdown { reply }).is_ok() {
                let _ = rx.await;
            }
        }
    }

    /// The worker a room lives on. A hash of the room id needs no shared table, so placement can
    /// neither race nor leak; room ids are random UUIDs, which spreads rooms evenly enough until
    /// load-aware placement is needed.
    fn worker_of(&self, room: RoomId) -> &WorkerHandle {
        let n = self.inner.workers.len() as u128;
        // `workers` is never empty (checked in `start`), so the index is in range.
        &self.inner.workers[(room.0.as_u128() % n) as usize]
    }

    async fn ask<T>(
        &self,
        room: RoomId,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.worker_of(room)
            .commands
            .send(command(reply))
            .map_err(|_| EngineError::WorkerGone)?;
        rx.await.map_err(|_| EngineError::WorkerGone)
    }
}
