//! The media engine's own counters, exported as Prometheus families.
//!
//! The workers count in plain integers on their threads (no atomics shared across a room, no
//! registry calls per packet); a poller copies their totals here once a second and the
//! families are built from that snapshot at scrape time. Counters stay monotonic because the
//! engine's totals are.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use confab_sfu::{EngineStats, FORWARDING_LATENCY_BOUNDS_US, MediaEngine};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

/// How stale an engine family may be at scrape time.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct EngineMetrics {
    snapshot: Mutex<Option<EngineStats>>,
    descs: Vec<Desc>,
}

/// (name, help) of every family built here, so `desc()` and `collect()` agree.
const FAMILIES: &[(&str, &str)] = &[
    (
        "confab_rtp_packets_forwarded_total",
        "RTP packets forwarded to subscribers, by kind",
    ),
    (
        "confab_rtp_bytes_forwarded_total",
        "RTP payload bytes forwarded to subscribers, by kind",
    ),
    (
        "confab_rtp_packets_dropped_total",
        "Packets not forwarded or not sent, by reason",
    ),
    (
        "confab_rtcp_nack_total",
        "NACK feedback packets received from subscribers",
    ),
    (
        "confab_rtcp_pli_total",
        "PLI and FIR keyframe requests received from subscribers",
    ),
    (
        "confab_rtcp_pli_relayed_total",
        "Keyframe requests sent to publishers",
    ),
    (
        "confab_forwarding_latency_seconds",
        "Time from reading a publisher's packet to sending it on",
    ),
    (
        "confab_rtp_audio_suppressed_total",
        "Audio packets loudest-N held back from a subscriber (not a drop)",
    ),
    (
        "confab_video_layer_switches_total",
        "Video legs that started a simulcast layer, or resumed, at a keyframe",
    ),
    (
        "confab_video_legs",
        "Video legs of connected subscribers, by the layer they forward",
    ),
    (
        "confab_subscriber_bandwidth_estimate_bps_sum",
        "Sum of the bandwidth estimates of connected subscriber connections",
    ),
    (
        "confab_subscriber_bandwidth_estimates",
        "Connected subscriber connections with a bandwidth estimate",
    ),
    (
        "confab_subscriber_bandwidth_twcc",
        "Connected subscriber connections whose transport-cc feedback gave an estimate",
    ),
    (
        "confab_bandwidth_probes_total",
        "Probes of a paused or lowered video by congestion control, by result",
    ),
    (
        "confab_rtp_retransmissions_total",
        "Packets subscribers asked for again with NACKs, by result",
    ),
];

impl EngineMetrics {
    pub fn new() -> Arc<EngineMetrics> {
        let descs = FAMILIES
            .iter()
            .filter_map(|(name, help)| {
                Desc::new(
                    (*name).to_owned(),
                    (*help).to_owned(),
                    vec![],
                    Default::default(),
                )
                .ok()
            })
            .collect();
        Arc::new(EngineMetrics {
            snapshot: Mutex::new(None),
            descs,
        })
    }

    /// Copies the engine's totals every [`POLL_EVERY`] until the engine is gone.
    pub async fn poll(self: Arc<Self>, engine: MediaEngine) {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match engine.stats().await {
                Ok(stats) => {
                    if let Ok(mut snapshot) = self.snapshot.lock() {
                        *snapshot = Some(stats);
                    }
                }
                Err(_) => return,
            }
        }
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

fn counter(labels: Vec<LabelPair>, value: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value as f64);
    let mut m = Metric::default();
    m.set_label(labels);
    m.set_counter(c);
    m
}

fn gauge(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::default();
    m.set_label(labels);
    m.set_gauge(g);
    m
}

