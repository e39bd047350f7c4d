//! The call service: runs signaling's decisions and makes them last.
//!
//! Every operation follows the same three steps. Load what the decision needs from the store
//! (a conversation), decide under the call book's lock (synchronous, microseconds), then commit
//! the outcome outside the lock: persist the snapshot, count it, and hand its events on. The
//! book is one lock for all calls because its invariants span calls (one joined call per
//! user, one live call per conversation); nothing slow ever runs while it is held.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use confab_signaling::book::Initiate;
use confab_signaling::events::CallEvent;
use confab_signaling::protocol;
use confab_signaling::{
    Actor, AdminMute, Call, CallBook, CallId, CallKind, CallStatus, Conversation, ConversationId,
    EndReason, ErrorCode, LeaveReason, MediaKind, MediaPatch, Outcome, ParticipantStatus,
    SignalingError, UserId,
};
use dashmap::DashMap;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use crate::delivery::{Delivery, Frame, Hub, Registration};
use crate::drain::Drain;
use crate::metrics::Metrics;
use crate::store::{MediaEvent, Store};
use crate::webhooks::Webhooks;
use crate::writer::HistoryWriter;

/// The current time at the store's precision (milliseconds), so that a call read back from
/// either backend equals the one that was written.
pub fn now_ms() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let ms = now.unix_timestamp_nanos() / 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).unwrap_or(now)
}

/// What the media side must follow, in decision order: who is joined in which call, and
/// when someone's media switches changed (which changes the `muted` flags of `rtc:tracks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterChange {
    Joined {
        call_id: CallId,
        user: UserId,
    },
    Left {
        call_id: CallId,
        user: UserId,
    },
    MediaChanged {
        call_id: CallId,
        user: UserId,
    },
    /// An admin muted some of `user`'s sources: the engine stops forwarding them until the
    /// participant itself switches them on again.
    Held {
        call_id: CallId,
        user: UserId,
        mute: AdminMute,
    },
}

/// Receives [`RosterChange`]s; unbounded because they come one per decision, never per packet.
pub type RosterChanges = mpsc::UnboundedReceiver<RosterChange>;

/// What `POST /calls` answers: the call and which invitees could be rung right away.
pub struct Initiated {
    pub call: Call,
    pub online: Vec<UserId>,
    pub offline: Vec<UserId>,
}

pub struct InitiateRequest {
    pub conversation_id: Option<ConversationId>,
    pub invitees: Vec<UserId>,
    pub media: MediaKind,
    pub kind: Option<CallKind>,
}

/// What every call and media operation returns: the contract's error, whichever transport
/// (REST, WebSocket) carries it to the client.
pub type CallResult<T> = Result<T, SignalingError>;

pub struct CallService {
    book: Mutex<CallBook>,
    store: Store,
    writer: HistoryWriter,
    metrics: Arc<Metrics>,
    /// This node's sockets: registration and presence.
    hub: Arc<Hub>,
    /// Where events go, wherever the recipients' sockets are.
    delivery: Arc<dyn Delivery>,
    /// How long a joined participant with no socket keeps its seat.
    disconnect_grace: Duration,
    /// The latest `call:active-speakers` list of each live call, for whoever joins next.
    speakers: DashMap<CallId, Vec<String>>,
    /// Calls that ended but whose final snapshot may not be in the store yet: the book has
    /// already forgotten them, and a client told `call:ended` may read the call at once.
    ending: DashMap<CallId, Call>,
    /// Wakes the ring timer when a new deadline may be earlier than the one it sleeps on.
    deadlines_changed: Notify,
    /// The service itself, for the timers it spawns.
    me: Weak<CallService>,
    roster: mpsc::UnboundedSender<RosterChange>,
    /// Gets every transition, in decision order, and never makes it wait.
    webhooks: Webhooks,
    /// Whether the node still takes new calls.
    drain: Arc<Drain>,
}

