//! The REST API over real HTTP, against a server on 127.0.0.1:0, on SQLite and PostgreSQL.
//!
//! Every test body runs once per backend (see `backend_tests!`): SQLite always, PostgreSQL
//! with `cargo test -- --ignored` and `CONFAB_TEST_POSTGRES_URL` set (as `.ci/run` does).

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::db::TestDb;
use support::server::{TestServer, admin, code, eventually, expired, token, wrongly_signed};

/// Every call the admin can see, newest first: how tests check that nothing was written.
async fn all_calls(server: &TestServer) -> Vec<Value> {
    let (status, body) = server.get("/api/v1/calls?limit=100", &admin()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["calls"].as_array().cloned().unwrap_or_default()
}

fn participant<'a>(call: &'a Value, user: &str) -> &'a Value {
    call["participants"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["user_id"] == user))
        .unwrap_or_else(|| panic!("{user} is not in {call}"))
}

backend_tests! {
    async fn every_route_refuses_missing_expired_and_forged_tokens(db: &TestDb) {
        let server = TestServer::start(db).await;
        let call_id = uuid::Uuid::new_v4();
        let routes = [
            ("GET", "/api/v1/calls".to_owned()),
            ("POST", "/api/v1/calls".to_owned()),
            ("GET", "/api/v1/calls/stats".to_owned()),
            ("GET", format!("/api/v1/calls/{call_id}")),
            ("POST", format!("/api/v1/calls/{call_id}/accept")),
            ("POST", format!("/api/v1/calls/{call_id}/end")),
            ("PATCH", format!("/api/v1/calls/{call_id}/media")),
            ("GET", format!("/api/v1/calls/{call_id}/quality")),
            ("GET", "/api/v1/conversations/team".to_owned()),
            ("PUT", "/api/v1/conversations/team".to_owned()),
            ("GET", "/api/v1/ice-servers".to_owned()),
        ];
        let bad_tokens = [None, Some(expired("alice")), Some(wrongly_signed("alice")), Some("garbage".to_owned())];
        for (method, path) in &routes {
            for bad in &bad_tokens {
                let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                let (status, body) = server
                    .request(method.clone(), path, bad.as_deref(), Some(json!({})))
                    .await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with {bad:?}: {body}");
                assert_eq!(code(&body), "UNAUTHENTICATED");
            }
        }
        assert!(all_calls(&server).await.is_empty());
    }

    async fn direct_call_from_ring_to_history(db: &TestDb) {
        let server = TestServer::start(db).await;
        let (alice, bob, carol) = (token("alice"), token("bob"), token("carol"));

        let (status, created) = server
            .post("/api/v1/calls", &alice, json!({"invitees": ["bob"], "media": "video"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let call = &created["call"];
        let id = call["id"].as_str().unwrap().to_owned();
        assert_eq!(call["kind"], "direct");
        assert_eq!(call["status"], "ringing");
        assert_eq!(call["initiated_by"], "alice");
        assert_eq!(call["conversation_id"], Value::Null);
        assert_eq!(participant(call, "alice")["status"], "joined");
        assert_eq!(participant(call, "alice")["joined_at"], call["created_at"]);
        assert_eq!(participant(call, "bob")["status"], "invited");
        assert_eq!(participant(call, "bob")["video_enabled"], true);
        assert_eq!(created["online"], json!([]));
        assert_eq!(created["offline"], json!(["bob"]));

        // Visible to participants, forbidden to others, unknown ids are 404.
        assert_eq!(server.get(&format!("/api/v1/calls/{id}"), &bob).await.0, StatusCode::OK);
        let (status, body) = server.get(&format!("/api/v1/calls/{id}"), &carol).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
        let (status, body) = server
            .get(&format!("/api/v1/calls/{}", uuid::Uuid::new_v4()), &bob)
            .await;
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "CALL_NOT_FOUND"));

        // Someone else's call cannot be accepted; the callee's can.
        let (status, body) = server.post(&format!("/api/v1/calls/{id}/accept"), &carol, json!({})).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
        let (status, body) = server.post(&format!("/api/v1/calls/{id}/accept"), &alice, json!({})).await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "INVALID_STATE"));
        let (status, accepted) = server.post(&format!("/api/v1/calls/{id}/accept"), &bob, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{accepted}");
        assert_eq!(accepted["call"]["status"], "ongoing");
        assert!(accepted["call"]["started_at"].is_string());
        assert!(accepted["ice_servers"].is_array());
        let (status, body) = server.post(&format!("/api/v1/calls/{id}/accept"), &bob, json!({})).await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "INVALID_STATE"));

        // Media state.
        let (status, me) = server
            .patch(&format!("/api/v1/calls/{id}/media"), &bob, json!({"audio_muted": true}))
            .await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!(me["user_id"], "bob");
        assert_eq!(me["audio_muted"], true);
        assert_eq!(me["video_enabled"], true);
        let (status, body) = server
            .patch(&format!("/api/v1/calls/{id}/media"), &carol, json!({"audio_muted": true}))
            .await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
        let (status, body) = server
            .patch(&format!("/api/v1/calls/{id}/media"), &bob, json!({"audio_muted": "yes"}))
            .await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"));

        // Either side of a direct call may end it.
        let (status, ended) = server
            .post(&format!("/api/v1/calls/{id}/end"), &bob, json!({"reason": "bye"}))
            .await;
        assert_eq!(status, StatusCode::OK, "{ended}");
        assert_eq!(ended["status"], "completed");
        assert_eq!(ended["end_reason"], "bye");
        assert!(ended["ended_at"].is_string());
        assert!(ended["duration_s"].as_i64().unwrap() >= 0);

        // After the end: read from the store, operations are CALL_ENDED, outsiders FORBIDDEN.
        let (status, stored) = server.get(&format!("/api/v1/calls/{id}"), &alice).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(stored, ended);
        assert_eq!(participant(&stored, "bob")["audio_muted"], true);
        for op in ["accept", "join", "leave", "end"] {
            let (status, body) = server.post(&format!("/api/v1/calls/{id}/{op}"), &bob, json!({})).await;
            assert_eq!((status, code(&body)), (StatusCode::GONE, "CALL_ENDED"), "{op}");
            let (status, body) = server.post(&format!("/api/v1/calls/{id}/{op}"), &carol, json!({})).await;
            assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{op}");
        }

        // History from each side.
        let (_, history) = server.get("/api/v1/calls", &alice).await;
        assert_eq!(history["calls"][0]["id"], id.as_str());
        assert_eq!(history["calls"][0]["direction"], "outgoing");
        assert_eq!(history["next_cursor"], Value::Null);
        let (_, history) = server.get("/api/v1/calls", &bob).await;
        assert_eq!(history["calls"][0]["direction"], "incoming");
        let (_, history) = server.get("/api/v1/calls", &carol).await;
        assert_eq!(history["calls"], json!([]));

        // The media change was recorded as an event, off the request path.
        let call_id = uuid::Uuid::parse_str(&id).unwrap();
        let store = server.state.store.clone();
        assert!(eventually(Duration::from_secs(10), || {
            let store = store.clone();
            async move { store.media_events(call_id).await.map(|e| e.len() == 1).unwrap_or(false) }
        }).await, "media event recorded");
    }

    async fn reject_cancel_and_busy(db: &TestDb) {
        let server = TestServer::start(db).await;
        let (alice, bob, carol, dave) = (token("alice"), token("bob"), token("carol"), token("dave"));

        let rejected = server.call(&alice, json!({"invitees": ["bob"], "media": "audio"})).await;
        let (status, body) = server
            .post(&format!("/api/v1/calls/{rejected}/reject"), &bob, json!({"reason": "in a meeting"}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "rejected");
        assert_eq!(participant(&body, "bob")["status"], "declined");
        assert_eq!(body["duration_s"], 0);

        // Reject with no body at all is fine: every field is optional.
        let second = server.call(&alice, json!({"invitees": ["bob"], "media": "audio"})).await;
        let resp = server.http.post(server.url(&format!("/api/v1/calls/{second}/reject")))
            .bearer_auth(&bob).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);

        let cancelled = server.call(&alice, json!({"invitees": ["bob"], "media": "video"})).await;
        let (status, body) = server.post(&format!("/api/v1/calls/{cancelled}/end"), &alice, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "cancelled");
        assert_eq!(body["started_at"], Value::Null);

        // Bob is in a call with Carol; Dave calling Bob is busy, and that is recorded.
        let ongoing = server.call(&carol, json!({"invitees": ["bob"], "media": "audio"})).await;
        assert_eq!(server.post(&format!("/api/v1/calls/{ongoing}/accept"), &bob, json!({})).await.0, StatusCode::OK);
        let (status, body) = server
            .post("/api/v1/calls", &dave, json!({"invitees": ["bob"], "media": "audio"}))
            .await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "USER_BUSY"), "{body}");
        let busy_id = body["error"]["details"]["call_id"].as_str().expect("details.call_id").to_owned();
        let (status, busy) = server.get(&format!("/api/v1/calls/{busy_id}"), &dave).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(busy["status"], "busy");
        assert_eq!(participant(&busy, "bob")["status"], "busy");

        // Someone joined elsewhere cannot start another call.
        let (status, body) = server
            .post("/api/v1/calls", &bob, json!({"invitees": ["dave"], "media": "audio"}))
            .await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "INVALID_STATE"), "{body}");

        // Leaving an ongoing direct call completes it.
        let (status, body) = server.post(&format!("/api/v1/calls/{ongoing}/leave"), &bob, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "completed");

        let (_, history) = server.get("/api/v1/calls?status=busy", &dave).await;
        assert_eq!(history["calls"].as_array().unwrap().len(), 1);
    }

    async fn group_calls_follow_conversation_membership(db: &TestDb) {
        let server = TestServer::start(db).await;
        let (alice, bob, carol, dave, mallory) =
            (token("alice"), token("bob"), token("carol"), token("dave"), token("mallory"));

        // Conversations are managed by admins and read by members.
        let (status, body) = server
            .put("/api/v1/conversations/team", &alice, json!({"members": ["alice"]}))
            .await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
        server.conversation("team", &["alice", "bob", "carol", "dave", "bob"]).await;
        let (status, body) = server.get("/api/v1/conversations/team", &bob).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["members"], json!(["alice", "bob", "carol", "dave"]));
        let (status, body) = server.get("/api/v1/conversations/team", &mallory).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "NOT_A_MEMBER"));
        let (status, body) = server.get("/api/v1/conversations/nope", &bob).await;
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "CONVERSATION_NOT_FOUND"));
        let (status, body) = server.get("/api/v1/conversations/bad%20id", &bob).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"));
        let (status, body) = server.get("/api/v1/conversations/team/active-call", &bob).await;
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "CALL_NOT_FOUND"));

        // Group rules.
        let (status, body) = server
            .post("/api/v1/calls", &alice, json!({"invitees": ["bob", "carol"], "media": "video"}))
            .await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"), "no conversation");
        let (status, body) = server
            .post("/api/v1/calls", &alice, json!({"conversation_id": "team", "invitees": ["bob", "mallory"], "media": "video"}))
            .await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "NOT_A_MEMBER"));
        let (status, body) = server
            .post("/api/v1/calls", &mallory, json!({"conversation_id": "team", "invitees": ["bob"], "media": "video", "kind": "group"}))
            .await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "NOT_A_MEMBER"));
        let (status, body) = server
            .post("/api/v1/calls", &alice, json!({"conversation_id": "nope", "invitees": ["bob", "carol"], "media": "video"}))
            .await;
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "CONVERSATION_NOT_FOUND"));

        let (status, created) = server
            .post("/api/v1/calls", &alice, json!({"conversation_id": "team", "invitees": ["bob", "carol"], "media": "video"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["call"]["kind"], "group");
        let id = created["call"]["id"].as_str().unwrap().to_owned();
        let (status, body) = server
            .post("/api/v1/calls", &bob, json!({"conversation_id": "team", "invitees": ["carol"], "media": "audio", "kind": "group"}))
            .await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "ACTIVE_CALL_EXISTS"));
        assert_eq!(body["error"]["details"]["call_id"], id.as_str());
        let (status, active) = server.get("/api/v1/conversations/team/active-call", &dave).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(active["id"], id.as_str());

        // A member who was not invited joins; an outsider cannot.
        let (status, body) = server.post(&format!("/api/v1/calls/{id}/join"), &dave, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["call"]["status"], "ongoing");
        assert_eq!(participant(&body["call"], "dave")["status"], "joined");
        let (status, body) = server.post(&format!("/api/v1/calls/{id}/join"), &mallory, json!({})).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "NOT_A_MEMBER"));
        let (status, body) = server.post(&format!("/api/v1/calls/{id}/accept"), &bob, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // Only the initiator (or an admin) ends a group call for everyone.
        let (status, body) = server.post(&format!("/api/v1/calls/{id}/end"), &bob, json!({})).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));

        // Leaving one by one: the last leaver completes it.
        for who in [&alice, &bob] {
            let (status, body) = server.post(&format!("/api/v1/calls/{id}/leave"), who, json!({})).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["status"], "ongoing");
        }
        let (status, body) = server.post(&format!("/api/v1/calls/{id}/leave"), &carol, json!({})).await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "INVALID_STATE"), "carol never joined");
        let (status, body) = server.post(&format!("/api/v1/calls/{id}/leave"), &dave, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "completed");

        // Deleting the conversation keeps its history.
        let (status, _) = server.delete("/api/v1/conversations/team", &admin()).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = server.delete("/api/v1/conversations/team", &admin()).await;
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "CONVERSATION_NOT_FOUND"));
        let (_, history) = server.get("/api/v1/calls?conversation_id=team", &dave).await;
        assert_eq!(history["calls"][0]["id"], id.as_str());
    }

    async fn room_full_and_admin_end(db: &TestDb) {
        let server = TestServer::start_with(db, |s| s.max_participants = 2).await;
        server.conversation("trio", &["a", "b", "c"]).await;
        let id = server
            .call(&token("a"), json!({"conversation_id": "trio", "invitees": ["b", "c"], "media": "audio"}))
            .await;
        assert_eq!(server.post(&format!("/api/v1/calls/{id}/accept"), &token("b"), json!({})).await.0, StatusCode::OK);
        let (status, body) = server.post(&format!("/api/v1/calls/{id}/accept"), &token("c"), json!({})).await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "ROOM_FULL"));
        let (status, body) = server.post(&format!("/api/v1/calls/{id}/end"), &admin(), json!({"reason": "moderated"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "completed");
        assert_eq!(body["end_reason"], "moderated");
    }

    async fn bad_input_gets_contract_errors_and_writes_nothing(db: &TestDb) {
        let server = TestServer::start(db).await;
        let alice = token("alice");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("malformed JSON", b"{\"invitees\": [".to_vec()),
            ("not an object", b"[1,2,3]".to_vec()),
            ("missing field", br#"{"invitees": ["bob"]}"#.to_vec()),
            ("unknown enum value", br#"{"invitees": ["bob"], "media": "hologram"}"#.to_vec()),
            ("unknown kind", br#"{"invitees": ["bob"], "media": "audio", "kind": "party"}"#.to_vec()),
            ("bad user id", br#"{"invitees": ["bob smith"], "media": "audio"}"#.to_vec()),
            ("no invitees", br#"{"invitees": [], "media": "audio"}"#.to_vec()),
            ("calling yourself", br#"{"invitees": ["alice"], "media": "audio"}"#.to_vec()),
            ("duplicate invitee", br#"{"conversation_id": "x", "invitees": ["bob", "bob"], "media": "audio"}"#.to_vec()),
            ("direct with two", br#"{"invitees": ["bob", "carol"], "media": "audio", "kind": "direct"}"#.to_vec()),
        ];
        for (what, body) in cases {
            let (status, resp) = server.post_raw("/api/v1/calls", &alice, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {resp}");
            assert_eq!(code(&resp), "INVALID_ARGUMENT", "{what}");
            assert!(resp["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
        }

        // Bodies over 64 KiB are refused before they are parsed.
        let big = format!(r#"{{"invitees": ["bob"], "media": "audio", "pad": "{}"}}"#, "x".repeat(70 * 1024));
        let (status, resp) = server.post_raw("/api/v1/calls", &alice, big.into_bytes()).await;
        assert_eq!((status, code(&resp)), (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"));

        // Bad ids and query values.
        let (status, resp) = server.get("/api/v1/calls/not-a-uuid", &alice).await;
        assert_eq!((status, code(&resp)), (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"));
        let (status, resp) = server.post("/api/v1/calls/12345/accept", &alice, json!({})).await;
        assert_eq!((status, code(&resp)), (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"));
        for query in ["limit=0", "limit=101", "limit=ten", "status=lost", "media=smell", "direction=up", "before=garbage"] {
            let (status, resp) = server.get(&format!("/api/v1/calls?{query}"), &alice).await;
            assert_eq!((status, code(&resp)), (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"), "{query}");
        }
        let (status, resp) = server.get("/api/v1/calls/stats?timeframe=1y", &alice).await;
        assert_eq!((status, code(&resp)), (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"));
        let (status, resp) = server.put("/api/v1/conversations/team", &admin(), json!({"members": "alice"})).await;
        assert_eq!((status, code(&resp)), (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"));
        let (status, resp) = server.get("/api/v1/no-such-route", &alice).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{resp}");

        // Empty media patch and over-long reasons.
        let id = server.call(&alice, json!({"invitees": ["bob"], "media": "audio"})).await;
        let (status, resp) = server.patch(&format!("/api/v1/calls/{id}/media"), &alice, json!({})).await;
        assert_eq!((status, code(&resp)), (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"));
        let (status, resp) = server
            .post(&format!("/api/v1/calls/{id}/reject"), &token("bob"), json!({"reason": "x".repeat(1000)}))
            .await;
        assert_eq!((status, code(&resp)), (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"));

        // Of all that, only the one valid call exists, unchanged.
        let calls = all_calls(&server).await;
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0]["status"], "ringing");
        assert_eq!(participant(&calls[0], "alice")["audio_muted"], false);
        let (_, conv) = server.get("/api/v1/conversations/team", &admin()).await;
        assert_eq!(code(&conv), "CONVERSATION_NOT_FOUND");
    }

    async fn history_filters_and_pages(db: &TestDb) {
        let server = TestServer::start(db).await;
        server.conversation("team", &["alice", "bob", "carol"]).await;
        let (alice, bob) = (token("alice"), token("bob"));
        let mut ids = Vec::new();
        for i in 0..7 {
            let (caller, callee, media) = if i % 2 == 0 { (&alice, "bob", "audio") } else { (&bob, "alice", "video") };
            let id = server.call(caller, json!({"invitees": [callee], "media": media, "conversation_id": "team"})).await;
            let (status, _) = server.post(&format!("/api/v1/calls/{id}/end"), caller, json!({})).await;
            assert_eq!(status, StatusCode::OK);
            ids.push(id);
        }
        // Pages of 3, newest first, no gaps or repeats.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/calls?limit=3&before={c}"),
                None => "/api/v1/calls?limit=3".to_owned(),
            };
            let (status, page) = server.get(&path, &alice).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            for call in page["calls"].as_array().unwrap() {
                seen.push(call["id"].as_str().unwrap().to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
        assert_eq!(seen, newest_first);

        let count = |body: &Value| body["calls"].as_array().map_or(0, Vec::len);
        assert_eq!(count(&server.get("/api/v1/calls?direction=outgoing", &alice).await.1), 4);
        assert_eq!(count(&server.get("/api/v1/calls?direction=incoming", &alice).await.1), 3);
        assert_eq!(count(&server.get("/api/v1/calls?media=video", &alice).await.1), 3);
        assert_eq!(count(&server.get("/api/v1/calls?status=cancelled", &alice).await.1), 7);
        assert_eq!(count(&server.get("/api/v1/calls?status=completed", &alice).await.1), 0);
        assert_eq!(count(&server.get("/api/v1/calls?conversation_id=team", &bob).await.1), 7);
        assert_eq!(count(&server.get("/api/v1/calls?conversation_id=other", &bob).await.1), 0);
        assert_eq!(count(&server.get("/api/v1/calls", &token("carol")).await.1), 0);

        let (status, stats) = server.get("/api/v1/calls/stats?timeframe=7d", &alice).await;
        assert_eq!(status, StatusCode::OK, "{stats}");
        assert_eq!(stats["timeframe"], "7d");
        assert_eq!(stats["total"], 7);
        assert_eq!(stats["by_media"], json!({"audio": 4, "video": 3}));
        assert_eq!(stats["by_status"], json!({"cancelled": 7}));
        assert_eq!(stats["by_direction"], json!({"outgoing": 4, "incoming": 3}));
        assert_eq!(stats["total_duration_s"], 0);
        let today = time::OffsetDateTime::now_utc().date();
        let key = format!("{:04}-{:02}-{:02}", today.year(), u8::from(today.month()), today.day());
        assert_eq!(stats["per_day"][key.as_str()], 7, "{stats}");
        assert_eq!(stats["quality"]["avg_packet_loss"], Value::Null);
        let (_, stats) = server.get("/api/v1/calls/stats", &alice).await;
        assert_eq!(stats["timeframe"], "30d");
        let (_, stats) = server.get("/api/v1/calls/stats", &token("carol")).await;
        assert_eq!(stats["total"], 0);
        assert_eq!(stats["by_status"], json!({}));
    }

    async fn quality_samples_are_served_to_participants(db: &TestDb) {
        let server = TestServer::start(db).await;
        let id = server.call(&token("alice"), json!({"invitees": ["bob"], "media": "video"})).await;
        let (status, body) = server.get(&format!("/api/v1/calls/{id}/quality"), &token("bob")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({"samples": []}));
        let (status, body) = server.get(&format!("/api/v1/calls/{id}/quality"), &token("carol")).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));

        let call_id = uuid::Uuid::parse_str(&id).unwrap();
        let at = confab::calls::now_ms();
        let sample = |user: &str, offset_ms: i64, loss: f64| confab::store::QualitySample {
            call_id,
            user_id: confab_signaling::OpaqueId::parse(user).unwrap(),
            direction: confab::store::QualityDirection::Inbound,
            kind: confab_signaling::MediaKind::Audio,
            at: at + time::Duration::milliseconds(offset_ms),
            bitrate_bps: 32_000,
            packet_loss: loss,
            jitter_ms: 4.0,
            rtt_ms: 20.0,
        };
        server.state.store
            .insert_quality_samples(&[sample("bob", 5000, 0.02), sample("alice", 0, 0.0)])
            .await
            .unwrap();
        let (_, body) = server.get(&format!("/api/v1/calls/{id}/quality"), &token("alice")).await;
        let samples = body["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0]["user_id"], "alice", "newest last");
        assert_eq!(samples[1]["direction"], "inbound");
        assert_eq!(samples[1]["kind"], "audio");
        assert_eq!(samples[1]["bitrate_bps"], 32_000);
        assert_eq!(samples[1]["packet_loss"], 0.02);
        let (_, stats) = server.get("/api/v1/calls/stats", &token("alice")).await;
        assert_eq!(stats["quality"]["avg_packet_loss"], 0.01);
        assert_eq!(stats["quality"]["avg_rtt_ms"], 20.0);
    }

    async fn unanswered_calls_become_missed_on_the_server_clock(db: &TestDb) {
        let server = TestServer::start_with(db, |s| s.ring_timeout = Duration::from_millis(1200)).await;
        // Many calls ringing at once, each from its own caller.
        let mut ids = Vec::new();
        for i in 0..60 {
            let caller = token(&format!("caller-{i}"));
            ids.push(server.call(&caller, json!({"invitees": [format!("callee-{i}")], "media": "audio"})).await);
        }
        let all_missed = eventually(Duration::from_secs(30), || async {
            let calls = all_calls(&server).await;
            calls.len() == 60 && calls.iter().all(|c| c["status"] == "missed")
        }).await;
        assert!(all_missed, "every call turned missed: {:?}", all_calls(&server).await.iter().map(|c| c["status"].clone()).collect::<Vec<_>>());
        let (_, call) = server.get(&format!("/api/v1/calls/{}", ids[0]), &token("caller-0")).await;
        assert_eq!(call["end_reason"], "timeout");
        assert_eq!(participant(&call, "callee-0")["status"], "missed");
        let (status, body) = server.post(&format!("/api/v1/calls/{}/accept", ids[0]), &token("callee-0"), json!({})).await;
        assert_eq!((status, code(&body)), (StatusCode::GONE, "CALL_ENDED"));
        // A call is counted once its final state is stored, so the store can show it missed a
        // moment before the counter does.
        let counted = eventually(Duration::from_secs(10), || async {
            let metrics = server.metrics().await;
            metrics.contains("confab_calls_total{status=\"missed\"} 60") && metrics.contains("confab_calls_active 0")
        }).await;
        assert!(counted, "{}", server.metrics().await);
    }

    async fn ice_servers_carry_turn_credentials(db: &TestDb) {
        let server = TestServer::start_with(db, |s| {
            s.stun_urls = vec!["stun:stun.example.org:3478".into()];
            s.turn_urls = vec!["turn:turn.example.org:3478".into(), "turns:turn.example.org:5349".into()];
            s.turn_secret = Some("coturn-secret".into());
            s.turn_ttl = Duration::from_secs(600);
        }).await;
        let (status, body) = server.get("/api/v1/ice-servers", &token("alice")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["ttl_s"], 600);
        let servers = body["ice_servers"].as_array().unwrap();
        assert_eq!(servers[0], json!({"urls": ["stun:stun.example.org:3478"]}));
        let username = servers[1]["username"].as_str().unwrap();
        let (expiry, user) = username.split_once(':').unwrap();
        assert_eq!(user, "alice");
        let expiry: i64 = expiry.parse().unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!((now + 590..=now + 610).contains(&expiry));
        assert_eq!(servers[1]["credential"], confab::ice::turn_credential("coturn-secret", username));

        let id = server.call(&token("alice"), json!({"invitees": ["bob"], "media": "audio"})).await;
        let (_, accepted) = server.post(&format!("/api/v1/calls/{id}/accept"), &token("bob"), json!({})).await;
        assert_eq!(accepted["ice_servers"].as_array().unwrap().len(), 2);
    }

    async fn health_metrics_and_dev_routes(db: &TestDb) {
        let server = TestServer::start_with(db, |s| s.metrics_token = Some("scrape".into())).await;
        let resp = server.http.get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = server.http.get(server.url("/readyz")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);

        let id = server.call(&token("alice"), json!({"invitees": ["bob"], "media": "audio"})).await;
        server.post(&format!("/api/v1/calls/{id}/accept"), &token("bob"), json!({})).await;

        let resp = server.http.get(server.url("/metrics")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let resp = server.http.get(server.url("/metrics")).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let text = server.http.get(server.url("/metrics")).bearer_auth("scrape").send().await.unwrap().text().await.unwrap();
        for expected in [
            "confab_calls_active 1",
            "confab_participants_joined 2",
            "confab_http_requests_total{route=\"/api/v1/calls\",status=\"201\"} 1",
            "confab_http_request_duration_seconds_bucket{route=\"/api/v1/calls/{id}/accept\"",
            "confab_store_write_backlog",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }

        // The dev token route exists only with --dev.
        let (status, _) = server.request(reqwest::Method::POST, "/api/v1/dev/token", None, Some(json!({"user_id": "x"}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        drop(server);
        let dev = TestServer::start_with(db, |s| s.dev = true).await;
        let (status, body) = dev.request(reqwest::Method::POST, "/api/v1/dev/token", None, Some(json!({"user_id": "zoe", "name": "Zoe"}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, _) = dev.get("/api/v1/calls", body["token"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = dev.request(reqwest::Method::POST, "/api/v1/dev/token", None, Some(json!({"user_id": "no spaces"}))).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_restart_on_the_same_sqlite_file() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let done = server
        .call(
            &token("alice"),
            json!({"invitees": ["bob"], "media": "video"}),
        )
        .await;
    server
        .post(
            &format!("/api/v1/calls/{done}/accept"),
            &token("bob"),
            json!({}),
        )
        .await;
    let (_, ended) = server
        .post(
            &format!("/api/v1/calls/{done}/end"),
            &token("alice"),
            json!({}),
        )
        .await;
    let live = server
        .call(
            &token("carol"),
            json!({"invitees": ["dave"], "media": "audio"}),
        )
        .await;
    server.stop().await;

    let server = TestServer::start(&db).await;
    let (status, after) = server
        .get(&format!("/api/v1/calls/{done}"), &token("bob"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after, ended);
    // A call that was ringing when the server stopped cannot go on: it is recorded as failed.
    let (_, interrupted) = server
        .get(&format!("/api/v1/calls/{live}"), &token("carol"))
        .await;
    assert_eq!(interrupted["status"], "failed");
    assert_eq!(interrupted["end_reason"], "server_restart");
    assert_eq!(participant(&interrupted, "dave")["status"], "missed");
    let (_, history) = server.get("/api/v1/calls", &admin()).await;
    assert_eq!(history["calls"].as_array().unwrap().len(), 2);
}
