//! The route handlers of the OpenSandbox Lifecycle API v1.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::ErrorCode;
use berth_core::model::{MetadataPatch, SandboxId, SandboxSpec};
use berth_core::runtime::CreateSandbox;
use berth_core::validate::{check_port, check_renewal};
use berth_core::wire;
use chrono::SubsecRound;

use crate::error::ApiError;
use crate::extract::{JsonBody, QueryPairs, SandboxPath};
use crate::list_query::ListQuery;
use crate::{AppState, detached};

fn new_id() -> SandboxId {
    SandboxId::new(&uuid::Uuid::new_v4().to_string())
        .unwrap_or_else(|_| unreachable!("a v4 UUID is a DNS label"))
}

fn only_params(pairs: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    match pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some((k, _)) => Err(ApiError::new(
            ErrorCode::GeneralInvalidQuery,
            if allowed.is_empty() {
                format!("unknown query parameter {k:?}; this route takes none")
            } else {
                format!("unknown query parameter {k:?}; use {}", allowed.join(", "))
            },
        )),
    }
}

fn bool_param(pairs: &[(String, String)], name: &str) -> Result<bool, ApiError> {
    match pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
    {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::new(
            ErrorCode::GeneralInvalidQuery,
            format!("{name}: {other:?} is not true or false"),
        )),
    }
}

/// Create a sandbox (synchronous: 202 once it runs), or with `?dryRun=true` show what would be made.
#[utoipa::path(post, path = "/v1/sandboxes", tag = "Sandboxes",
    params(("dryRun" = Option<bool>, Query, description = "Validate and render only; nothing is created")),
    request_body = wire::CreateSandboxRequest,
    responses(
        (status = 202, description = "Created and running", body = wire::CreateSandboxResponse),
        (status = 200, description = "Dry run", body = wire::DryRunResponse),
        (status = 400, description = "Invalid request", body = wire::ErrorResponse),
        (status = 401, description = "Missing or wrong API key", body = wire::ErrorResponse),
        (status = 503, description = "Runtime unreachable", body = wire::ErrorResponse),
        (status = 504, description = "Did not run in time (SANDBOX::START_TIMEOUT; Kubernetes: kubernetes.start_timeout_seconds, the message names why)", body = wire::ErrorResponse)))]
pub(crate) async fn create_sandbox(
    State(state): State<AppState>,
    QueryPairs(query): QueryPairs,
    JsonBody(request): JsonBody<wire::CreateSandboxRequest>,
) -> Result<Response, ApiError> {
    only_params(&query, &["dryRun"])?;
    let dry_run = bool_param(&query, "dryRun")?;
    let spec = SandboxSpec::from_request(request, &state.policy)?;
    state.runtime.capabilities().check(&spec)?;
    let create = CreateSandbox {
        id: new_id(),
        spec,
        created_at: state.clock.now().trunc_subsecs(3),
    };
    if dry_run {
        let rendered = state.runtime.render(&create).await?;
        let body = wire::DryRunResponse {
            sandbox: wire::Sandbox::from(&rendered.sandbox),
            runtime: rendered.runtime_object,
        };
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    let record = detached::create(&state, create).await?;
    state.reaper_wakeup.notify_one();
    let mut response = (
        StatusCode::ACCEPTED,
        Json(wire::CreateSandboxResponse::from(&record)),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/sandboxes/{}", record.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// List sandboxes, newest first.
#[utoipa::path(get, path = "/v1/sandboxes", tag = "Sandboxes",
    params(
        ("state" = Option<Vec<String>>, Query, description = "Repeatable; any of these states (case-insensitive)"),
        ("metadata" = Option<String>, Query, description = "URL-encoded k=v&k2=v2; all must match"),
        ("page" = Option<u32>, Query, minimum = 1, maximum = 2147483647),
        ("pageSize" = Option<u32>, Query, minimum = 1, maximum = 200)),
    responses(
        (status = 200, description = "A page of sandboxes", body = wire::ListSandboxesResponse),
        (status = 400, description = "Invalid query", body = wire::ErrorResponse),
        (status = 401, description = "Missing or wrong API key", body = wire::ErrorResponse)))]
pub(crate) async fn list_sandboxes(
    State(state): State<AppState>,
    QueryPairs(query): QueryPairs,
) -> Result<PresizedJson<wire::ListSandboxesResponse>, ApiError> {
    let query = ListQuery::parse(&query)?;
    let page = state.runtime.list_page(&query.selection()).await?;
    // About 1 KiB per sandbox: sized up front, the body is not copied while it grows.
    let capacity = 256 + 1024 * page.items.len();
    Ok(PresizedJson(query.response(page), capacity))
}

/// A JSON response serialised into a buffer of the given size.
pub(crate) struct PresizedJson<T>(T, usize);

impl<T: serde::Serialize> IntoResponse for PresizedJson<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(self.1);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            Err(e) => {
                tracing::error!(error = %e, "serialising a response");
                ApiError::new(
                    ErrorCode::GeneralInternalError,
                    "could not serialise the response",
                )
                .into_response()
            }
        }
    }
}