/// Where the service's decisions go once made: the store and its writer, the sockets, the
/// webhooks and the metrics.
pub struct Outlets {
    pub store: Store,
    pub writer: HistoryWriter,
    pub metrics: Arc<Metrics>,
    pub hub: Arc<Hub>,
    pub delivery: Arc<dyn Delivery>,
    pub webhooks: Webhooks,
}

impl CallService {
    pub fn new(
        book: CallBook,
        outlets: Outlets,
        disconnect_grace: Duration,
        drain: Arc<Drain>,
    ) -> (Arc<CallService>, RosterChanges) {
        let Outlets {
            store,
            writer,
            metrics,
            hub,
            delivery,
            webhooks,
        } = outlets;
        let (roster, changes) = mpsc::unbounded_channel();
        let service = Arc::new_cyclic(|me| CallService {
            book: Mutex::new(book),
            store,
            writer,
            metrics,
            hub,
            delivery,
            disconnect_grace,
            speakers: DashMap::new(),
            ending: DashMap::new(),
            deadlines_changed: Notify::new(),
            me: me.clone(),
            roster,
            webhooks,
            drain,
        });
        (service, changes)
    }

    fn book(&self) -> MutexGuard<'_, CallBook> {
        // A panic while holding the lock cannot leave the book half-changed: every
        // transition is computed before it is applied. Keep serving.
        self.book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the book under its lock.
    fn read<T>(&self, f: impl FnOnce(&CallBook) -> T) -> T {
        f(&self.book())
    }

    /// Runs decisions under the lock and publishes their events before releasing it: event
    /// order on every socket is then the order of the decisions, whatever order the store
    /// writes finish in. Publishing only queues frames, it never waits on a socket.
    fn decide<T>(
        &self,
        f: impl FnOnce(&mut CallBook) -> T,
        outcomes: impl Fn(&T) -> Vec<&Outcome>,
    ) -> T {
        let mut book = self.book();
        let result = f(&mut book);
        for outcome in outcomes(&result) {
            if !outcome.call.status.is_live() {
                self.ending.insert(outcome.call.id, outcome.call.clone());
                self.speakers.remove(&outcome.call.id);
            }
            self.publish(outcome);
            self.webhooks
                .call_changed(outcome.before.as_ref(), &outcome.call);
        }
        self.metrics.calls_active.set(book.active_calls() as i64);
        self.metrics
            .participants_joined
            .set(book.joined_participants() as i64);
        result
    }

    /// One decision that may be refused.
    fn decide_one(
        &self,
        f: impl FnOnce(&mut CallBook) -> Result<Outcome, SignalingError>,
    ) -> Result<Outcome, SignalingError> {
        self.decide(f, |r| r.as_ref().map(|o| vec![o]).unwrap_or_default())
    }

    /// Serialises each event once and queues it for every socket of every recipient, and
    /// tells the media side whose seat changed.
    fn publish(&self, outcome: &Outcome) {
        self.follow_roster(outcome);
        for event in &outcome.events {
            let frame: Frame = Arc::from(protocol::event(
                event.type_name(),
                event.payload(&outcome.call),
            ));
            for user in event.recipients(outcome.before.as_ref(), &outcome.call) {
                self.delivery.to_user(user.as_str(), &frame);
            }
        }
        // Whoever takes a seat learns who is speaking now, after its other events.
        let mut speakers_frame = None;
        for (user, joined) in outcome.seat_changes() {
            if joined && outcome.call.status.is_live() {
                let frame = speakers_frame.get_or_insert_with(|| {
                    let current = self
                        .speakers
                        .get(&outcome.call.id)
                        .map(|s| s.clone())
                        .unwrap_or_default();
                    active_speakers_frame(outcome.call.id, &current)
                });
                self.delivery.to_user(user.as_str(), frame);
            }
        }
    }

    /// A new `call:active-speakers` list from the media engine: kept for later joiners, and
    /// sent to everyone joined now. Under the book's lock, like every transition, so a joiner
    /// gets either the list before this one and then this one, or this one alone.
    pub fn announce_active_speakers(&self, call_id: CallId, user_ids: Vec<String>) {
        let book = self.book();
        let Some(call) = book.get(call_id) else {
            return;
        };
        let frame = active_speakers_frame(call_id, &user_ids);
        self.speakers.insert(call_id, user_ids);
        for p in call.joined() {
            self.delivery.to_user(p.user_id.as_str(), &frame);
        }
    }

