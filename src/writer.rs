//! Background history writes: everything that must reach the store but must not make anyone
//! wait for it (media-state events, quality samples, call snapshots whose first write failed).
//!
//! One task drains a bounded queue in batches. When the queue is full the newest item is
//! dropped and counted rather than blocking the sender: a quality sample lost is better than
//! a stalled signaling or media path. Failed batches are retried with backoff.
//!
//! At shutdown the queue is not dropped: [`HistoryWriter::flush`] waits until everything queued
//! before it is written, and [`HistoryWriter::close`] also ends the task, each within a bound so
//! that a dead store cannot hold the process forever; what could not be written is logged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use confab_signaling::Call;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

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
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
    /// Like `Flush`, and the task ends after it.
    Stop(oneshot::Sender<()>),
}

/// What a bounded flush or close could not finish: the items still waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{pending} history writes were not written in time")]
pub struct NotWritten {
    pub pending: i64,
}

#[derive(Clone)]
pub struct HistoryWriter {
    tx: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    /// The task, awaited (or given up on) by [`HistoryWriter::close`].
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl HistoryWriter {
    /// Starts the writer task; it stops at [`HistoryWriter::close`], or once every handle is
    /// dropped and the queue is drained.
    pub fn spawn(store: Store, metrics: Arc<Metrics>) -> HistoryWriter {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(run(store, rx, metrics.clone()));
        HistoryWriter {
            tx,
            metrics,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Waits until everything queued so far is in the store, for at most `within`.
    pub async fn flush(&self, within: Duration) -> Result<(), NotWritten> {
        self.barrier(Job::Flush, within).await
    }

    /// Writes everything queued so far and ends the task, waiting at most `within`; after
    /// that the task is abandoned (a store that never answers keeps nothing alive) and later
    /// writes are dropped and counted.
    pub async fn close(&self, within: Duration) -> Result<(), NotWritten> {
        let deadline = tokio::time::Instant::now() + within;
        let result = self.barrier(Job::Stop, within).await;
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
        result
    }

    async fn barrier(
        &self,
        job: fn(oneshot::Sender<()>) -> Job,
        within: Duration,
    ) -> Result<(), NotWritten> {
        let (done, written) = oneshot::channel();
        let waited = tokio::time::timeout(within, async {
            self.tx.send(job(done)).await.is_ok() && written.await.is_ok()
        })
        .await;
        match waited {
            Ok(true) => Ok(()),
            // The task is gone: whatever it had is as written as it will ever be.
            Ok(false) => Ok(()),
            Err(_) => Err(NotWritten {
                pending: self.metrics.store_write_backlog.get(),
            }),
        }
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
            Err(e) => {
                if matches!(e, mpsc::error::TrySendError::Closed(_)) {
                    tracing::warn!(what, "history writer stopped; dropping");
                } else {
                    tracing::warn!(what, "history write queue full; dropping");
                }
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
        let mut flushed = Vec::new();
        let mut stop = false;
        for job in jobs.drain(..) {
            match job {
                Job::SaveCall(call) => calls.push(*call),
                Job::MediaEvent(e) => media.push(e),
                Job::QualitySample(s) => quality.push(s),
                Job::Flush(done) => flushed.push(done),
                Job::Stop(done) => {
                    flushed.push(done);
                    stop = true;
                }
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
        for done in flushed {
            let _ = done.send(());
        }
        if stop {
            return;
        }
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
