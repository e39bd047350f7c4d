//! Property tests of the contract's error rules (sections 3 and 6): random JSON at every
//! WebSocket message type and random requests at every REST route, against a real server.
//!
//! Whatever arrives, a WebSocket request gets an `error` with a contract code (`INVALID_ARGUMENT`
//! whenever the frame does not parse) or, only for a request that parses, an `ack`, and the
//! socket stays open. Every REST refusal is the JSON error body with its code's status, never a
//! 5xx, and the connection is never reset. The generators lean towards the names and values the
//! contract uses, so that many random requests reach the service and not only the parser.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use confab_signaling::protocol::{self, ClientRequest};
use confab_signaling::{ErrorCode, ParticipantStatus};
use futures_util::{SinkExt, StreamExt};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use support::db::TestDb;
use support::http1::{Conn, Response, head};
use support::server::{SECRET, TestServer, admin, expired, token};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// Cases per property: a few hundred keep each test to seconds on a loaded machine.
const WS_CASES: u32 = 400;
const REST_CASES: u32 = 400;
/// Frames a socket sends before the test moves to a fresh one (each case sends two), well
/// inside the per-socket rate limit's burst so that the frames reach the service.
const CASES_PER_SOCKET: u32 = 12;
/// How long the test waits for an answer before it calls the socket dead.
const WAIT: Duration = Duration::from_secs(20);

/// Stands for the test's live call in generated text; replaced at send time, in one of the
/// spellings of a UUID that name it.
const CALL: &str = "$CALL";
const CALL_SPELLINGS: [&str; 5] = [
    "$CALL",
    "$CALL_SIMPLE",
    "$CALL_UPPER",
    "$CALL_BRACED",
    "$CALL_URN",
];

/// Field names of the contract's requests and bodies.
const FIELDS: &[&str] = &[
    "call_id",
    "target",
    "sdp",
    "candidate",
    "sdp_mid",
    "sdp_mline_index",
    "user_id",
    "source",
    "quality",
    "reason",
    "invitees",
    "media",
    "kind",
    "conversation_id",
    "audio_muted",
    "video_enabled",
    "screen_sharing",
    "members",
    "name",
];

/// Values the contract uses (and a few near misses).
const WORDS: &[&str] = &[
    "$CALL",
    "$CALL_SIMPLE",
    "$CALL_UPPER",
    "$CALL_BRACED",
    "$CALL_URN",
    "00000000-0000-0000-0000-000000000000",
    "publisher",
    "subscriber",
    "Publisher",
    "camera",
    "screen",
    "microphone",
    "off",
    "low",
    "medium",
    "high",
    "audio",
    "video",
    "direct",
    "group",
    "alice",
    "bob",
    "carol",
    "team",
    "bad id",
    "v=0",
    "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
    "",
];

fn spell(text: &str, call: Uuid) -> String {
    text.replace("$CALL_SIMPLE", &call.simple().to_string())
        .replace("$CALL_UPPER", &call.hyphenated().to_string().to_uppercase())
        .replace("$CALL_BRACED", &call.braced().to_string())
        .replace("$CALL_URN", &call.urn().to_string())
        .replace(CALL, &call.hyphenated().to_string())
}