    /// `call:data`: relays `payload` from the actor to the users signaling names. Decided and
    /// queued under the book's lock, so it never reaches someone whose leave was already
    /// announced, and one sender's messages keep their order (its socket handles one request
    /// at a time).
    pub async fn relay_data(
        &self,
        actor: &Actor,
        call_id: CallId,
        payload: Value,
        to: Option<Vec<UserId>>,
    ) -> CallResult<()> {
        let sender = &actor.user_id;
        let result = {
            let book = self.book();
            book.data_recipients(call_id, sender, &payload, to.as_deref())
                .map(|recipients| {
                    let frame: Frame = Arc::from(protocol::event(
                        "call:data",
                        json!({ "call_id": call_id, "from": sender, "payload": payload }),
                    ));
                    for user in recipients {
                        self.delivery.to_user(user.as_str(), &frame);
                    }
                })
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => Err(self.explain(actor, call_id, e).await),
        }
    }

    fn follow_roster(&self, outcome: &Outcome) {
        let call_id = outcome.call.id;
        let send = |change| {
            // The receiver lives as long as the server; a closed channel means shutdown.
            let _ = self.roster.send(change);
        };
        for (user, joined) in outcome.seat_changes() {
            let user = user.clone();
            send(if joined {
                RosterChange::Joined { call_id, user }
            } else {
                RosterChange::Left { call_id, user }
            });
        }
        if let Some((user, _)) = &outcome.media_change {
            send(RosterChange::MediaChanged {
                call_id,
                user: user.clone(),
            });
        }
    }

    /// Registers a new socket of `user` and rings it for each call ringing the user now. The
    /// contract rings every socket of an online invitee; a device that connects during the ring
    /// would otherwise stay silent while the user's other devices ring. Registering under the
    /// book's lock, under which every transition publishes, gives the socket each
    /// `call:incoming` exactly once: from the transition if the socket came first, from here if
    /// not.
    pub fn register_socket(&self, user: &str) -> Registration {
        let book = self.book();
        let registration = self.hub.register(user);
        for call in book.calls_ringing(user) {
            let event = CallEvent::Incoming {
                user_ids: Vec::new(),
            };
            let frame: Frame = Arc::from(protocol::event(event.type_name(), event.payload(call)));
            self.delivery.to_socket(user, registration.id, &frame);
        }
        registration
    }

    pub fn joined_call_of(&self, user: &str) -> Option<CallId> {
        self.read(|book| book.joined_call_of(user))
    }

    /// Ringing and ongoing calls.
    pub fn live_call_count(&self) -> usize {
        self.read(|book| book.active_calls())
    }

    /// Ends every live call with reason `drained` and makes each ending durable; returns how
    /// many calls ended.
    pub async fn end_drained_calls(&self) -> usize {
        let now = now_ms();
        let outcomes = self.decide(|book| book.drain(now), |v| v.iter().collect());
        for outcome in &outcomes {
            self.commit(outcome).await;
        }
        outcomes.len()
    }

    /// The live call as it is now, if it is live.
    pub fn live_call(&self, call_id: CallId) -> Option<Call> {
        self.read(|book| book.get(call_id).cloned())
    }

