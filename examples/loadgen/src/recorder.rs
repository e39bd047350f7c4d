//! What a media thread measures: packets sent and received per stream inside the measurement
//! window, forwarding latency, and join times.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::stamp::{STREAM_AUDIO, Stamp};

/// The measurement window, in stamp microseconds; shared by every thread. Zero means unset.
#[derive(Default)]
pub struct Window {
    start_us: AtomicU64,
    end_us: AtomicU64,
}

impl Window {
    pub fn open(&self, at_us: u64) {
        self.end_us.store(u64::MAX, Ordering::Relaxed);
        self.start_us.store(at_us.max(1), Ordering::Relaxed);
    }

    pub fn close(&self, at_us: u64) {
        self.end_us.store(at_us, Ordering::Relaxed);
    }

    pub fn contains(&self, us: u64) -> bool {
        let start = self.start_us.load(Ordering::Relaxed);
        start != 0 && us >= start && us < self.end_us.load(Ordering::Relaxed)
    }
}

/// Latency histogram with 20 µs buckets up to 2 s; later arrivals land in the last bucket.
#[derive(Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    pub count: u64,
}

const BUCKET_US: u64 = 20;
const BUCKETS: usize = 100_000;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            count: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        let at = usize::try_from(us / BUCKET_US)
            .unwrap_or(BUCKETS - 1)
            .min(BUCKETS - 1);
        self.buckets[at] += 1;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
    }

    /// The value below which a fraction `q` of the samples lie, in milliseconds (bucket midpoint).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some((i as f64 + 0.5) * BUCKET_US as f64 / 1000.0);
            }
        }
        None
    }
}

/// When a received packet arrived at its socket and when the load generator read it, in
/// microseconds since the stamps' epoch.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub arrived_us: u64,
    pub read_us: u64,
}

/// Everything one media thread saw; merged across threads for the report.
#[derive(Clone, Default)]
pub struct Record {
    /// (publisher, stream) -> packets sent with a stamp inside the window.
    pub sent: HashMap<(u32, u8), u64>,
    /// (receiver, publisher, stream) -> packets received with a stamp inside the window.
    pub received: HashMap<(u32, u32, u8), u64>,
    /// Send stamp to arrival at the subscriber's socket (the kernel's receive stamp): the
    /// forwarding latency.
    pub latency: Histogram,
    /// Send stamp to the load generator reading the packet: the same plus the time it waited in
    /// the socket while the media thread served others.
    pub latency_read: Histogram,
    /// Received RTP packets since the start, whatever their stamp (progress display).
    pub received_total: u64,
    pub sent_total: u64,
    pub payload_bytes_received: u64,
    /// Every completed join, in the order they completed.
    pub joins: Vec<JoinTimes>,
    /// Publisher streams a participant received without a readable stamp.
    pub unstamped: u64,
    pub keyframes_sent: u64,
    pub keyframe_requests: u64,
    pub failed_connections: u64,
    /// (receiver, publisher) -> the stream of the latest video packet, whenever it was sent:
    /// which layer a subscriber gets now (for waiting until the layers settle).
    pub latest_video: HashMap<(u32, u32), u8>,
}

impl Record {
    pub fn on_sent(&mut self, stamp: &Stamp, window: &Window) {
        self.sent_total += 1;
        if window.contains(stamp.sent_us) {
            *self
                .sent
                .entry((stamp.publisher, stamp.stream))
                .or_default() += 1;
        }
    }

    pub fn on_received(&mut self, receiver: u32, payload: &[u8], at: Received, window: &Window) {
        self.received_total += 1;
        self.payload_bytes_received += payload.len() as u64;
        let Some(stamp) = Stamp::read(payload) else {
            self.unstamped += 1;
            return;
        };
        if stamp.stream != STREAM_AUDIO {
            self.latest_video
                .insert((receiver, stamp.publisher), stamp.stream);
        }
        if window.contains(stamp.sent_us) {
            *self
                .received
                .entry((receiver, stamp.publisher, stamp.stream))
                .or_default() += 1;
            self.latency
                .record(at.arrived_us.saturating_sub(stamp.sent_us));
            self.latency_read
                .record(at.read_us.saturating_sub(stamp.sent_us));
        }
    }

