//! One media worker: a thread that owns one UDP socket, every peer connection of its rooms and
//! their timers.
//!
//! The loop, top to bottom:
//! 1. fire the timers that are due (`handle_timeout`) and the deferred keyframe requests, marking
//!    those peers dirty;
//! 2. service every dirty peer until none is left: drain its events, inbound media and outbound
//!    datagrams, then re-arm its timer — rtc has no "output pending" signal, so touched peers are
//!    swept. Servicing a publisher forwards its packets to its subscribers' legs, which marks
//!    those subscribers dirty in turn;
//! 3. reconcile the subscribers whose forwarded set changed, which may produce offers (for a
//!    bounded time per turn, and no sooner than a gap after the subscriber's last answer); cut the
//!    quality reports and, every 200 ms, decide each room's speakers and loudest-N audio when due;
//! 4. wait for the first of: a command from the async side, a readable socket, the next timer.
//!
//! A current-thread tokio runtime provides the waiting; everything else is plain synchronous
//! calls into the sans-I/O core, so a room's peers are reached without locks or channel hops.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::ops::ControlFlow;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpTransceiverDirection, RTCRtpTransceiverId, RTCRtpTransceiverInit,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rustc_hash::FxHashMap;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};
use uuid::Uuid;

use crate::backlog::Backlog;
use crate::bwe::{self, VideoDemand};
use crate::demux::{Demux, PeerKey, is_stun};
use crate::engine::{
    EngineEvent, ForwardDrops, ForwardedTrack, LatencyHistogram, MediaKind, PeerRole, ProbeCounts,
    QualityDirection, QualityReport, RoomId, TrackSource, TrackStats, VideoLayerCounts,
};
use crate::error::EngineError;
use crate::forwarder::Forwarder;
use crate::layers::{
    Decision, LayerView, Limit, MAX_LAYERS, Selection, VideoCodec, VideoQuality, rid_rank,
};
use crate::peer::{
    self, FreeTransceiver, IceCredentials, Layer, Leg, Peer, PublishedTrack, TwccEstimate,
};
use crate::probe::{ProbeLeg, ProbeStep};
use crate::quality::{self, IntervalSum};
use crate::repair::{self, LegMapping, RepairQueue};
use crate::sender_report::{SENDER_REPORT_INTERVAL, SentCounts, next_compound};
use crate::speaker::{self, DETECTION_INTERVAL, LoudestN, Speakers};
use crate::udp::{Flushed, RecvBatch, SendBatch};
use crate::vp8::Vp8Rewriter;

/// Timers are rounded up to this; rounding down would wake before the core's deadline, find
/// nothing due and spin.
const TIMER_GRANULARITY: Duration = Duration::from_millis(1);
/// Upper bound on `recvmmsg` batches read per wake-up, so a flood cannot starve commands and
/// timers.
const MAX_RECV_BATCHES: usize = 4;
/// Forwarded packets a subscriber connection holds before they are pushed through its egress
/// pipeline. rtc moves queued messages through its handlers stage by stage, and each stage's
/// queue keeps the capacity of the largest burst it ever held: left to the end of a receive
/// round, a subscriber in a 50-person call would hold a packet from every publisher of up to
/// `MAX_RECV_BATCHES` batches, and its eight queues would keep about 1 MB for good.
const MAX_UNFLUSHED_PER_PEER: u64 = 16;
/// How long one turn of the loop may spend reconciling subscribers before it reads the socket
/// again (see `run_sync_queue`): about one offer for a 50-person call.
const SYNC_BUDGET: Duration = Duration::from_millis(2);
/// Least time between the answer to one renegotiation of a subscriber and the next offer.
/// When people join in a burst (everyone clicking the same link), each join would otherwise
/// renegotiate every member at once: an SDP with an m-line per track to build on the worker and
/// to answer on every client, for every join, which for 50 members in two seconds kept both busy
/// enough to hold the newcomers' handshakes back by hundreds of milliseconds. Changes that arrive
/// within the gap go out together in the next offer; a first offer is never held back. 500 ms
/// rather than 250 halved meeting-50's join p99 (98 m-lines per subscriber there), and a new
/// member's tracks still reach the others within about half a second.
pub const RENEGOTIATION_GAP: Duration = Duration::from_millis(500);

/// At most this many packets are rebuilt for one subscriber's burst of NACKs; a receiver that
/// asks for more has lost more than a retransmission can save, and its keyframe request will
/// follow.
const MAX_REPAIRS_PER_READ: usize = 512;
/// Connectivity checks held for a subscriber that has not answered yet (see
/// `Peer::early_checks`); clients send a few per candidate pair before they give up on one.
const MAX_EARLY_CHECKS: usize = 8;
/// How long to sleep when no peer has a deadline; any command or datagram wakes the loop anyway.
const IDLE_WAIT: Duration = Duration::from_secs(3600);
/// At most one PLI per source track per this long: every subscriber that joins or loses a packet
/// asks, and a publisher flooded with requests sends nothing but keyframes.
const PLI_INTERVAL: Duration = Duration::from_millis(500);
/// Most sending tracks one publisher may offer (contract: microphone; camera and screen).
const MAX_AUDIO_TRACKS: usize = 1;
const MAX_VIDEO_TRACKS: usize = 2;
/// How often each subscriber's bandwidth estimate is updated and its video layers re-chosen:
/// about the receiver-report interval, so each update has fresh loss to go on.
const BANDWIDTH_INTERVAL: Duration = Duration::from_secs(1);

