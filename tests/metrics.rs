//! `GET /metrics` of a fresh server: every family of contract section 8 is there before
//! anything happened, each labelled one with every label value it will carry.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use support::db::TestDb;
use support::server::TestServer;

type Labels = BTreeMap<String, String>;

/// One family of the exposition: its `# TYPE` and the label sets of its samples (a
/// histogram's `_bucket`/`_sum`/`_count` samples count as its own, without `le`).
#[derive(Debug, Default)]
struct Family {
    kind: String,
    series: BTreeSet<Labels>,
    values: Vec<(Labels, f64)>,
}

/// A small reader of the Prometheus text format 0.0.4, enough for what the server writes:
/// `# TYPE` lines and `name{k="v",...} value` samples.
fn parse(text: &str) -> HashMap<String, Family> {
    let mut families: HashMap<String, Family> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            families.entry(name.to_owned()).or_default().kind = kind.to_owned();
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value.parse().expect("sample value is a number");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (
                name,
                parse_labels(rest.strip_suffix('}').expect("closing }")),
            ),
            None => (series, Labels::new()),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| families.get(*base).is_some_and(|f| f.kind == "histogram"))
            .unwrap_or(name);
        let mut labels = labels;
        labels.remove("le");
        let entry = families
            .get_mut(family)
            .unwrap_or_else(|| panic!("sample {name} before its # TYPE"));
        entry.series.insert(labels.clone());
        if family == name {
            entry.values.push((labels, value));
        }
    }
    families
}

fn parse_labels(text: &str) -> Labels {
    let mut labels = Labels::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
        // Values written by the server here never contain quotes or backslashes.
        let (value, after) = after.split_once('"').expect("closing quote");
        labels.insert(key.to_owned(), value.to_owned());
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    labels
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_server_exports_every_family_with_its_label_values() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let text = server.metrics().await;
    let families = parse(&text);
    let family = |name: &str, kind: &str| -> &Family {
        let f = families
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from a fresh server:\n{text}"));
        assert_eq!(f.kind, kind, "{name}");
        assert!(!f.series.is_empty(), "{name} has no series");
        f
    };
    // Every value of `label` in `values` has a series of its own.
    let has_values = |name: &str, kind: &str, label: &str, values: &[&str]| {
        let f = family(name, kind);
        let found: BTreeSet<&str> = f
            .series
            .iter()
            .filter_map(|l| l.get(label).map(String::as_str))
            .collect();
        for value in values {
            assert!(
                found.contains(value),
                "{name}{{{label}=\"{value}\"}} missing; found {found:?}"
            );
        }
    };

    for gauge in [
        "confab_calls_active",
        "confab_participants_joined",
        "confab_ws_connections",
        "confab_store_write_backlog",
    ] {
        family(gauge, "gauge");
    }
    for counter in ["confab_rtcp_nack_total", "confab_rtcp_pli_total"] {
        family(counter, "counter");
    }
    family("confab_forwarding_latency_seconds", "histogram");

    has_values(
        "confab_calls_total",
        "counter",
        "status",
        &[
            "completed",
            "missed",
            "rejected",
            "cancelled",
            "busy",
            "failed",
        ],
    );
    let signaling = family("confab_signaling_messages_total", "counter");
    for message_type in [
        "call:initiate",
        "call:accept",
        "call:reject",
        "call:join",
        "call:leave",
        "call:end",
        "call:media",
        "call:data",
        "rtc:offer",
        "rtc:answer",
        "rtc:candidate",
        "rtc:subscribe",
    ] {
        let series = labels(&[("type", message_type), ("result", "ok")]);
        assert!(
            signaling.series.contains(&series),
            "{message_type} ok missing"
        );
    }
    let routes = [
        "/api/v1/calls",
        "/api/v1/calls/{id}",
        "/api/v1/calls/{id}/accept",
        "/api/v1/conversations/{id}",
        "/api/v1/ice-servers",
        "/healthz",
        "/readyz",
        "/metrics",
        "/ws",
    ];
    has_values("confab_http_requests_total", "counter", "route", &routes);
    has_values("confab_http_requests_total", "counter", "status", &["200"]);
    has_values(
        "confab_http_request_duration_seconds",
        "histogram",
        "route",
        &routes,
    );
    has_values(
        "confab_peer_connections",
        "gauge",
        "role",
        &["publisher", "subscriber"],
    );
    for name in [
        "confab_rtp_packets_forwarded_total",
        "confab_rtp_bytes_forwarded_total",
    ] {
        has_values(name, "counter", "kind", &["audio", "video"]);
    }
    has_values(
        "confab_rtp_packets_dropped_total",
        "counter",
        "reason",
        &[
            "not_ready",
            "no_codec",
            "send_failed",
            "socket_full",
            "unknown_source",
        ],
    );
    for name in [
        "confab_packet_loss_ratio",
        "confab_jitter_seconds",
        "confab_rtt_seconds",
    ] {
        has_values(name, "histogram", "direction", &["inbound", "outbound"]);
    }
    has_values(
        "confab_store_write_failures_total",
        "counter",
        "what",
        &["call", "media_event", "quality_sample", "batch"],
    );

    // The v2 families, with what a single node without webhooks truly has.
    has_values(
        "confab_webhook_deliveries_total",
        "counter",
        "result",
        &["dropped", "failed", "gave_up", "ok"],
    );
    has_values(
        "confab_cluster_relay_messages_total",
        "counter",
        "direction",
        &["inbound", "outbound"],
    );
    let value = |name: &str| family(name, "gauge").values[0].1;
    assert_eq!(value("confab_cluster_nodes"), 1.0);
    assert_eq!(value("confab_node_draining"), 0.0);

    // Nothing happened yet: every counter of the contract's families is 0.
    for (name, f) in &families {
        if f.kind == "counter" && name != "confab_http_requests_total" {
            for (labels, value) in &f.values {
                assert_eq!(*value, 0.0, "{name}{labels:?}");
            }
        }
    }
}
