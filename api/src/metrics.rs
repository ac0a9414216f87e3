//! Prometheus metrics (`prometheus-client`, text format 0.0.4): requests by method, route and
//! status, a latency histogram by method and route, sandboxes by state (counted by the runtime at
//! scrape time, from its index: a scrape never lists every sandbox),
//! and reaper actions.
//!
//! Every label value comes from a closed set, so no client can grow the server's memory or the
//! scrape by inventing methods or paths: methods outside the standard ones are `OTHER`, routes are
//! the router's own patterns (or `unmatched`; a proxied request counts under its proxy route,
//! never its path), and statuses are the registered ones (a status a sandbox invents through the
//! proxy counts as its class, `x00`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use berth_core::model::SandboxState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The route label of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The method label: the standard methods by name, anything else `OTHER`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The status label: a registered status as it is, any other as its class (`599` → `500`).
pub fn status_label(status: axum::http::StatusCode) -> u16 {
    if status.canonical_reason().is_some() {
        status.as_u16()
    } else {
        status.as_u16() / 100 * 100
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReaperLabels {
    result: &'static str,
}

/// What a reaper pass did with one expired sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaperResult {
    /// Deleted.
    Deleted,
    /// Already gone when the reaper came.
    AlreadyGone,
    /// The delete failed (retried on the next pass).
    Failed,
}

impl ReaperResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::AlreadyGone => "already_gone",
            Self::Failed => "failed",
        }
    }
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    sandboxes: Family<StateLabels, Gauge>,
    reaper: Family<ReaperLabels, Counter>,
    registry: Registry,
    /// Scrapes set the sandbox gauges, then encode: one at a time.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: LatencyFamily =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        let sandboxes = Family::<StateLabels, Gauge>::default();
        let reaper = Family::<ReaperLabels, Counter>::default();
        let mut registry = Registry::default();
        registry.register(
            "berth_http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register_with_unit(
            "berth_http_request_duration",
            "Request latency by method and route",
            Unit::Seconds,
            latency.clone(),
        );
        registry.register("berth_sandboxes", "Sandboxes by state", sandboxes.clone());
        registry.register(
            "berth_reaper_actions",
            "Expired sandboxes handled by the reaper",
            reaper.clone(),
        );
        // Every reaper result shows from the start, so a dashboard can tell 0 from absent.
        for result in [
            ReaperResult::Deleted,
            ReaperResult::AlreadyGone,
            ReaperResult::Failed,
        ] {
            let _ = reaper.get_or_create(&ReaperLabels {
                result: result.as_str(),
            });
        }
        Self {
            requests,
            latency,
            sandboxes,
            reaper,
            registry,
            scrape: Mutex::new(()),
        }
    }
}

/// The latency family's type, named once (its constructor is a plain function pointer).
type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

impl Metrics {
    /// Records one request. `route` must be one of the router's patterns (axum's `MatchedPath`)
    /// or [`UNMATCHED_ROUTE`], never a request's own path; `method` is from [`method_label`].
    pub fn record_request(&self, method: &'static str, route: &str, status: u16, took: Duration) {
        let route = route.to_owned();
        self.latency
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    /// Records a reaper action.
    pub fn record_reaper(&self, result: ReaperResult) {
        self.reaper
            .get_or_create(&ReaperLabels {
                result: result.as_str(),
            })
            .inc();
    }

    /// How many reaper actions of a kind happened.
    pub fn reaper_count(&self, result: ReaperResult) -> u64 {
        self.reaper
            .get_or_create(&ReaperLabels {
                result: result.as_str(),
            })
            .get()
    }

    /// The text exposition, with the sandbox counts per state the runtime gave (a state it
    /// does not name has none).
    pub fn render(&self, sandboxes: &BTreeMap<SandboxState, usize>) -> String {
        let _scrape = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for state in SandboxState::ALL {
            let n = sandboxes.get(&state).copied().unwrap_or(0);
            self.sandboxes
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unregistered_statuses_count_as_their_class() {
        use axum::http::StatusCode;
        for (status, label) in [(200, 200), (429, 429), (599, 500), (299, 200), (999, 900)] {
            assert_eq!(
                status_label(StatusCode::from_u16(status).unwrap()),
                label,
                "{status}"
            );
        }
    }
}
