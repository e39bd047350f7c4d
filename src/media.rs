//! The bridge between signaling and the media engine.
//!
//! Signaling decides who is joined; the engine forwards media. This module carries decisions
//! one way (a join gives the participant a place in the engine's room, a leave frees it) and
//! engine events the other (a subscriber offer becomes `rtc:tracks` + `rtc:offer` on the
//! participant's socket, a connected peer keeps its user present). It also answers the
//! `rtc:*` requests of contract section 6.

use std::sync::Arc;

use confab_sfu::{
    EngineError, EngineEvent, EngineEvents, ForwardedTrack, MediaEngine, MediaKind, PeerRole,
    QualityDirection, QualityReport, RoomId, TrackSource, VideoQuality as EngineQuality,
    server_candidates,
};
use confab_signaling::protocol::{
    self, IceCandidate, PeerRole as WirePeerRole, VideoQuality, VideoSource,
};
use confab_signaling::{Actor, AdminMute, Call, CallId, ErrorCode, SignalingError, UserId};
use dashmap::DashMap;
use serde_json::{Value, json};

use crate::calls::{CallResult, CallService, RosterChange, RosterChanges, now_ms};
use crate::delivery::{Delivery, Frame, Hub, Reply, SocketId};
use crate::metrics::{Metrics, role_label};
use crate::quality::{QualitySummary, direction_name};
use crate::store::{QualityDirection as StoredDirection, QualitySample};
use crate::writer::HistoryWriter;

/// One joined participant's media, as far as signaling needs to know it.
#[derive(Default)]
struct Session {
    /// The socket that joined or last negotiated: `rtc:*` messages go there only, so a
    /// user's other devices never see a negotiation that is not theirs. `None` (joined over
    /// REST) sends them to every socket of the user.
    socket: Option<SocketId>,
    /// What the latest subscriber offer carries, resent when only `muted` changes.
    tracks: Vec<ForwardedTrack>,
    /// The subscriber offer not answered yet: sent again when the participant re-joins
    /// from a new socket, since the one it went to may be gone.
    pending_offer: Option<String>,
    /// Which of the two peer connections are connected, so each is counted once.
    connected: [bool; 2],
    /// The interval's quality, sent as `call:quality` and then started afresh.
    quality: QualitySummary,
    /// The latest round-trip time measured on either connection: both cross the same path,
    /// so it stands for a direction whose reports carry none.
    rtt_ms: f64,
}

pub struct MediaBridge {
    engine: MediaEngine,
    calls: Arc<CallService>,
    /// This node's sockets, told when a participant's peer connections come and go.
    hub: Arc<Hub>,
    /// Where answers and media events go, wherever the participant's socket is.
    delivery: Arc<dyn Delivery>,
    metrics: Arc<Metrics>,
    writer: HistoryWriter,
    /// How often `call:quality` goes out for each joined participant (contract: every 5 s).
    quality_every: std::time::Duration,
    sessions: DashMap<(CallId, UserId), Session>,
    /// Sources an admin muted, held in the engine until the participant switches them on.
    held: DashMap<(CallId, UserId), Vec<TrackSource>>,
}

fn room(call_id: CallId) -> RoomId {
    RoomId(call_id)
}

fn role_index(role: PeerRole) -> usize {
    match role {
        PeerRole::Publisher => 0,
        PeerRole::Subscriber => 1,
    }
}

fn engine_role(role: WirePeerRole) -> PeerRole {
    match role {
        WirePeerRole::Publisher => PeerRole::Publisher,
        WirePeerRole::Subscriber => PeerRole::Subscriber,
    }
}

/// Maps engine refusals to the contract's codes; the engine's own faults are `INTERNAL`.
fn engine_error(e: EngineError) -> SignalingError {
    let code = match &e {
        EngineError::InvalidSdp(_) | EngineError::TooManyTracks { .. } => {
            ErrorCode::InvalidArgument
        }
        EngineError::NoOfferPending | EngineError::UnknownParticipant { .. } => {
            ErrorCode::InvalidState
        }
        _ => {
            tracing::error!(error = %e, "media engine failed");
            return SignalingError::new(ErrorCode::Internal, "the media engine failed");
        }
    };
    SignalingError::new(code, e.to_string())
}

