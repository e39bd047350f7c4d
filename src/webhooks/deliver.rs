//! The delivery task: POSTs the head of every (call, URL) queue of the outbox, and retries
//! with exponential backoff and jitter until the receiver answers 2xx or the event is an
//! hour old.
//!
//! One task owns the scheduling; each attempt runs in a task of its own, so a receiver that
//! hangs holds up only its own queues, for at most the request timeout. The outbox is the only
//! state that matters: a row is deleted once delivered, so an attempt cut short by a restart is
//! simply made again (delivery is at least once).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::sign::{EVENT_ID_HEADER, SIGNATURE_HEADER, signature};
use crate::metrics::Metrics;
use crate::store::{OutboxRow, Store};

/// How long a receiver has to answer one attempt (contract section 9).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts in flight at once, over all receivers.
const MAX_IN_FLIGHT: usize = 64;
/// Queue heads read per scheduling round.
const HEADS_PER_ROUND: i64 = 512;
/// How long the scheduler sleeps with nothing due; new rows wake it earlier.
const IDLE_RESCAN: Duration = Duration::from_secs(30);
/// Wait before reading the outbox again after the store failed.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// When failed attempts are made again: after `base`, doubling up to `cap`, each delay drawn
/// at random from its upper half (jitter, so that receivers coming back are not hit by every
/// queue at once), until `give_up` after the event was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    pub base: Duration,
    pub cap: Duration,
    pub give_up: Duration,
}

impl Default for RetrySchedule {
    /// The contract's: retried for up to an hour.
    fn default() -> Self {
        RetrySchedule {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
            give_up: Duration::from_secs(3600),
        }
    }
}

impl RetrySchedule {
    /// The wait after the `attempts`-th failed attempt (1 for the first).
    pub fn delay(&self, attempts: i64, rng: &mut impl Rng) -> Duration {
        let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let full = self.base.saturating_mul(1 << exponent).min(self.cap);
        full.mul_f64(rng.random_range(0.5..=1.0))
    }
}

/// What the delivery task needs, shared by every attempt.
pub(super) struct Deliverer {
    pub store: Store,
    pub client: reqwest::Client,
    pub secret: Vec<u8>,
    pub schedule: RetrySchedule,
    pub metrics: Arc<Metrics>,
}

/// The HTTP client: no redirects (a 3xx is not a 2xx), the contract's timeout per attempt.
pub(super) fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Confab-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Schedules attempts until `stop` turns true. `wake` is notified when rows are added.
pub(super) async fn run(
    deliverer: Arc<Deliverer>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut in_flight: HashSet<i64> = HashSet::new();
    let mut attempts: JoinSet<i64> = JoinSet::new();
    while !*stop.borrow() {
        let wait = match deliverer.store.outbox_heads(HEADS_PER_ROUND).await {
            Ok(heads) => {
                let now = OffsetDateTime::now_utc();
                let mut next_due: Option<OffsetDateTime> = None;
                for head in heads {
                    if in_flight.contains(&head.seq) {
                        continue;
                    }
                    if head.next_attempt_at > now {
                        next_due = Some(
                            next_due.map_or(head.next_attempt_at, |t| t.min(head.next_attempt_at)),
                        );
                        continue;
                    }
                    if in_flight.len() >= MAX_IN_FLIGHT {
                        continue;
                    }
                    in_flight.insert(head.seq);
                    let deliverer = deliverer.clone();
                    attempts.spawn(async move {
                        let seq = head.seq;
                        deliverer.attempt(head).await;
                        seq
                    });
                }
                next_due.map_or(IDLE_RESCAN, |t| {
                    Duration::try_from(t - now)
                        .unwrap_or_default()
                        .min(IDLE_RESCAN)
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the webhook outbox failed");
                STORE_RETRY
            }
        };
        tokio::select! {
            Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                if let Ok(seq) = done {
                    in_flight.remove(&seq);
                } else {
                    // A panicked attempt: forget every claim, the rows are still there.
                    in_flight.clear();
                    attempts.abort_all();
                }
            }
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            changed = stop.changed() => {
                // The handle is gone without a word: nobody can stop us later either.
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    // Attempts cut short here are made again after the next start.
    attempts.shutdown().await;
}

impl Deliverer {
    /// One attempt at one row, and its bookkeeping.
    async fn attempt(&self, row: OutboxRow) {
        let result = self.post(&row).await;
        let now = OffsetDateTime::now_utc();
        let outcome = match result {
            Ok(()) => {
                self.count("ok");
                self.store.delete_outbox_row(row.seq).await
            }
            Err(why) => {
                self.count("failed");
                let attempts = row.attempts + 1;
                let give_up_at = row.created_at + self.schedule.give_up;
                if now >= give_up_at {
                    tracing::warn!(
                        event_id = %row.event_id, url = %row.url, attempts, error = %why,
                        "webhook undeliverable; giving up"
                    );
                    self.count("gave_up");
                    self.store.delete_outbox_row(row.seq).await
                } else {
                    let delay = self.schedule.delay(attempts, &mut rand::rng());
                    let next = (now + delay).min(give_up_at);
                    tracing::debug!(
                        event_id = %row.event_id, url = %row.url, attempts, error = %why,
                        retry_in = ?delay, "webhook attempt failed"
                    );
                    self.store.retry_outbox_row(row.seq, attempts, next).await
                }
            }
        };
        if let Err(e) = outcome {
            // The row stays as it was: it is attempted again, perhaps a duplicate.
            tracing::warn!(event_id = %row.event_id, error = %e, "recording a webhook attempt failed");
        }
    }

    /// POSTs the row's body, signed now; `Err` says why it did not count as delivered.
    async fn post(&self, row: &OutboxRow) -> Result<(), String> {
        let t = OffsetDateTime::now_utc().unix_timestamp();
        let response = self
            .client
            .post(&row.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_ID_HEADER, row.event_id.to_string())
            .header(
                SIGNATURE_HEADER,
                signature(&self.secret, t, row.body.as_bytes()),
            )
            .body(row.body.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .webhook_deliveries_total
            .with_label_values(&[result])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_in_the_upper_half() {
        let schedule = RetrySchedule {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
            give_up: Duration::from_secs(3600),
        };
        let mut rng = rand::rng();
        for (attempts, full) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (60, 10)] {
            for _ in 0..50 {
                let d = schedule.delay(attempts, &mut rng);
                let full = Duration::from_secs(full);
                assert!(d <= full && d >= full / 2, "attempt {attempts}: {d:?}");
            }
        }
    }
}
