//! `cargo xtask harden load` (and `load-k8s`): a real `berth-server` under load and under
//! hostile clients, on the real engine (`HARDEN_LOAD_RUNTIME=docker`) or on the test cluster
//! (`kubernetes`) (`bench = false`: only xtask runs it, with its bounds). One client, the
//! canary, calls `/health` on its own keep-alive connection every 20 ms from start to end: it
//! must never fail, whatever else is going on.
//!
//! 1. 50 creates at once, each with a claim on a per-sandbox subPath and a read-only host volume.
//! 2. More sandboxes (without volumes) up to `HARDEN_LOAD_SANDBOXES` (500; fewer than 50
//!    makes the first step smaller).
//! 3. Mixed reads (a sandbox, a filtered page, a plain page, `/health`, `/metrics`) at
//!    concurrency 32 for `HARDEN_LOAD_SECONDS` (60), beside 100 slow-loris clients that send a
//!    request's headers a byte a second and reconnect when closed: zero errors; throughput,
//!    p50 and p99 reported; the server's peak RSS so far at most 60 MiB.
//! 4. Exhaustion, each refused cleanly (status and error code checked): a 1 GiB body with a
//!    length and another chunked, 10 000 volumes, JSON nested 100 000 deep, 10 000 metadata
//!    keys in a create and in a patch, and 20 000 connections opened and left idle — past
//!    `server.max_connections` closed at once, the rest closed at the header timeout, while the
//!    canary is served.
//! 5. Every sandbox deleted through the API.
//!
//! The server runs with `server.header_read_timeout_seconds = 5` so that slow and idle clients
//! are closed within the bound. Figures are printed; a failed check panics (exit status 101).

#![allow(missing_docs, clippy::unwrap_used)] // A benchmark harness, not an API.

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use harness::kubernetes::KubernetesServer;
use harness::{Connection, DockerServer, KEY, peak_rss_kib, percentile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IMAGE: &str = "berth-test/busybox:latest";
/// At most this many creates at once (fewer when the run has fewer sandboxes).
const CONCURRENT_CREATES: usize = 50;
const READERS: usize = 32;
const SLOW_CLIENTS: usize = 100;
const IDLE_CONNECTIONS: usize = 20_000;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const PEAK_RSS_LIMIT_MIB: u64 = 60;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().map_or(default, |n| {
        n.parse()
            .unwrap_or_else(|_| panic!("{name}={n:?}: a number"))
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn json(bytes: &Bytes) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

/// The server under load, on either runtime (`HARDEN_LOAD_RUNTIME`: `docker`, the default, or
/// `kubernetes` on the test cluster).
struct Target {
    runtime: String,
    address: String,
    pid: u32,
    run: String,
    host_root: std::path::PathBuf,
    /// Stops the server and removes what it made, on drop.
    _server: Box<dyn std::any::Any>,
}

impl Target {
    async fn start(runtime: &str, env: &[(&str, String)]) -> Self {
        let binary = env!("CARGO_BIN_EXE_berth-server");
        match runtime {
            "docker" => {
                let server = DockerServer::start(binary, "harden-load", env).await;
                Self {
                    runtime: runtime.to_owned(),
                    address: server.address.clone(),
                    pid: server.pid(),
                    run: server.run.clone(),
                    host_root: server.host_root.clone(),
                    _server: Box::new(server),
                }
            }
            "kubernetes" => {
                let server = KubernetesServer::start(binary, "harden-load", env).await;
                Self {
                    runtime: runtime.to_owned(),
                    address: server.address.clone(),
                    pid: server.pid(),
                    run: server.run.clone(),
                    host_root: server.host_root.clone(),
                    _server: Box::new(server),
                }
            }
            other => panic!("HARDEN_LOAD_RUNTIME={other:?}: docker or kubernetes"),
        }
    }
}

/// `/health` every 20 ms on one connection opened at the start, until `stop`.
struct Canary {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Duration>>,
}

impl Canary {
    async fn start(address: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut connection = Connection::open(address).await;
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let (status, body) = connection.call("GET", "/health", None).await;
                    latencies.push(t.elapsed());
                    assert_eq!(status, 200, "canary: {}", String::from_utf8_lossy(&body));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                latencies
            }
        });
        Self { stop, task }
    }

    async fn finish(self) -> Vec<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        let mut latencies = self.task.await.expect("the canary failed");
        latencies.sort();
        latencies
    }
}

