//! Every transition of contract section 4, legal and illegal, against the book.
//!
//! All times derive from one fixed instant; nothing sleeps. Every operation goes through the
//! fixture, which checks the book's invariants afterwards and, for a refusal, that nothing in
//! the book changed.

use std::collections::{HashMap, HashSet};

use time::macros::datetime;

use super::*;
use crate::model::OpaqueId;

const T0: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);
const RING: i64 = 45;

fn at(seconds: i64) -> OffsetDateTime {
    T0 + Duration::seconds(seconds)
}

fn u(id: &str) -> UserId {
    OpaqueId::parse(id).expect("test ids are valid")
}

fn users(ids: &[&str]) -> Vec<UserId> {
    ids.iter().map(|id| u(id)).collect()
}

fn actor(id: &str) -> Actor {
    Actor {
        user_id: u(id),
        name: None,
        admin: false,
    }
}

fn named(id: &str, name: &str) -> Actor {
    Actor {
        name: Some(name.to_owned()),
        ..actor(id)
    }
}

fn admin(id: &str) -> Actor {
    Actor {
        admin: true,
        ..actor(id)
    }
}

fn cid(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn status(call: &Call, user: &str) -> ParticipantStatus {
    call.participant(user)
        .unwrap_or_else(|| panic!("{user} is not a participant"))
        .status
}

fn participant<'a>(call: &'a Call, user: &str) -> &'a Participant {
    call.participant(user)
        .unwrap_or_else(|| panic!("{user} is not a participant"))
}

fn code(result: Result<Outcome, SignalingError>) -> ErrorCode {
    match result {
        Ok(outcome) => panic!("expected an error, got {outcome:#?}"),
        Err(e) => e.code,
    }
}

fn err(result: Result<Outcome, SignalingError>) -> SignalingError {
    match result {
        Ok(outcome) => panic!("expected an error, got {outcome:#?}"),
        Err(e) => e,
    }
}

fn ended(status: CallStatus, by: Option<&str>, reason: EndReason, duration_s: i64) -> CallEvent {
    CallEvent::Ended {
        status,
        ended_by: by.map(u),
        reason,
        duration_s,
    }
}

fn joined_event(user: &str, name: &str) -> CallEvent {
    CallEvent::ParticipantJoined {
        user_id: u(user),
        name: name.to_owned(),
    }
}

fn left_event(user: &str, reason: LeaveReason) -> CallEvent {
    CallEvent::ParticipantLeft {
        user_id: u(user),
        name: user.to_owned(),
        reason,
    }
}

/// What a refused operation must leave untouched.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    calls: Vec<Call>,
    joined: usize,
    next_deadline: Option<OffsetDateTime>,
}

struct Fx {
    book: CallBook,
    offline: HashSet<String>,
    conversations: HashMap<String, Conversation>,
}

impl Fx {
    fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    fn with_limits(limits: Limits) -> Self {
        let mut fx = Self {
            book: CallBook::new(limits),
            offline: HashSet::new(),
            conversations: HashMap::new(),
        };
        fx.conversation("team", &["alice", "bob", "carol", "dave", "erin", "frank"]);
        fx.conversation("pair", &["alice", "bob"]);
        fx.conversation("other", &["xena", "yuri", "zed"]);
        fx
    }

    fn conversation(&mut self, id: &str, members: &[&str]) {
        self.conversations.insert(
            id.to_owned(),
            Conversation {
                id: u(id),
                name: None,
                members: users(members),
            },
        );
    }

    fn offline(&mut self, user: &str) {
        self.offline.insert(user.to_owned());
    }

    fn fingerprint(&self) -> Fingerprint {
        let mut calls: Vec<_> = self.book.live_calls().cloned().collect();
        calls.sort_by_key(|c| c.id);
        Fingerprint {
            calls,
            joined: self.book.joined_participants(),
            next_deadline: self.book.next_deadline(),
        }
    }

    /// Runs one operation, then checks the invariants, and that a refusal changed nothing.
    fn run(
        &mut self,
        op: impl FnOnce(
            &mut CallBook,
            &HashMap<String, Conversation>,
            &HashSet<String>,
        ) -> Result<Outcome, SignalingError>,
    ) -> Result<Outcome, SignalingError> {
        let before = self.fingerprint();
        let result = op(&mut self.book, &self.conversations, &self.offline);
        if let Err(e) = self.book.check_invariants() {
            panic!("invariant broken: {e}");
        }
        if result.is_err() {
            assert_eq!(before, self.fingerprint(), "a refusal changed the book");
        }
        if let Ok(outcome) = &result {
            if outcome.is_final() {
                assert!(self.book.get(outcome.call.id).is_none(), "ended call kept");
            } else {
                assert_eq!(self.book.get(outcome.call.id), Some(&outcome.call));
            }
        }
        result
    }

    fn initiate_as(
        &mut self,
        call_id: Uuid,
        caller: Actor,
        invitees: &[&str],
        kind: Option<CallKind>,
        conversation: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        let req = Initiate {
            call_id,
            caller,
            invitees: users(invitees),
            media: MediaKind::Video,
            kind,
            conversation_id: conversation.map(u),
        };
        self.run(|book, conversations, offline| {
            let loaded = conversation.and_then(|c| conversations.get(c));
            book.initiate(req, loaded, &|user| !offline.contains(user.as_str()), now)
        })
    }

    fn initiate(
        &mut self,
        call_id: Uuid,
        caller: &str,
        invitees: &[&str],
        kind: Option<CallKind>,
        conversation: Option<&str>,
    ) -> Result<Outcome, SignalingError> {
        self.initiate_as(call_id, actor(caller), invitees, kind, conversation, T0)
    }

    fn direct(&mut self, call_id: Uuid, caller: &str, callee: &str) -> Outcome {
        self.initiate(call_id, caller, &[callee], None, None)
            .expect("direct call starts")
    }

    fn group(&mut self, call_id: Uuid, caller: &str, invitees: &[&str]) -> Outcome {
        self.initiate(
            call_id,
            caller,
            invitees,
            Some(CallKind::Group),
            Some("team"),
        )
        .expect("group call starts")
    }

    fn accept(
        &mut self,
        call_id: Uuid,
        who: &str,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        self.accept_as(call_id, actor(who), now)
    }

    fn accept_as(
        &mut self,
        call_id: Uuid,
        who: Actor,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        self.run(|book, _, _| book.accept(call_id, &who, now))
    }

    fn reject(
        &mut self,
        call_id: Uuid,
        who: &str,
        reason: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        let who = actor(who);
        self.run(|book, _, _| book.reject(call_id, &who, reason.map(str::to_owned), now))
    }

    /// Joins with the call's own conversation, as the binary loads it.
    fn join(
        &mut self,
        call_id: Uuid,
        who: &str,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        self.join_as(call_id, actor(who), now)
    }

    fn join_as(
        &mut self,
        call_id: Uuid,
        who: Actor,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        let conversation = self
            .book
            .get(call_id)
            .and_then(|c| c.conversation_id.clone());
        self.run(|book, conversations, _| {
            let loaded = conversation.and_then(|c| conversations.get(c.as_str()));
            book.join(call_id, &who, loaded, now)
        })
    }

    fn leave(
        &mut self,
        call_id: Uuid,
        who: &str,
        reason: LeaveReason,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        let who = u(who);
        self.run(|book, _, _| book.leave(call_id, &who, reason, now))
    }

    fn end_as(
        &mut self,
        call_id: Uuid,
        who: Actor,
        reason: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        self.run(|book, _, _| book.end(call_id, &who, reason.map(str::to_owned), now))
    }

    fn end(
        &mut self,
        call_id: Uuid,
        who: &str,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        self.end_as(call_id, actor(who), None, now)
    }

    fn media(
        &mut self,
        call_id: Uuid,
        who: &str,
        patch: MediaPatch,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        let who = u(who);
        self.run(|book, _, _| book.set_media(call_id, &who, patch, now))
    }

    fn expire(&mut self, now: OffsetDateTime) -> Vec<Outcome> {
        let outcomes = self.book.expire(now);
        if let Err(e) = self.book.check_invariants() {
            panic!("invariant broken: {e}");
        }
        for outcome in &outcomes {
            assert_eq!(outcome.is_final(), self.book.get(outcome.call.id).is_none());
        }
        outcomes
    }

    fn call(&self, call_id: Uuid) -> &Call {
        self.book.get(call_id).expect("call is live")
    }
}

fn recipients(outcome: &Outcome, event_type: &str) -> Vec<UserId> {
    let mut found = outcome
        .deliveries()
        .filter(|(e, _)| e.type_name() == event_type);
    let (_, to) = found
        .next()
        .unwrap_or_else(|| panic!("no {event_type} in {:?}", outcome.events));
    to
}

// ---------------------------------------------------------------------------------------------
// initiate

#[test]
fn initiate_direct_rings_the_online_callee() {
    let mut fx = Fx::new();
    let out = fx
        .initiate_as(cid(1), named("alice", "Alice A."), &["bob"], None, None, T0)
        .expect("starts");
    let call = &out.call;
    assert_eq!(call.kind, CallKind::Direct);
    assert_eq!(call.status, CallStatus::Ringing);
    assert_eq!(call.version, 1);
    assert_eq!(call.created_at, T0);
    assert_eq!(call.started_at, None);
    assert_eq!(call.conversation_id, None);
    assert_eq!(call.initiated_by, u("alice"));
    assert_eq!(out.before, None);
    assert_eq!(out.media_change, None);

    let alice = participant(call, "alice");
    assert_eq!(alice.status, ParticipantStatus::Joined);
    assert_eq!(alice.joined_at, Some(T0));
    assert_eq!(alice.name, "Alice A.");
    assert_eq!(alice.media, MediaState::initial(MediaKind::Video));
    let bob = participant(call, "bob");
    assert_eq!(bob.status, ParticipantStatus::Ringing);
    assert_eq!(bob.name, "bob");
    assert_eq!(bob.joined_at, None);
    assert!(bob.media.video_enabled && !bob.media.audio_muted && !bob.media.screen_sharing);
    assert_eq!(
        call.participants
            .iter()
            .map(|p| p.user_id.as_str())
            .collect::<Vec<_>>(),
        ["alice", "bob"]
    );

    assert_eq!(
        out.events,
        vec![
            CallEvent::Incoming {
                user_ids: users(&["bob"])
            },
            CallEvent::Ringing {
                user_ids: users(&["bob"])
            },
        ]
    );
    assert_eq!(fx.book.next_deadline(), Some(at(RING)));
    assert_eq!(fx.book.joined_call_of("alice"), Some(cid(1)));
    assert_eq!(fx.book.joined_call_of("bob"), None);
    let ringing = |user| {
        fx.book
            .calls_ringing(user)
            .map(|c| c.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ringing("bob"), [cid(1)]);
    assert_eq!(
        ringing("alice"),
        Vec::<Uuid>::new(),
        "the caller is joined, not rung"
    );
    assert_eq!(fx.book.active_calls(), 1);
    assert_eq!(fx.book.joined_participants(), 1);
}

#[test]
fn initiate_marks_offline_invitees_invited_and_does_not_ring_them() {
    let mut fx = Fx::new();
    fx.offline("carol");
    let out = fx.group(cid(1), "alice", &["bob", "carol", "dave"]);
    assert_eq!(status(&out.call, "bob"), ParticipantStatus::Ringing);
    assert_eq!(status(&out.call, "carol"), ParticipantStatus::Invited);
    assert_eq!(status(&out.call, "dave"), ParticipantStatus::Ringing);
    assert_eq!(
        out.events,
        vec![
            CallEvent::Incoming {
                user_ids: users(&["bob", "dave"])
            },
            CallEvent::Ringing {
                user_ids: users(&["bob", "dave"])
            },
        ]
    );
}

#[test]
fn initiate_with_everyone_offline_still_rings_out() {
    let mut fx = Fx::new();
    fx.offline("bob");
    let out = fx.direct(cid(1), "alice", "bob");
    assert_eq!(status(&out.call, "bob"), ParticipantStatus::Invited);
    assert_eq!(
        out.events,
        vec![
            CallEvent::Incoming { user_ids: vec![] },
            CallEvent::Ringing { user_ids: vec![] },
        ]
    );
    assert_eq!(fx.book.next_deadline(), Some(at(RING)));
}

#[test]
fn initiate_kind_defaults_by_invitee_count() {
    let mut fx = Fx::new();
    let one = fx
        .initiate(cid(1), "alice", &["bob"], None, Some("pair"))
        .expect("direct");
    assert_eq!(one.call.kind, CallKind::Direct);
    let two = fx
        .initiate(cid(2), "carol", &["dave", "erin"], None, Some("team"))
        .expect("group");
    assert_eq!(two.call.kind, CallKind::Group);
    assert_eq!(two.call.media, MediaKind::Video);
    // An explicit group call with a single invitee is fine.
    let single = fx
        .initiate(
            cid(3),
            "xena",
            &["yuri"],
            Some(CallKind::Group),
            Some("other"),
        )
        .expect("group of one invitee");
    assert_eq!(single.call.kind, CallKind::Group);
}

#[test]
fn initiate_indexes_the_conversation() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob"]);
    assert_eq!(
        fx.book.active_call_of_conversation("team").map(|c| c.id),
        Some(cid(1))
    );
    assert!(fx.book.active_call_of_conversation("pair").is_none());
    fx.initiate(cid(2), "xena", &["yuri"], None, Some("other"))
        .expect("direct in conversation");
    assert_eq!(
        fx.book.active_call_of_conversation("other").map(|c| c.id),
        Some(cid(2))
    );
    assert_eq!(fx.book.live_calls().count(), 2);
}

