//! The server proxy on the real engine, through the real `berth-server`: a busybox `httpd` in a
//! sandbox serves a file, fetched through the proxy with the API key and through a signed route
//! without it; a port where nothing listens is 502, a deleted sandbox 404. With the test agent
//! injected (`runtime.execd_image`): the sandbox's entrypoint is wrapped and still runs, the agent
//! answers directly and through the proxy, server-sent events come one by one, a WebSocket
//! echoes, headers are stripped and added, a 100 MiB upload streams through with the server's
//! memory bounded, and signed routes are admitted or refused in every way.
//!
//! Streaming is proven without timing: the agent cannot send an event's successor before its
//! interval (a minute) is over, so holding event 1 of an unfinished stream is only possible if
//! the proxy relayed it alone; the upload's bound is the server's peak resident memory.

#![cfg(feature = "docker")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{ScratchDir, Server, tempfile_dir};
use futures_util::{FutureExt, SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const KEY: &str = "proxy-docker-key";
const PAGE: &str = "served from inside the sandbox";
const BUSYBOX: &str = "berth-test/busybox:latest";
const EXECD: &str = "berth-test/execd:latest";
/// The agent's port (execd's).
const AGENT: u16 = 44772;
/// Generous bound on waits that would otherwise hang (a sandbox starting, a stalled stream).
const STALL: Duration = Duration::from_secs(50);

type TestBody = BoxBody<Bytes, Infallible>;

fn empty() -> TestBody {
    Empty::new().boxed()
}

/// `method path` to the server, with the key when given.
fn request(
    address: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
) -> hyper::http::request::Builder {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", address);
    if let Some(key) = key {
        builder = builder.header(berth_api::API_KEY_HEADER, key);
    }
    builder
}

/// One request on its own connection.
async fn send(address: &str, request: Request<TestBody>) -> Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender.send_request(request).await.unwrap()
}

/// One request on its own connection: the status and the body as text.
async fn http(
    address: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, String) {
    let builder = request(address, method, path, key);
    let request = match body {
        Some(b) => builder
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(b.to_string())).boxed()),
        None => builder.body(empty()),
    }
    .unwrap();
    let response = send(address, request).await;
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

#[track_caller]
fn assert_error(reply: &(StatusCode, String), status: u16, code: &str) {
    assert_eq!(reply.0.as_u16(), status, "{}", reply.1);
    assert_eq!(json_of(&reply.1)["code"], code, "{}", reply.1);
}

/// A server of its own for one test, the agent injected when `agent`; its scratch directory.
fn start(name: &str, agent: bool) -> (ScratchDir, Server) {
    let tmp = tempfile_dir();
    let run = format!("proxy-docker-{name}-{}", std::process::id());
    let mut env = vec![("BERTH_SERVER__API_KEY", KEY.to_owned())];
    if agent {
        common::require_docker(&[BUSYBOX, EXECD]);
        env.push(("BERTH_RUNTIME__EXECD_IMAGE", EXECD.to_owned()));
    } else {
        common::require_docker(&[BUSYBOX]);
    }
    let server = Server::start(&run, &tmp.join("state"), &env);
    (tmp, server)
}