async fn create(address: &str, body: &serde_json::Value) -> (String, Duration) {
    let mut connection = Connection::open(address).await;
    let t = Instant::now();
    let (status, bytes) = connection.call("POST", "/v1/sandboxes", Some(body)).await;
    let took = t.elapsed();
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&bytes));
    (json(&bytes)["id"].as_str().unwrap().to_owned(), took)
}

/// Phase 1: all at once, each with two volumes.
async fn concurrent_creates(server: &Target, count: usize) -> Vec<String> {
    let claim = format!("{}-sessions", server.run);
    let started = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let address = server.address.clone();
            let body = serde_json::json!({"image": {"uri": IMAGE}, "entrypoint": ["sleep", "3600"],
                "resourceLimits": {"memory": "16Mi"}, "metadata": {"team": "a", "phase": "volumes"},
                "volumes": [
                    {"name": "work", "pvc": {"claimName": claim, "deleteOnSandboxTermination": true}, "mountPath": "/workspace", "subPath": format!("uid-{i}/session-1")},
                    {"name": "skills", "host": {"path": server.host_root}, "mountPath": "/skills", "readOnly": true}]});
            tokio::spawn(async move { create(&address, &body).await })
        })
        .collect();
    let mut ids = Vec::new();
    let mut took = Vec::new();
    for task in tasks {
        let (id, t) = task.await.unwrap();
        ids.push(id);
        took.push(t);
    }
    took.sort();
    println!(
        "{count} concurrent creates with 2 volumes each: all 202 in {:.1} s (p50 {:.0} ms, p99 {:.0} ms)",
        started.elapsed().as_secs_f64(),
        ms(percentile(&took, 0.5)),
        ms(percentile(&took, 0.99)),
    );
    ids
}