    pub async fn initiate(&self, actor: &Actor, req: InitiateRequest) -> CallResult<Initiated> {
        let conversation = self.load_conversation(req.conversation_id.as_ref()).await?;
        let delivery = &self.delivery;
        let is_online = |user: &UserId| delivery.is_online(user.as_str());
        let now = now_ms();
        let outcome = self.decide_one(|book| {
            // A draining node refuses new calls; calls already live here may still be accepted
            // and joined until they end.
            self.drain.refuse_new_call()?;
            book.initiate(
                Initiate {
                    call_id: Uuid::new_v4(),
                    caller: actor.clone(),
                    invitees: req.invitees,
                    media: req.media,
                    kind: req.kind,
                    conversation_id: req.conversation_id,
                },
                conversation.as_ref(),
                &is_online,
                now,
            )
        })?;
        self.deadlines_changed.notify_one();
        self.commit(&outcome).await;
        let call = outcome.call;
        if call.status == CallStatus::Busy {
            return Err(
                SignalingError::new(ErrorCode::UserBusy, "the callee is in another call")
                    .with_call_id(call.id),
            );
        }
        let (online, offline) = call
            .participants
            .iter()
            .filter(|p| p.user_id != call.initiated_by)
            .map(|p| p.user_id.clone())
            .partition(|user| self.delivery.is_online(user.as_str()));
        Ok(Initiated {
            call,
            online,
            offline,
        })
    }

    /// Runs one operation on an existing call: decide at the current time, then commit or
    /// explain the refusal.
    async fn operate(
        &self,
        actor: &Actor,
        call_id: CallId,
        op: impl FnOnce(&mut CallBook, OffsetDateTime) -> Result<Outcome, SignalingError>,
    ) -> CallResult<Call> {
        let now = now_ms();
        let result = self.decide_one(|book| op(book, now));
        self.finish(actor, call_id, result).await
    }

    pub async fn accept(&self, actor: &Actor, call_id: CallId) -> CallResult<Call> {
        self.operate(actor, call_id, |book, now| book.accept(call_id, actor, now))
            .await
    }

    pub async fn reject(
        &self,
        actor: &Actor,
        call_id: CallId,
        reason: Option<String>,
    ) -> CallResult<Call> {
        self.operate(actor, call_id, |book, now| {
            book.reject(call_id, actor, reason, now)
        })
        .await
    }

    pub async fn join(&self, actor: &Actor, call_id: CallId) -> CallResult<Call> {
        let conversation_id = self
            .read(|book| book.get(call_id).map(|c| c.conversation_id.clone()))
            .flatten();
        let conversation = self.load_conversation(conversation_id.as_ref()).await?;
        self.operate(actor, call_id, |book, now| {
            book.join(call_id, actor, conversation.as_ref(), now)
        })
        .await
    }

    pub async fn leave(
        &self,
        actor: &Actor,
        call_id: CallId,
        reason: LeaveReason,
    ) -> CallResult<Call> {
        self.operate(actor, call_id, |book, now| {
            book.leave(call_id, &actor.user_id, reason, now)
        })
        .await
    }

    pub async fn end(
        &self,
        actor: &Actor,
        call_id: CallId,
        reason: Option<String>,
    ) -> CallResult<Call> {
        self.operate(actor, call_id, |book, now| {
            book.end(call_id, actor, reason, now)
        })
        .await
    }

    pub async fn set_media(
        &self,
        actor: &Actor,
        call_id: CallId,
        patch: MediaPatch,
    ) -> CallResult<Call> {
        self.operate(actor, call_id, |book, now| {
            book.set_media(call_id, &actor.user_id, patch, now)
        })
        .await
    }

    /// An admin removes a joined participant: it leaves with reason `removed`, and the media
    /// side closes its connections as for any leave.
    pub async fn remove(
        &self,
        actor: &Actor,
        call_id: CallId,
        subject: &UserId,
        reason: Option<String>,
    ) -> CallResult<Call> {
        let reason_given = reason.clone();
        let call = self
            .operate(actor, call_id, |book, now| {
                book.remove(call_id, actor, subject, reason, now)
            })
            .await?;
        tracing::info!(%call_id, by = %actor.user_id, user = %subject, "participant removed");
        let reason = reason_given.unwrap_or_else(|| LeaveReason::Removed.to_string());
        self.record_admin_action(
            actor,
            call_id,
            subject,
            "removed",
            json!({ "reason": reason }),
        )
        .await;
        Ok(call)
    }