fn number(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// A scalar: of any JSON type, often one of the contract's words.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(number),
        2 => any::<String>().prop_map(Value::String),
        6 => select(WORDS).prop_map(|w| Value::String(w.to_owned())),
        1 => Just(json!(["bob"])),
        1 => Just(json!({"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdp_mid": "0", "sdp_mline_index": 0})),
    ]
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(FIELDS).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Any JSON value: nested arrays and objects, wrong types, big numbers, any unicode.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((field_name(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// An object of the contract's field names with plausible values: often a valid request.
fn plausible_object() -> impl Strategy<Value = Value> {
    vec((select(FIELDS).prop_map(str::to_owned), leaf()), 0..7)
        .prop_map(|fields| Value::Object(fields.into_iter().collect()))
}

/// Each field of the contract's requests with values it takes (and a call that is not there),
/// for data that is often valid: an object of them, some left out, suits every request type,
/// since a request ignores the fields it does not know.
fn well_formed_object() -> impl Strategy<Value = Value> {
    let candidate = json!({"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdp_mid": "0", "sdp_mline_index": 0});
    let fields: Vec<(&str, Vec<Value>)> = vec![
        (
            "call_id",
            CALL_SPELLINGS
                .iter()
                .map(|s| json!(s))
                .chain([json!(Uuid::nil())])
                .collect(),
        ),
        ("target", vec![json!("publisher"), json!("subscriber")]),
        ("sdp", vec![json!("v=0"), json!("")]),
        ("candidate", vec![Value::Null, candidate]),
        (
            "user_id",
            vec![json!("bob"), json!("alice"), json!("carol")],
        ),
        ("source", vec![json!("camera"), json!("screen")]),
        (
            "quality",
            vec![json!("off"), json!("low"), json!("medium"), json!("high")],
        ),
        ("reason", vec![json!("bye"), Value::Null]),
        (
            "invitees",
            vec![json!(["bob"]), json!(["carol"]), json!(["alice"])],
        ),
        ("media", vec![json!("audio"), json!("video")]),
        ("kind", vec![json!("direct"), json!("group")]),
        ("conversation_id", vec![json!("team"), Value::Null]),
        ("audio_muted", vec![json!(true), json!(false)]),
        ("video_enabled", vec![json!(true), json!(false)]),
        ("screen_sharing", vec![json!(true), json!(false)]),
    ];
    let fields: Vec<_> = fields
        .into_iter()
        .map(|(name, values)| {
            proptest::option::weighted(0.8, select(values)).prop_map(move |v| (name, v))
        })
        .collect();
    fields.prop_map(|fields| {
        Value::Object(
            fields
                .into_iter()
                .filter_map(|(name, v)| v.map(|v| (name.to_owned(), v)))
                .collect(),
        )
    })
}

/// What a generated WebSocket frame is.
#[derive(Debug, Clone)]
enum WsFrame {
    /// An envelope; `id: None` means a fresh unique id, so its answer can be told apart.
    Envelope {
        id: Option<Option<Value>>,
        kind: Value,
        data: Option<Value>,
    },
    /// Text that is whatever it is: rarely JSON, never an envelope on purpose.
    Text(String),
    /// A number JSON cannot hold as a 64-bit value, in a field that wants something else.
    HugeNumber {
        kind: &'static str,
        digits: String,
    },
    Binary(Vec<u8>),
}

fn ws_frame() -> impl Strategy<Value = WsFrame> {
    let kind = prop_oneof![
        8 => select(ClientRequest::TYPE_NAMES).prop_map(|t| Value::String(t.to_owned())),
        1 => "(call|rtc):[a-z-]{0,10}".prop_map(Value::String),
        1 => any::<String>().prop_map(Value::String),
        1 => leaf(),
    ];
    let id = prop_oneof![
        6 => Just(None),
        1 => Just(Some(None)),
        1 => prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(number),
            "[a-z]{129,140}".prop_map(Value::String),
            Just(json!({"a": 1})),
            Just(json!([1])),
            any::<bool>().prop_map(Value::Bool),
        ]
        .prop_map(|v| Some(Some(v))),
    ];
    let data = prop_oneof![
        1 => Just(None),
        3 => json_value().prop_map(Some),
        3 => plausible_object().prop_map(Some),
        4 => well_formed_object().prop_map(Some),
    ];
    prop_oneof![
        10 => (id, kind, data).prop_map(|(id, kind, data)| WsFrame::Envelope { id, kind, data }),
        1 => any::<String>().prop_map(WsFrame::Text),
        1 => (select(ClientRequest::TYPE_NAMES), "[1-9][0-9]{20,400}(\\.[0-9]{1,5})?(e[0-9]{1,4})?")
            .prop_map(|(kind, digits)| WsFrame::HugeNumber { kind, digits }),
        1 => vec(any::<u8>(), 0..64).prop_map(WsFrame::Binary),
    ]
}

impl WsFrame {
    /// The message to send, and the id the test gave it, if any.
    fn render(&self, n: u32, call: Uuid) -> Message {
        match self {
            WsFrame::Envelope { id, kind, data } => {
                let mut frame = json!({ "type": kind });
                match id {
                    None => frame["id"] = json!(format!("p{n}")),
                    Some(None) => {}
                    Some(Some(odd)) => frame["id"] = odd.clone(),
                }
                if let Some(data) = data {
                    frame["data"] = data.clone();
                }
                Message::Text(spell(&frame.to_string(), call).into())
            }
            WsFrame::Text(text) => Message::Text(text.clone().into()),
            WsFrame::HugeNumber { kind, digits } => Message::Text(
                format!(
                    r#"{{"id":"p{n}","type":"{kind}","data":{{"call_id":{digits},"sdp_mline_index":{digits},"audio_muted":true}}}}"#
                )
                .into(),
            ),
            WsFrame::Binary(bytes) => Message::Binary(bytes.clone().into()),
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &TestServer, user: &str) -> Socket {
    let url = format!(
        "{}/ws?token={}",
        server.base.replacen("http", "ws", 1),
        token(user)
    );
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects")
        .0
}

/// Sends `sync` and returns every `ack` and `error` that came before its answer; fails if the
/// socket closes or stays silent.
async fn replies_until(socket: &mut Socket, sync: &str) -> Result<Vec<Value>, String> {
    socket
        .send(Message::Text(
            json!({"id": sync, "type": "probe:sync"}).to_string().into(),
        ))
        .await
        .map_err(|e| format!("sending the probe failed: {e}"))?;
    let mut replies = Vec::new();
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .map_err(|_| "no answer to the probe".to_owned())?;
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => return Err(format!("the socket ended: {other:?}")),
        };
        let frame: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if frame["id"] == sync {
            return Ok(replies);
        }
        if frame["type"] == "ack" || frame["type"] == "error" {
            replies.push(frame);
        }
    }
}

/// Keeps alice and bob joined in one live direct call, starting a new one over REST when the
/// random requests ended it or took alice elsewhere.
async fn ensure_call(server: &TestServer, current: Option<Uuid>) -> Uuid {
    let calls = &server.state.calls;
    if let Some(id) = current {
        let both_joined = calls.live_call(id).is_some_and(|c| {
            ["alice", "bob"].iter().all(|u| {
                c.participant(u)
                    .is_some_and(|p| p.status == ParticipantStatus::Joined)
            })
        });
        if both_joined {
            return id;
        }
    }
    for user in ["alice", "bob"] {
        if let Some(other) = calls.joined_call_of(user) {
            let _ = server
                .post(
                    &format!("/api/v1/calls/{other}/leave"),
                    &token(user),
                    json!({}),
                )
                .await;
        }
    }
    let id = server
        .call(
            &token("alice"),
            json!({"invitees": ["bob"], "media": "video"}),
        )
        .await;
    let (status, body) = server
        .post(
            &format!("/api/v1/calls/{id}/accept"),
            &token("bob"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    id.parse().expect("a call id")
}

fn check(ok: bool, message: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if ok {
        Ok(())
    } else {
        Err(TestCaseError::fail(message()))
    }
}

/// An `error` frame's code: a contract code, and no server fault for anything a client sends.
fn check_error_frame(frame: &Value, sent: &str) -> Result<ErrorCode, TestCaseError> {
    let name = frame["data"]["code"].as_str().unwrap_or_default();
    let code = ErrorCode::from_name(name)
        .ok_or_else(|| TestCaseError::fail(format!("unknown code in {frame} for {sent}")))?;
    check(code != ErrorCode::Internal, || {
        format!("server fault {frame} for {sent}")
    })?;
    check(frame["data"]["message"].is_string(), || {
        format!("no message in {frame}")
    })?;
    Ok(code)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    })
}

struct WsState {
    socket: Option<Socket>,
    call: Option<Uuid>,
    sent: u32,
    acks: u32,
    /// How often each code answered, for the summary line.
    codes: BTreeMap<String, u32>,
}

#[test]
fn random_frames_at_every_message_type_get_a_contract_answer() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = TestDb::sqlite();
    let server = rt.block_on(TestServer::start(&db));
    let state = Mutex::new(WsState {
        socket: None,
        call: None,
        sent: 0,
        acks: 0,
        codes: BTreeMap::new(),
    });

    let result = runner(WS_CASES).run(&ws_frame(), |frame| {
        rt.block_on(async {
            let mut st = state.lock().await;
            let n = st.sent;
            st.sent += 1;
            let call = ensure_call(&server, st.call).await;
            st.call = Some(call);
            if st.socket.is_none() || n.is_multiple_of(CASES_PER_SOCKET) {
                let fresh = connect(&server, "alice").await;
                if let Some(mut old) = st.socket.replace(fresh) {
                    let _ = old.close(None).await;
                }
            }
            let message = frame.render(n, call);
            let (text, expected) = match &message {
                Message::Text(text) => (text.to_string(), Some(protocol::parse(text))),
                _ => (format!("{message:?}"), None),
            };
            let socket = st.socket.as_mut().expect("a socket");
            socket
                .send(message)
                .await
                .map_err(|e| TestCaseError::fail(format!("send failed: {e}")))?;
            let replies = replies_until(socket, &format!("sync{n}"))
                .await
                .map_err(|e| TestCaseError::fail(format!("{e} after {text}")))?;
            for reply in &replies {
                if reply["type"] == "error" {
                    let code = check_error_frame(reply, &text)?;
                    *st.codes.entry(code.to_string()).or_default() += 1;
                }
            }
            let Some(expected) = expected else {
                // A binary frame: one INVALID_ARGUMENT, without an id.
                check(replies.len() == 1, || format!("{replies:?} for {text}"))?;
                let code = check_error_frame(&replies[0], &text)?;
                return check(
                    code == ErrorCode::InvalidArgument && replies[0].get("id").is_none(),
                    || format!("{replies:?} for {text}"),
                );
            };
            match (&expected.request, &expected.id) {
                (Err(_), id) => {
                    check(replies.len() == 1, || format!("{replies:?} for {text}"))?;
                    let reply = &replies[0];
                    let code = check_error_frame(reply, &text)?;
                    check(
                        matches!(code, ErrorCode::InvalidArgument | ErrorCode::RateLimited),
                        || format!("{reply} for unparsable {text}"),
                    )?;
                    check(reply.get("id") == id.as_ref(), || {
                        format!("{reply} does not echo {id:?} of {text}")
                    })?;
                }
                (Ok(_), Some(id)) => {
                    check(replies.len() == 1 && replies[0]["id"] == *id, || {
                        format!("{replies:?} for {text}")
                    })?;
                    if replies[0]["type"] == "ack" {
                        st.acks += 1;
                    }
                }
                (Ok(_), None) => check(
                    replies.len() <= 1 && replies.iter().all(|r| r["type"] == "error"),
                    || format!("an ack without an id: {replies:?} for {text}"),
                )?,
            }
            Ok(())
        })
    });
    let st = state.into_inner();
    println!(
        "WebSocket property: {} random frames ({WS_CASES} cases, each followed by a probe), {} acked, errors {:?}",
        st.sent, st.acks, st.codes
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    rt.block_on(server.stop());
}

/// The REST routes (contract section 5, the service routes outside `/api/v1`, and the dev
/// token route) with their methods; `{id}` is filled with a generated path segment.
const ROUTES: &[(&str, &[&str])] = &[
    ("/api/v1/conversations/{id}", &["PUT", "GET", "DELETE"]),
    ("/api/v1/conversations/{id}/active-call", &["GET"]),
    ("/api/v1/calls", &["POST", "GET"]),
    ("/api/v1/calls/stats", &["GET"]),
    ("/api/v1/calls/{id}", &["GET"]),
    ("/api/v1/calls/{id}/accept", &["POST"]),
    ("/api/v1/calls/{id}/reject", &["POST"]),
    ("/api/v1/calls/{id}/join", &["POST"]),
    ("/api/v1/calls/{id}/leave", &["POST"]),
    ("/api/v1/calls/{id}/end", &["POST"]),
    ("/api/v1/calls/{id}/media", &["PATCH"]),
    ("/api/v1/calls/{id}/quality", &["GET"]),
    ("/api/v1/ice-servers", &["GET"]),
    ("/api/v1/dev/token", &["POST"]),
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/metrics", &["GET"]),
    ("/ws", &["GET"]),
];

/// Any method, including ones no route has.
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PURGE", "BREW",
];

const QUERY_KEYS: &[&str] = &[
    "limit",
    "status",
    "media",
    "direction",
    "before",
    "conversation_id",
    "timeframe",
    "token",
];

fn percent_encoded(bytes: Vec<u8>) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// A path segment or query value: the live call, a UUID, raw bytes percent-encoded (often not
/// UTF-8), URI-safe text, a contract word, or something long.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => select(&CALL_SPELLINGS[..]).prop_map(str::to_owned),
        1 => any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        2 => vec(any::<u8>(), 0..12).prop_map(percent_encoded),
        2 => "[A-Za-z0-9._~:@!$&'()*+,;=-]{0,20}",
        2 => select(WORDS)
            .prop_filter("fits a path", |w| !w.contains(' '))
            .prop_map(str::to_owned),
        1 => "[a-z]{129,300}",
    ]
}