/// Phase 2: up to `total`, 8 at a time.
async fn fill(server: &Target, ids: &mut Vec<String>, total: usize) {
    let started = Instant::now();
    let numbers: Vec<usize> = (ids.len()..total).collect();
    for chunk in numbers.chunks(8) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let address = server.address.clone();
                let team = if i % 2 == 0 { "a" } else { "b" };
                let body = serde_json::json!({"image": {"uri": IMAGE}, "entrypoint": ["sleep", "3600"],
                    "resourceLimits": {"memory": "16Mi"}, "metadata": {"team": team}});
                tokio::spawn(async move { create(&address, &body).await.0 })
            })
            .collect();
        for task in tasks {
            ids.push(task.await.unwrap());
        }
    }
    println!(
        "{} sandboxes present ({} more created in {:.1} s)",
        ids.len(),
        numbers.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A slow-loris client: headers a byte a second, a new connection whenever the server closes
/// one. How long the server let each connection live.
async fn slow_client(address: String, until: Instant) -> Vec<Duration> {
    let request = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    let mut lived = Vec::new();
    while Instant::now() < until {
        let Ok(mut stream) = TcpStream::connect(&address).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let opened = Instant::now();
        let mut closed = false;
        for &byte in request.iter().chain(std::iter::repeat(&b'a')) {
            if Instant::now() >= until {
                break;
            }
            if stream.write_all(&[byte]).await.is_err() {
                closed = true;
                break;
            }
            // Whatever the server sends (a 408) or a close ends this connection.
            let mut buffer = [0_u8; 256];
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await {
                Err(_) => {}
                Ok(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            lived.push(opened.elapsed());
        }
    }
    lived
}

/// Phase 3: mixed reads beside slow clients.
async fn mixed_reads(server: &Target, ids: Arc<Vec<String>>, seconds: u64) {
    let until = Instant::now() + Duration::from_secs(seconds);
    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| tokio::spawn(slow_client(server.address.clone(), until)))
        .collect();
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let readers: Vec<_> = (0..READERS)
        .map(|w| {
            let (address, ids, errors) = (server.address.clone(), ids.clone(), errors.clone());
            tokio::spawn(async move {
                let mut connection = Connection::open(&address).await;
                let mut latencies = Vec::new();
                let mut i = w;
                while Instant::now() < until {
                    let path = match i % 10 {
                        0..=3 => format!("/v1/sandboxes/{}", ids[i * 7919 % ids.len()]),
                        4 | 5 => format!(
                            "/v1/sandboxes?metadata=team%3Da&state=Running&pageSize=20&page={}",
                            i % 5 + 1
                        ),
                        6 | 7 => format!("/v1/sandboxes?pageSize=50&page={}", i % 4 + 1),
                        8 => "/health".to_owned(),
                        _ => "/metrics".to_owned(),
                    };
                    let t = Instant::now();
                    let (status, _) = connection.call("GET", &path, None).await;
                    latencies.push(t.elapsed());
                    if status != 200 {
                        eprintln!("GET {path}: {status}");
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    i += READERS;
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for reader in readers {
        all.extend(reader.await.unwrap());
    }
    let elapsed = started.elapsed();
    let mut lived = Vec::new();
    for client in slow {
        lived.extend(client.await.unwrap());
    }
    all.sort();
    lived.sort();
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "mixed reads for {seconds} s at concurrency {READERS}: {} requests, {errors} errors, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
        all.len(),
        all.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
    );
    if lived.is_empty() {
        println!("{SLOW_CLIENTS} slow clients: none closed within the phase");
    } else {
        println!(
            "{SLOW_CLIENTS} slow clients: {} connections closed by the server, after {:.1} s (median; header timeout {} s)",
            lived.len(),
            percentile(&lived, 0.5).as_secs_f64(),
            HEADER_TIMEOUT.as_secs()
        );
    }
    assert_eq!(errors, 0, "reads failed under load");
}

/// An error answer: its status and code.
fn assert_refused(what: &str, status: u16, body: &Bytes, expected: (u16, &str)) {
    let code = json(body)["code"].as_str().unwrap_or_default().to_owned();
    println!(
        "{what}: {status} {code} ({})",
        json(body)["message"].as_str().unwrap_or_default()
    );
    assert_eq!((status, code.as_str()), expected, "{what}");
}

/// Sends a create's headers and then `body_bytes` of a body (zeros after `{"env": "`), with a
/// length or chunked, until the server answers; the status, and how much it took first.
async fn huge_body(address: &str, body_bytes: u64, chunked: bool) -> (u16, u64, Duration) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {body_bytes}")
    };
    let head = format!(
        "POST /v1/sandboxes HTTP/1.1\r\nHost: localhost\r\nOPEN-SANDBOX-API-KEY: {KEY}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let chunk = vec![b'0'; 64 * 1024];
    let (mut reader, mut writer) = stream.into_split();
    let answer = tokio::spawn(async move {
        let mut text = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(60), async {
            let mut buffer = [0_u8; 4096];
            while let Ok(n) = reader.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                text.extend_from_slice(&buffer[..n]);
                if text.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        })
        .await;
        text
    });
    let mut sent = 0_u64;
    while sent < body_bytes && !answer.is_finished() {
        let frame = if chunked {
            let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
            frame.extend_from_slice(&chunk);
            frame.extend_from_slice(b"\r\n");
            frame
        } else {
            chunk.clone()
        };
        if writer.write_all(&frame).await.is_err() {
            break;
        }
        sent += chunk.len() as u64;
    }
    let text = answer.await.unwrap();
    let status_line = String::from_utf8_lossy(&text)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, sent, started.elapsed())
}

/// Phase 4.
async fn exhaustion(server: &Target, some_id: &str) {
    for chunked in [false, true] {
        let what = if chunked {
            "1 GiB body, chunked"
        } else {
            "1 GiB body with its length"
        };
        let (status, sent, took) = huge_body(&server.address, 1 << 30, chunked).await;
        println!(
            "{what}: {status} after {:.1} MiB sent, in {:.0} ms",
            sent as f64 / (1 << 20) as f64,
            ms(took)
        );
        assert_eq!(status, 413, "{what}");
        assert!(
            sent < 64 << 20,
            "{what}: the server read {sent} bytes first"
        );
    }

    let mut connection = Connection::open(&server.address).await;
    let volumes: Vec<serde_json::Value> = (0..10_000)
        .map(|i| serde_json::json!({"name": format!("v{i}"), "pvc": {"claimName": "c"}, "mountPath": format!("/m{i}")}))
        .collect();
    let body = serde_json::json!({"image": {"uri": IMAGE}, "entrypoint": ["true"], "resourceLimits": {}, "volumes": volumes});
    let (status, bytes) = connection.call("POST", "/v1/sandboxes", Some(&body)).await;
    assert_refused(
        "10 000 volumes",
        status,
        &bytes,
        (400, "SANDBOX::INVALID_PARAMETER"),
    );

    let depth = 100_000;
    let nested = format!(
        "{{\"image\": {{\"uri\": \"{IMAGE}\"}}, \"lifecycle\": {}{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let (status, bytes) = connection
        .send("POST", "/v1/sandboxes", true, Bytes::from(nested))
        .await;
    assert_refused(
        "JSON nested 100 000 deep",
        status,
        &bytes,
        (400, "GENERAL::INVALID_BODY"),
    );

    let metadata: serde_json::Map<String, serde_json::Value> = (0..10_000)
        .map(|i| (format!("key-{i}"), serde_json::json!("v")))
        .collect();
    let body = serde_json::json!({"image": {"uri": IMAGE}, "entrypoint": ["true"], "resourceLimits": {}, "metadata": metadata});
    let (status, bytes) = connection.call("POST", "/v1/sandboxes", Some(&body)).await;
    assert_refused(
        "10 000 metadata keys in a create",
        status,
        &bytes,
        (400, "SANDBOX::INVALID_PARAMETER"),
    );
    let patch = serde_json::Value::Object(metadata);
    let (status, bytes) = connection
        .send(
            "PATCH",
            &format!("/v1/sandboxes/{some_id}/metadata"),
            true,
            Bytes::from(patch.to_string()),
        )
        .await;
    assert_refused(
        "10 000 metadata keys in a patch",
        status,
        &bytes,
        (400, "SANDBOX::INVALID_PARAMETER"),
    );

    idle_connections(server).await;
}

/// 20 000 connections opened and left idle, by two helper processes of 10 000 each (one
/// process may hold at most the hard open-file limit, 20 000 here, which only root with
/// `CAP_SYS_RESOURCE` could raise).
async fn idle_connections(server: &Target) {
    let started = Instant::now();
    let holders: Vec<_> = (0..2)
        .map(|_| {
            tokio::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--hold-idle",
                    &server.address,
                    &(IDLE_CONNECTIONS / 2).to_string(),
                ])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut reports = Vec::new();
    for holder in holders {
        let out = holder.wait_with_output().await.unwrap();
        assert!(out.status.success(), "an idle-connection holder failed");
        reports.push(String::from_utf8(out.stdout).unwrap());
    }
    let field = |name: &str| -> usize {
        reports
            .iter()
            .map(|r| {
                r.split_whitespace()
                    .skip_while(|w| *w != name)
                    .nth(1)
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or_else(|| panic!("no {name} in {r:?}"))
            })
            .sum()
    };
    let (opened, failed, held) = (field("opened"), field("failed"), field("held"));
    println!(
        "{IDLE_CONNECTIONS} idle connections: {opened} opened, {failed} could not be opened, {held} still held by the server a second after opening (the rest closed at once, past server.max_connections, or at the header timeout); all closed by the server within {:.1} s; peak RSS so far {:.1} MiB",
        started.elapsed().as_secs_f64(),
        peak_rss_kib(server.pid) as f64 / 1024.0
    );
    assert!(
        held <= 10_000,
        "{held} connections held: more than server.max_connections"
    );
    // And a new client is served again.
    let (status, _) = Connection::open(&server.address)
        .await
        .call("GET", "/health", None)
        .await;
    assert_eq!(status, 200, "a new client after the idle flood");
}

/// The helper process of [`idle_connections`]: opens `count` connections to `address`, says
/// how many are held a second later, and exits once the server has closed every one (failing
/// if that takes past the header timeout and a margin).
async fn hold_idle(address: &str, count: usize) {
    let mut open = Vec::with_capacity(count);
    let mut failed = 0;
    for _ in 0..count {
        match TcpStream::connect(address).await {
            Ok(stream) => open.push(stream),
            Err(_) => failed += 1,
        }
    }
    let opened = open.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = opened - count_closed(&mut open).await;
    let deadline = Instant::now() + HEADER_TIMEOUT + Duration::from_secs(15);
    loop {
        let still_open = open.len() - count_closed(&mut open).await;
        if still_open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{still_open} idle connections still open past the header timeout"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("opened {opened} failed {failed} held {held}");
}

/// How many of `streams` the server has closed (a read returns end of file or an error).
async fn count_closed(streams: &mut [TcpStream]) -> usize {
    let mut closed = 0;
    for stream in streams.iter_mut() {
        let mut buffer = [0_u8; 512];
        match tokio::time::timeout(Duration::from_micros(1), stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => closed += 1,
            Ok(Ok(_)) => closed += 1, // a 408 before the close
            Err(_) => {}
        }
    }
    closed
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if let [_, flag, address, count] = args.as_slice()
        && flag == "--hold-idle"
    {
        berth_api::serve::raise_open_file_limit();
        return hold_idle(address, count.parse().unwrap()).await;
    }
    // Up to the hard limit, as the server does for itself: the holders inherit it.
    berth_api::serve::raise_open_file_limit();
    let sandboxes = env_number("HARDEN_LOAD_SANDBOXES", 500).max(1);
    let seconds = env_number("HARDEN_LOAD_SECONDS", 60) as u64;
    let server = Target::start(
        &std::env::var("HARDEN_LOAD_RUNTIME").unwrap_or_else(|_| "docker".to_owned()),
        &[(
            "BERTH_SERVER__HEADER_READ_TIMEOUT_SECONDS",
            HEADER_TIMEOUT.as_secs().to_string(),
        )],
    )
    .await;
    println!(
        "berth-server on the {} runtime, {sandboxes} sandboxes",
        server.runtime
    );
    let canary = Canary::start(&server.address).await;

    let mut ids = concurrent_creates(&server, CONCURRENT_CREATES.min(sandboxes)).await;
    fill(&server, &mut ids, sandboxes).await;
    let ids = Arc::new(ids);
    mixed_reads(&server, ids.clone(), seconds).await;
    let peak_load = peak_rss_kib(server.pid);
    println!(
        "peak RSS through creates and reads: {:.1} MiB (limit {PEAK_RSS_LIMIT_MIB} MiB)",
        peak_load as f64 / 1024.0
    );

    exhaustion(&server, &ids[0]).await;

    let started = Instant::now();
    for chunk in ids.chunks(4) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|id| {
                let (address, id) = (server.address.clone(), id.clone());
                tokio::spawn(async move {
                    Connection::open(&address)
                        .await
                        .call("DELETE", &format!("/v1/sandboxes/{id}"), None)
                        .await
                        .0
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), 204);
        }
    }
    println!(
        "{} sandboxes deleted in {:.1} s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    let canary = canary.finish().await;
    println!(
        "canary: {} calls of /health, none failed; p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
        canary.len(),
        ms(percentile(&canary, 0.5)),
        ms(percentile(&canary, 0.99)),
        ms(*canary.last().unwrap()),
    );
    let peak = peak_rss_kib(server.pid);
    println!("peak RSS of the whole run: {:.1} MiB", peak as f64 / 1024.0);
    assert!(
        peak_load <= PEAK_RSS_LIMIT_MIB * 1024,
        "peak RSS under load {:.1} MiB is over {PEAK_RSS_LIMIT_MIB} MiB",
        peak_load as f64 / 1024.0
    );
}