impl MediaBridge {
    pub fn new(
        engine: MediaEngine,
        calls: Arc<CallService>,
        hub: Arc<Hub>,
        delivery: Arc<dyn Delivery>,
        metrics: Arc<Metrics>,
        writer: HistoryWriter,
        quality_every: std::time::Duration,
    ) -> Arc<MediaBridge> {
        Arc::new(MediaBridge {
            engine,
            calls,
            hub,
            delivery,
            metrics,
            writer,
            quality_every,
            sessions: DashMap::new(),
            held: DashMap::new(),
        })
    }

    pub fn engine(&self) -> &MediaEngine {
        &self.engine
    }

    /// Joined participants the bridge follows; leak tests expect 0 once everyone left.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Starts the tasks that follow the roster and the engine's events, and the one that
    /// sends `call:quality`.
    pub fn spawn(self: &Arc<Self>, roster: RosterChanges, events: EngineEvents) {
        tokio::spawn(self.clone().follow_roster(roster));
        tokio::spawn(self.clone().follow_engine(events));
        tokio::spawn(self.clone().announce_quality());
    }

    /// Routes this participant's `rtc:*` messages to `socket` from now on.
    pub fn bind_socket(&self, call_id: CallId, user: &UserId, socket: SocketId) {
        // The roster task may not have seen the join yet: whichever comes first creates it.
        let mut session = self.sessions.entry((call_id, user.clone())).or_default();
        let rebound = session.socket.is_some_and(|old| old != socket);
        session.socket = Some(socket);
        let resend = rebound
            .then(|| session.pending_offer.clone())
            .flatten()
            .map(|sdp| (self.tracks_frame(call_id, &session.tracks), sdp));
        drop(session);
        if let Some((tracks_frame, sdp)) = resend {
            self.send(user, Some(socket), &tracks_frame);
            self.send(user, Some(socket), &offer_frame(call_id, &sdp));
            for frame in candidate_frames(call_id, WirePeerRole::Subscriber, &sdp) {
                self.send(user, Some(socket), &frame);
            }
        }
    }

    /// `rtc:offer` for the publisher connection: the engine's answer goes back in the ack, and
    /// the server's candidates are trickled right after it.
    pub async fn offer(
        &self,
        actor: &Actor,
        socket: Option<SocketId>,
        call_id: CallId,
        target: WirePeerRole,
        sdp: String,
    ) -> CallResult<Reply> {
        let user = &actor.user_id;
        if target != WirePeerRole::Publisher {
            return Err(SignalingError::invalid_argument(
                "the server offers the subscriber connection; send rtc:offer for the publisher",
            ));
        }
        self.calls.require_joined(actor, call_id).await?;
        if let Some(socket) = socket {
            self.bind_socket(call_id, user, socket);
        }
        let answer = self
            .engine
            .publish(room(call_id), user.as_str().to_owned(), sdp)
            .await
            .map_err(engine_error)?;
        Ok(Reply {
            then: candidate_frames(call_id, WirePeerRole::Publisher, &answer),
            data: json!({ "sdp": answer }),
        })
    }

    /// `rtc:answer` to the server's subscriber offer.
    pub async fn answer(
        &self,
        actor: &Actor,
        call_id: CallId,
        target: WirePeerRole,
        sdp: String,
    ) -> CallResult<Value> {
        let user = &actor.user_id;
        if target != WirePeerRole::Subscriber {
            return Err(SignalingError::invalid_argument(
                "rtc:answer answers the server's subscriber offer; target must be subscriber",
            ));
        }
        self.calls.require_joined(actor, call_id).await?;
        self.engine
            .subscriber_answer(room(call_id), user.as_str().to_owned(), sdp)
            .await
            .map_err(engine_error)?;
        if let Some(mut session) = self.sessions.get_mut(&(call_id, user.clone())) {
            session.pending_offer = None;
        }
        Ok(json!({}))
    }

