//! Draining and stopping (contract section 10), readiness and the log format: SIGTERM on the
//! real binary during a call with media, `POST /admin/drain` in-process, `/readyz` with a
//! media worker gone, and JSON log lines.

mod support;

use std::path::Path;
use std::time::Duration;

use confab::store::Store;
use confab_bot::participant::BotParticipant;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::db::TestDb;
use support::process::{Serving, confab};
use support::server::{SECRET, TestServer, admin, code, token};
use support::ws::{WAIT, WsClient};

/// `confab serve` on loopback with free ports, a SQLite file in `dir` and the tests' secret;
/// stderr goes to `dir/stderr.log`.
fn serve_in(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Serving {
    let db = format!("sqlite://{}", dir.join("confab.db").display());
    let stderr = std::fs::File::create(dir.join("stderr.log")).expect("log file");
    Serving::start(
        confab()
            .args(["serve", "--http-addr", ":0", "--rtc-udp-port", "0"])
            .args(["--media-workers", "1", "--database-url", &db])
            .args(["--jwt-secret", SECRET])
            .args(args)
            .envs(env.iter().copied())
            .stderr(stderr),
    )
}

async fn bot(base: &str, user: &str) -> BotParticipant {
    BotParticipant::connect(base, &token(user), user)
        .await
        .expect("bot connects")
}

/// Polls `check` every 50 ms for at most [`WAIT`].
async fn until(mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_call_with_media_and_keeps_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve_in(dir.path(), &[], &["--drain-timeout-s", "1"]);
    let alice = bot(&server.base, "alice").await;
    let bob = bot(&server.base, "bob").await;

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
    let alice_pub = alice.publish(&call_id).await.expect("alice publishes");
    let bob_pub = bob.publish(&call_id).await.expect("bob publishes");
    let sending = [
        tokio::spawn(async move { alice_pub.send_media(Duration::from_secs(60)).await.ok() }),
        tokio::spawn(async move { bob_pub.send_media(Duration::from_secs(60)).await.ok() }),
    ];
    // A quality report was cut (and queued for the store), and a media switch recorded.
    alice
        .event("call:quality", Duration::from_secs(30))
        .await
        .expect("call:quality arrives");
    bob.request(
        "call:media",
        json!({"call_id": call_id, "audio_muted": true}),
    )
    .await
    .expect("call:media");

    server.signal("TERM");
    for (who, bot) in [("alice", &alice), ("bob", &bob)] {
        let ended = bot
            .event("call:ended", WAIT)
            .await
            .unwrap_or_else(|| panic!("{who} gets call:ended"));
        assert_eq!(ended["call_id"], call_id.as_str(), "{ended}");
        assert_eq!(ended["reason"], "drained", "{ended}");
        assert_eq!(ended["status"], "completed", "{ended}");
        assert!(
            until(|| bot.signaling.close_code().is_some()).await,
            "{who}'s socket was closed"
        );
        assert_eq!(bot.signaling.close_code(), Some(1001), "{who}");
    }
    let status = server.exited().await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    for task in sending {
        task.abort();
    }

    let store = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("confab.db").display()
    ))
    .await
    .expect("store opens");
    let id = call_id.parse().unwrap();
    let call = store.get_call(id).await.unwrap().expect("call stored");
    assert_eq!(call.status.as_str(), "completed");
    assert_eq!(call.end_reason.as_deref(), Some("drained"));
    assert!(call.ended_at.is_some());
    let media = store.media_events(id).await.unwrap();
    assert!(
        media
            .iter()
            .any(|e| e.user_id.as_str() == "bob" && e.state.audio_muted),
        "bob's mute is stored: {media:?}"
    );
    let samples = store.quality_samples(id).await.unwrap();
    assert!(!samples.is_empty(), "quality samples are stored");
    let last = samples.iter().map(|s| s.at).max().unwrap();
    assert!(
        last <= call.ended_at.unwrap() + time::Duration::seconds(10),
        "samples belong to the call"
    );
    store.close().await;

    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(log.contains("drained"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // A drain that would wait an hour for the call below to end.
    let mut server = serve_in(dir.path(), &[], &["--drain-timeout-s", "1h"]);
    let mut alice = WsClient::connect_url(&server.base, &token("alice")).await;
    alice
        .start_call(json!({"invitees": ["bob"], "media": "audio"}))
        .await;
    server.signal("TERM");
    // The first signal started the drain: the node says so.
    let http = reqwest::Client::new();
    let ready = format!("{}/readyz", server.base);
    let mut draining = false;
    for _ in 0..200 {
        let resp = http.get(&ready).send().await.expect("readyz");
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["draining"], true, "{body}");
            draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(draining, "readyz answers 503 while draining");
    server.signal("TERM");
    let status = server.exited().await;
    assert!(!status.success(), "cut short: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_an_access_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve_in(dir.path(), &[("CONFAB_LOG_FORMAT", "json")], &[]);
    let alice = token("alice");
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/calls?limit=5", server.base))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    server.signal("TERM");
    assert_eq!(server.exited().await.code(), Some(0));

    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(!log.contains(&alice), "tokens are never logged");
    let lines: Vec<Value> = log
        .lines()
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            assert!(value.is_object(), "{line}");
            value
        })
        .collect();
    assert!(lines.iter().any(|l| l["message"] == "serving"), "{log}");
    let access = lines
        .iter()
        .find(|l| l["target"] == "confab::access" && l["route"] == "/api/v1/calls")
        .unwrap_or_else(|| panic!("no access line in {log}"));
    assert_eq!(access["level"], "INFO", "{access}");
    assert_eq!(access["method"], "GET", "{access}");
    assert_eq!(access["status"], 200, "{access}");
    assert_eq!(access["user"], "alice", "{access}");
    assert!(access["duration_ms"].as_f64().is_some(), "{access}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_drain_refuses_new_calls_and_ends_the_rest_drained() {
    let db = TestDb::sqlite();
    let server = TestServer::start_with(&db, |s| s.drain_timeout = Duration::from_secs(1)).await;
    let mut alice = WsClient::connect(&server, &token("alice")).await;
    let mut bob = WsClient::connect(&server, &token("bob")).await;
    let call_id = alice
        .start_call(json!({"invitees": ["bob"], "media": "audio"}))
        .await;
    bob.ok("call:accept", json!({"call_id": call_id})).await;

    let drain = "/api/v1/admin/drain";
    let (status, body) = server
        .request(reqwest::Method::POST, drain, None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = server.post(drain, &token("alice"), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(code(&body), "FORBIDDEN");
    let (status, body) = server.post(drain, &admin(), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["draining"], true);
    assert_eq!(body["drain_timeout_s"], 1);

    // No new calls, over REST or the socket.
    let (status, body) = server
        .post(
            "/api/v1/calls",
            &token("carol"),
            json!({"invitees": ["dave"], "media": "audio"}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(code(&body), "UNAVAILABLE");
    let (status, body) = server
        .request(reqwest::Method::GET, "/readyz", None, None)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "draining", "{body}");
    assert!(server.metrics().await.contains("confab_node_draining 1"));

    // After the timeout the live call ends, drained, and every socket gets 1001.
    for ws in [&mut alice, &mut bob] {
        let ended = ws.event_for("call:ended", &call_id).await;
        assert_eq!(ended["reason"], "drained", "{ended}");
        assert_eq!(ws.closed_with().await, Some(1001));
    }
    // The node keeps running, draining: history reads work, new sockets are refused.
    let (status, call) = server
        .get(&format!("/api/v1/calls/{call_id}"), &token("alice"))
        .await;
    assert_eq!(status, StatusCode::OK, "{call}");
    assert_eq!(call["status"], "completed");
    assert_eq!(call["end_reason"], "drained");
    let refused = tokio_tungstenite::connect_async(format!(
        "{}/ws?token={}",
        server.base.replacen("http", "ws", 1),
        token("carol")
    ))
    .await;
    assert!(refused.is_err(), "no new sockets once drained");
    let (status, body) = server.post(drain, &admin(), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["already_draining"], true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_lets_calls_in_progress_be_reached_and_end_by_themselves() {
    let db = TestDb::sqlite();
    let server = TestServer::start_with(&db, |s| s.drain_timeout = Duration::from_secs(3600)).await;
    let mut alice = WsClient::connect(&server, &token("alice")).await;
    let mut bob = WsClient::connect(&server, &token("bob")).await;
    let call_id = alice
        .start_call(json!({"invitees": ["bob"], "media": "audio"}))
        .await;
    let (status, _) = server
        .post("/api/v1/admin/drain", &admin(), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // A call already live here can still be answered, but no new one started.
    bob.ok("call:accept", json!({"call_id": call_id})).await;
    let refused = bob
        .request(
            "call:initiate",
            json!({"invitees": ["carol"], "media": "audio"}),
        )
        .await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["data"]["code"], "UNAVAILABLE", "{refused}");

    // It ends as usual; the drain then has nothing to wait for and closes the sockets.
    alice.ok("call:end", json!({"call_id": call_id})).await;
    let ended = bob.event_for("call:ended", &call_id).await;
    assert_eq!(ended["reason"], "ended", "{ended}");
    assert_eq!(alice.closed_with().await, Some(1001));
    assert_eq!(bob.closed_with().await, Some(1001));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_the_store_and_the_media_workers() {
    let db = TestDb::sqlite();
    let server = TestServer::start_with(&db, |s| s.media_workers = 2).await;
    let (status, body) = server
        .request(reqwest::Method::GET, "/readyz", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"], "sqlite");
    assert_eq!(body["store"], "ok");
    assert_eq!(body["draining"], false);
    assert_eq!(body["media_workers"], json!({"total": 2, "answering": 2}));

    // Workers that stopped answer nothing: not ready.
    server.state.media.engine().shutdown().await;
    let (status, body) = server
        .request(reqwest::Method::GET, "/readyz", None, None)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["media_workers"], json!({"total": 2, "answering": 0}));
    server.stop().await;
}

fn quality_sample(call_id: uuid::Uuid, n: i64) -> confab::store::QualitySample {
    confab::store::QualitySample {
        call_id,
        user_id: confab_signaling::UserId::parse("alice").unwrap(),
        direction: confab::store::QualityDirection::Inbound,
        kind: confab_signaling::MediaKind::Audio,
        at: confab::calls::now_ms() + time::Duration::milliseconds(n),
        bitrate_bps: 32_000,
        packet_loss: 0.0,
        jitter_ms: 1.0,
        rtt_ms: 20.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_writer_writes_its_queue_before_it_stops() {
    let db = TestDb::sqlite();
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let metrics = std::sync::Arc::new(confab::metrics::Metrics::new());
    let writer = confab::writer::HistoryWriter::spawn(store.clone(), metrics.clone());
    let call_id = uuid::Uuid::new_v4();
    for n in 0..1000 {
        writer.quality_sample(quality_sample(call_id, n));
    }
    writer
        .close(Duration::from_secs(30))
        .await
        .expect("everything written");
    assert_eq!(store.quality_samples(call_id).await.unwrap().len(), 1000);
    assert_eq!(metrics.store_write_backlog.get(), 0);
    // Once stopped, a write is dropped and counted instead of queued for nobody.
    writer.quality_sample(quality_sample(call_id, 1000));
    let dropped = metrics
        .store_write_failures_total
        .with_label_values(&["quality_sample"])
        .get();
    assert_eq!(dropped, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_never_answers_does_not_hold_the_writer_forever() {
    let db = TestDb::sqlite();
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let metrics = std::sync::Arc::new(confab::metrics::Metrics::new());
    let writer = confab::writer::HistoryWriter::spawn(store.clone(), metrics.clone());
    // A closed pool refuses every write, so the writer retries until it is given up on.
    store.close().await;
    writer.quality_sample(quality_sample(uuid::Uuid::new_v4(), 0));
    let lost = writer
        .close(Duration::from_millis(300))
        .await
        .expect_err("the write cannot be made");
    assert_eq!(lost.pending, 1);
}