#[test]
fn initiate_rejects_bad_arguments() {
    let mut fx = Fx::new();
    let cases: &[(&[&str], Option<CallKind>, Option<&str>)] = &[
        (&[], None, None),
        (&[], None, Some("team")),
        (&["bob", "bob"], None, Some("team")),
        (
            &["bob", "carol", "bob"],
            Some(CallKind::Group),
            Some("team"),
        ),
        (&["alice"], None, None),
        (&["bob", "alice"], None, Some("team")),
        (&["bob", "carol"], Some(CallKind::Direct), Some("team")),
        (&["bob", "carol"], None, None),
        (&["bob"], Some(CallKind::Group), None),
    ];
    for (invitees, kind, conversation) in cases {
        let e = err(fx.initiate(cid(1), "alice", invitees, *kind, *conversation));
        assert_eq!(
            e.code,
            ErrorCode::InvalidArgument,
            "{invitees:?} {kind:?} {conversation:?}"
        );
    }
    assert_eq!(fx.book.active_calls(), 0);
}

#[test]
fn initiate_needs_an_existing_conversation() {
    let mut fx = Fx::new();
    for (invitees, kind) in [
        (&["bob"][..], None),
        (&["bob", "carol"][..], Some(CallKind::Group)),
    ] {
        let e = err(fx.initiate(cid(1), "alice", invitees, kind, Some("nowhere")));
        assert_eq!(e.code, ErrorCode::ConversationNotFound);
        assert!(e.message.contains("nowhere"));
    }
}

#[test]
fn initiate_needs_caller_and_invitees_to_be_members() {
    let mut fx = Fx::new();
    let e = err(fx.initiate(cid(1), "mallory", &["bob"], None, Some("team")));
    assert_eq!(e.code, ErrorCode::NotAMember);
    assert!(e.message.contains("mallory"), "{}", e.message);

    let e = err(fx.initiate(cid(1), "alice", &["bob", "mallory"], None, Some("team")));
    assert_eq!(e.code, ErrorCode::NotAMember);
    assert!(
        e.message.contains("mallory") && !e.message.contains("bob"),
        "{}",
        e.message
    );

    let e = err(fx.initiate(
        cid(1),
        "alice",
        &["mallory", "bob", "trudy"],
        None,
        Some("team"),
    ));
    assert!(
        e.message.contains("mallory") && e.message.contains("trudy"),
        "{}",
        e.message
    );

    // A direct call in a conversation needs both sides to be members too.
    let e = err(fx.initiate(cid(1), "alice", &["carol"], None, Some("pair")));
    assert_eq!(e.code, ErrorCode::NotAMember);
    assert!(e.message.contains("carol"));
    assert_eq!(fx.book.active_calls(), 0);
}

#[test]
fn initiate_refuses_a_second_live_call_in_a_conversation() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob"]);
    let e = err(fx.initiate(
        cid(2),
        "carol",
        &["dave"],
        Some(CallKind::Group),
        Some("team"),
    ));
    assert_eq!(e.code, ErrorCode::ActiveCallExists);
    assert_eq!(e.details, Some(serde_json::json!({ "call_id": cid(1) })));
    // Direct calls that name the conversation count too.
    let e = err(fx.initiate(cid(2), "carol", &["dave"], None, Some("team")));
    assert_eq!(e.code, ErrorCode::ActiveCallExists);
    // Once the live call is over, the conversation is free again.
    fx.end(cid(1), "alice", at(1)).expect("ends");
    assert!(fx.book.active_call_of_conversation("team").is_none());
    fx.initiate(cid(2), "carol", &["dave"], None, Some("team"))
        .expect("free again");
}

#[test]
fn initiate_refuses_a_caller_joined_elsewhere() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    let e = err(fx.initiate(cid(2), "alice", &["carol"], None, None));
    assert_eq!(e.code, ErrorCode::InvalidState);
    // The callee of a ringing call is not joined yet and may call someone else.
    fx.direct(cid(3), "bob", "carol");
    assert_eq!(
        code(fx.accept(cid(1), "bob", at(1))),
        ErrorCode::InvalidState
    );
}

#[test]
fn initiate_checks_in_the_documented_order() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob"]); // team busy, alice joined
    // Arguments before the conversation: a duplicate wins over an unknown conversation.
    assert_eq!(
        code(fx.initiate(cid(2), "alice", &["bob", "bob"], None, Some("nowhere"))),
        ErrorCode::InvalidArgument
    );
    // The conversation before the caller's state.
    assert_eq!(
        code(fx.initiate(cid(2), "alice", &["bob"], None, Some("nowhere"))),
        ErrorCode::ConversationNotFound
    );
    assert_eq!(
        code(fx.initiate(cid(2), "alice", &["zed"], None, Some("team"))),
        ErrorCode::NotAMember
    );
    // The caller's state before the conversation's live call.
    assert_eq!(
        code(fx.initiate(cid(2), "alice", &["carol"], None, Some("team"))),
        ErrorCode::InvalidState
    );
    assert_eq!(
        code(fx.initiate(cid(2), "carol", &["dave"], None, Some("team"))),
        ErrorCode::ActiveCallExists
    );
    // The live call before the callee's busyness: bob is joined nowhere yet, make him so.
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    assert_eq!(
        code(fx.initiate(cid(2), "carol", &["bob"], None, Some("team"))),
        ErrorCode::ActiveCallExists
    );
}

#[test]
fn initiate_direct_to_a_joined_user_records_a_busy_call() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "carol", "bob");
    fx.accept(cid(1), "bob", at(5)).expect("accepts");
    let before = fx.fingerprint();

    let out = fx
        .initiate_as(
            cid(2),
            named("alice", "Alice"),
            &["bob"],
            None,
            Some("pair"),
            at(10),
        )
        .expect("busy is an outcome");
    let call = &out.call;
    assert_eq!(call.status, CallStatus::Busy);
    assert_eq!(call.end_reason.as_deref(), Some("busy"));
    assert_eq!(call.created_at, at(10));
    assert_eq!(call.ended_at, Some(at(10)));
    assert_eq!(call.started_at, None);
    assert_eq!(call.ended_by, None);
    assert_eq!(call.duration_s(), 0);
    assert_eq!(call.version, 1);
    assert_eq!(call.conversation_id, Some(u("pair")));
    let alice = participant(call, "alice");
    assert_eq!(alice.status, ParticipantStatus::Left);
    assert_eq!(alice.name, "Alice");
    assert_eq!(
        (alice.joined_at, alice.left_at),
        (Some(at(10)), Some(at(10)))
    );
    assert_eq!(alice.left_reason, Some(LeaveReason::Left));
    let bob = participant(call, "bob");
    assert_eq!(bob.status, ParticipantStatus::Busy);
    assert_eq!(bob.joined_at, None);
    assert_eq!(out.events, vec![CallEvent::Busy { user_id: u("bob") }]);
    assert_eq!(out.before, None);
    assert!(out.is_final());

    // Nothing of it stays in the book.
    assert_eq!(before, fx.fingerprint());
    assert!(fx.book.get(cid(2)).is_none());
    assert!(fx.book.active_call_of_conversation("pair").is_none());
    assert_eq!(fx.book.joined_call_of("alice"), None);
    assert_eq!(fx.book.joined_call_of("bob"), Some(cid(1)));
    assert_eq!(
        code(fx.accept(cid(2), "bob", at(11))),
        ErrorCode::CallNotFound
    );
    // Alice is free to call someone else.
    fx.initiate_as(cid(3), actor("alice"), &["dave"], None, None, at(12))
        .expect("free");
}

#[test]
fn initiate_group_marks_joined_invitees_busy() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "dave", "zed");
    fx.accept(cid(1), "zed", at(1)).expect("accepts");
    let out = fx.group(cid(2), "alice", &["bob", "dave"]);
    assert_eq!(out.call.status, CallStatus::Ringing);
    assert_eq!(status(&out.call, "dave"), ParticipantStatus::Busy);
    assert_eq!(status(&out.call, "bob"), ParticipantStatus::Ringing);
    assert_eq!(
        out.events,
        vec![
            CallEvent::Incoming {
                user_ids: users(&["bob"])
            },
            CallEvent::Ringing {
                user_ids: users(&["bob"])
            },
            CallEvent::Busy { user_id: u("dave") },
        ]
    );
    assert_eq!(recipients(&out, "call:busy"), users(&["alice"]));

    // Dave is still joined in his own call, so he cannot join yet.
    assert_eq!(
        code(fx.join(cid(2), "dave", at(2))),
        ErrorCode::InvalidState
    );
    fx.leave(cid(1), "dave", LeaveReason::Left, at(3))
        .expect("leaves");
    // A busy invitee may answer once free; it was never rung, so join emits no accept.
    let joined = fx.join(cid(2), "dave", at(4)).expect("joins");
    assert_eq!(joined.events, vec![joined_event("dave", "dave")]);
    assert_eq!(joined.call.status, CallStatus::Ongoing);
}