/// Requests from the [`MediaEngine`](crate::MediaEngine) handle, each answered on its oneshot.
pub(crate) enum Command {
    Join {
        room: RoomId,
        participant: String,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Publish {
        room: RoomId,
        participant: String,
        offer_sdp: String,
        reply: oneshot::Sender<Result<String, EngineError>>,
    },
    SubscriberAnswer {
        room: RoomId,
        participant: String,
        answer_sdp: String,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    AddRemoteCandidate {
        room: RoomId,
        participant: String,
        role: PeerRole,
        candidate: String,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    RemoveParticipant {
        room: RoomId,
        participant: String,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    HoldSource {
        room: RoomId,
        participant: String,
        source: TrackSource,
        held: bool,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    SetVideoQuality {
        room: RoomId,
        subscriber: String,
        publisher: String,
        source: TrackSource,
        quality: VideoQuality,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Stats {
        reply: oneshot::Sender<WorkerStats>,
    },
    /// Answers at once when its turn comes: proof that the worker's loop still turns.
    Ping {
        reply: oneshot::Sender<()>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// RTCP packet types (RFC 3550) as the second byte of an RTCP datagram; SRTCP leaves the first
/// header in the clear, so sent reports can be counted without decrypting anything.
const RTCP_SR: u8 = 200;
const RTCP_RR: u8 = 201;

/// One worker's counters; the handle sums them into [`EngineStats`](crate::EngineStats).
pub(crate) struct WorkerStats {
    pub(crate) peers: usize,
    pub(crate) subscriber_peers: usize,
    pub(crate) participants: usize,
    pub(crate) rooms: usize,
    pub(crate) demux_ufrags: usize,
    pub(crate) demux_addrs: usize,
    pub(crate) timers: usize,
    pub(crate) datagrams_received: u64,
    pub(crate) dropped_unknown: u64,
    pub(crate) send_dropped: u64,
    /// By kind: audio, video.
    pub(crate) forwarded_packets: [u64; 2],
    pub(crate) forwarded_bytes: [u64; 2],
    pub(crate) forwarding_latency: LatencyHistogram,
    pub(crate) nacks_received: u64,
    pub(crate) retransmissions: u64,
    pub(crate) retransmissions_unavailable: u64,
    pub(crate) plis_received: u64,
    pub(crate) sender_reports_sent: u64,
    pub(crate) receiver_reports_sent: u64,
    pub(crate) receiver_reports_received: u64,
    pub(crate) dropped: ForwardDrops,
    pub(crate) audio_suppressed: u64,
    pub(crate) held_packets: u64,
    pub(crate) plis_relayed: u64,
    pub(crate) plis_suppressed: u64,
    pub(crate) layer_switches: u64,
    pub(crate) probes: ProbeCounts,
    pub(crate) video_layers: VideoLayerCounts,
    pub(crate) bandwidth_estimated: u64,
    pub(crate) bandwidth_estimate_bps_sum: u64,
    pub(crate) bandwidth_from_twcc: u64,
    pub(crate) tracks: Vec<TrackStats>,
}

/// A participant of a room: its two connections, each created when first needed.
#[derive(Default)]
struct Member {
    publisher: Option<PeerKey>,
    subscriber: Option<PeerKey>,
    /// What the participant chose (`rtc:subscribe`) per (publisher, video source); kept here
    /// because a choice may come before the track or the subscriber connection exists, and it
    /// applies to every leg later made for that track.
    video_quality: HashMap<(String, TrackSource), VideoQuality>,
    /// The participant's sources the server does not forward (see [`Worker::hold_source`]);
    /// kept here because a hold may come before the publisher connection exists.
    held: HashSet<TrackSource>,
}

/// Counters of the forwarding path, kept apart so the hot loop borrows them next to the peers.
#[derive(Default)]
struct ForwardCounters {
    /// Indexed by [`kind_index`]: audio, video.
    packets: [u64; 2],
    bytes: [u64; 2],
    drops: ForwardDrops,
    /// Audio packet-legs loudest-N did not forward.
    audio_suppressed: u64,
    /// Packet-legs not forwarded because the server holds their source.
    held: u64,
    /// Legs that started a layer at a keyframe (a switch, a resume or a simulcast leg's start).
    layer_switches: u64,
}

/// RTCP the worker has seen go in or out.
#[derive(Default)]
struct RtcpCounters {
    nacks_received: u64,
    /// Packets subscribers asked for again that were rebuilt and queued, and ones that were no
    /// longer held (or never forwarded).
    retransmissions: u64,
    retransmissions_unavailable: u64,
    plis_received: u64,
    sender_reports_sent: u64,
    receiver_reports_sent: u64,
    receiver_reports_received: u64,
}

fn kind_index(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

pub(crate) struct Worker {
    /// Sends go through the std handle: a non-blocking `send_to` needs no readiness bookkeeping,
    /// and a full send buffer simply drops the datagram as the network would.
    send_socket: StdUdpSocket,
    /// Datagrams produced during this loop pass, sent together before the loop waits again.
    send_batch: SendBatch,
    /// The address every datagram is tagged with; the ICE agent drops anything whose local address
    /// is not exactly one of its candidates.
    announced: SocketAddr,
    events: mpsc::UnboundedSender<EngineEvent>,
    demux: Demux,
    /// Looked up once per forwarded packet and leg, so hashed with Fx rather than SipHash: the
    /// keys are the worker's own counters, nothing a client chooses, so there is no flooding
    /// to defend against, and SipHash was 3 % of the worker's instructions.
    peers: FxHashMap<PeerKey, Peer>,
    rooms: HashMap<RoomId, HashMap<String, Member>>,
    timers: BinaryHeap<Reverse<(Instant, PeerKey)>>,
    /// Keyframe requests held back by the PLI limit: (when, publisher, source SSRC).
    pli_queue: Vec<(Instant, PeerKey, u32)>,
    dirty: Vec<PeerKey>,
    /// The other half of `dirty`'s double buffer, kept so servicing allocates nothing.
    dirty_batch: Vec<PeerKey>,
    /// Commands received and not yet handled, one per turn of the loop, a joining
    /// participant's first (see [`Backlog`]).
    backlog: Backlog<Command>,
    /// Subscribers whose forwarded set may have changed, reconciled after servicing.
    sync_queue: Vec<(RoomId, String)>,
    /// Reconciliations held back by [`RENEGOTIATION_GAP`]: (when, room, subscriber).
    deferred_syncs: Vec<(Instant, RoomId, String)>,
    /// Keyframe requests found while servicing a subscriber: (publisher, source SSRC).
    keyframe_requests: Vec<(PeerKey, u32)>,
    /// Packets a subscriber asked for again while servicing it: (leg SSRC, sequence number).
    nacked: Vec<(u32, u16)>,
    next_key: u64,
    /// Numbers forwarded track ids, so an id is never reused on any subscriber connection.
    next_track: u64,
    epoch: Instant,
    datagrams_received: u64,
    send_dropped: u64,
    forwarding: ForwardCounters,
    forwarding_latency: LatencyHistogram,
    rtcp: RtcpCounters,
    plis_relayed: u64,
    plis_suppressed: u64,
    probes: ProbeCounts,
    quality_interval: Duration,
    /// When the current quality interval began and when it ends.
    quality_since: Instant,
    quality_due: Instant,
    loudest_n: LoudestN,
    /// Per room: levels, speakers and their order.
    speakers: HashMap<RoomId, Speakers>,
    speakers_due: Instant,
    /// When the current bandwidth interval began and when it ends.
    bandwidth_since: Instant,
    bandwidth_due: Instant,
    /// When every connected subscriber's legs next get their sender reports.
    sender_reports_due: Instant,
}

impl Worker {
    /// Thread entry point: runs the loop until shutdown or until the engine handle is dropped.
    pub(crate) fn run(
        socket: StdUdpSocket,
        announced: SocketAddr,
        quality_interval: Duration,
        loudest_n: LoudestN,
        commands: mpsc::UnboundedReceiver<Command>,
        events: mpsc::UnboundedSender<EngineEvent>,
    ) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                warn!(error = %e, "media worker could not start its runtime");
                return;
            }
        };
        runtime.block_on(async move {
            let send_socket = match socket.try_clone() {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "media worker could not clone its socket");
                    return;
                }
            };
            let recv_socket = match UdpSocket::from_std(socket) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "media worker could not register its socket");
                    return;
                }
            };
            let mut worker = Worker {
                send_socket,
                send_batch: SendBatch::new(),
                announced,
                events,
                demux: Demux::default(),
                peers: FxHashMap::default(),
                rooms: HashMap::new(),
                timers: BinaryHeap::new(),
                pli_queue: Vec::new(),
                dirty: Vec::new(),
                dirty_batch: Vec::new(),
                backlog: Backlog::default(),
                sync_queue: Vec::new(),
                deferred_syncs: Vec::new(),
                keyframe_requests: Vec::new(),
                nacked: Vec::new(),
                next_key: 0,
                next_track: 0,
                epoch: Instant::now(),
                datagrams_received: 0,
                send_dropped: 0,
                forwarding: ForwardCounters::default(),
                forwarding_latency: LatencyHistogram::default(),
                rtcp: RtcpCounters::default(),
                plis_relayed: 0,
                plis_suppressed: 0,
                probes: ProbeCounts::default(),
                quality_interval,
                quality_since: Instant::now(),
                quality_due: Instant::now() + quality_interval,
                loudest_n,
                speakers: HashMap::new(),
                speakers_due: Instant::now() + DETECTION_INTERVAL,
                bandwidth_since: Instant::now(),
                bandwidth_due: Instant::now() + BANDWIDTH_INTERVAL,
                sender_reports_due: Instant::now() + SENDER_REPORT_INTERVAL,
            };
            worker.event_loop(recv_socket, commands).await;
        });
    }

    async fn event_loop(
        &mut self,
        socket: UdpSocket,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let mut recv_batch = RecvBatch::new();
        loop {
            let now = Instant::now();
            self.fire_due_timers(now);
            self.fire_due_plis(now);
            self.release_deferred_syncs(now);
            self.service_dirty();
            self.run_sync_queue();
            self.service_dirty();
            if now >= self.bandwidth_due {
                self.allocate_bandwidth(now);
                self.service_dirty();
            }
            if now >= self.quality_due {
                self.report_quality(now);
            }
            if now >= self.sender_reports_due {
                self.send_sender_reports(now);
                self.service_dirty();
            }
            if now >= self.speakers_due {
                self.detect_speakers(now);
            }
            // An idle worker (no rooms) need not wake for speaker detection.
            let speakers_due = (!self.rooms.is_empty()).then_some(self.speakers_due);

            let wake_at = self
                .timers
                .peek()
                .map(|Reverse((at, _))| *at)
                .into_iter()
                .chain(self.pli_queue.iter().map(|(at, _, _)| *at))
                .chain(self.deferred_syncs.iter().map(|(at, _, _)| *at))
                .chain([
                    self.quality_due,
                    self.bandwidth_due,
                    self.sender_reports_due,
                ])
                .chain(speakers_due)
                .min()
                .unwrap_or_else(|| Instant::now() + IDLE_WAIT);
            self.send_queued();
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(command) => {
                        self.backlog.push(command);
                        while let Ok(more) = commands.try_recv() {
                            self.backlog.push(more);
                        }
                        if self.handle_next_command().is_break() {
                            return;
                        }
                        // A command can take milliseconds (an SDP with an m-line per track), and
                        // while commands or reconciliations keep this select ready the runtime
                        // never polls for readiness again: without this read, a queue of answers
                        // after a burst of joins kept the socket unread for most of a second and
                        // the kernel dropped what overflowed, handshakes included.
                        self.read_datagrams_now(&mut recv_batch);
                    }
                    None => {
                        self.close_all();
                        return;
                    }
                },
                ready = socket.readable() => match ready {
                    Ok(()) => self.read_datagrams(&socket, &mut recv_batch),
                    Err(e) => {
                        warn!(error = %e, "media socket failed; worker stops");
                        self.close_all();
                        return;
                    }
                },
                () = tokio::time::sleep_until(round_up(self.epoch, wake_at).into()) => {}
                // Commands or reconciliations left over: take the next turn at once, after
                // whatever the socket and the channel have.
                () = std::future::ready(()),
                    if !self.sync_queue.is_empty() || !self.backlog.is_empty() =>
                {
                    if self.handle_next_command().is_break() {
                        return;
                    }
                    self.read_datagrams_now(&mut recv_batch);
                }
            }
        }
    }

    /// Reads what the socket holds (up to a few batches) and feeds each datagram to its peer.
    fn read_datagrams(&mut self, socket: &UdpSocket, batch: &mut RecvBatch) {
        for _ in 0..MAX_RECV_BATCHES {
            // Read through the std handle of the same socket, inside `try_io` so that an empty
            // socket clears tokio's readiness and the loop sleeps until the next datagram.
            let io = &self.send_socket;
            let n = match socket.try_io(Interest::READABLE, || batch.recv(io)) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some systems; not fatal.
                    debug!(error = %e, "media socket read error");
                    return;
                }
            };
            self.ingest(batch, n);
        }
    }

    /// Reads what the socket holds without asking the runtime whether it is readable: after a
    /// turn that was not woken by the socket, whose readiness the runtime may not have polled
    /// for a while. An empty socket costs one system call.
    fn read_datagrams_now(&mut self, batch: &mut RecvBatch) {
        for _ in 0..MAX_RECV_BATCHES {
            match batch.recv(&self.send_socket) {
                Ok(n) => self.ingest(batch, n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!(error = %e, "media socket read error");
                    return;
                }
            }
        }
    }

    /// Feeds the `n` datagrams of the last read to their peers.
    fn ingest(&mut self, batch: &RecvBatch, n: usize) {
        for i in 0..n {
            let Some((datagram, from)) = batch.get(i) else {
                continue;
            };
            self.datagrams_received += 1;
            let Some(key) = self.demux.route(from, datagram) else {
                continue;
            };
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            if peer.role == PeerRole::Subscriber && !peer.has_answered() && is_stun(datagram) {
                if peer.early_checks.len() < MAX_EARLY_CHECKS {
                    peer.early_checks.push((BytesMut::from(datagram), from));
                }
                continue;
            }
            let msg = inbound(
                Instant::now(),
                self.announced,
                from,
                BytesMut::from(datagram),
            );
            if let Err(e) = peer.pc.handle_read(msg) {
                debug!(error = %e, participant = %peer.participant, "handle_read failed");
            }
            mark_dirty(&mut self.dirty, peer);
        }
    }

    /// Hands the datagrams queued during this pass to the kernel.
    fn send_queued(&mut self) {
        let flushed = self.send_batch.flush(&self.send_socket);
        account_flush(
            flushed,
            &mut self.send_dropped,
            &mut self.forwarding_latency,
        );
    }

    fn fire_due_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            if peer.armed != Some(at) {
                continue; // superseded by a later re-arm
            }
            peer.armed = None;
            if let Err(e) = peer.pc.handle_timeout(now) {
                debug!(error = %e, participant = %peer.participant, "handle_timeout failed");
            }
            mark_dirty(&mut self.dirty, peer);
        }
    }

    /// Sends the keyframe requests that were held back until their track's PLI window ended.
    fn fire_due_plis(&mut self, now: Instant) {
        if self.pli_queue.iter().all(|(at, _, _)| *at > now) {
            return;
        }
        let mut queue = std::mem::take(&mut self.pli_queue);
        queue.retain(|&(at, publisher, ssrc)| {
            if at > now {
                return true;
            }
            if let Some(peer) = self.peers.get_mut(&publisher)
                && let Some(layer) = find_layer(peer, ssrc)
            {
                layer.pli_pending = false;
                send_pli(peer, ssrc, now, &mut self.dirty, &mut self.plis_relayed);
            }
            false
        });
        // Nothing pushes to the queue while it is taken, so this loses no entry.
        self.pli_queue = queue;
    }

    /// Queues the reconciliations whose renegotiation gap has passed.
    fn release_deferred_syncs(&mut self, now: Instant) {
        let due = self.deferred_syncs.extract_if(.., |(at, _, _)| *at <= now);
        self.sync_queue
            .extend(due.map(|(_, room, participant)| (room, participant)));
    }

    /// Services dirty peers until none is left. Servicing a publisher marks its subscribers
    /// dirty, so this runs in rounds over a double buffer rather than allocating per round.
    fn service_dirty(&mut self) {
        let mut batch = std::mem::take(&mut self.dirty_batch);
        loop {
            std::mem::swap(&mut batch, &mut self.dirty);
            if batch.is_empty() {
                break;
            }
            for key in batch.drain(..) {
                self.service(key);
            }
        }
        self.dirty_batch = batch;
    }

    /// Drains one peer's events, inbound media and outbound datagrams, then re-arms its timer.
    fn service(&mut self, key: PeerKey) {
        let now = Instant::now();
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.dirty = false;
        let mut drained = Drained::default();
        self.drain_events(key, &mut drained);
        loop {
            let Some(peer) = self.peers.get_mut(&key) else {
                return;
            };
            let Some(msg) = peer.pc.poll_read() else {
                break;
            };
            let arrived = msg.now;
            match msg.message {
                RTCMessage::RtpPacket(_, packet) => self.on_rtp(key, &packet, now, arrived),
                RTCMessage::RtcpPacket(_, packets) => {
                    collect_keyframe_requests(peer, &packets, &mut self.keyframe_requests);
                    if peer.role == PeerRole::Subscriber {
                        read_subscriber_rtcp(
                            peer,
                            &packets,
                            arrived,
                            &mut self.rtcp,
                            &mut self.nacked,
                        );
                    }
                }
                _ => {}
            }
        }
        self.answer_nacks(key, now);
        // Draining reads can raise events (a track opens on its first packet); take them now
        // rather than at this peer's next datagram or timer.
        self.drain_events(key, &mut drained);
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        loop {
            flush_writes(
                &mut self.send_batch,
                &self.send_socket,
                peer,
                &mut self.demux,
                &mut self.send_dropped,
                &mut self.forwarding_latency,
                &mut self.rtcp,
            );
            if !std::mem::take(&mut drained.ice_connected) {
                break;
            }
            // Picking the pair started our DTLS client, and rtc leaves its ClientHello in the
            // DTLS endpoint until the connection's next timeout moves it out: up to an ICE tick
            // (50-200 ms) added to every join. A timeout now sends it at once (rtc's timers act
            // only on what is due), after the datagrams just flushed: they carry the answer to
            // the check that nominated the pair, and a client drops DTLS that arrives before it.
            let _ = peer.pc.handle_timeout(now);
        }
        if let Some(deadline) = peer.pc.poll_timeout() {
            let at = round_up(self.epoch, deadline.max(now));
            if peer.armed != Some(at) {
                peer.armed = Some(at);
                self.timers.push(Reverse((at, key)));
            }
        }
        if drained.subscriber_connected {
            self.start_legs(key, now);
        }
        let mut requests = std::mem::take(&mut self.keyframe_requests);
        for (publisher, ssrc) in requests.drain(..) {
            self.request_keyframe(publisher, ssrc, now);
        }
        self.keyframe_requests = requests;
    }

    /// Rebuilds the packets a subscriber asked for again from its publishers' histories and
    /// queues them on its connection, which sends them with its next write.
    fn answer_nacks(&mut self, key: PeerKey, now: Instant) {
        if self.nacked.is_empty() {
            return;
        }
        let Some(sub) = self.peers.get(&key) else {
            self.nacked.clear();
            return;
        };
        let peers = &self.peers;
        let mut repairs = Vec::with_capacity(self.nacked.len());
        for &(ssrc, seq) in &self.nacked {
            let leg = sub
                .legs
                .iter()
                .flatten()
                .find(|l| l.forwarder.ssrc() == ssrc);
            let repair = leg.and_then(|leg| {
                let resolved = leg.mapping.resolve(seq)?;
                let layer = peers
                    .get(&leg.publisher)?
                    .published
                    .iter()
                    .flat_map(|t| &t.layers)
                    .find(|l| l.ssrc == resolved.source)?;
                repair::rebuild(
                    &resolved,
                    &layer.history,
                    ssrc,
                    |pt| leg.forwarder.payload_type(pt),
                    now,
                )
            });
            match repair {
                Some(packet) => repairs.push(packet),
                None => self.rtcp.retransmissions_unavailable += 1,
            }
        }
        self.nacked.clear();
        self.rtcp.retransmissions += repairs.len() as u64;
        sub.repairs.push(repairs);
    }

    /// Handles a peer's pending events, adding what servicing must act on to `drained`.
    fn drain_events(&mut self, key: PeerKey, drained: &mut Drained) {
        loop {
            let Some(peer) = self.peers.get_mut(&key) else {
                return;
            };
            let Some(event) = peer.pc.poll_event() else {
                return;
            };
            match on_peer_event(peer, event, &self.events) {
                Some(PeerChange::Connected) => {
                    drained.subscriber_connected |= peer.role == PeerRole::Subscriber;
                }
                Some(PeerChange::IceConnected) => drained.ice_connected = true,
                Some(PeerChange::TrackOpened) | None => {}
            }
        }
    }

    /// Counts a publisher's packet and forwards it to every leg of its track. `arrived` is when
    /// its datagram was read, for jitter and the forwarding latency.
    fn on_rtp(&mut self, key: PeerKey, packet: &rtp::Packet, now: Instant, arrived: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let ssrc = packet.header.ssrc;
        let idx = peer.published.iter().position(|t| t.has_ssrc(ssrc));
        let counters = peer.tracks.entry(ssrc).or_default();
        if counters.clock_rate == 0
            && let Some(codec) = idx.and_then(|i| peer.published[i].codec.as_ref())
        {
            // A simulcast layer after the first: the track's codec is already known.
            counters.clock_rate = codec.clock_rate;
        }
        counters.packets += 1;
        counters.bytes += packet.payload.len() as u64;
        counters.reception.on_packet(
            packet.header.sequence_number,
            packet.header.timestamp,
            packet.payload.len(),
            arrived,
            self.epoch,
            counters.clock_rate,
        );
        let Some(idx) = idx else {
            return;
        };
        if peer.published[idx].codec.is_none() {
            let receiver = peer.published[idx].receiver_id;
            let codec = receiver_codec(peer, receiver, packet.header.payload_type);
            let Some(codec) = codec else {
                return;
            };
            if let Some(counters) = peer.tracks.get_mut(&ssrc) {
                counters.clock_rate = codec.clock_rate;
            }
            peer.published[idx].video_codec = VideoCodec::from_mime(&codec.mime_type);
            peer.published[idx].codec = Some(codec);
            // The track can be offered now: every other member of the room gets a leg for it.
            let (room, me) = (peer.room, peer.participant.clone());
            if let Some(members) = self.rooms.get(&room) {
                for name in members.keys().filter(|n| **n != me) {
                    self.sync_queue.push((room, name.clone()));
                }
            }
            return;
        }
        // A padding-only packet (a bandwidth probe) carries nothing a subscriber can use.
        if packet.payload.is_empty() {
            return;
        }
        if peer.held.contains(&peer.published[idx].source) {
            self.forwarding.held += peer.published[idx].fanout.len() as u64;
            return;
        }
        let track = &mut peer.published[idx];
        let mut resumed = false;
        if track.kind == MediaKind::Audio {
            let level = track
                .audio_level_id
                .and_then(|id| speaker::audio_level(&packet.header, id));
            if let Some(dbov) = level {
                track.levels.observe(dbov);
            }
            if !track.gate.is_open() {
                if !track.gate.on_packet_while_closed(level, now) {
                    self.forwarding.audio_suppressed += track.fanout.len() as u64;
                    return;
                }
                resumed = true;
            }
        }
        let view = track.layer_view();
        let fanout = std::mem::take(&mut track.fanout);
        let mut taken = false;
        for &(sub_key, slot) in &fanout {
            if let Some(sub) = self.peers.get_mut(&sub_key) {
                if resumed {
                    resume_leg(sub, slot);
                }
                let out = Outgoing {
                    packet,
                    view: &view,
                    now,
                    arrived,
                };
                if forward(
                    sub,
                    slot,
                    &out,
                    &mut self.forwarding,
                    &mut self.keyframe_requests,
                ) {
                    taken = true;
                    mark_dirty(&mut self.dirty, sub);
                    if sub.unflushed >= MAX_UNFLUSHED_PER_PEER {
                        flush_writes(
                            &mut self.send_batch,
                            &self.send_socket,
                            sub,
                            &mut self.demux,
                            &mut self.send_dropped,
                            &mut self.forwarding_latency,
                            &mut self.rtcp,
                        );
                    }
                }
            }
        }
        if let Some(track) = self
            .peers
            .get_mut(&key)
            .and_then(|p| p.published.get_mut(idx))
        {
            track.fanout = fanout;
            // Only a packet some leg took can be asked for again, so a layer nobody watches
            // keeps no history.
            if taken
                && track.kind == MediaKind::Video
                && let Some(layer) = track.layers.iter_mut().find(|l| l.ssrc == ssrc)
            {
                layer.history.record(packet, now);
            }
        }
    }

    /// Ends the quality interval: every peer's streams are summed per kind, and each connected
    /// participant gets one [`EngineEvent::Quality`] per direction and kind that carried media.
    ///
    /// A publisher peer is the participant's inbound direction and a subscriber peer its outbound
    /// one. Intervals of peers that are not connected are still taken, so a reconnecting peer's
    /// first report covers one interval and not everything since it last had one.
    fn report_quality(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.quality_since);
        self.quality_since = now;
        self.quality_due = now + self.quality_interval;
        let publisher_views = self.layer_views();
        for peer in self.peers.values_mut() {
            let mut sums = [IntervalSum::default(); 2];
            let direction = match peer.role {
                PeerRole::Publisher => {
                    for t in peer.tracks.values_mut() {
                        if let Some(kind) = t.kind {
                            let interval = t.reception.take_interval(t.clock_rate);
                            sums[kind_index(kind)].add(&interval);
                        }
                    }
                    QualityDirection::Inbound
                }
                PeerRole::Subscriber => {
                    for leg in peer.legs.iter_mut().flatten() {
                        let interval = leg
                            .reports
                            .take_interval(leg.forwarder.clock_rate(), leg.sent.octets());
                        sums[kind_index(leg.info.kind)].add(&interval);
                    }
                    QualityDirection::Outbound
                }
            };
            if !peer.connected {
                continue;
            }
            for (kind, sum) in [(MediaKind::Audio, sums[0]), (MediaKind::Video, sums[1])] {
                if sum.bytes == 0 {
                    continue;
                }
                let _ = self.events.send(EngineEvent::Quality(QualityReport {
                    room: peer.room,
                    participant: peer.participant.clone(),
                    direction,
                    kind,
                    bitrate_bps: sum.bitrate_bps(elapsed),
                    packet_loss: sum.packet_loss(),
                    jitter_ms: sum.jitter_ms(),
                    rtt_ms: sum.rtt_ms(),
                    available_bitrate_bps: (direction == QualityDirection::Outbound)
                        .then(|| peer.bwe.bps()),
                    video_layers: (direction == QualityDirection::Outbound
                        && kind == MediaKind::Video)
                        .then(|| video_layers(peer, &publisher_views)),
                }));
            }
        }
    }

    /// Ends a speaker-detection interval in every room: each audio track's levels go to the
    /// room's detector, a changed speaker order is announced, and loudest-N decides which audio
    /// tracks are forwarded until the next interval.
    fn detect_speakers(&mut self, now: Instant) {
        self.speakers_due = now + DETECTION_INTERVAL;
        self.speakers
            .retain(|room, _| self.rooms.contains_key(room));
        let mut reopened: Vec<(PeerKey, usize)> = Vec::new();
        for (room, members) in &self.rooms {
            let speakers = self.speakers.entry(*room).or_default();
            let mut publishers = 0;
            for (name, member) in members {
                let Some(peer) = member.publisher.and_then(|k| self.peers.get_mut(&k)) else {
                    continue;
                };
                for track in peer.published.iter_mut() {
                    if track.kind != MediaKind::Audio || track.codec.is_none() {
                        continue;
                    }
                    publishers += 1;
                    if track.audio_level_id.is_some() {
                        speakers.update(name, track.levels.take());
                    }
                }
            }
            if speakers.tick() {
                let _ = self.events.send(EngineEvent::ActiveSpeakers {
                    room: *room,
                    participants: speakers.order().to_vec(),
                });
            }
            let gating = self.loudest_n.applies(publishers);
            for (name, member) in members {
                let Some(peer) = member.publisher.and_then(|k| self.peers.get_mut(&k)) else {
                    continue;
                };
                for track in peer.published.iter_mut() {
                    if track.kind != MediaKind::Audio {
                        continue;
                    }
                    // A track that sends no levels cannot be ranked, so it is never gated.
                    let selected = !gating
                        || track.audio_level_id.is_none()
                        || speakers.is_selected(name, self.loudest_n.n);
                    if track.gate.decide(selected, speakers.is_speaking(name), now) {
                        reopened.extend_from_slice(&track.fanout);
                    }
                }
            }
        }
        for (sub_key, slot) in reopened {
            if let Some(sub) = self.peers.get_mut(&sub_key) {
                resume_leg(sub, slot);
            }
        }
    }

    /// Every published video track's layers, by (publisher, track SSRC), for the once-per-interval
    /// passes that need them next to a mutable subscriber.
    fn layer_views(&self) -> HashMap<(PeerKey, u32), (LayerView, [u64; MAX_LAYERS])> {
        let mut views = HashMap::new();
        for peer in self.peers.values() {
            for t in &peer.published {
                let mut rates = [0; MAX_LAYERS];
                for (rate, layer) in rates.iter_mut().zip(&t.layers) {
                    *rate = layer.rate_bps;
                }
                views.insert((peer.key, t.ssrc), (t.layer_view(), rates));
            }
        }
        views
    }

    /// Writes a sender report for every leg of every connected subscriber that has sent
    /// something, a few legs per RTCP compound (see [`crate::sender_report`]).
    fn send_sender_reports(&mut self, now: Instant) {
        self.sender_reports_due = now + SENDER_REPORT_INTERVAL;
        let wall = SystemTime::now();
        for peer in self.peers.values_mut() {
            if peer.role != PeerRole::Subscriber || !peer.connected {
                continue;
            }
            let legs = peer.legs.iter().flatten().filter(|l| l.negotiated);
            let Some(via) = legs.clone().next().map(|l| l.sender_id) else {
                continue;
            };
            let mut written = false;
            let mut reports = legs.filter_map(|leg| {
                let (ssrc, clock_rate) = (leg.forwarder.ssrc(), leg.forwarder.clock_rate());
                leg.sent.report(ssrc, clock_rate, now, wall)
            });
            loop {
                let compound = next_compound(&mut reports);
                if compound.is_empty() {
                    break;
                }
                match peer.pc.rtp_sender(via) {
                    Some(mut sender) => match sender.write_rtcp(now, compound) {
                        Ok(()) => written = true,
                        Err(e) => debug!(error = %e, "sender reports not sent"),
                    },
                    None => break,
                }
            }
            if written {
                mark_dirty(&mut self.dirty, peer);
            }
        }
    }

    /// Ends a bandwidth interval: measures every published layer's bitrate, updates each
    /// subscriber's estimate from its reports, and re-chooses its video layers to fit; a leg
    /// whose layer changes asks for that layer's keyframe.
    fn allocate_bandwidth(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.bandwidth_since);
        self.bandwidth_since = now;
        self.bandwidth_due = now + BANDWIDTH_INTERVAL;
        let micros = elapsed.as_micros().max(1);
        for peer in self.peers.values_mut() {
            let Peer {
                published, tracks, ..
            } = peer;
            for layer in published.iter_mut().flat_map(|t| t.layers.iter_mut()) {
                let bytes = tracks.get(&layer.ssrc).map_or(0, |c| c.bytes);
                layer.rate_bps = bits_per_second(bytes.saturating_sub(layer.bytes_seen), micros);
                layer.bytes_seen = bytes;
            }
        }
        let views = self.layer_views();
        let mut requests = std::mem::take(&mut self.keyframe_requests);
        for sub in self.peers.values_mut() {
            if sub.role != PeerRole::Subscriber || !sub.connected {
                continue;
            }
            // Audio, and video without simulcast, which has no lower layer to fall back to and
            // is forwarded as before: taken off the budget first, never limited.
            let mut audio_bps = 0u64;
            let mut fixed_bps = 0u64;
            let mut video = Vec::new();
            let mut slots = Vec::new();
            for (slot, leg) in sub.legs.iter().enumerate() {
                let Some(leg) = leg else { continue };
                let Some((view, rates)) = views.get(&(leg.publisher, leg.source_ssrc)) else {
                    continue;
                };
                match &leg.selection {
                    None => {
                        audio_bps += rates[0];
                        fixed_bps += rates[0];
                    }
                    Some(selection) if view.len <= 1 => {
                        if selection.quality != VideoQuality::Off {
                            fixed_bps += rates[0];
                        }
                    }
                    Some(selection) => {
                        video.push(VideoDemand {
                            rates_bps: *rates,
                            layers: view.len,
                            requested: selection.quality.layer_index(view.len),
                        });
                        slots.push((slot, *view));
                    }
                }
            }
            let demand = fixed_bps + video.iter().map(VideoDemand::requested_bps).sum::<u64>();
            let video_sent = std::mem::take(&mut sub.video_sent);
            let estimate = sub
                .bwe
                .update(video_sent > 0, demand, sub.twcc_estimate.take_fresh());
            let mut chosen = bwe::allocate(estimate.saturating_sub(fixed_bps), &video);
            let probe_legs: Vec<ProbeLeg> = slots
                .iter()
                .zip(&video)
                .map(|((slot, _), d)| ProbeLeg {
                    key: *slot,
                    ceiling: d.ceiling(),
                    sent: d.sent_mask(),
                })
                .collect();
            let probe = sub
                .prober
                .step(sub.bwe.congested(), &probe_legs, &mut chosen);
            match probe {
                ProbeStep::Carried => {
                    // What the connection carried in the interval: its audio, and the video
                    // bytes that actually left (a probed layer whose keyframe never came
                    // carried nothing).
                    sub.bwe
                        .confirm(audio_bps + bits_per_second(video_sent, micros));
                    self.probes.carried += 1;
                }
                ProbeStep::Failed => self.probes.failed += 1,
                ProbeStep::Idle | ProbeStep::Running => {}
            }
            debug!(
                peer = ?sub.key, estimate, gcc = ?sub.twcc_estimate.get(), fixed_bps, demand,
                video_sent, ?chosen, ?probe, "bandwidth interval"
            );
            for ((slot, view), choice) in slots.into_iter().zip(chosen) {
                let Some(Some(leg)) = sub.legs.get_mut(slot) else {
                    continue;
                };
                let Some(selection) = leg.selection.as_mut() else {
                    continue;
                };
                let requested = selection.quality.layer_index(view.len);
                let limit = match choice {
                    // Everything asked for fits: no limit, so a higher choice applies at once
                    // rather than at the next interval.
                    _ if choice == requested => Limit::None,
                    Some(index) => Limit::Layer(index),
                    None => Limit::Paused,
                };
                if let Some(layer) = selection.set_limit(limit, &view, now) {
                    requests.push((leg.publisher, layer));
                }
            }
        }
        for (publisher, ssrc) in requests.drain(..) {
            self.request_keyframe(publisher, ssrc, now);
        }
        self.keyframe_requests = requests;
    }

    /// Asks the publisher of a track for a keyframe, at most once per [`PLI_INTERVAL`]; a request
    /// inside the window is deferred to its end (once), so the asker still gets a keyframe soon.
    fn request_keyframe(&mut self, publisher: PeerKey, ssrc: u32, now: Instant) {
        let Some(peer) = self.peers.get_mut(&publisher) else {
            return;
        };
        let Some(track) = peer.published.iter_mut().find(|t| t.has_ssrc(ssrc)) else {
            return;
        };
        if track.kind != MediaKind::Video {
            return;
        }
        let Some(layer) = track.layers.iter_mut().find(|l| l.ssrc == ssrc) else {
            return;
        };
        match layer.last_pli {
            Some(last) if now < last + PLI_INTERVAL => {
                if layer.pli_pending {
                    self.plis_suppressed += 1;
                } else {
                    layer.pli_pending = true;
                    self.pli_queue.push((last + PLI_INTERVAL, publisher, ssrc));
                }
            }
            _ => send_pli(peer, ssrc, now, &mut self.dirty, &mut self.plis_relayed),
        }
    }

    /// Requests a keyframe for every video leg of a subscriber that can now receive one (its
    /// answer is applied and it is connected) and has not asked yet.
    fn start_legs(&mut self, sub_key: PeerKey, now: Instant) {
        let Some(sub) = self.peers.get_mut(&sub_key) else {
            return;
        };
        if !sub.connected {
            return;
        }
        let mut requests = std::mem::take(&mut self.keyframe_requests);
        for leg in sub.legs.iter_mut().flatten() {
            if leg.negotiated && !leg.keyframe_requested && leg.info.kind == MediaKind::Video {
                leg.keyframe_requested = true;
                // A leg still waiting for its layer (simulcast, or paused) asks when that
                // layer's packets reach it; see `forward`.
                if let Some(current) = leg.selection.as_ref().and_then(|s| s.current) {
                    requests.push((leg.publisher, current));
                }
            }
        }
        for (publisher, ssrc) in requests.drain(..) {
            self.request_keyframe(publisher, ssrc, now);
        }
        self.keyframe_requests = requests;
    }

    /// Reconciles queued subscribers for at most [`SYNC_BUDGET`], newcomers first, and leaves
    /// the rest for the next turn of the loop.
    ///
    /// Every join changes what everyone else receives, and each reconciliation builds and parses
    /// an SDP with an m-line per forwarded track: when 50 people join at once, doing them all in
    /// one go held the socket for tens of milliseconds at a time, and the newcomers' ICE and DTLS
    /// exchanges, which need the loop several times over, waited behind each block. Someone who
    /// has no subscriber connection yet is waiting for their first offer, so they go first; the
    /// others already hear the call and only miss the newest track for a moment.
    fn run_sync_queue(&mut self) {
        let deadline = Instant::now() + SYNC_BUDGET;
        while !self.sync_queue.is_empty() {
            let newcomer = self.sync_queue.iter().position(|(room, name)| {
                self.rooms
                    .get(room)
                    .and_then(|members| members.get(name))
                    .is_some_and(|m| m.subscriber.is_none())
            });
            let (room, participant) = self.sync_queue.remove(newcomer.unwrap_or(0));
            // Several changes for one subscriber collapse into one reconciliation.
            self.sync_queue
                .retain(|(r, p)| !(*r == room && *p == participant));
            self.sync_subscriber(room, participant);
            if Instant::now() >= deadline {
                break;
            }
        }
    }

    /// Brings a subscriber's legs in line with what its room publishes, and offers the result.
    ///
    /// Only one negotiation runs at a time: while an offer is out, the change is noted and this
    /// runs again once the answer is applied, so any number of changes coalesce into one offer.
    fn sync_subscriber(&mut self, room: RoomId, participant: String) {
        struct Wanted {
            publisher: PeerKey,
            ssrc: u32,
            name: String,
            kind: MediaKind,
            source: TrackSource,
            codec: RTCRtpCodec,
            simulcast: bool,
        }
        let Some(members) = self.rooms.get(&room) else {
            return;
        };
        let Some(member) = members.get(&participant) else {
            return;
        };
        let mut wanted = Vec::new();
        for (name, other) in members {
            if *name == participant {
                continue;
            }
            let Some(p) = other.publisher.and_then(|k| self.peers.get(&k)) else {
                continue;
            };
            for t in &p.published {
                if let Some(codec) = &t.codec {
                    wanted.push(Wanted {
                        publisher: p.key,
                        ssrc: t.ssrc,
                        name: name.clone(),
                        kind: t.kind,
                        source: t.source,
                        codec: codec.clone(),
                        simulcast: t.simulcast,
                    });
                }
            }
        }
        let preferences = member.video_quality.clone();
        let now = Instant::now();
        let sub_key = match member.subscriber {
            Some(key) => key,
            None if wanted.is_empty() => return,
            None => match self.create_subscriber(room, &participant, now) {
                Ok(key) => key,
                Err(e) => {
                    warn!(error = %e, %participant, "subscriber connection not created");
                    return;
                }
            },
        };
        let Some(sub) = self.peers.get_mut(&sub_key) else {
            return;
        };
        if sub.offer_pending {
            sub.renegotiate = true;
            return;
        }
        if let Some(at) = sub.offer_not_before
            && now < at
        {
            if !self
                .deferred_syncs
                .iter()
                .any(|(_, r, p)| *r == room && *p == participant)
            {
                self.deferred_syncs.push((at, room, participant));
            }
            return;
        }
        let mut removed = Vec::new();
        for (slot, entry) in sub.legs.iter_mut().enumerate() {
            let still_wanted = entry.as_ref().is_none_or(|leg| {
                wanted
                    .iter()
                    .any(|w| w.publisher == leg.publisher && w.ssrc == leg.source_ssrc)
            });
            if still_wanted {
                continue;
            }
            let Some(leg) = entry.take() else { continue };
            match sub.pc.remove_track(leg.sender_id) {
                Ok(()) => sub.free_transceivers.push(FreeTransceiver {
                    index: usize::from(leg.sender_id),
                    kind: leg.info.kind,
                    forwarder: leg.forwarder,
                    sent: leg.sent,
                }),
                Err(e) => debug!(error = %e, "removing a forwarded track failed"),
            }
            removed.push((leg.publisher, leg.source_ssrc, slot));
        }
        let mut added = Vec::new();
        for w in wanted {
            if sub
                .legs
                .iter()
                .flatten()
                .any(|l| l.publisher == w.publisher && l.source_ssrc == w.ssrc)
            {
                continue;
            }
            self.next_track += 1;
            let prefix = match w.source {
                TrackSource::Microphone => "microphone",
                TrackSource::Camera => "camera",
                TrackSource::Screen => "screen",
            };
            let info = ForwardedTrack {
                track_id: format!("{prefix}-{}", self.next_track),
                stream_id: w.name.clone(),
                publisher: w.name,
                kind: w.kind,
                source: w.source,
            };
            let selection = (w.kind == MediaKind::Video).then(|| {
                let quality = preferences
                    .get(&(info.publisher.clone(), w.source))
                    .copied()
                    .unwrap_or_default();
                Selection::new(quality, (!w.simulcast).then_some(w.ssrc))
            });
            match add_leg(sub, info, w.publisher, w.ssrc, w.codec, selection) {
                Ok(slot) => added.push((w.publisher, w.ssrc, slot)),
                Err(e) => warn!(error = %e, "forwarded track not added"),
            }
        }
        if removed.is_empty() && added.is_empty() {
            return;
        }
        let offered = peer::offer_subscriber(now, self.announced, sub);
        mark_dirty(&mut self.dirty, sub);
        match offered {
            Ok(sdp) => {
                sub.offer_pending = true;
                sub.renegotiate = false;
                let tracks = sub.legs.iter().flatten().map(|l| l.info.clone()).collect();
                let _ = self.events.send(EngineEvent::SubscriberOffer {
                    room,
                    participant,
                    sdp,
                    tracks,
                });
            }
            Err(e) => warn!(error = %e, %participant, "subscriber offer failed"),
        }
        for (publisher, ssrc, slot) in removed {
            if let Some(track) = self
                .peers
                .get_mut(&publisher)
                .and_then(|p| p.published.iter_mut().find(|t| t.ssrc == ssrc))
            {
                track.fanout.retain(|&(k, s)| !(k == sub_key && s == slot));
            }
        }
        for (publisher, ssrc, slot) in added {
            if let Some(track) = self
                .peers
                .get_mut(&publisher)
                .and_then(|p| p.published.iter_mut().find(|t| t.ssrc == ssrc))
            {
                track.fanout.push((sub_key, slot));
            }
        }
    }

    fn create_subscriber(
        &mut self,
        room: RoomId,
        participant: &str,
        now: Instant,
    ) -> Result<PeerKey, EngineError> {
        let creds = self.fresh_credentials();
        let estimate = TwccEstimate::default();
        let repairs = RepairQueue::default();
        let pc = peer::new_subscriber(now, &creds, &estimate, &repairs)?;
        let key = self.new_key();
        self.demux.add_ufrag(&creds.ufrag, key);
        let mut sub = Peer::new(key, room, participant.to_owned(), PeerRole::Subscriber, pc);
        sub.twcc_estimate = estimate;
        sub.repairs = repairs;
        self.peers.insert(key, sub);
        if let Some(member) = self
            .rooms
            .get_mut(&room)
            .and_then(|m| m.get_mut(participant))
        {
            member.subscriber = Some(key);
        }
        Ok(key)
    }

    fn fresh_credentials(&self) -> IceCredentials {
        // Draw until the ufrag is free; a collision of 64 random bits is not expected but would
        // otherwise hand one peer's traffic to another.
        loop {
            let creds = IceCredentials::random();
            if !self.demux.has_ufrag(&creds.ufrag) {
                return creds;
            }
        }
    }

    fn new_key(&mut self) -> PeerKey {
        let key = PeerKey(self.next_key);
        self.next_key += 1;
        key
    }

    /// Handles the backlog's next command; breaks when it was the shutdown.
    fn handle_next_command(&mut self) -> ControlFlow<()> {
        let mut backlog = std::mem::take(&mut self.backlog);
        let next = next_command(&mut backlog, |room, participant, role| {
            self.connection_up(room, participant, role)
        });
        self.backlog = backlog;
        match next {
            Some(Command::Shutdown { reply }) => {
                self.close_all();
                let _ = reply.send(());
                ControlFlow::Break(())
            }
            Some(command) => {
                self.handle_command(command);
                ControlFlow::Continue(())
            }
            None => ControlFlow::Continue(()),
        }
    }

    /// Whether a participant's connection of this role exists and is up.
    fn connection_up(&self, room: RoomId, participant: &str, role: PeerRole) -> bool {
        let key = self.member(room, participant).and_then(|m| match role {
            PeerRole::Publisher => m.publisher,
            PeerRole::Subscriber => m.subscriber,
        });
        key.and_then(|k| self.peers.get(&k))
            .is_some_and(|p| p.connected)
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Join {
                room,
                participant,
                reply,
            } => {
                self.rooms
                    .entry(room)
                    .or_default()
                    .entry(participant.clone())
                    .or_default();
                self.sync_queue.push((room, participant));
                let _ = reply.send(Ok(()));
            }
            Command::Publish {
                room,
                participant,
                offer_sdp,
                reply,
            } => {
                let result = self.publish(room, participant, offer_sdp);
                let _ = reply.send(result);
            }
            Command::SubscriberAnswer {
                room,
                participant,
                answer_sdp,
                reply,
            } => {
                let result = self.subscriber_answer(room, participant, answer_sdp);
                let _ = reply.send(result);
            }
            Command::AddRemoteCandidate {
                room,
                participant,
                role,
                candidate,
                reply,
            } => {
                let result = self.add_remote_candidate(room, participant, role, candidate);
                let _ = reply.send(result);
            }
            Command::RemoveParticipant {
                room,
                participant,
                reply,
            } => {
                let result = self.remove_participant(room, participant);
                let _ = reply.send(result);
            }
            Command::HoldSource {
                room,
                participant,
                source,
                held,
                reply,
            } => {
                let result = self.hold_source(room, participant, source, held);
                let _ = reply.send(result);
            }
            Command::SetVideoQuality {
                room,
                subscriber,
                publisher,
                source,
                quality,
                reply,
            } => {
                let result = self.set_video_quality(room, subscriber, publisher, source, quality);
                let _ = reply.send(result);
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Command::Ping { reply } => {
                let _ = reply.send(());
            }
            Command::Shutdown { reply } => {
                // Handled in the loop; kept exhaustive so a new command is not forgotten there.
                self.close_all();
                let _ = reply.send(());
            }
        }
    }

    fn member(&self, room: RoomId, participant: &str) -> Option<&Member> {
        self.rooms.get(&room).and_then(|m| m.get(participant))
    }

    fn publish(
        &mut self,
        room: RoomId,
        participant: String,
        offer_sdp: String,
    ) -> Result<String, EngineError> {
        let (audio, video) = peer::count_sending_tracks(&offer_sdp);
        if audio > MAX_AUDIO_TRACKS || video > MAX_VIDEO_TRACKS {
            return Err(EngineError::TooManyTracks {
                max_audio: MAX_AUDIO_TRACKS,
                max_video: MAX_VIDEO_TRACKS,
            });
        }
        let now = Instant::now();
        if let Some(key) = self.member(room, &participant).and_then(|m| m.publisher) {
            let peer = self
                .peers
                .get_mut(&key)
                .ok_or_else(|| EngineError::Rtc("publisher entry without a peer".into()))?;
            let answer = peer::reanswer_publisher(now, &mut peer.pc, offer_sdp)?;
            mark_dirty(&mut self.dirty, peer);
            return Ok(answer);
        }

        let creds = self.fresh_credentials();
        let (pc, answer) = peer::answer_publisher(now, self.announced, &creds, offer_sdp)?;
        let key = self.new_key();
        self.demux.add_ufrag(&creds.ufrag, key);
        let mut peer = Peer::new(key, room, participant.clone(), PeerRole::Publisher, pc);
        if let Some(member) = self.member(room, &participant) {
            peer.held.clone_from(&member.held);
        }
        mark_dirty(&mut self.dirty, &mut peer);
        self.peers.insert(key, peer);
        // Publishing joins the room, so the publisher also receives what others publish.
        self.rooms
            .entry(room)
            .or_default()
            .entry(participant.clone())
            .or_default()
            .publisher = Some(key);
        self.sync_queue.push((room, participant));
        Ok(answer)
    }

    fn subscriber_answer(
        &mut self,
        room: RoomId,
        participant: String,
        answer_sdp: String,
    ) -> Result<(), EngineError> {
        let announced = self.announced;
        let Some(member) = self.member(room, &participant) else {
            return Err(EngineError::UnknownParticipant { room, participant });
        };
        let Some(sub) = member.subscriber.and_then(|k| self.peers.get_mut(&k)) else {
            return Err(EngineError::NoOfferPending);
        };
        if !sub.offer_pending {
            return Err(EngineError::NoOfferPending);
        }
        let now = Instant::now();
        peer::apply_subscriber_answer(now, &mut sub.pc, answer_sdp)?;
        sub.offer_pending = false;
        for (datagram, from) in std::mem::take(&mut sub.early_checks) {
            if let Err(e) = sub.pc.handle_read(inbound(now, announced, from, datagram)) {
                debug!(error = %e, %participant, "an early connectivity check failed");
            }
        }
        sub.offer_not_before = Some(now + RENEGOTIATION_GAP);
        for leg in sub.legs.iter_mut().flatten() {
            leg.negotiated = true;
        }
        mark_dirty(&mut self.dirty, sub);
        let (key, renegotiate) = (sub.key, sub.renegotiate);
        self.start_legs(key, now);
        if renegotiate {
            self.sync_queue.push((room, participant));
        }
        Ok(())
    }

    /// Records a subscriber's choice for one publisher's video source and applies it to the
    /// leg forwarding it, if there is one; a switch asks the publisher for a keyframe of the new
    /// layer right away rather than waiting for the layer's next packet.
    fn set_video_quality(
        &mut self,
        room: RoomId,
        subscriber: String,
        publisher: String,
        source: TrackSource,
        quality: VideoQuality,
    ) -> Result<(), EngineError> {
        let Some(member) = self
            .rooms
            .get_mut(&room)
            .and_then(|m| m.get_mut(&subscriber))
        else {
            return Err(EngineError::UnknownParticipant {
                room,
                participant: subscriber,
            });
        };
        member
            .video_quality
            .insert((publisher.clone(), source), quality);
        let sub_key = member.subscriber;
        let publisher_key = self.member(room, &publisher).and_then(|m| m.publisher);
        let (Some(sub_key), Some(publisher_key)) = (sub_key, publisher_key) else {
            return Ok(());
        };
        let Some(view) = self.peers.get(&publisher_key).and_then(|p| {
            p.published
                .iter()
                .find(|t| t.kind == MediaKind::Video && t.source == source)
                .map(|t| (t.ssrc, t.layer_view()))
        }) else {
            return Ok(());
        };
        let (track_ssrc, view) = view;
        let now = Instant::now();
        let Some(sub) = self.peers.get_mut(&sub_key) else {
            return Ok(());
        };
        let mut ask = None;
        for leg in sub.legs.iter_mut().flatten() {
            if leg.publisher != publisher_key || leg.source_ssrc != track_ssrc {
                continue;
            }
            if let Some(selection) = leg.selection.as_mut() {
                ask = selection.set_quality(quality, Some(&view), now);
            }
        }
        if let Some(layer) = ask {
            self.request_keyframe(publisher_key, layer, now);
        }
        Ok(())
    }

    /// Stops (`held`) or resumes forwarding everything `participant` publishes from `source`,
    /// at once and whatever the client keeps sending: packets of a held source reach no leg.
    /// On resume each leg continues its sequence numbers without a gap, and a video source's
    /// layers are asked for a keyframe so that subscribers can decode again right away. Fails
    /// only when the participant is not in the room.
    fn hold_source(
        &mut self,
        room: RoomId,
        participant: String,
        source: TrackSource,
        held: bool,
    ) -> Result<(), EngineError> {
        let Some(member) = self
            .rooms
            .get_mut(&room)
            .and_then(|m| m.get_mut(&participant))
        else {
            return Err(EngineError::UnknownParticipant { room, participant });
        };
        if held {
            member.held.insert(source);
        } else {
            member.held.remove(&source);
        }
        let Some(key) = member.publisher else {
            return Ok(());
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return Ok(());
        };
        let changed = if held {
            peer.held.insert(source)
        } else {
            peer.held.remove(&source)
        };
        if held || !changed {
            return Ok(());
        }
        let mut legs = Vec::new();
        let mut layers = Vec::new();
        for track in peer.published.iter().filter(|t| t.source == source) {
            legs.extend(track.fanout.iter().copied());
            if track.kind == MediaKind::Video {
                layers.extend(track.layers.iter().map(|l| l.ssrc));
            }
        }
        for (sub_key, slot) in legs {
            if let Some(sub) = self.peers.get_mut(&sub_key) {
                resume_leg(sub, slot);
            }
        }
        let now = Instant::now();
        for ssrc in layers {
            self.request_keyframe(key, ssrc, now);
        }
        Ok(())
    }

    fn add_remote_candidate(
        &mut self,
        room: RoomId,
        participant: String,
        role: PeerRole,
        candidate: String,
    ) -> Result<(), EngineError> {
        let Some(member) = self.member(room, &participant) else {
            return Err(EngineError::UnknownParticipant { room, participant });
        };
        let key = match role {
            PeerRole::Publisher => member.publisher,
            PeerRole::Subscriber => member.subscriber,
        };
        let Some(peer) = key.and_then(|k| self.peers.get_mut(&k)) else {
            // Lite: the client's address comes from its checks, so a candidate for a connection
            // that does not exist yet loses nothing.
            return Ok(());
        };
        let init = RTCIceCandidateInit {
            candidate,
            ..Default::default()
        };
        if let Err(e) = peer.pc.add_remote_candidate(init) {
            debug!(error = %e, %participant, "remote candidate ignored");
        }
        mark_dirty(&mut self.dirty, peer);
        Ok(())
    }

    fn remove_participant(&mut self, room: RoomId, participant: String) -> Result<(), EngineError> {
        let Some(members) = self.rooms.get_mut(&room) else {
            return Err(EngineError::UnknownParticipant { room, participant });
        };
        let Some(member) = members.remove(&participant) else {
            return Err(EngineError::UnknownParticipant { room, participant });
        };
        let others: Vec<String> = members.keys().cloned().collect();
        if members.is_empty() {
            self.rooms.remove(&room);
        }
        for key in [member.subscriber, member.publisher].into_iter().flatten() {
            self.close_peer(key);
        }
        self.sync_queue
            .retain(|(r, p)| !(*r == room && *p == participant));
        for other in others {
            self.sync_queue.push((room, other));
        }
        Ok(())
    }

    /// Closes a peer, tells its remote (DTLS close alert), and frees its routes, timers and the
    /// fan-out entries that point at it.
    fn close_peer(&mut self, key: PeerKey) {
        let Some(mut peer) = self.peers.remove(&key) else {
            return;
        };
        if let Err(e) = peer.pc.close() {
            debug!(error = %e, participant = %peer.participant, "close failed");
        }
        flush_writes(
            &mut self.send_batch,
            &self.send_socket,
            &mut peer,
            &mut self.demux,
            &mut self.send_dropped,
            &mut self.forwarding_latency,
            &mut self.rtcp,
        );
        for leg in peer.legs.iter().flatten() {
            if let Some(track) = self
                .peers
                .get_mut(&leg.publisher)
                .and_then(|p| p.published.iter_mut().find(|t| t.ssrc == leg.source_ssrc))
            {
                track.fanout.retain(|&(k, _)| k != key);
            }
        }
        self.demux.remove_peer(key);
        self.timers.retain(|Reverse((_, k))| *k != key);
        self.pli_queue.retain(|(_, k, _)| *k != key);
        self.dirty.retain(|k| *k != key);
        let _ = self.events.send(EngineEvent::PeerClosed {
            room: peer.room,
            participant: peer.participant,
            role: peer.role,
        });
    }

    fn close_all(&mut self) {
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for key in keys {
            self.close_peer(key);
        }
        self.rooms.clear();
        self.sync_queue.clear();
        self.deferred_syncs.clear();
        // The closes queued DTLS close alerts; send them before the worker stops.
        self.send_queued();
    }

    fn stats(&self) -> WorkerStats {
        let tracks = self
            .peers
            .values()
            .flat_map(|p| {
                p.tracks.iter().map(|(ssrc, t)| TrackStats {
                    room: p.room,
                    participant: p.participant.clone(),
                    kind: t.kind,
                    mid: t.mid.clone(),
                    ssrc: *ssrc,
                    packets: t.packets,
                    bytes: t.bytes,
                })
            })
            .collect();
        let views = self.layer_views();
        let mut video_layers = VideoLayerCounts::default();
        let (mut bandwidth_estimated, mut bandwidth_estimate_bps_sum) = (0, 0);
        let mut bandwidth_from_twcc = 0;
        for sub in self.peers.values() {
            if sub.role != PeerRole::Subscriber || !sub.connected {
                continue;
            }
            let layers = self::video_layers(sub, &views);
            video_layers.off += layers.off;
            video_layers.low += layers.low;
            video_layers.medium += layers.medium;
            video_layers.high += layers.high;
            bandwidth_estimated += 1;
            bandwidth_estimate_bps_sum += sub.bwe.bps();
            bandwidth_from_twcc += u64::from(sub.twcc_estimate.get().is_some());
        }
        WorkerStats {
            peers: self.peers.len(),
            subscriber_peers: self
                .peers
                .values()
                .filter(|p| p.role == PeerRole::Subscriber)
                .count(),
            participants: self.rooms.values().map(|m| m.len()).sum(),
            rooms: self.rooms.len(),
            demux_ufrags: self.demux.ufrag_count(),
            demux_addrs: self.demux.addr_count(),
            timers: self.timers.len() + self.pli_queue.len(),
            datagrams_received: self.datagrams_received,
            dropped_unknown: self.demux.dropped_unknown(),
            send_dropped: self.send_dropped,
            forwarded_packets: self.forwarding.packets,
            forwarded_bytes: self.forwarding.bytes,
            forwarding_latency: self.forwarding_latency.clone(),
            nacks_received: self.rtcp.nacks_received,
            retransmissions: self.rtcp.retransmissions,
            retransmissions_unavailable: self.rtcp.retransmissions_unavailable,
            plis_received: self.rtcp.plis_received,
            sender_reports_sent: self.rtcp.sender_reports_sent,
            receiver_reports_sent: self.rtcp.receiver_reports_sent,
            receiver_reports_received: self.rtcp.receiver_reports_received,
            dropped: self.forwarding.drops.clone(),
            audio_suppressed: self.forwarding.audio_suppressed,
            held_packets: self.forwarding.held,
            plis_relayed: self.plis_relayed,
            plis_suppressed: self.plis_suppressed,
            layer_switches: self.forwarding.layer_switches,
            probes: self.probes,
            video_layers,
            bandwidth_estimated,
            bandwidth_estimate_bps_sum,
            bandwidth_from_twcc,
            tracks,
        }
    }
}

