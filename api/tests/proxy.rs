//! The server proxy and signed endpoint routes, through the router listening in this process
//! (over the in-memory runtime, whose endpoints a test points where it likes) to a local hyper
//! server that stands in for a sandbox's port. No engine.
//!
//! Streaming is proven by handshakes, never by timing: the stand-in sends an event and waits
//! until the test says it arrived before it sends the next, and an upload goes on only once the
//! stand-in has read everything sent so far. A proxy that collected a body first would stall
//! there (each such test has a generous bound so it fails instead of hanging).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use berth_api::proxy::ProxyOptions;
use berth_api::reaper::Clock;
use berth_api::route_signing::{KEY_FILE_NAME, KeySource};
use berth_api::{AppState, router};
use berth_core::model::{MetadataPatch, SandboxId, SandboxRecord};
use berth_core::runtime::{Capabilities, CreateSandbox, RenderedSandbox, Runtime, RuntimeError};
use berth_core::testkit::InMemoryRuntime;
use berth_core::validate::StoragePolicy;
use berth_core::wire;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Role;

const IMAGE: &str = "berth-test/busybox:latest";
const KEY: &str = "test-key";
/// Generous bound on a test that would otherwise hang if the proxy buffered.
const STALL: Duration = Duration::from_secs(120);

type TestBody = BoxBody<Bytes, Infallible>;

fn empty() -> TestBody {
    Empty::new().boxed()
}

fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into()).boxed()
}

// ---------------------------------------------------------------------------------------------
// The runtime: the in-memory one, with endpoints pointed where the test says.

struct Fake {
    inner: InMemoryRuntime,
    addresses: Mutex<HashMap<String, String>>,
}

impl Fake {
    fn new() -> Arc<Self> {
        let inner = InMemoryRuntime::new();
        inner.add_image(IMAGE);
        Arc::new(Self {
            inner,
            addresses: Mutex::default(),
        })
    }

    fn point(&self, id: &str, address: SocketAddr) {
        self.addresses
            .lock()
            .unwrap()
            .insert(id.to_owned(), address.to_string());
    }
}

#[async_trait]
impl Runtime for Fake {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.inner.ping().await
    }
    async fn create(&self, request: CreateSandbox) -> Result<SandboxRecord, RuntimeError> {
        self.inner.create(request).await
    }
    async fn get(&self, id: &SandboxId) -> Result<SandboxRecord, RuntimeError> {
        self.inner.get(id).await
    }
    async fn list(&self) -> Result<Vec<SandboxRecord>, RuntimeError> {
        self.inner.list().await
    }
    async fn delete(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.inner.delete(id).await
    }
    async fn delete_if_expired(
        &self,
        id: &SandboxId,
        now: DateTime<Utc>,
    ) -> Result<bool, RuntimeError> {
        self.inner.delete_if_expired(id, now).await
    }
    async fn pause(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.inner.pause(id).await
    }
    async fn resume(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.inner.resume(id).await
    }
    async fn renew(
        &self,
        id: &SandboxId,
        expires_at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, RuntimeError> {
        self.inner.renew(id, expires_at).await
    }
    async fn patch_metadata(
        &self,
        id: &SandboxId,
        patch: &MetadataPatch,
    ) -> Result<SandboxRecord, RuntimeError> {
        self.inner.patch_metadata(id, patch).await
    }
    async fn endpoint(&self, id: &SandboxId, port: u16) -> Result<wire::Endpoint, RuntimeError> {
        let direct = self.inner.endpoint(id, port).await?;
        Ok(match self.addresses.lock().unwrap().get(id.as_str()) {
            Some(address) => wire::Endpoint {
                endpoint: address.clone(),
                headers: None,
            },
            None => direct,
        })
    }
    async fn render(&self, request: &CreateSandbox) -> Result<RenderedSandbox, RuntimeError> {
        self.inner.render(request).await
    }
}

/// The system clock moved by what the test says.
#[derive(Default)]
struct ShiftedClock {
    seconds: AtomicI64,
}

impl ShiftedClock {
    fn advance(&self, seconds: i64) {
        self.seconds.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::TimeDelta::seconds(self.seconds.load(Ordering::SeqCst))
    }
}

// ---------------------------------------------------------------------------------------------
// The server under test, listening on loopback.

struct Server {
    address: SocketAddr,
    runtime: Arc<Fake>,
    state: AppState,
    clock: Arc<ShiftedClock>,
}

fn options() -> ProxyOptions {
    ProxyOptions {
        connect_timeout: Duration::from_secs(2),
        ..ProxyOptions::default()
    }
}