    /// `rtc:candidate`: trickled ICE. The server is ICE-lite and learns addresses from the
    /// client's checks, so end-of-candidates needs no action.
    pub async fn candidate(
        &self,
        actor: &Actor,
        call_id: CallId,
        target: WirePeerRole,
        candidate: Option<IceCandidate>,
    ) -> CallResult<Value> {
        let user = &actor.user_id;
        self.calls.require_joined(actor, call_id).await?;
        if let Some(candidate) = candidate {
            self.engine
                .add_remote_candidate(
                    room(call_id),
                    user.as_str().to_owned(),
                    engine_role(target),
                    candidate.candidate,
                )
                .await
                .map_err(engine_error)?;
        }
        Ok(json!({}))
    }

    /// `rtc:subscribe`: chooses the simulcast layer `user` receives of `publisher`'s camera or
    /// screen, or pauses it. The choice is kept by the engine for the pair, so it may precede
    /// the track; the layer changes at its next keyframe, after the ack.
    pub async fn subscribe(
        &self,
        actor: &Actor,
        call_id: CallId,
        publisher: &UserId,
        source: VideoSource,
        quality: VideoQuality,
    ) -> CallResult<Value> {
        let user = &actor.user_id;
        self.calls.require_joined(actor, call_id).await?;
        let in_call = self
            .calls
            .live_call(call_id)
            .is_some_and(|c| c.is_participant(publisher.as_str()));
        if !in_call {
            return Err(SignalingError::invalid_argument(format!(
                "{publisher} is not in this call"
            )));
        }
        if publisher == user {
            return Err(SignalingError::invalid_argument(
                "a participant does not receive its own video",
            ));
        }
        let source = match source {
            VideoSource::Camera => TrackSource::Camera,
            VideoSource::Screen => TrackSource::Screen,
        };
        let quality = match quality {
            VideoQuality::Off => EngineQuality::Off,
            VideoQuality::Low => EngineQuality::Low,
            VideoQuality::Medium => EngineQuality::Medium,
            VideoQuality::High => EngineQuality::High,
        };
        self.engine
            .set_video_quality(
                room(call_id),
                user.as_str().to_owned(),
                publisher.as_str().to_owned(),
                source,
                quality,
            )
            .await
            .map_err(engine_error)?;
        Ok(json!({}))
    }

    async fn follow_roster(self: Arc<Self>, mut changes: RosterChanges) {
        while let Some(change) = changes.recv().await {
            match change {
                RosterChange::Joined { call_id, user } => {
                    self.sessions.entry((call_id, user.clone())).or_default();
                    if let Err(e) = self
                        .engine
                        .join(room(call_id), user.as_str().to_owned())
                        .await
                    {
                        tracing::error!(%call_id, user = %user, error = %e, "media join failed");
                    }
                }
                RosterChange::Left { call_id, user } => {
                    // The engine forgets the participant's holds with it.
                    self.held.remove(&(call_id, user.clone()));
                    // After a leave the participant hears no further rtc:* messages.
                    if let Some((_, session)) = self.sessions.remove(&(call_id, user.clone())) {
                        for role in [PeerRole::Publisher, PeerRole::Subscriber] {
                            if session.connected[role_index(role)] {
                                self.peer_gone(&user, role);
                            }
                        }
                    }
                    if let Err(e) = self
                        .engine
                        .remove_participant(room(call_id), user.as_str().to_owned())
                        .await
                    {
                        tracing::debug!(%call_id, user = %user, error = %e, "media leave");
                    }
                }
                RosterChange::MediaChanged { call_id, user } => {
                    self.release_unmuted(call_id, &user).await;
                    self.resend_tracks(call_id);
                }
                RosterChange::Held {
                    call_id,
                    user,
                    mute,
                } => self.hold(call_id, &user, mute).await,
            }
        }
    }

