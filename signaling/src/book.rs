//! The live calls and the rules that move them (contract section 4).
//!
//! [`CallBook`] keeps every ringing or ongoing call in memory together with three indexes: which
//! call each user is joined in (a user may be joined in one call at a time), which call each
//! conversation has live (at most one), and when each ring timeout is due. A call leaves the
//! book the moment it ends; its final snapshot travels in the [`Outcome`] and from then on only
//! the store knows it.
//!
//! Every operation either refuses with a contract error and changes nothing, or applies the whole
//! transition and returns the new snapshot with the events it produced. Each one checks first
//! and writes afterwards, so a refusal can never leave an index half updated.

use std::collections::{BTreeSet, HashMap, HashSet};

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::error::{ErrorCode, SignalingError};
use crate::events::CallEvent;
use crate::model::{
    Actor, AdminMute, Call, CallKind, CallStatus, Conversation, ConversationId, EndReason,
    LeaveReason, MediaKind, MediaPatch, MediaState, Participant, ParticipantStatus, UserId,
};

pub mod relay;
#[cfg(test)]
mod tests;

/// The limits of contract section 1 that the state machine enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Joined participants per call, the initiator included (`CONFAB_MAX_PARTICIPANTS`).
    pub max_participants: usize,
    /// How long a call rings before the unanswered become missed (`CONFAB_RING_TIMEOUT_S`).
    pub ring_timeout: Duration,
}

impl Default for Limits {
    /// The contract's defaults, so tests and tools need not repeat them.
    fn default() -> Self {
        Self {
            max_participants: 50,
            ring_timeout: Duration::seconds(45),
        }
    }
}

/// A request to start a call, as `POST /calls` and `call:initiate` carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initiate {
    /// Chosen by the caller of the book so that it can be logged before the decision.
    pub call_id: Uuid,
    pub caller: Actor,
    pub invitees: Vec<UserId>,
    pub media: MediaKind,
    /// `None` picks `direct` for exactly one invitee and `group` otherwise.
    pub kind: Option<CallKind>,
    pub conversation_id: Option<ConversationId>,
}

/// What an accepted operation did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The call after the change, `version` bumped; final when the call ended.
    pub call: Call,
    /// The call right before the operation, `None` when the operation created it. Every event
    /// of this outcome is addressed with this pair (see [`CallEvent::recipients`]).
    pub before: Option<Call>,
    /// In the order they should be delivered.
    pub events: Vec<CallEvent>,
    /// Set by [`CallBook::set_media`], so the SFU can be told without digging in the snapshot.
    pub media_change: Option<(UserId, MediaState)>,
}

impl Outcome {
    /// Whether the call ended with this change (and so is no longer in the book).
    pub fn is_final(&self) -> bool {
        !self.call.status.is_live()
    }

    /// Participants whose seat this change moved: `(user, true)` for one who became joined,
    /// `(user, false)` for one who stopped being joined. The media side follows these.
    pub fn seat_changes(&self) -> impl Iterator<Item = (&UserId, bool)> + '_ {
        let was_joined = |user: &UserId| {
            self.before
                .as_ref()
                .and_then(|b| b.participant(user.as_str()))
                .is_some_and(|p| p.status == ParticipantStatus::Joined)
        };
        self.call.participants.iter().filter_map(move |p| {
            let joined = p.status == ParticipantStatus::Joined;
            (joined != was_joined(&p.user_id)).then_some((&p.user_id, joined))
        })
    }

    /// Each event with the users who receive it, in delivery order.
    pub fn deliveries(&self) -> impl Iterator<Item = (&CallEvent, Vec<UserId>)> + '_ {
        self.events
            .iter()
            .map(|e| (e, e.recipients(self.before.as_ref(), &self.call)))
    }
}

#[derive(Debug, Clone)]
struct Entry {
    call: Call,
    /// Present while some invitee may still be rung out: every ringing call, and a group call
    /// that went ongoing before its timeout.
    deadline: Option<OffsetDateTime>,
}

/// All ringing and ongoing calls.
#[derive(Debug, Clone)]
pub struct CallBook {
    limits: Limits,
    calls: HashMap<Uuid, Entry>,
    /// Ordered by due time so that [`CallBook::expire`] touches only what is due.
    deadlines: BTreeSet<(OffsetDateTime, Uuid)>,
    by_conversation: HashMap<ConversationId, Uuid>,
    joined: HashMap<UserId, Uuid>,
}