/// How many of a subscriber's video legs forward each layer, by name: the lowest layer is
/// `low`, the highest (or only) one `high`, one between them `medium`; a leg forwarding
/// nothing (paused, or waiting for its first keyframe) counts as `off`.
fn video_layers(
    sub: &Peer,
    views: &HashMap<(PeerKey, u32), (LayerView, [u64; MAX_LAYERS])>,
) -> VideoLayerCounts {
    let mut counts = VideoLayerCounts::default();
    for leg in sub.legs.iter().flatten() {
        let Some(selection) = &leg.selection else {
            continue;
        };
        let view = views.get(&(leg.publisher, leg.source_ssrc)).map(|(v, _)| v);
        let index = selection.current.and_then(|current| {
            view.and_then(|v| v.ssrcs[..v.len].iter().position(|&s| s == current))
        });
        match (index, view) {
            (Some(i), Some(v)) if i + 1 == v.len => counts.high += 1,
            (Some(0), _) => counts.low += 1,
            (Some(_), _) => counts.medium += 1,
            (None, _) => counts.off += 1,
        }
    }
    counts
}

/// Whose command it is: a participant's commands are handled in the order they came.
fn command_participant(command: &Command) -> Option<(RoomId, &str)> {
    match command {
        Command::Join {
            room, participant, ..
        }
        | Command::Publish {
            room, participant, ..
        }
        | Command::SubscriberAnswer {
            room, participant, ..
        }
        | Command::AddRemoteCandidate {
            room, participant, ..
        }
        | Command::RemoveParticipant {
            room, participant, ..
        }
        | Command::HoldSource {
            room, participant, ..
        } => Some((*room, participant.as_str())),
        Command::SetVideoQuality {
            room, subscriber, ..
        } => Some((*room, subscriber.as_str())),
        Command::Stats { .. } | Command::Ping { .. } | Command::Shutdown { .. } => None,
    }
}

