//! Webhooks (contract section 9): call events POSTed, signed, to every configured URL, at
//! least once, in order per call, off the call path.
//!
//! The path of an event:
//! 1. The call service hands each transition to [`Webhooks::call_changed`] under the call
//!    book's lock, so events enter in decision order. That only turns the change into events
//!    and `try_send`s them on a bounded channel: the call path never waits on the store or the
//!    network. When the channel is full the event is dropped, logged and counted
//!    (`result="dropped"`), as the history writer drops what it cannot queue; at its capacity
//!    that means the store has been unreachable for a long while.
//! 2. One enqueue task ([`enqueue`]) writes the events into the outbox table, one row per
//!    event and URL, in channel order, retrying while the store is down. From then on a
//!    restart loses nothing.
//! 3. The delivery task ([`deliver`]) sends the head of every (call, URL) queue and deletes
//!    a row once its receiver answered 2xx, or retries it with backoff until it is an hour old.

mod deliver;
mod enqueue;
pub mod event;
pub mod sign;

use std::sync::Arc;
use std::time::Duration;

use confab_signaling::Call;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use deliver::Deliverer;
pub use deliver::{REQUEST_TIMEOUT, RetrySchedule};
use enqueue::Command;
use event::events_of_change;

use crate::calls::now_ms;
use crate::metrics::Metrics;
use crate::store::Store;

/// Events waiting to be written to the outbox, at most.
const QUEUE_CAPACITY: usize = 16 * 1024;
/// How often [`Webhooks::flush`] looks whether the outbox has emptied.
const FLUSH_POLL: Duration = Duration::from_millis(100);

/// Where events go and how they are signed and retried.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub urls: Vec<String>,
    pub secret: String,
    pub retry: RetrySchedule,
}

#[derive(Debug, thiserror::Error)]
#[error("webhook HTTP client: {0}")]
pub struct WebhookError(#[from] reqwest::Error);

/// What [`Webhooks::flush`] achieved by its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    /// Every event queued before the flush is in the outbox.
    pub persisted: bool,
    /// Rows still waiting for a receiver (delivered after the next start); `None` if the
    /// store could not say.
    pub pending: Option<i64>,
}

/// A handle to the webhook tasks; cheap to clone. Without URLs it does nothing.
#[derive(Clone)]
pub struct Webhooks {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: mpsc::Sender<Command>,
    urls: usize,
    store: Store,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
}

impl Webhooks {
    /// Webhooks turned off: every method returns at once.
    pub fn disabled() -> Webhooks {
        Webhooks { inner: None }
    }

    /// Starts the enqueue and delivery tasks; [`Self::disabled`] when `config` has no URL.
    pub fn start(
        config: Option<WebhookConfig>,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Result<Webhooks, WebhookError> {
        let Some(config) = config.filter(|c| !c.urls.is_empty()) else {
            return Ok(Webhooks::disabled());
        };
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (stop, stopped) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let deliverer = Arc::new(Deliverer {
            store: store.clone(),
            client: deliver::client()?,
            secret: config.secret.into_bytes(),
            schedule: config.retry,
            metrics: metrics.clone(),
        });
        tokio::spawn(enqueue::run(
            store.clone(),
            rx,
            config.urls.clone(),
            wake.clone(),
            stopped.clone(),
        ));
        tokio::spawn(deliver::run(deliverer, wake, stopped));
        tracing::info!(urls = config.urls.len(), "webhooks enabled");
        Ok(Webhooks {
            inner: Some(Arc::new(Inner {
                tx,
                urls: config.urls.len(),
                store,
                metrics,
                stop,
            })),
        })
    }

    /// Queues the events of one call transition. Never waits: call it under the lock that
    /// orders the transitions, and the events of a call keep that order.
    pub fn call_changed(&self, before: Option<&Call>, after: &Call) {
        let Some(inner) = &self.inner else {
            return;
        };
        for event in events_of_change(before, after, now_ms()) {
            if let Err(e) = inner.tx.try_send(Command::Event(Box::new(event))) {
                let event = match e {
                    mpsc::error::TrySendError::Full(Command::Event(event))
                    | mpsc::error::TrySendError::Closed(Command::Event(event)) => Some(event),
                    _ => None,
                };
                tracing::warn!(
                    event_id = ?event.as_ref().map(|e| e.id),
                    call_id = %after.id,
                    "webhook queue full or closed; dropping the event"
                );
                inner
                    .metrics
                    .webhook_deliveries_total
                    .with_label_values(&["dropped"])
                    .inc_by(inner.urls as u64);
            }
        }
    }

    /// For shutdown: writes every event queued so far into the outbox, then waits for the
    /// receivers to take what is due, until `deadline`. Whatever is still waiting then stays in
    /// the outbox and is delivered after the next start. Call [`Self::stop`] afterwards.
    pub async fn flush(&self, deadline: Instant) -> FlushReport {
        let Some(inner) = &self.inner else {
            return FlushReport {
                persisted: true,
                pending: Some(0),
            };
        };
        let (done, written) = oneshot::channel();
        let persisted = tokio::time::timeout_at(deadline, async {
            inner.tx.send(Command::Flush(done)).await.is_ok() && written.await.is_ok()
        })
        .await
        .unwrap_or(false);
        let mut pending = None;
        loop {
            pending = inner.store.outbox_len().await.ok().or(pending);
            if pending == Some(0) || Instant::now() + FLUSH_POLL > deadline {
                break;
            }
            tokio::time::sleep(FLUSH_POLL).await;
        }
        FlushReport { persisted, pending }
    }

    /// Stops both tasks. Attempts in flight are abandoned and made again after the next start.
    pub fn stop(&self) {
        if let Some(inner) = &self.inner {
            let _ = inner.stop.send(true);
        }
    }
}
