//! WebSocket signaling with real clients (tokio-tungstenite) against a server on port 0.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::db::TestDb;
use support::server::{TestServer, admin, code, expired, token};
use support::ws::WsClient;

async fn server() -> (TestDb, TestServer) {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    (db, server)
}

fn status_of<'a>(call: &'a Value, user: &str) -> &'a Value {
    &call["participants"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["user_id"] == user))
        .unwrap_or_else(|| panic!("{user} not in {call}"))["status"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_call_rings_every_device_and_stops_the_others_on_accept() {
    let (_db, server) = server().await;
    let mut alice = WsClient::connect(&server, &token("alice")).await;
    let mut bob_phone = WsClient::connect(&server, &token("bob")).await;
    let mut bob_laptop = WsClient::connect(&server, &token("bob")).await;

    let initiated = alice
        .ok(
            "call:initiate",
            json!({"invitees": ["bob"], "media": "video"}),
        )
        .await;
    let call_id = initiated["call"]["id"].as_str().unwrap().to_owned();
    assert_eq!(initiated["online"], json!(["bob"]));
    assert_eq!(initiated["offline"], json!([]));
    assert_eq!(status_of(&initiated["call"], "bob"), "ringing");

    let ringing = alice.event("call:ringing").await;
    assert_eq!(ringing, json!({"call_id": call_id, "user_ids": ["bob"]}));
    for device in [&mut bob_phone, &mut bob_laptop] {
        let incoming = device.event("call:incoming").await;
        assert_eq!(incoming["call_id"], call_id.as_str());
        assert_eq!(incoming["kind"], "direct");
        assert_eq!(incoming["media"], "video");
        assert_eq!(incoming["caller"]["user_id"], "alice");
    }

    // The phone accepts; the laptop learns it and stops ringing.
    let accepted = bob_phone
        .ok("call:accept", json!({"call_id": call_id}))
        .await;
    assert_eq!(accepted["call"]["status"], "ongoing");
    assert!(accepted["ice_servers"].is_array());
    for who in [&mut alice, &mut bob_laptop] {
        let event = who.event("call:accepted").await;
        assert_eq!(event["user_id"], "bob");
        assert_eq!(event["call_id"], call_id.as_str());
    }
    let joined = alice.event("call:participant-joined").await;
    assert_eq!(joined["user_id"], "bob");

    // Media state reaches every joined participant, the subject's own devices included.
    bob_phone
        .ok(
            "call:media",
            json!({"call_id": call_id, "audio_muted": true}),
        )
        .await;
    let expected = json!({"call_id": call_id, "user_id": "bob", "audio_muted": true, "video_enabled": true, "screen_sharing": false});
    assert_eq!(alice.event("call:media-changed").await, expected);
    assert_eq!(bob_phone.event("call:media-changed").await, expected);

    // An operation over REST produces the same events as over WS.
    let (status, _) = server
        .patch(
            &format!("/api/v1/calls/{call_id}/media"),
            &token("alice"),
            json!({"video_enabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let changed = bob_phone.event("call:media-changed").await;
    assert_eq!(changed["user_id"], "alice");
    assert_eq!(changed["video_enabled"], false);

    bob_laptop.event("call:media-changed").await;
    let ended = alice.ok("call:end", json!({"call_id": call_id})).await;
    assert_eq!(ended["status"], "completed");
    for device in [&mut bob_phone, &mut bob_laptop] {
        let event = device.event("call:ended").await;
        assert_eq!(event["status"], "completed");
        assert_eq!(event["ended_by"], "alice");
        assert!(event["duration_s"].is_i64());
    }
    let event = alice.event("call:ended").await;
    assert_eq!(event["call_id"], call_id.as_str());
}

/// A device that connects while a call rings its user is rung too, and no device is rung twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_connects_during_the_ring_is_rung_once() {
    let (_db, server) = server().await;
    let mut alice = WsClient::connect(&server, &token("alice")).await;
    let mut bob_phone = WsClient::connect(&server, &token("bob")).await;
    let call_id = alice
        .start_call(json!({"invitees": ["bob"], "media": "audio"}))
        .await;
    let incoming = bob_phone.event("call:incoming").await;
    assert_eq!(incoming["call_id"], call_id.as_str());

    let mut bob_laptop = WsClient::connect(&server, &token("bob")).await;
    let incoming = bob_laptop.event("call:incoming").await;
    assert_eq!(incoming["call_id"], call_id.as_str());
    assert_eq!(incoming["caller"]["user_id"], "alice");
    assert_eq!(incoming["media"], "audio");

    // The laptop answers; the phone stops ringing. Neither heard the ring twice.
    bob_laptop
        .ok("call:accept", json!({"call_id": call_id}))
        .await;
    bob_phone.event("call:accepted").await;
    for device in [&mut bob_phone, &mut bob_laptop] {
        assert!(
            !device
                .gets("call:incoming", Duration::from_millis(300))
                .await
        );
    }

    // Once answered, a new device is not rung.
    let mut bob_tablet = WsClient::connect(&server, &token("bob")).await;
    assert!(
        !bob_tablet
            .gets("call:incoming", Duration::from_millis(300))
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_cancel_and_missed_reach_the_right_people() {
    let db = TestDb::sqlite();
    let server = TestServer::start_with(&db, |s| s.ring_timeout = Duration::from_millis(800)).await;
    let mut alice = WsClient::connect(&server, &token("alice")).await;
    let mut bob = WsClient::connect(&server, &token("bob")).await;

    // Reject.
    let id = alice
        .start_call(json!({"invitees": ["bob"], "media": "audio"}))
        .await;
    bob.event_for("call:incoming", &id).await;
    let rejected = bob
        .ok("call:reject", json!({"call_id": id, "reason": "busy day"}))
        .await;
    assert_eq!(rejected["status"], "rejected");
    let event = alice.event("call:rejected").await;
    assert_eq!(
        event,
        json!({"call_id": id, "user_id": "bob", "reason": "busy day"})
    );
    let ended = alice.event_for("call:ended", &id).await;
    assert_eq!(ended["status"], "rejected");
    assert_eq!(ended["reason"], "busy day", "the rejecter's text");

    // Cancel: the caller ends while ringing; the callee stops ringing.
    let id = alice
        .start_call(json!({"invitees": ["bob"], "media": "audio"}))
        .await;
    bob.event_for("call:incoming", &id).await;
    alice.ok("call:end", json!({"call_id": id})).await;
    let ended = bob.event_for("call:ended", &id).await;
    assert_eq!(ended["status"], "cancelled");
    assert_eq!(ended["reason"], "ended");

    // Missed: nobody answers within the ring timeout.
    let id = alice
        .start_call(json!({"invitees": ["bob"], "media": "audio"}))
        .await;
    bob.event_for("call:incoming", &id).await;
    for who in [&mut alice, &mut bob] {
        let missed = who.event_for("call:missed", &id).await;
        assert_eq!(missed, json!({"call_id": id, "user_id": "bob"}));
    }
    let ended = bob.event_for("call:ended", &id).await;
    assert_eq!(ended["status"], "missed");
    assert_eq!(ended["reason"], "timeout");

    // Rejected without a reason; left by the caller while ringing.
    let id = alice
        .start_call(json!({"invitees": ["bob"], "media": "audio"}))
        .await;
    bob.event_for("call:incoming", &id).await;
    bob.ok("call:reject", json!({"call_id": id})).await;
    assert_eq!(
        alice.event_for("call:ended", &id).await["reason"],
        "rejected"
    );
    let id = alice
        .start_call(json!({"invitees": ["bob"], "media": "audio"}))
        .await;
    bob.event_for("call:incoming", &id).await;
    alice.ok("call:leave", json!({"call_id": id})).await;
    let ended = bob.event_for("call:ended", &id).await;
    assert_eq!(
        (&ended["status"], &ended["reason"]),
        (&json!("cancelled"), &json!("left"))
    );
    let frame = bob.request("call:accept", json!({"call_id": id})).await;
    assert_eq!(frame["data"]["code"], "CALL_ENDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_callee_is_reported_to_the_caller() {
    let (_db, server) = server().await;
    let mut alice = WsClient::connect(&server, &token("alice")).await;
    let mut bob = WsClient::connect(&server, &token("bob")).await;
    let mut carol = WsClient::connect(&server, &token("carol")).await;
    let id = alice
        .start_call(json!({"invitees": ["bob"], "media": "audio"}))
        .await;
    bob.event_for("call:incoming", &id).await;
    bob.ok("call:accept", json!({"call_id": id})).await;

    let frame = carol
        .request(
            "call:initiate",
            json!({"invitees": ["bob"], "media": "video"}),
        )
        .await;
    assert_eq!(frame["type"], "error");
    assert_eq!(frame["data"]["code"], "USER_BUSY");
    let busy_id = frame["data"]["details"]["call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = carol.event("call:busy").await;
    assert_eq!(event, json!({"call_id": busy_id, "user_id": "bob"}));
    // Bob's ongoing call is untouched and he is not rung.
    assert!(!bob.gets("call:incoming", Duration::from_millis(300)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_was_not_invited_joins_a_group_call() {
    let (_db, server) = server().await;
    server
        .conversation("team", &["alice", "bob", "carol", "dave"])
        .await;
    let mut alice = WsClient::connect(&server, &token("alice")).await;
    let mut bob = WsClient::connect(&server, &token("bob")).await;
    let mut dave = WsClient::connect(&server, &token("dave")).await;

    let call = alice
        .ok(
            "call:initiate",
            json!({"conversation_id": "team", "invitees": ["bob", "carol"], "media": "video"}),
        )
        .await;
    let id = call["call"]["id"].as_str().unwrap().to_owned();
    assert_eq!(call["online"], json!(["bob"]));
    assert_eq!(call["offline"], json!(["carol"]));
    assert!(
        !dave.gets("call:incoming", Duration::from_millis(300)).await,
        "dave was not invited"
    );
    bob.ok("call:accept", json!({"call_id": id})).await;

    let joined = dave.ok("call:join", json!({"call_id": id})).await;
    assert_eq!(status_of(&joined["call"], "dave"), "joined");
    for who in [&mut alice, &mut bob] {
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let event = who.event("call:participant-joined").await;
            seen.push(event["user_id"].as_str().unwrap().to_owned());
            if event["user_id"] == "dave" {
                break;
            }
        }
        assert!(seen.contains(&"dave".to_owned()));
    }
    dave.ok("call:leave", json!({"call_id": id})).await;
    let left = alice.event("call:participant-left").await;
    assert_eq!(
        left,
        json!({"call_id": id, "user_id": "dave", "name": "dave", "reason": "left"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_participant_keeps_the_seat_through_a_quick_reconnect_then_leaves() {
    let db = TestDb::sqlite();
    let server =
        TestServer::start_with(&db, |s| s.disconnect_grace = Duration::from_millis(1500)).await;
    let mut alice = WsClient::connect(&server, &token("alice")).await;
    let bob = WsClient::connect(&server, &token("bob")).await;
    let id = alice
        .start_call(json!({"invitees": ["bob"], "media": "audio"}))
        .await;
    let (status, _) = server
        .post(
            &format!("/api/v1/calls/{id}/accept"),
            &token("bob"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Bob's socket drops and comes back within the grace: he keeps his seat.
    bob.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bob = WsClient::connect(&server, &token("bob")).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (_, call) = server
        .get(&format!("/api/v1/calls/{id}"), &token("bob"))
        .await;
    assert_eq!(call["status"], "ongoing");
    assert_eq!(status_of(&call, "bob"), "joined");
    assert!(
        !alice
            .gets("call:participant-left", Duration::from_millis(100))
            .await
    );

    // Gone for longer than the grace: he leaves as disconnected, and the direct call ends.
    bob.close().await;
    let left = alice.event("call:participant-left").await;
    assert_eq!(left["user_id"], "bob");
    assert_eq!(left["reason"], "disconnected");
    let ended = alice.event("call:ended").await;
    assert_eq!(ended["status"], "completed");
    assert_eq!(ended["reason"], "disconnected");
    let (_, call) = server
        .get(&format!("/api/v1/calls/{id}"), &token("alice"))
        .await;
    assert_eq!(status_of(&call, "bob"), "left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_error_and_the_socket_stays_open() {
    let (_db, server) = server().await;
    let mut ws = WsClient::connect(&server, &token("alice")).await;

    ws.send_text("{not json".into()).await;
    let frame = ws.wait_for(|f| f["type"] == "error").await.unwrap();
    assert_eq!(frame["data"]["code"], "INVALID_ARGUMENT");
    assert!(frame.get("id").is_none());

    for (kind, data) in [
        ("call:dance", json!({})),
        ("call:accept", json!({})),
        ("call:accept", json!({"call_id": "not-a-uuid"})),
        (
            "call:initiate",
            json!({"invitees": ["bob"], "media": "smell"}),
        ),
        (
            "call:initiate",
            json!({"invitees": "bob", "media": "audio"}),
        ),
        ("call:media", json!({"call_id": uuid::Uuid::new_v4()})),
    ] {
        let frame = ws.request(kind, data).await;
        assert_eq!(frame["type"], "error", "{kind}");
        assert_eq!(frame["data"]["code"], "INVALID_ARGUMENT", "{kind}: {frame}");
    }

    // Wrong states and other people's calls.
    let frame = ws
        .request("call:accept", json!({"call_id": uuid::Uuid::new_v4()}))
        .await;
    assert_eq!(frame["data"]["code"], "CALL_NOT_FOUND");
    let mut bob = WsClient::connect(&server, &token("bob")).await;
    let id = bob
        .start_call(json!({"invitees": ["carol"], "media": "audio"}))
        .await;
    let frame = ws.request("call:accept", json!({"call_id": id})).await;
    assert_eq!(frame["data"]["code"], "FORBIDDEN");
    let frame = bob.request("call:accept", json!({"call_id": id})).await;
    assert_eq!(frame["data"]["code"], "INVALID_STATE");
    let frame = ws
        .request(
            "rtc:offer",
            json!({"call_id": id, "target": "publisher", "sdp": "v=0"}),
        )
        .await;
    assert_eq!(frame["data"]["code"], "FORBIDDEN", "as for call:*");

    // Without an id: no ack, but errors still come.
    ws.send(json!({"type": "call:initiate", "data": {"invitees": ["zed"], "media": "audio"}}))
        .await;
    let incoming_free = ws
        .wait_for_within(|f| f["type"] == "ack", Duration::from_millis(300))
        .await;
    assert!(incoming_free.is_none(), "no ack without an id");

    // Still open and working after all of that.
    let frame = ws.request("call:end", json!({"call_id": id})).await;
    assert_eq!(frame["data"]["code"], "FORBIDDEN");
    let (_, calls) = server.get("/api/v1/calls?limit=100", &admin()).await;
    assert_eq!(
        calls["calls"].as_array().unwrap().len(),
        2,
        "only the two valid calls exist"
    );
}

/// Valid `data` for each `rtc:*` request about `call_id` (spelled as given).
fn rtc_requests(call_id: &str) -> [(&'static str, Value); 4] {
    [
        (
            "rtc:offer",
            json!({"call_id": call_id, "target": "publisher", "sdp": "v=0"}),
        ),
        (
            "rtc:answer",
            json!({"call_id": call_id, "target": "subscriber", "sdp": "v=0"}),
        ),
        (
            "rtc:candidate",
            json!({"call_id": call_id, "target": "publisher", "candidate": null}),
        ),
        (
            "rtc:subscribe",
            json!({"call_id": call_id, "user_id": "bob", "source": "camera", "quality": "low"}),
        ),
    ]
}

/// The spellings of one UUID that name the same call.
fn spellings(id: uuid::Uuid) -> [String; 5] {
    [
        id.hyphenated().to_string(),
        id.simple().to_string(),
        id.hyphenated().to_string().to_uppercase(),
        id.braced().to_string(),
        id.urn().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtc_requests_judge_the_call_as_call_operations_do() {
    let (_db, server) = server().await;
    let mut alice = WsClient::connect(&server, &token("alice")).await;
    let mut bob = WsClient::connect(&server, &token("bob")).await;
    let mut carol = WsClient::connect(&server, &token("carol")).await;
    let call_id = alice
        .start_call(json!({"invitees": ["bob"], "media": "video"}))
        .await;
    let call_uuid: uuid::Uuid = call_id.parse().unwrap();

    // A call that does not exist, in any spelling: CALL_NOT_FOUND, as call:media answers.
    let unknown = uuid::Uuid::new_v4();
    for spelling in spellings(unknown) {
        for (kind, data) in rtc_requests(&spelling) {
            let frame = alice.request(kind, data).await;
            assert_eq!(
                frame["data"]["code"], "CALL_NOT_FOUND",
                "{kind} {spelling}: {frame}"
            );
        }
    }
    let frame = alice
        .request(
            "call:media",
            json!({"call_id": unknown, "audio_muted": true}),
        )
        .await;
    assert_eq!(frame["data"]["code"], "CALL_NOT_FOUND");

    // The live call in every spelling is the same call: alice is joined, so it is acked.
    for spelling in spellings(call_uuid) {
        let frame = alice
            .request(
                "rtc:candidate",
                json!({"call_id": spelling, "target": "publisher", "candidate": null}),
            )
            .await;
        assert_eq!(frame["type"], "ack", "{spelling}: {frame}");
    }

    // Someone who is not in the call: FORBIDDEN; an invitee still ringing: INVALID_STATE.
    for spelling in spellings(call_uuid) {
        for (kind, data) in rtc_requests(&spelling) {
            let frame = carol.request(kind, data.clone()).await;
            assert_eq!(frame["data"]["code"], "FORBIDDEN", "{kind}: {frame}");
            let frame = bob.request(kind, data).await;
            assert_eq!(frame["data"]["code"], "INVALID_STATE", "{kind}: {frame}");
        }
    }
    let mute = json!({"call_id": call_id, "audio_muted": true});
    let frame = carol.request("call:media", mute.clone()).await;
    assert_eq!(frame["data"]["code"], "FORBIDDEN");
    let frame = bob.request("call:media", mute).await;
    assert_eq!(frame["data"]["code"], "INVALID_STATE");

    // A malformed argument is judged before the call: the wrong target, a candidate that is
    // not an object.
    let frame = carol
        .request(
            "rtc:offer",
            json!({"call_id": unknown, "target": "subscriber", "sdp": "v=0"}),
        )
        .await;
    assert_eq!(frame["data"]["code"], "INVALID_ARGUMENT", "{frame}");
    for candidate in [
        json!(["x"]),
        json!(5),
        json!({"candidate": 3}),
        json!("candidate:1"),
    ] {
        let frame = alice
            .request(
                "rtc:candidate",
                json!({"call_id": call_id, "target": "publisher", "candidate": candidate}),
            )
            .await;
        assert_eq!(frame["type"], "error", "{candidate}: {frame}");
        assert_eq!(
            frame["data"]["code"], "INVALID_ARGUMENT",
            "{candidate}: {frame}"
        );
    }

    // Once the call is over: CALL_ENDED to its participants, FORBIDDEN to others.
    alice.ok("call:end", json!({"call_id": call_id})).await;
    for (kind, data) in rtc_requests(&call_id) {
        let frame = alice.request(kind, data.clone()).await;
        assert_eq!(frame["data"]["code"], "CALL_ENDED", "{kind}: {frame}");
        let frame = carol.request(kind, data).await;
        assert_eq!(frame["data"]["code"], "FORBIDDEN", "{kind}: {frame}");
    }
}

/// Sends one message padded to `pad` bytes and expects the contract's answer to an oversized
/// one: an `error` PAYLOAD_TOO_LARGE, then close code 1009.
async fn assert_refused_as_too_large(pad: usize) {
    let (_db, server) = server().await;
    let mut ws = WsClient::connect(&server, &token("alice")).await;
    let big = json!({"id": "big", "type": "call:initiate", "data": {"pad": "x".repeat(pad)}});
    ws.send(big).await;
    let frame = ws
        .wait_for(|f| f["type"] == "error")
        .await
        .expect("error before close");
    assert_eq!(frame["data"]["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(ws.closed_with().await, Some(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_and_closes_the_socket() {
    assert_refused_as_too_large(300 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_beyond_the_transport_cap_is_refused_the_same_way() {
    // 2 MiB: past the limit the transport reads at all, not only the contract's 256 KiB.
    assert_refused_as_too_large(2 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_messages_is_rate_limited() {
    let (_db, server) = server().await;
    let mut ws = WsClient::connect(&server, &token("alice")).await;
    for i in 0..100 {
        ws.send(json!({"id": format!("f{i}"), "type": "call:accept", "data": {"call_id": uuid::Uuid::nil()}})).await;
    }
    let limited = ws
        .wait_for(|f| f["data"]["code"] == "RATE_LIMITED")
        .await
        .expect("some requests were rate limited");
    assert!(limited["id"].as_str().unwrap().starts_with('f'));
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(
            "confab_signaling_messages_total{result=\"RATE_LIMITED\",type=\"call:accept\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_is_refused_without_a_valid_token() {
    let (_db, server) = server().await;
    for query in [
        String::new(),
        "?token=garbage".into(),
        format!("?token={}", expired("alice")),
    ] {
        let resp = server
            .http
            .get(server.url(&format!("/ws{query}")))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{query}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(code(&body), "UNAUTHENTICATED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sockets_are_rung_at_once() {
    let (_db, server) = server().await;
    let members: Vec<String> = (0..200).map(|i| format!("member-{i}")).collect();
    let mut all: Vec<&str> = members.iter().map(String::as_str).collect();
    all.push("host");
    server.conversation("town-hall", &all).await;
    let mut sockets = join_all(
        members
            .iter()
            .map(|m| WsClient::connect(&server, &token(m))),
    )
    .await;
    // Each socket counts from its 101 on.
    let metrics = server.metrics().await;
    assert!(metrics.contains("confab_ws_connections 200"), "{metrics}");

    let mut host = WsClient::connect(&server, &token("host")).await;
    let call = host
        .ok("call:initiate", json!({"conversation_id": "town-hall", "invitees": members, "media": "audio", "kind": "group"}))
        .await;
    assert_eq!(call["online"].as_array().unwrap().len(), 200);
    let id = call["call"]["id"].as_str().unwrap().to_owned();
    let reached = join_all(sockets.iter_mut().map(|s| async {
        let incoming = s.event("call:incoming").await;
        incoming["call_id"].as_str().map(str::to_owned)
    }))
    .await;
    assert!(reached.iter().all(|r| r.as_deref() == Some(id.as_str())));
}

/// A client that has its 101 is online: a call started the moment its connect returns rings
/// it. Repeated, since the window between the 101 and the session's start is short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_is_rung_from_the_moment_its_upgrade_is_answered() {
    let (_db, server) = server().await;
    for round in 0..40 {
        let callee = format!("callee-{round}");
        let mut socket = WsClient::connect(&server, &token(&callee)).await;
        let (status, body) = server
            .post(
                "/api/v1/calls",
                &token(&format!("caller-{round}")),
                json!({"invitees": [callee], "media": "audio"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["online"], json!([callee]), "round {round}: {body}");
        let id = body["call"]["id"].as_str().unwrap();
        assert_eq!(socket.event("call:incoming").await["call_id"], id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_who_joined_without_any_socket_leaves_after_the_grace() {
    let db = TestDb::sqlite();
    let server =
        TestServer::start_with(&db, |s| s.disconnect_grace = Duration::from_millis(700)).await;
    let mut alice = WsClient::connect(&server, &token("alice")).await;
    let id = alice
        .start_call(json!({"invitees": ["bob"], "media": "audio"}))
        .await;
    // Bob accepts over REST and never opens a socket (nor, later, a peer connection).
    let (status, _) = server
        .post(
            &format!("/api/v1/calls/{id}/accept"),
            &token("bob"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let left = alice.event_for("call:participant-left", &id).await;
    assert_eq!(left["user_id"], "bob");
    assert_eq!(left["reason"], "disconnected");
    assert_eq!(
        alice.event_for("call:ended", &id).await["status"],
        "completed"
    );
}

/// A group call of `team` in which alice (initiator), bob and carol are joined and dave is
/// still being rung; each socket has seen its own join.
async fn group_of_three(server: &TestServer) -> (String, [WsClient; 4]) {
    server
        .conversation("team", &["alice", "bob", "carol", "dave"])
        .await;
    let mut alice = WsClient::connect(server, &token("alice")).await;
    let mut bob = WsClient::connect(server, &token("bob")).await;
    let mut carol = WsClient::connect(server, &token("carol")).await;
    let mut dave = WsClient::connect(server, &token("dave")).await;
    let id = alice
        .start_call(json!({"conversation_id": "team", "invitees": ["bob", "carol", "dave"], "media": "audio"}))
        .await;
    bob.ok("call:accept", json!({"call_id": id})).await;
    carol.ok("call:join", json!({"call_id": id})).await;
    dave.event_for("call:incoming", &id).await;
    for who in [&mut alice, &mut bob] {
        who.wait_for(|f| f["type"] == "call:participant-joined" && f["data"]["user_id"] == "carol")
            .await
            .expect("carol's join is announced");
    }
    (id, [alice, bob, carol, dave])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_is_told_who_is_speaking_now() {
    let (_db, server) = server().await;
    let (id, [mut alice, mut bob, mut carol, mut dave]) = group_of_three(&server).await;
    // Nobody publishes audio here: the current list is empty, and each joiner gets it.
    for who in [&mut alice, &mut bob, &mut carol] {
        let speakers = who.event("call:active-speakers").await;
        assert_eq!(speakers, json!({"call_id": id, "user_ids": []}));
    }
    assert!(
        !dave
            .gets("call:active-speakers", Duration::from_millis(200))
            .await,
        "not sent to an invitee still being rung"
    );
    // The list the media engine reports (as its speaker detection would) reaches everyone
    // joined, and a later joiner gets it on joining, over REST too, on every socket.
    let call_id: uuid::Uuid = id.parse().unwrap();
    server
        .state
        .calls
        .announce_active_speakers(call_id, vec!["carol".into(), "alice".into()]);
    let current = json!({"call_id": id, "user_ids": ["carol", "alice"]});
    for who in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(who.event("call:active-speakers").await, current);
    }
    let mut dave_laptop = WsClient::connect(&server, &token("dave")).await;
    let (status, _) = server
        .post(
            &format!("/api/v1/calls/{id}/join"),
            &token("dave"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for device in [&mut dave, &mut dave_laptop] {
        assert_eq!(device.event("call:active-speakers").await, current);
    }
}

/// Sends `payload` as `call:data` without waiting; returns nothing.
async fn send_data(ws: &mut WsClient, id: &str, request_id: String, payload: Value) {
    ws.send(
        json!({"id": request_id, "type": "call:data", "data": {"call_id": id, "payload": payload}}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_data_reaches_the_other_joined_participants_in_each_senders_order() {
    let (_db, server) = server().await;
    let (id, [mut alice, mut bob, mut carol, mut dave]) = group_of_three(&server).await;

    // Two senders, interleaved and pipelined: each one's messages arrive in the order sent.
    const EACH: usize = 30;
    for seq in 0..EACH {
        send_data(&mut alice, &id, format!("a{seq}"), json!({"seq": seq})).await;
        send_data(&mut bob, &id, format!("b{seq}"), json!({"seq": seq})).await;
    }
    for (who, prefix) in [(&mut alice, "a"), (&mut bob, "b")] {
        for seq in 0..EACH {
            let ack = who
                .wait_for(|f| f["id"] == format!("{prefix}{seq}").as_str())
                .await
                .expect("answered");
            assert_eq!(
                ack,
                json!({"id": format!("{prefix}{seq}"), "type": "ack", "data": {}})
            );
        }
    }
    let mut next = std::collections::HashMap::from([("alice", 0), ("bob", 0)]);
    for _ in 0..2 * EACH {
        let data = carol.event("call:data").await;
        assert_eq!(data["call_id"], id.as_str());
        let from = data["from"].as_str().expect("from").to_owned();
        let expected = next.get_mut(from.as_str()).expect("from a sender");
        assert_eq!(data["payload"], json!({"seq": *expected}), "{from}'s order");
        *expected += 1;
    }
    // Each sender hears the other's messages, in order, and never its own.
    for (who, other) in [(&mut alice, "bob"), (&mut bob, "alice")] {
        for seq in 0..EACH {
            let data = who.event("call:data").await;
            assert_eq!(
                (data["from"].as_str(), &data["payload"]),
                (Some(other), &json!({"seq": seq}))
            );
        }
    }

    // Any JSON value travels untouched.
    for payload in [
        json!("plain text"),
        json!({"kind": "chat", "text": "hi", "n": [1, 2.5, null]}),
        json!([true, {"a": "b"}]),
        json!(null),
        json!(7),
    ] {
        alice
            .ok("call:data", json!({"call_id": id, "payload": payload}))
            .await;
        assert_eq!(carol.event("call:data").await["payload"], payload);
        assert_eq!(bob.event("call:data").await["payload"], payload);
    }

    // `to`: only those named. The broadcast after it is the next thing carol sees.
    alice
        .ok(
            "call:data",
            json!({"call_id": id, "payload": "for bob", "to": ["bob"]}),
        )
        .await;
    alice
        .ok("call:data", json!({"call_id": id, "payload": "for all"}))
        .await;
    assert_eq!(bob.event("call:data").await["payload"], "for bob");
    assert_eq!(bob.event("call:data").await["payload"], "for all");
    assert_eq!(carol.event("call:data").await["payload"], "for all");
    // The invitee still being rung gets none of it.
    assert!(!dave.gets("call:data", Duration::from_millis(200)).await);

    let metrics = server.metrics().await;
    assert!(
        metrics.contains("confab_signaling_messages_total{result=\"ok\",type=\"call:data\"} 67"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_data_is_refused_to_all_but_joined_participants_and_when_too_large() {
    let (_db, server) = server().await;
    let (id, [mut alice, mut bob, mut carol, mut dave]) = group_of_three(&server).await;
    let mut zed = WsClient::connect(&server, &token("zed")).await;
    let refused = |frame: &Value| frame["data"]["code"].as_str().unwrap_or("<ack>").to_owned();

    // 16 KiB of compact JSON is the limit: a string of n characters is n + 2 bytes.
    let fits = "x".repeat(16 * 1024 - 2);
    alice
        .ok("call:data", json!({"call_id": id, "payload": fits}))
        .await;
    assert_eq!(bob.event("call:data").await["payload"], fits.as_str());
    let over = "x".repeat(16 * 1024 - 1);
    let frame = alice
        .request("call:data", json!({"call_id": id, "payload": over}))
        .await;
    assert_eq!(refused(&frame), "PAYLOAD_TOO_LARGE");
    // The sender's socket stays open and keeps working.
    alice
        .ok("call:data", json!({"call_id": id, "payload": "still here"}))
        .await;
    assert_eq!(bob.event("call:data").await["payload"], "still here");

    // `to` naming anyone but another joined participant.
    for to in [
        json!(["dave"]),
        json!(["alice"]),
        json!(["nobody"]),
        json!([]),
    ] {
        let frame = alice
            .request("call:data", json!({"call_id": id, "payload": 1, "to": to}))
            .await;
        assert_eq!(refused(&frame), "INVALID_ARGUMENT", "to {to}");
    }
    let frame = alice
        .request(
            "call:data",
            json!({"call_id": id, "payload": 1, "to": ["bob", "dave"]}),
        )
        .await;
    assert_eq!(frame["data"]["details"], json!({"user_ids": ["dave"]}));

    // Who may send: joined participants only.
    let frame = dave
        .request("call:data", json!({"call_id": id, "payload": 1}))
        .await;
    assert_eq!(refused(&frame), "INVALID_STATE", "an invitee still ringing");
    let frame = zed
        .request("call:data", json!({"call_id": id, "payload": 1}))
        .await;
    assert_eq!(refused(&frame), "FORBIDDEN", "not a participant");
    let unknown = uuid::Uuid::new_v4();
    let frame = zed
        .request("call:data", json!({"call_id": unknown, "payload": 1}))
        .await;
    assert_eq!(refused(&frame), "CALL_NOT_FOUND");
    let frame = alice.request("call:data", json!({"call_id": id})).await;
    assert_eq!(refused(&frame), "INVALID_ARGUMENT", "payload is required");

    // None of the refused messages reached anyone.
    alice
        .ok("call:data", json!({"call_id": id, "payload": "marker"}))
        .await;
    assert_eq!(bob.event("call:data").await["payload"], "marker");
    assert_eq!(carol.event("call:data").await["payload"], fits.as_str());
    assert_eq!(carol.event("call:data").await["payload"], "still here");
    assert_eq!(carol.event("call:data").await["payload"], "marker");

    // After leaving, and once the call is over.
    bob.ok("call:leave", json!({"call_id": id})).await;
    let frame = bob
        .request("call:data", json!({"call_id": id, "payload": 1}))
        .await;
    assert_eq!(refused(&frame), "INVALID_STATE");
    alice.ok("call:end", json!({"call_id": id})).await;
    let frame = carol
        .request("call:data", json!({"call_id": id, "payload": 1}))
        .await;
    assert_eq!(refused(&frame), "CALL_ENDED");
    let frame = zed
        .request("call:data", json!({"call_id": id, "payload": 1}))
        .await;
    assert_eq!(refused(&frame), "FORBIDDEN");
}
