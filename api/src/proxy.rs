//! The server proxy: `/{v1/}sandboxes/{id}/proxy/{port}/{*path}` forwards any request to the
//! sandbox's port, and `/{v1/}sandboxes/{id}/signed/{token}/proxy/{port}/{*path}` does the same
//! for a holder of a signed route instead of the API key ([`crate::route_signing`]).
//!
//! Bodies stream both ways, frame by frame, never collected (uploads, server-sent events, long
//! polls); an HTTP/1.1 `Upgrade` (WebSocket) is relayed byte for byte once both sides switched.
//! Hop-by-hop headers are removed, `X-Forwarded-For/Proto/Host` added, and Berth's API key
//! header never leaves the server. Where a sandbox's port is comes from `Runtime::proxy_endpoint`.
//!
//! Connections to sandboxes are pooled per sandbox id and address: the pool key carries both,
//! so when an address is reused by a later sandbox, no connection made for the earlier one
//! carries the later one's traffic. Each sandbox may have at most
//! `proxy.max_connections_per_sandbox` proxied requests and WebSockets open at once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use berth_core::ErrorCode;
use berth_core::model::{SandboxId, SandboxState};
use berth_core::validate::check_port;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::error::ApiError;
use crate::route_signing::{KeySource, RouteSigner};
use crate::{API_KEY_HEADER, AppState};

/// The proxy routes (mounted at `/v1` and at `/`): without a path, with `/`, with a path.
pub(crate) const ROUTES: [&str; 3] = [
    "/sandboxes/{sandbox_id}/proxy/{port}",
    "/sandboxes/{sandbox_id}/proxy/{port}/",
    "/sandboxes/{sandbox_id}/proxy/{port}/{*path}",
];

/// The signed proxy routes: admitted by their token instead of the API key.
pub(crate) const SIGNED_ROUTES: [&str; 3] = [
    "/sandboxes/{sandbox_id}/signed/{token}/proxy/{port}",
    "/sandboxes/{sandbox_id}/signed/{token}/proxy/{port}/",
    "/sandboxes/{sandbox_id}/signed/{token}/proxy/{port}/{*path}",
];

/// Whether `pattern` (a matched route, at `/v1` or at `/`) is a signed proxy route.
pub(crate) fn is_signed_route(pattern: &str) -> bool {
    let pattern = pattern.strip_prefix("/v1").unwrap_or(pattern);
    SIGNED_ROUTES.contains(&pattern)
}

/// A signed route's path with its token blanked, for the access log (a token is a credential).
pub(crate) fn path_for_log(path: &str) -> String {
    match path.split_once("/signed/") {
        Some((before, after)) => {
            let rest = after.find('/').map_or("", |i| &after[i..]);
            format!("{before}/signed/-{rest}")
        }
        None => path.to_owned(),
    }
}

/// How long a resolved sandbox address is reused before `Runtime::proxy_endpoint` is asked again
/// (on Docker that can be an engine call; a sandbox keeps its address while it runs).
const ADDRESS_TTL: Duration = Duration::from_secs(5);
/// Most cached addresses; past it, stale ones are dropped, then all.
const MAX_ADDRESSES: usize = 4096;
/// Most idle pooled connections kept per sandbox and address.
const MAX_IDLE_PER_SANDBOX: usize = 32;

/// The server proxy's settings (`[proxy]`, `server.public_url`, `server.route_signing_keys`).
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Longest wait for a TCP connection to a sandbox (then 504).
    pub connect_timeout: Duration,
    /// How long a pooled connection may stay unused.
    pub idle_timeout: Duration,
    /// Most proxied requests and WebSockets open at once per sandbox (then 429).
    pub max_connections_per_sandbox: usize,
    /// The server's public base for proxy endpoints (no scheme, see [`public_base`]); `None`:
    /// the request's `Host`.
    pub public_url: Option<String>,
    /// Where route signing keys come from.
    pub route_keys: KeySource,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
            max_connections_per_sandbox: 256,
            public_url: None,
            route_keys: KeySource::Ephemeral,
        }
    }
}

/// `server.public_url` as endpoints carry it: `host[:port][/prefix]`, without the scheme (the
/// spec's endpoints have none) or a trailing `/`.
pub fn public_base(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?
        .trim_end_matches('/');
    if rest.is_empty() || rest.starts_with('/') {
        return Err("names no host".into());
    }
    if !rest.bytes().all(|b| b.is_ascii_graphic()) || rest.contains(['?', '#', '@', '\\']) {
        return Err(
            "must be http(s)://host[:port][/path], without spaces, user, query or fragment".into(),
        );
    }
    Ok(rest.to_owned())
}