async fn serve(runtime: Arc<Fake>, key: Option<&str>, options: ProxyOptions) -> Server {
    let clock = Arc::new(ShiftedClock::default());
    let mut state = AppState::new(
        runtime.clone(),
        StoragePolicy {
            allowed_host_roots: Vec::new(),
            max_timeout_seconds: Some(86_400),
        },
    )
    .with_api_key(key.map(str::to_owned), false)
    .with_proxy(options);
    state.clock = clock.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        address,
        runtime,
        state,
        clock,
    }
}

impl Server {
    /// One request on a connection of its own (so each test sees only its own connections).
    async fn send(&self, request: Request<TestBody>) -> Response<Incoming> {
        send(self.address, request).await
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
    ) -> hyper::http::request::Builder {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.address.to_string());
        if let Some(key) = key {
            builder = builder.header("open-sandbox-api-key", key);
        }
        builder
    }

    async fn json(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let builder = self.request(method, path, Some(KEY));
        let request = match body {
            Some(b) => builder
                .header("content-type", "application/json")
                .body(full(b.to_string())),
            None => builder.body(empty()),
        }
        .unwrap();
        read_json(self.send(request).await).await
    }

    /// A running sandbox whose endpoints are `address`.
    async fn sandbox(&self, address: SocketAddr) -> String {
        let (status, body) = self
            .json(
                "POST",
                "/v1/sandboxes",
                Some(json!({"image": {"uri": IMAGE}, "entrypoint": ["sleep", "600"], "resourceLimits": {"cpu": "250m"}})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        self.runtime.point(&id, address);
        id
    }
}

async fn send(address: SocketAddr, request: Request<TestBody>) -> Response<Incoming> {
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender.send_request(request).await.unwrap()
}

async fn read_body(response: Response<Incoming>) -> (StatusCode, hyper::HeaderMap, Bytes) {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

async fn read_json(response: Response<Incoming>) -> (StatusCode, Value) {
    let (status, _, body) = read_body(response).await;
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, value)
}

#[track_caller]
fn assert_error(reply: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(reply.0.as_u16(), status, "{}", reply.1);
    assert_eq!(reply.1["code"], code, "{}", reply.1);
    assert!(reply.1["message"].as_str().is_some_and(|m| !m.is_empty()));
}

// ---------------------------------------------------------------------------------------------
// The stand-in for a sandbox's port.

/// A request as the stand-in saw it.
#[derive(Debug, Clone)]
struct Seen {
    peer: SocketAddr,
    method: String,
    uri: String,
    headers: BTreeMap<String, String>,
}

struct Upstream {
    address: SocketAddr,
    seen: Mutex<Vec<Seen>>,
    /// Lets the server-sent events stream go on after its first event.
    sse_next: Semaphore,
    /// Bytes of uploads read so far.
    uploaded: watch::Sender<u64>,
    /// Held requests that arrived.
    held: watch::Sender<usize>,
    /// Lets held requests answer.
    release: Semaphore,
}

impl Upstream {
    async fn start() -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Arc::new(Self {
            address: listener.local_addr().unwrap(),
            seen: Mutex::default(),
            sse_next: Semaphore::new(0),
            uploaded: watch::channel(0).0,
            held: watch::channel(0).0,
            release: Semaphore::new(0),
        });
        let serving = upstream.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = listener.accept().await.unwrap();
                let upstream = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let upstream = upstream.clone();
                        async move { Ok::<_, Infallible>(upstream.handle(peer, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        upstream
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn handle(
        self: Arc<Self>,
        peer: SocketAddr,
        mut request: Request<Incoming>,
    ) -> Response<TestBody> {
        let seen = Seen {
            peer,
            method: request.method().to_string(),
            uri: request.uri().to_string(),
            headers: request
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
                .collect(),
        };
        self.seen.lock().unwrap().push(seen.clone());
        let path = request.uri().path().to_owned();
        match path.as_str() {
            "/sse" => {
                let (tx, rx) = mpsc::channel::<Bytes>(1);
                let upstream = self.clone();
                tokio::spawn(async move {
                    tx.send(Bytes::from_static(b"data: 1\n\n")).await.unwrap();
                    upstream.sse_next.acquire().await.unwrap().forget();
                    tx.send(Bytes::from_static(b"data: 2\n\n")).await.unwrap();
                });
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(channel_body(rx))
                    .unwrap()
            }
            "/upload" => {
                let mut body = request.into_body();
                let mut total = 0_u64;
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.unwrap().into_data() {
                        total += data.len() as u64;
                        self.uploaded.send_replace(total);
                    }
                }
                Response::new(full(total.to_string()))
            }
            "/hold" => {
                self.held.send_modify(|n| *n += 1);
                self.release.acquire().await.unwrap().forget();
                Response::new(full("released"))
            }
            "/ws" => {
                let key = request.headers()["sec-websocket-key"].as_bytes().to_vec();
                let upgrade = hyper::upgrade::on(&mut request);
                tokio::spawn(async move {
                    let io = TokioIo::new(upgrade.await.unwrap());
                    let mut ws =
                        tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None)
                            .await;
                    while let Some(Ok(message)) = ws.next().await {
                        if message.is_close() {
                            break;
                        }
                        if message.is_text() || message.is_binary() {
                            ws.send(message).await.unwrap();
                        }
                    }
                });
                Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket")
                    .header(
                        "sec-websocket-accept",
                        tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key),
                    )
                    .body(empty())
                    .unwrap()
            }
            _ => {
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let echo = json!({
                    "method": seen.method,
                    "uri": seen.uri,
                    "headers": seen.headers,
                    "body": String::from_utf8_lossy(&body),
                });
                Response::builder()
                    .header("x-seen-uri", seen.uri.as_str())
                    .header("x-kept", "1")
                    .header("keep-alive", "timeout=5")
                    .header("proxy-authenticate", "Basic")
                    .header("content-type", "application/json")
                    .body(full(echo.to_string()))
                    .unwrap()
            }
        }
    }
}

fn channel_body(rx: mpsc::Receiver<Bytes>) -> TestBody {
    BodyExt::boxed(StreamBody::new(futures_util::stream::unfold(
        rx,
        |mut rx| async move {
            rx.recv()
                .await
                .map(|data| (Ok::<_, Infallible>(Frame::data(data)), rx))
        },
    )))
}

/// The server, the stand-in, and one running sandbox pointed at it.
async fn setup() -> (Server, Arc<Upstream>, String) {
    let upstream = Upstream::start().await;
    let server = serve(Fake::new(), Some(KEY), options()).await;
    let id = server.sandbox(upstream.address).await;
    (server, upstream, id)
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_method_reaches_the_sandbox_with_its_path_and_query() {
    let (server, upstream, id) = setup().await;
    let query = "/echo/a%2Fb/c?x=1&y=%20z&x=2";
    for method in [
        "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "HEAD",
    ] {
        let body = if method == "GET" || method == "HEAD" {
            empty()
        } else {
            full(format!("body of {method}"))
        };
        let request = server
            .request(
                method,
                &format!("/v1/sandboxes/{id}/proxy/8080{query}"),
                Some(KEY),
            )
            .body(body)
            .unwrap();
        let (status, headers, body) = read_body(server.send(request).await).await;
        assert_eq!(status, StatusCode::OK, "{method}");
        assert_eq!(headers["x-seen-uri"], query, "{method}");
        let last = upstream.seen().pop().unwrap();
        assert_eq!((last.method.as_str(), last.uri.as_str()), (method, query));
        if method == "HEAD" {
            assert!(body.is_empty());
        } else {
            let echo: Value = serde_json::from_slice(&body).unwrap();
            let sent = if method == "GET" {
                String::new()
            } else {
                format!("body of {method}")
            };
            assert_eq!(echo["body"], sent, "{method}");
        }
    }
    // The bare route, its `/`, and the routes mounted at `/`.
    for (path, forwarded) in [
        (format!("/v1/sandboxes/{id}/proxy/8080"), "/"),
        (format!("/v1/sandboxes/{id}/proxy/8080/"), "/"),
        (format!("/sandboxes/{id}/proxy/8080/root?q=1"), "/root?q=1"),
    ] {
        let request = server
            .request("GET", &path, Some(KEY))
            .body(empty())
            .unwrap();
        let (status, headers, _) = read_body(server.send(request).await).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers["x-seen-uri"], forwarded, "{path}");
    }
}

#[tokio::test]
async fn hop_by_hop_headers_go_forwarded_headers_come_and_the_api_key_stays() {
    let (server, upstream, id) = setup().await;
    let request = server
        .request(
            "GET",
            &format!("/v1/sandboxes/{id}/proxy/8080/echo"),
            Some(KEY),
        )
        .header("connection", "keep-alive, x-private")
        .header("x-private", "connection-scoped")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic eDp5")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-app", "kept")
        .header("cookie", "app=1")
        .body(empty())
        .unwrap();
    let (status, headers, _) = read_body(server.send(request).await).await;
    assert_eq!(status, StatusCode::OK);
    let seen = upstream.seen().pop().unwrap().headers;
    for gone in [
        "open-sandbox-api-key",
        "x-private",
        "keep-alive",
        "te",
        "proxy-authorization",
    ] {
        assert!(!seen.contains_key(gone), "{gone} was forwarded: {seen:?}");
    }
    assert_ne!(
        seen.get("connection").map(String::as_str),
        Some("keep-alive, x-private")
    );
    assert_eq!(seen["x-app"], "kept");
    assert_eq!(seen["cookie"], "app=1");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], server.address.to_string());
    assert_eq!(seen["host"], upstream.address.to_string());
    // The sandbox's hop-by-hop headers stay between it and the proxy too.
    assert_eq!(headers["x-kept"], "1");
    assert!(!headers.contains_key("keep-alive"), "{headers:?}");
    assert!(!headers.contains_key("proxy-authenticate"), "{headers:?}");
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one() {
    let (server, upstream, id) = setup().await;
    tokio::time::timeout(STALL, async {
        let request = server
            .request(
                "GET",
                &format!("/v1/sandboxes/{id}/proxy/8080/sse"),
                Some(KEY),
            )
            .body(empty())
            .unwrap();
        let response = server.send(request).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut body = response.into_body();
        let mut text = String::new();
        // The stand-in sends event 2 only once the test let it: event 1 must arrive alone.
        while !text.contains("data: 1\n\n") {
            let frame = body.frame().await.unwrap().unwrap();
            text.push_str(std::str::from_utf8(&frame.into_data().unwrap()).unwrap());
        }
        assert_eq!(text, "data: 1\n\n");
        upstream.sse_next.add_permits(1);
        while !text.contains("data: 2\n\n") {
            let frame = body.frame().await.unwrap().unwrap();
            text.push_str(std::str::from_utf8(&frame.into_data().unwrap()).unwrap());
        }
        assert_eq!(text, "data: 1\n\ndata: 2\n\n");
        assert!(
            body.frame().await.is_none(),
            "the stream ends with the sandbox's"
        );
    })
    .await
    .expect("events were held back: the proxy buffers responses");
}

