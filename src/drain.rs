//! Draining (contract section 10): the node stops taking calls, lets the live ones end, ends
//! what is left with reason `drained`, closes every WebSocket with 1001 and flushes its history.
//!
//! [`Drain`] is the state every part consults (new calls refused, `/readyz` 503, WebSocket
//! upgrades refused once the sockets were closed); [`start`] runs the sequence once, whoever
//! asks first: SIGTERM or `POST /api/v1/admin/drain`. Stopping the process afterwards (media
//! workers, the history writer's task, the HTTP server) is the server's part, in `app`.

use std::time::Duration;

use confab_signaling::{ErrorCode, SignalingError};
use prometheus::IntGauge;
use tokio::sync::watch;

use crate::app::AppState;

/// How far a node has drained; phases only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Taking calls.
    Serving,
    /// No new calls; the live ones may still be joined and end by themselves.
    Draining,
    /// The calls are over and the sockets are being closed: no new sockets either.
    ClosingSockets,
    /// Everything above is done and the history is flushed.
    Drained,
}

/// How long closed sockets get to say goodbye (the client's close frame) before the drain
/// moves on without them.
const SOCKETS_CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How long the drain offers queued webhooks to their receivers before it moves on (they stay
/// in the outbox either way).
const WEBHOOK_FLUSH_WAIT: Duration = Duration::from_secs(5);
/// How long the history writer gets to write what is queued, at the drain and again at exit.
pub const HISTORY_FLUSH_WAIT: Duration = Duration::from_secs(10);
/// How often the drain looks whether the live calls have ended by themselves.
const CALLS_POLL: Duration = Duration::from_millis(100);

pub struct Drain {
    phase: watch::Sender<Phase>,
    /// `confab_node_draining`.
    gauge: IntGauge,
}

impl Drain {
    pub fn new(gauge: IntGauge) -> Drain {
        gauge.set(0);
        Drain {
            phase: watch::Sender::new(Phase::Serving),
            gauge,
        }
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// True from the moment the drain begins; the node never takes calls again.
    pub fn is_draining(&self) -> bool {
        self.phase() >= Phase::Draining
    }

    /// New sockets are welcome until the drain closes them all.
    pub fn accepts_sockets(&self) -> bool {
        self.phase() < Phase::ClosingSockets
    }

    /// `UNAVAILABLE` for a new call on a draining node. Checked under the call book's lock, so
    /// no call can start after the drain ended the live ones.
    pub fn refuse_new_call(&self) -> Result<(), SignalingError> {
        if self.is_draining() {
            Err(SignalingError::new(
                ErrorCode::Unavailable,
                "this node is draining and takes no new calls; retry on another node",
            ))
        } else {
            Ok(())
        }
    }

    /// Waits until the drain sequence has run to its end.
    pub async fn finished(&self) {
        let mut phase = self.phase.subscribe();
        // The sender lives in `self`, so the wait ends only with the phase.
        let _ = phase.wait_for(|p| *p == Phase::Drained).await;
    }

    /// Moves to `Draining`; false if the node already was.
    fn begin(&self) -> bool {
        let begun = self.phase.send_if_modified(|phase| {
            if *phase == Phase::Serving {
                *phase = Phase::Draining;
                true
            } else {
                false
            }
        });
        if begun {
            self.gauge.set(1);
        }
        begun
    }

    fn advance(&self, to: Phase) {
        self.phase.send_if_modified(|phase| {
            let later = to > *phase;
            if later {
                *phase = to;
            }
            later
        });
    }
}

/// Starts draining the node and runs the sequence in the background; false (and nothing new
/// happens) when a drain is already under way or done.
pub fn start(state: &AppState) -> bool {
    if !state.drain.begin() {
        return false;
    }
    tokio::spawn(run(state.clone()));
    true
}

async fn run(state: AppState) {
    let timeout = state.settings.drain_timeout;
    let live = state.calls.live_call_count();
    tracing::info!(
        calls = live,
        timeout_s = timeout.as_secs_f64(),
        "draining: no new calls; waiting for the live calls to end"
    );
    let deadline = tokio::time::Instant::now() + timeout;
    while state.calls.live_call_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(CALLS_POLL.min(deadline - tokio::time::Instant::now())).await;
    }
    let ended = state.calls.end_drained_calls().await;
    if ended > 0 {
        tracing::info!(calls = ended, "drain timeout passed: calls ended (drained)");
    }

    state.drain.advance(Phase::ClosingSockets);
    let sockets = state.hub.close_all_going_away();
    let closed = wait_until(SOCKETS_CLOSE_WAIT, || state.hub.socket_count() == 0).await;
    if !closed {
        tracing::warn!(
            open = state.hub.socket_count(),
            "sockets still open after their close frame; moving on"
        );
    }
    tracing::info!(sockets, "every WebSocket was sent close 1001");

    // Webhooks: after the calls ended, so their final events are queued; written to the
    // outbox (and offered to the receivers for a moment), so a restart delivers what is left.
    let flushed = state
        .webhooks
        .flush(tokio::time::Instant::now() + WEBHOOK_FLUSH_WAIT)
        .await;
    if !flushed.persisted {
        tracing::error!(?flushed, "webhooks not all written to the store");
    } else if flushed.pending.is_some_and(|n| n > 0) {
        tracing::info!(?flushed, "webhooks left in the outbox for later delivery");
    }

    match state.writer.flush(HISTORY_FLUSH_WAIT).await {
        Ok(()) => tracing::info!("history flushed"),
        Err(e) => tracing::error!(lost = e.pending, "history flush incomplete: {e}"),
    }
    state.drain.advance(Phase::Drained);
    tracing::info!("drained");
}

/// Polls `done` until it holds or `within` passes; returns whether it held.
async fn wait_until(within: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(CALLS_POLL).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_only_move_forward_and_the_gauge_follows() {
        let gauge = IntGauge::new("t_draining", "test").unwrap();
        let drain = Drain::new(gauge.clone());
        assert!(drain.refuse_new_call().is_ok());
        assert!(drain.accepts_sockets());
        assert!(drain.begin());
        assert!(!drain.begin(), "one drain at a time");
        assert_eq!(gauge.get(), 1);
        let e = drain.refuse_new_call().unwrap_err();
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(drain.accepts_sockets(), "sockets still reach live calls");
        drain.advance(Phase::Drained);
        drain.advance(Phase::ClosingSockets);
        assert_eq!(drain.phase(), Phase::Drained);
        assert!(!drain.accepts_sockets());
        drain.finished().await;
    }
}
