//! The end of a run: a table for people and one JSON line for scripts.

use std::time::Instant;

use serde_json::json;

use crate::expect::{Expectation, Tally};
use crate::floor::FloorResult;
use crate::procfs;
use crate::recorder::{JoinTimes, Record};
use crate::run::ChurnResult;
use crate::scenario::Plan;

/// Counters read at the edges of the measurement window.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub server_cpu_us: u64,
    pub server_wait_us: u64,
    pub self_cpu_us: u64,
    pub server_udp_drops: u64,
    pub self_udp_drops: u64,
    pub rcvbuf_errors: u64,
}

impl Sample {
    pub fn take(server: u32, me: u32) -> Sample {
        Sample {
            at: Instant::now(),
            server_cpu_us: procfs::cpu_us(server).unwrap_or(0),
            server_wait_us: procfs::runqueue_wait_us(server).unwrap_or(0),
            self_cpu_us: procfs::cpu_us(me).unwrap_or(0),
            server_udp_drops: procfs::udp_drops_of_process(server).unwrap_or(0),
            self_udp_drops: procfs::udp_drops_of_process(me).unwrap_or(0),
            rcvbuf_errors: procfs::udp_rcvbuf_errors().unwrap_or(0),
        }
    }
}

pub struct Report {
    pub scenario: String,
    pub participants: u32,
    pub publishers: u32,
    pub window_s: f64,
    pub sent_pps: f64,
    pub forwarded_pps: f64,
    pub expected: u64,
    pub received: u64,
    /// Expected packets that did not arrive (before subtracting our own sockets' drops), and
    /// of those, the ones of subscribers whose connection was not up.
    pub missing: u64,
    pub missing_unconnected: u64,
    /// Packets of streams no subscriber asked for (see [`Tally`]).
    pub unexpected: u64,
    /// Video packets on, below and above each subscriber's chosen layer.
    pub video_layers: (u64, u64, u64),
    pub simulcast: bool,
    /// The loudest-N the expectations assume applied (0: all audio forwarded).
    pub loudest_n: u32,
    /// What was expected, in words.
    pub expecting: String,
    pub server_cpu_percent: f64,
    pub server_cpu_us_per_pkt: f64,
    /// Share of the window the server's threads waited for a CPU, summed over threads.
    pub server_runqueue_wait_percent: f64,
    pub loadgen_cpu_percent: f64,
    pub loadgen_cpu_us_per_pkt: f64,
    pub loadgen_drops: u64,
    pub server_socket_drops: u64,
    /// Drops on the server's sockets since they were opened: joins included, which is when a
    /// busy server is likeliest to overflow.
    pub server_socket_drops_total: u64,
    pub rcvbuf_errors: u64,
    pub server_loss_ratio: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// p50 and p99 from the send stamp to the load generator reading the packet, which adds
    /// the time it waited in the subscriber's socket.
    pub latency_read_ms: (Option<f64>, Option<f64>),
    /// p50 and p99 of the server's own forwarding latency over the window (its histogram's
    /// bucket bounds), when its `/metrics` could be read.
    pub server_latency_ms: (Option<f64>, Option<f64>),
    pub join_p50_ms: Option<f64>,
    pub join_p99_ms: Option<f64>,
    pub joins: usize,
    /// p50 and p99 of the time to the first subscriber offer and to the subscriber connection.
    pub join_offer_ms: (Option<f64>, Option<f64>),
    pub join_offer_handled_ms: (Option<f64>, Option<f64>),
    pub join_connected_ms: (Option<f64>, Option<f64>),
    pub server_rss_mb: f64,
    pub rss_per_participant_mb: f64,
    pub failed_connections: u64,
    /// Peer connections up when the window opened, of those the plan needs.
    pub connections: (u64, u64),
    pub keyframe_requests: u64,
    pub keyframes_sent: u64,
    pub floor: Option<FloorResult>,
    pub churn: Option<ChurnResult>,
}

