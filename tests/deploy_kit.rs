//! The deploy kit's dashboards and alerts ask only for what a server exports.
//!
//! Every metric named in `deploy/grafana/confab.json` and `deploy/prometheus/alerts.yaml` must
//! be a series of a fresh server's `/metrics` (every family is exported from the start, with
//! every label value it will carry, section 10 of docs/api.md), and every exact label matcher
//! (`direction="outbound"`) must match one of its series. A renamed metric or label value
//! thus breaks this test instead of silently emptying a panel or muting an alert.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::db::TestDb;
use support::server::TestServer;

const DASHBOARD: &str = include_str!("../deploy/grafana/confab.json");
const ALERTS: &str = include_str!("../deploy/prometheus/alerts.yaml");

/// Labels Prometheus adds at scrape time; the server never exports them.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// A metric name used by a query and the exact `label="value"` matchers next to it.
#[derive(Debug)]
struct Use {
    name: String,
    matchers: Vec<(String, String)>,
}

/// Finds each `confab_…` name in PromQL text, with the equality matchers of its selector.
fn uses(text: &str) -> Vec<Use> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("confab_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let mut matchers = Vec::new();
        if let Some(selector) = tail[end..].strip_prefix('{') {
            let close = selector.find('}').expect("a selector closes");
            for matcher in selector[..close].split(',') {
                let matcher = matcher.trim();
                // Only `=`: regex and negative matchers may name values that appear later.
                if let Some((label, value)) = matcher.split_once('=')
                    && !label.ends_with('!')
                    && !value.starts_with('~')
                {
                    let value = value.trim().trim_matches('"');
                    matchers.push((label.trim().to_owned(), value.to_owned()));
                }
            }
        }
        found.push(Use { name, matchers });
        rest = &tail[end..];
    }
    found
}

/// Every query of the dashboard: panel targets and template variable queries.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(query) = variable["query"]["query"].as_str() {
            queries.push(query.to_owned());
        }
    }
    queries
}

/// Series names of the exposition with the label sets of their samples.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<Vec<(String, String)>>> {
    let mut series: BTreeMap<String, BTreeSet<Vec<(String, String)>>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let sample = line.rsplit_once(' ').expect("sample has a value").0;
        let (name, labels) = match sample.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("closing }");
                let labels = labels
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                    .collect();
                (name, labels)
            }
            None => (sample, Vec::new()),
        };
        series.entry(name.to_owned()).or_default().insert(labels);
    }
    series
}

#[tokio::test]
async fn dashboards_and_alerts_use_only_exported_metrics() {
    let db = TestDb::sqlite();
    let server = TestServer::start(&db).await;
    let metrics = exported(&server.metrics().await);
    server.stop().await;

    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 20, "the dashboard has its queries");
    let mut all: Vec<(&str, Use)> = queries
        .iter()
        .flat_map(|q| uses(q).into_iter().map(|u| ("confab.json", u)))
        .collect();
    let alert_uses = uses(ALERTS);
    assert!(alert_uses.len() > 10, "the alerts name their metrics");
    all.extend(alert_uses.into_iter().map(|u| ("alerts.yaml", u)));

    let mut problems = Vec::new();
    for (file, used) in &all {
        let Some(label_sets) = metrics.get(&used.name) else {
            problems.push(format!("{file}: {} is not exported", used.name));
            continue;
        };
        for (label, value) in &used.matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            let matched = label_sets
                .iter()
                .any(|set| set.iter().any(|(k, v)| k == label && v == value));
            if !matched {
                problems.push(format!(
                    "{file}: no series {}{{{label}=\"{value}\"}}",
                    used.name
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scanner_finds_names_and_exact_matchers() {
    let found = uses(
        r#"sum(rate(confab_rtt_seconds_bucket{instance=~"$instance",direction="outbound"}[5m])) / confab_calls_active"#,
    );
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].name, "confab_rtt_seconds_bucket");
    assert_eq!(
        found[0].matchers,
        vec![("direction".to_owned(), "outbound".to_owned())]
    );
    assert_eq!(found[1].name, "confab_calls_active");
    assert!(found[1].matchers.is_empty());
}
