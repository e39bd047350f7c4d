//! Webhooks against a real HTTP receiver on 127.0.0.1: every event type arrives signed, a
//! receiver that was down gets everything in order, a restart loses nothing, and a receiver
//! that hangs does not slow `call:initiate`. The ordering and restart tests run on SQLite, and
//! on PostgreSQL when asked (see `backend_tests!`).

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use support::db::TestDb;
use support::server::{TestServer, eventually, token};
use support::ws::WsClient;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WEBHOOK_SECRET: &str = "whsec-for-tests";
/// How long a test waits for deliveries it expects.
const DELIVERY_WAIT: Duration = Duration::from_secs(30);

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ok,
    Fail,
    /// Never answers.
    Hang,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Request {
    headers: HeaderMap,
    body: Bytes,
    /// Whether it was answered 2xx.
    accepted: bool,
}

impl Request {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

#[derive(Default)]
struct Log {
    mode: Mutex<Option<Mode>>,
    requests: Mutex<Vec<Request>>,
}

/// A webhook receiver: an axum server that records every request, and can be told to fail,
/// to hang, or to stop and start again on the same port.
struct Receiver {
    addr: SocketAddr,
    log: Arc<Log>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let log = Arc::new(Log::default());
        *log.mode.lock().unwrap() = Some(Mode::Ok);
        let mut receiver = Receiver {
            addr,
            log,
            running: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn set_mode(&self, mode: Mode) {
        *self.log.mode.lock().unwrap() = Some(mode);
    }

    fn serve(&mut self, listener: TcpListener) {
        async fn hook(State(log): State<Arc<Log>>, headers: HeaderMap, body: Bytes) -> StatusCode {
            let mode = log.mode.lock().unwrap().unwrap_or(Mode::Ok);
            log.requests.lock().unwrap().push(Request {
                headers,
                body,
                accepted: mode == Mode::Ok,
            });
            match mode {
                Mode::Ok => StatusCode::NO_CONTENT,
                Mode::Fail => StatusCode::INTERNAL_SERVER_ERROR,
                Mode::Hang => std::future::pending().await,
            }
        }
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(self.log.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        self.running = Some((tx, task));
    }

    /// Stops listening; connections are refused until [`Self::restart`].
    async fn stop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// Listens again on the same port.
    async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind the receiver's port");
        self.serve(listener);
    }

    fn requests(&self) -> Vec<Request> {
        self.log.requests.lock().unwrap().clone()
    }

    /// The bodies the receiver accepted, first delivery of each id only, in arrival order.
    fn delivered(&self) -> Vec<Value> {
        let mut seen = HashSet::new();
        self.requests()
            .iter()
            .filter(|r| r.accepted)
            .map(Request::json)
            .filter(|e| seen.insert(e["id"].as_str().unwrap_or_default().to_owned()))
            .collect()
    }

    /// Waits until at least `count` distinct events were accepted.
    async fn wait_for(&self, count: usize) -> Vec<Value> {
        let ok = eventually(DELIVERY_WAIT, || async { self.delivered().len() >= count }).await;
        let delivered = self.delivered();
        assert!(
            ok,
            "{} of {count} events delivered: {:#?}",
            delivered.len(),
            delivered.iter().map(summary).collect::<Vec<_>>()
        );
        delivered
    }
}

/// A short form of an event for failure messages.
fn summary(event: &Value) -> String {
    format!(
        "{} {} {}",
        event["type"].as_str().unwrap_or("?"),
        event["data"]["call_id"]
            .as_str()
            .or(event["data"]["id"].as_str())
            .unwrap_or("?"),
        event["data"]["user_id"].as_str().unwrap_or("")
    )
}

/// The call an event belongs to.
fn call_of(event: &Value) -> String {
    match event["type"].as_str() {
        Some("call.started" | "call.ended") => event["data"]["id"].as_str(),
        _ => event["data"]["call_id"].as_str(),
    }
    .expect("event names its call")
    .to_owned()
}

/// Checks `Confab-Signature` with an HMAC computed here, independently of the server's code.
fn assert_signed(request: &Request) {
    let header = request
        .headers
        .get("confab-signature")
        .and_then(|v| v.to_str().ok())
        .expect("Confab-Signature header");
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("malformed signature {header:?}"));
    let t: i64 = t.parse().expect("t is unix seconds");
    let now = OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now - 600..=now + 5).contains(&t),
        "t={t} is not about now ({now})"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(&request.body);
    let expected = hex::encode(mac.finalize().into_bytes());
    assert_eq!(
        v1,
        expected,
        "signature of {}",
        String::from_utf8_lossy(&request.body)
    );
}

