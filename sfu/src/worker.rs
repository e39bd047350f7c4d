//! One media worker: a thread that owns one UDP socket, every peer connection of its rooms and
//! their timers.
//!
//! The loop, top to bottom:
//! 1. fire the timers that are due (`handle_timeout`), marking those peers dirty;
//! 2. service every dirty peer: drain its events, inbound media and outbound datagrams, then
//!    re-arm its timer — rtc has no "output pending" signal, so touched peers are swept;
//! 3. wait for the first of: a command from the async side, a readable socket, the next timer.
//!
//! A current-thread tokio runtime provides the waiting; everything else is plain synchronous
//! calls into the sans-I/O core, so a room's peers are reached without locks or channel hops.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::RTCRtpTransceiverId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::demux::{Demux, PeerKey};
use crate::engine::{EngineEvent, MediaKind, RoomId, TrackStats};
use crate::error::EngineError;
use crate::peer::{self, IceCredentials, Peer, TrackCounters};

/// Timers are rounded up to this; rounding down would wake before the core's deadline, find
/// nothing due and spin.
const TIMER_GRANULARITY: Duration = Duration::from_millis(1);
/// Upper bound on datagrams read per wake-up, so a flood cannot starve commands and timers.
const MAX_RECV_BURST: usize = 64;
/// Large enough for any datagram a WebRTC peer sends (MTU-sized), with headroom.
const RECV_BUF_LEN: usize = 2048;
/// How long to sleep when no peer has a deadline; any command or datagram wakes the loop anyway.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