/// The proxy's shared state: the pooled client, open connections per sandbox, cached addresses,
/// and the route signer.
pub struct Proxy {
    client: Client<Connector, Body>,
    max_per_sandbox: usize,
    open: Arc<Mutex<HashMap<SandboxId, usize>>>,
    addresses: Mutex<HashMap<(SandboxId, u16), Resolved>>,
    public_url: Option<String>,
    signer: RouteSigner,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("max_per_sandbox", &self.max_per_sandbox)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Resolved {
    address: SocketAddr,
    headers: Vec<(HeaderName, HeaderValue)>,
    at: Instant,
}

impl Proxy {
    /// A proxy with `options`; connections are made on first use.
    pub fn new(options: ProxyOptions) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(options.idle_timeout)
            .pool_max_idle_per_host(MAX_IDLE_PER_SANDBOX)
            .pool_timer(TokioTimer::new())
            // The Host header is the sandbox's address, set below; the URI's host is the pool key.
            .set_host(false)
            .build(Connector {
                timeout: options.connect_timeout,
            });
        Self {
            client,
            max_per_sandbox: options.max_connections_per_sandbox.max(1),
            open: Arc::default(),
            addresses: Mutex::default(),
            public_url: options.public_url,
            signer: RouteSigner::new(options.route_keys),
        }
    }

    /// The public base of proxy endpoints (`server.public_url`), if configured.
    pub(crate) fn public_url(&self) -> Option<&str> {
        self.public_url.as_deref()
    }

    /// Signs and checks route tokens.
    pub(crate) fn signer(&self) -> &RouteSigner {
        &self.signer
    }

    /// How many sandboxes have proxied connections open (the map holds only those).
    pub fn sandboxes_with_open_connections(&self) -> usize {
        lock(&self.open).len()
    }

    /// Counts one connection of `id`, or refuses it at the cap.
    fn admit(&self, id: &SandboxId) -> Result<Permit, ApiError> {
        let mut open = lock(&self.open);
        let count = open.entry(id.clone()).or_insert(0);
        if *count >= self.max_per_sandbox {
            return Err(ApiError::new(
                ErrorCode::SandboxProxyLimitReached,
                format!(
                    "sandbox {id} already has {} proxied connections open (proxy.max_connections_per_sandbox); retry when one ends",
                    self.max_per_sandbox
                ),
            ));
        }
        *count += 1;
        Ok(Permit {
            id: id.clone(),
            open: Arc::clone(&self.open),
        })
    }

    /// Where `id`'s `port` is, from the cache or the runtime.
    async fn resolve(
        &self,
        state: &AppState,
        id: &SandboxId,
        port: u16,
    ) -> Result<Resolved, ApiError> {
        let key = (id.clone(), port);
        if let Some(hit) = lock(&self.addresses).get(&key)
            && hit.at.elapsed() < ADDRESS_TTL
        {
            return Ok(hit.clone());
        }
        let endpoint = state.runtime.proxy_endpoint(id, port).await?;
        let address = socket_address(&endpoint.endpoint).await.map_err(|why| {
            ApiError::new(
                ErrorCode::SandboxEndpointUnreachable,
                format!("sandbox {id} port {port}: {why}"),
            )
        })?;
        let headers = endpoint
            .headers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.as_bytes()).ok()?,
                    HeaderValue::from_str(&v).ok()?,
                ))
            })
            .collect();
        let resolved = Resolved {
            address,
            headers,
            at: Instant::now(),
        };
        let mut cache = lock(&self.addresses);
        if cache.len() >= MAX_ADDRESSES {
            cache.retain(|_, r| r.at.elapsed() < ADDRESS_TTL);
            if cache.len() >= MAX_ADDRESSES {
                cache.clear();
            }
        }
        cache.insert(key, resolved.clone());
        Ok(resolved)
    }

    fn forget(&self, id: &SandboxId, port: u16) {
        lock(&self.addresses).remove(&(id.clone(), port));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One open proxied connection of a sandbox; dropping it frees its place (and the map entry
/// with the last one).
struct Permit {
    id: SandboxId,
    open: Arc<Mutex<HashMap<SandboxId, usize>>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(count) = open.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.id);
            }
        }
    }
}