    /// An admin mutes some of a joined participant's sources. The hold on the media side is
    /// queued under the book's lock, before the participant's next own media change can be.
    pub async fn admin_mute(
        &self,
        actor: &Actor,
        call_id: CallId,
        subject: &UserId,
        mute: AdminMute,
    ) -> CallResult<Call> {
        let call = self
            .operate(actor, call_id, |book, now| {
                let outcome = book.admin_mute(call_id, actor, subject, mute, now)?;
                let _ = self.roster.send(RosterChange::Held {
                    call_id,
                    user: subject.clone(),
                    mute,
                });
                Ok(outcome)
            })
            .await?;
        tracing::info!(%call_id, by = %actor.user_id, user = %subject, ?mute, "participant muted");
        let mut sources = serde_json::Map::new();
        for (key, muted) in [
            ("audio", mute.audio),
            ("video", mute.video),
            ("screen", mute.screen),
        ] {
            if muted == Some(true) {
                sources.insert(key.to_owned(), Value::Bool(true));
            }
        }
        self.record_admin_action(actor, call_id, subject, "muted", Value::Object(sources))
            .await;
        Ok(call)
    }

    /// Writes an admin action into the call's history before the admin gets its answer; a
    /// store failure is logged and counted, and the action still stands.
    async fn record_admin_action(
        &self,
        actor: &Actor,
        call_id: CallId,
        subject: &UserId,
        action: &'static str,
        detail: Value,
    ) {
        let record = crate::store::AdminAction {
            call_id,
            action,
            by: actor.user_id.clone(),
            user_id: subject.clone(),
            at: now_ms(),
            detail,
        };
        if let Err(e) = self.store.insert_admin_action(&record).await {
            tracing::warn!(%call_id, error = %e, "recording an admin action failed");
            self.metrics
                .store_write_failures_total
                .with_label_values(&["admin_action"])
                .inc();
        }
    }

    /// The admin actions recorded for a call, oldest first (`GET /calls/{id}/admin-actions`).
    pub async fn admin_actions(
        &self,
        call_id: CallId,
    ) -> CallResult<Vec<crate::store::StoredAdminAction>> {
        if self.find(call_id).await?.is_none() {
            return Err(call_not_found(call_id));
        }
        Ok(self.store.admin_actions(call_id).await?)
    }

    /// Every ringing or ongoing call, for `GET /admin/calls`.
    pub fn live_calls(&self) -> Vec<Call> {
        let mut calls: Vec<Call> = self.read(|book| book.live_calls().cloned().collect());
        calls.sort_by_key(|c| (c.created_at, c.id));
        calls
    }

    /// Joined participants over all live calls.
    pub fn joined_participants(&self) -> usize {
        self.read(|book| book.joined_participants())
    }

    /// A call as the actor may see it: live from the book, else from the history store.
    pub async fn get(&self, actor: &Actor, call_id: CallId) -> CallResult<Call> {
        let call = self
            .find(call_id)
            .await?
            .ok_or_else(|| call_not_found(call_id))?;
        if actor.admin || call.is_participant(actor.user_id.as_str()) {
            Ok(call)
        } else {
            Err(SignalingError::forbidden(
                "you are not a participant of this call",
            ))
        }
    }

    pub fn active_call_of_conversation(&self, conversation: &str) -> Option<Call> {
        self.read(|book| book.active_call_of_conversation(conversation).cloned())
    }

    /// The newest known version of a stored call: a history row can trail the decision that
    /// changed it by one store write, and a client told `call:ended` must not read `ringing`.
    pub fn freshest(&self, stored: Call) -> Call {
        let known = self
            .read(|book| book.get(stored.id).cloned())
            .or_else(|| self.ending.get(&stored.id).map(|c| c.clone()));
        match known {
            Some(call) if call.version > stored.version => call,
            _ => stored,
        }
    }

    /// A call wherever it is: live in the book, just ended, or in the history store.
    async fn find(&self, call_id: CallId) -> CallResult<Option<Call>> {
        if let Some(call) = self.read(|book| book.get(call_id).cloned()) {
            return Ok(Some(call));
        }
        if let Some(call) = self.ending.get(&call_id) {
            return Ok(Some(call.clone()));
        }
        Ok(self.store.get_call(call_id).await?)
    }

