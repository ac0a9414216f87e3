//! Berth's HTTP server: the OpenSandbox Lifecycle API v1 (ARCHITECTURE.md, "Wire contract") over any `Runtime`.
//!
//! [`router`] builds the whole app; tests drive it with `tower::ServiceExt::oneshot`. Routes are
//! served at `/v1` and at `/`. Every error is the two-field JSON body, made in one place
//! ([`error::ApiError`]), including axum's own rejections, unknown routes, wrong methods and
//! panics.

pub mod config;
mod detached;
pub mod error;
mod extract;
mod handlers;
pub mod list_query;
mod locks;
pub mod metrics;
pub mod openapi;
pub mod proxy;
pub mod reaper;
pub mod route_signing;
pub mod serve;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use berth_core::ErrorCode;
use berth_core::runtime::Runtime;
use berth_core::validate::StoragePolicy;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::error::ApiError;
use crate::locks::SandboxLocks;
use crate::metrics::Metrics;
use crate::reaper::{Clock, SystemClock};

/// The header clients authenticate with.
pub const API_KEY_HEADER: &str = "open-sandbox-api-key";
/// Largest accepted body of the API's own routes (the proxy streams bodies of any size).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// `server.request_deadline_seconds` by default.
pub const DEFAULT_REQUEST_DEADLINE: Duration = Duration::from_secs(600);

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The runtime sandboxes run on.
    pub runtime: Arc<dyn Runtime>,
    /// Validation rules from configuration.
    pub policy: Arc<StoragePolicy>,
    /// The key clients must send, if any.
    pub api_key: Option<Arc<str>>,
    /// Serve `/metrics` without the key.
    pub metrics_public: bool,
    /// Per-sandbox serialisation of mutating calls.
    pub locks: Arc<SandboxLocks>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Wakes the reaper after creates and renewals.
    pub reaper_wakeup: Arc<Notify>,
    /// Wall clock (replaceable in tests).
    pub clock: Arc<dyn Clock>,
    /// Longest a mutating call may take before its client gets `GENERAL::DEADLINE_EXCEEDED`
    /// (`server.request_deadline_seconds`).
    pub request_deadline: Duration,
    /// Mutating calls run detached from their connection; shutdown waits for these.
    pub in_flight: TaskTracker,
    /// The server proxy to sandboxes' ports, and the signer of endpoint routes.
    pub proxy: Arc<proxy::Proxy>,
}

impl AppState {
    /// State over `runtime` with `policy`; no API key, system clock.
    pub fn new(runtime: Arc<dyn Runtime>, policy: StoragePolicy) -> Self {
        Self {
            runtime,
            policy: Arc::new(policy),
            api_key: None,
            metrics_public: false,
            locks: Arc::default(),
            metrics: Arc::default(),
            reaper_wakeup: Arc::default(),
            clock: Arc::new(SystemClock),
            request_deadline: DEFAULT_REQUEST_DEADLINE,
            in_flight: TaskTracker::new(),
            proxy: Arc::new(proxy::Proxy::new(proxy::ProxyOptions::default())),
        }
    }

    /// Sets the server proxy's options (`[proxy]`, `server.public_url`,
    /// `server.route_signing_keys`).
    pub fn with_proxy(mut self, options: proxy::ProxyOptions) -> Self {
        self.proxy = Arc::new(proxy::Proxy::new(options));
        self
    }

    /// Sets `server.request_deadline_seconds`.
    pub fn with_request_deadline(mut self, deadline: Duration) -> Self {
        self.request_deadline = deadline;
        self
    }

    /// Waits up to `bound` for the mutating calls still running (shutdown); `false` if some
    /// were still running at the bound. A create cut off here is rolled back at the next start
    /// (its record says it was being created).
    pub async fn finish_in_flight(&self, bound: Duration) -> bool {
        self.in_flight.close();
        tokio::time::timeout(bound, self.in_flight.wait())
            .await
            .is_ok()
    }

    /// Requires `key` on every route but `/health` and `/openapi.json`.
    pub fn with_api_key(mut self, key: Option<String>, metrics_public: bool) -> Self {
        self.api_key = key.map(Into::into);
        self.metrics_public = metrics_public;
        self
    }
}