#[test]
fn initiate_refuses_a_reused_call_id_and_a_wrong_conversation() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    assert_eq!(
        code(fx.initiate(cid(1), "carol", &["dave"], None, None)),
        ErrorCode::Internal
    );
    // The binary handing over another conversation than the one named is a bug, not a refusal.
    let pair = fx.conversations.get("pair").cloned();
    let e = fx.run(|book, _, _| {
        book.initiate(
            Initiate {
                call_id: cid(2),
                caller: actor("carol"),
                invitees: users(&["dave"]),
                media: MediaKind::Audio,
                kind: None,
                conversation_id: Some(u("team")),
            },
            pair.as_ref(),
            &|_| true,
            T0,
        )
    });
    assert_eq!(code(e), ErrorCode::Internal);
}

#[test]
fn initiate_audio_call_starts_with_cameras_off() {
    let mut fx = Fx::new();
    let out = fx
        .run(|book, _, _| {
            book.initiate(
                Initiate {
                    call_id: cid(1),
                    caller: actor("alice"),
                    invitees: users(&["bob"]),
                    media: MediaKind::Audio,
                    kind: None,
                    conversation_id: None,
                },
                None,
                &|_| true,
                T0,
            )
        })
        .expect("starts");
    assert!(
        out.call
            .participants
            .iter()
            .all(|p| p.media == MediaState::initial(MediaKind::Audio))
    );
    assert!(!participant(&out.call, "bob").media.video_enabled);
}

// ---------------------------------------------------------------------------------------------
// accept

#[test]
fn accept_direct_starts_the_call_and_drops_its_deadline() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    let out = fx
        .accept_as(cid(1), named("bob", "Bob B."), at(7))
        .expect("accepts");
    let call = &out.call;
    assert_eq!(call.status, CallStatus::Ongoing);
    assert_eq!(call.started_at, Some(at(7)));
    assert_eq!(call.version, 2);
    let bob = participant(call, "bob");
    assert_eq!(bob.status, ParticipantStatus::Joined);
    assert_eq!(bob.joined_at, Some(at(7)));
    assert_eq!(bob.name, "Bob B.");
    assert_eq!(
        out.events,
        vec![
            CallEvent::Accepted { user_id: u("bob") },
            joined_event("bob", "Bob B.")
        ]
    );
    assert_eq!(out.before.as_ref().map(|c| c.version), Some(1));
    assert_eq!(fx.book.next_deadline(), None);
    assert_eq!(fx.book.joined_call_of("bob"), Some(cid(1)));
    assert_eq!(fx.book.joined_participants(), 2);
    assert!(fx.expire(at(1000)).is_empty());
}

#[test]
fn accept_group_keeps_the_deadline_for_the_others() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol"]);
    let out = fx.accept(cid(1), "bob", at(3)).expect("accepts");
    assert_eq!(out.call.status, CallStatus::Ongoing);
    assert_eq!(out.call.started_at, Some(at(3)));
    assert_eq!(status(&out.call, "carol"), ParticipantStatus::Ringing);
    assert_eq!(fx.book.next_deadline(), Some(at(RING)));
    // A second accept does not restart the call.
    let out = fx.accept(cid(1), "carol", at(9)).expect("accepts");
    assert_eq!(out.call.started_at, Some(at(3)));
    assert_eq!(out.call.version, 3);
    assert_eq!(fx.book.joined_participants(), 3);
}

#[test]
fn accept_by_an_offline_invitee() {
    let mut fx = Fx::new();
    fx.offline("bob");
    fx.direct(cid(1), "alice", "bob");
    let out = fx.accept(cid(1), "bob", at(2)).expect("invited may accept");
    assert_eq!(status(&out.call, "bob"), ParticipantStatus::Joined);
}

#[test]
fn accept_refusals() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol", "dave"]);
    assert_eq!(
        code(fx.accept(cid(9), "bob", at(1))),
        ErrorCode::CallNotFound
    );
    // Outsiders, even conversation members, are not invitees.
    assert_eq!(code(fx.accept(cid(1), "erin", at(1))), ErrorCode::Forbidden);
    assert_eq!(
        code(fx.accept(cid(1), "mallory", at(1))),
        ErrorCode::Forbidden
    );
    // The initiator cannot accept its own call.
    assert_eq!(
        code(fx.accept(cid(1), "alice", at(1))),
        ErrorCode::InvalidState
    );
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    let e = err(fx.accept(cid(1), "bob", at(2)));
    assert_eq!(e.code, ErrorCode::InvalidState);
    assert!(e.message.contains("already joined"), "{}", e.message);
    // Declined, then changes their mind: accept is over, join is the way in.
    fx.reject(cid(1), "carol", None, at(3)).expect("rejects");
    assert_eq!(
        code(fx.accept(cid(1), "carol", at(4))),
        ErrorCode::InvalidState
    );
    // Left, then accepts again.
    fx.leave(cid(1), "bob", LeaveReason::Left, at(5))
        .expect("leaves");
    assert_eq!(
        code(fx.accept(cid(1), "bob", at(6))),
        ErrorCode::InvalidState
    );
    // Missed after the ring timeout of an ongoing group call.
    fx.expire(at(RING));
    assert_eq!(status(fx.call(cid(1)), "dave"), ParticipantStatus::Missed);
    let e = err(fx.accept(cid(1), "dave", at(RING + 1)));
    assert_eq!(e.code, ErrorCode::InvalidState);
    assert!(e.message.contains("join"), "{}", e.message);
    fx.join(cid(1), "dave", at(RING + 2))
        .expect("a missed invitee joins");
}

#[test]
fn accept_while_joined_elsewhere_is_invalid_state() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "bob", "carol");
    fx.direct(cid(2), "alice", "carol");
    fx.accept(cid(1), "carol", at(1))
        .expect("accepts the first");
    assert_eq!(
        code(fx.accept(cid(2), "carol", at(2))),
        ErrorCode::InvalidState
    );
    assert_eq!(
        code(fx.join(cid(2), "carol", at(2))),
        ErrorCode::InvalidState
    );
    fx.leave(cid(1), "carol", LeaveReason::Left, at(3))
        .expect("leaves");
    fx.accept(cid(2), "carol", at(4)).expect("now free");
}

#[test]
fn accept_and_join_enforce_the_joined_limit() {
    let mut fx = Fx::with_limits(Limits {
        max_participants: 3,
        ring_timeout: Duration::seconds(RING),
    });
    let out = fx.group(cid(1), "alice", &["bob", "carol", "dave", "erin"]);
    // Only joined participants count: five listed, one joined.
    assert_eq!(out.call.participants.len(), 5);
    fx.accept(cid(1), "bob", at(1)).expect("2 of 3");
    fx.join(cid(1), "carol", at(2)).expect("3 of 3");
    assert_eq!(code(fx.accept(cid(1), "dave", at(3))), ErrorCode::RoomFull);
    assert_eq!(code(fx.join(cid(1), "dave", at(3))), ErrorCode::RoomFull);
    assert_eq!(code(fx.join(cid(1), "frank", at(3))), ErrorCode::RoomFull);
    // Joined-elsewhere is judged before the room.
    fx.direct(cid(2), "erin", "zed");
    assert_eq!(
        code(fx.accept(cid(1), "erin", at(3))),
        ErrorCode::InvalidState
    );
    // A re-join of someone already in does not count twice.
    fx.join(cid(1), "carol", at(4))
        .expect("idempotent at the limit");
    fx.leave(cid(1), "bob", LeaveReason::Left, at(5))
        .expect("leaves");
    fx.accept(cid(1), "dave", at(6)).expect("room again");
    assert_eq!(fx.call(cid(1)).joined().count(), 3);
}

#[test]
fn the_initiator_counts_toward_the_limit() {
    let mut fx = Fx::with_limits(Limits {
        max_participants: 1,
        ring_timeout: Duration::seconds(RING),
    });
    fx.direct(cid(1), "alice", "bob");
    assert_eq!(code(fx.accept(cid(1), "bob", at(1))), ErrorCode::RoomFull);
}

#[test]
fn busy_group_invitee_may_accept_once_free() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "dave", "zed");
    fx.accept(cid(1), "zed", at(1)).expect("accepts");
    fx.group(cid(2), "alice", &["bob", "dave"]);
    assert_eq!(
        code(fx.accept(cid(2), "dave", at(2))),
        ErrorCode::InvalidState
    );
    fx.end(cid(1), "dave", at(3)).expect("ends own call");
    let out = fx
        .accept(cid(2), "dave", at(4))
        .expect("accepts while ringing");
    assert_eq!(out.call.status, CallStatus::Ongoing);
    assert_eq!(out.events[0], CallEvent::Accepted { user_id: u("dave") });
}

// ---------------------------------------------------------------------------------------------
// reject

#[test]
fn reject_direct_ends_the_call() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    let out = fx.reject(cid(1), "bob", None, at(4)).expect("rejects");
    let call = &out.call;
    assert_eq!(call.status, CallStatus::Rejected);
    assert_eq!(call.ended_at, Some(at(4)));
    assert_eq!(call.end_reason.as_deref(), Some("rejected"));
    assert_eq!(call.ended_by, Some(u("bob")));
    assert_eq!(call.version, 2);
    assert_eq!(status(call, "bob"), ParticipantStatus::Declined);
    let alice = participant(call, "alice");
    assert_eq!(alice.status, ParticipantStatus::Left);
    assert_eq!(alice.left_at, Some(at(4)));
    assert_eq!(alice.left_reason, Some(LeaveReason::Left));
    assert_eq!(
        out.events,
        vec![
            CallEvent::Rejected {
                user_id: u("bob"),
                reason: None
            },
            ended(CallStatus::Rejected, Some("bob"), EndReason::Rejected, 0),
        ]
    );
    assert!(out.is_final());
    assert_eq!(fx.book.active_calls(), 0);
    assert_eq!(fx.book.joined_participants(), 0);
    assert_eq!(fx.book.next_deadline(), None);
}

#[test]
fn reject_direct_carries_the_reason() {
    let mut fx = Fx::new();
    fx.initiate(cid(1), "alice", &["bob"], None, Some("pair"))
        .expect("starts");
    let out = fx
        .reject(cid(1), "bob", Some("in a meeting"), at(2))
        .expect("rejects");
    assert_eq!(out.call.end_reason.as_deref(), Some("in a meeting"));
    assert_eq!(
        out.events,
        vec![
            CallEvent::Rejected {
                user_id: u("bob"),
                reason: Some("in a meeting".into())
            },
            ended(
                CallStatus::Rejected,
                Some("bob"),
                EndReason::Given("in a meeting".into()),
                0
            ),
        ]
    );
    assert!(fx.book.active_call_of_conversation("pair").is_none());
}

#[test]
fn reject_group_by_some_keeps_ringing() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol"]);
    let out = fx
        .reject(cid(1), "bob", Some("busy"), at(2))
        .expect("rejects");
    assert_eq!(out.call.status, CallStatus::Ringing);
    assert_eq!(status(&out.call, "bob"), ParticipantStatus::Declined);
    assert_eq!(
        out.events,
        vec![CallEvent::Rejected {
            user_id: u("bob"),
            reason: Some("busy".into())
        }]
    );
    assert_eq!(fx.book.next_deadline(), Some(at(RING)));
}