fn family(index: usize, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let (name, help) = FAMILIES[index];
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn latency_histogram(stats: &EngineStats) -> Metric {
    let h = &stats.forwarding_latency;
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(FORWARDING_LATENCY_BOUNDS_US.len());
    for (bound_us, count) in FORWARDING_LATENCY_BOUNDS_US.iter().zip(h.counts.iter()) {
        cumulative += count;
        let mut b = Bucket::default();
        b.set_upper_bound(*bound_us as f64 / 1e6);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    let mut histogram = Histogram::default();
    histogram.set_sample_count(h.counts.iter().sum());
    histogram.set_sample_sum(h.sum_us as f64 / 1e6);
    histogram.set_bucket(buckets);
    let mut m = Metric::default();
    m.set_histogram(histogram);
    m
}

/// The registry wants an owned collector; this one shares the snapshot with the poller.
pub struct EngineMetricsHandle(pub Arc<EngineMetrics>);

impl Collector for EngineMetricsHandle {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

impl Collector for EngineMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats = self
            .snapshot
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .unwrap_or_default();
        let kind = |k| vec![label("kind", k)];
        let reason = |r| vec![label("reason", r)];
        let layer = |l| vec![label("layer", l)];
        vec![
            family(
                0,
                MetricType::COUNTER,
                vec![
                    counter(kind("audio"), stats.forwarded_packets_audio),
                    counter(kind("video"), stats.forwarded_packets_video),
                ],
            ),
            family(
                1,
                MetricType::COUNTER,
                vec![
                    counter(kind("audio"), stats.forwarded_bytes_audio),
                    counter(kind("video"), stats.forwarded_bytes_video),
                ],
            ),
            family(
                2,
                MetricType::COUNTER,
                vec![
                    counter(reason("not_ready"), stats.dropped.not_ready),
                    counter(reason("no_codec"), stats.dropped.no_codec),
                    counter(reason("send_failed"), stats.dropped.send_failed),
                    counter(reason("socket_full"), stats.send_dropped),
                    counter(reason("unknown_source"), stats.dropped_unknown),
                ],
            ),
            family(
                3,
                MetricType::COUNTER,
                vec![counter(vec![], stats.nacks_received)],
            ),
            family(
                4,
                MetricType::COUNTER,
                vec![counter(vec![], stats.plis_received)],
            ),
            family(
                5,
                MetricType::COUNTER,
                vec![counter(vec![], stats.plis_relayed)],
            ),
            family(6, MetricType::HISTOGRAM, vec![latency_histogram(&stats)]),
            family(
                7,
                MetricType::COUNTER,
                vec![counter(vec![], stats.audio_suppressed)],
            ),
            family(
                8,
                MetricType::COUNTER,
                vec![counter(vec![], stats.layer_switches)],
            ),
            family(
                9,
                MetricType::GAUGE,
                vec![
                    gauge(layer("off"), f64::from(stats.video_layers.off)),
                    gauge(layer("low"), f64::from(stats.video_layers.low)),
                    gauge(layer("medium"), f64::from(stats.video_layers.medium)),
                    gauge(layer("high"), f64::from(stats.video_layers.high)),
                ],
            ),
            family(
                10,
                MetricType::GAUGE,
                vec![gauge(vec![], stats.bandwidth_estimate_bps_sum as f64)],
            ),
            family(
                11,
                MetricType::GAUGE,
                vec![gauge(vec![], stats.bandwidth_estimated as f64)],
            ),
            family(
                12,
                MetricType::GAUGE,
                vec![gauge(vec![], stats.bandwidth_from_twcc as f64)],
            ),
            family(
                13,
                MetricType::COUNTER,
                vec![
                    counter(vec![label("result", "carried")], stats.probes.carried),
                    counter(vec![label("result", "failed")], stats.probes.failed),
                ],
            ),
            family(
                14,
                MetricType::COUNTER,
                vec![
                    counter(vec![label("result", "sent")], stats.retransmissions),
                    counter(
                        vec![label("result", "unavailable")],
                        stats.retransmissions_unavailable,
                    ),
                ],
            ),
        ]
    }
}
