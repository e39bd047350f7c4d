//! The enqueue task: turns queued events into outbox rows, one per receiver URL, in the order
//! they were queued.
//!
//! Batches are written in one transaction each and retried with backoff while the store is
//! down, holding everything behind them, so the outbox order is the queue order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::event::WebhookEvent;
use crate::store::{NewOutboxRow, Store};

/// Events written in one transaction, at most.
const BATCH: usize = 256;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) enum Command {
    Event(Box<WebhookEvent>),
    /// Answered once every event queued before it is in the outbox.
    Flush(oneshot::Sender<()>),
}

pub(super) async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Command>,
    urls: Vec<String>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut commands = Vec::with_capacity(BATCH);
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut commands, BATCH) => n,
            _ = stop.changed() => 0,
        };
        if received == 0 {
            return;
        }
        let mut rows = Vec::new();
        let mut flushes = Vec::new();
        for command in commands.drain(..) {
            match command {
                Command::Event(event) => {
                    let body = event.body();
                    rows.extend(urls.iter().map(|url| NewOutboxRow {
                        event_id: event.id,
                        url: url.clone(),
                        call_id: event.call_id,
                        body: body.clone(),
                        created_at: event.created_at,
                    }));
                }
                Command::Flush(done) => flushes.push(done),
            }
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match store.insert_outbox_rows(&rows).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "queueing webhooks failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if !rows.is_empty() {
            wake.notify_one();
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}