/// One sandbox.
#[utoipa::path(get, path = "/v1/sandboxes/{sandboxId}", tag = "Sandboxes",
    params(("sandboxId" = String, Path)),
    responses(
        (status = 200, description = "The sandbox", body = wire::Sandbox),
        (status = 404, description = "No such sandbox", body = wire::ErrorResponse)))]
pub(crate) async fn get_sandbox(
    State(state): State<AppState>,
    QueryPairs(query): QueryPairs,
    SandboxPath(id): SandboxPath,
) -> Result<Json<wire::Sandbox>, ApiError> {
    only_params(&query, &[])?;
    Ok(Json(wire::Sandbox::from(&state.runtime.get(&id).await?)))
}

/// Delete a sandbox and release what it holds.
#[utoipa::path(delete, path = "/v1/sandboxes/{sandboxId}", tag = "Sandboxes",
    params(("sandboxId" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such sandbox", body = wire::ErrorResponse)))]
pub(crate) async fn delete_sandbox(
    State(state): State<AppState>,
    SandboxPath(id): SandboxPath,
) -> Result<StatusCode, ApiError> {
    detached::on_sandbox(&state, id, |state, id| async move {
        state.runtime.delete(&id).await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a running sandbox.
#[utoipa::path(post, path = "/v1/sandboxes/{sandboxId}/pause", tag = "Sandboxes",
    params(("sandboxId" = String, Path)),
    responses((status = 202, description = "Paused"),
        (status = 400, description = "The runtime cannot pause (SANDBOX::UNSUPPORTED_FEATURE; Kubernetes)", body = wire::ErrorResponse),
        (status = 404, description = "No such sandbox", body = wire::ErrorResponse),
        (status = 409, description = "Not running", body = wire::ErrorResponse)))]
pub(crate) async fn pause_sandbox(
    State(state): State<AppState>,
    SandboxPath(id): SandboxPath,
) -> Result<StatusCode, ApiError> {
    detached::on_sandbox(&state, id, |state, id| async move {
        state.runtime.pause(&id).await
    })
    .await?;
    Ok(StatusCode::ACCEPTED)
}

/// Resume a paused sandbox.
#[utoipa::path(post, path = "/v1/sandboxes/{sandboxId}/resume", tag = "Sandboxes",
    params(("sandboxId" = String, Path)),
    responses((status = 202, description = "Resumed"),
        (status = 400, description = "The runtime cannot pause (SANDBOX::UNSUPPORTED_FEATURE; Kubernetes)", body = wire::ErrorResponse),
        (status = 404, description = "No such sandbox", body = wire::ErrorResponse),
        (status = 409, description = "Not paused", body = wire::ErrorResponse)))]
pub(crate) async fn resume_sandbox(
    State(state): State<AppState>,
    SandboxPath(id): SandboxPath,
) -> Result<StatusCode, ApiError> {
    detached::on_sandbox(&state, id, |state, id| async move {
        state.runtime.resume(&id).await
    })
    .await?;
    Ok(StatusCode::ACCEPTED)
}

/// Set a new absolute expiry (in the future).
#[utoipa::path(post, path = "/v1/sandboxes/{sandboxId}/renew-expiration", tag = "Sandboxes",
    params(("sandboxId" = String, Path)),
    request_body = wire::RenewSandboxExpirationRequest,
    responses((status = 200, description = "Renewed", body = wire::RenewSandboxExpirationResponse),
        (status = 400, description = "Not in the future", body = wire::ErrorResponse),
        (status = 404, description = "No such sandbox", body = wire::ErrorResponse)))]
pub(crate) async fn renew_sandbox(
    State(state): State<AppState>,
    SandboxPath(id): SandboxPath,
    JsonBody(request): JsonBody<wire::RenewSandboxExpirationRequest>,
) -> Result<Json<wire::RenewSandboxExpirationResponse>, ApiError> {
    check_renewal(request.expires_at, state.clock.now(), &state.policy)?;
    let expires_at = detached::on_sandbox(&state, id, move |state, id| async move {
        state.runtime.renew(&id, request.expires_at).await
    })
    .await?;
    state.reaper_wakeup.notify_one();
    Ok(Json(wire::RenewSandboxExpirationResponse { expires_at }))
}

/// Merge-patch metadata (RFC 7396), all or nothing.
#[utoipa::path(patch, path = "/v1/sandboxes/{sandboxId}/metadata", tag = "Sandboxes",
    params(("sandboxId" = String, Path)),
    request_body = wire::PatchSandboxMetadataRequest,
    responses((status = 200, description = "The patched sandbox", body = wire::Sandbox),
        (status = 400, description = "Invalid key or value", body = wire::ErrorResponse),
        (status = 404, description = "No such sandbox", body = wire::ErrorResponse)))]