/// The command a worker handles next: the earliest urgent one that no earlier command of the
/// same participant precedes, else the earliest (see [`Backlog::take_next`]).
fn next_command(
    backlog: &mut Backlog<Command>,
    connection_up: impl Fn(RoomId, &str, PeerRole) -> bool,
) -> Option<Command> {
    backlog.take_next(
        |a, b| command_participant(a).is_some_and(|p| command_participant(b) == Some(p)),
        |c| is_urgent(c, &connection_up),
    )
}

/// Whether a command is part of someone joining: their join, their publisher offer, or an
/// answer or candidate for a connection that is not up yet. Renegotiations of connections
/// that already carry media, and everything else, can wait a few turns.
fn is_urgent(command: &Command, connection_up: impl Fn(RoomId, &str, PeerRole) -> bool) -> bool {
    match command {
        Command::Join { .. } | Command::Publish { .. } => true,
        Command::SubscriberAnswer {
            room, participant, ..
        } => !connection_up(*room, participant, PeerRole::Subscriber),
        Command::AddRemoteCandidate {
            room,
            participant,
            role,
            ..
        } => !connection_up(*room, participant, *role),
        _ => false,
    }
}

fn mark_dirty(dirty: &mut Vec<PeerKey>, peer: &mut Peer) {
    if !peer.dirty {
        peer.dirty = true;
        dirty.push(peer.key);
    }
}