/// `host:port` (an IP, bracketed or not, or a name) as a socket address; the unspecified
/// address means this host.
async fn socket_address(endpoint: &str) -> Result<SocketAddr, String> {
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| format!("endpoint {endpoint:?} is not host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("endpoint {endpoint:?} is not host:port"))?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip = match bare.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| format!("cannot resolve {bare:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{bare:?} resolves to no address"))?
            .ip(),
    };
    let ip = match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(SocketAddr::new(ip, port))
}

/// The pool key of a sandbox's address: a URI authority that names the sandbox and the address
/// (`<id>.v4-7f000001.invalid:8080`); the connector reads the address back from it.
fn pool_authority(id: &SandboxId, address: SocketAddr) -> String {
    let ip = match address.ip() {
        IpAddr::V4(v4) => format!("v4-{:08x}", v4.to_bits()),
        IpAddr::V6(v6) => format!("v6-{:032x}", v6.to_bits()),
    };
    format!("{id}.{ip}.invalid:{}", address.port())
}

fn address_from_authority(uri: &Uri) -> Option<SocketAddr> {
    let host = uri.host()?;
    let label = host.split('.').nth(1)?;
    let ip = if let Some(hex) = label.strip_prefix("v4-") {
        IpAddr::V4(Ipv4Addr::from_bits(u32::from_str_radix(hex, 16).ok()?))
    } else {
        IpAddr::V6(Ipv6Addr::from_bits(
            u128::from_str_radix(label.strip_prefix("v6-")?, 16).ok()?,
        ))
    };
    Some(SocketAddr::new(ip, uri.port_u16()?))
}

/// Makes TCP connections to the address a pool key names, within the connect timeout.
#[derive(Clone)]
struct Connector {
    timeout: Duration,
}

/// Why a connection to a sandbox could not be made.
#[derive(Debug, thiserror::Error)]
enum ConnectFailure {
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the pool key names no address")]
    BadKey,
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<TokioIo<tokio::net::TcpStream>, ConnectFailure>> + Send>>;

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = ConnectFailure;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let timeout = self.timeout;
        Box::pin(async move {
            let address = address_from_authority(&uri).ok_or(ConnectFailure::BadKey)?;
            let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address))
                .await
                .map_err(|_| ConnectFailure::Timeout(timeout))??;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// The parts of a proxy route's path: read from the raw path, so the rest is forwarded exactly
/// as the client encoded it.
struct Target<'a> {
    sandbox_id: &'a str,
    token: Option<&'a str>,
    port: &'a str,
    rest: &'a str,
}

impl<'a> Target<'a> {
    fn parse(path: &'a str, signed: bool) -> Option<Self> {
        let path = path
            .strip_prefix("/v1")
            .filter(|p| p.starts_with("/sandboxes/"))
            .unwrap_or(path);
        let (sandbox_id, path) = path.strip_prefix("/sandboxes/")?.split_once('/')?;
        let (token, path) = if signed {
            let (token, path) = path.strip_prefix("signed/")?.split_once('/')?;
            (Some(token), path)
        } else {
            (None, path)
        };
        let path = path.strip_prefix("proxy/")?;
        let (port, rest) = match path.find('/') {
            Some(i) => path.split_at(i),
            None => (path, "/"),
        };
        Some(Self {
            sandbox_id,
            token,
            port,
            rest,
        })
    }
}

/// `ANY /{v1/}sandboxes/{id}/proxy/{port}/{*path}` (the API key was checked before): forwards
/// to a port of a running sandbox, path and query as sent.
pub(crate) async fn forward(State(state): State<AppState>, request: Request) -> Response {
    forward_request(&state, request, false)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `ANY /{v1/}sandboxes/{id}/signed/{token}/proxy/{port}/{*path}`: the same as [`forward`],
/// admitted by the route token an endpoint with `expires` carries instead of the API key, until
/// its expiry. (The proxy routes are not in the OpenAPI document: one operation per method of
/// each would say nothing the `endpoints` route's description does not.)
pub(crate) async fn forward_signed(State(state): State<AppState>, request: Request) -> Response {
    forward_request(&state, request, true)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn forward_request(
    state: &AppState,
    request: Request,
    signed: bool,
) -> Result<Response, ApiError> {
    let raw_path = request.uri().path().to_owned();
    let target = Target::parse(&raw_path, signed)
        .ok_or_else(|| ApiError::new(ErrorCode::GeneralNotFound, "no such route"))?;
    let port = target
        .port
        .parse::<i64>()
        .ok()
        .filter(|_| target.port.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::SandboxInvalidPort,
                format!("port: {:?} is not a number from 1 to 65535", target.port),
            )
        })?;
    let port = check_port(port)?;
    if let Some(token) = target.token {
        state.proxy.signer().verify(
            token,
            target.sandbox_id,
            port,
            state.clock.now().timestamp(),
        )?;
    }
    let id = SandboxId::new(target.sandbox_id).map_err(|_| {
        ApiError::new(
            ErrorCode::SandboxNotFound,
            format!("sandbox {:?} not found", target.sandbox_id),
        )
    })?;
    if matches!(*request.method(), Method::CONNECT | Method::TRACE) {
        return Err(ApiError::new(
            ErrorCode::GeneralMethodNotAllowed,
            "the proxy does not forward CONNECT or TRACE",
        ));
    }
    let record = state.runtime.get(&id).await?;
    if record.status.state != SandboxState::Running {
        return Err(ApiError::new(
            ErrorCode::SandboxInvalidState,
            format!(
                "sandbox {id} is {}; the proxy reaches running sandboxes only",
                record.status.state
            ),
        ));
    }
    let permit = state.proxy.admit(&id)?;
    let resolved = state.proxy.resolve(state, &id, port).await?;

    let (mut parts, body) = request.into_parts();
    let upgrade = requested_upgrade(&parts.headers);
    // Only a connection that can switch protocols asks the sandbox to switch.
    let client_upgrade = upgrade
        .is_some()
        .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    let upgrade = upgrade.filter(|_| client_upgrade.is_some());
    let client_ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());

    let mut headers = parts.headers;
    let original_host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut headers);
    headers.remove(API_KEY_HEADER);
    headers.remove(header::HOST);
    // Berth's own server answers `Expect: 100-continue`; the sandbox gets the body as it comes.
    headers.remove(header::EXPECT);
    add_forwarded(&mut headers, client_ip, original_host);
    for (name, value) in &resolved.headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Ok(host) = HeaderValue::from_str(&resolved.address.to_string()) {
        headers.insert(header::HOST, host);
    }
    if let Some(protocol) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{}?{q}", target.rest),
        None => target.rest.to_owned(),
    };
    let uri = Uri::try_from(format!(
        "http://{}{path_and_query}",
        pool_authority(&id, resolved.address)
    ))
    .map_err(|e| ApiError::new(ErrorCode::GeneralInvalidPathParameter, e.to_string()))?;
    let mut upstream = axum::http::Request::new(body);
    *upstream.method_mut() = parts.method;
    *upstream.uri_mut() = uri;
    *upstream.version_mut() = Version::HTTP_11;
    *upstream.headers_mut() = headers;

    let mut response = match state.proxy.client.request(upstream).await {
        Ok(r) => r,
        Err(e) => return Err(upstream_error(state, &e, &id, port)),
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let (parts, _) = response.into_parts();
        let mut headers = parts.headers;
        let protocol = headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut headers);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = protocol {
            headers.insert(header::UPGRADE, protocol);
        }
        tokio::spawn(async move {
            // The tunnel counts as one of the sandbox's connections until it closes.
            let _permit = permit;
            let (client, sandbox) = tokio::join!(client_upgrade, upstream_upgrade);
            match (client, sandbox) {
                (Ok(client), Ok(sandbox)) => {
                    let _ = tokio::io::copy_bidirectional(
                        &mut TokioIo::new(client),
                        &mut TokioIo::new(sandbox),
                    )
                    .await;
                }
                (client, sandbox) => tracing::debug!(
                    client_ok = client.is_ok(),
                    sandbox_ok = sandbox.is_ok(),
                    "proxy: an upgrade did not complete"
                ),
            }
        });
        let mut reply = Response::new(Body::empty());
        *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *reply.headers_mut() = headers;
        return Ok(reply);
    }

    let (mut parts, incoming) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        Body::new(Counted {
            body: incoming,
            _permit: permit,
        }),
    ))
}

