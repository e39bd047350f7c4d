//! The server's own forwarding-latency histogram, read from its `/metrics` over the window.
//!
//! The load generator's latency runs from a publisher bot's send to a subscriber bot's receive,
//! so it includes the bots' own rtc egress and ingress on a busy core. The server's histogram
//! (`confab_forwarding_latency_seconds`: reading a publisher's datagram to handing the forwarded
//! one to the kernel) is its share alone; the two side by side say which side a tail is on.

use std::time::Duration;

const FAMILY: &str = "confab_forwarding_latency_seconds_bucket";

/// One reading of the histogram: cumulative counts by upper bound in seconds, `+Inf` last.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyBuckets(Vec<(f64, u64)>);

impl LatencyBuckets {
    /// Reads the histogram off the server, or `None` when it cannot be read (a metrics token
    /// the load generator does not have, an older server).
    pub async fn scrape(server: &str) -> Option<LatencyBuckets> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        let response = client.get(format!("{server}/metrics")).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        Self::parse(&response.text().await.ok()?)
    }

    /// The histogram's buckets in a Prometheus text exposition.
    pub fn parse(text: &str) -> Option<LatencyBuckets> {
        let mut buckets: Vec<(f64, u64)> = text
            .lines()
            .filter_map(|line| line.strip_prefix(FAMILY))
            .filter_map(|rest| {
                let le = rest.split("le=\"").nth(1)?.split('"').next()?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                let count = rest.rsplit(' ').next()?.trim().parse::<f64>().ok()?;
                Some((bound, count as u64))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        (!buckets.is_empty()).then_some(LatencyBuckets(buckets))
    }

    /// The `q` quantile of what was observed between `earlier` and this reading, in ms, as the
    /// upper bound of the bucket it falls in (infinite when it falls past the last bound).
    pub fn quantile_ms_since(&self, earlier: &LatencyBuckets, q: f64) -> Option<f64> {
        let delta: Vec<(f64, u64)> = self
            .0
            .iter()
            .map(|&(bound, count)| {
                let before = earlier
                    .0
                    .iter()
                    .find(|(b, _)| *b == bound)
                    .map_or(0, |(_, c)| *c);
                (bound, count.saturating_sub(before))
            })
            .collect();
        let total = delta.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        delta
            .iter()
            .find(|(_, cumulative)| *cumulative >= rank)
            .map(|(bound, _)| bound * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(counts: [u64; 4]) -> String {
        format!(
            "# TYPE confab_forwarding_latency_seconds histogram\n\
             confab_forwarding_latency_seconds_bucket{{le=\"0.0001\"}} {}\n\
             confab_forwarding_latency_seconds_bucket{{le=\"0.001\"}} {}\n\
             confab_forwarding_latency_seconds_bucket{{le=\"0.01\"}} {}\n\
             confab_forwarding_latency_seconds_bucket{{le=\"+Inf\"}} {}\n\
             confab_forwarding_latency_seconds_sum 1.5\n\
             confab_forwarding_latency_seconds_count {}\n",
            counts[0], counts[1], counts[2], counts[3], counts[3]
        )
    }

    #[test]
    fn quantiles_come_from_the_window_only() {
        let start = LatencyBuckets::parse(&exposition([1000, 1000, 1000, 1000])).expect("start");
        // In the window: 90 under 100 µs, 9 more under 1 ms, 1 under 10 ms.
        let end = LatencyBuckets::parse(&exposition([1090, 1099, 1100, 1100])).expect("end");
        assert_eq!(end.quantile_ms_since(&start, 0.5), Some(0.1));
        assert_eq!(end.quantile_ms_since(&start, 0.99), Some(1.0));
        assert_eq!(end.quantile_ms_since(&start, 1.0), Some(10.0));
        assert_eq!(
            start.quantile_ms_since(&start, 0.5),
            None,
            "nothing observed"
        );
    }

    #[test]
    fn other_families_and_garbage_are_ignored() {
        assert_eq!(
            LatencyBuckets::parse("confab_calls_active 3\nnot a metric"),
            None
        );
    }
}
