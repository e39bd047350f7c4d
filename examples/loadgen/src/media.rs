//! A media thread: owns the client connections of some participants, polls all their sockets
//! from one loop, generates their media and records what arrives.
//!
//! Signaling runs elsewhere (async tasks) and reaches the thread through [`MediaHandle`]
//! commands; the thread never blocks on anything but its poll.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::{Events, Interest, Poll, Token, Waker};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::oneshot;

use crate::client::{Client, ClientError, RECV_BUF_LEN, Role};
use crate::recorder::{JoinTimes, Received, Record, SharedLive, Window};
use crate::rx_time::RecvBatch;
use crate::stamp::{STREAM_AUDIO, STREAM_VIDEO, Stamp, now_us, us_at};

const WAKER: Token = Token(usize::MAX);
/// Opus: one 20 ms frame per packet, 50 packets per second.
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
const AUDIO_TS_STEP: u32 = 960;
/// Generated Opus payload size (a 32 kbit/s voice frame is about this).
const AUDIO_PAYLOAD: usize = 80;
/// Largest generated VP8 packet payload.
const VIDEO_MTU_PAYLOAD: usize = 1100;
/// Timers are served at this granularity; rounding deadlines up avoids busy spinning.
const TICK: Duration = Duration::from_millis(1);

/// What a publisher sends.
#[derive(Debug, Clone, Copy)]
pub struct MediaSpec {
    pub audio: bool,
    /// Video bitrate in kbit/s (of the highest layer with simulcast); 0 = no video.
    pub video_kbps: u32,
    pub video_fps: u32,
    /// The camera as three RID layers, `q`, `h` and `f`, at 1/16, 1/4 and all of `video_kbps`.
    pub simulcast: bool,
    /// Audio levels of a talker (−12 … −30 dBov) rather than of someone quiet (−45 … −58 dBov,
    /// which the server does not count as speaking).
    pub loud: bool,
}

/// Simulcast layers, lowest first: RID and share of the configured video bitrate (a divisor).
const LAYERS: [(&str, u32); 3] = [("q", 16), ("h", 4), ("f", 1)];

pub type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

pub enum Command {
    Publish {
        participant: u32,
        user: String,
        spec: MediaSpec,
        reply: Reply<String>,
    },
    PublisherAnswer {
        participant: u32,
        sdp: String,
        reply: Reply<()>,
    },
    SubscriberOffer {
        participant: u32,
        sdp: String,
        /// When the offer arrived over the WebSocket, in stamp microseconds.
        arrived_us: u64,
        reply: Reply<String>,
    },
    Candidate {
        participant: u32,
        role: Role,
        init: RTCIceCandidateInit,
    },
    /// `call:join` was just sent: the first media packet after this ends the join.
    JoinStarted {
        participant: u32,
        at_us: u64,
    },
    Leave {
        participant: u32,
    },
    Snapshot {
        reply: oneshot::Sender<Record>,
    },
    /// Connections that are not up: (participant, role, ICE state, connection state).
    Stragglers {
        reply: oneshot::Sender<Vec<(u32, Role, String, String)>>,
    },
    Shutdown,
}

/// The sending side of a media thread.
#[derive(Clone)]
pub struct MediaHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
}