#[test]
fn reject_group_by_all_ends_it_rejected() {
    let mut fx = Fx::new();
    fx.offline("dave");
    fx.direct(cid(9), "erin", "zed");
    fx.accept(cid(9), "zed", at(0)).expect("erin is busy");
    fx.group(cid(1), "alice", &["bob", "carol", "dave", "erin"]);
    for who in ["bob", "dave", "erin"] {
        let out = fx.reject(cid(1), who, None, at(1)).expect("rejects");
        assert_eq!(out.call.status, CallStatus::Ringing, "after {who}");
        assert_eq!(out.events.len(), 1);
    }
    let out = fx.reject(cid(1), "carol", None, at(2)).expect("last one");
    let call = &out.call;
    assert_eq!(call.status, CallStatus::Rejected);
    assert_eq!(call.end_reason.as_deref(), Some("rejected"));
    assert_eq!(call.ended_at, Some(at(2)));
    assert_eq!(status(call, "alice"), ParticipantStatus::Left);
    for who in ["bob", "carol", "dave", "erin"] {
        assert_eq!(status(call, who), ParticipantStatus::Declined, "{who}");
    }
    assert_eq!(
        out.events,
        vec![
            CallEvent::Rejected {
                user_id: u("carol"),
                reason: None
            },
            ended(CallStatus::Rejected, Some("carol"), EndReason::Rejected, 0),
        ]
    );
    assert!(fx.book.active_call_of_conversation("team").is_none());
    assert_eq!(fx.book.joined_call_of("alice"), None);
}

#[test]
fn reject_group_while_a_busy_invitee_is_unanswered_keeps_ringing() {
    let mut fx = Fx::new();
    fx.direct(cid(9), "carol", "zed");
    fx.accept(cid(9), "zed", at(0)).expect("carol is busy");
    fx.group(cid(1), "alice", &["bob", "carol"]);
    let out = fx.reject(cid(1), "bob", None, at(1)).expect("rejects");
    assert_eq!(out.call.status, CallStatus::Ringing);
}

#[test]
fn reject_in_an_ongoing_group_only_declines() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol"]);
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    let out = fx.reject(cid(1), "carol", None, at(2)).expect("rejects");
    assert_eq!(out.call.status, CallStatus::Ongoing);
    assert_eq!(status(&out.call, "carol"), ParticipantStatus::Declined);
    assert_eq!(
        out.events,
        vec![CallEvent::Rejected {
            user_id: u("carol"),
            reason: None
        }]
    );
}

#[test]
fn reject_refusals() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol", "dave"]);
    assert_eq!(
        code(fx.reject(cid(9), "bob", None, at(1))),
        ErrorCode::CallNotFound
    );
    assert_eq!(
        code(fx.reject(cid(1), "erin", None, at(1))),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(fx.reject(cid(1), "alice", None, at(1))),
        ErrorCode::InvalidState
    );
    fx.reject(cid(1), "bob", None, at(1)).expect("rejects");
    assert_eq!(
        code(fx.reject(cid(1), "bob", None, at(2))),
        ErrorCode::InvalidState
    );
    fx.accept(cid(1), "carol", at(2)).expect("accepts");
    assert_eq!(
        code(fx.reject(cid(1), "carol", None, at(3))),
        ErrorCode::InvalidState
    );
    fx.expire(at(RING));
    assert_eq!(
        code(fx.reject(cid(1), "dave", None, at(RING + 1))),
        ErrorCode::InvalidState
    );
    fx.leave(cid(1), "carol", LeaveReason::Left, at(RING + 2))
        .expect("leaves");
    assert_eq!(
        code(fx.reject(cid(1), "carol", None, at(RING + 3))),
        ErrorCode::InvalidState
    );
}

// ---------------------------------------------------------------------------------------------
// join

#[test]
fn join_group_by_a_non_member_is_refused() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob"]);
    let e = err(fx.join(cid(1), "mallory", at(1)));
    assert_eq!(e.code, ErrorCode::NotAMember);
    assert!(e.message.contains("mallory"));
    // Without the conversation (deleted meanwhile) only participants may join.
    let no_conversation = fx.run(|book, _, _| book.join(cid(1), &actor("carol"), None, at(1)));
    assert_eq!(code(no_conversation), ErrorCode::NotAMember);
    let bob = fx
        .run(|book, _, _| book.join(cid(1), &actor("bob"), None, at(1)))
        .expect("participants need no conversation");
    assert_eq!(status(&bob.call, "bob"), ParticipantStatus::Joined);
    // Another conversation than the call's is a bug of the caller.
    let other = fx.conversations.get("other").cloned();
    let wrong = fx.run(|book, _, _| book.join(cid(1), &actor("zed"), other.as_ref(), at(2)));
    assert_eq!(code(wrong), ErrorCode::Internal);
    assert_eq!(code(fx.join(cid(9), "bob", at(2))), ErrorCode::CallNotFound);
}

#[test]
fn join_group_by_an_uninvited_member_appends_them() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob"]);
    let out = fx
        .join_as(cid(1), named("frank", "Frank F."), at(5))
        .expect("joins");
    let call = &out.call;
    assert_eq!(call.participants.len(), 3);
    let frank = &call.participants[2];
    assert_eq!(frank.user_id, u("frank"));
    assert_eq!(frank.name, "Frank F.");
    assert_eq!(frank.status, ParticipantStatus::Joined);
    assert_eq!(frank.joined_at, Some(at(5)));
    assert_eq!(frank.media, MediaState::initial(MediaKind::Video));
    assert_eq!(call.status, CallStatus::Ongoing);
    assert_eq!(call.started_at, Some(at(5)));
    // Frank was never rung, so nobody needs telling that he answered.
    assert_eq!(out.events, vec![joined_event("frank", "Frank F.")]);
    assert_eq!(status(call, "bob"), ParticipantStatus::Ringing);
    assert_eq!(fx.book.next_deadline(), Some(at(RING)));
}

#[test]
fn join_by_a_ringing_invitee_also_accepts() {
    let mut fx = Fx::new();
    fx.offline("carol");
    fx.group(cid(1), "alice", &["bob", "carol"]);
    let out = fx.join(cid(1), "bob", at(2)).expect("joins");
    assert_eq!(
        out.events,
        vec![
            CallEvent::Accepted { user_id: u("bob") },
            joined_event("bob", "bob")
        ]
    );
    // An invitee still ringing in the now ongoing call gets the same treatment, so that its
    // other devices stop ringing.
    let out = fx.join(cid(1), "carol", at(3)).expect("joins");
    assert_eq!(
        out.events,
        vec![
            CallEvent::Accepted {
                user_id: u("carol")
            },
            joined_event("carol", "carol")
        ]
    );
}

#[test]
fn join_is_idempotent_for_the_joined() {
    let mut fx = Fx::new();
    let start = fx.group(cid(1), "alice", &["bob"]);
    let out = fx.join(cid(1), "alice", at(3)).expect("re-joins");
    assert!(out.events.is_empty());
    assert_eq!(out.call, start.call);
    assert_eq!(out.before.as_ref(), Some(&start.call));
    assert_eq!(out.call.version, 1);
    assert_eq!(out.call.status, CallStatus::Ringing);

    fx.accept(cid(1), "bob", at(4)).expect("accepts");
    fx.media(
        cid(1),
        "bob",
        MediaPatch {
            audio_muted: Some(true),
            ..Default::default()
        },
        at(5),
    )
    .expect("mutes");
    let out = fx
        .join_as(cid(1), named("bob", "Renamed"), at(6))
        .expect("re-joins");
    assert!(out.events.is_empty());
    assert_eq!(out.call.version, 3);
    let bob = participant(&out.call, "bob");
    assert_eq!(bob.joined_at, Some(at(4)));
    assert_eq!(bob.name, "bob");
    assert!(bob.media.audio_muted, "a reconnect keeps the switches");
}

#[test]
fn join_after_leaving_a_group_call() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob"]);
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    fx.media(
        cid(1),
        "bob",
        MediaPatch {
            screen_sharing: Some(true),
            ..Default::default()
        },
        at(2),
    )
    .expect("shares");
    fx.leave(cid(1), "bob", LeaveReason::Disconnected, at(3))
        .expect("drops");
    let out = fx.join(cid(1), "bob", at(10)).expect("rejoins");
    let bob = participant(&out.call, "bob");
    assert_eq!(bob.status, ParticipantStatus::Joined);
    assert_eq!(bob.joined_at, Some(at(10)));
    assert_eq!((bob.left_at, bob.left_reason), (None, None));
    assert_eq!(bob.media, MediaState::initial(MediaKind::Video));
    assert_eq!(out.events, vec![joined_event("bob", "bob")]);
    assert_eq!(out.call.started_at, Some(at(1)));
    // The initiator may come back too.
    fx.leave(cid(1), "alice", LeaveReason::Left, at(11))
        .expect("alice leaves");
    fx.join(cid(1), "alice", at(12)).expect("alice rejoins");
}

#[test]
fn join_by_a_declined_group_invitee() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol"]);
    fx.reject(cid(1), "bob", None, at(1)).expect("declines");
    let out = fx.join(cid(1), "bob", at(2)).expect("changes their mind");
    assert_eq!(out.events, vec![joined_event("bob", "bob")]);
    assert_eq!(out.call.status, CallStatus::Ongoing);
}

#[test]
fn join_a_missed_group_invite_after_it_went_ongoing() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol"]);
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    let outs = fx.expire(at(RING));
    assert_eq!(outs.len(), 1);
    assert_eq!(status(fx.call(cid(1)), "carol"), ParticipantStatus::Missed);
    let out = fx.join(cid(1), "carol", at(RING + 30)).expect("joins late");
    assert_eq!(status(&out.call, "carol"), ParticipantStatus::Joined);
    assert_eq!(out.events, vec![joined_event("carol", "carol")]);
}

#[test]
fn join_a_direct_call() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    // Only its two participants, conversation or not.
    assert_eq!(code(fx.join(cid(1), "carol", at(1))), ErrorCode::Forbidden);
    // The caller is joined already.
    let out = fx.join(cid(1), "alice", at(1)).expect("idempotent");
    assert!(out.events.is_empty());

    // The callee joining is exactly an accept.
    let mut twin = Fx::new();
    twin.direct(cid(1), "alice", "bob");
    let joined = fx
        .join_as(cid(1), named("bob", "Bob"), at(2))
        .expect("joins");
    let accepted = twin
        .accept_as(cid(1), named("bob", "Bob"), at(2))
        .expect("accepts");
    assert_eq!(joined, accepted);
    assert_eq!(fx.book.next_deadline(), None);
}

#[test]
fn a_direct_call_in_a_conversation_is_still_participants_only() {
    let mut fx = Fx::new();
    fx.conversation("trio", &["alice", "bob", "carol"]);
    fx.initiate(cid(1), "alice", &["bob"], None, Some("trio"))
        .expect("starts");
    assert_eq!(code(fx.join(cid(1), "carol", at(1))), ErrorCode::Forbidden);
}

// ---------------------------------------------------------------------------------------------
// leave

#[test]
fn leave_ringing_direct_cancels() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    let out = fx
        .leave(cid(1), "alice", LeaveReason::Left, at(5))
        .expect("leaves");
    let call = &out.call;
    assert_eq!(call.status, CallStatus::Cancelled);
    assert_eq!(call.end_reason.as_deref(), Some("left"));
    assert_eq!(call.ended_by, Some(u("alice")));
    assert_eq!(call.ended_at, Some(at(5)));
    assert_eq!(status(call, "bob"), ParticipantStatus::Missed);
    let alice = participant(call, "alice");
    assert_eq!(
        (alice.status, alice.left_at),
        (ParticipantStatus::Left, Some(at(5)))
    );
    assert_eq!(alice.left_reason, Some(LeaveReason::Left));
    assert_eq!(
        out.events,
        vec![
            left_event("alice", LeaveReason::Left),
            ended(CallStatus::Cancelled, Some("alice"), EndReason::Left, 0),
        ]
    );
    assert_eq!(fx.book.active_calls(), 0);
    assert_eq!(fx.book.next_deadline(), None);
}