impl CallBook {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            calls: HashMap::new(),
            deadlines: BTreeSet::new(),
            by_conversation: HashMap::new(),
            joined: HashMap::new(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Starts a call.
    ///
    /// `conversation` is the conversation named by `req.conversation_id` as the caller loaded it
    /// (`None` if it does not exist or none was named). `is_online` tells whether a user has an
    /// open socket, which decides between `ringing` and `invited`.
    ///
    /// Checks run in this order, so that a client sees the most fundamental problem first:
    /// the request's own arguments (`INVALID_ARGUMENT`), the conversation
    /// (`CONVERSATION_NOT_FOUND`, `NOT_A_MEMBER`), the caller being joined elsewhere
    /// (`INVALID_STATE`), the conversation's live call (`ACTIVE_CALL_EXISTS`).
    ///
    /// A direct call to a user joined in another call is not refused here: it is recorded as a
    /// call that ended at once with status `busy`, returned as `Ok` and not kept in the book. The
    /// binary stores it and answers `USER_BUSY` with its id, as the contract asks.
    pub fn initiate(
        &mut self,
        req: Initiate,
        conversation: Option<&Conversation>,
        is_online: &dyn Fn(&UserId) -> bool,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        let caller_id = req.caller.user_id.clone();
        if req.invitees.is_empty() {
            return Err(SignalingError::invalid_argument(
                "invitees must name at least one user",
            ));
        }
        let mut seen = HashSet::with_capacity(req.invitees.len());
        for invitee in &req.invitees {
            if !seen.insert(invitee.as_str()) {
                return Err(SignalingError::invalid_argument(format!(
                    "invitee {invitee} is listed twice"
                )));
            }
        }
        if seen.contains(caller_id.as_str()) {
            return Err(SignalingError::invalid_argument(
                "the caller cannot invite themselves",
            ));
        }
        let kind = req.kind.unwrap_or(if req.invitees.len() == 1 {
            CallKind::Direct
        } else {
            CallKind::Group
        });
        if kind == CallKind::Direct && req.invitees.len() != 1 {
            return Err(SignalingError::invalid_argument(format!(
                "a direct call has exactly one invitee, got {}",
                req.invitees.len()
            )));
        }
        if kind == CallKind::Group && req.conversation_id.is_none() {
            return Err(SignalingError::invalid_argument(
                "a group call needs a conversation_id",
            ));
        }

        if let Some(conversation_id) = &req.conversation_id {
            let conversation = loaded_conversation(conversation, conversation_id)?;
            if !conversation.is_member(caller_id.as_str()) {
                return Err(not_a_member(&[&caller_id], conversation_id));
            }
            let outsiders: Vec<&UserId> = req
                .invitees
                .iter()
                .filter(|u| !conversation.is_member(u.as_str()))
                .collect();
            if !outsiders.is_empty() {
                return Err(not_a_member(&outsiders, conversation_id));
            }
        }

        if let Some(other) = self.joined.get(caller_id.as_str()) {
            return Err(SignalingError::invalid_state(format!(
                "{caller_id} is already joined in call {other}"
            ))
            .with_call_id(*other));
        }

        if let Some(conversation_id) = &req.conversation_id
            && let Some(live) = self.by_conversation.get(conversation_id.as_str())
        {
            return Err(SignalingError::new(
                ErrorCode::ActiveCallExists,
                format!("conversation {conversation_id} already has call {live}"),
            )
            .with_call_id(*live));
        }

        if self.calls.contains_key(&req.call_id) {
            return Err(SignalingError::new(
                ErrorCode::Internal,
                format!("call id {} is already in use", req.call_id),
            ));
        }

        let initial = MediaState::initial(req.media);
        let caller = Participant {
            user_id: caller_id.clone(),
            name: req.caller.display_name(),
            status: ParticipantStatus::Joined,
            joined_at: Some(now),
            left_at: None,
            left_reason: None,
            media: initial,
        };
        let invitee = |user_id: &UserId, status| Participant {
            user_id: user_id.clone(),
            name: user_id.as_str().to_owned(),
            status,
            joined_at: None,
            left_at: None,
            left_reason: None,
            media: initial,
        };
        let mut call = Call {
            id: req.call_id,
            conversation_id: req.conversation_id.clone(),
            kind,
            media: req.media,
            initiated_by: caller_id.clone(),
            status: CallStatus::Ringing,
            created_at: now,
            started_at: None,
            ended_at: None,
            end_reason: None,
            ended_by: None,
            participants: Vec::with_capacity(req.invitees.len() + 1),
            version: 1,
        };

        if kind == CallKind::Direct
            && let Some(callee) = req.invitees.first()
            && self.joined.contains_key(callee.as_str())
        {
            call.status = CallStatus::Busy;
            call.ended_at = Some(now);
            call.end_reason = Some(EndReason::Busy.to_string());
            call.participants.push(Participant {
                status: ParticipantStatus::Left,
                left_at: Some(now),
                left_reason: Some(LeaveReason::Left),
                ..caller
            });
            call.participants
                .push(invitee(callee, ParticipantStatus::Busy));
            return Ok(Outcome {
                call,
                before: None,
                events: vec![CallEvent::Busy {
                    user_id: callee.clone(),
                }],
                media_change: None,
            });
        }

        call.participants.push(caller);
        let mut rung = Vec::new();
        let mut busy = Vec::new();
        for user in &req.invitees {
            let status = if self.joined.contains_key(user.as_str()) {
                busy.push(CallEvent::Busy {
                    user_id: user.clone(),
                });
                ParticipantStatus::Busy
            } else if is_online(user) {
                rung.push(user.clone());
                ParticipantStatus::Ringing
            } else {
                ParticipantStatus::Invited
            };
            call.participants.push(invitee(user, status));
        }
        let mut events = vec![
            CallEvent::Incoming {
                user_ids: rung.clone(),
            },
            CallEvent::Ringing { user_ids: rung },
        ];
        events.extend(busy);

        let entry = Entry {
            call,
            deadline: Some(deadline_after(now, self.limits.ring_timeout)),
        };
        Ok(self.commit(entry, None, events, None))
    }

    /// An invitee answers. A missed invitee of an ongoing group call must use [`Self::join`].
    ///
    /// An ended call is `CALL_NOT_FOUND` here; the binary looks it up in the store to answer
    /// `CALL_ENDED` or `FORBIDDEN`.
    pub fn accept(
        &mut self,
        call_id: Uuid,
        actor: &Actor,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        let user = &actor.user_id;
        let call = self.live(call_id)?;
        let participant = participant_or_forbidden(call, user)?;
        if call.initiated_by == *user {
            return Err(SignalingError::invalid_state(
                "the initiator cannot accept its own call",
            ));
        }
        match participant.status {
            ParticipantStatus::Ringing | ParticipantStatus::Invited | ParticipantStatus::Busy => {}
            ParticipantStatus::Joined => {
                return Err(SignalingError::invalid_state(format!(
                    "{user} has already joined call {call_id}"
                )));
            }
            ParticipantStatus::Missed => {
                return Err(SignalingError::invalid_state(format!(
                    "{user} missed call {call_id}; join it instead"
                )));
            }
            status @ (ParticipantStatus::Declined | ParticipantStatus::Left) => {
                return Err(SignalingError::invalid_state(format!(
                    "{user} can no longer accept call {call_id}: participant is {status}"
                )));
            }
        }
        self.check_can_join(call, user)?;
        self.admit(call_id, actor, now, true)
    }

    /// An invitee declines. The initiator cannot reject its own call (it ends or leaves it).
    ///
    /// When the call ends with this (`rejected`), `ended_by` is the rejecting user: it is a
    /// person's decision, not a timeout. An ended call is `CALL_NOT_FOUND` here; the binary
    /// looks it up in the store to answer `CALL_ENDED` or `FORBIDDEN`.
    pub fn reject(
        &mut self,
        call_id: Uuid,
        actor: &Actor,
        reason: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        let user = &actor.user_id;
        let call = self.live(call_id)?;
        let participant = participant_or_forbidden(call, user)?;
        if call.initiated_by == *user {
            return Err(SignalingError::invalid_state(
                "the initiator cannot reject its own call; end or leave it",
            ));
        }
        if !is_unanswered(participant.status) {
            return Err(SignalingError::invalid_state(format!(
                "{user} can no longer reject call {call_id}: participant is {}",
                participant.status
            )));
        }

        let Some(mut entry) = self.detach(call_id) else {
            return Err(call_not_found(call_id));
        };
        let before = entry.call.clone();
        let call = &mut entry.call;
        if let Some(p) = call.participant_mut(user.as_str()) {
            p.status = ParticipantStatus::Declined;
            if let Some(name) = &actor.name {
                p.name.clone_from(name);
            }
        }
        let mut events = vec![CallEvent::Rejected {
            user_id: user.clone(),
            reason: reason.clone(),
        }];
        let ends = match call.kind {
            CallKind::Direct => true,
            CallKind::Group => {
                call.status == CallStatus::Ringing
                    && !call
                        .participants
                        .iter()
                        .any(|p| p.user_id != call.initiated_by && is_unanswered(p.status))
            }
        };
        if ends {
            let reason = EndReason::given_or(reason, EndReason::Rejected);
            events.push(finish(
                call,
                CallStatus::Rejected,
                now,
                reason,
                Some(user.clone()),
                None,
                LeaveReason::Left,
            ));
        }
        Ok(self.commit(entry, Some(before), events, None))
    }

    /// A participant (or, in a group call, any member of its conversation) joins.
    ///
    /// `conversation` is the call's conversation as the caller loaded it; it is consulted only
    /// for a group call the actor is not yet a participant of. Joining a call one is already
    /// joined in succeeds without change (no events, same version), so a reconnecting client
    /// can simply join again. Rejoining after leaving starts from fresh media switches, as the
    /// client does. The callee joining a ringing direct call is exactly an accept.
    ///
    /// An ended call is `CALL_NOT_FOUND` here; the binary looks it up in the store to answer
    /// `CALL_ENDED` or `FORBIDDEN`.
    pub fn join(
        &mut self,
        call_id: Uuid,
        actor: &Actor,
        conversation: Option<&Conversation>,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        let user = &actor.user_id;
        let call = self.live(call_id)?;
        let participant = call.participant(user.as_str());
        if let Some(p) = participant
            && p.status == ParticipantStatus::Joined
        {
            let snapshot = call.clone();
            return Ok(Outcome {
                call: snapshot.clone(),
                before: Some(snapshot),
                events: Vec::new(),
                media_change: None,
            });
        }
        let was_rung = match (call.kind, participant) {
            (CallKind::Direct, None) => {
                return Err(SignalingError::forbidden(format!(
                    "{user} is not a participant of call {call_id}"
                )));
            }
            (CallKind::Direct, Some(p)) => {
                if call.initiated_by == *user
                    || !matches!(
                        p.status,
                        ParticipantStatus::Ringing | ParticipantStatus::Invited
                    )
                {
                    return Err(SignalingError::invalid_state(format!(
                        "{user} cannot join direct call {call_id}: participant is {}",
                        p.status
                    )));
                }
                true
            }
            (CallKind::Group, Some(p)) => matches!(
                p.status,
                ParticipantStatus::Ringing | ParticipantStatus::Invited
            ),
            (CallKind::Group, None) => {
                let Some(conversation_id) = &call.conversation_id else {
                    return Err(SignalingError::forbidden(format!(
                        "{user} is not a participant of call {call_id}"
                    )));
                };
                let member = match conversation {
                    None => false,
                    Some(c) if c.id != *conversation_id => {
                        return Err(mismatched_conversation(conversation_id, &c.id));
                    }
                    Some(c) => c.is_member(user.as_str()),
                };
                if !member {
                    return Err(not_a_member(&[user], conversation_id));
                }
                false
            }
        };
        self.check_can_join(call, user)?;
        self.admit(call_id, actor, now, was_rung)
    }

    /// A joined participant leaves (`left`), or the binary reports it gone (`disconnected`).
    ///
    /// When this ends the call, `ended_by` is the user only for a deliberate `left`; a lost
    /// connection ends the call without anyone having ended it. An ended call is
    /// `CALL_NOT_FOUND` here; the binary looks it up in the store to answer `CALL_ENDED` or
    /// `FORBIDDEN`.
    pub fn leave(
        &mut self,
        call_id: Uuid,
        user: &UserId,
        reason: LeaveReason,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        let call = self.live(call_id)?;
        let participant = participant_or_forbidden(call, user)?;
        if participant.status != ParticipantStatus::Joined {
            return Err(SignalingError::invalid_state(format!(
                "{user} is not joined in call {call_id}: participant is {}",
                participant.status
            )));
        }

        let Some(mut entry) = self.detach(call_id) else {
            return Err(call_not_found(call_id));
        };
        let before = entry.call.clone();
        let call = &mut entry.call;
        let mut name = user.as_str().to_owned();
        if let Some(p) = call.participant_mut(user.as_str()) {
            p.status = ParticipantStatus::Left;
            p.left_at = Some(now);
            p.left_reason = Some(reason);
            name.clone_from(&p.name);
        }
        let mut events = vec![CallEvent::ParticipantLeft {
            user_id: user.clone(),
            name,
            reason,
        }];
        let ending = match (call.kind, call.status) {
            (_, CallStatus::Ringing) => Some(CallStatus::Cancelled),
            (CallKind::Direct, _) => Some(CallStatus::Completed),
            (CallKind::Group, _) if call.joined().next().is_none() => Some(CallStatus::Completed),
            (CallKind::Group, _) => None,
        };
        if let Some(status) = ending {
            let ended_by = (reason == LeaveReason::Left).then(|| user.clone());
            events.push(finish(
                call,
                status,
                now,
                EndReason::from(reason),
                ended_by,
                None,
                LeaveReason::Left,
            ));
        }
        Ok(self.commit(entry, Some(before), events, None))
    }

    /// Ends the call for everyone: `cancelled` while ringing, `completed` once ongoing.
    ///
    /// Allowed to an admin, to any participant of a direct call and to the initiator of a group
    /// call; anyone else is `FORBIDDEN`. The other joined participants leave with `removed`; an
    /// invitee still being rung is `missed`, except the actor itself (a direct callee ending a
    /// ringing call), who is `declined`. An ended call is `CALL_NOT_FOUND` here; the binary looks
    /// it up in the store to answer `CALL_ENDED` or `FORBIDDEN`.
    pub fn end(
        &mut self,
        call_id: Uuid,
        actor: &Actor,
        reason: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        let user = &actor.user_id;
        let call = self.live(call_id)?;
        let allowed = actor.admin
            || call.initiated_by == *user
            || (call.kind == CallKind::Direct && call.is_participant(user.as_str()));
        if !allowed {
            return Err(SignalingError::forbidden(
                if call.is_participant(user.as_str()) {
                    format!("only the initiator of group call {call_id} can end it")
                } else {
                    format!("{user} is not a participant of call {call_id}")
                },
            ));
        }

        let Some(mut entry) = self.detach(call_id) else {
            return Err(call_not_found(call_id));
        };
        let before = entry.call.clone();
        let call = &mut entry.call;
        if let Some(p) = call.participant_mut(user.as_str())
            && matches!(
                p.status,
                ParticipantStatus::Ringing | ParticipantStatus::Invited
            )
        {
            p.status = ParticipantStatus::Declined;
        }
        let status = if call.status == CallStatus::Ringing {
            CallStatus::Cancelled
        } else {
            CallStatus::Completed
        };
        let reason = EndReason::given_or(reason, EndReason::Ended);
        let ended = finish(
            call,
            status,
            now,
            reason,
            Some(user.clone()),
            Some(user),
            LeaveReason::Removed,
        );
        Ok(self.commit(entry, Some(before), vec![ended], None))
    }

    /// Ends every live call because the node hosting it drains (contract section 10): the same
    /// transition as an admin's [`Self::end`], decided by the server rather than a user. A
    /// ringing call is `cancelled`, an ongoing one `completed`; joined participants leave with
    /// `removed`, invitees still being rung have `missed` it; `ended_by` is empty and the reason
    /// is `drained`. Outcomes come in call id order, so replays are deterministic.
    pub fn drain(&mut self, now: OffsetDateTime) -> Vec<Outcome> {
        let mut ids: Vec<Uuid> = self.calls.keys().copied().collect();
        ids.sort_unstable();
        let mut outcomes = Vec::with_capacity(ids.len());
        for call_id in ids {
            let Some(mut entry) = self.detach(call_id) else {
                continue;
            };
            let before = entry.call.clone();
            let call = &mut entry.call;
            let status = if call.status == CallStatus::Ringing {
                CallStatus::Cancelled
            } else {
                CallStatus::Completed
            };
            let ended = finish(
                call,
                status,
                now,
                EndReason::Drained,
                None,
                None,
                LeaveReason::Removed,
            );
            outcomes.push(self.commit(entry, Some(before), vec![ended], None));
        }
        outcomes
    }

    /// A joined participant changes its media switches.
    ///
    /// `now` is unused: media switches carry no timestamp in the contract; it is taken so that
    /// every operation has the same shape. The patch is checked before the call is looked up,
    /// like every malformed argument. The version is bumped even when nothing changes, so every
    /// accepted request is one write. An ended call is `CALL_NOT_FOUND` here; the binary looks it up in the store to answer
    /// `CALL_ENDED` or `FORBIDDEN`.
    pub fn set_media(
        &mut self,
        call_id: Uuid,
        user: &UserId,
        patch: MediaPatch,
        _now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        if patch.is_empty() {
            return Err(SignalingError::invalid_argument(
                "a media change needs audio_muted, video_enabled or screen_sharing",
            ));
        }
        let call = self.live(call_id)?;
        let participant = participant_or_forbidden(call, user)?;
        if participant.status != ParticipantStatus::Joined {
            return Err(SignalingError::invalid_state(format!(
                "{user} is not joined in call {call_id}: participant is {}",
                participant.status
            )));
        }

        let Some(mut entry) = self.detach(call_id) else {
            return Err(call_not_found(call_id));
        };
        let before = entry.call.clone();
        let mut state = MediaState::initial(entry.call.media);
        if let Some(p) = entry.call.participant_mut(user.as_str()) {
            p.media = patch.apply(p.media);
            state = p.media;
        }
        let event = CallEvent::MediaChanged {
            user_id: user.clone(),
            audio_muted: state.audio_muted,
            video_enabled: state.video_enabled,
            screen_sharing: state.screen_sharing,
        };
        Ok(self.commit(
            entry,
            Some(before),
            vec![event],
            Some((user.clone(), state)),
        ))
    }

    /// An admin removes a joined participant (`POST /calls/{id}/participants/{user}/remove`).
    ///
    /// The subject leaves with reason `removed`: `call:participant-left` to the others and
    /// `call:removed` to the subject alone. The call then ends exactly as a leave would end it
    /// (a ringing call is `cancelled`; a direct call, or a group call whose last joined
    /// participant this was, is `completed`), with reason `ended` and `ended_by` the admin: an
    /// admin removing the last one ends the call as `call:end` would. Only an admin may;
    /// anyone else is `FORBIDDEN`. A subject who is not a participant is `INVALID_ARGUMENT`,
    /// one who is not joined `INVALID_STATE`.
    pub fn remove(
        &mut self,
        call_id: Uuid,
        actor: &Actor,
        subject: &UserId,
        reason: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        if !actor.admin {
            return Err(SignalingError::forbidden(
                "only an admin can remove a participant",
            ));
        }
        let call = self.live(call_id)?;
        joined_subject(call, subject)?;
        let Some(mut entry) = self.detach(call_id) else {
            return Err(call_not_found(call_id));
        };
        let before = entry.call.clone();
        let call = &mut entry.call;
        let mut name = subject.as_str().to_owned();
        if let Some(p) = call.participant_mut(subject.as_str()) {
            p.status = ParticipantStatus::Left;
            p.left_at = Some(now);
            p.left_reason = Some(LeaveReason::Removed);
            name.clone_from(&p.name);
        }
        let reason = reason.unwrap_or_else(|| LeaveReason::Removed.to_string());
        let mut events = vec![
            CallEvent::Removed {
                user_id: subject.clone(),
                reason,
            },
            CallEvent::ParticipantLeft {
                user_id: subject.clone(),
                name,
                reason: LeaveReason::Removed,
            },
        ];
        let ending = match (call.kind, call.status) {
            (_, CallStatus::Ringing) => Some(CallStatus::Cancelled),
            (CallKind::Direct, _) => Some(CallStatus::Completed),
            (CallKind::Group, _) if call.joined().next().is_none() => Some(CallStatus::Completed),
            (CallKind::Group, _) => None,
        };
        if let Some(status) = ending {
            events.push(finish(
                call,
                status,
                now,
                EndReason::from(LeaveReason::Removed),
                Some(actor.user_id.clone()),
                None,
                LeaveReason::Removed,
            ));
        }
        Ok(self.commit(entry, Some(before), events, None))
    }

    /// An admin mutes some of a joined participant's sources
    /// (`POST /calls/{id}/participants/{user}/mute`).
    ///
    /// The subject's switches change as if it had sent `call:media` (microphone muted, camera
    /// or screen share off): `call:muted-by` to the subject alone, `call:media-changed` to
    /// everyone joined, and [`Outcome::media_change`] set so the media side follows. The
    /// version is bumped even when the sources were already off, like any accepted change.
    /// Only an admin may (`FORBIDDEN`); a request that mutes nothing is `INVALID_ARGUMENT`;
    /// the subject must be a participant (`INVALID_ARGUMENT`) and joined (`INVALID_STATE`).
    pub fn admin_mute(
        &mut self,
        call_id: Uuid,
        actor: &Actor,
        subject: &UserId,
        mute: AdminMute,
        _now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        if !actor.admin {
            return Err(SignalingError::forbidden(
                "only an admin can mute a participant",
            ));
        }
        if !mute.mutes_something() {
            return Err(SignalingError::invalid_argument(
                "a mute needs audio, video or screen set to true",
            ));
        }
        let call = self.live(call_id)?;
        joined_subject(call, subject)?;
        let Some(mut entry) = self.detach(call_id) else {
            return Err(call_not_found(call_id));
        };
        let before = entry.call.clone();
        let mut state = MediaState::initial(entry.call.media);
        if let Some(p) = entry.call.participant_mut(subject.as_str()) {
            p.media = mute.apply(p.media);
            state = p.media;
        }
        let events = vec![
            CallEvent::MutedBy {
                user_id: subject.clone(),
                by: actor.user_id.clone(),
                mute,
            },
            CallEvent::MediaChanged {
                user_id: subject.clone(),
                audio_muted: state.audio_muted,
                video_enabled: state.video_enabled,
                screen_sharing: state.screen_sharing,
            },
        ];
        Ok(self.commit(entry, Some(before), events, Some((subject.clone(), state))))
    }

    /// Applies every ring timeout due at `now`, earliest first.
    ///
    /// A ringing call becomes `missed` (its unanswered invitees `missed`, the initiator `left`,
    /// `end_reason` "timeout"). A group call already ongoing stays so, and only its invitees
    /// still being rung become `missed`; if there are none, nothing is reported. Either way the
    /// deadline is used up. Costs O(log n) per due call, nothing for the others.
    pub fn expire(&mut self, now: OffsetDateTime) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        while let Some(&(deadline, call_id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(mut entry) = self.detach(call_id) else {
                continue;
            };
            entry.deadline = None;
            let before = entry.call.clone();
            let call = &mut entry.call;
            let mut events = Vec::new();
            for p in &mut call.participants {
                if matches!(
                    p.status,
                    ParticipantStatus::Ringing | ParticipantStatus::Invited
                ) {
                    p.status = ParticipantStatus::Missed;
                    events.push(CallEvent::Missed {
                        user_id: p.user_id.clone(),
                    });
                }
            }
            if call.status == CallStatus::Ringing {
                events.push(finish(
                    call,
                    CallStatus::Missed,
                    now,
                    EndReason::Timeout,
                    None,
                    None,
                    LeaveReason::Left,
                ));
            }
            if events.is_empty() {
                self.attach(entry);
            } else {
                outcomes.push(self.commit(entry, Some(before), events, None));
            }
        }
        outcomes
    }

    /// When [`Self::expire`] next has something to do.
    pub fn next_deadline(&self) -> Option<OffsetDateTime> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// A live call; `None` once it has ended.
    /// Whether `user` may negotiate media in `call_id`, judged as a joined-only operation on the
    /// call is (`call:media`): an unknown call is `CALL_NOT_FOUND`, an outsider `FORBIDDEN`,
    /// a participant who is not joined `INVALID_STATE`.
    pub fn check_joined(&self, call_id: Uuid, user: &UserId) -> Result<(), SignalingError> {
        let call = self.live(call_id)?;
        let participant = participant_or_forbidden(call, user)?;
        if participant.status == ParticipantStatus::Joined {
            Ok(())
        } else {
            Err(SignalingError::invalid_state(format!(
                "{user} is not joined in call {call_id}: participant is {}; join before negotiating media",
                participant.status
            )))
        }
    }

    pub fn get(&self, call_id: Uuid) -> Option<&Call> {
        self.calls.get(&call_id).map(|e| &e.call)
    }

    pub fn active_call_of_conversation(&self, conversation: &str) -> Option<&Call> {
        self.by_conversation
            .get(conversation)
            .and_then(|id| self.get(*id))
    }

    /// The live call `user` is joined in, if any.
    pub fn joined_call_of(&self, user: &str) -> Option<Uuid> {
        self.joined.get(user).copied()
    }

    /// Every live call, in no particular order.
    pub fn live_calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.values().map(|e| &e.call)
    }