#[derive(Debug, Clone)]
enum RestBody {
    Empty,
    Json(Value),
    Bytes(Vec<u8>),
    /// Spaces after a JSON object, to this many bytes: around the 64 KiB limit.
    Padded(usize),
}

#[derive(Debug, Clone)]
struct RestCase {
    method: &'static str,
    path: String,
    query: Option<Vec<(String, String)>>,
    auth: usize,
    content_type: Option<String>,
    body: RestBody,
    chunked: bool,
}

fn rest_case() -> impl Strategy<Value = RestCase> {
    // A route with one of its methods, or any method; or a path near the routes or nowhere.
    let method_and_path = prop_oneof![
        6 => (select(ROUTES), any::<prop::sample::Index>(), segment(), proptest::bool::weighted(0.75), select(METHODS))
            .prop_map(|((route, methods), pick, id, own, any_method)| {
                let method = if own { methods[pick.index(methods.len())] } else { any_method };
                (method, route.replace("{id}", &id))
            }),
        1 => (select(METHODS), vec(segment(), 0..5))
            .prop_map(|(method, parts)| (method, format!("/{}", parts.join("/")))),
        1 => (select(METHODS), select(ROUTES), segment(), segment())
            .prop_map(|(method, (route, _), id, extra)| (method, format!("{}/{extra}", route.replace("{id}", &id)))),
    ];
    let query_key = prop_oneof![
        3 => select(QUERY_KEYS).prop_map(str::to_owned),
        1 => "[a-z_]{0,8}",
    ];
    let query = proptest::option::weighted(0.3, vec((query_key, segment()), 0..4));
    let content_type = proptest::option::weighted(
        0.7,
        prop_oneof![
            4 => Just("application/json".to_owned()),
            1 => Just("application/json; charset=utf-8".to_owned()),
            1 => Just("text/plain".to_owned()),
            1 => Just("application/x-www-form-urlencoded".to_owned()),
            1 => Just("multipart/form-data; boundary=x".to_owned()),
            1 => "[!-~][ -~]{0,30}",
        ],
    );
    let body = prop_oneof![
        3 => Just(RestBody::Empty),
        4 => prop_oneof![json_value(), plausible_object(), well_formed_object()].prop_map(RestBody::Json),
        1 => vec(any::<u8>(), 0..256).prop_map(RestBody::Bytes),
        1 => (60 * 1024..70 * 1024usize).prop_map(RestBody::Padded),
    ];
    (
        method_and_path,
        query,
        0..AUTHS,
        content_type,
        body,
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |((method, path), query, auth, content_type, body, chunked)| RestCase {
                method,
                path,
                query,
                auth,
                content_type,
                body,
                chunked,
            },
        )
}

