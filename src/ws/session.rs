//! One WebSocket: a reader that handles requests in order, and a writer that drains the
//! socket's queue, pings, and closes.
//!
//! Requests are handled one at a time so that a client's operations apply in the order it
//! sent them; their answers go through the same queue as events, so an `ack` never overtakes
//! an event that was caused before it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use confab_signaling::protocol::{self, ClientRequest, Incoming};
use confab_signaling::{Actor, ErrorCode, SignalingError};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, interval_at};

use super::MAX_MESSAGE_BYTES;
use super::dispatch;
use crate::app::AppState;
use crate::delivery::{Frame, Kick, Registration};

/// The server pings this often (contract: 20 s).
const PING_EVERY: Duration = Duration::from_secs(20);
/// A socket silent this long (no frame at all, pongs included) is closed (contract: 60 s).
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// Requests per second a socket may sustain, and the burst it may spend at once.
const RATE_PER_S: f64 = 20.0;
const RATE_BURST: f64 = 40.0;

/// RFC 6455 close codes used here.
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_TRY_LATER: u16 = 1013;

/// A socket's place in the hub, taken before the upgrade is answered: a client that has seen
/// its `101 Switching Protocols` is online, so a call started right then rings it. Events for
/// it queue until its session starts. Dropping the seat (the session ended, or the upgrade
/// never completed) takes the socket out of the hub again.
pub struct Seat {
    state: AppState,
    actor: Actor,
    id: u64,
    /// Taken by the session when it starts.
    queue: Option<(mpsc::Receiver<Frame>, watch::Receiver<Kick>)>,
}

