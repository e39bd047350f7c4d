//! The `call:*` server events of contract section 6: what a transition tells people, and who.
//!
//! The book emits events as data; turning them into frames and finding sockets is the binary's
//! job. Who receives an event depends only on the call before and after the transition, so it is
//! decided here, where it can be tested without a socket.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::model::{
    AdminMute, Call, CallStatus, EndReason, LeaveReason, ParticipantStatus, UserId,
};

/// One event produced by a call transition. `call_id` is not repeated here: every event of an
/// [`Outcome`](crate::book::Outcome) belongs to its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// Sent to the online invitees being rung.
    Incoming {
        user_ids: Vec<UserId>,
    },
    /// Tells the initiator whom the call is ringing (the same users as `Incoming`).
    Ringing {
        user_ids: Vec<UserId>,
    },
    Accepted {
        user_id: UserId,
    },
    Rejected {
        user_id: UserId,
        reason: Option<String>,
    },
    Missed {
        user_id: UserId,
    },
    Busy {
        user_id: UserId,
    },
    /// Carries the final values rather than reading them from the call later, so the payload
    /// stays right even if someone builds it from a newer snapshot.
    Ended {
        status: CallStatus,
        ended_by: Option<UserId>,
        reason: EndReason,
        duration_s: i64,
    },
    ParticipantJoined {
        user_id: UserId,
        name: String,
    },
    ParticipantLeft {
        user_id: UserId,
        name: String,
        reason: LeaveReason,
    },
    MediaChanged {
        user_id: UserId,
        audio_muted: bool,
        video_enabled: bool,
        screen_sharing: bool,
    },
    /// Tells a participant an admin removed it, on all its sockets.
    Removed {
        user_id: UserId,
        reason: String,
    },
    /// Tells a participant which of its sources an admin muted, on all its sockets.
    MutedBy {
        user_id: UserId,
        by: UserId,
        mute: AdminMute,
    },
}