/// Callers: none, alice, bob, an admin, an expired token, garbage.
const AUTHS: usize = 6;

fn authorization(index: usize) -> Option<String> {
    match index {
        0 => None,
        1 => Some(token("alice")),
        2 => Some(token("bob")),
        3 => Some(admin()),
        4 => Some(expired("alice")),
        _ => Some(format!("{SECRET}.not.a.jwt")),
    }
    .map(|t| format!("Bearer {t}"))
}

impl RestCase {
    fn target(&self, call: Uuid) -> String {
        let mut target = spell(&self.path, call);
        if let Some(query) = &self.query {
            let pairs: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", spell(v, call)))
                .collect();
            target.push('?');
            target.push_str(&pairs.join("&"));
        }
        target
    }

    fn body_bytes(&self, call: Uuid) -> Vec<u8> {
        match &self.body {
            RestBody::Empty => Vec::new(),
            RestBody::Json(value) => spell(&value.to_string(), call).into_bytes(),
            RestBody::Bytes(bytes) => bytes.clone(),
            RestBody::Padded(size) => {
                let mut body =
                    br#"{"invitees": ["bob"], "media": "audio", "members": []}"#.to_vec();
                body.resize(*size, b' ');
                body
            }
        }
    }

    /// The whole request as bytes on the wire.
    fn encode(&self, call: Uuid) -> Vec<u8> {
        let body = self.body_bytes(call);
        let auth = authorization(self.auth);
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth));
        }
        if let Some(t) = &self.content_type {
            headers.push(("Content-Type", t));
        }
        if self.chunked {
            headers.push(("Transfer-Encoding", "chunked"));
        }
        let length = (!self.chunked).then_some(body.len());
        let mut bytes = head(self.method, &self.target(call), &headers, length);
        if self.chunked {
            for piece in body.chunks(4096) {
                bytes.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                bytes.extend_from_slice(piece);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"0\r\n\r\n");
        } else {
            bytes.extend_from_slice(&body);
        }
        bytes
    }
}

