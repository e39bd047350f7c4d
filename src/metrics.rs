//! The Prometheus registry and Confab's metric families (contract section 8).
//!
//! One registry per server instance, not the process-global default, so that tests running
//! several servers in one process see only their own numbers.
//!
//! Every family is exported from the start: a labelled family gets, at 0, one series for each
//! label value it will carry (taken from the enums and lists that define those values), so
//! dashboards and alerts never see a family or a series appear late.

use crate::quality::direction_name;
use confab_sfu::{PeerRole, QualityDirection};
use confab_signaling::CallStatus;
use confab_signaling::protocol::ClientRequest;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub calls_active: IntGauge,
    pub calls_total: IntCounterVec,
    pub participants_joined: IntGauge,
    pub http_requests_total: IntCounterVec,
    pub http_request_duration_seconds: HistogramVec,
    pub store_write_backlog: IntGauge,
    pub store_write_failures_total: IntCounterVec,
    pub ring_timer_lag_seconds: Histogram,
    pub ws_connections: IntGauge,
    pub online_users: IntGauge,
    pub ws_overflow_closes_total: IntCounter,
    pub signaling_messages_total: IntCounterVec,
    pub peer_connections: IntGaugeVec,
    pub packet_loss_ratio: HistogramVec,
    pub jitter_seconds: HistogramVec,
    pub rtt_seconds: HistogramVec,
    pub webhook_deliveries_total: IntCounterVec,
    pub cluster_nodes: IntGauge,
    pub cluster_relay_messages_total: IntCounterVec,
    pub node_draining: IntGauge,
}

/// `result` of `confab_webhook_deliveries_total`: an attempt the receiver answered with 2xx, or
/// any other attempt; an event (per URL) given up an hour after it was created, or dropped
/// because the webhook queue was full.
pub const WEBHOOK_RESULTS: &[&str] = &["ok", "failed", "gave_up", "dropped"];

/// `what` of `confab_store_write_failures_total`: the kinds of history write, and `batch` for a
/// failed batch of the background writer.
pub const STORE_WRITE_KINDS: &[&str] = &[
    "call",
    "media_event",
    "quality_sample",
    "batch",
    "admin_action",
];

/// `direction` of `confab_cluster_relay_messages_total`: relayed to, or from, another node.
pub const RELAY_DIRECTIONS: &[&str] = &["outbound", "inbound"];

/// The `role` label of a peer connection.
pub fn role_label(role: PeerRole) -> &'static str {
    match role {
        PeerRole::Publisher => "publisher",
        PeerRole::Subscriber => "subscriber",
    }
}