    pub fn merge(&mut self, other: &Record) {
        for (k, v) in &other.sent {
            *self.sent.entry(*k).or_default() += v;
        }
        for (k, v) in &other.received {
            *self.received.entry(*k).or_default() += v;
        }
        self.latency.merge(&other.latency);
        self.latency_read.merge(&other.latency_read);
        self.received_total += other.received_total;
        self.sent_total += other.sent_total;
        self.payload_bytes_received += other.payload_bytes_received;
        self.joins.extend_from_slice(&other.joins);
        self.unstamped += other.unstamped;
        self.keyframes_sent += other.keyframes_sent;
        self.keyframe_requests += other.keyframe_requests;
        self.failed_connections += other.failed_connections;
        self.latest_video
            .extend(other.latest_video.iter().map(|(k, v)| (*k, *v)));
    }
}

/// Progress counters the main thread reads while a run goes on.
#[derive(Default)]
pub struct Live {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub connected: AtomicU64,
    /// Joins completed (first media packet after `call:join`).
    pub joins: AtomicU64,
}

pub type SharedLive = Arc<Live>;

/// One join, in milliseconds from sending `call:join`: to the first media packet (the join
/// time), and on the way to the first subscriber offer's arrival over the WebSocket, to the media
/// thread taking it up (its own queue in between) and to the subscriber connection being up.
/// A step not seen is NaN, which [`quantile`] leaves out.
#[derive(Debug, Clone, Copy)]
pub struct JoinTimes {
    pub first_packet: f64,
    pub offer: f64,
    pub offer_handled: f64,
    pub connected: f64,
}

impl JoinTimes {
    /// p50 and p99 of one step over `joins`.
    pub fn p50_p99(joins: &[JoinTimes], step: fn(&JoinTimes) -> f64) -> (Option<f64>, Option<f64>) {
        let values: Vec<f64> = joins.iter().map(step).collect();
        (quantile(&values, 0.5), quantile(&values, 0.99))
    }
}

/// The q-quantile of a list of values (nearest rank).
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64) * q).ceil().max(1.0) as usize;
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_step_not_seen_is_left_out_of_its_quantiles() {
        let join = |first_packet, connected| JoinTimes {
            first_packet,
            offer: 1.0,
            offer_handled: 2.0,
            connected,
        };
        let joins = [join(10.0, 5.0), join(20.0, f64::NAN), join(30.0, 7.0)];
        assert_eq!(
            JoinTimes::p50_p99(&joins, |j| j.first_packet),
            (Some(20.0), Some(30.0))
        );
        assert_eq!(
            JoinTimes::p50_p99(&joins, |j| j.connected),
            (Some(5.0), Some(7.0))
        );
        assert_eq!(JoinTimes::p50_p99(&[], |j| j.offer), (None, None));
    }

    #[test]
    fn quantiles_of_a_histogram_follow_the_samples() {
        let mut h = Histogram::default();
        for us in 1..=1000 {
            h.record(us * 10);
        }
        let p50 = h.quantile_ms(0.5).expect("samples");
        let p99 = h.quantile_ms(0.99).expect("samples");
        assert!((4.9..5.1).contains(&p50), "{p50}");
        assert!((9.8..10.0).contains(&p99), "{p99}");
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
    }

    #[test]
    fn only_packets_stamped_inside_the_window_count() {
        let window = Window::default();
        let mut record = Record::default();
        let mut payload = vec![0u8; 40];
        let stamp = |sent_us| Stamp {
            sent_us,
            publisher: 3,
            stream: 0,
            seq: 1,
        };
        // Arrived 0.5 ms after it was sent, read another 0.5 ms later.
        let at = |sent_us: u64| Received {
            arrived_us: sent_us + 500,
            read_us: sent_us + 1000,
        };
        stamp(50).write(&mut payload);
        record.on_received(9, &payload, at(50), &window);
        window.open(100);
        window.close(200);
        stamp(150).write(&mut payload);
        record.on_received(9, &payload, at(150), &window);
        stamp(250).write(&mut payload);
        record.on_received(9, &payload, at(250), &window);
        assert_eq!(record.received_total, 3);
        assert_eq!(record.received.get(&(9, 3, 0)), Some(&1));
        assert_eq!(record.latency.quantile_ms(0.5), Some(0.51));
        assert_eq!(record.latency_read.quantile_ms(0.5), Some(1.01));
    }

    #[test]
    fn nearest_rank_quantile() {
        assert_eq!(quantile(&[3.0, 1.0, 2.0, 4.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[3.0, 1.0, 2.0, 4.0], 0.99), Some(4.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[f64::NAN, 2.0], 0.5), Some(2.0));
    }
}