impl CallEvent {
    /// Every `type` this enum can produce, for metrics that want to pre-register their labels.
    pub const TYPE_NAMES: &'static [&'static str] = &[
        "call:incoming",
        "call:ringing",
        "call:accepted",
        "call:rejected",
        "call:missed",
        "call:busy",
        "call:ended",
        "call:participant-joined",
        "call:participant-left",
        "call:media-changed",
        "call:removed",
        "call:muted-by",
    ];

    /// The WebSocket `type` of the event frame.
    pub fn type_name(&self) -> &'static str {
        match self {
            CallEvent::Incoming { .. } => "call:incoming",
            CallEvent::Ringing { .. } => "call:ringing",
            CallEvent::Accepted { .. } => "call:accepted",
            CallEvent::Rejected { .. } => "call:rejected",
            CallEvent::Missed { .. } => "call:missed",
            CallEvent::Busy { .. } => "call:busy",
            CallEvent::Ended { .. } => "call:ended",
            CallEvent::ParticipantJoined { .. } => "call:participant-joined",
            CallEvent::ParticipantLeft { .. } => "call:participant-left",
            CallEvent::MediaChanged { .. } => "call:media-changed",
            CallEvent::Removed { .. } => "call:removed",
            CallEvent::MutedBy { .. } => "call:muted-by",
        }
    }

    /// The user the event is about, where there is a single one.
    pub fn subject(&self) -> Option<&UserId> {
        match self {
            CallEvent::Accepted { user_id }
            | CallEvent::Rejected { user_id, .. }
            | CallEvent::Missed { user_id }
            | CallEvent::Busy { user_id }
            | CallEvent::ParticipantJoined { user_id, .. }
            | CallEvent::ParticipantLeft { user_id, .. }
            | CallEvent::MediaChanged { user_id, .. }
            | CallEvent::Removed { user_id, .. }
            | CallEvent::MutedBy { user_id, .. } => Some(user_id),
            CallEvent::Ended { ended_by, .. } => ended_by.as_ref(),
            CallEvent::Incoming { .. } | CallEvent::Ringing { .. } => None,
        }
    }

    /// The `data` object of the event frame. `call` is the snapshot the event came with; only
    /// `call:incoming` reads more than its id from it (conversation, kind, media, caller).
    pub fn payload(&self, call: &Call) -> Value {
        match self {
            CallEvent::Incoming { .. } => {
                let caller_name = call
                    .participant(call.initiated_by.as_str())
                    .map(|p| p.name.clone())
                    .unwrap_or_else(|| call.initiated_by.as_str().to_owned());
                json!({
                    "call_id": call.id,
                    "conversation_id": call.conversation_id,
                    "kind": call.kind,
                    "media": call.media,
                    "caller": { "user_id": call.initiated_by, "name": caller_name },
                })
            }
            CallEvent::Ringing { user_ids } => json!({ "call_id": call.id, "user_ids": user_ids }),
            CallEvent::Accepted { user_id }
            | CallEvent::Missed { user_id }
            | CallEvent::Busy { user_id } => json!({ "call_id": call.id, "user_id": user_id }),
            CallEvent::Rejected { user_id, reason } => {
                let mut data = json!({ "call_id": call.id, "user_id": user_id });
                if let (Some(reason), Some(map)) = (reason, data.as_object_mut()) {
                    map.insert("reason".to_owned(), Value::from(reason.as_str()));
                }
                data
            }
            CallEvent::Ended {
                status,
                ended_by,
                reason,
                duration_s,
            } => json!({
                "call_id": call.id,
                "status": status,
                "ended_by": ended_by,
                "reason": reason,
                "duration_s": duration_s,
            }),
            CallEvent::ParticipantJoined { user_id, name } => {
                json!({ "call_id": call.id, "user_id": user_id, "name": name })
            }
            CallEvent::ParticipantLeft {
                user_id,
                name,
                reason,
            } => json!({
                "call_id": call.id,
                "user_id": user_id,
                "name": name,
                "reason": reason,
            }),
            CallEvent::MediaChanged {
                user_id,
                audio_muted,
                video_enabled,
                screen_sharing,
            } => json!({
                "call_id": call.id,
                "user_id": user_id,
                "audio_muted": audio_muted,
                "video_enabled": video_enabled,
                "screen_sharing": screen_sharing,
            }),
            CallEvent::Removed { reason, .. } => {
                json!({ "call_id": call.id, "reason": reason })
            }
            CallEvent::MutedBy { by, mute, .. } => {
                let mut data = json!({ "call_id": call.id, "by": by });
                if let Some(map) = data.as_object_mut() {
                    for (key, muted) in [
                        ("audio", mute.audio),
                        ("video", mute.video),
                        ("screen", mute.screen),
                    ] {
                        if muted == Some(true) {
                            map.insert(key.to_owned(), Value::Bool(true));
                        }
                    }
                }
                data
            }
        }
    }

    /// The users whose sockets get this event (contract section 6, "who receives them").
    ///
    /// `call_before` is the call as it was right before the operation that produced the event
    /// ([`Outcome::before`](crate::book::Outcome::before): the same snapshot for every event of
    /// one outcome, `None` for a call that did not exist yet); `call_after` is the snapshot the
    /// operation returned. Both are needed because an ending turns everyone `left` or `missed`:
    /// judged by the final snapshot alone, `call:ended` would reach nobody.
    ///
    /// - `call:incoming`: the invitees listed in the event.
    /// - `call:ringing`, `call:busy`: the initiator.
    /// - `call:accepted`, `call:rejected`, `call:ended`: every participant who is joined or
    ///   ringing before or after the change, plus the event's subject when it is a participant.
    ///   `invited` counts as ringing: an invitee who was offline at the start may have connected
    ///   and be showing the call since, and an offline one receives nothing anyway.
    /// - `call:missed`: the initiator and the user who missed.
    /// - `call:participant-joined`, `call:participant-left`: every participant joined after the
    ///   change except the subject; `call:media-changed`: every participant joined after the
    ///   change, the subject included (its other devices follow its switches).
    /// - `call:removed`, `call:muted-by`: the subject alone (every socket of it).
    ///
    /// Users appear once, in the call's participant order (the initiator first), except for
    /// `call:incoming` and `call:missed`, which keep the order given above.
    pub fn recipients(&self, call_before: Option<&Call>, call_after: &Call) -> Vec<UserId> {
        let mut out = Recipients::default();
        match self {
            CallEvent::Incoming { user_ids } => {
                for user in user_ids {
                    out.push(user);
                }
            }
            CallEvent::Ringing { .. } | CallEvent::Busy { .. } => {
                out.push(&call_after.initiated_by)
            }
            CallEvent::Missed { user_id } => {
                out.push(&call_after.initiated_by);
                out.push(user_id);
            }
            CallEvent::Accepted { .. } | CallEvent::Rejected { .. } | CallEvent::Ended { .. } => {
                let reachable = |status: ParticipantStatus| {
                    matches!(
                        status,
                        ParticipantStatus::Joined
                            | ParticipantStatus::Ringing
                            | ParticipantStatus::Invited
                    )
                };
                let before_reachable: HashSet<&str> = call_before
                    .map(|c| {
                        c.participants
                            .iter()
                            .filter(|p| reachable(p.status))
                            .map(|p| p.user_id.as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                let subject = self.subject().map(UserId::as_str);
                for p in &call_after.participants {
                    let id = p.user_id.as_str();
                    if reachable(p.status) || before_reachable.contains(id) || subject == Some(id) {
                        out.push(&p.user_id);
                    }
                }
                // A participant only the earlier snapshot knows of; not produced by the book,
                // which never removes participants, but cheap to honour.
                if let Some(before) = call_before {
                    for p in &before.participants {
                        if reachable(p.status) {
                            out.push(&p.user_id);
                        }
                    }
                }
            }
            CallEvent::ParticipantJoined { user_id, .. }
            | CallEvent::ParticipantLeft { user_id, .. } => {
                // Joined before or after: when a leave ends a direct call, the other side is
                // no longer joined afterwards but still has to hear who left and why.
                let before = call_before.into_iter().flat_map(Call::joined);
                for p in before.chain(call_after.joined()) {
                    if p.user_id != *user_id {
                        out.push(&p.user_id);
                    }
                }
            }
            CallEvent::MediaChanged { .. } => {
                for p in call_after.joined() {
                    out.push(&p.user_id);
                }
            }
            CallEvent::Removed { user_id, .. } | CallEvent::MutedBy { user_id, .. } => {
                out.push(user_id)
            }
        }
        out.list
    }
}

/// An ordered list of users without repeats.
#[derive(Default)]
struct Recipients {
    seen: HashSet<UserId>,
    list: Vec<UserId>,
}

impl Recipients {
    fn push(&mut self, user: &UserId) {
        if self.seen.insert(user.clone()) {
            self.list.push(user.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;
    use uuid::Uuid;

    use super::*;
    use crate::model::{CallKind, MediaKind, MediaState, OpaqueId, Participant};

    fn u(id: &str) -> UserId {
        OpaqueId::parse(id).expect("test ids are valid")
    }

    fn sample_call() -> Call {
        let t0 = datetime!(2025-03-01 12:00 UTC);
        let person = |id: &str, name: &str, status| Participant {
            user_id: u(id),
            name: name.to_owned(),
            status,
            joined_at: None,
            left_at: None,
            left_reason: None,
            media: MediaState::initial(MediaKind::Audio),
        };
        Call {
            id: Uuid::from_u128(7),
            conversation_id: Some(u("team")),
            kind: CallKind::Group,
            media: MediaKind::Audio,
            initiated_by: u("alice"),
            status: CallStatus::Ringing,
            created_at: t0,
            started_at: None,
            ended_at: None,
            end_reason: None,
            ended_by: None,
            participants: vec![
                person("alice", "Alice A.", ParticipantStatus::Joined),
                person("bob", "bob", ParticipantStatus::Ringing),
            ],
            version: 1,
        }
    }

    const CALL_ID: &str = "00000000-0000-0000-0000-000000000007";

    #[test]
    fn type_names_are_the_contracts() {
        let events = [
            CallEvent::Incoming { user_ids: vec![] },
            CallEvent::Ringing { user_ids: vec![] },
            CallEvent::Accepted { user_id: u("a") },
            CallEvent::Rejected {
                user_id: u("a"),
                reason: None,
            },
            CallEvent::Missed { user_id: u("a") },
            CallEvent::Busy { user_id: u("a") },
            CallEvent::Ended {
                status: CallStatus::Completed,
                ended_by: None,
                reason: EndReason::Ended,
                duration_s: 0,
            },
            CallEvent::ParticipantJoined {
                user_id: u("a"),
                name: "a".into(),
            },
            CallEvent::ParticipantLeft {
                user_id: u("a"),
                name: "a".into(),
                reason: LeaveReason::Left,
            },
            CallEvent::MediaChanged {
                user_id: u("a"),
                audio_muted: false,
                video_enabled: false,
                screen_sharing: false,
            },
            CallEvent::Removed {
                user_id: u("a"),
                reason: "removed".into(),
            },
            CallEvent::MutedBy {
                user_id: u("a"),
                by: u("b"),
                mute: AdminMute::default(),
            },
        ];
        let names: Vec<&str> = events.iter().map(CallEvent::type_name).collect();
        assert_eq!(names, CallEvent::TYPE_NAMES);
    }

    #[test]
    fn incoming_names_the_caller() {
        let call = sample_call();
        let event = CallEvent::Incoming {
            user_ids: vec![u("bob")],
        };
        assert_eq!(
            event.payload(&call),
            json!({
                "call_id": CALL_ID,
                "conversation_id": "team",
                "kind": "group",
                "media": "audio",
                "caller": { "user_id": "alice", "name": "Alice A." },
            })
        );
        let direct = Call {
            conversation_id: None,
            kind: CallKind::Direct,
            ..call
        };
        assert_eq!(event.payload(&direct)["conversation_id"], json!(null));
        assert_eq!(event.payload(&direct)["kind"], json!("direct"));
    }

    #[test]
    fn ringing_missed_and_busy_payloads() {
        let call = sample_call();
        let ringing = CallEvent::Ringing {
            user_ids: vec![u("bob"), u("carol")],
        };
        assert_eq!(
            ringing.payload(&call),
            json!({ "call_id": CALL_ID, "user_ids": ["bob", "carol"] })
        );
        for event in [
            CallEvent::Missed { user_id: u("bob") },
            CallEvent::Busy { user_id: u("bob") },
            CallEvent::Accepted { user_id: u("bob") },
        ] {
            assert_eq!(
                event.payload(&call),
                json!({ "call_id": CALL_ID, "user_id": "bob" })
            );
        }
    }

    #[test]
    fn rejected_carries_a_reason_only_when_given() {
        let call = sample_call();
        let without = CallEvent::Rejected {
            user_id: u("bob"),
            reason: None,
        };
        assert_eq!(
            without.payload(&call),
            json!({ "call_id": CALL_ID, "user_id": "bob" })
        );
        let with = CallEvent::Rejected {
            user_id: u("bob"),
            reason: Some("driving".into()),
        };
        assert_eq!(
            with.payload(&call),
            json!({ "call_id": CALL_ID, "user_id": "bob", "reason": "driving" })
        );
    }

    #[test]
    fn ended_always_has_every_field() {
        let call = sample_call();
        let timeout = CallEvent::Ended {
            status: CallStatus::Missed,
            ended_by: None,
            reason: EndReason::Timeout,
            duration_s: 0,
        };
        assert_eq!(
            timeout.payload(&call),
            json!({
                "call_id": CALL_ID,
                "status": "missed",
                "ended_by": null,
                "reason": "timeout",
                "duration_s": 0,
            })
        );
        let ended = CallEvent::Ended {
            status: CallStatus::Completed,
            ended_by: Some(u("alice")),
            reason: EndReason::Ended,
            duration_s: 61,
        };
        assert_eq!(ended.payload(&call)["ended_by"], json!("alice"));
        assert_eq!(ended.payload(&call)["status"], json!("completed"));
        assert_eq!(ended.payload(&call)["duration_s"], json!(61));
        let given = CallEvent::Ended {
            status: CallStatus::Completed,
            ended_by: Some(u("alice")),
            reason: EndReason::Given("see you".into()),
            duration_s: 1,
        };
        assert_eq!(given.payload(&call)["reason"], json!("see you"));
    }

    #[test]
    fn end_reasons_are_the_contracts_words() {
        let words: Vec<&str> = EndReason::FIXED.iter().map(EndReason::as_str).collect();
        assert_eq!(
            words,
            [
                "ended",
                "left",
                "timeout",
                "rejected",
                "busy",
                "disconnected",
                "drained",
                "node_lost",
                "server_restart"
            ]
        );
        assert_eq!(EndReason::from(LeaveReason::Left), EndReason::Left);
        assert_eq!(
            EndReason::from(LeaveReason::Disconnected),
            EndReason::Disconnected
        );
        // Not a word of its own: an admin's removal ends a call as an end would.
        assert_eq!(EndReason::from(LeaveReason::Removed), EndReason::Ended);
    }

    #[test]
    fn participant_and_media_payloads() {
        let call = sample_call();
        let joined = CallEvent::ParticipantJoined {
            user_id: u("bob"),
            name: "Bob".into(),
        };
        assert_eq!(
            joined.payload(&call),
            json!({ "call_id": CALL_ID, "user_id": "bob", "name": "Bob" })
        );
        for reason in LeaveReason::ALL {
            let left = CallEvent::ParticipantLeft {
                user_id: u("bob"),
                name: "Bob".into(),
                reason: *reason,
            };
            assert_eq!(
                left.payload(&call),
                json!({ "call_id": CALL_ID, "user_id": "bob", "name": "Bob", "reason": reason.as_str() })
            );
        }
        let media = CallEvent::MediaChanged {
            user_id: u("bob"),
            audio_muted: true,
            video_enabled: false,
            screen_sharing: true,
        };
        assert_eq!(
            media.payload(&call),
            json!({
                "call_id": CALL_ID,
                "user_id": "bob",
                "audio_muted": true,
                "video_enabled": false,
                "screen_sharing": true,
            })
        );
    }

    #[test]
    fn recipients_are_deduplicated_in_participant_order() {
        let call = sample_call();
        // The subject is also joined-or-ringing: listed once.
        let accepted = CallEvent::Accepted { user_id: u("bob") };
        assert_eq!(accepted.recipients(None, &call), vec![u("alice"), u("bob")]);
        let incoming = CallEvent::Incoming {
            user_ids: vec![u("bob"), u("carol"), u("bob")],
        };
        assert_eq!(incoming.recipients(None, &call), vec![u("bob"), u("carol")]);
        // Missing a call one started: the initiator hears once.
        let missed = CallEvent::Missed {
            user_id: u("alice"),
        };
        assert_eq!(missed.recipients(None, &call), vec![u("alice")]);
    }

    #[test]
    fn recipients_honour_a_participant_only_the_earlier_snapshot_has() {
        let before = sample_call();
        let mut after = before.clone();
        after.participants.truncate(1);
        after.participants[0].status = ParticipantStatus::Left;
        let ended = CallEvent::Ended {
            status: CallStatus::Cancelled,
            ended_by: None,
            reason: EndReason::Left,
            duration_s: 0,
        };
        assert_eq!(
            ended.recipients(Some(&before), &after),
            vec![u("alice"), u("bob")]
        );
        assert!(ended.recipients(None, &after).is_empty());
    }
}