/// The documented request shape: headers, and a body of exactly id, type, created_at, data.
fn assert_shape(request: &Request) {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/json");
    let body = request.json();
    let keys: BTreeSet<&str> = body
        .as_object()
        .expect("body is an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["created_at", "data", "id", "type"]),
        "{body}"
    );
    assert_eq!(
        header("confab-event-id"),
        body["id"].as_str().unwrap_or("?")
    );
    uuid::Uuid::parse_str(body["id"].as_str().unwrap_or("")).expect("id is a UUID");
    OffsetDateTime::parse(body["created_at"].as_str().unwrap_or(""), &Rfc3339)
        .expect("created_at is RFC 3339");
    let data = &body["data"];
    match body["type"].as_str() {
        Some("call.started" | "call.ended") => {
            for key in [
                "id",
                "kind",
                "media",
                "status",
                "created_at",
                "participants",
            ] {
                assert!(data.get(key).is_some(), "Call without {key}: {data}");
            }
        }
        Some("participant.joined" | "participant.left") => {
            for key in ["call_id", "user_id", "name"] {
                assert!(data[key].is_string(), "{key} missing: {data}");
            }
            let allowed = ["call_id", "user_id", "name", "reason"];
            let keys = data
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>());
            assert!(
                keys.iter().flatten().all(|k| allowed.contains(&k.as_str())),
                "{data}"
            );
        }
        other => panic!("unexpected type {other:?}"),
    }
}

async fn start_server(db: &TestDb, receiver: &Receiver) -> TestServer {
    let url = receiver.url();
    TestServer::start_with(db, move |s| {
        s.webhook_urls = vec![url];
        s.webhook_secret = Some(WEBHOOK_SECRET.to_owned());
        // Retries come every 2 s at most, so a receiver back after 20 s gets its events soon.
        s.webhook_retry.base = Duration::from_millis(200);
        s.webhook_retry.cap = Duration::from_secs(2);
    })
    .await
}