/// Requests from the [`MediaEngine`](crate::MediaEngine) handle, each answered on its oneshot.
pub(crate) enum Command {
    Publish {
        room: RoomId,
        participant: String,
        offer_sdp: String,
        reply: oneshot::Sender<Result<String, EngineError>>,
    },
    AddRemoteCandidate {
        room: RoomId,
        participant: String,
        candidate: String,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    RemoveParticipant {
        room: RoomId,
        participant: String,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Stats {
        reply: oneshot::Sender<WorkerStats>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// One worker's counters; the handle sums them into [`EngineStats`](crate::EngineStats).
pub(crate) struct WorkerStats {
    pub(crate) peers: usize,
    pub(crate) rooms: usize,
    pub(crate) demux_ufrags: usize,
    pub(crate) demux_addrs: usize,
    pub(crate) timers: usize,
    pub(crate) datagrams_received: u64,
    pub(crate) dropped_unknown: u64,
    pub(crate) send_dropped: u64,
    pub(crate) tracks: Vec<TrackStats>,
}

pub(crate) struct Worker {
    /// Sends go through the std handle: a non-blocking `send_to` needs no readiness bookkeeping,
    /// and a full send buffer simply drops the datagram as the network would.
    send_socket: StdUdpSocket,
    /// The address every datagram is tagged with; the ICE agent drops anything whose local address
    /// is not exactly one of its candidates.
    announced: SocketAddr,
    events: mpsc::UnboundedSender<EngineEvent>,
    demux: Demux,
    peers: HashMap<PeerKey, Peer>,
    publishers: HashMap<(RoomId, String), PeerKey>,
    timers: BinaryHeap<Reverse<(Instant, PeerKey)>>,
    dirty: Vec<PeerKey>,
    next_key: u64,
    epoch: Instant,
    datagrams_received: u64,
    send_dropped: u64,
}

impl Worker {
    /// Thread entry point: runs the loop until shutdown or until the engine handle is dropped.
    pub(crate) fn run(
        socket: StdUdpSocket,
        announced: SocketAddr,
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
                announced,
                events,
                demux: Demux::default(),
                peers: HashMap::new(),
                publishers: HashMap::new(),
                timers: BinaryHeap::new(),
                dirty: Vec::new(),
                next_key: 0,
                epoch: Instant::now(),
                datagrams_received: 0,
                send_dropped: 0,
            };
            worker.event_loop(recv_socket, commands).await;
        });
    }

    async fn event_loop(
        &mut self,
        socket: UdpSocket,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let mut buf = vec![0u8; RECV_BUF_LEN];
        loop {
            self.fire_due_timers(Instant::now());
            self.service_dirty();

            let wake_at = self
                .timers
                .peek()
                .map(|Reverse((at, _))| *at)
                .unwrap_or_else(|| Instant::now() + IDLE_WAIT);
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        self.close_all();
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => self.handle_command(command),
                    None => {
                        self.close_all();
                        return;
                    }
                },
                ready = socket.readable() => match ready {
                    Ok(()) => self.read_datagrams(&socket, &mut buf),
                    Err(e) => {
                        warn!(error = %e, "media socket failed; worker stops");
                        self.close_all();
                        return;
                    }
                },
                () = tokio::time::sleep_until(wake_at.into()) => {}
            }
        }
    }

    /// Reads what the socket holds (up to a burst) and feeds each datagram to its peer.
    fn read_datagrams(&mut self, socket: &UdpSocket, buf: &mut [u8]) {
        for _ in 0..MAX_RECV_BURST {
            let (n, from) = match socket.try_recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some systems; not fatal.
                    debug!(error = %e, "media socket read error");
                    return;
                }
            };
            self.datagrams_received += 1;
            let datagram = &buf[..n];
            let Some(key) = self.demux.route(from, datagram) else {
                continue;
            };
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            let msg = TaggedBytesMut {
                now: Instant::now(),
                transport: TransportContext {
                    local_addr: self.announced,
                    peer_addr: from,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message: BytesMut::from(datagram),
            };
            if let Err(e) = peer.pc.handle_read(msg) {
                debug!(error = %e, participant = %peer.participant, "handle_read failed");
            }
            mark_dirty(&mut self.dirty, peer);
        }
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

    fn service_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for key in &dirty {
            self.service(*key);
        }
        // Reuse the allocation; `service` never marks peers dirty itself.
        self.dirty = dirty;
        self.dirty.clear();
    }

    /// Drains one peer's events, inbound media and outbound datagrams, then re-arms its timer.
    fn service(&mut self, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.dirty = false;
        while let Some(event) = peer.pc.poll_event() {
            on_peer_event(peer, event, &self.events);
        }
        while let Some(msg) = peer.pc.poll_read() {
            if let RTCMessage::RtpPacket(_, packet) = msg.message {
                let counters = peer.tracks.entry(packet.header.ssrc).or_default();
                counters.packets += 1;
                counters.bytes += packet.payload.len() as u64;
            }
        }
        // Draining reads can raise events (a track opens on its first packet); take them now
        // rather than at this peer's next datagram or timer.
        while let Some(event) = peer.pc.poll_event() {
            on_peer_event(peer, event, &self.events);
        }
        flush_writes(&self.send_socket, peer, &mut self.send_dropped);
        let now = Instant::now();
        if let Some(deadline) = peer.pc.poll_timeout() {
            let at = round_up(self.epoch, deadline.max(now));
            if peer.armed != Some(at) {
                peer.armed = Some(at);
                self.timers.push(Reverse((at, key)));
            }
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Publish {
                room,
                participant,
                offer_sdp,
                reply,
            } => {
                let result = self.publish(room, participant, offer_sdp);
                let _ = reply.send(result);
            }
            Command::AddRemoteCandidate {
                room,
                participant,
                candidate,
                reply,
            } => {
                let result = match self.publishers.get(&(room, participant.clone())) {
                    Some(key) => {
                        if let Some(peer) = self.peers.get_mut(key) {
                            let init = RTCIceCandidateInit {
                                candidate,
                                ..Default::default()
                            };
                            // Lite: the client's address comes from its checks, so a candidate
                            // the core cannot use costs nothing.
                            if let Err(e) = peer.pc.add_remote_candidate(init) {
                                debug!(error = %e, %participant, "remote candidate ignored");
                            }
                            mark_dirty(&mut self.dirty, peer);
                        }
                        Ok(())
                    }
                    None => Err(EngineError::UnknownParticipant { room, participant }),
                };
                let _ = reply.send(result);
            }
            Command::RemoveParticipant {
                room,
                participant,
                reply,
            } => {
                let result = match self.publishers.remove(&(room, participant.clone())) {
                    Some(key) => {
                        self.close_peer(key);
                        Ok(())
                    }
                    None => Err(EngineError::UnknownParticipant { room, participant }),
                };
                let _ = reply.send(result);
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Command::Shutdown { reply } => {
                // Handled in the loop; kept exhaustive so a new command is not forgotten there.
                self.close_all();
                let _ = reply.send(());
            }
        }
    }

    fn publish(
        &mut self,
        room: RoomId,
        participant: String,
        offer_sdp: String,
    ) -> Result<String, EngineError> {
        let now = Instant::now();
        if let Some(key) = self.publishers.get(&(room, participant.clone())) {
            let peer = self
                .peers
                .get_mut(key)
                .ok_or_else(|| EngineError::Rtc("publisher entry without a peer".into()))?;
            let answer = peer::reanswer_publisher(now, &mut peer.pc, offer_sdp)?;
            mark_dirty(&mut self.dirty, peer);
            return Ok(answer);
        }

        // Draw credentials until the ufrag is free; a collision of 64 random bits is not expected
        // but would otherwise hand one peer's traffic to another.
        let creds = loop {
            let creds = IceCredentials::random();
            if !self.demux.has_ufrag(&creds.ufrag) {
                break creds;
            }
        };
        let (pc, answer) = peer::answer_publisher(now, self.announced, &creds, offer_sdp)?;
        let key = PeerKey(self.next_key);
        self.next_key += 1;
        self.demux.add_ufrag(&creds.ufrag, key);
        self.publishers.insert((room, participant.clone()), key);
        let mut peer = Peer {
            key,
            room,
            participant,
            pc,
            armed: None,
            dirty: false,
            connected: false,
            tracks: HashMap::new(),
        };
        mark_dirty(&mut self.dirty, &mut peer);
        self.peers.insert(key, peer);
        Ok(answer)
    }

    /// Closes a peer, tells its remote (DTLS close alert), and frees its routes and timers.
    fn close_peer(&mut self, key: PeerKey) {
        let Some(mut peer) = self.peers.remove(&key) else {
            return;
        };
        if let Err(e) = peer.pc.close() {
            debug!(error = %e, participant = %peer.participant, "close failed");
        }
        flush_writes(&self.send_socket, &mut peer, &mut self.send_dropped);
        self.demux.remove_peer(key);
        self.timers.retain(|Reverse((_, k))| *k != key);
        self.dirty.retain(|k| *k != key);
        let _ = self.events.send(EngineEvent::PeerClosed {
            room: peer.room,
            participant: peer.participant,
        });
    }

    fn close_all(&mut self) {
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for key in keys {
            self.close_peer(key);
        }
        self.publishers.clear();
    }

    fn stats(&self) -> WorkerStats {
        let rooms: HashSet<RoomId> = self.peers.values().map(|p| p.room).collect();
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
        WorkerStats {
            peers: self.peers.len(),
            rooms: rooms.len(),
            demux_ufrags: self.demux.ufrag_count(),
            demux_addrs: self.demux.addr_count(),
            timers: self.timers.len(),
            datagrams_received: self.datagrams_received,
            dropped_unknown: self.demux.dropped_unknown(),
            send_dropped: self.send_dropped,
            tracks,
        }
    }
}