#[test]
fn leave_ongoing_direct_completes() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    fx.accept(cid(1), "bob", at(10)).expect("accepts");
    let out = fx
        .leave(cid(1), "bob", LeaveReason::Left, at(75))
        .expect("leaves");
    let call = &out.call;
    assert_eq!(call.status, CallStatus::Completed);
    assert_eq!(call.duration_s(), 65);
    assert_eq!(call.ended_by, Some(u("bob")));
    let alice = participant(call, "alice");
    assert_eq!(alice.status, ParticipantStatus::Left);
    assert_eq!(alice.left_reason, Some(LeaveReason::Left));
    assert_eq!(alice.left_at, Some(at(75)));
    assert_eq!(
        out.events,
        vec![
            left_event("bob", LeaveReason::Left),
            ended(CallStatus::Completed, Some("bob"), EndReason::Left, 65),
        ]
    );
    assert_eq!(fx.book.joined_participants(), 0);
}

#[test]
fn leave_disconnected_ends_without_anyone_ending_it() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    fx.accept(cid(1), "bob", at(10)).expect("accepts");
    let out = fx
        .leave(cid(1), "alice", LeaveReason::Disconnected, at(40))
        .expect("drops");
    assert_eq!(out.call.status, CallStatus::Completed);
    assert_eq!(out.call.end_reason.as_deref(), Some("disconnected"));
    assert_eq!(out.call.ended_by, None);
    assert_eq!(
        participant(&out.call, "alice").left_reason,
        Some(LeaveReason::Disconnected)
    );
    assert_eq!(
        out.events,
        vec![
            left_event("alice", LeaveReason::Disconnected),
            CallEvent::Ended {
                status: CallStatus::Completed,
                ended_by: None,
                reason: EndReason::Disconnected,
                duration_s: 30,
            },
        ]
    );
}

#[test]
fn leave_group_keeps_it_going_until_the_last() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol", "dave"]);
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    fx.accept(cid(1), "carol", at(2)).expect("accepts");
    let out = fx
        .leave(cid(1), "alice", LeaveReason::Left, at(3))
        .expect("initiator leaves");
    assert_eq!(out.call.status, CallStatus::Ongoing);
    assert_eq!(out.events, vec![left_event("alice", LeaveReason::Left)]);
    let out = fx
        .leave(cid(1), "bob", LeaveReason::Removed, at(4))
        .expect("leaves");
    assert_eq!(out.call.status, CallStatus::Ongoing);
    assert_eq!(out.events, vec![left_event("bob", LeaveReason::Removed)]);

    let out = fx
        .leave(cid(1), "carol", LeaveReason::Left, at(62))
        .expect("last leaves");
    let call = &out.call;
    assert_eq!(call.status, CallStatus::Completed);
    assert_eq!(call.duration_s(), 61);
    assert_eq!(call.ended_by, Some(u("carol")));
    // Dave never answered: the ending turns him missed.
    assert_eq!(status(call, "dave"), ParticipantStatus::Missed);
    assert_eq!(
        out.events,
        vec![
            left_event("carol", LeaveReason::Left),
            ended(CallStatus::Completed, Some("carol"), EndReason::Left, 61),
        ]
    );
    assert!(fx.book.active_call_of_conversation("team").is_none());
    assert_eq!(fx.book.next_deadline(), None);
}

#[test]
fn leave_group_initiator_while_ringing_cancels() {
    let mut fx = Fx::new();
    fx.offline("carol");
    fx.direct(cid(9), "dave", "zed");
    fx.accept(cid(9), "zed", at(0)).expect("dave is busy");
    fx.group(cid(1), "alice", &["bob", "carol", "dave", "erin"]);
    fx.reject(cid(1), "erin", None, at(1)).expect("declines");
    let out = fx
        .leave(cid(1), "alice", LeaveReason::Left, at(2))
        .expect("leaves");
    let call = &out.call;
    assert_eq!(call.status, CallStatus::Cancelled);
    assert_eq!(status(call, "bob"), ParticipantStatus::Missed);
    assert_eq!(status(call, "carol"), ParticipantStatus::Missed);
    assert_eq!(status(call, "dave"), ParticipantStatus::Busy);
    assert_eq!(status(call, "erin"), ParticipantStatus::Declined);
    assert_eq!(
        out.events,
        vec![
            left_event("alice", LeaveReason::Left),
            ended(CallStatus::Cancelled, Some("alice"), EndReason::Left, 0),
        ]
    );
}

#[test]
fn leave_refusals() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol"]);
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    assert_eq!(
        code(fx.leave(cid(9), "bob", LeaveReason::Left, at(2))),
        ErrorCode::CallNotFound
    );
    assert_eq!(
        code(fx.leave(cid(1), "erin", LeaveReason::Left, at(2))),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(fx.leave(cid(1), "carol", LeaveReason::Left, at(2))),
        ErrorCode::InvalidState
    );
    fx.leave(cid(1), "bob", LeaveReason::Left, at(3))
        .expect("leaves");
    assert_eq!(
        code(fx.leave(cid(1), "bob", LeaveReason::Left, at(4))),
        ErrorCode::InvalidState
    );
}

// ---------------------------------------------------------------------------------------------
// end

#[test]
fn end_by_the_initiator_while_ringing_cancels() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    let out = fx.end(cid(1), "alice", at(3)).expect("ends");
    let call = &out.call;
    assert_eq!(call.status, CallStatus::Cancelled);
    assert_eq!(call.end_reason.as_deref(), Some("ended"));
    assert_eq!(call.ended_by, Some(u("alice")));
    assert_eq!(status(call, "bob"), ParticipantStatus::Missed);
    assert_eq!(
        participant(call, "alice").left_reason,
        Some(LeaveReason::Left)
    );
    assert_eq!(
        out.events,
        vec![ended(
            CallStatus::Cancelled,
            Some("alice"),
            EndReason::Ended,
            0
        )]
    );
}

#[test]
fn end_by_the_direct_callee() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    let out = fx
        .end(cid(1), "bob", at(3))
        .expect("the callee may end a ringing call");
    assert_eq!(out.call.status, CallStatus::Cancelled);
    assert_eq!(status(&out.call, "bob"), ParticipantStatus::Declined);
    assert_eq!(
        participant(&out.call, "alice").left_reason,
        Some(LeaveReason::Removed)
    );

    fx.direct(cid(2), "alice", "bob");
    fx.accept(cid(2), "bob", at(10)).expect("accepts");
    let out = fx
        .end_as(cid(2), actor("bob"), Some("bye"), at(20))
        .expect("either side ends an ongoing call");
    let call = &out.call;
    assert_eq!(call.status, CallStatus::Completed);
    assert_eq!(call.end_reason.as_deref(), Some("bye"));
    assert_eq!(
        participant(call, "bob").left_reason,
        Some(LeaveReason::Left)
    );
    assert_eq!(
        participant(call, "alice").left_reason,
        Some(LeaveReason::Removed)
    );
    assert_eq!(participant(call, "alice").left_at, Some(at(20)));
    assert_eq!(
        out.events,
        vec![ended(
            CallStatus::Completed,
            Some("bob"),
            EndReason::Given("bye".into()),
            10
        )]
    );
}

#[test]
fn end_group_permissions() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol", "dave"]);
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    fx.join(cid(1), "erin", at(2)).expect("joins");
    assert_eq!(code(fx.end(cid(1), "bob", at(3))), ErrorCode::Forbidden);
    assert_eq!(code(fx.end(cid(1), "carol", at(3))), ErrorCode::Forbidden);
    assert_eq!(code(fx.end(cid(1), "frank", at(3))), ErrorCode::Forbidden);
    assert_eq!(code(fx.end(cid(1), "mallory", at(3))), ErrorCode::Forbidden);
    assert_eq!(
        code(fx.end(cid(9), "alice", at(3))),
        ErrorCode::CallNotFound
    );
    // The initiator may end it even after leaving.
    fx.leave(cid(1), "alice", LeaveReason::Left, at(4))
        .expect("leaves");
    let out = fx.end(cid(1), "alice", at(5)).expect("ends");
    let call = &out.call;
    assert_eq!(call.status, CallStatus::Completed);
    assert_eq!(call.duration_s(), 4);
    assert_eq!(
        participant(call, "alice").left_reason,
        Some(LeaveReason::Left)
    );
    assert_eq!(participant(call, "alice").left_at, Some(at(4)));
    for who in ["bob", "erin"] {
        let p = participant(call, who);
        assert_eq!(
            (p.status, p.left_reason),
            (ParticipantStatus::Left, Some(LeaveReason::Removed))
        );
    }
    assert_eq!(status(call, "carol"), ParticipantStatus::Missed);
    assert_eq!(fx.book.joined_participants(), 0);
}

#[test]
fn end_by_an_admin_or_an_outsider() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    assert_eq!(code(fx.end(cid(1), "carol", at(1))), ErrorCode::Forbidden);
    let out = fx
        .end_as(cid(1), admin("ops"), Some("maintenance"), at(2))
        .expect("admin ends");
    assert_eq!(out.call.ended_by, Some(u("ops")));
    assert_eq!(
        participant(&out.call, "alice").left_reason,
        Some(LeaveReason::Removed)
    );

    fx.group(cid(2), "alice", &["bob"]);
    fx.accept(cid(2), "bob", at(3)).expect("accepts");
    let out = fx
        .end_as(cid(2), admin("ops"), None, at(4))
        .expect("admin ends group");
    assert_eq!(out.call.status, CallStatus::Completed);
    assert_eq!(
        out.events,
        vec![ended(
            CallStatus::Completed,
            Some("ops"),
            EndReason::Ended,
            1
        )]
    );
    // An admin who is a group participant but not the initiator may end it too.
    fx.group(cid(3), "alice", &["bob"]);
    fx.end_as(
        cid(3),
        Actor {
            admin: true,
            ..actor("bob")
        },
        None,
        at(5),
    )
    .expect("admin");
}

// ---------------------------------------------------------------------------------------------
// media

#[test]
fn set_media_applies_the_patch() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    let patch = MediaPatch {
        audio_muted: Some(true),
        video_enabled: Some(false),
        screen_sharing: None,
    };
    let out = fx.media(cid(1), "alice", patch, at(1)).expect("changes");
    let expected = MediaState {
        audio_muted: true,
        video_enabled: false,
        screen_sharing: false,
    };
    assert_eq!(participant(&out.call, "alice").media, expected);
    assert_eq!(out.media_change, Some((u("alice"), expected)));
    assert_eq!(out.call.version, 2);
    assert_eq!(
        out.events,
        vec![CallEvent::MediaChanged {
            user_id: u("alice"),
            audio_muted: true,
            video_enabled: false,
            screen_sharing: false,
        }]
    );
    // The same values again still make a new version.
    let out = fx
        .media(cid(1), "alice", patch, at(2))
        .expect("changes nothing");
    assert_eq!(out.call.version, 3);
    assert_eq!(participant(&out.call, "alice").media, expected);
    let out = fx
        .media(
            cid(1),
            "alice",
            MediaPatch {
                screen_sharing: Some(true),
                ..Default::default()
            },
            at(3),
        )
        .expect("shares");
    assert_eq!(
        participant(&out.call, "alice").media,
        MediaState {
            screen_sharing: true,
            ..expected
        }
    );
}