/// Queues everything the peer has to send on the worker's send batch, sending the batch
/// whenever it fills. Datagrams led by a sender or receiver report are counted, which is how a
/// test (and the metrics) can tell that rtc's report interceptors run: sender reports on
/// subscriber connections, receiver reports on publisher ones.
fn flush_writes(
    batch: &mut SendBatch,
    socket: &StdUdpSocket,
    peer: &mut Peer,
    demux: &mut Demux,
    send_dropped: &mut u64,
    latency: &mut LatencyHistogram,
    rtcp: &mut RtcpCounters,
) {
    if let Some(oldest) = peer.oldest_unflushed.take() {
        batch.note_media(std::mem::take(&mut peer.unflushed), oldest);
    }
    while let Some(msg) = peer.pc.poll_write() {
        // The agent answers only checks with the right credentials: its answer is what ties the
        // client's address to this peer.
        if is_stun(&msg.message) {
            demux.learn(msg.transport.peer_addr, peer.key);
        }
        // RTP and RTCP start with version 2 (first byte 128..=191); RTCP types are 192..=223.
        if let [first, kind, ..] = msg.message[..]
            && (128..=191).contains(&first)
        {
            match kind {
                RTCP_SR => rtcp.sender_reports_sent += 1,
                RTCP_RR => rtcp.receiver_reports_sent += 1,
                _ => {}
            }
        }
        if batch.is_full() {
            account_flush(batch.flush(socket), send_dropped, latency);
        }
        batch.push(msg.message, msg.transport.peer_addr);
    }
}