#[tokio::test]
async fn a_100_mib_chunked_upload_streams_through_in_lockstep() {
    const MIB: usize = 1 << 20;
    let (server, upstream, id) = setup().await;
    tokio::time::timeout(STALL, async {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        // No content-length: the client sends it chunked.
        let request = server
            .request(
                "POST",
                &format!("/v1/sandboxes/{id}/proxy/8080/upload"),
                Some(KEY),
            )
            .body(channel_body(rx))
            .unwrap();
        let address = server.address;
        let response = tokio::spawn(async move { read_body(send(address, request).await).await });
        let mut read = upstream.uploaded.subscribe();
        let chunk = Bytes::from(vec![0x5a_u8; MIB]);
        for sent in 1..=100_u64 {
            tx.send(chunk.clone()).await.unwrap();
            // The next MiB goes only once the sandbox has read all sent so far: the proxy never
            // holds more than about one chunk, whatever the body's size.
            read.wait_for(|n| *n >= sent * MIB as u64).await.unwrap();
        }
        drop(tx);
        let (status, _, body) = response.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, (100 * MIB).to_string());
    })
    .await
    .expect("the upload stalled: the proxy collects request bodies");
}

#[tokio::test]
async fn a_websocket_is_relayed_both_ways() {
    let (server, _upstream, id) = setup().await;
    let stream = TcpStream::connect(server.address).await.unwrap();
    let mut request = format!("ws://{}/v1/sandboxes/{id}/proxy/8080/ws", server.address)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("open-sandbox-api-key", KEY.parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for message in [
        Message::text("hello"),
        Message::binary(vec![0_u8, 1, 2, 255]),
        Message::text("x".repeat(200_000)),
    ] {
        ws.send(message.clone()).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), message);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn pooled_connections_never_carry_two_sandboxes_on_one_address() {
    let upstream = Upstream::start().await;
    let server = serve(Fake::new(), Some(KEY), options()).await;
    // Two sandboxes whose port is the same address, as when an address is reused.
    let a = server.sandbox(upstream.address).await;
    let b = server.sandbox(upstream.address).await;
    const ROUNDS: usize = 8;
    for _ in 0..ROUNDS {
        for id in [&a, &b] {
            let request = server
                .request(
                    "GET",
                    &format!("/v1/sandboxes/{id}/proxy/8080/echo"),
                    Some(KEY),
                )
                .header("x-sandbox", id.as_str())
                .body(empty())
                .unwrap();
            let (status, _, _) = read_body(server.send(request).await).await;
            assert_eq!(status, StatusCode::OK);
        }
    }
    let mut by_connection: BTreeMap<SocketAddr, BTreeSet<String>> = BTreeMap::new();
    for seen in upstream.seen() {
        by_connection
            .entry(seen.peer)
            .or_default()
            .insert(seen.headers["x-sandbox"].clone());
    }
    for (peer, sandboxes) in &by_connection {
        assert_eq!(
            sandboxes.len(),
            1,
            "connection {peer} carried {sandboxes:?}"
        );
    }
    for id in [&a, &b] {
        let connections = by_connection.values().filter(|s| s.contains(id)).count();
        assert!(
            (1..ROUNDS).contains(&connections),
            "{id}: {connections} connections for {ROUNDS} requests in a row: not pooled"
        );
    }
}

#[tokio::test]
async fn the_per_sandbox_cap_refuses_more_and_frees_places_as_they_end() {
    let upstream = Upstream::start().await;
    let server = serve(
        Fake::new(),
        Some(KEY),
        ProxyOptions {
            max_connections_per_sandbox: 2,
            ..options()
        },
    )
    .await;
    let a = server.sandbox(upstream.address).await;
    let b = server.sandbox(upstream.address).await;
    let hold = |id: &str| {
        let request = server
            .request(
                "GET",
                &format!("/v1/sandboxes/{id}/proxy/8080/hold"),
                Some(KEY),
            )
            .body(empty())
            .unwrap();
        let address = server.address;
        tokio::spawn(async move { read_body(send(address, request).await).await })
    };
    let held = [hold(&a), hold(&a)];
    upstream
        .held
        .subscribe()
        .wait_for(|n| *n == 2)
        .await
        .unwrap();
    let echo = |id: &str| {
        server
            .request(
                "GET",
                &format!("/v1/sandboxes/{id}/proxy/8080/echo"),
                Some(KEY),
            )
            .body(empty())
            .unwrap()
    };
    let refused = read_json(server.send(echo(&a)).await).await;
    assert_error(&refused, 429, "SANDBOX::PROXY_LIMIT_REACHED");
    // The cap is per sandbox: another one is not held up.
    assert_eq!(
        read_body(server.send(echo(&b)).await).await.0,
        StatusCode::OK
    );
    upstream.release.add_permits(2);
    for h in held {
        let (status, _, body) = h.await.unwrap();
        assert_eq!(
            (status, body.as_ref()),
            (StatusCode::OK, b"released".as_ref())
        );
    }
    // A place is free once its response is over (its body is dropped as the server ends it).
    while server.state.proxy.sandboxes_with_open_connections() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        read_body(server.send(echo(&a)).await).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn errors_name_what_is_wrong() {
    let (server, upstream, running) = setup().await;
    let get = |path: String, key: Option<&'static str>| {
        let request = server.request("GET", &path, key).body(empty()).unwrap();
        async { read_json(server.send(request).await).await }
    };
    assert_error(
        &get(format!("/v1/sandboxes/{running}/proxy/8080/x"), None).await,
        401,
        "MISSING_API_KEY",
    );
    assert_error(
        &get("/v1/sandboxes/nope/proxy/8080/x".into(), Some(KEY)).await,
        404,
        "SANDBOX::NOT_FOUND",
    );
    assert_error(
        &get("/v1/sandboxes/NOT_AN_ID/proxy/8080/x".into(), Some(KEY)).await,
        404,
        "SANDBOX::NOT_FOUND",
    );
    for port in ["0", "65536", "http"] {
        assert_error(
            &get(format!("/v1/sandboxes/{running}/proxy/{port}/x"), Some(KEY)).await,
            400,
            "SANDBOX::INVALID_PORT",
        );
    }

    let paused = server.sandbox(upstream.address).await;
    let (status, _) = server
        .json("POST", &format!("/v1/sandboxes/{paused}/pause"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_error(
        &get(format!("/v1/sandboxes/{paused}/proxy/8080/x"), Some(KEY)).await,
        409,
        "SANDBOX::INVALID_STATE",
    );

    // Nothing listens: a port that was just free.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let dead = server.sandbox(closed).await;
    assert_error(
        &get(format!("/v1/sandboxes/{dead}/proxy/8080/x"), Some(KEY)).await,
        502,
        "SANDBOX::ENDPOINT_UNREACHABLE",
    );

    let (status, _) = server
        .json("DELETE", &format!("/v1/sandboxes/{running}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &get(format!("/v1/sandboxes/{running}/proxy/8080/x"), Some(KEY)).await,
        404,
        "SANDBOX::NOT_FOUND",
    );
}

#[tokio::test]
async fn a_port_that_never_accepts_times_out_with_504() {
    // A listener whose accept queue is full: the kernel drops further SYNs, so a connect waits
    // until the proxy's connect timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let address = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        fillers.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(address)).await
        }));
    }
    for f in fillers {
        let _ = f.await;
    }
    let server = serve(
        Fake::new(),
        Some(KEY),
        ProxyOptions {
            connect_timeout: Duration::from_millis(300),
            ..options()
        },
    )
    .await;
    let id = server.sandbox(address).await;
    let request = server
        .request(
            "GET",
            &format!("/v1/sandboxes/{id}/proxy/8080/x"),
            Some(KEY),
        )
        .body(empty())
        .unwrap();
    assert_error(
        &read_json(server.send(request).await).await,
        504,
        "SANDBOX::ENDPOINT_TIMEOUT",
    );
    drop(listener);
}