#[test]
fn set_media_refusals() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    let mute = MediaPatch {
        audio_muted: Some(true),
        ..Default::default()
    };
    // The patch is judged first, even for a call that does not exist.
    assert_eq!(
        code(fx.media(cid(1), "alice", MediaPatch::default(), at(1))),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(fx.media(cid(9), "alice", MediaPatch::default(), at(1))),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(fx.media(cid(9), "alice", mute, at(1))),
        ErrorCode::CallNotFound
    );
    assert_eq!(
        code(fx.media(cid(1), "carol", mute, at(1))),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(fx.media(cid(1), "bob", mute, at(1))),
        ErrorCode::InvalidState
    );
}

#[test]
fn check_joined_judges_as_set_media_does() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    let check = |fx: &Fx, call, user| fx.book.check_joined(call, &u(user)).map_err(|e| e.code);
    assert_eq!(check(&fx, cid(1), "alice"), Ok(()));
    assert_eq!(check(&fx, cid(9), "alice"), Err(ErrorCode::CallNotFound));
    assert_eq!(check(&fx, cid(1), "carol"), Err(ErrorCode::Forbidden));
    assert_eq!(check(&fx, cid(1), "bob"), Err(ErrorCode::InvalidState));
}

// ---------------------------------------------------------------------------------------------
// ring timeout

#[test]
fn expire_direct_ringing_is_missed() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    assert!(fx.expire(at(RING - 1)).is_empty());
    assert_eq!(fx.book.next_deadline(), Some(at(RING)));
    let outs = fx.expire(at(RING));
    assert_eq!(outs.len(), 1);
    let out = &outs[0];
    let call = &out.call;
    assert_eq!(call.status, CallStatus::Missed);
    assert_eq!(call.end_reason.as_deref(), Some("timeout"));
    assert_eq!(call.ended_by, None);
    assert_eq!(call.ended_at, Some(at(RING)));
    assert_eq!(call.version, 2);
    assert_eq!(status(call, "bob"), ParticipantStatus::Missed);
    let alice = participant(call, "alice");
    assert_eq!(
        (alice.status, alice.left_reason),
        (ParticipantStatus::Left, Some(LeaveReason::Left))
    );
    assert_eq!(
        out.events,
        vec![
            CallEvent::Missed { user_id: u("bob") },
            CallEvent::Ended {
                status: CallStatus::Missed,
                ended_by: None,
                reason: EndReason::Timeout,
                duration_s: 0,
            },
        ]
    );
    assert_eq!(
        out.before.as_ref().map(|c| c.status),
        Some(CallStatus::Ringing)
    );
    assert_eq!(fx.book.active_calls(), 0);
    assert_eq!(fx.book.next_deadline(), None);
    assert!(fx.expire(at(10 * RING)).is_empty());
}

#[test]
fn expire_group_ringing_is_missed_by_every_unanswered_invitee() {
    let mut fx = Fx::new();
    fx.offline("carol");
    fx.direct(cid(9), "erin", "zed");
    fx.accept(cid(9), "zed", at(0)).expect("erin is busy");
    fx.group(cid(1), "alice", &["bob", "carol", "dave", "erin"]);
    fx.reject(cid(1), "dave", None, at(1)).expect("declines");
    let outs = fx.expire(at(RING + 3));
    assert_eq!(outs.len(), 1);
    let call = &outs[0].call;
    assert_eq!(call.status, CallStatus::Missed);
    assert_eq!(call.ended_at, Some(at(RING + 3)));
    assert_eq!(status(call, "alice"), ParticipantStatus::Left);
    assert_eq!(status(call, "bob"), ParticipantStatus::Missed);
    assert_eq!(status(call, "carol"), ParticipantStatus::Missed);
    assert_eq!(status(call, "dave"), ParticipantStatus::Declined);
    assert_eq!(status(call, "erin"), ParticipantStatus::Busy);
    assert_eq!(
        outs[0].events,
        vec![
            CallEvent::Missed { user_id: u("bob") },
            CallEvent::Missed {
                user_id: u("carol")
            },
            CallEvent::Ended {
                status: CallStatus::Missed,
                ended_by: None,
                reason: EndReason::Timeout,
                duration_s: 0,
            },
        ]
    );
    assert!(fx.book.active_call_of_conversation("team").is_none());
    assert_eq!(fx.book.joined_call_of("alice"), None);
}

#[test]
fn expire_ongoing_group_misses_the_stragglers_only() {
    let mut fx = Fx::new();
    fx.offline("dave");
    fx.group(cid(1), "alice", &["bob", "carol", "dave"]);
    fx.accept(cid(1), "bob", at(5)).expect("accepts");
    let outs = fx.expire(at(RING));
    assert_eq!(outs.len(), 1);
    let out = &outs[0];
    assert_eq!(out.call.status, CallStatus::Ongoing);
    assert_eq!(out.call.version, 3);
    assert_eq!(status(&out.call, "carol"), ParticipantStatus::Missed);
    assert_eq!(status(&out.call, "dave"), ParticipantStatus::Missed);
    assert_eq!(
        out.events,
        vec![
            CallEvent::Missed {
                user_id: u("carol")
            },
            CallEvent::Missed { user_id: u("dave") }
        ]
    );
    assert!(!out.is_final());
    assert_eq!(fx.call(cid(1)).version, 3);
    assert_eq!(fx.book.next_deadline(), None);
    assert!(fx.expire(at(10 * RING)).is_empty());
}

#[test]
fn expire_ongoing_group_without_stragglers_reports_nothing() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol"]);
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    fx.reject(cid(1), "carol", None, at(2)).expect("declines");
    assert!(fx.expire(at(RING)).is_empty());
    assert_eq!(fx.call(cid(1)).version, 3);
    assert_eq!(fx.book.next_deadline(), None, "the deadline is used up");
}

#[test]
fn expire_many_calls_at_once() {
    const N: usize = 1000;
    let mut fx = Fx::new();
    // Set up through the book directly: the fixture's per-operation checks are O(n) each.
    for i in 0..N {
        let req = Initiate {
            call_id: cid(i as u128 + 1),
            caller: actor(&format!("caller{i}")),
            invitees: vec![u(&format!("callee{i}"))],
            media: MediaKind::Audio,
            kind: None,
            conversation_id: None,
        };
        fx.book
            .initiate(req, None, &|_| true, at(i as i64 % 100))
            .expect("starts");
    }
    // Every third call was answered: it has no deadline left.
    for i in (0..N).step_by(3) {
        fx.book
            .accept(cid(i as u128 + 1), &actor(&format!("callee{i}")), at(100))
            .expect("accepts");
    }
    fx.book.check_invariants().expect("consistent after setup");
    let answered = N.div_ceil(3);
    assert_eq!(fx.book.active_calls(), N);
    assert_eq!(fx.book.joined_participants(), N + answered);
    let first_due = (0..N).filter(|i| i % 3 != 0).map(|i| i as i64 % 100).min();
    assert_eq!(fx.book.next_deadline(), first_due.map(|s| at(RING + s)));

    // Calls created at seconds 0..=49 are due at RING + 49.
    let outs = fx.expire(at(RING + 49));
    let due = (0..N).filter(|i| i % 3 != 0 && i % 100 < 50).count();
    assert_eq!(outs.len(), due);
    assert!(outs.iter().all(|o| o.call.status == CallStatus::Missed));
    assert!(
        outs.windows(2)
            .all(|w| w[0].call.created_at <= w[1].call.created_at)
    );
    let ids: HashSet<Uuid> = outs.iter().map(|o| o.call.id).collect();
    assert_eq!(ids.len(), due);
    assert_eq!(fx.book.active_calls(), N - due);
    assert_eq!(fx.book.next_deadline(), Some(at(RING + 50)));

    let rest = fx.expire(at(RING + 1000));
    assert_eq!(due + rest.len(), N - answered);
    assert_eq!(fx.book.active_calls(), answered);
    assert_eq!(fx.book.joined_participants(), 2 * answered);
    assert_eq!(fx.book.next_deadline(), None);
}

// ---------------------------------------------------------------------------------------------
// across operations

#[test]
fn every_operation_on_an_ended_call_is_call_not_found() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    fx.end(cid(1), "alice", at(2)).expect("ends");
    let mute = MediaPatch {
        audio_muted: Some(true),
        ..Default::default()
    };
    assert_eq!(
        code(fx.accept(cid(1), "bob", at(3))),
        ErrorCode::CallNotFound
    );
    assert_eq!(
        code(fx.reject(cid(1), "bob", None, at(3))),
        ErrorCode::CallNotFound
    );
    assert_eq!(code(fx.join(cid(1), "bob", at(3))), ErrorCode::CallNotFound);
    assert_eq!(
        code(fx.leave(cid(1), "bob", LeaveReason::Left, at(3))),
        ErrorCode::CallNotFound
    );
    assert_eq!(
        code(fx.end(cid(1), "alice", at(3))),
        ErrorCode::CallNotFound
    );
    assert_eq!(
        code(fx.end_as(cid(1), admin("ops"), None, at(3))),
        ErrorCode::CallNotFound
    );
    assert_eq!(
        code(fx.media(cid(1), "bob", mute, at(3))),
        ErrorCode::CallNotFound
    );
    assert!(fx.book.get(cid(1)).is_none());
    assert!(fx.expire(at(1000)).is_empty());
}

#[test]
fn a_user_is_joined_in_one_call_at_a_time() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol"]);
    fx.direct(cid(2), "dave", "bob");
    fx.accept(cid(1), "bob", at(1))
        .expect("joins the group call");
    assert_eq!(fx.book.joined_call_of("bob"), Some(cid(1)));
    assert_eq!(
        code(fx.accept(cid(2), "bob", at(2))),
        ErrorCode::InvalidState
    );
    assert_eq!(code(fx.join(cid(2), "bob", at(2))), ErrorCode::InvalidState);
    assert_eq!(
        code(fx.initiate(cid(3), "bob", &["erin"], None, None)),
        ErrorCode::InvalidState
    );
    // Dave calling bob now is busy, and dave stays free.
    fx.end(cid(2), "dave", at(2)).expect("ends");
    let busy = fx
        .initiate(cid(3), "dave", &["bob"], None, None)
        .expect("busy outcome");
    assert_eq!(busy.call.status, CallStatus::Busy);
    fx.leave(cid(1), "bob", LeaveReason::Left, at(3))
        .expect("leaves");
    assert_eq!(fx.book.joined_call_of("bob"), None);
    fx.direct(cid(4), "dave", "bob");
    fx.accept(cid(4), "bob", at(4)).expect("free again");
    assert_eq!(fx.book.joined_call_of("bob"), Some(cid(4)));
    assert_eq!(fx.book.joined_call_of("dave"), Some(cid(4)));
    assert_eq!(fx.book.joined_participants(), 3);
}

#[test]
fn every_change_bumps_the_version_by_one() {
    let mut fx = Fx::new();
    let mut versions = vec![
        fx.group(cid(1), "alice", &["bob", "carol", "dave"])
            .call
            .version,
    ];
    let mute = MediaPatch {
        audio_muted: Some(true),
        ..Default::default()
    };
    versions.push(
        fx.accept(cid(1), "bob", at(1))
            .expect("accept")
            .call
            .version,
    );
    versions.push(
        fx.reject(cid(1), "carol", None, at(2))
            .expect("reject")
            .call
            .version,
    );
    versions.push(fx.join(cid(1), "erin", at(3)).expect("join").call.version);
    versions.push(
        fx.join(cid(1), "erin", at(3))
            .expect("re-join")
            .call
            .version,
    );
    versions.push(
        fx.media(cid(1), "erin", mute, at(4))
            .expect("media")
            .call
            .version,
    );
    versions.push(
        fx.expire(at(RING))
            .first()
            .expect("dave missed")
            .call
            .version,
    );
    versions.push(
        fx.leave(cid(1), "erin", LeaveReason::Left, at(50))
            .expect("leave")
            .call
            .version,
    );
    versions.push(fx.end(cid(1), "alice", at(60)).expect("end").call.version);
    assert_eq!(versions, [1, 2, 3, 4, 4, 5, 6, 7, 8]);
}

