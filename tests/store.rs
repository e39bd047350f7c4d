//! The history store against real databases: every test runs on a SQLite file, and on
//! PostgreSQL when asked (`cargo test --test store -- --include-ignored` with
//! `CONFAB_TEST_POSTGRES_URL` set).

// Only the database helper: the store's tests must not depend on the HTTP test server.
#[path = "support/db.rs"]
mod db;

use confab::store::{
    CallSummary, Cursor, HistoryQuery, InvalidCursor, MediaEvent, QualityAverages,
    QualityDirection, QualitySample, StatsQuery, Store, StoreError,
};
use confab_signaling::{
    Call, CallKind, CallStatus, Conversation, Direction, LeaveReason, MediaKind, MediaState,
    OpaqueId, Participant, ParticipantStatus, UserId,
};
use db::TestDb;
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// `ms` milliseconds after a fixed instant; whole milliseconds, as the server stores them.
fn at(ms: i64) -> OffsetDateTime {
    datetime!(2026-11-01 10:00:00 UTC) + Duration::milliseconds(ms)
}

fn user(id: &str) -> UserId {
    OpaqueId::parse(id).expect("valid user id")
}

fn conversation(id: &str, name: Option<&str>, members: &[&str]) -> Conversation {
    Conversation {
        id: user(id),
        name: name.map(str::to_owned),
        members: members.iter().map(|m| user(m)).collect(),
    }
}

fn participant(id: &str, status: ParticipantStatus, joined_at: Option<i64>) -> Participant {
    Participant {
        user_id: user(id),
        name: format!("{id} (display)"),
        status,
        joined_at: joined_at.map(at),
        left_at: None,
        left_reason: None,
        media: MediaState::initial(MediaKind::Audio),
    }
}

/// A ringing call, version 1: the initiator joined at creation, the invitees ringing.
fn ringing(initiator: &str, invitees: &[&str], created_ms: i64) -> Call {
    let mut participants = vec![participant(
        initiator,
        ParticipantStatus::Joined,
        Some(created_ms),
    )];
    participants.extend(
        invitees
            .iter()
            .map(|i| participant(i, ParticipantStatus::Ringing, None)),
    );
    Call {
        id: Uuid::new_v4(),
        conversation_id: None,
        kind: if invitees.len() == 1 {
            CallKind::Direct
        } else {
            CallKind::Group
        },
        media: MediaKind::Audio,
        initiated_by: user(initiator),
        status: CallStatus::Ringing,
        created_at: at(created_ms),
        started_at: None,
        ended_at: None,
        end_reason: None,
        ended_by: None,
        participants,
        version: 1,
    }
}

/// The same call, one version later, with `status`.
fn next(call: &Call, status: CallStatus) -> Call {
    let mut call = call.clone();
    call.status = status;
    call.version += 1;
    call
}

async fn save(store: &Store, call: &Call) {
    assert!(store.save_call(call).await.expect("save_call"), "saved");
}

fn history(viewer: &str) -> HistoryQuery {
    HistoryQuery {
        viewer: user(viewer),
        admin: false,
        conversation_id: None,
        status: None,
        media: None,
        direction: None,
        limit: 100,
        before: None,
    }
}

async fn ids(store: &Store, q: &HistoryQuery) -> Vec<Uuid> {
    let page = store.list_calls(q).await.expect("list_calls");
    page.calls.iter().map(|c| c.id).collect()
}

fn summary(call: &Call) -> CallSummary {
    CallSummary {
        status: call.status,
        media: call.media,
        initiated_by: call.initiated_by.clone(),
        created_at: call.created_at,
        started_at: call.started_at,
        ended_at: call.ended_at,
    }
}

fn sample(call: &Call, who: &str, at_ms: i64, loss: f64) -> QualitySample {
    QualitySample {
        call_id: call.id,
        user_id: user(who),
        direction: QualityDirection::Inbound,
        kind: MediaKind::Audio,
        at: at(at_ms),
        bitrate_bps: 32_000,
        packet_loss: loss,
        jitter_ms: 4.0,
        rtt_ms: 20.0,
    }
}

