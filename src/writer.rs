//! Background history writes: everything that must reach the store but must not make anyone
//! wait for it (media-state events, quality samples, call snapshots whose first write failed).
//!
//! One task drains a bounded queue in batches. When the queue is full the newest item is
//! dropped and counted rather than blocking the sender: a quality sample lost is better than
//! a stalled signaling or media path. Failed batches are retried with backoff.

use std::sync::Arc;
use std::time::Duration;

use confab_signaling::Call;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::store::{MediaEvent, QualitySample, Store};

/// Items waiting to be written, at most.
const QUEUE_CAPACITY: usize = 16 * 1024;
/// Items written in one transaction, at most.
const BATCH: usize = 512;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

enum Job {
    SaveCall(Box<Call>),
    MediaEvent(MediaEvent),
    QualitySample(QualitySample),
}

#[derive(Clone)]
pub struct HistoryWriter {
    tx: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
}

impl HistoryWriter {
    /// Starts the writer task; it stops once every `HistoryWriter` handle is dropped and the
    /// queue is drained.
    pub fn spawn(
        store: Store,
        metrics: Arc<Metrics>,
    ) -> (HistoryWriter, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(run(store, rx, metrics.clone()));
        (HistoryWriter { tx, metrics }, task)
    }

    pub fn save_call(&self, call: Call) {
        self.enqueue(Job::SaveCall(Box::new(call)), "call");
    }

    pub fn media_event(&self, event: MediaEvent) {
        self.enqueue(Job::MediaEvent(event), "media_event");
    }

    pub fn quality_sample(&self, sample: QualitySample) {
        self.enqueue(Job::QualitySample(sample), "quality_sample");
    }

    fn enqueue(&self, job: Job, what: &'static str) {
        match self.tx.try_send(job) {
            Ok(()) => self.metrics.store_write_backlog.inc(),
            Err(_) => {
                tracing::warn!(what, "history write queue full; dropping");
                self.metrics
                    .store_write_failures_total
                    .with_label_values(&[what])
                    .inc();
            }
        }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>, metrics: Arc<Metrics>) {
    let mut jobs = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut jobs, BATCH).await > 0 {
        let mut calls = Vec::new();
        let mut media = Vec::new();
        let mut quality = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::SaveCall(call) => calls.push(*call),
                Job::MediaEvent(e) => media.push(e),
                Job::QualitySample(s) => quality.push(s),
            }
        }
        let count = calls.len() + media.len() + quality.len();
        let mut backoff = Duration::from_millis(50);
        loop {
            match write_batch(&store, &calls, &media, &quality).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "history write failed");
                    metrics
                        .store_write_failures_total
                        .with_label_values(&["batch"])
                        .inc();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        metrics.store_write_backlog.sub(count as i64);
    }
}

async fn write_batch(
    store: &Store,
    calls: &[Call],
    media: &[MediaEvent],
    quality: &[QualitySample],
) -> Result<(), crate::store::StoreError> {
    for call in calls {
        store.save_call(call).await?;
    }
    if !media.is_empty() {
        store.insert_media_events(media).await?;
    }
    if !quality.is_empty() {
        store.insert_quality_samples(quality).await?;
    }
    Ok(())
}