/// The lifecycle routes, mounted at `/v1` and at `/`.
fn lifecycle_routes() -> Router<AppState> {
    let routes = Router::new()
        .route(
            "/sandboxes",
            get(handlers::list_sandboxes).post(handlers::create_sandbox),
        )
        .route(
            "/sandboxes/{sandbox_id}",
            get(handlers::get_sandbox).delete(handlers::delete_sandbox),
        )
        .route(
            "/sandboxes/{sandbox_id}/pause",
            post(handlers::pause_sandbox),
        )
        .route(
            "/sandboxes/{sandbox_id}/resume",
            post(handlers::resume_sandbox),
        )
        .route(
            "/sandboxes/{sandbox_id}/renew-expiration",
            post(handlers::renew_sandbox),
        )
        .route(
            "/sandboxes/{sandbox_id}/metadata",
            axum::routing::patch(handlers::patch_metadata),
        )
        .route(
            "/sandboxes/{sandbox_id}/endpoints/{port}",
            get(handlers::get_endpoint),
        )
        .route(
            "/sandboxes/{sandbox_id}/snapshots",
            post(handlers::snapshots_not_implemented),
        )
        .route("/snapshots", get(handlers::snapshots_not_implemented))
        .route(
            "/snapshots/{snapshot_id}",
            get(handlers::snapshots_not_implemented).delete(handlers::snapshots_not_implemented),
        )
        .route("/health", get(handlers::health));
    let routes = proxy::ROUTES
        .iter()
        .fold(routes, |r, path| r.route(path, any(proxy::forward)));
    proxy::SIGNED_ROUTES
        .iter()
        .fold(routes, |r, path| r.route(path, any(proxy::forward_signed)))
}

/// The whole app.
pub fn router(state: AppState) -> Router {
    Router::new()
        .nest("/v1", lifecycle_routes())
        .merge(lifecycle_routes())
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(openapi::serve))
        .fallback(|| async { ApiError::new(ErrorCode::GeneralNotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::GeneralMethodNotAllowed,
                "this route does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(
                ErrorCode::GeneralInternalError,
                "internal error; the server log has the details",
            )
            .into_response()
        }))
        .layer(PropagateRequestIdLayer::new(HeaderName::from_static(
            "x-request-id",
        )))
        .layer(SetRequestIdLayer::new(
            HeaderName::from_static("x-request-id"),
            MakeRequestUuid,
        ))
        .with_state(state)
}

/// Paths served without the key.
fn is_open(path: &str, metrics_public: bool) -> bool {
    matches!(path, "/health" | "/v1/health" | "/openapi.json")
        || (metrics_public && path == "/metrics")
}

/// Checks the API key before anything else (also for unknown ids and routes), in constant time.
/// A signed proxy route is admitted by its token instead, which its handler checks first.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(key) = &state.api_key else {
        return next.run(request).await;
    };
    let signed = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| proxy::is_signed_route(p.as_str()));
    if signed || is_open(request.uri().path(), state.metrics_public) {
        return next.run(request).await;
    }
    match request.headers().get(API_KEY_HEADER) {
        None => ApiError::new(
            ErrorCode::MissingApiKey,
            "send the API key in the OPEN-SANDBOX-API-KEY header",
        )
        .into_response(),
        Some(given) if bool::from(given.as_bytes().ct_eq(key.as_bytes())) => {
            next.run(request).await
        }
        Some(_) => ApiError::new(
            ErrorCode::InvalidApiKey,
            "the OPEN-SANDBOX-API-KEY header does not match",
        )
        .into_response(),
    }
}

/// Records metrics and the access log line of every request. axum runs `Router::layer`
/// middleware after routing, so the route is the router's pattern (`MatchedPath`), never the
/// client's path: label values stay a closed set whatever clients send.
async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = request.method().clone();
    // The access log (target `berth_api::access`, level info): path without the query, the
    // request id clients can quote; never a header value or body (they may hold keys).
    let access = tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO).then(|| {
        let id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let path = request.uri().path();
        let signed = route.as_deref().is_some_and(proxy::is_signed_route);
        let path = if signed {
            proxy::path_for_log(path)
        } else {
            path.to_owned()
        };
        (path, id)
    });
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    let elapsed = started.elapsed();
    let route = route.as_deref().unwrap_or(metrics::UNMATCHED_ROUTE);
    state.metrics.record_request(
        metrics::method_label(&method),
        route,
        metrics::status_label(status),
        elapsed,
    );
    if let Some((path, request_id)) = access {
        tracing::info!(
            target: ACCESS_LOG,
            %method,
            path,
            %route,
            status = status.as_u16(),
            micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            request_id,
            "request"
        );
    }
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(%method, %route, "request answered 500");
    }
    response
}

/// The access log's `tracing` target: `log_level = "info,berth_api::access=off"` silences it.
pub const ACCESS_LOG: &str = "berth_api::access";
