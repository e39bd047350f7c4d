//! The bot's WebSocket signaling client.
//!
//! Requests carry ids and resolve with their `ack` or `error`; everything else the server
//! sends is an event, delivered in order on one channel. A reader task owns the socket's
//! receiving half, so events keep flowing while a request is outstanding.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// How long a request waits for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
type Pending = Arc<std::sync::Mutex<HashMap<String, oneshot::Sender<Result<Value, ServerError>>>>>;

/// An `error` answer: the contract's code and message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServerError {
    pub code: String,
    pub message: String,
    pub details: Option<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum SignalingError {
    #[error("websocket: {0}")]
    Transport(#[from] tokio_tungstenite::tungstenite::Error),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("no answer to {0} within {REQUEST_TIMEOUT:?}")]
    Timeout(String),
    #[error("the connection closed")]
    Closed,
}

/// A server event: `type` and `data`.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: String,
    pub data: Value,
}

pub struct SignalingClient {
    sink: Mutex<Sink>,
    pending: Pending,
    next_id: AtomicU64,
    /// The code of the server's close frame, once it sent one (1005 for a frame without code).
    close_code: Arc<std::sync::Mutex<Option<u16>>>,
}

impl SignalingClient {
    /// Connects to `ws://HOST:PORT/ws?token=…` given the server's `http://` base URL.
    pub async fn connect(
        base_url: &str,
        token: &str,
    ) -> Result<(Arc<SignalingClient>, mpsc::UnboundedReceiver<Event>), SignalingError> {
        let url = format!("{}/ws?token={token}", base_url.replacen("http", "ws", 1));
        let (stream, _) = connect_async(url).await?;
        let (sink, mut source) = stream.split();
        let pending: Pending = Arc::default();
        let (events_tx, events) = mpsc::unbounded_channel();
        let readers_pending = pending.clone();
        let close_code = Arc::new(std::sync::Mutex::new(None));
        let readers_close_code = close_code.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = source.next().await {
                let text = match message {
                    Message::Text(text) => text,
                    Message::Close(frame) => {
                        if let Ok(mut code) = readers_close_code.lock() {
                            *code = Some(frame.map_or(1005, |f| u16::from(f.code)));
                        }
                        continue;
                    }
                    _ => continue,
                };
                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let kind = frame["type"].as_str().unwrap_or_default().to_owned();
                let answer = match kind.as_str() {
                    "ack" => Some(Ok(frame["data"].clone())),
                    "error" if frame.get("id").is_some() => Some(Err(ServerError {
                        code: frame["data"]["code"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        message: frame["data"]["message"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        details: frame["data"].get("details").cloned(),
                    })),
                    _ => None,
                };
                match (answer, frame["id"].as_str()) {
                    (Some(answer), Some(id)) => {
                        let waiter = readers_pending.lock().ok().and_then(|mut p| p.remove(id));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(answer);
                        }
                    }
                    _ => {
                        let data = frame["data"].clone();
                        if events_tx.send(Event { kind, data }).is_err() {
                            break;
                        }
                    }
                }
            }
            // Dropping the waiters wakes every outstanding request with `Closed`.
            if let Ok(mut p) = readers_pending.lock() {
                p.clear();
            }
        });
        let client = Arc::new(SignalingClient {
            sink: Mutex::new(sink),
            pending,
            next_id: AtomicU64::new(1),
            close_code,
        });
        Ok((client, events))
    }

    /// Sends a request and waits for its `ack` data.
    pub async fn request(&self, kind: &str, data: Value) -> Result<Value, SignalingError> {
        let id = format!("b{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id.clone(), tx);
        }
        let frame = json!({ "id": id, "type": kind, "data": data }).to_string();
        self.sink
            .lock()
            .await
            .send(Message::Text(frame.into()))
            .await?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(answer)) => Ok(answer?),
            Ok(Err(_)) => Err(SignalingError::Closed),
            Err(_) => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&id);
                }
                Err(SignalingError::Timeout(kind.to_owned()))
            }
        }
    }

    /// The code of the close frame the server sent, if it sent one yet.
    pub fn close_code(&self) -> Option<u16> {
        self.close_code.lock().ok().and_then(|code| *code)
    }

    /// Closes the socket politely.
    pub async fn close(&self) {
        let _ = self.sink.lock().await.close().await;
    }
}