    /// The live calls ringing `user` now: a device of theirs that connects meanwhile is rung too.
    pub fn calls_ringing<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a Call> {
        self.live_calls().filter(move |call| {
            call.participant(user)
                .is_some_and(|p| p.status == ParticipantStatus::Ringing)
        })
    }

    /// Number of live calls (`confab_calls_active`).
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Joined participants over all live calls (`confab_participants_joined`).
    pub fn joined_participants(&self) -> usize {
        self.joined.len()
    }

    /// Verifies that the indexes agree with the calls and that every call is in a state the
    /// rules can reach. O(everything): for tests and debug assertions, not for serving.
    #[cfg(any(test, debug_assertions))]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut deadlines = 0;
        let mut conversations = 0;
        let mut joined_total = 0;
        for (id, entry) in &self.calls {
            let call = &entry.call;
            let at = |what: &str| format!("call {id}: {what}");
            if call.id != *id {
                return Err(at("stored under another id"));
            }
            if !call.status.is_live() {
                return Err(at("ended but still in the book"));
            }
            if call.ended_at.is_some() || call.end_reason.is_some() || call.ended_by.is_some() {
                return Err(at("live with end fields set"));
            }
            if call.version < 1 {
                return Err(at("version below 1"));
            }
            match call.participants.first() {
                Some(p) if p.user_id == call.initiated_by => {}
                _ => return Err(at("initiator is not the first participant")),
            }
            let mut ids = HashSet::new();
            if !call.participants.iter().all(|p| ids.insert(&p.user_id)) {
                return Err(at("a participant is listed twice"));
            }
            if let Some(deadline) = entry.deadline {
                deadlines += 1;
                if !self.deadlines.contains(&(deadline, *id)) {
                    return Err(at("deadline missing from the index"));
                }
            }
            let joined = call.joined().count();
            joined_total += joined;
            for p in call.joined() {
                if self.joined.get(&p.user_id) != Some(id) {
                    return Err(at(&format!("{} joined but not indexed", p.user_id)));
                }
                if p.joined_at.is_none() || p.left_at.is_some() {
                    return Err(at(&format!("{} joined with wrong timestamps", p.user_id)));
                }
            }
            if joined > self.limits.max_participants {
                return Err(at("more joined than the limit"));
            }
            match call.status {
                CallStatus::Ringing => {
                    if entry.deadline.is_none() {
                        return Err(at("ringing without a deadline"));
                    }
                    if call.started_at.is_some() {
                        return Err(at("ringing but started"));
                    }
                    if joined != 1 || call.participants[0].status != ParticipantStatus::Joined {
                        return Err(at("ringing with someone other than the initiator joined"));
                    }
                }
                _ => {
                    if call.started_at.is_none() {
                        return Err(at("ongoing but never started"));
                    }
                    if joined == 0 {
                        return Err(at("ongoing with nobody joined"));
                    }
                    if call.kind == CallKind::Direct && (joined != 2 || entry.deadline.is_some()) {
                        return Err(at("ongoing direct call not two joined without deadline"));
                    }
                }
            }
            if call.kind == CallKind::Direct && call.participants.len() != 2 {
                return Err(at("direct call without exactly two participants"));
            }
            if let Some(conversation) = &call.conversation_id {
                conversations += 1;
                if self.by_conversation.get(conversation) != Some(id) {
                    return Err(at("conversation not indexed"));
                }
            } else if call.kind == CallKind::Group {
                return Err(at("group call without a conversation"));
            }
        }
        if deadlines != self.deadlines.len() {
            return Err(format!(
                "deadline index has {} entries for {deadlines} deadlines",
                self.deadlines.len()
            ));
        }
        if conversations != self.by_conversation.len() {
            return Err(format!(
                "conversation index has {} entries for {conversations} calls",
                self.by_conversation.len()
            ));
        }
        if joined_total != self.joined.len() {
            return Err(format!(
                "joined index has {} entries for {joined_total} joined participants",
                self.joined.len()
            ));
        }
        Ok(())
    }

    fn live(&self, call_id: Uuid) -> Result<&Call, SignalingError> {
        self.get(call_id).ok_or_else(|| call_not_found(call_id))
    }

    /// The checks shared by accept and join, after the actor's own status was judged.
    fn check_can_join(&self, call: &Call, user: &UserId) -> Result<(), SignalingError> {
        if let Some(other) = self.joined.get(user.as_str())
            && *other != call.id
        {
            return Err(SignalingError::invalid_state(format!(
                "{user} is already joined in call {other}"
            ))
            .with_call_id(*other));
        }
        if call.joined().count() >= self.limits.max_participants {
            return Err(SignalingError::new(
                ErrorCode::RoomFull,
                format!(
                    "call {} already has {} joined participants",
                    call.id, self.limits.max_participants
                ),
            ));
        }
        Ok(())
    }

    /// Makes `actor` joined; the caller has checked that it may be.
    fn admit(
        &mut self,
        call_id: Uuid,
        actor: &Actor,
        now: OffsetDateTime,
        emit_accepted: bool,
    ) -> Result<Outcome, SignalingError> {
        let user = &actor.user_id;
        let Some(mut entry) = self.detach(call_id) else {
            return Err(call_not_found(call_id));
        };
        let before = entry.call.clone();
        let call = &mut entry.call;
        let media = MediaState::initial(call.media);
        let name = match call.participant_mut(user.as_str()) {
            Some(p) => {
                p.status = ParticipantStatus::Joined;
                p.joined_at = Some(now);
                p.left_at = None;
                p.left_reason = None;
                p.media = media;
                if let Some(name) = &actor.name {
                    p.name.clone_from(name);
                }
                p.name.clone()
            }
            None => {
                let name = actor.display_name();
                call.participants.push(Participant {
                    user_id: user.clone(),
                    name: name.clone(),
                    status: ParticipantStatus::Joined,
                    joined_at: Some(now),
                    left_at: None,
                    left_reason: None,
                    media,
                });
                name
            }
        };
        if call.status == CallStatus::Ringing {
            call.status = CallStatus::Ongoing;
            call.started_at = Some(now);
            if call.kind == CallKind::Direct {
                entry.deadline = None;
            }
        }
        let mut events = Vec::with_capacity(2);
        if emit_accepted {
            events.push(CallEvent::Accepted {
                user_id: user.clone(),
            });
        }
        events.push(CallEvent::ParticipantJoined {
            user_id: user.clone(),
            name,
        });
        Ok(self.commit(entry, Some(before), events, None))
    }

    /// Bumps the version (new calls arrive with theirs set), puts a still-live call back with
    /// its indexes and returns the outcome.
    fn commit(
        &mut self,
        mut entry: Entry,
        before: Option<Call>,
        events: Vec<CallEvent>,
        media_change: Option<(UserId, MediaState)>,
    ) -> Outcome {
        if before.is_some() {
            entry.call.version += 1;
        }
        let call = if entry.call.status.is_live() {
            let snapshot = entry.call.clone();
            self.attach(entry);
            snapshot
        } else {
            entry.call
        };
        Outcome {
            call,
            before,
            events,
            media_change,
        }
    }

    /// Takes a call out of the book together with everything the indexes say about it, so that
    /// it can be changed freely and put back by [`Self::attach`].
    fn detach(&mut self, call_id: Uuid) -> Option<Entry> {
        let entry = self.calls.remove(&call_id)?;
        if let Some(deadline) = entry.deadline {
            self.deadlines.remove(&(deadline, call_id));
        }
        if let Some(conversation) = &entry.call.conversation_id
            && self.by_conversation.get(conversation) == Some(&call_id)
        {
            self.by_conversation.remove(conversation);
        }
        for p in entry.call.joined() {
            if self.joined.get(&p.user_id) == Some(&call_id) {
                self.joined.remove(&p.user_id);
            }
        }
        Some(entry)
    }

    /// Puts a call back and indexes it; an ended call is dropped instead.
    fn attach(&mut self, entry: Entry) {
        if !entry.call.status.is_live() {
            return;
        }
        let call_id = entry.call.id;
        if let Some(deadline) = entry.deadline {
            self.deadlines.insert((deadline, call_id));
        }
        if let Some(conversation) = &entry.call.conversation_id {
            self.by_conversation.insert(conversation.clone(), call_id);
        }
        for p in entry.call.joined() {
            self.joined.insert(p.user_id.clone(), call_id);
        }
        self.calls.insert(call_id, entry);
    }
}