    async fn load_conversation(
        &self,
        id: Option<&ConversationId>,
    ) -> CallResult<Option<Conversation>> {
        match id {
            Some(id) => Ok(self.store.get_conversation(id.as_str()).await?),
            None => Ok(None),
        }
    }

    /// Commits a decision, or explains a refusal. The book forgets calls once they end, so
    /// its `CALL_NOT_FOUND` is refined from the store ([`Self::explain`]).
    async fn finish(
        &self,
        actor: &Actor,
        call_id: CallId,
        result: Result<Outcome, SignalingError>,
    ) -> CallResult<Call> {
        match result {
            Ok(outcome) => {
                self.commit(&outcome).await;
                Ok(outcome.call)
            }
            Err(e) => Err(self.explain(actor, call_id, e).await),
        }
    }

    /// A refusal as the client sees it: the book's `CALL_NOT_FOUND` for a call it already
    /// forgot becomes `FORBIDDEN` for an outsider or `CALL_ENDED` for a participant (or an
    /// admin); only an unknown id stays `CALL_NOT_FOUND`.
    async fn explain(&self, actor: &Actor, call_id: CallId, e: SignalingError) -> SignalingError {
        if e.code != ErrorCode::CallNotFound {
            return e;
        }
        match self.find(call_id).await {
            Err(e) => e,
            Ok(None) => call_not_found(call_id),
            Ok(Some(call)) if !actor.admin && !call.is_participant(actor.user_id.as_str()) => {
                SignalingError::forbidden("you are not a participant of this call")
            }
            Ok(Some(call)) => SignalingError::new(
                ErrorCode::CallEnded,
                format!("the call ended ({})", call.status),
            ),
        }
    }