pub(crate) async fn patch_metadata(
    State(state): State<AppState>,
    SandboxPath(id): SandboxPath,
    JsonBody(patch): JsonBody<wire::PatchSandboxMetadataRequest>,
) -> Result<Json<wire::Sandbox>, ApiError> {
    let patch = MetadataPatch::from_request(&patch)?;
    let record = detached::on_sandbox(&state, id, move |state, id| async move {
        state.runtime.patch_metadata(&id, &patch).await
    })
    .await?;
    Ok(Json(wire::Sandbox::from(&record)))
}

/// Where a port of the sandbox is reachable: `host:port` (no scheme); with
/// `use_server_proxy=true` the server proxy's route to it; with `expires` a signed proxy route
/// that needs no API key until then.
#[utoipa::path(get, path = "/v1/sandboxes/{sandboxId}/endpoints/{port}", tag = "Sandboxes",
    params(("sandboxId" = String, Path), ("port" = u16, Path, minimum = 1, maximum = 65535),
        ("use_server_proxy" = Option<bool>, Query,
            description = "Answer the server proxy's route, `<public base>/v1/sandboxes/{sandboxId}/proxy/{port}` (no scheme; the base is `server.public_url` or the request's Host). Requests there need the API key."),
        ("expires" = Option<i64>, Query,
            description = "Answer a signed proxy route, valid until this time (epoch seconds, in the future and at most 30 days ahead): `<public base>/v1/sandboxes/{sandboxId}/signed/{token}/proxy/{port}`, usable without the API key. Not with `use_server_proxy=true`.")),
    responses((status = 200, description = "The endpoint", body = wire::Endpoint),
        (status = 400, description = "Invalid port or parameters", body = wire::ErrorResponse),
        (status = 404, description = "No such sandbox or endpoint", body = wire::ErrorResponse)))]
pub(crate) async fn get_endpoint(
    State(state): State<AppState>,
    SandboxPath(id): SandboxPath,
    Path((_, port)): Path<(String, String)>,
    QueryPairs(query): QueryPairs,
    headers: HeaderMap,
) -> Result<Json<wire::Endpoint>, ApiError> {
    only_params(&query, &["use_server_proxy", "expires"])?;
    let use_server_proxy = bool_param(&query, "use_server_proxy")?;
    let expires = query
        .iter()
        .rev()
        .find(|(k, _)| k == "expires")
        .map(|(_, v)| v.as_str());
    if use_server_proxy && expires.is_some() {
        return Err(ApiError::new(
            ErrorCode::SandboxInvalidParameter,
            "expires cannot be combined with use_server_proxy=true: a signed route already goes through the server proxy",
        ));
    }
    let port = port.parse::<i64>().map_err(|_| {
        ApiError::new(
            ErrorCode::SandboxInvalidPort,
            format!("port: {port:?} is not a number from 1 to 65535"),
        )
    })?;
    let port = check_port(port)?;
    let expires = expires
        .map(|raw| crate::route_signing::check_expires(raw, state.clock.now()))
        .transpose()?;
    let direct = state.runtime.endpoint(&id, port).await?;
    if !use_server_proxy && expires.is_none() {
        return Ok(Json(direct));
    }
    let base = match state.proxy.public_url() {
        Some(base) => base.to_owned(),
        None => headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .map(|h| h.trim_end_matches('/').to_owned())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::SandboxInvalidParameter,
                    "the request has no usable Host header to build the proxy endpoint from; set server.public_url",
                )
            })?,
    };
    let endpoint = match expires {
        Some(expires) => {
            let token = state.proxy.signer().sign(id.as_str(), port, expires)?;
            format!("{base}/v1/sandboxes/{id}/signed/{token}/proxy/{port}")
        }
        None => format!("{base}/v1/sandboxes/{id}/proxy/{port}"),
    };
    Ok(Json(wire::Endpoint {
        endpoint,
        headers: None,
    }))
}

/// The snapshot routes of the spec: not implemented.
pub(crate) async fn snapshots_not_implemented() -> ApiError {
    ApiError::new(
        ErrorCode::SnapshotNotImplemented,
        "snapshots are not implemented by Berth",
    )
}

/// Liveness and whether the runtime answers.
#[utoipa::path(get, path = "/health", tag = "Server", security(()),
    responses((status = 200, description = "Serving; the runtime answers", body = wire::HealthResponse),
        (status = 503, description = "Serving; the runtime does not answer", body = wire::HealthResponse)))]
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    let (status, health) = match state.runtime.ping().await {
        Ok(()) => (
            StatusCode::OK,
            wire::HealthResponse {
                status: "healthy".into(),
                runtime: "reachable".into(),
                message: None,
            },
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            wire::HealthResponse {
                status: "degraded".into(),
                runtime: "unreachable".into(),
                message: Some(e.to_string()),
            },
        ),
    };
    (status, Json(health)).into_response()
}

/// Prometheus metrics.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let sandboxes = match state.runtime.count_by_state().await {
        Ok(counts) => counts,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the runtime cannot count sandboxes");
            std::collections::BTreeMap::new()
        }
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    (headers, state.metrics.render(&sandboxes)).into_response()
}