/// A direct call from `caller` to `callee`, accepted and ended over REST: six events.
async fn direct_call(server: &TestServer, caller: &str, callee: &str) -> String {
    let call_id = server
        .call(
            &token(caller),
            json!({ "invitees": [callee], "media": "audio" }),
        )
        .await;
    let (status, body) = server
        .post(
            &format!("/api/v1/calls/{call_id}/accept"),
            &token(callee),
            json!({}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let (status, body) = server
        .post(
            &format!("/api/v1/calls/{call_id}/end"),
            &token(caller),
            json!({}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    call_id
}

/// The event types of a [`direct_call`], in order.
const DIRECT_CALL_EVENTS: &[&str] = &[
    "participant.joined",
    "call.started",
    "participant.joined",
    "participant.left",
    "participant.left",
    "call.ended",
];

/// Every call's events arrived in the order they happened.
fn assert_in_order_per_call(delivered: &[Value], calls: &[String]) {
    let mut per_call: HashMap<String, Vec<&str>> = HashMap::new();
    for event in delivered {
        per_call
            .entry(call_of(event))
            .or_default()
            .push(event["type"].as_str().unwrap_or("?"));
    }
    for call in calls {
        assert_eq!(
            per_call.get(call).map(Vec::as_slice),
            Some(DIRECT_CALL_EVENTS),
            "events of call {call}"
        );
    }
}

fn counter(metrics: &str, result: &str) -> f64 {
    let prefix = format!("confab_webhook_deliveries_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {prefix}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_arrives_signed_with_the_documented_shape() {
    let db = TestDb::sqlite();
    let receiver = Receiver::start().await;
    let server = start_server(&db, &receiver).await;

    let direct = direct_call(&server, "alice", "bob").await;

    server
        .conversation("team", &["alice", "bob", "carol"])
        .await;
    let group = server
        .call(
            &token("alice"),
            json!({ "conversation_id": "team", "invitees": ["bob", "carol"], "media": "video" }),
        )
        .await;
    for user in ["bob", "carol"] {
        let (status, body) = server
            .post(
                &format!("/api/v1/calls/{group}/accept"),
                &token(user),
                json!({}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    }
    for user in ["bob", "carol", "alice"] {
        let (status, body) = server
            .post(
                &format!("/api/v1/calls/{group}/leave"),
                &token(user),
                json!({}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    }

    // Direct: six events. Group: three joins, the start, three leaves, the end.
    let delivered = receiver.wait_for(6 + 8).await;
    for request in receiver.requests() {
        assert_signed(&request);
        assert_shape(&request);
    }
    assert_in_order_per_call(&delivered, std::slice::from_ref(&direct));

    let group_events: Vec<&Value> = delivered.iter().filter(|e| call_of(e) == group).collect();
    let described: Vec<String> = group_events.iter().map(|e| summary(e)).collect();
    let types: Vec<&str> = group_events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        types,
        [
            "participant.joined",
            "call.started",
            "participant.joined",
            "participant.joined",
            "participant.left",
            "participant.left",
            "participant.left",
            "call.ended",
        ],
        "{described:#?}"
    );
    let who = |i: usize| group_events[i]["data"]["user_id"].as_str().unwrap_or("?");
    assert_eq!(
        (0..8)
            .filter(|&i| i != 1 && i != 7)
            .map(who)
            .collect::<Vec<_>>(),
        ["alice", "bob", "carol", "bob", "carol", "alice"]
    );
    assert_eq!(group_events[4]["data"]["reason"], "left");
    assert_eq!(group_events[2]["data"]["name"], "bob");

    // call.started carries the call as it went ongoing; call.ended the call as REST returns it.
    assert_eq!(group_events[1]["data"]["status"], "ongoing");
    let (status, stored) = server
        .get(&format!("/api/v1/calls/{group}"), &token("alice"))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(group_events[7]["data"], stored);
    assert_eq!(stored["status"], "completed");

    let metrics = server.metrics().await;
    assert!(counter(&metrics, "ok") >= 14.0, "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_is_retried_and_holds_back_only_its_own_call() {
    let db = TestDb::sqlite();
    let receiver = Receiver::start().await;
    receiver.set_mode(Mode::Fail);
    let server = start_server(&db, &receiver).await;
    let first = direct_call(&server, "alice", "bob").await;
    assert!(
        eventually(DELIVERY_WAIT, || async { receiver.requests().len() >= 3 }).await,
        "the receiver is retried"
    );
    // Only the head of the call's queue was tried: one event id, several attempts.
    let ids: HashSet<String> = receiver
        .requests()
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    receiver.set_mode(Mode::Ok);
    let second = direct_call(&server, "carol", "dave").await;
    let delivered = receiver.wait_for(12).await;
    assert_in_order_per_call(&delivered, &[first, second]);
    let metrics = server.metrics().await;
    assert!(counter(&metrics, "failed") >= 3.0, "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_short_by_a_restart_is_reported_ended() {
    let db = TestDb::sqlite();
    let receiver = Receiver::start().await;
    let first = start_server(&db, &receiver).await;
    let call_id = first
        .call(
            &token("alice"),
            json!({ "invitees": ["bob"], "media": "audio" }),
        )
        .await;
    let (status, body) = first
        .post(
            &format!("/api/v1/calls/{call_id}/accept"),
            &token("bob"),
            json!({}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    receiver.wait_for(3).await;
    first.stop().await;

    let second = start_server(&db, &receiver).await;
    let delivered = receiver.wait_for(6).await;
    let tail: Vec<String> = delivered[3..].iter().map(summary).collect();
    assert_eq!(
        tail,
        [
            format!("participant.left {call_id} alice"),
            format!("participant.left {call_id} bob"),
            format!("call.ended {call_id} "),
        ]
    );
    assert_eq!(delivered[3]["data"]["reason"], "removed");
    assert_eq!(delivered[5]["data"]["status"], "failed");
    assert_eq!(delivered[5]["data"]["end_reason"], "server_restart");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_slow_call_initiate() {
    const ROUNDS: usize = 15;
    let db = TestDb::sqlite();
    let receiver = Receiver::start().await;
    let server = start_server(&db, &receiver).await;
    let mut alice = WsClient::connect(&server, &token("alice")).await;
    let _bob = WsClient::connect(&server, &token("bob")).await;

    async fn initiate_latencies(alice: &mut WsClient, rounds: usize) -> Vec<Duration> {
        let mut latencies = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let started = Instant::now();
            let data = alice
                .ok(
                    "call:initiate",
                    json!({ "invitees": ["bob"], "media": "audio" }),
                )
                .await;
            latencies.push(started.elapsed());
            let call_id = data["call"]["id"].as_str().expect("call id").to_owned();
            alice.ok("call:end", json!({ "call_id": call_id })).await;
            // Two requests a round: stay well inside the socket's rate limit.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        latencies
    }
    fn median(mut v: Vec<Duration>) -> Duration {
        v.sort();
        v[v.len() / 2]
    }

    // Warm up the connection and the store, then measure with a receiver that answers.
    initiate_latencies(&mut alice, 3).await;
    let answering = median(initiate_latencies(&mut alice, ROUNDS).await);
    receiver.set_mode(Mode::Hang);
    let hanging = median(initiate_latencies(&mut alice, ROUNDS).await);
    let ratio = hanging.as_secs_f64() / answering.as_secs_f64();
    println!(
        "call:initiate median over {ROUNDS}: receiver answering {answering:?}, \
         receiver hanging {hanging:?}, ratio {ratio:.2}"
    );
    assert!(
        eventually(DELIVERY_WAIT, || async {
            receiver.requests().iter().any(|r| !r.accepted)
        })
        .await,
        "the hanging receiver was called"
    );
    alice.close().await;
    server.stop().await;
}

backend_tests! {
    async fn a_receiver_down_for_20_s_then_back_gets_everything_in_order(db: &TestDb) {
        let mut receiver = Receiver::start().await;
        let server = start_server(db, &receiver).await;
        receiver.stop().await;
        let mut calls = Vec::new();
        for (caller, callee) in [("alice", "bob"), ("carol", "dave"), ("alice", "dave")] {
            calls.push(direct_call(&server, caller, callee).await);
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
        let failed = counter(&server.metrics().await, "failed");
        assert!(failed >= 3.0, "attempts while the receiver was down: {failed}");
        receiver.restart().await;
        let delivered = receiver.wait_for(calls.len() * DIRECT_CALL_EVENTS.len()).await;
        assert_in_order_per_call(&delivered, &calls);
        for request in receiver.requests() {
            assert_signed(&request);
        }
        server.stop().await;
    }

    async fn a_restart_while_events_wait_loses_none(db: &TestDb) {
        let mut receiver = Receiver::start().await;
        receiver.stop().await;
        let first = start_server(db, &receiver).await;
        let mut calls = Vec::new();
        for (caller, callee) in [("alice", "bob"), ("carol", "dave")] {
            calls.push(direct_call(&first, caller, callee).await);
        }
        first.stop().await;
        assert!(receiver.requests().is_empty(), "nothing reached the receiver before the restart");
        receiver.restart().await;
        let second = start_server(db, &receiver).await;
        calls.push(direct_call(&second, "alice", "carol").await);
        let delivered = receiver.wait_for(calls.len() * DIRECT_CALL_EVENTS.len()).await;
        assert_in_order_per_call(&delivered, &calls);
        second.stop().await;
    }
}