impl Report {
    /// `samples`: at the start and the end of the window; `rss`: the server's before anyone
    /// joined and at the end of the window.
    pub fn new(
        plan: &Plan,
        expectation: &Expectation,
        tally: &Tally,
        record: &Record,
        (start, end): (&Sample, &Sample),
        (rss_base, rss_end): (u64, u64),
        churn: Option<ChurnResult>,
    ) -> Report {
        let window_s = end.at.duration_since(start.at).as_secs_f64().max(0.001);
        let sent: u64 = record.sent.values().sum();
        let received = tally.received;
        let expected = tally.expected;
        let server_cpu = end.server_cpu_us.saturating_sub(start.server_cpu_us) as f64;
        let self_cpu = end.self_cpu_us.saturating_sub(start.self_cpu_us) as f64;
        let loadgen_drops = end.self_udp_drops.saturating_sub(start.self_udp_drops);
        // Packets our own sockets dropped were forwarded by the server: not its loss.
        let lost = tally.missing.saturating_sub(loadgen_drops);
        let per_pkt = |cpu: f64| {
            if received > 0 {
                cpu / received as f64
            } else {
                0.0
            }
        };
        let joins: Vec<JoinTimes> = record
            .joins
            .iter()
            .chain(churn.iter().flat_map(|c| &c.joins))
            .copied()
            .collect();
        let (join_p50_ms, join_p99_ms) = JoinTimes::p50_p99(&joins, |j| j.first_packet);
        let rss_mb = rss_end as f64 / 1e6;
        Report {
            scenario: plan.name.clone(),
            participants: plan.participants,
            publishers: plan.publishers,
            window_s,
            sent_pps: sent as f64 / window_s,
            forwarded_pps: received as f64 / window_s,
            expected,
            received,
            missing: tally.missing,
            missing_unconnected: tally.missing_unconnected,
            unexpected: tally.unexpected,
            video_layers: (tally.video_on_choice, tally.video_below, tally.video_above),
            simulcast: plan.simulcast,
            loudest_n: if expectation.loudest_n_applies() {
                plan.loudest.n
            } else {
                0
            },
            expecting: expectation.describe(),
            server_cpu_percent: server_cpu / window_s / 10_000.0,
            server_cpu_us_per_pkt: per_pkt(server_cpu),
            server_runqueue_wait_percent: end.server_wait_us.saturating_sub(start.server_wait_us)
                as f64
                / window_s
                / 10_000.0,
            loadgen_cpu_percent: self_cpu / window_s / 10_000.0,
            loadgen_cpu_us_per_pkt: per_pkt(self_cpu),
            loadgen_drops,
            server_socket_drops: end.server_udp_drops.saturating_sub(start.server_udp_drops),
            server_socket_drops_total: end.server_udp_drops,
            rcvbuf_errors: end.rcvbuf_errors.saturating_sub(start.rcvbuf_errors),
            server_loss_ratio: if expected > 0 {
                lost as f64 / expected as f64
            } else {
                0.0
            },
            latency_p50_ms: record.latency.quantile_ms(0.5),
            latency_p99_ms: record.latency.quantile_ms(0.99),
            latency_read_ms: (
                record.latency_read.quantile_ms(0.5),
                record.latency_read.quantile_ms(0.99),
            ),
            server_latency_ms: (None, None),
            join_p50_ms,
            join_p99_ms,
            joins: joins.len(),
            join_offer_ms: JoinTimes::p50_p99(&joins, |j| j.offer),
            join_offer_handled_ms: JoinTimes::p50_p99(&joins, |j| j.offer_handled),
            join_connected_ms: JoinTimes::p50_p99(&joins, |j| j.connected),
            server_rss_mb: rss_mb,
            rss_per_participant_mb: rss_end.saturating_sub(rss_base) as f64
                / 1e6
                / f64::from(plan.participants.max(1)),
            failed_connections: record.failed_connections,
            connections: (0, 0),
            keyframe_requests: record.keyframe_requests,
            keyframes_sent: record.keyframes_sent,
            floor: None,
            churn,
        }
    }

    pub fn set_connections(&mut self, up: u64, expected: u64) {
        self.connections = (up, expected);
    }

    pub fn set_server_latency(&mut self, p50_ms: Option<f64>, p99_ms: Option<f64>) {
        self.server_latency_ms = (p50_ms, p99_ms);
    }

    pub fn set_floor(&mut self, floor: FloorResult) {
        self.floor = Some(floor);
    }

    fn ratio_to_floor(&self) -> Option<f64> {
        self.floor
            .filter(|f| f.cpu_us_per_pkt > 0.0)
            .map(|f| self.server_cpu_us_per_pkt / f.cpu_us_per_pkt)
    }