/// Counts what a batch send dropped and how long its media waited in the server: from the
/// oldest packet's arrival to the batch leaving.
fn account_flush(flushed: Flushed, send_dropped: &mut u64, latency: &mut LatencyHistogram) {
    *send_dropped += flushed.dropped;
    if let Some(oldest) = flushed.oldest_media {
        latency.observe(
            Instant::now().saturating_duration_since(oldest),
            flushed.media,
        );
    }
}

/// The layer of one of a publisher's tracks with that SSRC.
fn find_layer(peer: &mut Peer, ssrc: u32) -> Option<&mut Layer> {
    peer.published
        .iter_mut()
        .flat_map(|t| t.layers.iter_mut())
        .find(|l| l.ssrc == ssrc)
}

fn send_pli(peer: &mut Peer, ssrc: u32, now: Instant, dirty: &mut Vec<PeerKey>, relayed: &mut u64) {
    let Some(track) = peer.published.iter_mut().find(|t| t.has_ssrc(ssrc)) else {
        return;
    };
    if let Some(layer) = track.layers.iter_mut().find(|l| l.ssrc == ssrc) {
        layer.last_pli = Some(now);
    }
    let receiver = track.receiver_id;
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc: ssrc,
    };
    match peer.pc.rtp_receiver(receiver) {
        Some(mut r) => match r.write_rtcp(now, vec![Box::new(pli)]) {
            Ok(()) => *relayed += 1,
            Err(e) => debug!(error = %e, "PLI not sent"),
        },
        None => return,
    }
    mark_dirty(dirty, peer);
}