fn mark_dirty(dirty: &mut Vec<PeerKey>, peer: &mut Peer) {
    if !peer.dirty {
        peer.dirty = true;
        dirty.push(peer.key);
    }
}

fn flush_writes(socket: &StdUdpSocket, peer: &mut Peer, send_dropped: &mut u64) {
    while let Some(msg) = peer.pc.poll_write() {
        match socket.send_to(&msg.message, msg.transport.peer_addr) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => *send_dropped += 1,
            Err(e) => {
                debug!(error = %e, to = %msg.transport.peer_addr, "send failed");
                *send_dropped += 1;
            }
        }
    }
}

/// Turns the core's events into engine events; the rest is the core's own business.
fn on_peer_event(
    peer: &mut Peer,
    event: RTCPeerConnectionEvent,
    events: &mpsc::UnboundedSender<EngineEvent>,
) {
    match event {
        RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
            let out = match state {
                RTCPeerConnectionState::Connected if !peer.connected => {
                    peer.connected = true;
                    Some(EngineEvent::PeerConnected {
                        room: peer.room,
                        participant: peer.participant.clone(),
                    })
                }
                RTCPeerConnectionState::Failed => Some(EngineEvent::PeerFailed {
                    room: peer.room,
                    participant: peer.participant.clone(),
                }),
                _ => None,
            };
            if let Some(out) = out {
                let _ = events.send(out);
            }
        }
        RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
            let transceiver: RTCRtpTransceiverId = init.receiver_id.into();
            let mid = peer
                .pc
                .rtp_transceiver(transceiver)
                .and_then(|t| t.mid().clone());
            let kind =
                peer.pc
                    .rtp_receiver(init.receiver_id)
                    .and_then(|r| match r.track().kind() {
                        RtpCodecKind::Audio => Some(MediaKind::Audio),
                        RtpCodecKind::Video => Some(MediaKind::Video),
                        _ => None,
                    });
            let counters: &mut TrackCounters = peer.tracks.entry(init.ssrc).or_default();
            counters.kind = kind;
            counters.mid = mid.clone();
            if let (Some(kind), Some(mid)) = (kind, mid) {
                let _ = events.send(EngineEvent::TrackPublished {
                    room: peer.room,
                    participant: peer.participant.clone(),
                    kind,
                    mid,
                    ssrc: init.ssrc,
                });
            }
        }
        _ => {}
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