/// Ends `call`: every joined participant leaves (`actor` with `left`, the others with
/// `others`), every invitee still being rung has missed it. Returns the `call:ended` event.
fn finish(
    call: &mut Call,
    status: CallStatus,
    now: OffsetDateTime,
    reason: EndReason,
    ended_by: Option<UserId>,
    actor: Option<&UserId>,
    others: LeaveReason,
) -> CallEvent {
    for p in &mut call.participants {
        match p.status {
            ParticipantStatus::Joined => {
                p.status = ParticipantStatus::Left;
                p.left_at = Some(now);
                p.left_reason = Some(if Some(&p.user_id) == actor {
                    LeaveReason::Left
                } else {
                    others
                });
            }
            ParticipantStatus::Ringing | ParticipantStatus::Invited => {
                p.status = ParticipantStatus::Missed;
            }
            _ => {}
        }
    }
    call.status = status;
    call.ended_at = Some(now);
    call.end_reason = Some(reason.to_string());
    call.ended_by = ended_by;
    CallEvent::Ended {
        status,
        ended_by: call.ended_by.clone(),
        reason,
        duration_s: call.duration_s(),
    }
}

/// An invitee who has not answered yet; a `busy` invitee of a group call was never rung but may
/// still answer.
fn is_unanswered(status: ParticipantStatus) -> bool {
    matches!(
        status,
        ParticipantStatus::Ringing | ParticipantStatus::Invited | ParticipantStatus::Busy
    )
}