#[test]
fn outcome_before_is_the_previous_snapshot() {
    let mut fx = Fx::new();
    let first = fx.direct(cid(1), "alice", "bob");
    let accepted = fx.accept(cid(1), "bob", at(1)).expect("accepts");
    assert_eq!(accepted.before.as_ref(), Some(&first.call));
    let ended = fx.end(cid(1), "bob", at(2)).expect("ends");
    assert_eq!(ended.before.as_ref(), Some(&accepted.call));
}

#[test]
fn deadlines_saturate_instead_of_overflowing() {
    let mut fx = Fx::with_limits(Limits {
        max_participants: 50,
        ring_timeout: Duration::MAX,
    });
    fx.direct(cid(1), "alice", "bob");
    assert!(
        fx.book
            .next_deadline()
            .is_some_and(|d| d > at(1_000_000_000))
    );
    assert!(fx.expire(at(1_000_000_000)).is_empty());
}

// ---------------------------------------------------------------------------------------------
// who receives what

#[test]
fn recipients_of_a_new_call() {
    let mut fx = Fx::new();
    fx.offline("dave");
    let out = fx.group(cid(1), "alice", &["bob", "carol", "dave"]);
    assert_eq!(recipients(&out, "call:incoming"), users(&["bob", "carol"]));
    assert_eq!(recipients(&out, "call:ringing"), users(&["alice"]));
}

#[test]
fn recipients_of_accept_and_join() {
    let mut fx = Fx::new();
    fx.offline("dave");
    fx.group(cid(1), "alice", &["bob", "carol", "dave", "erin"]);
    fx.reject(cid(1), "erin", None, at(1)).expect("declines");
    let out = fx.accept(cid(1), "bob", at(2)).expect("accepts");
    // Joined or still ringing (invited counts), not the one who declined.
    assert_eq!(
        recipients(&out, "call:accepted"),
        users(&["alice", "bob", "carol", "dave"])
    );
    assert_eq!(
        recipients(&out, "call:participant-joined"),
        users(&["alice"])
    );
    let out = fx.join(cid(1), "frank", at(3)).expect("joins");
    assert_eq!(
        recipients(&out, "call:participant-joined"),
        users(&["alice", "bob"])
    );
}

#[test]
fn recipients_of_rejections() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    let out = fx.reject(cid(1), "bob", None, at(1)).expect("rejects");
    // Both sides were joined or ringing before; after the change neither is.
    assert_eq!(recipients(&out, "call:rejected"), users(&["alice", "bob"]));
    assert_eq!(recipients(&out, "call:ended"), users(&["alice", "bob"]));

    fx.group(cid(2), "alice", &["bob", "carol"]);
    let out = fx
        .reject(cid(2), "carol", Some("no"), at(2))
        .expect("rejects");
    assert_eq!(
        recipients(&out, "call:rejected"),
        users(&["alice", "bob", "carol"])
    );
}

#[test]
fn recipients_of_missed_and_ended_by_timeout() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol"]);
    let outs = fx.expire(at(RING));
    let out = &outs[0];
    let missed: Vec<Vec<UserId>> = out
        .deliveries()
        .filter(|(e, _)| e.type_name() == "call:missed")
        .map(|(_, to)| to)
        .collect();
    assert_eq!(
        missed,
        vec![users(&["alice", "bob"]), users(&["alice", "carol"])]
    );
    assert_eq!(
        recipients(out, "call:ended"),
        users(&["alice", "bob", "carol"])
    );

    // In an ongoing call the initiator hears of it even after leaving.
    fx.group(cid(2), "alice", &["bob", "carol"]);
    fx.accept(cid(2), "bob", at(RING + 1)).expect("accepts");
    fx.leave(cid(2), "alice", LeaveReason::Left, at(RING + 2))
        .expect("leaves");
    let outs = fx.expire(at(3 * RING));
    assert_eq!(
        recipients(&outs[0], "call:missed"),
        users(&["alice", "carol"])
    );
}

#[test]
fn recipients_of_leaving_and_ending() {
    let mut fx = Fx::new();
    fx.direct(cid(9), "erin", "zed");
    fx.accept(cid(9), "zed", at(0)).expect("erin is busy");
    fx.group(cid(1), "alice", &["bob", "carol", "dave", "erin"]);
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    fx.accept(cid(1), "carol", at(1)).expect("accepts");
    fx.reject(cid(1), "dave", None, at(1)).expect("declines");
    let out = fx
        .leave(cid(1), "carol", LeaveReason::Left, at(2))
        .expect("leaves");
    assert_eq!(
        recipients(&out, "call:participant-left"),
        users(&["alice", "bob"])
    );
    let out = fx
        .leave(cid(1), "alice", LeaveReason::Left, at(3))
        .expect("leaves");
    assert_eq!(recipients(&out, "call:participant-left"), users(&["bob"]));
    let out = fx.join(cid(1), "frank", at(4)).expect("joins");
    assert_eq!(recipients(&out, "call:participant-joined"), users(&["bob"]));
    let out = fx.end(cid(1), "alice", at(5)).expect("initiator ends");
    // Those joined before the end, the one who ended it; not the decliner, not the busy one.
    assert_eq!(
        recipients(&out, "call:ended"),
        users(&["alice", "bob", "frank"])
    );

    // The last one out gets told the call ended; the others left earlier and are not told.
    fx.group(cid(2), "alice", &["bob"]);
    fx.accept(cid(2), "bob", at(6)).expect("accepts");
    fx.leave(cid(2), "alice", LeaveReason::Left, at(7))
        .expect("leaves");
    let out = fx
        .leave(cid(2), "bob", LeaveReason::Disconnected, at(8))
        .expect("drops");
    assert!(recipients(&out, "call:participant-left").is_empty());
    assert_eq!(recipients(&out, "call:ended"), users(&["bob"]));
}

#[test]
fn recipients_of_media_changes() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol"]);
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    let mute = MediaPatch {
        audio_muted: Some(true),
        ..Default::default()
    };
    let out = fx.media(cid(1), "bob", mute, at(2)).expect("mutes");
    assert_eq!(
        recipients(&out, "call:media-changed"),
        users(&["alice", "bob"])
    );
}

#[test]
fn recipients_of_an_admin_end() {
    let mut fx = Fx::new();
    fx.direct(cid(1), "alice", "bob");
    let out = fx.end_as(cid(1), admin("ops"), None, at(1)).expect("ends");
    // The admin is no participant and has no call to hear about.
    assert_eq!(recipients(&out, "call:ended"), users(&["alice", "bob"]));
}

#[test]
fn seat_changes_name_who_joined_and_who_left() {
    let seats = |out: &Outcome| {
        let mut v: Vec<_> = out
            .seat_changes()
            .map(|(u, joined)| (u.as_str().to_owned(), joined))
            .collect();
        v.sort();
        v
    };
    let mut fx = Fx::new();
    let init = fx.direct(cid(1), "alice", "bob");
    assert_eq!(
        seats(&init),
        [("alice".to_owned(), true)],
        "the caller takes a seat"
    );
    let accepted = fx.accept(cid(1), "bob", at(2)).expect("accepts");
    assert_eq!(seats(&accepted), [("bob".to_owned(), true)]);
    let ended = fx.end(cid(1), "alice", at(3)).expect("ends");
    assert_eq!(
        seats(&ended),
        [("alice".to_owned(), false), ("bob".to_owned(), false)]
    );
}

// ---------------------------------------------------------------------------------------------
// end reasons

