//! A WebSocket signaling client for tests: requests with ids, and events awaited by type.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use super::server::TestServer;

/// How long a test waits for a frame it expects before failing.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames received while waiting for something else.
    pending: VecDeque<Value>,
    next_id: u64,
    pub closed: Option<(u16, String)>,
}

impl WsClient {
    /// The returned future owns what it needs, so many connects can run at once.
    pub fn connect(server: &TestServer, token: &str) -> impl Future<Output = WsClient> + use<> {
        Self::connect_url(&server.base, token)
    }

    /// Connects to the server at `base` (`http://HOST:PORT`), in-process or not.
    pub fn connect_url(base: &str, token: &str) -> impl Future<Output = WsClient> + use<> {
        let url = format!("{}/ws?token={token}", base.replacen("http", "ws", 1));
        async move {
            let (stream, _) = connect_async(url).await.expect("websocket connects");
            WsClient {
                stream,
                pending: VecDeque::new(),
                next_id: 1,
                closed: None,
            }
        }
    }

    pub async fn send_text(&mut self, text: String) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("frame sent");
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// Sends `type`/`data` with a fresh id and returns the matching `ack` or `error` frame.
    pub async fn request(&mut self, kind: &str, data: Value) -> Value {
        let id = format!("r{}", self.next_id);
        self.next_id += 1;
        self.send(json!({"id": id, "type": kind, "data": data}))
            .await;
        self.wait_for(|f| f["id"] == id.as_str())
            .await
            .unwrap_or_else(|| panic!("no answer to {kind} {id}"))
    }

    /// Like `request` but asserts an `ack` and returns its data.
    pub async fn ok(&mut self, kind: &str, data: Value) -> Value {
        let frame = self.request(kind, data).await;
        assert_eq!(frame["type"], "ack", "{kind}: {frame}");
        frame["data"].clone()
    }

    /// Starts a call over the socket and returns its id.
    pub async fn start_call(&mut self, body: Value) -> String {
        let data = self.ok("call:initiate", body).await;
        data["call"]["id"].as_str().expect("call id").to_owned()
    }

    /// The data of the next event of this type (earlier frames of other types are kept).
    pub async fn event(&mut self, kind: &str) -> Value {
        let frame = self
            .wait_for(|f| f["type"] == kind)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "no {kind} event within {WAIT:?}; pending: {:?}",
                    self.pending
                )
            });
        frame["data"].clone()
    }

    /// The data of the next event of this type about this call.
    pub async fn event_for(&mut self, kind: &str, call_id: &str) -> Value {
        let frame = self
            .wait_for(|f| f["type"] == kind && f["data"]["call_id"] == call_id)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "no {kind} event for {call_id} within {WAIT:?}; pending: {:?}",
                    self.pending
                )
            });
        frame["data"].clone()
    }

    /// True if an event of this type arrives within `within`.
    pub async fn gets(&mut self, kind: &str, within: Duration) -> bool {
        self.wait_for_within(|f| f["type"] == kind, within)
            .await
            .is_some()
    }

    pub async fn wait_for(&mut self, matches: impl Fn(&Value) -> bool) -> Option<Value> {
        self.wait_for_within(matches, WAIT).await
    }

    pub async fn wait_for_within(
        &mut self,
        matches: impl Fn(&Value) -> bool,
        within: Duration,
    ) -> Option<Value> {
        if let Some(pos) = self.pending.iter().position(&matches) {
            return self.pending.remove(pos);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??;
            match next {
                Ok(Message::Text(text)) => {
                    let value: Value = serde_json::from_str(&text).expect("server sends JSON");
                    if matches(&value) {
                        return Some(value);
                    }
                    self.pending.push_back(value);
                }
                Ok(Message::Close(frame)) => {
                    self.closed = Some(
                        frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new())),
                    );
                    return None;
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Waits until the server closes the socket; returns the close code.
    pub async fn closed_with(&mut self) -> Option<u16> {
        if self.closed.is_none() {
            self.wait_for(|_| false).await;
        }
        self.closed.as_ref().map(|(code, _)| *code)
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}