    /// An admin mute: the engine stops forwarding those sources at once.
    async fn hold(&self, call_id: CallId, user: &UserId, mute: AdminMute) {
        let sources = [
            (mute.audio, TrackSource::Microphone),
            (mute.video, TrackSource::Camera),
            (mute.screen, TrackSource::Screen),
        ];
        for (muted, source) in sources {
            if muted != Some(true) {
                continue;
            }
            {
                let mut held = self.held.entry((call_id, user.clone())).or_default();
                if !held.contains(&source) {
                    held.push(source);
                }
            }
            if let Err(e) = self
                .engine
                .hold_source(room(call_id), user.as_str().to_owned(), source, true)
                .await
            {
                tracing::error!(%call_id, user = %user, error = %e, "holding a source failed");
            }
        }
    }

    /// A participant's own media change: each held source it switched on again is forwarded
    /// again (a muted source is unmuted only by the participant).
    async fn release_unmuted(&self, call_id: CallId, user: &UserId) {
        let Some(media) = self
            .calls
            .live_call(call_id)
            .and_then(|c| c.participant(user.as_str()).map(|p| p.media))
        else {
            return;
        };
        let on = |source: &TrackSource| match source {
            TrackSource::Microphone => !media.audio_muted,
            TrackSource::Camera => media.video_enabled,
            TrackSource::Screen => media.screen_sharing,
        };
        let released: Vec<TrackSource> = match self.held.get_mut(&(call_id, user.clone())) {
            Some(mut held) => {
                let released = held.iter().copied().filter(on).collect();
                held.retain(|s| !on(s));
                released
            }
            None => return,
        };
        for source in released {
            if let Err(e) = self
                .engine
                .hold_source(room(call_id), user.as_str().to_owned(), source, false)
                .await
            {
                tracing::error!(%call_id, user = %user, error = %e, "releasing a source failed");
            }
        }
    }

    async fn follow_engine(self: Arc<Self>, mut events: EngineEvents) {
        while let Some(event) = events.recv().await {
            match event {
                EngineEvent::SubscriberOffer {
                    room,
                    participant,
                    sdp,
                    tracks,
                } => self.subscriber_offer(room.0, participant, sdp, tracks),
                EngineEvent::PeerConnected {
                    room,
                    participant,
                    role,
                } => self.peer_connected(room.0, participant, role),
                EngineEvent::PeerFailed {
                    room,
                    participant,
                    role,
                }
                | EngineEvent::PeerClosed {
                    room,
                    participant,
                    role,
                } => self.peer_disconnected(room.0, participant, role),
                EngineEvent::Quality(report) => self.quality_report(report),
                EngineEvent::ActiveSpeakers { room, participants } => {
                    self.active_speakers(room.0, participants)
                }
                EngineEvent::TrackPublished { .. } => {}
            }
        }
    }

    fn subscriber_offer(
        &self,
        call_id: CallId,
        participant: String,
        sdp: String,
        tracks: Vec<ForwardedTrack>,
    ) {
        let Ok(user) = UserId::parse(&participant) else {
            return;
        };
        let Some(mut session) = self.sessions.get_mut(&(call_id, user.clone())) else {
            // Left in the meantime: no more rtc:* for them.
            return;
        };
        session.tracks = tracks;
        let socket = session.socket;
        let tracks_frame = self.tracks_frame(call_id, &session.tracks);
        let offer = offer_frame(call_id, &sdp);
        let candidates = candidate_frames(call_id, WirePeerRole::Subscriber, &sdp);
        session.pending_offer = Some(sdp);
        drop(session);
        self.send(&user, socket, &tracks_frame);
        self.send(&user, socket, &offer);
        for frame in &candidates {
            self.send(&user, socket, frame);
        }
    }

    /// `rtc:tracks` with the publishers' current mute state.
    fn tracks_frame(&self, call_id: CallId, tracks: &[ForwardedTrack]) -> Frame {
        let call = self.calls.live_call(call_id);
        let list: Vec<Value> = tracks
            .iter()
            .map(|t| {
                json!({
                    "track_id": t.track_id,
                    "stream_id": t.stream_id,
                    "user_id": t.publisher,
                    "kind": match t.kind { MediaKind::Audio => "audio", MediaKind::Video => "video" },
                    "source": source_name(t.source),
                    "muted": muted(call.as_ref(), t),
                })
            })
            .collect();
        Arc::from(protocol::event(
            "rtc:tracks",
            json!({ "call_id": call_id, "tracks": list }),
        ))
    }