backend_tests! {
    async fn migrating_twice_is_a_no_op(db: &TestDb) {
        let store = db.store().await;
        assert_eq!(store.backend_name(), db.backend_name());
        let team = conversation("team", Some("Team"), &["alice", "bob"]);
        store.put_conversation(&team, at(0)).await.unwrap();

        store
            .migrate()
            .await
            .expect("the second run applies nothing");
        store.ping().await.expect("ping");
        assert_eq!(store.get_conversation("team").await.unwrap(), Some(team));
    }

    async fn conversations_are_created_replaced_and_deleted(db: &TestDb) {
        let store = db.store().await;
        assert_eq!(store.get_conversation("team").await.unwrap(), None);

        store
            .put_conversation(
                &conversation("team", Some("Team"), &["carol", "alice", "bob"]),
                at(0),
            )
            .await
            .unwrap();
        assert_eq!(
            store.get_conversation("team").await.unwrap(),
            Some(conversation(
                "team",
                Some("Team"),
                &["alice", "bob", "carol"]
            )),
            "members come back sorted"
        );

        store
            .put_conversation(
                &conversation("team", None, &["dave", "alice", "alice"]),
                at(1),
            )
            .await
            .unwrap();
        assert_eq!(
            store.get_conversation("team").await.unwrap(),
            Some(conversation("team", None, &["alice", "dave"])),
            "name and members replaced, the repeated member stored once"
        );

        let mut call = ringing("alice", &["dave", "erin"], 10);
        call.conversation_id = Some(user("team"));
        save(&store, &call).await;

        assert!(store.delete_conversation("team").await.unwrap());
        assert_eq!(store.get_conversation("team").await.unwrap(), None);
        assert!(
            !store.delete_conversation("team").await.unwrap(),
            "already gone"
        );
        assert_eq!(
            store.get_call(call.id).await.unwrap(),
            Some(call),
            "the call history outlives its conversation"
        );

        store
            .put_conversation(&conversation("team", None, &["erin"]), at(2))
            .await
            .unwrap();
        assert_eq!(
            store.get_conversation("team").await.unwrap(),
            Some(conversation("team", None, &["erin"])),
            "no members linger from before the deletion"
        );
    }

    async fn save_call_applies_only_newer_versions(db: &TestDb) {
        let store = db.store().await;
        let v1 = ringing("alice", &["bob"], 0);
        assert!(store.save_call(&v1).await.unwrap());
        assert_eq!(store.get_call(v1.id).await.unwrap().as_ref(), Some(&v1));

        let mut v2 = next(&v1, CallStatus::Ongoing);
        v2.started_at = Some(at(1_500));
        v2.participants[1].status = ParticipantStatus::Joined;
        v2.participants[1].joined_at = Some(at(1_500));
        assert!(store.save_call(&v2).await.unwrap());
        assert_eq!(store.get_call(v1.id).await.unwrap().as_ref(), Some(&v2));

        assert!(
            !store.save_call(&v1).await.unwrap(),
            "a stale snapshot is ignored"
        );
        let mut same_version = v2.clone();
        same_version.status = CallStatus::Failed;
        same_version.participants.pop();
        assert!(
            !store.save_call(&same_version).await.unwrap(),
            "an equal version too"
        );
        assert_eq!(store.get_call(v1.id).await.unwrap().as_ref(), Some(&v2));

        let mut v3 = next(&v2, CallStatus::Ongoing);
        v3.participants
            .push(participant("carol", ParticipantStatus::Joined, Some(2_000)));
        assert!(store.save_call(&v3).await.unwrap());
        assert_eq!(store.get_call(v1.id).await.unwrap(), Some(v3));
    }

    async fn concurrent_saves_keep_the_newest_version(db: &TestDb) {
        let store = db.store().await;
        let mut versions = vec![ringing("alice", &["bob"], 0)];
        for v in 2..=30 {
            let mut call = next(&versions[versions.len() - 1], CallStatus::Ongoing);
            call.participants.push(participant(
                &format!("guest-{v}"),
                ParticipantStatus::Joined,
                Some(v),
            ));
            versions.push(call);
        }
        let newest = versions[versions.len() - 1].clone();
        // Oldest last, so most writes are stale by the time they run.
        let mut writes = tokio::task::JoinSet::new();
        for call in versions.into_iter().rev() {
            let store = store.clone();
            writes.spawn(async move { store.save_call(&call).await });
        }
        while let Some(result) = writes.join_next().await {
            result.expect("task").expect("save_call");
        }
        assert_eq!(store.get_call(newest.id).await.unwrap(), Some(newest));
    }

    async fn participants_round_trip_exactly(db: &TestDb) {
        let store = db.store().await;
        let mut call = ringing("zed", &["amy", "mo", "kim"], 7);
        call.conversation_id = Some(user("room:42@example.org"));
        call.kind = CallKind::Group;
        call.media = MediaKind::Video;
        call.status = CallStatus::Completed;
        call.started_at = Some(at(1_001));
        call.ended_at = Some(at(61_999));
        call.end_reason = Some("bye — see you «tomorrow»".to_owned());
        call.ended_by = Some(user("zed"));
        call.version = 17;
        let [zed, amy, mo, kim] = &mut call.participants[..] else {
            unreachable!("four participants")
        };
        zed.status = ParticipantStatus::Left;
        zed.left_at = Some(at(61_999));
        zed.left_reason = Some(LeaveReason::Left);
        zed.media = MediaState {
            audio_muted: true,
            video_enabled: false,
            screen_sharing: true,
        };
        amy.status = ParticipantStatus::Left;
        amy.joined_at = Some(at(30_123));
        amy.left_at = Some(at(45_678));
        amy.left_reason = Some(LeaveReason::Disconnected);
        amy.media = MediaState {
            audio_muted: false,
            video_enabled: true,
            screen_sharing: false,
        };
        mo.status = ParticipantStatus::Declined;
        mo.name = "Mø, with ünïcode".to_owned();
        kim.status = ParticipantStatus::Missed;
        kim.left_reason = Some(LeaveReason::Removed);
        kim.media = MediaState {
            audio_muted: true,
            video_enabled: true,
            screen_sharing: true,
        };

        save(&store, &call).await;
        let stored = store.get_call(call.id).await.unwrap().expect("stored");
        let order: Vec<&str> = stored
            .participants
            .iter()
            .map(|p| p.user_id.as_str())
            .collect();
        assert_eq!(
            order,
            ["zed", "amy", "mo", "kim"],
            "call order, not id order"
        );
        assert_eq!(stored, call);
    }

    async fn unknown_call_is_none(db: &TestDb) {
        let store = db.store().await;
        save(&store, &ringing("alice", &["bob"], 0)).await;
        assert_eq!(store.get_call(Uuid::new_v4()).await.unwrap(), None);
    }

    async fn live_calls_are_the_ringing_and_ongoing_ones(db: &TestDb) {
        let store = db.store().await;
        let ringing_call = ringing("alice", &["bob"], 0);
        let ongoing = next(
            &ringing("carol", &["dave", "erin"], 1_000),
            CallStatus::Ongoing,
        );
        let completed = next(&ringing("bob", &["alice"], 2_000), CallStatus::Completed);
        let missed = next(&ringing("dave", &["alice"], 3_000), CallStatus::Missed);
        for call in [&ringing_call, &ongoing, &completed, &missed] {
            save(&store, call).await;
        }
        assert_eq!(
            store.live_calls().await.unwrap(),
            vec![ringing_call.clone(), ongoing.clone()],
            "oldest first, with participants"
        );

        save(&store, &next(&ringing_call, CallStatus::Cancelled)).await;
        assert_eq!(store.live_calls().await.unwrap(), vec![ongoing]);
    }

    async fn media_events_come_back_in_time_order(db: &TestDb) {
        let store = db.store().await;
        let (call, other) = (Uuid::new_v4(), Uuid::new_v4());
        let event = |call_id, who: &str, ms, audio_muted| MediaEvent {
            call_id,
            user_id: user(who),
            at: at(ms),
            state: MediaState {
                audio_muted,
                video_enabled: !audio_muted,
                screen_sharing: ms > 15,
            },
        };
        store
            .insert_media_events(&[
                event(call, "bob", 30, true),
                event(call, "alice", 10, false),
                event(other, "carol", 5, true),
                event(call, "alice", 20, true),
                event(call, "bob", 10, true),
            ])
            .await
            .unwrap();
        store
            .insert_media_events(&[])
            .await
            .expect("an empty batch is fine");
        assert_eq!(
            store.media_events(call).await.unwrap(),
            vec![
                event(call, "alice", 10, false),
                event(call, "bob", 10, true),
                event(call, "alice", 20, true),
                event(call, "bob", 30, true),
            ],
            "by time, then in insertion order"
        );

        let big: Vec<MediaEvent> = (0..450)
            .map(|i| event(other, "dave", 100 + i, i % 2 == 0))
            .collect();
        store
            .insert_media_events(&big)
            .await
            .expect("a batch larger than one INSERT");
        let stored = store.media_events(other).await.unwrap();
        assert_eq!(stored.len(), 451);
        assert_eq!(stored[1..], big[..]);
        assert!(store.media_events(Uuid::new_v4()).await.unwrap().is_empty());
    }

    async fn quality_samples_are_kept_oldest_first(db: &TestDb) {
        let store = db.store().await;
        let call = ringing("alice", &["bob"], 0);
        let other = ringing("carol", &["dave"], 0);
        let mut late = sample(&call, "bob", 5_000, 0.02);
        late.direction = QualityDirection::Outbound;
        late.kind = MediaKind::Video;
        late.bitrate_bps = 1_500_000;
        late.jitter_ms = 2.5;
        late.rtt_ms = 42.125;
        let early = sample(&call, "alice", 0, 0.0);
        let middle = sample(&call, "alice", 2_500, 0.5);
        store
            .insert_quality_samples(&[late.clone(), early.clone(), sample(&other, "dave", 1, 1.0)])
            .await
            .unwrap();
        store
            .insert_quality_samples(std::slice::from_ref(&middle))
            .await
            .unwrap();
        store
            .insert_quality_samples(&[])
            .await
            .expect("an empty batch is fine");
        let samples = store.quality_samples(call.id).await.unwrap();
        assert_eq!(samples, vec![early, middle, late.clone()], "newest last");

        let json = serde_json::to_value(&samples[2]).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort_unstable();
        assert_eq!(
            sorted_keys,
            [
                "at",
                "bitrate_bps",
                "direction",
                "jitter_ms",
                "kind",
                "packet_loss",
                "rtt_ms",
                "user_id"
            ],
            "the contract's fields, without call_id"
        );
        assert_eq!(json["user_id"], "bob");
        assert_eq!(json["direction"], "outbound");
        assert_eq!(json["kind"], "video");
        assert_eq!(json["bitrate_bps"], 1_500_000);
        assert_eq!(json["rtt_ms"], 42.125);
        let when = OffsetDateTime::parse(json["at"].as_str().unwrap(), &Rfc3339).unwrap();
        assert_eq!(when, late.at);
    }

    async fn history_shows_only_calls_the_viewer_took_part_in(db: &TestDb) {
        let store = db.store().await;
        let direct = ringing("alice", &["bob"], 0);
        let other = ringing("bob", &["carol"], 1_000);
        let mut group = ringing("carol", &["alice", "dave"], 2_000);
        group.participants[2].status = ParticipantStatus::Invited;
        for call in [&direct, &other, &group] {
            save(&store, call).await;
        }

        assert_eq!(ids(&store, &history("alice")).await, [group.id, direct.id]);
        assert_eq!(ids(&store, &history("bob")).await, [other.id, direct.id]);
        assert_eq!(
            ids(&store, &history("dave")).await,
            [group.id],
            "an invitee took part"
        );
        assert!(
            ids(&store, &history("erin")).await.is_empty(),
            "a stranger sees nothing"
        );
        let admin = HistoryQuery {
            admin: true,
            ..history("ops")
        };
        assert_eq!(ids(&store, &admin).await, [group.id, other.id, direct.id]);

        let page = store.list_calls(&history("alice")).await.unwrap();
        assert_eq!(
            page.calls,
            vec![group, direct],
            "whole calls, with participants"
        );
        assert_eq!(page.next_cursor, None);
    }

    async fn history_filters(db: &TestDb) {
        let store = db.store().await;
        let mut direct = next(&ringing("alice", &["bob"], 0), CallStatus::Completed);
        direct.started_at = Some(at(500));
        direct.ended_at = Some(at(9_000));
        let missed = next(&ringing("bob", &["alice"], 1_000), CallStatus::Missed);
        let mut group = next(
            &ringing("carol", &["alice", "bob"], 2_000),
            CallStatus::Ongoing,
        );
        group.conversation_id = Some(user("team"));
        group.media = MediaKind::Video;
        for call in [&direct, &missed, &group] {
            save(&store, call).await;
        }

        let alice = history("alice");
        let q = HistoryQuery {
            conversation_id: Some("team".into()),
            ..alice.clone()
        };
        assert_eq!(ids(&store, &q).await, [group.id]);
        let q = HistoryQuery {
            conversation_id: Some("elsewhere".into()),
            ..alice.clone()
        };
        assert!(ids(&store, &q).await.is_empty());
        let q = HistoryQuery {
            status: Some(CallStatus::Missed),
            ..alice.clone()
        };
        assert_eq!(ids(&store, &q).await, [missed.id]);
        let q = HistoryQuery {
            media: Some(MediaKind::Audio),
            ..alice.clone()
        };
        assert_eq!(ids(&store, &q).await, [missed.id, direct.id]);
        let q = HistoryQuery {
            direction: Some(Direction::Outgoing),
            ..alice.clone()
        };
        assert_eq!(ids(&store, &q).await, [direct.id]);
        let q = HistoryQuery {
            direction: Some(Direction::Incoming),
            ..alice.clone()
        };
        assert_eq!(ids(&store, &q).await, [group.id, missed.id]);
        let q = HistoryQuery {
            direction: Some(Direction::Incoming),
            media: Some(MediaKind::Audio),
            status: Some(CallStatus::Missed),
            ..alice.clone()
        };
        assert_eq!(ids(&store, &q).await, [missed.id], "filters combine");
        let q = HistoryQuery {
            direction: Some(Direction::Outgoing),
            ..history("bob")
        };
        assert_eq!(ids(&store, &q).await, [missed.id]);

        let admin = HistoryQuery {
            admin: true,
            ..history("ops")
        };
        let q = HistoryQuery {
            direction: Some(Direction::Outgoing),
            ..admin.clone()
        };
        assert!(
            ids(&store, &q).await.is_empty(),
            "direction is relative to the viewer"
        );
        let q = HistoryQuery {
            direction: Some(Direction::Incoming),
            ..admin.clone()
        };
        assert_eq!(ids(&store, &q).await.len(), 3);
        let q = HistoryQuery {
            admin: true,
            direction: Some(Direction::Outgoing),
            ..history("carol")
        };
        assert_eq!(ids(&store, &q).await, [group.id]);
    }

    async fn history_pages_have_no_gaps_or_duplicates(db: &TestDb) {
        let store = db.store().await;
        // 23 calls, three at a time sharing a creation instant, so pages split ties.
        let mut calls = Vec::new();
        for i in 0..23 {
            let mut call = ringing("alice", &["bob"], i / 3 * 1_000);
            call.status = if i % 2 == 0 {
                CallStatus::Completed
            } else {
                CallStatus::Missed
            };
            save(&store, &call).await;
            calls.push(call);
        }
        calls.sort_by_key(|c| std::cmp::Reverse((c.created_at, c.id)));
        let expected: Vec<Uuid> = calls.iter().map(|c| c.id).collect();

        for limit in [1, 2, 3, 4, 7, 22, 23, 24, 100] {
            let mut q = HistoryQuery {
                limit,
                ..history("bob")
            };
            let mut seen = Vec::new();
            loop {
                let page = store.list_calls(&q).await.unwrap();
                assert!(page.calls.len() <= limit as usize);
                seen.extend(page.calls.iter().map(|c| c.id));
                match page.next_cursor {
                    Some(cursor) => {
                        assert_eq!(
                            page.calls.len(),
                            limit as usize,
                            "only full pages have a next"
                        );
                        let text = cursor.encode();
                        q.before = Some(Cursor::decode(&text).expect("own cursor"));
                    }
                    None => break,
                }
            }
            assert_eq!(seen, expected, "limit {limit}");
        }

        // A filtered walk, with a new call arriving between pages: keyset pages stay exact.
        let completed: Vec<Uuid> = calls
            .iter()
            .filter(|c| c.status == CallStatus::Completed)
            .map(|c| c.id)
            .collect();
        let mut q = HistoryQuery {
            limit: 5,
            status: Some(CallStatus::Completed),
            ..history("alice")
        };
        let first = store.list_calls(&q).await.unwrap();
        let newest = next(&ringing("alice", &["bob"], 99_000), CallStatus::Completed);
        save(&store, &newest).await;
        let mut seen: Vec<Uuid> = first.calls.iter().map(|c| c.id).collect();
        q.before = first.next_cursor;
        while q.before.is_some() {
            let page = store.list_calls(&q).await.unwrap();
            seen.extend(page.calls.iter().map(|c| c.id));
            q.before = page.next_cursor;
        }
        assert_eq!(seen, completed);

        // A cursor need not name a stored call: it is a position in the order.
        let q = HistoryQuery {
            before: Some(Cursor {
                created_at: at(2_000),
                id: Uuid::max(),
            }),
            ..history("alice")
        };
        let older: Vec<Uuid> = calls
            .iter()
            .filter(|c| c.created_at <= at(2_000))
            .map(|c| c.id)
            .collect();
        assert_eq!(ids(&store, &q).await, older);
    }

    async fn stats_rows_count_calls_from_since_on(db: &TestDb) {
        let store = db.store().await;
        let since = at(0);
        let before = next(&ringing("alice", &["bob"], -1), CallStatus::Completed);
        let mut on_the_edge = next(&ringing("alice", &["bob"], 0), CallStatus::Completed);
        on_the_edge.started_at = Some(at(1_000));
        on_the_edge.ended_at = Some(at(61_000));
        let mut later = next(
            &ringing("bob", &["alice", "carol"], 3_600_000),
            CallStatus::Rejected,
        );
        later.conversation_id = Some(user("team"));
        later.media = MediaKind::Video;
        let others = ringing("carol", &["dave"], 10);
        for call in [&before, &on_the_edge, &later, &others] {
            save(&store, call).await;
        }
        let mut loud = sample(&on_the_edge, "bob", 1_000, 0.0);
        loud.bitrate_bps = 1_000;
        loud.jitter_ms = 2.0;
        loud.rtt_ms = 10.0;
        let mut quiet = sample(&later, "alice", 3_601_000, 0.5);
        quiet.bitrate_bps = 3_000;
        quiet.jitter_ms = 4.0;
        quiet.rtt_ms = 30.0;
        let outlier = |call: &Call| QualitySample {
            bitrate_bps: 9_000_000,
            jitter_ms: 900.0,
            rtt_ms: 900.0,
            ..sample(call, "bob", 5, 1.0)
        };
        store
            .insert_quality_samples(&[loud, quiet, outlier(&before), outlier(&others)])
            .await
            .unwrap();

        let alice = StatsQuery {
            viewer: user("alice"),
            admin: false,
            conversation_id: None,
            since,
        };
        let rows = store.stats_rows(&alice).await.unwrap();
        assert_eq!(
            rows.calls,
            vec![summary(&on_the_edge), summary(&later)],
            "created_at >= since, oldest first, only the viewer's calls"
        );
        assert_eq!(
            rows.quality,
            QualityAverages {
                avg_packet_loss: Some(0.25),
                avg_jitter_ms: Some(3.0),
                avg_rtt_ms: Some(20.0),
                avg_bitrate_bps: Some(2_000.0),
            },
            "averages over the samples of the counted calls only"
        );

        let admin = StatsQuery {
            viewer: user("ops"),
            admin: true,
            ..alice.clone()
        };
        let rows = store.stats_rows(&admin).await.unwrap();
        assert_eq!(
            rows.calls,
            vec![summary(&on_the_edge), summary(&others), summary(&later)]
        );

        let team = StatsQuery {
            conversation_id: Some("team".into()),
            ..alice.clone()
        };
        let rows = store.stats_rows(&team).await.unwrap();
        assert_eq!(rows.calls, vec![summary(&later)]);
        assert_eq!(rows.quality.avg_packet_loss, Some(0.5));

        let one_ms_later = StatsQuery {
            since: at(1),
            ..alice.clone()
        };
        assert_eq!(
            store.stats_rows(&one_ms_later).await.unwrap().calls,
            vec![summary(&later)]
        );

        let future = StatsQuery {
            since: at(86_400_000),
            ..alice
        };
        let rows = store.stats_rows(&future).await.unwrap();
        assert!(rows.calls.is_empty());
        assert_eq!(
            rows.quality,
            QualityAverages::default(),
            "no samples, no averages"
        );
    }

    async fn columns_hold_each_backends_native_encoding(db: &TestDb) {
        let store = db.store().await;
        let call = ringing("alice", &["bob"], 1_234);
        save(&store, &call).await;
        store.close().await;
        let expected_ms = call.created_at.unix_timestamp() * 1_000 + 234;
        match db.backend_name() {
            "sqlite" => {
                let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
                let row: (String, String, String, i64) = sqlx::query_as(
                    "SELECT typeof(id), id, typeof(created_at), created_at FROM calls",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                assert_eq!(
                    row,
                    (
                        "text".into(),
                        call.id.hyphenated().to_string(),
                        "integer".into(),
                        expected_ms
                    ),
                    "hyphenated UUID text and unix milliseconds"
                );
                pool.close().await;
            }
            _ => {
                let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
                let row: (String, String, i64) = sqlx::query_as(
                    "SELECT pg_typeof(id)::text, pg_typeof(created_at)::text, \
                     CAST(EXTRACT(EPOCH FROM created_at) * 1000 AS BIGINT) FROM calls",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                assert_eq!(
                    row,
                    (
                        "uuid".into(),
                        "timestamp with time zone".into(),
                        expected_ms
                    )
                );
                pool.close().await;
            }
        }
    }

    async fn data_survives_closing_and_reopening(db: &TestDb) {
        let store = db.store().await;
        let call = next(&ringing("alice", &["bob"], 0), CallStatus::Completed);
        save(&store, &call).await;
        let team = conversation("team", Some("Team"), &["alice", "bob"]);
        store.put_conversation(&team, at(0)).await.unwrap();
        store.close().await;

        let reopened = Store::connect(&db.url).await.expect("reconnect");
        reopened.migrate().await.expect("nothing to apply");
        assert_eq!(reopened.get_call(call.id).await.unwrap(), Some(call));
        assert_eq!(reopened.get_conversation("team").await.unwrap(), Some(team));
        reopened.close().await;
    }
}

#[tokio::test]
async fn connecting_creates_the_sqlite_file() {
    let db = TestDb::sqlite();
    let path = std::path::PathBuf::from(db.url.strip_prefix("sqlite://").expect("a sqlite URL"));
    assert!(!path.exists());
    let store = Store::connect(&db.url).await.expect("connect");
    assert!(path.exists());
    store.close().await;
}

#[tokio::test]
async fn unsupported_urls_are_refused_without_echoing_secrets() {
    let err = Store::connect("mysql://root:hunter2@db/confab")
        .await
        .expect_err("mysql is not supported");
    assert!(matches!(err, StoreError::UnsupportedUrl { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("\"mysql\""), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn cursors_that_were_not_issued_are_rejected() {
    for text in [
        "",
        "x",
        "not a cursor",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "%%%%",
    ] {
        assert_eq!(Cursor::decode(text), Err(InvalidCursor), "{text:?}");
    }
    let cursor = Cursor {
        created_at: at(1),
        id: Uuid::new_v4(),
    };
    assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
}