#[tokio::test]
async fn metrics_label_proxied_requests_by_route_not_path() {
    let (server, _upstream, id) = setup().await;
    for i in 0..20 {
        let request = server
            .request(
                "GET",
                &format!("/v1/sandboxes/{id}/proxy/8080/echo/{i}"),
                Some(KEY),
            )
            .body(empty())
            .unwrap();
        assert_eq!(
            read_body(server.send(request).await).await.0,
            StatusCode::OK
        );
    }
    let request = server
        .request("GET", "/metrics", Some(KEY))
        .body(empty())
        .unwrap();
    let (_, _, text) = read_body(server.send(request).await).await;
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(
        text.contains("route=\"/v1/sandboxes/{sandbox_id}/proxy/{port}/{*path}\""),
        "{text}"
    );
    assert!(!text.contains("echo/1"), "{text}");
    assert!(!text.contains(&id), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Endpoints and signed routes.

/// The path of an endpoint (`host:port/path`) on this server.
fn endpoint_path<'a>(server: &Server, endpoint: &'a str) -> &'a str {
    let host = server.address.to_string();
    endpoint
        .strip_prefix(host.as_str())
        .unwrap_or_else(|| panic!("{endpoint} is not on {host}"))
}

async fn signed_endpoint(server: &Server, id: &str, port: u16, lifetime: i64) -> String {
    let expires = server.clock.now().timestamp() + lifetime;
    let (status, body) = server
        .json(
            "GET",
            &format!("/v1/sandboxes/{id}/endpoints/{port}?expires={expires}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["endpoint"].as_str().unwrap().to_owned()
}

/// GET `path` without the API key: the status, and the JSON (or text) body.
async fn get_without_key(server: &Server, path: &str) -> (StatusCode, Value) {
    let request = server.request("GET", path, None).body(empty()).unwrap();
    read_json(server.send(request).await).await
}

#[tokio::test]
async fn endpoints_answer_proxy_routes() {
    let (server, upstream, id) = setup().await;
    let (status, body) = server
        .json("GET", &format!("/v1/sandboxes/{id}/endpoints/8080"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"endpoint": upstream.address.to_string()}));

    let (status, body) = server
        .json(
            "GET",
            &format!("/v1/sandboxes/{id}/endpoints/8080?use_server_proxy=true"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let endpoint = body["endpoint"].as_str().unwrap();
    assert_eq!(
        endpoint,
        format!("{}/v1/sandboxes/{id}/proxy/8080", server.address)
    );
    let request = server
        .request(
            "GET",
            &format!("{}/echo", endpoint_path(&server, endpoint)),
            Some(KEY),
        )
        .body(empty())
        .unwrap();
    let (status, headers, _) = read_body(server.send(request).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-seen-uri"], "/echo");

    let now = server.clock.now().timestamp();
    for (query, status, code) in [
        (
            format!("use_server_proxy=true&expires={}", now + 60),
            400,
            "SANDBOX::INVALID_PARAMETER",
        ),
        (format!("expires={now}"), 400, "SANDBOX::INVALID_EXPIRATION"),
        (
            format!("expires={}", now + 31 * 86_400),
            400,
            "SANDBOX::INVALID_EXPIRATION",
        ),
        ("expires=tomorrow".into(), 400, "GENERAL::INVALID_QUERY"),
        (
            "use_server_proxy=maybe".into(),
            400,
            "GENERAL::INVALID_QUERY",
        ),
    ] {
        let reply = server
            .json(
                "GET",
                &format!("/v1/sandboxes/{id}/endpoints/8080?{query}"),
                None,
            )
            .await;
        assert_error(&reply, status, code);
    }
    assert_error(
        &server
            .json(
                "GET",
                "/v1/sandboxes/nope/endpoints/8080?use_server_proxy=true",
                None,
            )
            .await,
        404,
        "SANDBOX::NOT_FOUND",
    );

    // With server.public_url, endpoints name it (without its scheme).
    let public = serve(
        Fake::new(),
        Some(KEY),
        ProxyOptions {
            public_url: Some(
                berth_api::proxy::public_base("https://berth.example.com/pre/").unwrap(),
            ),
            ..options()
        },
    )
    .await;
    let id = public.sandbox(upstream.address).await;
    let (_, body) = public
        .json(
            "GET",
            &format!("/v1/sandboxes/{id}/endpoints/44772?use_server_proxy=true"),
            None,
        )
        .await;
    assert_eq!(
        body["endpoint"],
        format!("berth.example.com/pre/v1/sandboxes/{id}/proxy/44772")
    );
}

#[tokio::test]
async fn a_signed_route_admits_without_the_key_until_it_expires() {
    let (server, upstream, id) = setup().await;
    let endpoint = signed_endpoint(&server, &id, 8080, 600).await;
    let path = endpoint_path(&server, &endpoint).to_owned();
    assert!(
        path.starts_with(&format!("/v1/sandboxes/{id}/signed/")) && path.ends_with("/proxy/8080"),
        "{path}"
    );
    let (status, echo) = get_without_key(&server, &format!("{path}/echo?q=1")).await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    // The token stays with the proxy; so would a key, had the client sent one.
    assert_eq!(echo["uri"], "/echo?q=1");
    let seen = upstream.seen().pop().unwrap();
    assert!(!seen.headers.contains_key("open-sandbox-api-key"));
    // Also at `/`, and with a WebSocket.
    let root = path.strip_prefix("/v1").unwrap();
    assert_eq!(
        get_without_key(&server, &format!("{root}/echo")).await.0,
        StatusCode::OK
    );
    let stream = TcpStream::connect(server.address).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{}{path}/ws", server.address), stream)
            .await
            .unwrap();
    ws.send(Message::text("signed")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("signed"));

    // Unsigned, the same sandbox still needs the key.
    assert_error(
        &get_without_key(&server, &format!("/v1/sandboxes/{id}/proxy/8080/echo")).await,
        401,
        "MISSING_API_KEY",
    );
    server.clock.advance(601);
    assert_error(
        &get_without_key(&server, &format!("{path}/echo")).await,
        401,
        "SANDBOX::ROUTE_TOKEN_EXPIRED",
    );
}

#[tokio::test]
async fn forged_or_misused_tokens_are_refused() {
    let (server, upstream, id) = setup().await;
    let other = server.sandbox(upstream.address).await;
    let endpoint = signed_endpoint(&server, &id, 8080, 600).await;
    let path = endpoint_path(&server, &endpoint).to_owned();
    let token = path
        .split('/')
        .skip_while(|s| *s != "signed")
        .nth(1)
        .unwrap()
        .to_owned();
    let (expires, tag) = token.split_once('.').unwrap();
    let flipped = {
        let mut t = tag.as_bytes().to_vec();
        t[0] = if t[0] == b'A' { b'B' } else { b'A' };
        String::from_utf8(t).unwrap()
    };
    let later = expires.parse::<i64>().unwrap() + 1;
    for (what, route) in [
        (
            "a changed tag",
            format!("/v1/sandboxes/{id}/signed/{expires}.{flipped}/proxy/8080"),
        ),
        (
            "a changed expiry",
            format!("/v1/sandboxes/{id}/signed/{later}.{tag}/proxy/8080"),
        ),
        (
            "another sandbox",
            format!("/v1/sandboxes/{other}/signed/{token}/proxy/8080"),
        ),
        (
            "another port",
            format!("/v1/sandboxes/{id}/signed/{token}/proxy/8081"),
        ),
        (
            "no tag",
            format!("/v1/sandboxes/{id}/signed/{expires}/proxy/8080"),
        ),
        (
            "garbage",
            format!("/v1/sandboxes/{id}/signed/x.y/proxy/8080"),
        ),
    ] {
        let reply = get_without_key(&server, &format!("{route}/echo")).await;
        assert_eq!(reply.0.as_u16(), 403, "{what}: {}", reply.1);
        assert_eq!(reply.1["code"], "SANDBOX::ROUTE_TOKEN_INVALID", "{what}");
    }
    // Another server's token (another key) is as good as forged.
    let elsewhere = serve(server.runtime.clone(), Some(KEY), options()).await;
    let forged = signed_endpoint(&elsewhere, &id, 8080, 600).await;
    let forged_token = forged
        .split('/')
        .skip_while(|s| *s != "signed")
        .nth(1)
        .unwrap();
    assert_error(
        &get_without_key(
            &server,
            &format!("/v1/sandboxes/{id}/signed/{forged_token}/proxy/8080/echo"),
        )
        .await,
        403,
        "SANDBOX::ROUTE_TOKEN_INVALID",
    );
    // The genuine one still works.
    assert_eq!(
        get_without_key(&server, &format!("{path}/echo")).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn rotated_keys_sign_with_the_first_and_accept_any() {
    const OLD: &str = "old-route-signing-key-0123456789abcdef";
    const NEW: &str = "new-route-signing-key-0123456789abcdef";
    let upstream = Upstream::start().await;
    let runtime = Fake::new();
    let keyed = |keys: &[&str]| ProxyOptions {
        route_keys: KeySource::Configured(keys.iter().map(|k| (*k).to_owned()).collect()),
        ..options()
    };
    let before = serve(runtime.clone(), Some(KEY), keyed(&[OLD])).await;
    let id = before.sandbox(upstream.address).await;
    let old_route = signed_endpoint(&before, &id, 8080, 600).await;
    let old_path = endpoint_path(&before, &old_route).to_owned();

    let rotated = serve(runtime.clone(), Some(KEY), keyed(&[NEW, OLD])).await;
    assert_eq!(
        get_without_key(&rotated, &format!("{old_path}/echo"))
            .await
            .0,
        StatusCode::OK,
        "a route signed before the rotation still works"
    );
    let new_route = signed_endpoint(&rotated, &id, 8080, 600).await;
    let new_path = endpoint_path(&rotated, &new_route).to_owned();
    assert_ne!(new_path, old_path);

    let after = serve(runtime, Some(KEY), keyed(&[NEW])).await;
    assert_eq!(
        get_without_key(&after, &format!("{new_path}/echo")).await.0,
        StatusCode::OK,
        "the new key signed it"
    );
    assert_error(
        &get_without_key(&after, &format!("{old_path}/echo")).await,
        403,
        "SANDBOX::ROUTE_TOKEN_INVALID",
    );
}

#[tokio::test]
async fn the_generated_key_is_kept_0600_and_reused_after_a_restart() {
    let dir = std::env::temp_dir().join(format!("berth-route-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The state directory need not exist yet: it is made (one level).
    let file = dir.join("state").join(KEY_FILE_NAME);
    std::fs::create_dir(&dir).unwrap();
    let from_file = || ProxyOptions {
        route_keys: KeySource::File(file.clone()),
        ..options()
    };
    let upstream = Upstream::start().await;
    let runtime = Fake::new();
    let first = serve(runtime.clone(), Some(KEY), from_file()).await;
    let id = first.sandbox(upstream.address).await;
    assert!(!file.exists(), "the key is made on first use, not at start");
    let route = signed_endpoint(&first, &id, 8080, 600).await;
    let path = endpoint_path(&first, &route).to_owned();
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let key = std::fs::read(&file).unwrap();
    assert!(key.len() > 32);

    let restarted = serve(runtime.clone(), Some(KEY), from_file()).await;
    assert_eq!(
        get_without_key(&restarted, &format!("{path}/echo")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        key,
        "the key file was kept, not remade"
    );

    // A key file others may read is refused, not used.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let loose = serve(runtime, Some(KEY), from_file()).await;
    let expires = loose.clock.now().timestamp() + 60;
    let reply = loose
        .json(
            "GET",
            &format!("/v1/sandboxes/{id}/endpoints/8080?expires={expires}"),
            None,
        )
        .await;
    assert_error(&reply, 500, "GENERAL::INTERNAL_ERROR");
    assert!(
        reply.1["message"]
            .as_str()
            .unwrap()
            .contains("server.route_signing_keys"),
        "{}",
        reply.1
    );
    assert_error(
        &get_without_key(&loose, &format!("{path}/echo")).await,
        500,
        "GENERAL::INTERNAL_ERROR",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
