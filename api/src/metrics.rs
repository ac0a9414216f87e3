//! Prometheus metrics in the text format: requests by route and status, a latency histogram by
//! route, sandboxes by state (read at scrape time), and reaper actions.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use berth_core::model::{SandboxRecord, SandboxState};

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    reaper: BTreeMap<&'static str, u64>,
}

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one request.
    pub fn record_request(&self, route: &str, status: u16, took: Duration) {
        let mut inner = self.inner();
        *inner
            .requests
            .entry((route.to_owned(), status))
            .or_default() += 1;
        let h = inner.latency.entry(route.to_owned()).or_default();
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Records a reaper action (`deleted`, `already_gone`, `failed`).
    pub fn record_reaper(&self, result: &'static str) {
        *self.inner().reaper.entry(result).or_default() += 1;
    }

    /// How many reaper actions of a kind happened.
    pub fn reaper_count(&self, result: &str) -> u64 {
        self.inner().reaper.get(result).copied().unwrap_or(0)
    }

    /// The text exposition, with sandbox counts from `sandboxes`.
    pub fn render(&self, sandboxes: &[SandboxRecord]) -> String {
        let inner = self.inner();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP berth_http_requests_total HTTP requests by route and status.\n# TYPE berth_http_requests_total counter"
        );
        for ((route, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "berth_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP berth_http_request_duration_seconds Request latency by route.\n# TYPE berth_http_request_duration_seconds histogram"
        );
        for (route, h) in &inner.latency {
            for (bound, count) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "berth_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "berth_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "berth_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "berth_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP berth_sandboxes Sandboxes by state.\n# TYPE berth_sandboxes gauge"
        );
        for state in SandboxState::ALL {
            let n = sandboxes.iter().filter(|s| s.status.state == state).count();
            let _ = writeln!(out, "berth_sandboxes{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP berth_reaper_actions_total Expired sandboxes handled by the reaper.\n# TYPE berth_reaper_actions_total counter"
        );
        for result in ["deleted", "already_gone", "failed"] {
            let _ = writeln!(
                out,
                "berth_reaper_actions_total{{result=\"{result}\"}} {}",
                inner.reaper.get(result).copied().unwrap_or(0)
            );
        }
        out
    }
}