    /// A media switch changed: every subscriber of that call gets the list again.
    fn resend_tracks(&self, call_id: CallId) {
        let targets: Vec<(UserId, Option<SocketId>, Vec<ForwardedTrack>)> = self
            .sessions
            .iter()
            .filter(|entry| entry.key().0 == call_id && !entry.tracks.is_empty())
            .map(|entry| (entry.key().1.clone(), entry.socket, entry.tracks.clone()))
            .collect();
        for (user, socket, tracks) in targets {
            let frame = self.tracks_frame(call_id, &tracks);
            self.send(&user, socket, &frame);
        }
    }

    /// To the bound socket, or to every socket of the user when there is none or it closed
    /// (the client that reconnects picks it up).
    fn send(&self, user: &UserId, socket: Option<SocketId>, frame: &Frame) {
        let delivered = socket.is_some_and(|id| self.delivery.to_socket(user.as_str(), id, frame));
        if !delivered {
            self.delivery.to_user(user.as_str(), frame);
        }
    }

    /// One RTCP-derived report: into the histograms, the history store and the participant's
    /// summary for the next `call:quality`.
    fn quality_report(&self, report: QualityReport) {
        let Ok(user) = UserId::parse(&report.participant) else {
            return;
        };
        let call_id = report.room.0;
        let Some(mut session) = self.sessions.get_mut(&(call_id, user.clone())) else {
            return;
        };
        if let Some(rtt) = report.rtt_ms {
            session.rtt_ms = rtt;
        }
        let rtt_ms = session.rtt_ms;
        session.quality.add(&report, rtt_ms);
        drop(session);

        let direction = direction_name(report.direction);
        let m = &self.metrics;
        m.packet_loss_ratio
            .with_label_values(&[direction])
            .observe(report.packet_loss);
        m.jitter_seconds
            .with_label_values(&[direction])
            .observe(report.jitter_ms / 1000.0);
        if let Some(rtt) = report.rtt_ms {
            m.rtt_seconds
                .with_label_values(&[direction])
                .observe(rtt / 1000.0);
        }
        self.writer.quality_sample(QualitySample {
            call_id,
            user_id: user,
            direction: match report.direction {
                QualityDirection::Inbound => StoredDirection::Inbound,
                QualityDirection::Outbound => StoredDirection::Outbound,
            },
            kind: match report.kind {
                MediaKind::Audio => confab_signaling::MediaKind::Audio,
                MediaKind::Video => confab_signaling::MediaKind::Video,
            },
            at: now_ms(),
            bitrate_bps: i64::try_from(report.bitrate_bps).unwrap_or(i64::MAX),
            packet_loss: report.packet_loss,
            jitter_ms: report.jitter_ms,
            rtt_ms,
        });
    }