/// Creates a busybox sandbox running `entrypoint`; its id.
async fn create(address: &str, entrypoint: &[&str]) -> String {
    let (status, body) = http(
        address,
        "POST",
        "/v1/sandboxes",
        Some(KEY),
        Some(json!({
            "image": {"uri": BUSYBOX},
            "entrypoint": entrypoint,
            "timeout": 600,
            "resourceLimits": {"cpu": "250m"},
        })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    json_of(&body)["id"].as_str().unwrap().to_owned()
}

/// GET `path` with the key until the sandbox runs and something answers there: that answer.
/// Until then the proxy says the sandbox is not running yet (409) or nothing listens (502).
async fn until_answered(address: &str, path: &str) -> (StatusCode, String) {
    let deadline = Instant::now() + STALL;
    loop {
        let (status, body) = http(address, "GET", path, Some(KEY), None).await;
        match status {
            StatusCode::CONFLICT => {
                assert_eq!(json_of(&body)["code"], "SANDBOX::INVALID_STATE", "{body}");
            }
            StatusCode::BAD_GATEWAY => {
                assert_eq!(
                    json_of(&body)["code"],
                    "SANDBOX::ENDPOINT_UNREACHABLE",
                    "{body}"
                );
            }
            _ => return (status, body),
        }
        assert!(Instant::now() < deadline, "{path} never answered: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The endpoint `endpoints/{port}?{query}` answers.
async fn endpoint(address: &str, id: &str, port: u16, query: &str) -> String {
    let sep = if query.is_empty() { "" } else { "?" };
    let (status, body) = http(
        address,
        "GET",
        &format!("/v1/sandboxes/{id}/endpoints/{port}{sep}{query}"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    json_of(&body)["endpoint"].as_str().unwrap().to_owned()
}

/// The path of an endpoint (`host:port/path`) on the server at `address`.
fn route_of(address: &str, endpoint: &str) -> String {
    endpoint
        .strip_prefix(address)
        .unwrap_or_else(|| panic!("{endpoint} is not on {address}"))
        .to_owned()
}

/// Deletes the sandbox (204).
async fn delete(address: &str, id: &str) {
    let (status, body) = http(
        address,
        "DELETE",
        &format!("/v1/sandboxes/{id}"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

/// Stops the server with SIGTERM and checks that nothing of its run is left.
fn finish(mut server: Server, tmp: &ScratchDir) {
    server.terminate();
    assert_eq!(server.wait(), Some(0), "berth-server did not exit cleanly");
    let containers = common::run_containers(&server.run);
    assert!(containers.is_empty(), "containers left: {containers:?}");
    drop(server);
    std::fs::remove_dir_all(tmp).unwrap();
}

/// A field of `docker inspect` of a container, as the CLI formats it.
fn inspect(container: &str, format: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["inspect", "--format", format, container])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker inspect {container}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The headers of an agent's `/echo` answer, names lower-cased, in order.
fn echoed_headers(echo: &Value) -> Vec<(String, String)> {
    echo["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("no headers in {echo}"))
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_ascii_lowercase(),
                pair[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A kernel figure (`VmHWM`, `VmRSS`: KiB) of a process.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_file_served_in_a_sandbox_is_fetched_through_the_proxy() {
    let (tmp, server) = start("httpd", false);
    let address = server.address.clone();
    let script = format!(
        "mkdir -p /tmp/www && echo '{PAGE}' > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
    );
    let (status, body) = http(
        &address,
        "POST",
        "/v1/sandboxes",
        Some(KEY),
        Some(json!({
            "image": {"uri": "berth-test/busybox:latest"},
            "entrypoint": ["sh", "-c", script],
            "timeout": 600,
            "resourceLimits": {"cpu": "250m"},
        })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = json_of(&body)["id"].as_str().unwrap().to_owned();
    let page = format!("/v1/sandboxes/{id}/proxy/8080/index.html");

    // The sandbox runs before httpd listens: until then the proxy says nothing answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        let (status, body) = http(&address, "GET", &page, Some(KEY), None).await;
        if status != StatusCode::BAD_GATEWAY {
            break (status, body);
        }
        assert_eq!(json_of(&body)["code"], "SANDBOX::ENDPOINT_UNREACHABLE");
        assert!(Instant::now() < deadline, "httpd never answered: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, format!("{PAGE}\n"));
    assert_eq!(
        http(&address, "GET", &page, None, None).await.0,
        StatusCode::UNAUTHORIZED,
        "the proxy needs the key"
    );

    // The route `endpoints` answers, as a client would use it.
    let (_, body) = http(
        &address,
        "GET",
        &format!("/v1/sandboxes/{id}/endpoints/8080?use_server_proxy=true"),
        Some(KEY),
        None,
    )
    .await;
    let endpoint = json_of(&body)["endpoint"].as_str().unwrap().to_owned();
    let route = endpoint.strip_prefix(address.as_str()).unwrap();
    let (status, body) = http(
        &address,
        "GET",
        &format!("{route}/index.html"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, format!("{PAGE}\n").as_str())
    );

    // A signed route: no key needed.
    let expires = chrono::Utc::now().timestamp() + 300;
    let (status, body) = http(
        &address,
        "GET",
        &format!("/v1/sandboxes/{id}/endpoints/8080?expires={expires}"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let endpoint = json_of(&body)["endpoint"].as_str().unwrap().to_owned();
    let route = endpoint.strip_prefix(address.as_str()).unwrap();
    assert!(route.contains("/signed/"), "{route}");
    let (status, body) = http(&address, "GET", &format!("{route}/index.html"), None, None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, format!("{PAGE}\n").as_str())
    );

    // Nothing listens on port 9 in the sandbox.
    let (status, body) = http(
        &address,
        "GET",
        &format!("/v1/sandboxes/{id}/proxy/9/"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(json_of(&body)["code"], "SANDBOX::ENDPOINT_UNREACHABLE");

    let (status, _) = http(
        &address,
        "DELETE",
        &format!("/v1/sandboxes/{id}"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = http(&address, "GET", &page, Some(KEY), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(json_of(&body)["code"], "SANDBOX::NOT_FOUND");

    finish(server, &tmp);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_injected_agent_answers_directly_and_through_the_proxy() {
    let (tmp, server) = start("agent", true);
    let address = server.address.clone();
    let script = format!(
        "mkdir -p /tmp/www && echo '{PAGE}' > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
    );
    let id = create(&address, &["sh", "-c", &script]).await;
    let (status, body) =
        until_answered(&address, &format!("/v1/sandboxes/{id}/proxy/{AGENT}/ping")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));

    // Injected and wrapped: the launcher runs the agent, then the sandbox's own entrypoint,
    // which still serves its page.
    let container = format!("sandbox-{id}");
    let entrypoint: Vec<String> =
        serde_json::from_str(&inspect(&container, "{{json .Config.Entrypoint}}")).unwrap();
    assert_eq!(
        entrypoint,
        ["/opt/opensandbox/bootstrap.sh", "sh", "-c", script.as_str()]
    );
    let env: Vec<String> =
        serde_json::from_str(&inspect(&container, "{{json .Config.Env}}")).unwrap();
    assert!(
        env.iter().any(|e| e == "EXECD=/opt/opensandbox/execd"),
        "{env:?}"
    );
    let (status, body) = until_answered(
        &address,
        &format!("/v1/sandboxes/{id}/proxy/8080/index.html"),
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, format!("{PAGE}\n")));

    // /ping directly at the endpoint the runtime answers, and through the proxy's.
    let direct = endpoint(&address, &id, AGENT, "").await;
    assert!(!direct.contains("/proxy/"), "{direct}");
    let (status, body) = http(&direct, "GET", "/ping", None, None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let proxied = endpoint(&address, &id, AGENT, "use_server_proxy=true").await;
    let route = route_of(&address, &proxied);
    assert_eq!(route, format!("/v1/sandboxes/{id}/proxy/{AGENT}"));
    let ping = format!("{route}/ping");
    let (status, body) = http(&address, "GET", &ping, Some(KEY), None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    assert_error(
        &http(&address, "GET", &ping, None, None).await,
        401,
        "MISSING_API_KEY",
    );
    assert_error(
        &http(&address, "GET", &ping, Some("not-the-key"), None).await,
        401,
        "INVALID_API_KEY",
    );

    // Headers: hop-by-hop ones and the key stay with the proxy; X-Forwarded-* are added.
    let target = "/echo/a%2Fb?x=1&y=%20z&x=2";
    let echo = request(&address, "POST", &format!("{route}{target}"), Some(KEY))
        .header("connection", "keep-alive, x-private")
        .header("x-private", "connection-scoped")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic eDp5")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-app", "kept")
        .header("cookie", "app=1")
        .body(Full::new(Bytes::from_static(b"twelve bytes")).boxed())
        .unwrap();
    let response = send(&address, echo).await;
    assert_eq!(response.status(), StatusCode::OK);
    let echo = response.into_body().collect().await.unwrap().to_bytes();
    let echo: Value = serde_json::from_slice(&echo).unwrap();
    assert_eq!(echo["method"], "POST", "{echo}");
    assert_eq!(echo["target"], target, "{echo}");
    assert_eq!(echo["bodyBytes"], 12, "{echo}");
    let seen = echoed_headers(&echo);
    for gone in [
        berth_api::API_KEY_HEADER,
        "x-private",
        "keep-alive",
        "te",
        "proxy-authorization",
    ] {
        assert!(
            header(&seen, gone).is_empty(),
            "{gone} was forwarded: {seen:?}"
        );
    }
    assert!(
        header(&seen, "connection")
            .iter()
            .all(|v| !v.contains("x-private")),
        "{seen:?}"
    );
    assert_eq!(header(&seen, "x-app"), ["kept"]);
    assert_eq!(header(&seen, "cookie"), ["app=1"]);
    assert_eq!(header(&seen, "x-forwarded-for"), ["203.0.113.7, 127.0.0.1"]);
    assert_eq!(header(&seen, "x-forwarded-proto"), ["http"]);
    assert_eq!(header(&seen, "x-forwarded-host"), [address.as_str()]);
    // The proxy reached the container at its own address (not through the engine's
    // forwarder of the published port `direct`), and named that address as the host.
    let own = format!(
        "{}:{AGENT}",
        inspect(&container, "{{.NetworkSettings.Networks.bridge.IPAddress}}")
    );
    assert_eq!(header(&seen, "host"), [own.as_str()]);

    // Server-sent events: a whole short stream, then one whose second event is a minute after
    // its first. Holding event 1 of a stream that has not ended means the proxy relayed it
    // alone: a proxy that buffered could pass nothing on before the agent's minute is over.
    let (status, body) = http(
        &address,
        "GET",
        &format!("{route}/sse?n=5&interval_ms=20"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let all: String = (1..=5)
        .map(|i| format!("id: {i}\ndata: event {i}\n\n"))
        .collect();
    assert_eq!(body, all);
    let slow = request(
        &address,
        "GET",
        &format!("{route}/sse?n=2&interval_ms=60000"),
        Some(KEY),
    )
    .body(empty())
    .unwrap();
    let (mut events, first) = tokio::time::timeout(STALL, async {
        let response = send(&address, slow).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut events = response.into_body();
        let mut text = String::new();
        while !text.contains("\n\n") {
            let frame = events
                .frame()
                .await
                .expect("the stream ended before its first event")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                text.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
        (events, text)
    })
    .await
    .expect("event 1 was held back: the proxy buffers responses");
    assert_eq!(first, "id: 1\ndata: event 1\n\n");
    assert!(
        events.frame().now_or_never().is_none(),
        "the stream goes on, event 2 not yet sent"
    );
    drop(events);

    // A WebSocket through the proxy: every message comes back as sent; a close is answered.
    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut upgrade = format!("ws://{address}{route}/ws")
        .into_client_request()
        .unwrap();
    upgrade
        .headers_mut()
        .insert(berth_api::API_KEY_HEADER, KEY.parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::client_async(upgrade, stream)
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
    assert!(
        matches!(ws.next().await, Some(Ok(Message::Close(_)))),
        "the close was not answered"
    );
    drop(ws);

    // Nothing listens on port 9; a deleted sandbox is not found.
    assert_error(
        &http(
            &address,
            "GET",
            &format!("/v1/sandboxes/{id}/proxy/9/"),
            Some(KEY),
            None,
        )
        .await,
        502,
        "SANDBOX::ENDPOINT_UNREACHABLE",
    );
    delete(&address, &id).await;
    assert_error(
        &http(&address, "GET", &ping, Some(KEY), None).await,
        404,
        "SANDBOX::NOT_FOUND",
    );
    finish(server, &tmp);
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_routes_admit_without_the_key_and_refuse_every_misuse() {
    let (tmp, server) = start("signed", true);
    let address = server.address.clone();
    let (a, b) = tokio::join!(
        create(&address, &["sleep", "600"]),
        create(&address, &["sleep", "600"])
    );
    let (ping_a, ping_b) = (
        format!("/v1/sandboxes/{a}/proxy/{AGENT}/ping"),
        format!("/v1/sandboxes/{b}/proxy/{AGENT}/ping"),
    );
    let (pa, pb) = tokio::join!(
        until_answered(&address, &ping_a),
        until_answered(&address, &ping_b),
    );
    assert_eq!((pa.0, pb.0), (StatusCode::OK, StatusCode::OK));

    // Asked first, so that its expiry passes while the rest runs.
    let short_expiry = chrono::Utc::now().timestamp() + 2;
    let short = route_of(
        &address,
        &endpoint(&address, &a, AGENT, &format!("expires={short_expiry}")).await,
    );

    let expires = chrono::Utc::now().timestamp() + 300;
    let route = route_of(
        &address,
        &endpoint(&address, &a, AGENT, &format!("expires={expires}")).await,
    );
    assert!(
        route.starts_with(&format!("/v1/sandboxes/{a}/signed/"))
            && route.ends_with(&format!("/proxy/{AGENT}")),
        "{route}"
    );
    let (status, body) = http(&address, "GET", &format!("{route}/ping"), None, None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    // Mounted at `/` too.
    let root = route.strip_prefix("/v1").unwrap();
    let (status, _) = http(&address, "GET", &format!("{root}/ping"), None, None).await;
    assert_eq!(status, StatusCode::OK);
    // The token stays with the proxy, and so does a key the client sends anyway.
    let (status, body) = http(
        &address,
        "GET",
        &format!("{route}/echo?q=1"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let echo = json_of(&body);
    assert_eq!(echo["target"], "/echo?q=1");
    assert!(
        header(&echoed_headers(&echo), berth_api::API_KEY_HEADER).is_empty(),
        "{echo}"
    );
    // A WebSocket on the signed route, without the key.
    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{address}{route}/ws"), stream)
        .await
        .unwrap();
    ws.send(Message::text("signed")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("signed"));
    ws.close(None).await.unwrap();
    drop(ws);

    // Every misuse of a token is refused.
    let token = route.split('/').nth(5).unwrap().to_owned();
    let (stamp, tag) = token.split_once('.').unwrap();
    assert_eq!(stamp, expires.to_string());
    let flipped = {
        let mut t = tag.as_bytes().to_vec();
        t[0] = if t[0] == b'A' { b'B' } else { b'A' };
        String::from_utf8(t).unwrap()
    };
    let b_route = route_of(
        &address,
        &endpoint(&address, &b, AGENT, &format!("expires={expires}")).await,
    );
    let b_token = b_route.split('/').nth(5).unwrap().to_owned();
    assert_ne!(b_token, token);
    for (what, forged) in [
        (
            "a changed tag",
            format!("/v1/sandboxes/{a}/signed/{stamp}.{flipped}/proxy/{AGENT}"),
        ),
        (
            "a changed expiry",
            format!(
                "/v1/sandboxes/{a}/signed/{}.{tag}/proxy/{AGENT}",
                expires + 1
            ),
        ),
        (
            "another sandbox's token",
            format!("/v1/sandboxes/{a}/signed/{b_token}/proxy/{AGENT}"),
        ),
        (
            "the token on another sandbox",
            format!("/v1/sandboxes/{b}/signed/{token}/proxy/{AGENT}"),
        ),
        (
            "another port",
            format!("/v1/sandboxes/{a}/signed/{token}/proxy/8080"),
        ),
        (
            "no tag",
            format!("/v1/sandboxes/{a}/signed/{stamp}/proxy/{AGENT}"),
        ),
    ] {
        let reply = http(&address, "GET", &format!("{forged}/ping"), None, None).await;
        assert_eq!(reply.0.as_u16(), 403, "{what}: {}", reply.1);
        assert_eq!(
            json_of(&reply.1)["code"],
            "SANDBOX::ROUTE_TOKEN_INVALID",
            "{what}"
        );
    }
    // Unsigned, the sandbox still needs the key.
    assert_error(
        &http(
            &address,
            "GET",
            &format!("/v1/sandboxes/{a}/proxy/{AGENT}/ping"),
            None,
            None,
        )
        .await,
        401,
        "MISSING_API_KEY",
    );

    // Once past its expiry (by the clock the server shares with this test), the short-lived
    // route is refused as expired.
    let deadline = Instant::now() + Duration::from_secs(10);
    while chrono::Utc::now().timestamp() <= short_expiry {
        assert!(Instant::now() < deadline, "the clock does not move");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_error(
        &http(&address, "GET", &format!("{short}/ping"), None, None).await,
        401,
        "SANDBOX::ROUTE_TOKEN_EXPIRED",
    );

    // A genuine token of a deleted sandbox finds nothing.
    delete(&address, &b).await;
    assert_error(
        &http(&address, "GET", &format!("{b_route}/ping"), None, None).await,
        404,
        "SANDBOX::NOT_FOUND",
    );
    let (status, _) = http(&address, "GET", &format!("{route}/ping"), None, None).await;
    assert_eq!(status, StatusCode::OK, "the genuine route still works");
    delete(&address, &a).await;
    finish(server, &tmp);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mib_upload_streams_through_with_bounded_server_memory() {
    const MIB: usize = 1 << 20;
    /// Growth of the server's peak resident memory allowed over its value before the upload.
    const BOUND_KIB: u64 = 64 * 1024;
    let (tmp, server) = start("upload", true);
    let address = server.address.clone();
    let id = create(&address, &["sleep", "600"]).await;
    let upload = format!("/v1/sandboxes/{id}/proxy/{AGENT}/upload");
    until_answered(&address, &format!("/v1/sandboxes/{id}/proxy/{AGENT}/ping")).await;
    // A small upload first, so that the baseline has the proxy's connection and buffers.
    let warm = request(&address, "POST", &upload, Some(KEY))
        .body(Full::new(Bytes::from_static(b"warm")).boxed())
        .unwrap();
    let response = send(&address, warm).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"bytes": 4})
    );

    let pid = server.child.id();
    let before = memory_kib(pid, "VmHWM");
    let chunk = Bytes::from(vec![0x5a_u8; MIB]);
    // No length: the client sends it chunked, one MiB at a time.
    let stream = futures_util::stream::iter(
        (0..100).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
    );
    let big = request(&address, "POST", &upload, Some(KEY))
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap();
    let response = tokio::time::timeout(STALL, async {
        let response = send(&address, big).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    })
    .await
    .expect("the upload stalled");
    assert_eq!(response.0, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&response.1).unwrap(),
        json!({"bytes": 100 * MIB})
    );
    let after = memory_kib(pid, "VmHWM");
    println!("berth-server VmHWM: {before} KiB before the upload, {after} KiB after");
    assert!(
        after < before + BOUND_KIB,
        "the server's peak memory grew by {} KiB over a 100 MiB upload: it holds the body",
        after - before
    );
    delete(&address, &id).await;
    finish(server, &tmp);
}