/// The reason of the outcome's `call:ended`, and that `end_reason` says the same.
fn end_reason(out: &Outcome) -> EndReason {
    let reason = out
        .events
        .iter()
        .find_map(|e| match e {
            CallEvent::Ended { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no call:ended in {:?}", out.events));
    assert_eq!(out.call.end_reason.as_deref(), Some(reason.as_str()));
    reason
}

#[test]
fn every_ending_carries_a_contract_reason() {
    let mut fx = Fx::new();
    // end, with and without the caller's text
    fx.direct(cid(1), "alice", "bob");
    let out = fx.end(cid(1), "alice", at(1)).expect("ends");
    assert_eq!(end_reason(&out), EndReason::Ended);
    fx.direct(cid(2), "alice", "bob");
    let out = fx
        .end_as(cid(2), actor("bob"), Some("wrong number"), at(1))
        .expect("ends");
    assert_eq!(end_reason(&out), EndReason::Given("wrong number".into()));
    // leave and disconnect, ringing and ongoing
    fx.direct(cid(3), "alice", "bob");
    let out = fx
        .leave(cid(3), "alice", LeaveReason::Left, at(1))
        .expect("leaves");
    assert_eq!(end_reason(&out), EndReason::Left);
    fx.direct(cid(4), "alice", "bob");
    fx.accept(cid(4), "bob", at(1)).expect("accepts");
    let out = fx
        .leave(cid(4), "bob", LeaveReason::Disconnected, at(2))
        .expect("leaves");
    assert_eq!(end_reason(&out), EndReason::Disconnected);
    // reject, with and without a reason
    fx.direct(cid(5), "alice", "bob");
    let out = fx.reject(cid(5), "bob", None, at(1)).expect("rejects");
    assert_eq!(end_reason(&out), EndReason::Rejected);
    fx.direct(cid(6), "alice", "bob");
    let out = fx
        .reject(cid(6), "bob", Some("driving"), at(1))
        .expect("rejects");
    assert_eq!(end_reason(&out), EndReason::Given("driving".into()));
    // ring timeout
    fx.direct(cid(7), "alice", "bob");
    let outs = fx.expire(at(RING));
    assert_eq!(outs.len(), 1);
    assert_eq!(end_reason(&outs[0]), EndReason::Timeout);
    // busy: recorded, with no call:ended (nobody was rung)
    fx.direct(cid(8), "alice", "bob");
    fx.accept(cid(8), "bob", at(RING + 1)).expect("accepts");
    let out = fx
        .initiate(cid(9), "carol", &["bob"], None, None)
        .expect("recorded as busy");
    assert_eq!(out.call.status, CallStatus::Busy);
    assert_eq!(
        out.call.end_reason.as_deref(),
        Some(EndReason::Busy.as_str())
    );
    assert!(
        !out.events
            .iter()
            .any(|e| matches!(e, CallEvent::Ended { .. }))
    );
    // a group call's last leaver
    fx.group(cid(10), "dave", &["erin"]);
    fx.accept(cid(10), "erin", at(1)).expect("accepts");
    fx.leave(cid(10), "dave", LeaveReason::Left, at(2))
        .expect("leaves");
    let out = fx
        .leave(cid(10), "erin", LeaveReason::Left, at(3))
        .expect("leaves");
    assert_eq!(end_reason(&out), EndReason::Left);
}

// ---------------------------------------------------------------------------------------------
// call:data

#[test]
fn data_goes_to_the_other_joined_participants_or_to_those_named() {
    use super::relay::MAX_PAYLOAD_BYTES;
    use serde_json::json;
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol", "dave"]);
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    fx.accept(cid(1), "carol", at(1)).expect("accepts");
    let book = &fx.book;
    let hi = json!({"kind": "chat", "text": "hi"});
    let send = |from: &str, to: Option<&[&str]>| {
        let to = to.map(users);
        book.data_recipients(cid(1), &u(from), &hi, to.as_deref())
    };
    assert_eq!(send("alice", None).unwrap(), users(&["bob", "carol"]));
    assert_eq!(send("carol", None).unwrap(), users(&["alice", "bob"]));
    assert_eq!(send("alice", Some(&["carol"])).unwrap(), users(&["carol"]));
    assert_eq!(
        send("alice", Some(&["carol", "bob", "carol"])).unwrap(),
        users(&["bob", "carol"]),
        "participant order, once each"
    );
    // `to` may name only other joined participants.
    for to in [&["dave"][..], &["alice"], &["zed"], &["bob", "zed"]] {
        let e = send("alice", Some(to)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{to:?}");
    }
    let e = send("alice", Some(&["bob", "zed", "dave"])).unwrap_err();
    assert_eq!(e.details, Some(json!({"user_ids": ["zed", "dave"]})));
    assert_eq!(
        send("alice", Some(&[])).unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    // Only joined participants send.
    assert_eq!(
        send("dave", None).unwrap_err().code,
        ErrorCode::InvalidState
    );
    assert_eq!(send("zed", None).unwrap_err().code, ErrorCode::Forbidden);
    let unknown = book.data_recipients(cid(99), &u("alice"), &hi, None);
    assert_eq!(unknown.unwrap_err().code, ErrorCode::CallNotFound);
    // 16 KiB of compact JSON: a string of n characters is n + 2 bytes.
    let fits = json!("x".repeat(MAX_PAYLOAD_BYTES - 2));
    assert!(
        book.data_recipients(cid(1), &u("alice"), &fits, None)
            .is_ok()
    );
    let over = json!("x".repeat(MAX_PAYLOAD_BYTES - 1));
    let e = book
        .data_recipients(cid(1), &u("alice"), &over, None)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PayloadTooLarge);
    // The size is judged first, even from someone who may not send.
    let e = book
        .data_recipients(cid(1), &u("zed"), &over, None)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PayloadTooLarge);
    // A participant who left receives nothing and sends nothing.
    fx.leave(cid(1), "bob", LeaveReason::Left, at(2))
        .expect("leaves");
    let book = &fx.book;
    assert_eq!(
        book.data_recipients(cid(1), &u("alice"), &hi, None)
            .unwrap(),
        users(&["carol"])
    );
    let e = book
        .data_recipients(cid(1), &u("bob"), &hi, None)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidState);
}

// ---------------------------------------------------------------------------------------------
// drain

#[test]
fn drain_ends_every_live_call_with_reason_drained() {
    let mut fx = Fx::new();
    // Ongoing direct, ringing direct, ongoing group with someone still being rung.
    fx.direct(cid(1), "alice", "bob");
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    fx.direct(cid(2), "carol", "dave");
    fx.group(cid(3), "erin", &["frank"]);
    fx.initiate(cid(4), "xena", &["yuri", "zed"], None, Some("other"))
        .expect("group rings");
    fx.accept(cid(4), "yuri", at(2)).expect("accepts");

    let outs = fx.book.drain(at(10));
    fx.book.check_invariants().expect("invariants hold");
    assert_eq!(fx.book.active_calls(), 0);
    assert_eq!(fx.book.joined_participants(), 0);
    assert_eq!(fx.book.next_deadline(), None);
    let ids: Vec<Uuid> = outs.iter().map(|o| o.call.id).collect();
    assert_eq!(ids, [cid(1), cid(2), cid(3), cid(4)], "call id order");

    let direct = &outs[0];
    assert_eq!(direct.call.status, CallStatus::Completed);
    assert_eq!(direct.call.ended_by, None);
    assert_eq!(end_reason(direct), EndReason::Drained);
    assert_eq!(
        direct.events,
        vec![ended(CallStatus::Completed, None, EndReason::Drained, 9)]
    );
    for user in ["alice", "bob"] {
        assert_eq!(status(&direct.call, user), ParticipantStatus::Left);
        assert_eq!(
            participant(&direct.call, user).left_reason,
            Some(LeaveReason::Removed)
        );
    }
    assert_eq!(recipients(direct, "call:ended"), users(&["alice", "bob"]));
    let left: Vec<(&UserId, bool)> = direct.seat_changes().collect();
    assert_eq!(left, [(&u("alice"), false), (&u("bob"), false)]);

    let ringing = &outs[1];
    assert_eq!(ringing.call.status, CallStatus::Cancelled);
    assert_eq!(end_reason(ringing), EndReason::Drained);
    assert_eq!(status(&ringing.call, "dave"), ParticipantStatus::Missed);
    assert_eq!(recipients(ringing, "call:ended"), users(&["carol", "dave"]));

    assert_eq!(outs[2].call.status, CallStatus::Cancelled);
    let group = &outs[3];
    assert_eq!(group.call.status, CallStatus::Completed);
    assert_eq!(status(&group.call, "zed"), ParticipantStatus::Missed);
    assert_eq!(
        recipients(group, "call:ended"),
        users(&["xena", "yuri", "zed"])
    );
    for out in &outs {
        assert_eq!(out.call.ended_at, Some(at(10)));
        assert_eq!(out.call.version, out.before.as_ref().unwrap().version + 1);
    }

    // Nothing is left to drain, and the users may call again.
    assert!(fx.book.drain(at(11)).is_empty());
    fx.direct(cid(5), "alice", "bob");
}

// ---------------------------------------------------------------------------------------------
// admin: remove and mute

impl Fx {
    fn remove(
        &mut self,
        call_id: Uuid,
        who: Actor,
        subject: &str,
        now: OffsetDateTime,
    ) -> Result<Outcome, SignalingError> {
        let subject = u(subject);
        self.run(|book, _, _| book.remove(call_id, &who, &subject, None, now))
    }

    fn admin_mute(
        &mut self,
        call_id: Uuid,
        who: Actor,
        subject: &str,
        mute: AdminMute,
    ) -> Result<Outcome, SignalingError> {
        let subject = u(subject);
        self.run(|book, _, _| book.admin_mute(call_id, &who, &subject, mute, T0))
    }
}

#[test]
fn remove_tells_the_subject_and_the_others_and_keeps_a_group_going() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol"]);
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    fx.accept(cid(1), "carol", at(2)).expect("accepts");
    let out = fx
        .remove(cid(1), admin("root"), "bob", at(3))
        .expect("admin removes");
    assert_eq!(out.call.status, CallStatus::Ongoing);
    let bob = participant(&out.call, "bob");
    assert_eq!(bob.status, ParticipantStatus::Left);
    assert_eq!(bob.left_reason, Some(LeaveReason::Removed));
    assert_eq!(out.call.version, 4);
    assert_eq!(recipients(&out, "call:removed"), users(&["bob"]));
    assert_eq!(
        recipients(&out, "call:participant-left"),
        users(&["alice", "carol"])
    );
    assert_eq!(
        out.events[0].payload(&out.call),
        serde_json::json!({"call_id": cid(1), "reason": "removed"})
    );
    assert_eq!(out.events[1], left_event("bob", LeaveReason::Removed));
    assert_eq!(
        out.seat_changes().collect::<Vec<_>>(),
        vec![(&u("bob"), false)]
    );
    assert_eq!(fx.book.joined_call_of("bob"), None);
    // Removed, bob may join again like anyone who left.
    fx.join(cid(1), "bob", at(4)).expect("rejoins");
}

#[test]
fn removing_the_last_joined_ends_the_call_as_an_admin_end() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob"]);
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    fx.remove(cid(1), admin("root"), "alice", at(2))
        .expect("removes alice");
    let out = fx
        .remove(cid(1), admin("root"), "bob", at(5))
        .expect("removes bob");
    assert_eq!(out.call.status, CallStatus::Completed);
    assert_eq!(out.call.ended_by, Some(u("root")));
    assert_eq!(out.call.end_reason.as_deref(), Some("ended"));
    assert_eq!(
        out.events.last(),
        Some(&ended(
            CallStatus::Completed,
            Some("root"),
            EndReason::Ended,
            4
        ))
    );

    // A direct call ends with either side's removal; a ringing one is cancelled.
    fx.direct(cid(2), "carol", "dave");
    let out = fx
        .remove(cid(2), admin("root"), "carol", at(6))
        .expect("removes the caller");
    assert_eq!(out.call.status, CallStatus::Cancelled);
    assert_eq!(status(&out.call, "dave"), ParticipantStatus::Missed);
    assert_eq!(recipients(&out, "call:ended"), users(&["carol", "dave"]));
}

#[test]
fn remove_refusals() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol"]);
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    let e = err(fx.remove(cid(1), actor("alice"), "bob", at(2)));
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert_eq!(
        code(fx.remove(cid(1), admin("root"), "carol", at(2))),
        ErrorCode::InvalidState
    );
    assert_eq!(
        code(fx.remove(cid(1), admin("root"), "zed", at(2))),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(fx.remove(cid(7), admin("root"), "bob", at(2))),
        ErrorCode::CallNotFound
    );
}

#[test]
fn admin_mute_switches_sources_off_and_tells_the_subject_who() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol"]);
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    fx.media(
        cid(1),
        "bob",
        MediaPatch {
            screen_sharing: Some(true),
            ..Default::default()
        },
        at(2),
    )
    .expect("shares");
    let mute = AdminMute {
        audio: Some(true),
        video: Some(false),
        screen: Some(true),
    };
    let out = fx
        .admin_mute(cid(1), admin("root"), "bob", mute)
        .expect("admin mutes");
    let media = participant(&out.call, "bob").media;
    assert!(media.audio_muted);
    assert!(media.video_enabled, "video: false leaves the camera on");
    assert!(!media.screen_sharing);
    assert_eq!(out.media_change, Some((u("bob"), media)));
    assert_eq!(recipients(&out, "call:muted-by"), users(&["bob"]));
    assert_eq!(
        recipients(&out, "call:media-changed"),
        users(&["alice", "bob"])
    );
    assert_eq!(
        out.events[0].payload(&out.call),
        serde_json::json!({"call_id": cid(1), "by": "root", "audio": true, "screen": true})
    );
    // Only the participant unmutes.
    let out = fx
        .media(
            cid(1),
            "bob",
            MediaPatch {
                audio_muted: Some(false),
                ..Default::default()
            },
            at(3),
        )
        .expect("unmutes itself");
    assert!(!participant(&out.call, "bob").media.audio_muted);
}

#[test]
fn admin_mute_refusals() {
    let mut fx = Fx::new();
    fx.group(cid(1), "alice", &["bob", "carol"]);
    fx.accept(cid(1), "bob", at(1)).expect("accepts");
    let audio = AdminMute {
        audio: Some(true),
        ..Default::default()
    };
    assert_eq!(
        code(fx.admin_mute(cid(1), actor("alice"), "bob", audio)),
        ErrorCode::Forbidden
    );
    let nothing = AdminMute {
        audio: Some(false),
        ..Default::default()
    };
    assert_eq!(
        code(fx.admin_mute(cid(1), admin("root"), "bob", nothing)),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(fx.admin_mute(cid(1), admin("root"), "carol", audio)),
        ErrorCode::InvalidState
    );
    assert_eq!(
        code(fx.admin_mute(cid(1), admin("root"), "zed", audio)),
        ErrorCode::InvalidArgument
    );
}