    pub fn print(&self) {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} ms"));
        let rows: Vec<(&str, String)> = vec![
            ("scenario", self.scenario.clone()),
            (
                "participants / publishers",
                format!("{} / {}", self.participants, self.publishers),
            ),
            ("window", format!("{:.1} s", self.window_s)),
            ("expected", self.expecting.clone()),
            (
                "peer connections up",
                format!("{} of {}", self.connections.0, self.connections.1),
            ),
            ("sent by publishers", format!("{:.0} pps", self.sent_pps)),
            (
                "forwarded (received)",
                format!("{:.0} pps", self.forwarded_pps),
            ),
            (
                "server CPU",
                format!(
                    "{:.1}% of a core, {:.2} µs per forwarded packet",
                    self.server_cpu_percent, self.server_cpu_us_per_pkt
                ),
            ),
            (
                "server waiting for a CPU",
                format!(
                    "{:.1}% of the window (runnable, not running: the machine is busy)",
                    self.server_runqueue_wait_percent
                ),
            ),
            (
                "floor CPU",
                self.floor.map_or("-".to_owned(), |f| {
                    if f.cpu_us_per_pkt <= 0.0 {
                        return format!(
                            "too little to measure at {:.0} pps (under one CPU clock tick)",
                            f.forwarded_pps
                        );
                    }
                    format!(
                        "{:.2} µs per packet at {:.0} pps, {:.0} pps in ({:.1}% of a core)",
                        f.cpu_us_per_pkt, f.forwarded_pps, f.received_pps, f.cpu_percent
                    )
                }),
            ),
            (
                "ratio to floor",
                self.ratio_to_floor()
                    .map_or("-".to_owned(), |r| format!("{r:.2}x")),
            ),
            (
                "server loss",
                format!(
                    "{:.4}% ({} of {} expected missing, {} of them to subscribers whose \
                     connection was not up; excluded {} dropped by our sockets)",
                    self.server_loss_ratio * 100.0,
                    self.missing,
                    self.expected,
                    self.missing_unconnected,
                    self.loadgen_drops
                ),
            ),
            (
                "unexpected",
                format!(
                    "{} packets of streams not asked for{}",
                    self.unexpected,
                    if self.unexpected * 100 > self.received.max(1) {
                        " (over 1 %: the server does not do what was assumed, so the loss \
                         figure is not to be trusted; check --loudest-n)"
                    } else {
                        ""
                    }
                ),
            ),
            (
                "socket drops",
                format!(
                    "server sockets {} ({} since they opened), machine RcvbufErrors {}",
                    self.server_socket_drops, self.server_socket_drops_total, self.rcvbuf_errors
                ),
            ),
            (
                "forwarding latency p50 / p99",
                format!(
                    "{} / {} (send to arrival at the subscriber's socket)",
                    ms(self.latency_p50_ms),
                    ms(self.latency_p99_ms)
                ),
            ),
            (
                "  read by the load generator",
                format!(
                    "p50 {} / p99 {} (adds the wait in the socket for the busy bots)",
                    ms(self.latency_read_ms.0),
                    ms(self.latency_read_ms.1)
                ),
            ),
            (
                "  of which in the server",
                match self.server_latency_ms {
                    (None, None) => "- (its /metrics could not be read)".to_owned(),
                    (p50, p99) => {
                        // A quantile past the last bucket bound has no upper bound to give.
                        let bound = |v: Option<f64>| match v {
                            Some(v) if v.is_infinite() => "past the last bucket".to_owned(),
                            v => format!("≤ {}", ms(v)),
                        };
                        format!(
                            "p50 {} / p99 {} (its own histogram: datagram read to forwarded one \
                             sent)",
                            bound(p50),
                            bound(p99)
                        )
                    }
                },
            ),
            (
                "join time p50 / p99",
                format!(
                    "{} / {} ({} joins)",
                    ms(self.join_p50_ms),
                    ms(self.join_p99_ms),
                    self.joins
                ),
            ),
            (
                "  of which: offer / taken up / connected",
                format!(
                    "p50 {} / {} / {}, p99 {} / {} / {} (first subscriber offer arrives; \
                     the bots' thread takes it up; subscriber connection up)",
                    ms(self.join_offer_ms.0),
                    ms(self.join_offer_handled_ms.0),
                    ms(self.join_connected_ms.0),
                    ms(self.join_offer_ms.1),
                    ms(self.join_offer_handled_ms.1),
                    ms(self.join_connected_ms.1)
                ),
            ),
            (
                "server RSS",
                format!(
                    "{:.1} MB, {:.3} MB per participant",
                    self.server_rss_mb, self.rss_per_participant_mb
                ),
            ),
            (
                "load generator CPU",
                format!(
                    "{:.1}% of a core, {:.2} µs per received packet",
                    self.loadgen_cpu_percent, self.loadgen_cpu_us_per_pkt
                ),
            ),
            (
                "keyframes",
                format!(
                    "{} requests received, {} sent; {} failed connections",
                    self.keyframe_requests, self.keyframes_sent, self.failed_connections
                ),
            ),
        ];
        let mut rows = rows;
        if self.simulcast {
            let (on, below, above) = self.video_layers;
            let all = (on + below + above).max(1) as f64;
            rows.push((
                "video layers",
                format!(
                    "{:.2}% of video packets on the chosen layer, {:.2}% below, {:.2}% above",
                    on as f64 * 100.0 / all,
                    below as f64 * 100.0 / all,
                    above as f64 * 100.0 / all
                ),
            ));
        }
        if let Some(c) = &self.churn {
            rows.push((
                "churn",
                format!(
                    "{}/{} cycles completed; server RSS {:.1} MB after {} cycles, {:.1} MB at the end ({:+.1} MB)",
                    c.completed,
                    c.cycles,
                    c.rss_after_warm_mb,
                    (c.cycles / 10).max(1),
                    c.rss_end_mb,
                    c.rss_end_mb - c.rss_after_warm_mb
                ),
            ));
        }
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (k, v) in &rows {
            println!("{k:<width$}  {v}");
        }
        println!("{}", self.json());
    }

    pub fn json(&self) -> serde_json::Value {
        let mut j = json!({
            "scenario": self.scenario,
            "participants": self.participants,
            "publishers": self.publishers,
            "window_s": round(self.window_s, 2),
            "sent_pps": round(self.sent_pps, 1),
            "forwarded_pps": round(self.forwarded_pps, 1),
            "server_cpu_percent": round(self.server_cpu_percent, 1),
            "server_cpu_us_per_pkt": round(self.server_cpu_us_per_pkt, 3),
            "server_runqueue_wait_percent": round(self.server_runqueue_wait_percent, 1),
            // Zero means the floor used less than one tick of the CPU clock: no figure.
            "floor_cpu_us_per_pkt": self
                .floor
                .filter(|f| f.cpu_us_per_pkt > 0.0)
                .map(|f| round(f.cpu_us_per_pkt, 3)),
            "floor_pps": self.floor.map(|f| round(f.forwarded_pps, 1)),
            "ratio_to_floor": self.ratio_to_floor().map(|r| round(r, 3)),
            "server_loss_ratio": self.server_loss_ratio,
            "expected_packets": self.expected,
            "unexpected_packets": self.unexpected,
            "missing_to_unconnected_packets": self.missing_unconnected,
            "simulcast": self.simulcast,
            "loudest_n": self.loudest_n,
            "loadgen_socket_drops": self.loadgen_drops,
            "server_socket_drops": self.server_socket_drops,
            "server_socket_drops_total": self.server_socket_drops_total,
            "latency_p50_ms": self.latency_p50_ms.map(|v| round(v, 3)),
            "latency_p99_ms": self.latency_p99_ms.map(|v| round(v, 3)),
            "latency_read_p50_ms": self.latency_read_ms.0.map(|v| round(v, 3)),
            "latency_read_p99_ms": self.latency_read_ms.1.map(|v| round(v, 3)),
            "server_latency_p50_ms": self.server_latency_ms.0.filter(|v| v.is_finite()),
            "server_latency_p99_ms": self.server_latency_ms.1.filter(|v| v.is_finite()),
            "join_p50_ms": self.join_p50_ms.map(|v| round(v, 1)),
            "join_p99_ms": self.join_p99_ms.map(|v| round(v, 1)),
            "joins": self.joins,
            "join_offer_p50_ms": self.join_offer_ms.0.map(|v| round(v, 1)),
            "join_offer_p99_ms": self.join_offer_ms.1.map(|v| round(v, 1)),
            "join_connected_p50_ms": self.join_connected_ms.0.map(|v| round(v, 1)),
            "join_connected_p99_ms": self.join_connected_ms.1.map(|v| round(v, 1)),
            "server_rss_mb": round(self.server_rss_mb, 2),
            "rss_per_participant_mb": round(self.rss_per_participant_mb, 3),
            "loadgen_cpu_percent": round(self.loadgen_cpu_percent, 1),
            "loadgen_cpu_us_per_pkt": round(self.loadgen_cpu_us_per_pkt, 3),
            "failed_connections": self.failed_connections,
            "connections_up": self.connections.0,
            "connections_expected": self.connections.1,
            "join_offer_handled_p50_ms": self.join_offer_handled_ms.0.map(|v| round(v, 1)),
            "join_offer_handled_p99_ms": self.join_offer_handled_ms.1.map(|v| round(v, 1)),
            "floor_received_pps": self.floor.map(|f| round(f.received_pps, 1)),
        });
        if self.simulcast {
            let (on, below, above) = self.video_layers;
            let all = (on + below + above).max(1) as f64;
            j["video_on_chosen_layer_ratio"] = json!(round(on as f64 / all, 4));
        }
        if let Some(c) = &self.churn {
            j["churn_cycles"] = json!(c.cycles);
            j["churn_completed"] = json!(c.completed);
            j["churn_rss_warm_mb"] = json!(round(c.rss_after_warm_mb, 2));
            j["churn_rss_end_mb"] = json!(round(c.rss_end_mb, 2));
            j["churn_rss_growth_mb"] = json!(round(c.rss_end_mb - c.rss_after_warm_mb, 2));
        }
        j
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::recorder::JoinTimes;

    fn sample(at: Instant, server_cpu_us: u64) -> Sample {
        Sample {
            at,
            server_cpu_us,
            server_wait_us: 0,
            self_cpu_us: 0,
            server_udp_drops: 0,
            self_udp_drops: 0,
            rcvbuf_errors: 0,
        }
    }

    /// The JSON line carries every key the issue names, with the figures they are made of: 10 s
    /// in which the server spent 5 s of CPU forwarding 1,000,000 packets (5 µs each) against a
    /// floor of 2.5 µs, 50 participants and 50 MB more memory than before they joined.
    #[test]
    fn the_json_line_carries_every_key_the_issue_names() {
        let plan = Plan::named("audio-50").expect("known");
        let expectation = Expectation::new(&plan);
        let tally = Tally {
            received: 1_000_000,
            expected: 1_000_100,
            missing: 100,
            ..Tally::default()
        };
        let mut record = Record::default();
        record.latency.record(1_000);
        record.joins.push(JoinTimes {
            first_packet: 40.0,
            offer: 5.0,
            offer_handled: 6.0,
            connected: 30.0,
        });
        let start = Instant::now();
        let end = start + Duration::from_secs(10);
        let mut report = Report::new(
            &plan,
            &expectation,
            &tally,
            &record,
            (&sample(start, 0), &sample(end, 5_000_000)),
            (10_000_000, 60_000_000),
            None,
        );
        report.set_floor(FloorResult {
            received_pps: 2_500.0,
            forwarded_pps: 100_000.0,
            cpu_us_per_pkt: 2.5,
            cpu_percent: 25.0,
        });
        let j = report.json();
        for key in [
            "scenario",
            "participants",
            "forwarded_pps",
            "server_cpu_us_per_pkt",
            "floor_cpu_us_per_pkt",
            "ratio_to_floor",
            "server_loss_ratio",
            "latency_p50_ms",
            "latency_p99_ms",
            "join_p50_ms",
            "join_p99_ms",
            "server_rss_mb",
            "rss_per_participant_mb",
        ] {
            assert!(j.get(key).is_some_and(|v| !v.is_null()), "{key} in {j}");
        }
        assert_eq!(j["scenario"], "audio-50");
        assert_eq!(j["participants"], 50);
        assert_eq!(j["forwarded_pps"], 100_000.0);
        assert_eq!(j["server_cpu_us_per_pkt"], 5.0);
        assert_eq!(j["ratio_to_floor"], 2.0);
        assert_eq!(j["server_loss_ratio"], 100.0 / 1_000_100.0);
        assert_eq!(j["join_p99_ms"], 40.0);
        assert_eq!(j["rss_per_participant_mb"], 1.0);
        assert_eq!(j["floor_received_pps"], 2_500.0);
        assert_eq!(j["join_offer_handled_p50_ms"], 6.0);
    }
}