impl MediaHandle {
    pub fn send(&self, command: Command) {
        if self.tx.send(command).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// Starts a media thread.
/// Starts a media thread. `subscriber_reports`: subscribers send RTCP receiver reports.
pub fn spawn(
    index: usize,
    bind_ip: std::net::IpAddr,
    subscriber_reports: bool,
    window: Arc<Window>,
    live: SharedLive,
) -> std::io::Result<(MediaHandle, thread::JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name(format!("media-{index}"))
        .spawn(move || {
            let mut thread = MediaThread {
                poll,
                rx,
                commands: VecDeque::new(),
                bind_ip,
                subscriber_reports,
                window,
                live,
                slots: Vec::new(),
                by_participant: HashMap::new(),
                record: Record::default(),
                join_started: HashMap::new(),
            };
            thread.run();
        })?;
    Ok((MediaHandle { tx, waker }, handle))
}

/// A join in progress, in stamp microseconds: when `call:join` went out, when the first
/// subscriber offer arrived over the WebSocket and when this thread took it up, and when the
/// subscriber connection came up.
struct JoinTimer {
    started: u64,
    offer: Option<u64>,
    offer_handled: Option<u64>,
    connected: Option<u64>,
}

/// A participant's clients on this thread.
#[derive(Default)]
struct Participant {
    publisher: Option<usize>,
    subscriber: Option<usize>,
}

/// One client and its generator state.
struct Slot {
    participant: u32,
    client: Client,
    timeout: Option<Instant>,
    generator: Option<Generator>,
}

struct Generator {
    spec: MediaSpec,
    audio_seq: u32,
    next_audio: Instant,
    next_frame: Instant,
    /// The camera, or its simulcast layers lowest first.
    video: Vec<VideoStream>,
}

/// One video stream of a publisher: a camera, or one simulcast layer of it.
struct VideoStream {
    /// Index of its sender in the client.
    sender: usize,
    ssrc: u32,
    /// Stamp stream number.
    stream: u8,
    kbps: u32,
    /// Stamp sequence.
    seq: u32,
    /// The next frame is a keyframe (the first one, and after a request for this SSRC).
    keyframe: bool,
    /// Simulcast layers carry a 15-bit VP8 picture id and TL0PICIDX, as browsers' do, so the
    /// server's rewriting at a layer switch has something to rewrite.
    ids: Option<(u16, u8)>,
}

impl Generator {
    fn next_due(&self) -> Instant {
        match (self.spec.audio, !self.video.is_empty()) {
            (true, true) => self.next_audio.min(self.next_frame),
            (true, false) => self.next_audio,
            (false, _) => self.next_frame,
        }
    }
}

/// The RFC 6464 level byte of a generated audio packet: a deterministic wobble per publisher
/// and packet, so levels vary as speech does, within a talker's or a quiet range.
fn audio_level(loud: bool, publisher: u32, seq: u32) -> u8 {
    let wobble = (seq.wrapping_mul(7) ^ publisher.wrapping_mul(13)) % 19;
    if loud {
        // Voice activity flag, −12 … −30 dBov.
        0x80 | (12 + wobble) as u8
    } else {
        // −45 … −58 dBov: never three packets above the server's −40 dBov, never speaking.
        (45 + wobble % 14) as u8
    }
}

struct MediaThread {
    poll: Poll,
    rx: mpsc::Receiver<Command>,
    /// Commands taken off `rx` and not yet handled: at most [`COMMAND_BUDGET`] of them are
    /// handled per turn of the loop.
    commands: VecDeque<Command>,
    bind_ip: std::net::IpAddr,
    subscriber_reports: bool,
    window: Arc<Window>,
    live: SharedLive,
    slots: Vec<Option<Slot>>,
    by_participant: HashMap<u32, Participant>,
    record: Record,
    join_started: HashMap<u32, JoinTimer>,
}

impl MediaThread {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        let mut batch = RecvBatch::new(RECV_BUF_LEN);
        let mut ready: Vec<usize> = Vec::new();
        loop {
            self.commands.extend(self.rx.try_iter());
            let turn = Instant::now();
            while let Some(command) = self.next_command() {
                if !self.handle(command) {
                    self.close_all();
                    return;
                }
                if turn.elapsed() >= COMMAND_BUDGET {
                    break;
                }
            }
            let now = Instant::now();
            self.generate(now);
            self.fire_timers(now);
            let wait = if self.commands.is_empty() {
                self.next_deadline()
                    .map(|at| round_up(at.saturating_duration_since(Instant::now())))
            } else {
                Some(Duration::ZERO)
            };
            if self.poll.poll(&mut events, wait).is_err() {
                continue;
            }
            ready.clear();
            ready.extend(
                events
                    .iter()
                    .map(|e| e.token())
                    .filter(|t| *t != WAKER)
                    .map(|t| t.0),
            );
            for &slot in &ready {
                if let Some(Some(s)) = self.slots.get_mut(slot) {
                    s.client.read_socket(&mut batch);
                }
                self.service(slot);
            }
        }
    }

    /// The next command to handle: the earliest of a participant whose join is still in
    /// progress, else the earliest. A newcomer's offer then never waits behind the answers the
    /// others owe for the same burst of joins; each participant's own commands keep their order.
    fn next_command(&mut self) -> Option<Command> {
        next_command(&mut self.commands, |p| self.join_started.contains_key(&p))
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flatten()
            .flat_map(|s| {
                let generate = s
                    .generator
                    .as_ref()
                    .filter(|_| s.client.connected)
                    .map(Generator::next_due);
                s.timeout.into_iter().chain(generate)
            })
            .min()
    }

    fn fire_timers(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            let due = matches!(&self.slots[slot], Some(s) if s.timeout.is_some_and(|t| t <= now));
            if due {
                if let Some(Some(s)) = self.slots.get_mut(slot) {
                    s.client.handle_timeout(now);
                }
                self.service(slot);
            }
        }
    }

