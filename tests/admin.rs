//! The admin routes over real HTTP and WebSocket, against a server on 127.0.0.1:0: who may
//! call them, and what removing and muting a participant tell everyone.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::db::TestDb;
use support::server::{TestServer, admin, code, token};
use support::ws::WsClient;

/// A group call of the `team` conversation: alice started it, bob joined, carol is rung.
async fn ongoing_group_call(server: &TestServer) -> String {
    server
        .conversation("team", &["alice", "bob", "carol"])
        .await;
    let id = server
        .call(
            &token("alice"),
            json!({"conversation_id": "team", "invitees": ["bob", "carol"], "media": "video"}),
        )
        .await;
    let (status, body) = server
        .post(
            &format!("/api/v1/calls/{id}/accept"),
            &token("bob"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    id
}

backend_tests! {
    async fn every_admin_route_needs_an_admin_token(db: &TestDb) {
        let server = TestServer::start(db).await;
        let id = ongoing_group_call(&server).await;
        let routes = [
            (Method::GET, "/api/v1/admin/calls".to_owned(), None, StatusCode::OK),
            (Method::GET, "/api/v1/admin/nodes".to_owned(), None, StatusCode::OK),
            (Method::GET, format!("/api/v1/calls/{id}/admin-actions"), None, StatusCode::OK),
            (
                Method::POST,
                format!("/api/v1/calls/{id}/participants/bob/mute"),
                Some(json!({"audio": true})),
                StatusCode::OK,
            ),
            (
                Method::POST,
                format!("/api/v1/calls/{id}/participants/bob/remove"),
                Some(json!({})),
                StatusCode::OK,
            ),
            // Last: a drained node takes no new calls.
            (Method::POST, "/api/v1/admin/drain".to_owned(), None, StatusCode::ACCEPTED),
        ];
        // A plain user, and alice, who takes part in the call (and started it).
        let (user, participant) = (token("dave"), token("alice"));
        for (method, path, body, admin_status) in &routes {
            let cases = [
                ("no token", None, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
                ("user", Some(user.as_str()), StatusCode::FORBIDDEN, "FORBIDDEN"),
                ("participant", Some(participant.as_str()), StatusCode::FORBIDDEN, "FORBIDDEN"),
            ];
            for (who, bearer, status, expected) in cases {
                let (got, answer) = server.request(method.clone(), path, bearer, body.clone()).await;
                assert_eq!((got, code(&answer)), (status, expected), "{method} {path} as {who}: {answer}");
            }
            let (got, answer) = server.request(method.clone(), path, Some(&admin()), body.clone()).await;
            assert_eq!(got, *admin_status, "{method} {path} as admin: {answer}");
        }
    }

    async fn bad_paths_and_subjects_are_refused_with_contract_codes(db: &TestDb) {
        let server = TestServer::start(db).await;
        let id = ongoing_group_call(&server).await;
        let cases = [
            ("/api/v1/calls/nope/participants/bob/mute".to_owned(), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            (format!("/api/v1/calls/{id}/participants/b%20b/mute"), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            (format!("/api/v1/calls/{id}/participants/zed/mute"), StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            (format!("/api/v1/calls/{id}/participants/carol/mute"), StatusCode::CONFLICT, "INVALID_STATE"),
            (
                format!("/api/v1/calls/{}/participants/bob/mute", uuid::Uuid::new_v4()),
                StatusCode::NOT_FOUND,
                "CALL_NOT_FOUND",
            ),
        ];
        for (path, status, expected) in cases {
            let (got, body) = server.post(&path, &admin(), json!({"audio": true})).await;
            assert_eq!((got, code(&body)), (status, expected), "{path}: {body}");
        }
        let (got, body) = server
            .post(&format!("/api/v1/calls/{id}/participants/bob/mute"), &admin(), json!({"audio": false}))
            .await;
        assert_eq!((got, code(&body)), (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"), "{body}");
    }

    async fn admin_calls_and_nodes_describe_this_node(db: &TestDb) {
        let server = TestServer::start(db).await;
        let ongoing = ongoing_group_call(&server).await;
        let ringing = server
            .call(&token("erin"), json!({"invitees": ["frank"], "media": "audio"}))
            .await;
        let (status, body) = server.get("/api/v1/admin/calls", &admin()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let calls = body["calls"].as_array().expect("calls");
        assert_eq!(calls.len(), 2, "{body}");
        let node_id = calls[0]["node_id"].as_str().expect("node_id").to_owned();
        assert!(!node_id.is_empty());
        let status_of = |id: &str| {
            calls
                .iter()
                .find(|c| c["id"] == id)
                .map(|c| (c["status"].clone(), c["node_id"].clone()))
        };
        assert_eq!(status_of(&ongoing), Some((json!("ongoing"), json!(node_id))));
        assert_eq!(status_of(&ringing), Some((json!("ringing"), json!(node_id))));

        let (status, body) = server.get("/api/v1/admin/nodes", &admin()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let nodes = body["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 1, "{body}");
        let node = &nodes[0];
        assert_eq!(node["id"], json!(node_id));
        assert_eq!(node["draining"], false);
        assert_eq!(node["calls"], 2);
        // alice and bob in the group call, erin ringing hers.
        assert_eq!(node["participants"], 3);
        let cpu = node["cpu_ratio"].as_f64().expect("cpu_ratio");
        assert!((0.0..=1.0).contains(&cpu), "{node}");
        assert!(time::OffsetDateTime::parse(
            node["started_at"].as_str().expect("started_at"),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok());
        assert_eq!(node["http_url"], json!(server.url("")));
        assert!(!node["rtc_addrs"].as_array().expect("rtc_addrs").is_empty(), "{node}");
    }

    async fn remove_and_mute_tell_the_subject_and_everyone_else(db: &TestDb) {
        let server = TestServer::start(db).await;
        server.conversation("team", &["alice", "bob", "carol"]).await;
        let mut alice = WsClient::connect(&server, &token("alice")).await;
        let mut bob = WsClient::connect(&server, &token("bob")).await;
        let id = alice
            .start_call(json!({"conversation_id": "team", "invitees": ["bob", "carol"], "media": "video"}))
            .await;
        bob.event_for("call:incoming", &id).await;
        bob.ok("call:accept", json!({"call_id": id})).await;

        let (status, me) = server
            .post(
                &format!("/api/v1/calls/{id}/participants/bob/mute"),
                &admin(),
                json!({"audio": true, "video": true}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!((me["user_id"].clone(), me["audio_muted"].clone(), me["video_enabled"].clone()), (json!("bob"), json!(true), json!(false)));
        let muted = bob.event_for("call:muted-by", &id).await;
        assert_eq!(muted, json!({"call_id": id, "by": "host-app", "audio": true, "video": true}));
        for ws in [&mut alice, &mut bob] {
            let changed = ws.event_for("call:media-changed", &id).await;
            assert_eq!(changed["user_id"], "bob");
            assert_eq!(changed["audio_muted"], true);
            assert_eq!(changed["video_enabled"], false);
        }
        // Only the participant unmutes.
        let ack = bob.ok("call:media", json!({"call_id": id, "audio_muted": false})).await;
        assert_eq!(ack["audio_muted"], false, "{ack}");

        let (status, call) = server
            .post(
                &format!("/api/v1/calls/{id}/participants/bob/remove"),
                &admin(),
                json!({"reason": "spam"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{call}");
        let bob_now = call["participants"].as_array().unwrap().iter().find(|p| p["user_id"] == "bob").cloned().unwrap();
        assert_eq!(bob_now["status"], "left");
        assert!(bob_now["left_at"].is_string(), "{bob_now}");
        assert_eq!(call["status"], "ongoing");
        let removed = bob.event_for("call:removed", &id).await;
        assert_eq!(removed, json!({"call_id": id, "reason": "spam"}));
        let left = alice.event_for("call:participant-left", &id).await;
        assert_eq!((left["user_id"].clone(), left["reason"].clone()), (json!("bob"), json!("removed")));
        // Removed, bob negotiates no more media in that call.
        let refused = bob
            .request("rtc:offer", json!({"call_id": id, "target": "publisher", "sdp": "v=0"}))
            .await;
        assert_eq!(refused["type"], "error", "{refused}");
        assert_eq!(refused["data"]["code"], "INVALID_STATE", "{refused}");

        // Removing the last one ends the call as an admin's end.
        let (status, call) = server
            .post(&format!("/api/v1/calls/{id}/participants/alice/remove"), &admin(), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{call}");
        assert_eq!((call["status"].clone(), call["end_reason"].clone()), (json!("completed"), json!("ended")));
        let removed = alice.event_for("call:removed", &id).await;
        assert_eq!(removed["reason"], "removed");
        let ended = alice.event_for("call:ended", &id).await;
        assert_eq!(ended["ended_by"], "host-app");
        let (status, stored) = server.get(&format!("/api/v1/calls/{id}"), &admin()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(stored["status"], "completed");

        // The call's history names each action and the admin who took it.
        let (status, history) = server.get(&format!("/api/v1/calls/{id}/admin-actions"), &admin()).await;
        assert_eq!(status, StatusCode::OK, "{history}");
        let seen: Vec<(Value, Value, Value, Value)> = history["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .map(|a| (a["action"].clone(), a["by"].clone(), a["user_id"].clone(), a["detail"].clone()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (json!("muted"), json!("host-app"), json!("bob"), json!({"audio": true, "video": true})),
                (json!("removed"), json!("host-app"), json!("bob"), json!({"reason": "spam"})),
                (json!("removed"), json!("host-app"), json!("alice"), json!({"reason": "removed"})),
            ]
        );
    }
}

/// Waits until `check` holds, polling every 100 ms, for at most `limit`.
async fn until(limit: std::time::Duration, check: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    check()
}

/// Packets `me` received from `publisher`, by kind: (audio, video).
fn received_from(me: &confab_bot::participant::BotParticipant, publisher: &str) -> (u64, u64) {
    let mut counts = (0, 0);
    for track in me.subscriber.tracks() {
        if track.stream_id != publisher {
            continue;
        }
        if format!("{:?}", track.kind).eq_ignore_ascii_case("audio") {
            counts.0 += track.packets;
        } else {
            counts.1 += track.packets;
        }
    }
    counts
}

/// With real media: an admin's mute stops the forwarding of that source at once while the
/// publisher keeps sending, and the participant's own unmute resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_mute_stops_forwarding_until_the_participant_unmutes() {
    use confab_bot::participant::BotParticipant;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(20);
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let connect = |user: &'static str| {
        let base = server.base.clone();
        async move {
            BotParticipant::connect(&base, &token(user), user)
                .await
                .expect("bot connects")
        }
    };
    let alice = connect("alice").await;
    let bob = connect("bob").await;
    let created = alice
        .request(
            "call:initiate",
            json!({"invitees": ["bob"], "media": "video"}),
        )
        .await
        .expect("call:initiate");
    let call_id = created["call"]["id"].as_str().expect("call id").to_owned();
    bob.request("call:accept", json!({"call_id": call_id}))
        .await
        .expect("call:accept");
    let bob_pub = bob.publish(&call_id).await.expect("bob publishes");
    let sending =
        tokio::spawn(async move { bob_pub.send_media(Duration::from_secs(60)).await.ok() });

    assert!(
        until(WAIT, || {
            let (a, v) = received_from(&alice, "bob");
            a > 20 && v > 20
        })
        .await,
        "media flows: {:?}",
        received_from(&alice, "bob")
    );

    let (status, body) = server
        .post(
            &format!("/api/v1/calls/{call_id}/participants/bob/mute"),
            &admin(),
            json!({"audio": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Packets already on their way may still land; after that the count stands still while
    // the camera, sent alongside, keeps arriving.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (audio_muted, video_muted) = received_from(&alice, "bob");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (audio_later, video_later) = received_from(&alice, "bob");
    assert_eq!(audio_later, audio_muted, "held audio still arrives");
    assert!(video_later > video_muted, "the camera kept flowing");

    bob.request(
        "call:media",
        json!({"call_id": call_id, "audio_muted": false}),
    )
    .await
    .expect("bob unmutes");
    assert!(
        until(WAIT, || received_from(&alice, "bob").0 > audio_later + 10).await,
        "audio resumes after bob's own unmute: {:?}",
        received_from(&alice, "bob")
    );
    let stats = server.state.media.engine().stats().await.expect("stats");
    assert!(stats.held_packets > 0);

    // A removed participant's connections close: the engine drops its publisher connection
    // and leaves the room's membership, and nothing of it reaches alice any more.
    let (status, body) = server
        .post(
            &format!("/api/v1/calls/{call_id}/participants/bob/remove"),
            &admin(),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let engine = server.state.media.engine().clone();
    let mut gone = false;
    for _ in 0..200 {
        let stats = engine.stats().await.expect("stats");
        if stats.participants == 0 && stats.peers == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "{:?}", engine.stats().await.expect("stats"));
    assert_eq!(server.state.media.session_count(), 0);
    let after_removal = received_from(&alice, "bob");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(received_from(&alice, "bob"), after_removal);
    sending.abort();
}