/// A rate from a byte count over `micros` microseconds.
fn bits_per_second(bytes: u64, micros: u128) -> u64 {
    u64::try_from(u128::from(bytes) * 8 * 1_000_000 / micros.max(1)).unwrap_or(u64::MAX)
}

/// Counts a subscriber's NACKs and keyframe requests, adds the (leg SSRC, sequence number) of
/// each packet it asks for again to `nacked`, and hands its report blocks to the legs they are
/// about, with the RTT each one measures.
fn read_subscriber_rtcp(
    sub: &mut Peer,
    packets: &[Box<dyn rtc::rtcp::Packet>],
    arrived: Instant,
    counters: &mut RtcpCounters,
    nacked: &mut Vec<(u32, u16)>,
) {
    let mut arrival_ntp = None;
    for packet in packets {
        let any = packet.as_any();
        let blocks: &[ReceptionReport] = if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
            &rr.reports
        } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
            &sr.reports
        } else {
            if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                counters.nacks_received += 1;
                let room = MAX_REPAIRS_PER_READ.saturating_sub(nacked.len());
                let seqs = nack.nacks.iter().flat_map(|pair| *pair);
                nacked.extend(seqs.take(room).map(|seq| (nack.media_ssrc, seq)));
            } else if peer::is_keyframe_request(packet.as_ref()) {
                counters.plis_received += 1;
            }
            continue;
        };
        for block in blocks {
            let Some(leg) = sub
                .legs
                .iter_mut()
                .flatten()
                .find(|l| l.forwarder.ssrc() == block.ssrc)
            else {
                continue;
            };
            sub.bwe.on_report(block.fraction_lost);
            let now_ntp = *arrival_ntp.get_or_insert_with(|| quality::ntp_middle_at(arrived));
            let rtt = quality::rtt_ms(now_ntp, block.last_sender_report, block.delay);
            leg.reports.on_report(
                block.last_sequence_number,
                block.total_lost,
                block.jitter,
                block.fraction_lost,
                rtt,
            );
            counters.receiver_reports_received += 1;
        }
    }
}

/// Notes the (publisher, source) of every PLI/FIR a subscriber sent about one of its legs.
fn collect_keyframe_requests(
    sub: &Peer,
    packets: &[Box<dyn rtc::rtcp::Packet>],
    out: &mut Vec<(PeerKey, u32)>,
) {
    let mut push = |leg_ssrc: u32| {
        if let Some(leg) = sub
            .legs
            .iter()
            .flatten()
            .find(|l| l.forwarder.ssrc() == leg_ssrc)
        {
            // The layer being forwarded; a leg that is paused or waiting for a layer's
            // keyframe has asked for it already.
            let layer = match &leg.selection {
                Some(selection) => selection.current,
                None => Some(leg.source_ssrc),
            };
            if let Some(layer) = layer {
                out.push((leg.publisher, layer));
            }
        }
    };
    for packet in packets {
        let any = packet.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            push(pli.media_ssrc);
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            for entry in &fir.fir {
                push(entry.ssrc);
            }
        }
    }
}

/// The codec a publisher's receiver negotiated for a payload type.
fn receiver_codec(peer: &mut Peer, receiver: RTCRtpReceiverId, pt: u8) -> Option<RTCRtpCodec> {
    let mut r = peer.pc.rtp_receiver(receiver)?;
    r.get_parameters()
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.payload_type == pt)
        .map(|c| c.rtp_codec.clone())
}

/// Adds a sendonly transceiver for one forwarded track and returns its leg slot.
fn add_leg(
    sub: &mut Peer,
    info: ForwardedTrack,
    publisher: PeerKey,
    source_ssrc: u32,
    codec: RTCRtpCodec,
    selection: Option<Selection>,
) -> Result<usize, EngineError> {
    let rtc_err = |e: rtc::shared::error::Error| EngineError::Rtc(e.to_string());
    // rtc's add_track hands a track to the first transceiver of its kind without a sender: the
    // free one with the lowest index. Its SSRC and numbering carry on.
    let reused = sub
        .free_transceivers
        .iter()
        .enumerate()
        .filter(|(_, f)| f.kind == info.kind)
        .min_by_key(|(_, f)| f.index)
        .map(|(at, _)| at)
        .map(|at| sub.free_transceivers.swap_remove(at));
    // Otherwise a fresh SSRC: the subscriber must not see two legs (or a leg and its RTX)
    // collide.
    let ssrc = reused.as_ref().map(|f| f.forwarder.ssrc());
    let ssrc = ssrc.unwrap_or_else(|| {
        loop {
            let candidate = Uuid::new_v4().as_u128() as u32;
            if candidate != 0
                && !sub
                    .legs
                    .iter()
                    .flatten()
                    .any(|l| l.forwarder.ssrc() == candidate)
                && !sub
                    .free_transceivers
                    .iter()
                    .any(|f| f.forwarder.ssrc() == candidate)
            {
                break candidate;
            }
        }
    });
    let kind = match info.kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    };
    let clock_rate = codec.clock_rate;
    // The leg's m-line offers only the publisher's codec (and its RTX): a subscriber cannot
    // receive anything else on it, and rtc's full list (ten video codecs with their RTX and
    // five feedback lines each) made every video m-line of the offer, of the answer and of
    // both parsed descriptions rtc keeps about 3 KB, times every camera in the call.
    let preferred = vec![RTCRtpCodecParameters {
        rtp_codec: codec.clone(),
        payload_type: 0,
    }];
    let track = MediaStreamTrack::new(
        info.stream_id.clone(),
        info.track_id.clone(),
        info.track_id.clone(),
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
    );
    let (sender_id, forwarder, sent) = match reused {
        Some(free) => {
            let sender_id = sub.pc.add_track(track).map_err(rtc_err)?;
            if usize::from(sender_id) != free.index {
                debug!("a reused track took another transceiver than expected");
            }
            let mut forwarder = free.forwarder;
            forwarder.take_over();
            (sender_id, forwarder, free.sent)
        }
        None => {
            let transceiver = sub
                .pc
                .add_transceiver_from_track(
                    track,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Sendonly,
                        streams: vec![],
                        send_encodings: vec![],
                    }),
                )
                .map_err(rtc_err)?;
            let sender_id = sub
                .pc
                .rtp_transceiver(transceiver)
                .and_then(|t| t.sender())
                .ok_or_else(|| EngineError::Rtc("new transceiver has no sender".into()))?;
            (
                sender_id,
                Forwarder::new(ssrc, clock_rate),
                SentCounts::default(),
            )
        }
    };
    // A reused transceiver may have carried another codec; preferences follow the new track.
    if let Some(mut transceiver) = sub.pc.rtp_transceiver(RTCRtpTransceiverId::from(sender_id))
        && let Err(e) = transceiver.set_codec_preferences(preferred)
    {
        debug!(error = %e, "codec preferences not set; the leg offers every codec");
    }
    let leg = Leg {
        publisher,
        source_ssrc,
        sender_id,
        info,
        forwarder,
        selection,
        vp8: Vp8Rewriter::default(),
        mapping: LegMapping::default(),
        negotiated: false,
        keyframe_requested: false,
        reports: Default::default(),
        sent,
    };
    let slot = match sub.legs.iter().position(Option::is_none) {
        Some(slot) => {
            sub.legs[slot] = Some(leg);
            slot
        }
        None => {
            sub.legs.push(Some(leg));
            sub.legs.len() - 1
        }
    };
    Ok(slot)
}

/// One publisher packet on its way to the legs of its track.
struct Outgoing<'a> {
    packet: &'a rtp::Packet,
    /// The track's layers; a single-layer track has one.
    view: &'a LayerView,
    now: Instant,
    /// When its datagram was read, for the forwarding latency.
    arrived: Instant,
}

/// Rewrites one packet for one subscriber leg and hands it to the leg's sender; returns whether
/// the leg was written to (so the subscriber has something to flush).
///
/// This runs once per packet per subscriber, so it allocates nothing itself: the payload is
/// shared (`Bytes`), and header extensions are dropped rather than copied. They describe the
/// publisher's transport (mid, rid, transport-wide sequence numbers) and would be wrong or
/// refused on the leg, which gets its own from its sender; audio levels are read by the server,
/// not needed by subscribers. A failed write is counted and dropped, never retried, so one slow
/// subscriber cannot hold up the others.
///
/// A video leg takes only the layer it forwards; a packet of the layer it switches to is
/// forwarded from that layer's next keyframe on, and until then asks the publisher for one
/// (pushed to `keyframe_requests`). VP8 payloads get their picture ids rewritten once a leg has
/// switched, which costs that leg one payload copy per packet (see [`Vp8Rewriter`]).
fn forward(
    sub: &mut Peer,
    slot: usize,
    out: &Outgoing<'_>,
    counters: &mut ForwardCounters,
    keyframe_requests: &mut Vec<(PeerKey, u32)>,
) -> bool {
    let Outgoing {
        packet,
        view,
        now,
        arrived,
    } = *out;
    let Peer {
        legs,
        pc,
        connected,
        unflushed,
        oldest_unflushed,
        video_sent,
        ..
    } = sub;
    let Some(Some(leg)) = legs.get_mut(slot) else {
        return false;
    };
    let ssrc = packet.header.ssrc;
    if let Some(selection) = &leg.selection
        && !selection.wants(view, ssrc)
    {
        return false;
    }
    if !leg.negotiated || !*connected {
        counters.drops.not_ready += 1;
        return false;
    }
    if let Some(selection) = leg.selection.as_mut() {
        match selection.decide(view, ssrc, &packet.payload, now) {
            Decision::Forward => {}
            Decision::Switch => {
                leg.forwarder.rebase();
                leg.vp8.rebase();
                counters.layer_switches += 1;
            }
            Decision::Skip => return false,
            Decision::RequestKeyframe(layer) => {
                keyframe_requests.push((leg.publisher, layer));
                return false;
            }
        }
    }
    let source_pt = packet.header.payload_type;
    let pt = match leg.forwarder.payload_type(source_pt) {
        Some(pt) => pt,
        None => {
            // Rare path (first packet, or a codec change): find the leg's payload type for the
            // codec this leg was created with.
            let resolved = pc.rtp_sender(leg.sender_id).and_then(|mut s| {
                let mime = s
                    .track()
                    .codings()
                    .first()
                    .map(|c| c.codec.mime_type.clone());
                let mime = mime?;
                s.get_parameters()
                    .rtp_parameters
                    .codecs
                    .iter()
                    .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&mime))
                    .map(|c| c.payload_type)
            });
            match resolved {
                Some(pt) => {
                    leg.forwarder.set_payload_type(source_pt, pt);
                    pt
                }
                None => {
                    counters.drops.no_codec += 1;
                    return false;
                }
            }
        }
    };
    let payload = if view.codec == VideoCodec::Vp8 && leg.selection.is_some() {
        leg.vp8.rewrite(ssrc, &packet.payload)
    } else {
        packet.payload.clone()
    };
    let out = rtp::Packet {
        header: leg.forwarder.leg_header(&packet.header, pt, now),
        payload,
    };
    if leg.info.kind == MediaKind::Video
        && let Some(mapping) = leg.forwarder.mapping()
    {
        leg.mapping
            .on_sent(out.header.sequence_number, mapping, leg.vp8.offsets());
    }
    let out_len = out.payload.len();
    let len = out_len as u64;
    let timestamp = out.header.timestamp;
    let written = match pc.rtp_sender(leg.sender_id) {
        Some(mut sender) => sender.write_rtp(now, out).is_ok(),
        None => false,
    };
    if written {
        let kind = kind_index(leg.info.kind);
        counters.packets[kind] += 1;
        counters.bytes[kind] += len;
        leg.sent.on_sent(timestamp, out_len, now);
        if leg.selection.is_some() {
            *video_sent += len;
        }
        *unflushed += 1;
        *oldest_unflushed = Some(oldest_unflushed.map_or(arrived, |o| o.min(arrived)));
    } else {
        counters.drops.send_failed += 1;
    }
    true
}