    /// Refuses media negotiation (`rtc:*`) unless `actor` is joined in `call_id`, with the
    /// codes a joined-only call operation answers: `CALL_NOT_FOUND`, `FORBIDDEN`, `CALL_ENDED`,
    /// and `INVALID_STATE` for a participant who is not joined.
    pub async fn require_joined(&self, actor: &Actor, call_id: CallId) -> CallResult<()> {
        match self.read(|book| book.check_joined(call_id, &actor.user_id)) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.explain(actor, call_id, e).await),
        }
    }

    /// Makes an outcome durable and visible. The snapshot is written before the caller gets
    /// its answer, so history read right after an operation includes it; if the store is
    /// down, the writer keeps retrying in the background and the decision still stands.
    async fn commit(&self, outcome: &Outcome) {
        let call = &outcome.call;
        match self.store.save_call(call).await {
            Ok(_) => {
                self.ending
                    .remove_if(&call.id, |_, c| c.version <= call.version);
            }
            Err(e) => {
                tracing::warn!(call_id = %call.id, error = %e, "saving call failed; retrying in the background");
                self.metrics
                    .store_write_failures_total
                    .with_label_values(&["call"])
                    .inc();
                // Stays in `ending` until then: readers keep seeing the final state.
                self.writer.save_call(call.clone());
            }
        }
        // Presence is what keeps a seat, from the moment it is taken: someone who joins with
        // no socket and no media (over REST only) is held to the disconnect grace too.
        for (user, joined) in outcome.seat_changes() {
            if joined {
                self.expect_presence(user);
            }
        }
        if let Some((user_id, state)) = &outcome.media_change {
            self.writer.media_event(MediaEvent {
                call_id: call.id,
                user_id: user_id.clone(),
                at: now_ms(),
                state: *state,
            });
        }
        let ended_now =
            !call.status.is_live() && outcome.before.as_ref().is_none_or(|b| b.status.is_live());
        if ended_now {
            self.metrics
                .calls_total
                .with_label_values(&[call.status.as_str()])
                .inc();
        }
        tracing::debug!(
            call_id = %call.id,
            status = %call.status,
            events = outcome.events.len(),
            "call changed"
        );
    }

    /// Turns unanswered rings into missed calls on the server's clock. One task serves every
    /// call: it sleeps until the earliest deadline in the book, or until a new call may have
    /// brought an earlier one.
    pub async fn run_ring_timer(self: Arc<Self>) {
        let ring_timeout = self.read(|book| book.limits().ring_timeout);
        loop {
            let next = self.read(|book| book.next_deadline());
            let notified = self.deadlines_changed.notified();
            match next {
                Some(deadline) => {
                    let wait = (deadline - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
                    let wait = std::time::Duration::try_from(wait).unwrap_or_default();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = notified => continue,
                    }
                }
                None => {
                    notified.await;
                    continue;
                }
            }
            let now = now_ms();
            let outcomes = self.decide(|book| book.expire(now), |v| v.iter().collect());
            for outcome in &outcomes {
                let deadline = outcome.call.created_at + ring_timeout;
                let lag = (now - deadline).as_seconds_f64().max(0.0);
                self.metrics.ring_timer_lag_seconds.observe(lag);
                self.commit(outcome).await;
            }
        }
    }

    /// A user has neither sockets nor connected peer connections any more. If they are joined
    /// in a call, they keep their seat for the disconnect grace; if they are still absent
    /// then, they leave with reason `disconnected`.
    pub fn user_became_absent(&self, user: &UserId, absence_epoch: u64) {
        let Some(call_id) = self.joined_call_of(user.as_str()) else {
            return;
        };
        let Some(service) = self.me.upgrade() else {
            return;
        };
        let user = user.clone();
        tokio::spawn(async move {
            tokio::time::sleep(service.disconnect_grace).await;
            if !service.hub.still_absent_since(user.as_str(), absence_epoch)
                || service.joined_call_of(user.as_str()) != Some(call_id)
            {
                return;
            }
            let actor = Actor {
                user_id: user.clone(),
                name: None,
                admin: false,
            };
            match service
                .leave(&actor, call_id, LeaveReason::Disconnected)
                .await
            {
                Ok(_) => tracing::info!(user = %user, %call_id, "left after the disconnect grace"),
                Err(e) => {
                    tracing::debug!(user = %user, %call_id, error = ?e, "disconnect leave refused")
                }
            }
        });
    }

    /// Starts the disconnect grace for a joined participant who is not present right now.
    fn expect_presence(&self, user: &UserId) {
        if !self.hub.is_present(user.as_str()) {
            self.user_became_absent(user, self.hub.absence_epoch(user.as_str()));
        }
    }

    /// Ends calls that were live when the server last stopped: their media and sockets are
    /// gone, so they are recorded as `failed` rather than left ringing forever.
    pub async fn recover_interrupted_calls(&self) -> Result<usize, crate::store::StoreError> {
        let now = now_ms();
        let calls = self.store.live_calls().await?;
        let count = calls.len();
        for mut call in calls {
            let before = call.clone();
            call.status = CallStatus::Failed;
            call.ended_at = Some(now);
            call.end_reason = Some(EndReason::ServerRestart.to_string());
            for p in &mut call.participants {
                match p.status {
                    ParticipantStatus::Joined => {
                        p.status = ParticipantStatus::Left;
                        p.left_at = Some(now);
                        p.left_reason = Some(LeaveReason::Removed);
                    }
                    ParticipantStatus::Ringing | ParticipantStatus::Invited => {
                        p.status = ParticipantStatus::Missed;
                    }
                    _ => {}
                }
            }
            call.version += 1;
            self.store.save_call(&call).await?;
            self.webhooks.call_changed(Some(&before), &call);
            self.metrics
                .calls_total
                .with_label_values(&[CallStatus::Failed.as_str()])
                .inc();
        }
        Ok(count)
    }
}

fn active_speakers_frame(call_id: CallId, user_ids: &[String]) -> Frame {
    Arc::from(protocol::event(
        "call:active-speakers",
        json!({ "call_id": call_id, "user_ids": user_ids }),
    ))
}

fn call_not_found(call_id: CallId) -> SignalingError {
    SignalingError::new(ErrorCode::CallNotFound, format!("no call {call_id}"))
}