fn check_rest_response(resp: &Response, what: &str) -> Result<(), TestCaseError> {
    check(resp.status < 500, || format!("{} for {what}", resp.status))?;
    if (200..300).contains(&resp.status) {
        return Ok(());
    }
    let body = resp.json().unwrap_or(Value::Null);
    let code = body["error"]["code"]
        .as_str()
        .and_then(ErrorCode::from_name)
        .ok_or_else(|| {
            TestCaseError::fail(format!(
                "{} without the JSON error body for {what}: {:?}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            ))
        })?;
    check(body["error"]["message"].is_string(), || {
        format!("no message: {body}")
    })?;
    check(code.http_status() == resp.status, || {
        format!("{code} with status {} for {what}", resp.status)
    })?;
    check(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        || format!("{:?} for {what}", resp.headers),
    )
}

struct RestState {
    conn: Option<Conn>,
    /// How often each status answered, for the summary line.
    statuses: BTreeMap<u16, u32>,
    /// The request before, which shares the connection.
    last: String,
    /// The first failure, before shrinking replays cases on other connections.
    first_failure: Option<String>,
    call: Option<Uuid>,
    sent: u32,
    refused: u32,
    reconnects: u32,
}

#[test]
fn random_requests_at_every_route_get_json_errors_and_no_reset() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = TestDb::sqlite();
    // --dev, so that the dev token route is one of the routes.
    let server = rt.block_on(TestServer::start_with(&db, |s| s.dev = true));
    let addr: SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    rt.block_on(server.conversation("team", &["alice", "bob"]));
    let state = Mutex::new(RestState {
        conn: None,
        statuses: BTreeMap::new(),
        last: String::new(),
        first_failure: None,
        call: None,
        sent: 0,
        refused: 0,
        reconnects: 0,
    });

    let result = runner(REST_CASES).run(&rest_case(), |case| {
        let outcome = rt.block_on(async {
            let mut st = state.lock().await;
            st.sent += 1;
            let call = ensure_call(&server, st.call).await;
            st.call = Some(call);
            if st.conn.is_none() {
                st.reconnects += 1;
                st.conn = Some(Conn::connect(addr).await.expect("connects"));
            }
            let what = format!("{} {}", case.method, case.target(call));
            let last = std::mem::replace(&mut st.last, format!("{case:?}"));
            let conn = st.conn.as_mut().expect("a connection");
            conn.writer
                .write_all(&case.encode(call))
                .await
                .map_err(|e| TestCaseError::fail(format!("sending {what}: {e}")))?;
            let resp = conn.reader.response(false).await.map_err(|e| {
                TestCaseError::fail(format!(
                    "no response to {what}: {e}; the request before: {last}"
                ))
            })?;
            if resp.closes() {
                let mut conn = st.conn.take().expect("a connection");
                let _ = conn.writer.shutdown().await;
                conn.reader
                    .until_closed()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{what}: not a clean close: {e}")))?;
            }
            if !(200..300).contains(&resp.status) {
                st.refused += 1;
            }
            *st.statuses.entry(resp.status).or_default() += 1;
            check_rest_response(&resp, &what)
        });
        if let Err(e) = &outcome {
            let mut st = state.blocking_lock();
            // A failed exchange may leave the connection unusable for the cases after it.
            st.conn = None;
            st.first_failure.get_or_insert_with(|| e.to_string());
        }
        outcome
    });
    let st = state.into_inner();
    println!(
        "REST property: {} random requests ({REST_CASES} cases), {} refused, on {} connections, statuses {:?}",
        st.sent, st.refused, st.reconnects, st.statuses
    );
    if let Err(e) = result {
        panic!("{e}\nfirst failure: {:?}", st.first_failure);
    }
    // Still serving after all of that.
    let mut conn = rt.block_on(Conn::connect(addr)).unwrap();
    let health = rt
        .block_on(conn.request("GET", "/healthz", &[], b""))
        .unwrap();
    assert_eq!(health.status, 200);
    rt.block_on(server.stop());
}