impl Seat {
    pub fn take(state: AppState, actor: Actor) -> Seat {
        let Registration { id, frames, kicked } =
            state.calls.register_socket(actor.user_id.as_str());
        tracing::debug!(user = %actor.user_id, socket = id, "socket registered");
        // The drain closed every socket it saw; one that registered meanwhile goes too.
        if !state.drain.accepts_sockets() {
            state.hub.close_going_away(actor.user_id.as_str(), id);
        }
        Seat {
            state,
            actor,
            id,
            queue: Some((frames, kicked)),
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let user = &self.actor.user_id;
        if let Some(epoch) = self.state.hub.unregister(user.as_str(), self.id) {
            // The disconnect grace runs as a task; a runtime shutting down has no need of it.
            if tokio::runtime::Handle::try_current().is_ok() {
                self.state.calls.user_became_absent(user, epoch);
            }
        }
        tracing::debug!(user = %user, socket = self.id, "socket closed");
    }
}

pub async fn run(socket: WebSocket, mut seat: Seat) {
    let Some((frames, kicked)) = seat.queue.take() else {
        return;
    };
    let (sink, stream) = socket.split();
    let (close_tx, close_rx) = mpsc::channel::<CloseFrame>(1);
    let writer = tokio::spawn(write_loop(sink, frames, kicked, close_rx));
    read_loop(stream, &seat.state, &seat.actor, seat.id, close_tx).await;
    // The writer ends once it sent the close frame or its queue was dropped.
    let user = seat.actor.user_id.clone();
    drop(seat);
    let _ = writer.await;
    tracing::trace!(user = %user, "socket writer done");
}

/// Whether a read failed because a frame or message exceeded the transport's cap.
fn is_too_long(e: axum::Error) -> bool {
    e.into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

async fn read_loop(
    mut stream: futures_util::stream::SplitStream<WebSocket>,
    state: &AppState,
    actor: &Actor,
    socket_id: u64,
    close: mpsc::Sender<CloseFrame>,
) {
    let mut bucket = TokenBucket::new(RATE_PER_S, RATE_BURST);
    let reply = |frame: String| {
        let frame: Frame = Arc::from(frame);
        // A socket that is gone has no one left to answer.
        let _ = state
            .hub
            .send_to_socket(actor.user_id.as_str(), socket_id, &frame);
    };
    // The contract's answer to a message over the limit: an `error`, then close code 1009.
    let refuse_oversized = || {
        state
            .metrics
            .record_signaling("oversized", ErrorCode::PayloadTooLarge.as_str());
        reply(protocol::error(
            None,
            &SignalingError::new(
                ErrorCode::PayloadTooLarge,
                format!("message is larger than {} KiB", MAX_MESSAGE_BYTES / 1024),
            ),
        ));
        let _ = close.try_send(close_frame(CLOSE_TOO_BIG, "message too big"));
    };
    loop {
        let message = match tokio::time::timeout(IDLE_LIMIT, stream.next()).await {
            Err(_) => {
                let _ = close.try_send(close_frame(CLOSE_POLICY, "idle for 60 s"));
                return;
            }
            Ok(None) => return,
            // Beyond the transport's own cap the message is never read whole; the reading half
            // is done, but the writing half can still say why.
            Ok(Some(Err(e))) => {
                if is_too_long(e) {
                    refuse_oversized();
                }
                return;
            }
            Ok(Some(Ok(message))) => message,
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                reply(protocol::error(
                    None,
                    &SignalingError::invalid_argument(
                        "binary frames are not supported; send JSON text",
                    ),
                ));
                continue;
            }
            // Any frame counts as activity; tungstenite answers pings by itself.
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return,
        };
        if text.len() > MAX_MESSAGE_BYTES {
            refuse_oversized();
            return;
        }
        let incoming = protocol::parse(text.as_str());
        let type_label = label_for(&incoming);
        if !bucket.take(Instant::now()) {
            state
                .metrics
                .record_signaling(type_label, ErrorCode::RateLimited.as_str());
            reply(protocol::error(
                incoming.id.as_ref(),
                &SignalingError::new(ErrorCode::RateLimited, "too many messages; slow down"),
            ));
            continue;
        }
        let result = match incoming.request {
            Ok(request) => dispatch::handle(state, actor, socket_id, request).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(handled) => {
                state.metrics.record_signaling(type_label, "ok");
                if let Some(id) = &incoming.id {
                    reply(protocol::ack(id, handled.data));
                }
                for frame in &handled.then {
                    let _ = state
                        .hub
                        .send_to_socket(actor.user_id.as_str(), socket_id, frame);
                }
            }
            Err(e) => {
                state.metrics.record_signaling(type_label, e.code.as_str());
                reply(protocol::error(incoming.id.as_ref(), &e));
            }
        }
    }
}

/// Metric label for a message type: known types by name, everything else lumped together so
/// clients cannot mint label values.
fn label_for(incoming: &Incoming) -> &'static str {
    match &incoming.request {
        Ok(request) => request.type_name(),
        Err(_) => match incoming.type_name.as_deref() {
            Some(t) => ClientRequest::known_type(t).unwrap_or("unknown"),
            None => "malformed",
        },
    }
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut frames: mpsc::Receiver<Frame>,
    mut kicked: watch::Receiver<Kick>,
    mut close: mpsc::Receiver<CloseFrame>,
) {
    let mut ping = interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            biased;
            frame = close.recv() => {
                // Flush what is already queued (the error that explains the close) first.
                while let Ok(frame) = frames.try_recv() {
                    if sink.send(Message::Text(Utf8Bytes::from(&*frame))).await.is_err() {
                        return;
                    }
                }
                let frame = frame.unwrap_or_else(|| close_frame(CLOSE_GOING_AWAY, "bye"));
                let _ = sink.send(Message::Close(Some(frame))).await;
                return;
            }
            _ = kicked.changed() => {
                let kick = *kicked.borrow();
                let frame = if kick == Kick::GoingAway {
                    // What was decided before the drain closed the socket (its `call:ended`)
                    // still reaches the client.
                    while let Ok(frame) = frames.try_recv() {
                        if sink.send(Message::Text(Utf8Bytes::from(&*frame))).await.is_err() {
                            return;
                        }
                    }
                    close_frame(CLOSE_GOING_AWAY, "server shutting down")
                } else {
                    close_frame(CLOSE_TRY_LATER, "too slow: event queue overflowed")
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                return;
            }
            frame = frames.recv() => {
                let Some(frame) = frame else { return };
                if sink.send(Message::Text(Utf8Bytes::from(&*frame))).await.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn close_frame(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }
}

/// A token bucket: `rate` requests per second on average, `burst` at once.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 3.0);
        bucket.last = start;
        assert!(bucket.take(start));
        assert!(bucket.take(start));
        assert!(bucket.take(start));
        assert!(!bucket.take(start));
        assert!(bucket.take(start + Duration::from_millis(100)));
        assert!(!bucket.take(start + Duration::from_millis(100)));
    }
}