    /// Drains a client and records what it received.
    fn service(&mut self, slot: usize) {
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return;
        };
        let out = s.client.service();
        if out.connected_now {
            self.live.connected.fetch_add(1, Ordering::Relaxed);
            if s.generator.is_none()
                && let Some(t) = self.join_started.get_mut(&s.participant)
            {
                t.connected.get_or_insert(now_us());
            }
            if let Some(g) = s.generator.as_mut() {
                let now = Instant::now();
                g.next_audio = now;
                g.next_frame = now;
            }
        }
        if out.failed_now {
            self.record.failed_connections += 1;
        }
        if !out.keyframe_ssrcs.is_empty() {
            self.record.keyframe_requests += out.keyframe_ssrcs.len() as u64;
            if let Some(g) = s.generator.as_mut() {
                let known = out
                    .keyframe_ssrcs
                    .iter()
                    .any(|ssrc| g.video.iter().any(|v| v.ssrc == *ssrc));
                for v in &mut g.video {
                    // A request naming none of our SSRCs is answered on every stream.
                    v.keyframe |= !known || out.keyframe_ssrcs.contains(&v.ssrc);
                }
            }
        }
        let receiver = s.participant;
        if !s.client.received.is_empty() {
            let now = now_us();
            let n = s.client.received.len() as u64;
            if let Some(t) = self.join_started.remove(&receiver) {
                let ms = |at: u64| at.saturating_sub(t.started) as f64 / 1000.0;
                let step = |at: Option<u64>| at.map_or(f64::NAN, ms);
                self.record.joins.push(JoinTimes {
                    first_packet: ms(now),
                    offer: step(t.offer),
                    offer_handled: step(t.offer_handled),
                    connected: step(t.connected),
                });
                self.live.joins.fetch_add(1, Ordering::Relaxed);
            }
            for (payload, arrived) in s.client.received.drain(..) {
                let times = Received {
                    arrived_us: us_at(arrived),
                    read_us: now,
                };
                self.record
                    .on_received(receiver, &payload, times, &self.window);
            }
            self.live.received.fetch_add(n, Ordering::Relaxed);
        }
        s.timeout = s.client.poll_timeout();
    }

    /// Sends every packet that is due on connected publishers.
    fn generate(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            let Some(Some(s)) = self.slots.get_mut(slot) else {
                continue;
            };
            let Some(g) = s.generator.as_mut() else {
                continue;
            };
            if !s.client.connected {
                continue;
            }
            let mut sent = 0u64;
            while g.spec.audio && g.next_audio <= now {
                g.next_audio += AUDIO_INTERVAL;
                let stamp = Stamp {
                    sent_us: now_us(),
                    publisher: s.participant,
                    stream: STREAM_AUDIO,
                    seq: g.audio_seq,
                };
                let level = audio_level(g.spec.loud, s.participant, g.audio_seq);
                g.audio_seq += 1;
                let mut payload = vec![0xF8u8; AUDIO_PAYLOAD];
                stamp.write(&mut payload);
                if s.client
                    .send(
                        0,
                        now,
                        Bytes::from(payload),
                        true,
                        AUDIO_TS_STEP,
                        Some(level),
                    )
                    .is_ok()
                {
                    self.record.on_sent(&stamp, &self.window);
                    sent += 1;
                }
            }
            while !g.video.is_empty() && g.next_frame <= now {
                let fps = g.spec.video_fps.max(1);
                g.next_frame += Duration::from_micros(1_000_000 / u64::from(fps));
                for v in &mut g.video {
                    let key = std::mem::take(&mut v.keyframe);
                    if key {
                        self.record.keyframes_sent += 1;
                    }
                    let frame_bytes = (v.kbps as usize * 1000 / 8 / fps as usize).max(64);
                    let packets = frame_bytes.div_ceil(VIDEO_MTU_PAYLOAD);
                    let size = (frame_bytes / packets).max(32);
                    for part in 0..packets {
                        let stamp = Stamp {
                            sent_us: now_us(),
                            publisher: s.participant,
                            stream: v.stream,
                            seq: v.seq,
                        };
                        v.seq += 1;
                        let payload = vp8_payload(part == 0, key, size, v.ids, &stamp);
                        let last = part + 1 == packets;
                        if s.client
                            .send(v.sender, now, payload, last, 90_000 / fps, None)
                            .is_ok()
                        {
                            self.record.on_sent(&stamp, &self.window);
                            sent += 1;
                        }
                    }
                    if let Some((picture_id, tl0)) = v.ids.as_mut() {
                        *picture_id = picture_id.wrapping_add(1) & 0x7fff;
                        *tl0 = tl0.wrapping_add(1);
                    }
                }
            }
            if sent > 0 {
                self.live.sent.fetch_add(sent, Ordering::Relaxed);
                self.service(slot);
            }
        }
    }

    /// Returns false on shutdown.
    fn handle(&mut self, command: Command) -> bool {
        let now = Instant::now();
        match command {
            Command::Publish {
                participant,
                user,
                spec,
                reply,
            } => {
                let result = self.publish(participant, &user, spec, now);
                let _ = reply.send(result);
            }
            Command::PublisherAnswer {
                participant,
                sdp,
                reply,
            } => {
                let result = match self.slot_of(participant, Role::Publisher) {
                    Some(slot) => {
                        let r = self.client(slot).map(|c| c.accept_answer(now, sdp));
                        self.service(slot);
                        r.unwrap_or(Err(ClientError::State("no publisher")))
                    }
                    None => Err(ClientError::State("no publisher")),
                };
                let _ = reply.send(result);
            }
            Command::SubscriberOffer {
                participant,
                sdp,
                arrived_us,
                reply,
            } => {
                let result = self.subscriber_offer(participant, sdp, arrived_us, now);
                let _ = reply.send(result);
            }
            Command::Candidate {
                participant,
                role,
                init,
            } => {
                if let Some(slot) = self.slot_of(participant, role) {
                    if let Some(c) = self.client(slot) {
                        c.add_remote_candidate(init);
                    }
                    self.service(slot);
                }
            }
            Command::JoinStarted { participant, at_us } => {
                self.join_started.insert(
                    participant,
                    JoinTimer {
                        started: at_us,
                        offer: None,
                        offer_handled: None,
                        connected: None,
                    },
                );
            }
            Command::Leave { participant } => self.leave(participant),
            Command::Snapshot { reply } => {
                let _ = reply.send(self.record.clone());
            }
            Command::Stragglers { reply } => {
                let list = self
                    .by_participant
                    .iter()
                    .flat_map(|(p, slots)| {
                        [
                            (Role::Publisher, slots.publisher),
                            (Role::Subscriber, slots.subscriber),
                        ]
                        .into_iter()
                        .filter_map(move |(role, slot)| Some((*p, role, slot?)))
                    })
                    .filter_map(|(p, role, slot)| {
                        let c = &self.slots.get(slot)?.as_ref()?.client;
                        (!c.connected).then(|| (p, role, c.ice_state.clone(), c.pc_state.clone()))
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Shutdown => return false,
        }
        true
    }

    fn client(&mut self, slot: usize) -> Option<&mut Client> {
        self.slots
            .get_mut(slot)
            .and_then(|s| s.as_mut())
            .map(|s| &mut s.client)
    }

    fn slot_of(&self, participant: u32, role: Role) -> Option<usize> {
        let p = self.by_participant.get(&participant)?;
        match role {
            Role::Publisher => p.publisher,
            Role::Subscriber => p.subscriber,
        }
    }

    fn insert(&mut self, slot: Slot) -> Result<usize, ClientError> {
        let index = match self.slots.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let mut slot = slot;
        self.poll
            .registry()
            .register(&mut slot.client.socket, Token(index), Interest::READABLE)?;
        self.slots[index] = Some(slot);
        Ok(index)
    }

    fn publish(
        &mut self,
        participant: u32,
        user: &str,
        spec: MediaSpec,
        now: Instant,
    ) -> Result<String, ClientError> {
        let mut client = Client::new(Role::Publisher, self.bind_ip, now, false)?;
        // SSRCs unique per participant, so a receiver can tell streams apart even unstamped.
        let base = 0x1000_0000 + participant * 16;
        if spec.audio {
            client.add_track(user, "microphone", RtpCodecKind::Audio, &[(base, None)])?;
        }
        let mut video = Vec::new();
        if spec.video_kbps > 0 {
            let first_sender = client.senders.len();
            let layers: Vec<(u32, Option<&'static str>, u32)> = if spec.simulcast {
                (0u32..)
                    .zip(LAYERS)
                    .map(|(i, (rid, share))| (base + 1 + i, Some(rid), spec.video_kbps / share))
                    .collect()
            } else {
                vec![(base + 1, None, spec.video_kbps)]
            };
            let encodings: Vec<(u32, Option<&'static str>)> =
                layers.iter().map(|&(ssrc, rid, _)| (ssrc, rid)).collect();
            client.add_track(user, "camera", RtpCodecKind::Video, &encodings)?;
            for (i, &(ssrc, _, kbps)) in layers.iter().enumerate() {
                video.push(VideoStream {
                    sender: first_sender + i,
                    ssrc,
                    stream: STREAM_VIDEO + i as u8,
                    kbps: kbps.max(1),
                    seq: 0,
                    keyframe: true,
                    // Far apart per layer, as separate encoders' would be.
                    ids: spec
                        .simulcast
                        .then(|| ((100 + 9000 * i as u16) & 0x7fff, 10 + 80 * i as u8)),
                });
            }
        }
        let sdp = client.offer(now)?;
        let slot = self.insert(Slot {
            participant,
            client,
            timeout: None,
            generator: Some(Generator {
                spec,
                audio_seq: 0,
                next_audio: now,
                next_frame: now,
                video,
            }),
        })?;
        self.by_participant
            .entry(participant)
            .or_default()
            .publisher = Some(slot);
        self.service(slot);
        Ok(sdp)
    }

    fn subscriber_offer(
        &mut self,
        participant: u32,
        sdp: String,
        arrived_us: u64,
        now: Instant,
    ) -> Result<String, ClientError> {
        if let Some(t) = self.join_started.get_mut(&participant) {
            t.offer.get_or_insert(arrived_us);
            t.offer_handled.get_or_insert(now_us());
        }
        let slot = match self.slot_of(participant, Role::Subscriber) {
            Some(slot) => slot,
            None => {
                let client =
                    Client::new(Role::Subscriber, self.bind_ip, now, self.subscriber_reports)?;
                let slot = self.insert(Slot {
                    participant,
                    client,
                    timeout: None,
                    generator: None,
                })?;
                self.by_participant
                    .entry(participant)
                    .or_default()
                    .subscriber = Some(slot);
                slot
            }
        };
        let answer = self
            .client(slot)
            .ok_or(ClientError::State("no subscriber"))?
            .answer(now, sdp);
        self.service(slot);
        answer
    }

    fn leave(&mut self, participant: u32) {
        self.join_started.remove(&participant);
        let Some(p) = self.by_participant.remove(&participant) else {
            return;
        };
        for slot in [p.publisher, p.subscriber].into_iter().flatten() {
            if let Some(mut s) = self.slots.get_mut(slot).and_then(Option::take) {
                let _ = self.poll.registry().deregister(&mut s.client.socket);
                if s.client.connected {
                    self.live.connected.fetch_sub(1, Ordering::Relaxed);
                }
                s.client.close();
            }
        }
    }

    fn close_all(&mut self) {
        let participants: Vec<u32> = self.by_participant.keys().copied().collect();
        for p in participants {
            self.leave(p);
        }
    }
}

/// A generated VP8 packet: payload descriptor and frame tag where a depacketizer looks, filler,
/// and the stamp at the tail. With `ids` (picture id, TL0PICIDX) the descriptor carries them, as
/// a browser's simulcast layers do; without, it is the one-byte descriptor.
fn vp8_payload(
    first: bool,
    key: bool,
    size: usize,
    ids: Option<(u16, u8)>,
    stamp: &Stamp,
) -> Bytes {
    // Frame tag (P=0: key, then the start code and a size) or an inter frame's tag.
    const KEY_TAG: &[u8] = &[0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
    const DELTA_TAG: &[u8] = &[0x01, 0x00, 0x00];
    let mut payload = Vec::with_capacity(size.max(32) + crate::stamp::STAMP_LEN);
    match ids {
        // X, S on a frame's first packet, PID 0; I (15-bit picture id), L, T; TID 0, Y.
        Some((picture_id, tl0)) => {
            let [hi, lo] = picture_id.to_be_bytes();
            payload.extend_from_slice(&[
                if first { 0x90 } else { 0x80 },
                0xe0,
                0x80 | hi,
                lo,
                tl0,
                0x20,
            ]);
        }
        None => payload.push(if first { 0x10 } else { 0x00 }),
    }
    if first {
        payload.extend_from_slice(if key { KEY_TAG } else { DELTA_TAG });
    }
    let len = size.max(payload.len() + crate::stamp::STAMP_LEN);
    payload.resize(len, 0x42);
    stamp.write(&mut payload);
    Bytes::from(payload)
}

/// The earliest command of a participant that `joining` names, else the earliest: a
/// participant's own commands keep their order, since its earliest is the one found.
fn next_command(
    commands: &mut VecDeque<Command>,
    joining: impl Fn(u32) -> bool,
) -> Option<Command> {
    let first_joining = commands
        .iter()
        .position(|c| command_participant(c).is_some_and(&joining));
    commands.remove(first_joining.unwrap_or(0))
}

/// The participant a command concerns, if any.
fn command_participant(command: &Command) -> Option<u32> {
    match command {
        Command::Publish { participant, .. }
        | Command::PublisherAnswer { participant, .. }
        | Command::SubscriberOffer { participant, .. }
        | Command::Candidate { participant, .. }
        | Command::JoinStarted { participant, .. }
        | Command::Leave { participant } => Some(*participant),
        Command::Snapshot { .. } | Command::Stragglers { .. } | Command::Shutdown => None,
    }
}

/// How long one turn of a media thread's loop may spend on commands (mostly answering the
/// server's offers) before it serves its sockets and timers again. When 50 people join within a
/// second, every join renegotiates everyone, and each answer to an offer of up to 98 m-lines
/// takes the thread several milliseconds: handled all at once, they held the newcomers' ICE
/// checks and DTLS flights back by 250-300 ms per round trip, and the join time measured the
/// load generator. The others' answers only wait a turn.
const COMMAND_BUDGET: Duration = Duration::from_millis(2);

fn round_up(d: Duration) -> Duration {
    let ticks = d.as_nanos().div_ceil(TICK.as_nanos());
    TICK * u32::try_from(ticks).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of joins: the others' renegotiation answers wait while a joining participant's
    /// commands go first, each participant's in the order they came.
    #[test]
    fn a_joining_participants_commands_go_first_in_their_order() {
        let offer = |participant: u32| Command::SubscriberOffer {
            participant,
            sdp: String::new(),
            arrived_us: 0,
            reply: oneshot::channel().0,
        };
        let mut commands: VecDeque<Command> = [
            offer(1),
            Command::Leave { participant: 2 },
            offer(7),
            Command::Snapshot {
                reply: oneshot::channel().0,
            },
            Command::Leave { participant: 7 },
            offer(9),
            offer(3),
        ]
        .into();
        let joining = |p: u32| p == 7 || p == 9;
        let order: Vec<(&str, Option<u32>)> =
            std::iter::from_fn(|| next_command(&mut commands, joining))
                .map(|c| {
                    let kind = match c {
                        Command::SubscriberOffer { .. } => "offer",
                        Command::Leave { .. } => "leave",
                        Command::Snapshot { .. } => "snapshot",
                        _ => "other",
                    };
                    (kind, command_participant(&c))
                })
                .collect();
        assert_eq!(
            order,
            [
                ("offer", Some(7)),
                ("leave", Some(7)),
                ("offer", Some(9)),
                ("offer", Some(1)),
                ("leave", Some(2)),
                ("snapshot", None),
                ("offer", Some(3)),
            ]
        );
    }

    #[test]
    fn vp8_packets_keep_their_head_and_carry_the_stamp() {
        let stamp = Stamp {
            sent_us: 5,
            publisher: 1,
            stream: STREAM_VIDEO,
            seq: 9,
        };
        for ids in [None, Some((0x1234, 7))] {
            let key = vp8_payload(true, true, 500, ids, &stamp);
            assert_eq!(key.len(), 500);
            assert!(confab_bot::media::vp8_is_keyframe(&key), "{ids:?}");
            assert!(!confab_bot::media::vp8_is_keyframe(&vp8_payload(
                true, false, 500, ids, &stamp
            )));
            assert!(!confab_bot::media::vp8_is_keyframe(&vp8_payload(
                false, true, 500, ids, &stamp
            )));
            assert_eq!(Stamp::read(&key), Some(stamp));
        }
        // The same bytes as before for a single layer: descriptor 0x10, then the key frame tag.
        let plain = vp8_payload(true, true, 500, None, &stamp);
        assert_eq!(&plain[..4], &[0x10, 0x00, 0x00, 0x00]);
        let layered = vp8_payload(true, false, 500, Some((0x1234, 7)), &stamp);
        assert_eq!(&layered[..7], &[0x90, 0xe0, 0x92, 0x34, 7, 0x20, 0x01]);
    }

    #[test]
    fn talkers_speak_and_the_others_stay_under_the_speaking_threshold() {
        for seq in 0..200 {
            for publisher in 0..50 {
                let loud = audio_level(true, publisher, seq);
                assert!(loud & 0x80 != 0 && (12..=30).contains(&(loud & 0x7f)));
                let quiet = audio_level(false, publisher, seq);
                assert!((45..=58).contains(&quiet), "{quiet}");
            }
        }
        // Levels vary from packet to packet.
        assert_ne!(audio_level(true, 3, 0), audio_level(true, 3, 1));
    }

    #[test]
    fn waits_round_up_to_the_tick() {
        assert_eq!(round_up(Duration::from_micros(1)), TICK);
        assert_eq!(round_up(Duration::ZERO), Duration::ZERO);
        assert_eq!(round_up(Duration::from_micros(1500)), TICK * 2);
    }
}