    /// Every quality interval, each participant with fresh reports is scored and announced
    /// to everyone joined in its call.
    async fn announce_quality(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.quality_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let fresh: Vec<(CallId, UserId, QualitySummary)> = self
                .sessions
                .iter_mut()
                .filter_map(|mut entry| {
                    let summary = entry.quality;
                    if !summary.fresh {
                        return None;
                    }
                    entry.quality.fresh = false;
                    Some((entry.key().0, entry.key().1.clone(), summary))
                })
                .collect();
            for (call_id, user, summary) in fresh {
                let Some(call) = self.calls.live_call(call_id) else {
                    continue;
                };
                let mut data = json!({
                    "call_id": call_id,
                    "user_id": user,
                    "score": summary.score(),
                    "packet_loss": summary.packet_loss,
                    "jitter_ms": summary.jitter_ms,
                    "rtt_ms": summary.rtt_ms,
                    "bitrate_bps": summary.bitrate_bps,
                });
                if let Some(bps) = summary.available_bitrate_bps {
                    data["available_bitrate_bps"] = json!(bps);
                }
                if let Some(layers) = summary.video_layers {
                    data["video_layers"] = json!({
                        "off": layers.off,
                        "low": layers.low,
                        "medium": layers.medium,
                        "high": layers.high,
                    });
                }
                let frame: Frame = Arc::from(protocol::event("call:quality", data));
                for p in call.joined() {
                    self.delivery.to_user(p.user_id.as_str(), &frame);
                }
            }
        }
    }

    /// `call:active-speakers`: the engine sends a list only when it changed; the call service
    /// keeps it for later joiners and sends it on.
    fn active_speakers(&self, call_id: CallId, participants: Vec<String>) {
        self.calls.announce_active_speakers(call_id, participants);
    }

    fn peer_connected(&self, call_id: CallId, participant: String, role: PeerRole) {
        let Ok(user) = UserId::parse(&participant) else {
            return;
        };
        let Some(mut session) = self.sessions.get_mut(&(call_id, user.clone())) else {
            return;
        };
        let slot = &mut session.connected[role_index(role)];
        if !*slot {
            *slot = true;
            self.hub.peer_up(user.as_str());
            self.metrics
                .peer_connections
                .with_label_values(&[role_label(role)])
                .inc();
        }
    }

    fn peer_disconnected(&self, call_id: CallId, participant: String, role: PeerRole) {
        let Ok(user) = UserId::parse(&participant) else {
            return;
        };
        let was_connected = self
            .sessions
            .get_mut(&(call_id, user.clone()))
            .map(|mut s| std::mem::replace(&mut s.connected[role_index(role)], false))
            .unwrap_or(false);
        if was_connected {
            self.peer_gone(&user, role);
        }
    }

    fn peer_gone(&self, user: &UserId, role: PeerRole) {
        self.metrics
            .peer_connections
            .with_label_values(&[role_label(role)])
            .dec();
        if let Some(epoch) = self.hub.peer_down(user.as_str()) {
            self.calls.user_became_absent(user, epoch);
        }
    }
}

fn offer_frame(call_id: CallId, sdp: &str) -> Frame {
    Arc::from(protocol::event(
        "rtc:offer",
        json!({ "call_id": call_id, "target": "subscriber", "sdp": sdp }),
    ))
}

/// The server's candidates for the connection `sdp` describes, as `rtc:candidate` events, and
/// the `null` that ends them. They are in the SDP already (every m-section); trickling them too
/// serves clients that take candidates from `rtc:candidate` only.
fn candidate_frames(call_id: CallId, target: WirePeerRole, sdp: &str) -> Vec<Frame> {
    let target = match target {
        WirePeerRole::Publisher => "publisher",
        WirePeerRole::Subscriber => "subscriber",
    };
    let candidates = server_candidates(sdp);
    if candidates.is_empty() {
        return Vec::new();
    }
    candidates
        .into_iter()
        .map(|c| {
            json!({
                "candidate": c.candidate,
                "sdp_mid": c.sdp_mid,
                "sdp_mline_index": c.sdp_mline_index,
            })
        })
        .chain([Value::Null])
        .map(|candidate| {
            Arc::from(protocol::event(
                "rtc:candidate",
                json!({ "call_id": call_id, "target": target, "candidate": candidate }),
            ))
        })
        .collect()
}

fn source_name(source: TrackSource) -> &'static str {
    match source {
        TrackSource::Microphone => "microphone",
        TrackSource::Camera => "camera",
        TrackSource::Screen => "screen",
    }
}

/// A track is muted when its publisher switched that source off.
fn muted(call: Option<&Call>, track: &ForwardedTrack) -> bool {
    let Some(media) = call
        .and_then(|c| c.participant(&track.publisher))
        .map(|p| p.media)
    else {
        return false;
    };
    match track.source {
        TrackSource::Microphone => media.audio_muted,
        TrackSource::Camera => !media.video_enabled,
        TrackSource::Screen => !media.screen_sharing,
    }
}