/// A leg's track is forwarded again after loudest-N held it back.
fn resume_leg(sub: &mut Peer, slot: usize) {
    if let Some(Some(leg)) = sub.legs.get_mut(slot) {
        leg.forwarder.rebase();
    }
}

/// A datagram from `from`, as rtc takes it: tagged with the address clients reach us on.
fn inbound(
    now: Instant,
    announced: SocketAddr,
    from: SocketAddr,
    message: BytesMut,
) -> TaggedBytesMut {
    TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: announced,
            peer_addr: from,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message,
    }
}

/// What draining one peer's events found that servicing it must act on.
#[derive(Default)]
struct Drained {
    /// A subscriber connection just came up: its legs can start.
    subscriber_connected: bool,
    /// ICE just connected, which started the DTLS client (see `service`).
    ice_connected: bool,
}

/// What an event changed that the worker must act on.
enum PeerChange {
    Connected,
    IceConnected,
    TrackOpened,
}

/// Turns the core's events into engine events; the rest is the core's own business.
fn on_peer_event(
    peer: &mut Peer,
    event: RTCPeerConnectionEvent,
    events: &mpsc::UnboundedSender<EngineEvent>,
) -> Option<PeerChange> {
    match event {
        RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
            let (out, change) = match state {
                RTCPeerConnectionState::Connected if !peer.connected => {
                    peer.connected = true;
                    (
                        Some(EngineEvent::PeerConnected {
                            room: peer.room,
                            participant: peer.participant.clone(),
                            role: peer.role,
                        }),
                        Some(PeerChange::Connected),
                    )
                }
                RTCPeerConnectionState::Failed => (
                    Some(EngineEvent::PeerFailed {
                        room: peer.room,
                        participant: peer.participant.clone(),
                        role: peer.role,
                    }),
                    None,
                ),
                _ => (None, None),
            };
            if let Some(out) = out {
                let _ = events.send(out);
            }
            change
        }
        RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init))
            if peer.role == PeerRole::Publisher =>
        {
            if peer.published.iter().any(|t| t.has_ssrc(init.ssrc)) {
                return None;
            }
            let rid = init.rid.as_deref().filter(|r| !r.is_empty());
            if let Some(rid) = rid
                && let Some(track) = peer
                    .published
                    .iter_mut()
                    .find(|t| t.receiver_id == init.receiver_id)
            {
                // Another simulcast layer of a track already announced.
                track.add_layer(init.ssrc, rid);
                let (kind, mid) = (
                    track.kind,
                    peer.tracks.get(&track.ssrc).and_then(|c| c.mid.clone()),
                );
                let counters = peer.tracks.entry(init.ssrc).or_default();
                counters.kind = Some(kind);
                counters.mid = mid;
                return None;
            }
            let transceiver: RTCRtpTransceiverId = init.receiver_id.into();
            let mid = peer
                .pc
                .rtp_transceiver(transceiver)
                .and_then(|t| t.mid().clone());
            let kind = receiver_kind(peer, init.receiver_id)?;
            let source = track_source(peer, init.receiver_id, kind, &init.track_id);
            let audio_level_id = match kind {
                MediaKind::Audio => audio_level_id(peer, init.receiver_id),
                MediaKind::Video => None,
            };
            let counters = peer.tracks.entry(init.ssrc).or_default();
            counters.kind = Some(kind);
            counters.mid = mid.clone();
            peer.published.push(PublishedTrack {
                ssrc: init.ssrc,
                receiver_id: init.receiver_id,
                kind,
                source,
                simulcast: rid.is_some(),
                layers: vec![Layer::new(init.ssrc, rid.map_or(0, rid_rank))],
                codec: None,
                video_codec: VideoCodec::Other,
                fanout: Vec::new(),
                audio_level_id,
                levels: Default::default(),
                gate: Default::default(),
            });
            if let Some(mid) = mid {
                let _ = events.send(EngineEvent::TrackPublished {
                    room: peer.room,
                    participant: peer.participant.clone(),
                    kind,
                    mid,
                    ssrc: init.ssrc,
                    source,
                });
            }
            Some(PeerChange::TrackOpened)
        }
        RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
            RTCIceConnectionState::Connected,
        ) => Some(PeerChange::IceConnected),
        _ => None,
    }
}

/// The id the publisher's receiver negotiated for the audio-level extension, if any.
fn audio_level_id(peer: &mut Peer, receiver: RTCRtpReceiverId) -> Option<u8> {
    let mut r = peer.pc.rtp_receiver(receiver)?;
    r.get_parameters()
        .rtp_parameters
        .header_extensions
        .iter()
        .find(|e| e.uri == rtc::sdp::extmap::AUDIO_LEVEL_URI)
        .and_then(|e| u8::try_from(e.id).ok())
}

fn receiver_kind(peer: &mut Peer, receiver: RTCRtpReceiverId) -> Option<MediaKind> {
    peer.pc
        .rtp_receiver(receiver)
        .and_then(|r| match r.track().kind() {
            RtpCodecKind::Audio => Some(MediaKind::Audio),
            RtpCodecKind::Video => Some(MediaKind::Video),
            _ => None,
        })
}

/// Contract section 7: a track whose msid id starts with `screen` is a screen share; otherwise
/// the publisher's transceiver order tells (first audio microphone, first video camera, second
/// video screen).
fn track_source(
    peer: &mut Peer,
    receiver: RTCRtpReceiverId,
    kind: MediaKind,
    track_id: &str,
) -> TrackSource {
    if track_id.starts_with("screen") {
        return TrackSource::Screen;
    }
    if kind == MediaKind::Audio {
        return TrackSource::Microphone;
    }
    let ours: RTCRtpTransceiverId = receiver.into();
    let transceivers: Vec<RTCRtpTransceiverId> = peer.pc.get_transceivers().collect();
    let mut videos_before = 0;
    for t in transceivers {
        if t == ours {
            break;
        }
        let receiver = peer.pc.rtp_transceiver(t).and_then(|t| t.receiver());
        if let Some(r) = receiver
            && receiver_kind(peer, r) == Some(MediaKind::Video)
        {
            videos_before += 1;
        }
    }
    if videos_before == 0 {
        TrackSource::Camera
    } else {
        TrackSource::Screen
    }
}

/// Rounds a deadline up to the timer granularity, measured from the worker's epoch.
fn round_up(epoch: Instant, deadline: Instant) -> Instant {
    let since = deadline.saturating_duration_since(epoch);
    let step = TIMER_GRANULARITY.as_nanos();
    let ticks = since.as_nanos().div_ceil(step);
    let nanos = u64::try_from(ticks.saturating_mul(step)).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(room: RoomId, who: &str) -> Command {
        Command::Join {
            room,
            participant: who.into(),
            reply: oneshot::channel().0,
        }
    }

    fn answer(room: RoomId, who: &str) -> Command {
        Command::SubscriberAnswer {
            room,
            participant: who.into(),
            answer_sdp: String::new(),
            reply: oneshot::channel().0,
        }
    }

    fn candidate(room: RoomId, who: &str, role: PeerRole) -> Command {
        Command::AddRemoteCandidate {
            room,
            participant: who.into(),
            role,
            candidate: String::new(),
            reply: oneshot::channel().0,
        }
    }

    fn remove(room: RoomId, who: &str) -> Command {
        Command::RemoveParticipant {
            room,
            participant: who.into(),
            reply: oneshot::channel().0,
        }
    }

    fn label(command: &Command) -> String {
        let kind = match command {
            Command::Join { .. } => "join",
            Command::Publish { .. } => "publish",
            Command::SubscriberAnswer { .. } => "answer",
            Command::AddRemoteCandidate { .. } => "candidate",
            Command::RemoveParticipant { .. } => "remove",
            Command::SetVideoQuality { .. } => "quality",
            Command::HoldSource { .. } => "hold",
            Command::Stats { .. } => "stats",
            Command::Ping { .. } => "ping",
            Command::Shutdown { .. } => "shutdown",
        };
        match command_participant(command) {
            Some((_, who)) => format!("{kind} {who}"),
            None => kind.to_owned(),
        }
    }

    /// The order the worker handles a backlog in, given whose connections are up.
    fn order(
        commands: Vec<Command>,
        connection_up: impl Fn(RoomId, &str, PeerRole) -> bool,
    ) -> Vec<String> {
        let mut backlog = Backlog::default();
        for command in commands {
            backlog.push(command);
        }
        std::iter::from_fn(|| next_command(&mut backlog, &connection_up))
            .map(|c| label(&c))
            .collect()
    }

    /// A burst of joins: everyone in the call owes an answer to a renegotiation, and the
    /// newcomer's join, subscriber answer and candidate arrive behind them. The newcomer's go
    /// first, in their own order; the others keep theirs.
    #[test]
    fn a_newcomers_commands_go_before_renegotiations_of_connections_already_up() {
        let room = RoomId(Uuid::new_v4());
        let up = |_: RoomId, who: &str, _: PeerRole| who != "newcomer";
        let commands = vec![
            answer(room, "alice"),
            answer(room, "bob"),
            join(room, "newcomer"),
            Command::Stats {
                reply: oneshot::channel().0,
            },
            answer(room, "newcomer"),
            candidate(room, "newcomer", PeerRole::Subscriber),
            answer(room, "carol"),
        ];
        assert_eq!(
            order(commands, up),
            [
                "join newcomer",
                "answer newcomer",
                "candidate newcomer",
                "answer alice",
                "answer bob",
                "stats",
                "answer carol",
            ]
        );
    }

    /// Urgency never reorders one participant's commands: a rejoin waits for the removal
    /// queued before it, while someone else's join need not.
    #[test]
    fn an_urgent_command_never_overtakes_an_earlier_one_of_the_same_participant() {
        let room = RoomId(Uuid::new_v4());
        let up = |_: RoomId, who: &str, _: PeerRole| who == "alice";
        let commands = vec![
            answer(room, "alice"),
            remove(room, "dave"),
            join(room, "dave"),
            join(room, "erin"),
        ];
        assert_eq!(
            order(commands, up),
            ["join erin", "answer alice", "remove dave", "join dave"]
        );
    }

    /// What counts as part of a join: the connection the command is for decides, per role.
    #[test]
    fn answers_and_candidates_are_urgent_only_for_connections_not_up() {
        let room = RoomId(Uuid::new_v4());
        let publisher_up = |_: RoomId, _: &str, role: PeerRole| role == PeerRole::Publisher;
        assert!(is_urgent(&answer(room, "a"), publisher_up));
        assert!(is_urgent(
            &candidate(room, "a", PeerRole::Subscriber),
            publisher_up
        ));
        assert!(!is_urgent(
            &candidate(room, "a", PeerRole::Publisher),
            publisher_up
        ));
        assert!(!is_urgent(&remove(room, "a"), publisher_up));
        let all_up = |_: RoomId, _: &str, _: PeerRole| true;
        assert!(is_urgent(&join(room, "a"), all_up));
        assert!(!is_urgent(&answer(room, "a"), all_up));
        let shutdown = Command::Shutdown {
            reply: oneshot::channel().0,
        };
        assert!(!is_urgent(&shutdown, all_up));
        assert_eq!(command_participant(&shutdown), None);
    }
}
