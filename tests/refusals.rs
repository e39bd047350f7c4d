//! Every refusal of the REST server is the contract's JSON error (section 3), whatever refused
//! the request, and a refusal sent before the body was read neither resets the connection nor
//! spoils the next request on it. Spoken over raw TCP, so that nothing normalises the requests.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use confab_signaling::ErrorCode;
use support::db::TestDb;
use support::http1::{Conn, Response, head};
use support::server::{TestServer, admin, token};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

async fn server() -> (TestDb, TestServer, SocketAddr) {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let addr = server.base.trim_start_matches("http://").parse().unwrap();
    (db, server, addr)
}

/// Asserts the contract's error body with `code`, and the HTTP status that code maps to.
#[track_caller]
fn assert_error(resp: &Response, code: &str, what: &str) {
    let body = resp.json().unwrap_or_else(|| {
        panic!(
            "{what}: not JSON: {:?}",
            String::from_utf8_lossy(&resp.body)
        )
    });
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
    let expected = ErrorCode::from_name(code).unwrap().http_status();
    assert_eq!(resp.status, expected, "{what}: {body}");
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{what}: {:?}",
        resp.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_extractor_refusal_is_a_json_error() {
    let (_db, server, addr) = server().await;
    let alice = format!("Bearer {}", token("alice"));
    let admin = format!("Bearer {}", admin());
    let auth = [("Authorization", alice.as_str())];
    let admin_auth = [("Authorization", admin.as_str())];
    let mut conn = Conn::connect(addr).await.unwrap();

    // Path segments that are not UTF-8 once decoded, or not ids at all.
    for (method, target) in [
        ("GET", "/api/v1/conversations/%ff"),
        ("GET", "/api/v1/conversations/%c3%28/active-call"),
        ("DELETE", "/api/v1/conversations/%ff%fe"),
        ("GET", "/api/v1/conversations/a%20b"),
        ("GET", "/api/v1/calls/%ff"),
        ("POST", "/api/v1/calls/%ed%a0%80/accept"),
        ("GET", "/api/v1/calls/not-a-uuid/quality"),
        ("PATCH", "/api/v1/calls/%ff/media"),
    ] {
        let resp = conn.request(method, target, &auth, b"").await.unwrap();
        assert_error(&resp, "INVALID_ARGUMENT", target);
    }
    let resp = conn
        .request(
            "PUT",
            "/api/v1/conversations/%ff",
            &admin_auth,
            br#"{"members":[]}"#,
        )
        .await
        .unwrap();
    assert_error(&resp, "INVALID_ARGUMENT", "PUT a non-UTF-8 conversation id");

    // Query strings.
    for target in [
        "/api/v1/calls?limit=%ff",
        "/api/v1/calls?status=%ff%fe",
        "/api/v1/calls?limit=1&limit=2",
        "/api/v1/calls/stats?timeframe=%00",
    ] {
        let resp = conn.request("GET", target, &auth, b"").await.unwrap();
        assert_error(&resp, "INVALID_ARGUMENT", target);
    }

    // JSON bodies, and their declared type.
    let call = br#"{"invitees": ["bob"], "media": "audio"}"#;
    for (what, content_type, body) in [
        ("truncated JSON", Some("application/json"), &b"{"[..]),
        ("not UTF-8", Some("application/json"), &b"\xff\xfe"[..]),
        (
            "a multipart form",
            Some("multipart/form-data; boundary=x"),
            &call[..],
        ),
        ("text", Some("text/plain"), &call[..]),
        ("a bad header value", Some("json"), &call[..]),
    ] {
        let mut headers = auth.to_vec();
        if let Some(t) = content_type {
            headers.push(("Content-Type", t));
        }
        let resp = conn
            .request("POST", "/api/v1/calls", &headers, body)
            .await
            .unwrap();
        assert_error(&resp, "INVALID_ARGUMENT", what);
    }
    let resp = conn
        .request("POST", "/api/v1/calls", &auth, &vec![b' '; 64 * 1024 + 1])
        .await
        .unwrap();
    assert_error(&resp, "PAYLOAD_TOO_LARGE", "a body over 64 KiB");
    assert!(resp.closes(), "{:?}", resp.headers);

    drop(conn);

    // JSON types with parameters, no type at all, and what `curl -d` sends are read as JSON.
    let mut conn = Conn::connect(addr).await.unwrap();
    let carol = format!("Bearer {}", token("carol"));
    let frank = format!("Bearer {}", token("frank"));
    for (caller, content_type) in [
        (&alice, Some("application/json; charset=utf-8")),
        (&carol, None),
        (&frank, Some("application/x-www-form-urlencoded")),
    ] {
        let mut headers = vec![("Authorization", caller.as_str())];
        if let Some(t) = content_type {
            headers.push(("Content-Type", t));
        }
        let resp = conn
            .request("POST", "/api/v1/calls", &headers, call)
            .await
            .unwrap();
        assert_eq!(resp.status, 201, "{content_type:?}: {:?}", resp.json());
    }
    // An empty optional body is fine whatever its declared type.
    let dave = format!("Bearer {}", token("dave"));
    let resp = conn
        .request(
            "POST",
            "/api/v1/calls",
            &[("Authorization", dave.as_str())],
            br#"{"invitees": ["erin"], "media": "audio"}"#,
        )
        .await
        .unwrap();
    let call_id = resp.json().unwrap()["call"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = conn
        .request(
            "POST",
            &format!("/api/v1/calls/{call_id}/end"),
            &[
                ("Authorization", dave.as_str()),
                ("Content-Type", "text/plain"),
            ],
            b"",
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{:?}", resp.json());

    // Unknown routes and methods a route does not have.
    for (method, target) in [
        ("GET", "/api/v1/no-such-route"),
        ("GET", "/api/v2/calls"),
        ("GET", "/%ff"),
        ("DELETE", "/api/v1/calls"),
        ("POST", "/healthz"),
        ("PURGE", "/api/v1/calls/stats"),
        ("PUT", "/metrics"),
    ] {
        let resp = conn.request(method, target, &auth, b"").await.unwrap();
        assert_error(&resp, "NOT_FOUND", &format!("{method} {target}"));
    }

    // The WebSocket route without a token, and with one but no upgrade.
    let resp = conn.request("GET", "/ws", &[], b"").await.unwrap();
    assert_error(&resp, "UNAUTHENTICATED", "/ws without a token");
    let resp = conn
        .request("GET", &format!("/ws?token={}", token("alice")), &[], b"")
        .await
        .unwrap();
    assert_error(&resp, "INVALID_ARGUMENT", "/ws without an upgrade");
    // A connection left open would hold the shutdown for its lingering close.
    drop(conn);
    server.stop().await;
}

/// Sends `body` in chunks with pauses on its own task while the response is read, as a client
/// that streams an upload does; returns the response and how the sending ended.
async fn send_slowly(
    conn: &mut Conn,
    request_head: Vec<u8>,
    body: Vec<u8>,
    chunked: bool,
) -> (std::io::Result<Response>, std::io::Result<OwnedWriteHalf>) {
    let writer = std::mem::replace(&mut conn.writer, dummy_writer().await);
    let sending = tokio::spawn(async move {
        let mut writer = writer;
        writer.write_all(&request_head).await?;
        for piece in body.chunks(8 * 1024) {
            if chunked {
                writer
                    .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                writer.write_all(piece).await?;
                writer.write_all(b"\r\n").await?;
            } else {
                writer.write_all(piece).await?;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if chunked {
            writer.write_all(b"0\r\n\r\n").await?;
        }
        Ok(writer)
    });
    let response = conn.reader.response(false).await;
    let sent = sending.await.expect("sender task");
    (response, sent)
}

/// A placeholder for the write half while the real one is lent to a sending task.
async fn dummy_writer() -> OwnedWriteHalf {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    stream.into_split().1
}

/// A valid JSON body of `size` bytes, so that only the refusal under test applies.
fn padded_json(size: usize) -> Vec<u8> {
    let mut body = br#"{"members": [], "invitees": ["bob"], "media": "audio"}"#.to_vec();
    body.resize(size, b' ');
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_before_its_body_was_read_keeps_the_connection() {
    let (_db, server, addr) = server().await;
    let alice = format!("Bearer {}", token("alice"));
    let refusals = [
        ("POST", "/api/v1/calls", None, "UNAUTHENTICATED"),
        (
            "PUT",
            "/api/v1/conversations/team",
            Some(alice.as_str()),
            "FORBIDDEN",
        ),
        ("POST", "/api/v1/nowhere", Some(alice.as_str()), "NOT_FOUND"),
        ("PATCH", "/api/v1/calls", Some(alice.as_str()), "NOT_FOUND"),
        (
            "POST",
            "/api/v1/calls/not-a-uuid/end",
            Some(alice.as_str()),
            "INVALID_ARGUMENT",
        ),
    ];
    // Up to the limit exactly: every such body is read, so the connection serves on.
    for size in [1024, 60 * 1024, 64 * 1024] {
        for (method, target, auth, code) in refusals {
            let mut conn = Conn::connect(addr).await.unwrap();
            let headers: Vec<(&str, &str)> = auth
                .map(|a| vec![("Authorization", a), ("Content-Type", "application/json")])
                .unwrap_or_default();
            let what = format!("{method} {target} with {size} bytes");
            let (resp, sent) = send_slowly(
                &mut conn,
                head(method, target, &headers, Some(size)),
                padded_json(size),
                false,
            )
            .await;
            let resp = resp.unwrap_or_else(|e| panic!("{what}: {e}"));
            let writer = sent.unwrap_or_else(|e| panic!("{what}: sending failed: {e}"));
            assert_error(&resp, code, &what);
            assert!(!resp.closes(), "{what}: {:?}", resp.headers);
            conn.writer = writer;
            let next = conn
                .request("GET", "/healthz", &[], b"")
                .await
                .unwrap_or_else(|e| panic!("{what}: the next request failed: {e}"));
            assert_eq!(next.status, 200, "{what}");
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_answered_before_its_body_keeps_the_connection() {
    let (_db, server, addr) = server().await;
    let mut conn = Conn::connect(addr).await.unwrap();
    let headers = [
        ("Origin", "https://app.example"),
        ("Access-Control-Request-Method", "POST"),
    ];
    let (resp, sent) = send_slowly(
        &mut conn,
        head("OPTIONS", "/api/v1/calls", &headers, Some(60 * 1024)),
        vec![b' '; 60 * 1024],
        false,
    )
    .await;
    let resp = resp.unwrap();
    assert_eq!(resp.status, 200, "{:?}", resp.headers);
    assert!(resp.header("access-control-allow-methods").is_some());
    conn.writer = sent.unwrap();
    let next = conn.request("GET", "/healthz", &[], b"").await.unwrap();
    assert_eq!(next.status, 200);

    drop(conn);

    // Over the limit, the 413 still carries the CORS headers a browser needs to read it.
    let mut conn = Conn::connect(addr).await.unwrap();
    let resp = conn
        .request(
            "POST",
            "/api/v1/calls",
            &[("Origin", "https://app.example")],
            &vec![b' '; 70 * 1024],
        )
        .await
        .unwrap();
    assert_error(
        &resp,
        "PAYLOAD_TOO_LARGE",
        "a cross-origin body over the limit",
    );
    assert!(
        resp.header("access-control-allow-origin").is_some(),
        "{:?}",
        resp.headers
    );
    // A connection left open would hold the shutdown for its lingering close.
    drop(conn);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_413_and_a_clean_close() {
    let (_db, server, addr) = server().await;
    let alice = format!("Bearer {}", token("alice"));
    let cases = [
        ("POST", "/api/v1/calls", Some(alice.as_str())),
        ("POST", "/api/v1/calls", None),
        ("PUT", "/api/v1/conversations/team", Some(alice.as_str())),
        ("POST", "/api/v1/nowhere", None),
    ];
    for size in [64 * 1024 + 1, 100 * 1024, 1024 * 1024] {
        for chunked in [false, true] {
            for (method, target, auth) in cases {
                let mut conn = Conn::connect(addr).await.unwrap();
                let mut headers: Vec<(&str, &str)> =
                    auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
                if chunked {
                    headers.push(("Transfer-Encoding", "chunked"));
                }
                let what = format!("{method} {target} with {size} bytes, chunked {chunked}");
                let length = (!chunked).then_some(size);
                let (resp, sent) = send_slowly(
                    &mut conn,
                    head(method, target, &headers, length),
                    vec![b'x'; size],
                    chunked,
                )
                .await;
                let resp = resp.unwrap_or_else(|e| panic!("{what}: no response: {e}"));
                assert_error(&resp, "PAYLOAD_TOO_LARGE", &what);
                assert!(resp.closes(), "{what}: {:?}", resp.headers);
                // The server kept reading while the client sent: no broken pipe, and once
                // the client is done, a FIN rather than a reset.
                let mut writer = sent.unwrap_or_else(|e| panic!("{what}: sending failed: {e}"));
                writer.shutdown().await.unwrap();
                conn.reader
                    .until_closed()
                    .await
                    .unwrap_or_else(|e| panic!("{what}: not a clean close: {e}"));
            }
        }
    }
    let (status, body) = server.get("/healthz", &token("alice")).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_fault_is_internal_and_says_only_what_failed() {
    let (_db, server, addr) = server().await;
    let alice = format!("Bearer {}", token("alice"));
    let auth = [("Authorization", alice.as_str())];
    // The store stops answering, as a database that went away would.
    server.state.store.close().await;
    let mut conn = Conn::connect(addr).await.unwrap();
    for target in [
        "/api/v1/calls".to_owned(),
        format!("/api/v1/calls/{}", uuid::Uuid::new_v4()),
        "/api/v1/conversations/team".to_owned(),
    ] {
        let resp = conn.request("GET", &target, &auth, b"").await.unwrap();
        assert_error(&resp, "INTERNAL", &target);
        let message = resp.json().unwrap()["error"]["message"].clone();
        assert_eq!(message, "the history store is unavailable", "{target}");
    }
    // A connection left open would hold the shutdown for its lingering close.
    drop(conn);
    server.stop().await;
}