/// The `status` values of `confab_calls_total`: every final status.
pub fn final_statuses() -> impl Iterator<Item = CallStatus> {
    CallStatus::ALL.iter().copied().filter(|s| !s.is_live())
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let calls_active =
            IntGauge::new("confab_calls_active", "Calls ringing or ongoing").expect("valid metric");
        let calls_total = IntCounterVec::new(
            Opts::new("confab_calls_total", "Calls that ended, by final status"),
            &["status"],
        )
        .expect("valid metric");
        let participants_joined = IntGauge::new(
            "confab_participants_joined",
            "Participants joined in live calls",
        )
        .expect("valid metric");
        let http_requests_total = IntCounterVec::new(
            Opts::new(
                "confab_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let http_request_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "confab_http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let store_write_backlog = IntGauge::new(
            "confab_store_write_backlog",
            "History writes queued and not yet committed",
        )
        .expect("valid metric");
        let store_write_failures_total = IntCounterVec::new(
            Opts::new(
                "confab_store_write_failures_total",
                "History writes that failed, by what was written",
            ),
            &["what"],
        )
        .expect("valid metric");
        let ring_timer_lag_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "confab_ring_timer_lag_seconds",
                "How late ring timeouts fire after their deadline",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
        )
        .expect("valid metric");

        let ws_connections = IntGauge::new("confab_ws_connections", "Open signaling WebSockets")
            .expect("valid metric");
        let online_users = IntGauge::new(
            "confab_online_users",
            "Users with at least one open signaling WebSocket",
        )
        .expect("valid metric");
        let ws_overflow_closes_total = IntCounter::new(
            "confab_ws_overflow_closes_total",
            "Sockets closed because their outgoing queue overflowed",
        )
        .expect("valid metric");
        let signaling_messages_total = IntCounterVec::new(
            Opts::new(
                "confab_signaling_messages_total",
                "Client WebSocket messages by type and result (ok or the error code)",
            ),
            &["type", "result"],
        )
        .expect("valid metric");

        let peer_connections = IntGaugeVec::new(
            Opts::new(
                "confab_peer_connections",
                "Connected peer connections by role",
            ),
            &["role"],
        )
        .expect("valid metric");

        let quality = |name: &str, help: &str, buckets: Vec<f64>| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets),
                &["direction"],
            )
            .expect("valid metric")
        };
        let packet_loss_ratio = quality(
            "confab_packet_loss_ratio",
            "Packet loss per quality report (5 s), by direction seen from the server",
            vec![0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
        );
        let jitter_seconds = quality(
            "confab_jitter_seconds",
            "Interarrival jitter per quality report, by direction",
            vec![0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16],
        );
        let rtt_seconds = quality(
            "confab_rtt_seconds",
            "Round-trip time per quality report, by direction",
            vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8],
        );

        let webhook_deliveries_total = IntCounterVec::new(
            Opts::new(
                "confab_webhook_deliveries_total",
                "Webhook delivery attempts by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let cluster_nodes = IntGauge::new(
            "confab_cluster_nodes",
            "Live nodes of the deployment, this one included",
        )
        .expect("valid metric");
        let cluster_relay_messages_total = IntCounterVec::new(
            Opts::new(
                "confab_cluster_relay_messages_total",
                "Requests and events relayed between nodes, by direction",
            ),
            &["direction"],
        )
        .expect("valid metric");
        let node_draining =
            IntGauge::new("confab_node_draining", "1 while this node drains, else 0")
                .expect("valid metric");
        // A single node: itself.
        cluster_nodes.set(1);

        for status in final_statuses() {
            calls_total.with_label_values(&[status.as_str()]);
        }
        for message_type in ClientRequest::TYPE_NAMES {
            signaling_messages_total.with_label_values(&[message_type, "ok"]);
        }
        for role in PeerRole::ALL {
            peer_connections.with_label_values(&[role_label(role)]);
        }
        for direction in QualityDirection::ALL.map(direction_name) {
            for family in [&packet_loss_ratio, &jitter_seconds, &rtt_seconds] {
                family.with_label_values(&[direction]);
            }
        }
        for result in WEBHOOK_RESULTS {
            webhook_deliveries_total.with_label_values(&[result]);
        }
        for what in STORE_WRITE_KINDS {
            store_write_failures_total.with_label_values(&[what]);
        }
        for direction in RELAY_DIRECTIONS {
            cluster_relay_messages_total.with_label_values(&[direction]);
        }

        for collector in [
            Box::new(calls_active.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(calls_total.clone()),
            Box::new(participants_joined.clone()),
            Box::new(http_requests_total.clone()),
            Box::new(http_request_duration_seconds.clone()),
            Box::new(store_write_backlog.clone()),
            Box::new(store_write_failures_total.clone()),
            Box::new(ring_timer_lag_seconds.clone()),
            Box::new(ws_connections.clone()),
            Box::new(online_users.clone()),
            Box::new(ws_overflow_closes_total.clone()),
            Box::new(signaling_messages_total.clone()),
            Box::new(peer_connections.clone()),
            Box::new(packet_loss_ratio.clone()),
            Box::new(jitter_seconds.clone()),
            Box::new(rtt_seconds.clone()),
            Box::new(webhook_deliveries_total.clone()),
            Box::new(cluster_nodes.clone()),
            Box::new(cluster_relay_messages_total.clone()),
            Box::new(node_draining.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }

        Metrics {
            registry,
            calls_active,
            calls_total,
            participants_joined,
            http_requests_total,
            http_request_duration_seconds,
            store_write_backlog,
            store_write_failures_total,
            ring_timer_lag_seconds,
            ws_connections,
            online_users,
            ws_overflow_closes_total,
            signaling_messages_total,
            peer_connections,
            packet_loss_ratio,
            jitter_seconds,
            rtt_seconds,
            webhook_deliveries_total,
            cluster_nodes,
            cluster_relay_messages_total,
            node_draining,
        }
    }

    /// Gives every route template its series at 0: the latency histogram's, and the request
    /// counter's at status 200 (the other statuses appear as they are answered).
    pub fn register_routes<'a>(&self, routes: impl IntoIterator<Item = &'a str>) {
        for route in routes {
            self.http_request_duration_seconds
                .with_label_values(&[route]);
            self.http_requests_total.with_label_values(&[route, "200"]);
        }
    }

    pub fn record_signaling(&self, message_type: &str, result: &str) {
        self.signaling_messages_total
            .with_label_values(&[message_type, result])
            .inc();
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut buf = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