/// A timeout too large for the calendar rings until the end of time rather than panicking.
fn deadline_after(now: OffsetDateTime, timeout: Duration) -> OffsetDateTime {
    now.checked_add(timeout)
        .unwrap_or(if timeout.is_negative() {
            OffsetDateTime::new_utc(time::Date::MIN, time::Time::MIDNIGHT)
        } else {
            OffsetDateTime::new_utc(time::Date::MAX, time::Time::MAX)
        })
}

fn loaded_conversation<'a>(
    conversation: Option<&'a Conversation>,
    id: &ConversationId,
) -> Result<&'a Conversation, SignalingError> {
    match conversation {
        None => Err(SignalingError::new(
            ErrorCode::ConversationNotFound,
            format!("conversation {id} does not exist"),
        )),
        Some(c) if c.id != *id => Err(mismatched_conversation(id, &c.id)),
        Some(c) => Ok(c),
    }
}

/// The binary handed over another conversation than the one asked for: a bug on its side,
/// refused rather than judged against the wrong member list.
fn mismatched_conversation(wanted: &ConversationId, got: &ConversationId) -> SignalingError {
    SignalingError::new(
        ErrorCode::Internal,
        format!("conversation {got} was loaded for {wanted}"),
    )
}

fn participant_or_forbidden<'a>(
    call: &'a Call,
    user: &UserId,
) -> Result<&'a Participant, SignalingError> {
    call.participant(user.as_str()).ok_or_else(|| {
        SignalingError::forbidden(format!("{user} is not a participant of call {}", call.id))
    })
}

/// The participant an admin acts on must be joined: an unknown one is a wrong argument rather
/// than the admin's lack of rights.
fn joined_subject(call: &Call, subject: &UserId) -> Result<(), SignalingError> {
    let Some(p) = call.participant(subject.as_str()) else {
        return Err(SignalingError::invalid_argument(format!(
            "{subject} is not a participant of call {}",
            call.id
        )));
    };
    if p.status != ParticipantStatus::Joined {
        return Err(SignalingError::invalid_state(format!(
            "{subject} is not joined in call {}: participant is {}",
            call.id, p.status
        )));
    }
    Ok(())
}

fn call_not_found(call_id: Uuid) -> SignalingError {
    SignalingError::new(
        ErrorCode::CallNotFound,
        format!("call {call_id} is not ringing or ongoing"),
    )
}

fn not_a_member(users: &[&UserId], conversation: &ConversationId) -> SignalingError {
    let names: Vec<&str> = users.iter().map(|u| u.as_str()).collect();
    let message = match names.as_slice() {
        [one] => format!("{one} is not a member of conversation {conversation}"),
        many => format!(
            "{} are not members of conversation {conversation}",
            many.join(", ")
        ),
    };
    SignalingError::new(ErrorCode::NotAMember, message)
}