/// The upstream failure as the client's error: 504 for a connect timeout, 502 otherwise.
fn upstream_error(
    state: &AppState,
    error: &hyper_util::client::legacy::Error,
    id: &SandboxId,
    port: u16,
) -> ApiError {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(failure) = cause.downcast_ref::<ConnectFailure>() {
            state.proxy.forget(id, port);
            return match failure {
                ConnectFailure::Timeout(_) => ApiError::new(
                    ErrorCode::SandboxEndpointTimeout,
                    format!("sandbox {id} port {port}: {failure} (proxy.connect_timeout_seconds)"),
                ),
                _ => ApiError::new(
                    ErrorCode::SandboxEndpointUnreachable,
                    format!("sandbox {id} port {port}: nothing answers ({failure})"),
                ),
            };
        }
        source = cause.source();
    }
    ApiError::new(
        ErrorCode::SandboxEndpointUnreachable,
        format!("sandbox {id} port {port}: no HTTP/1.1 answer ({error})"),
    )
}

/// The protocol a request asks to switch to (`Connection: upgrade` with `Upgrade: ...`).
fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Headers that describe one connection, not the message (RFC 9110, 7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes the hop-by-hop headers, and those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// `X-Forwarded-For` (the client's address appended), `-Proto` and `-Host` (kept when a proxy
/// in front of Berth set them).
fn add_forwarded(headers: &mut HeaderMap, client: Option<IpAddr>, host: Option<HeaderValue>) {
    const FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    const PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    if let Some(client) = client {
        let mut value = headers
            .get_all(&FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        if !value.is_empty() {
            value.push_str(", ");
        }
        value.push_str(&client.to_string());
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(FOR, value);
        }
    }
    if !headers.contains_key(&PROTO) {
        headers.insert(PROTO, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(&HOST)
        && let Some(host) = host
    {
        headers.insert(HOST, host);
    }
}

/// A response body that holds its sandbox's connection place until it is done or dropped.
struct Counted {
    body: hyper::body::Incoming,
    _permit: Permit,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_read_from_the_raw_path() {
        let t = Target::parse("/v1/sandboxes/abc/proxy/8080/a%2Fb/c/?x", false).unwrap();
        assert_eq!(
            (t.sandbox_id, t.port, t.rest),
            ("abc", "8080", "/a%2Fb/c/?x")
        );
        let t = Target::parse("/sandboxes/abc/proxy/80", false).unwrap();
        assert_eq!((t.port, t.rest), ("80", "/"));
        let t = Target::parse("/sandboxes/abc/proxy/80/", false).unwrap();
        assert_eq!(t.rest, "/");
        let t = Target::parse("/v1/sandboxes/v1/signed/123.tag/proxy/80/x", true).unwrap();
        assert_eq!(
            (t.sandbox_id, t.token, t.port, t.rest),
            ("v1", Some("123.tag"), "80", "/x")
        );
        assert!(Target::parse("/v1/sandboxes/abc/proxy/80", true).is_none());
    }

    #[test]
    fn pool_keys_carry_sandbox_and_address() {
        let id = SandboxId::new("sb-1").unwrap();
        for address in ["10.1.2.3:8080", "[fd00::12:1]:44772"] {
            let address: SocketAddr = address.parse().unwrap();
            let uri: Uri = format!("http://{}/x", pool_authority(&id, address))
                .parse()
                .unwrap();
            assert_eq!(address_from_authority(&uri), Some(address));
            assert!(uri.host().unwrap().starts_with("sb-1."));
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("accept", "*/*"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(
            h.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["accept"]
        );
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        add_forwarded(
            &mut h,
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Some(HeaderValue::from_static("berth:8080")),
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "berth:8080");
    }

    #[test]
    fn public_urls_lose_scheme_and_trailing_slash() {
        assert_eq!(
            public_base("https://berth.example.com/").unwrap(),
            "berth.example.com"
        );
        assert_eq!(
            public_base("http://10.0.0.1:8080/berth").unwrap(),
            "10.0.0.1:8080/berth"
        );
        for bad in [
            "berth.example.com",
            "https://",
            "https:///x",
            "http://a b",
            "http://h?q",
            "http://u@h",
        ] {
            assert!(public_base(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signed_paths_are_logged_without_their_token() {
        assert_eq!(
            path_for_log("/v1/sandboxes/a/signed/123.secret/proxy/80/x"),
            "/v1/sandboxes/a/signed/-/proxy/80/x"
        );
        assert_eq!(
            path_for_log("/v1/sandboxes/a/proxy/80"),
            "/v1/sandboxes/a/proxy/80"
        );
    }
}
