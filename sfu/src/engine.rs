//! The async-facing handle of the media engine: starting workers, placing rooms, commands.

use std::fmt;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::EngineError;
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

/// How the engine binds and announces its sockets.
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
}

/// Something that happened to a peer connection, for signaling to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// Receiver of [`EngineEvent`]s. Unbounded so a worker never blocks on a slow consumer: events are
/// per peer state change, not per packet, so the queue stays small.
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
    /// RTP packets handed to subscriber legs.
    pub forwarded_packets: u64,
    /// RTP payload bytes of those packets.
    pub forwarded_bytes: u64,
    /// Packets not forwarded, by reason.
    pub dropped: ForwardDrops,
    /// Keyframe requests (subscriber PLI/FIR, or a leg starting) sent to publishers as PLI.
    pub plis_relayed: u64,
    /// Keyframe requests absorbed by the once-per-500-ms limit per source track.
    pub plis_suppressed: u64,
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
            let local_addr = socket.local_addr()?;
            let announced_addr = SocketAddr::new(announce_ip, local_addr.port());
            let (tx, rx) = mpsc::unbounded_channel();
            let events = events_tx.clone();
            thread::Builder::new()
                .name(format!("confab-media-{k}"))
                .spawn(move || Worker::run(socket, announced_addr, rx, events))?;
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
            total.forwarded_packets += s.forwarded_packets;
            total.forwarded_bytes += s.forwarded_bytes;
            total.dropped.not_ready += s.dropped.not_ready;
            total.dropped.no_codec += s.dropped.no_codec;
            total.dropped.send_failed += s.dropped.send_failed;
            total.plis_relayed += s.plis_relayed;
            total.plis_suppressed += s.plis_suppressed;
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
