//! The server proxy beside direct access, on the real Docker engine (`cargo xtask bench`; needs
//! root and the test images). One sandbox runs the stand-in agent (`runtime.execd_image`); its
//! port 44772 is reached directly at the address `endpoints` answers and through
//! `/v1/sandboxes/{id}/proxy/44772`. Back to back in one run: p50/p99 of `GET /ping` at
//! concurrency 1 and 32, and MiB/s of 1 MiB `POST /upload` bodies at concurrency 1 and 32, each
//! pair with its ratio (goals: proxied latency ≤ 1.2× direct, proxied throughput ≥ 80% of
//! direct); the server's peak RSS while it relays uploads. `PROXY_LOAD_PERF=<dir>` records a
//! `perf` profile of the server in each proxied phase.

#![allow(missing_docs, clippy::unwrap_used)] // A benchmark harness, not an API.

mod harness;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;

use harness::{Connection, DockerServer, percentile, rss_kib};

const IMAGE: &str = "berth-test/busybox:latest";
const EXECD: &str = "berth-test/execd:latest";
const AGENT_PORT: u16 = 44772;
const UPLOAD: usize = 1024 * 1024;

/// Requests per worker for each concurrency: `(concurrency, pings, uploads)`.
const PHASES: [(usize, usize, usize); 2] = [(1, 2000, 256), (32, 400, 16)];

/// Where a phase sends its requests: straight to the sandbox, or through the server.
#[derive(Clone)]
struct Target {
    address: String,
    prefix: String,
    key: bool,
}

/// What one phase measured.
struct Measured {
    latencies: Vec<Duration>,
    elapsed: Duration,
    bytes: u64,
    peak_rss_kib: u64,
}

impl Measured {
    fn p(&self, p: f64) -> f64 {
        percentile(&self.latencies, p).as_secs_f64() * 1e3
    }

    fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64()
    }
}

/// `concurrency` workers, each on its own keep-alive connection, each making `requests` pings
/// (`upload` empty) or uploads of `upload`; the server's RSS is sampled meanwhile.
async fn load(
    target: &Target,
    name: &str,
    concurrency: usize,
    requests: usize,
    upload: &Bytes,
    pid: u32,
) -> Measured {
    // PROXY_LOAD_PERF=<dir>: record a `perf` profile of the server during the proxied phases.
    let profiler = std::env::var_os("PROXY_LOAD_PERF")
        .filter(|_| target.key)
        .map(|dir| {
            let slug: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            let output = std::path::Path::new(&dir).join(format!("{slug}.data"));
            Command::new("perf")
                .args(["record", "-F", "1999", "-g", "-p", &pid.to_string(), "-o"])
                .arg(&output)
                .stderr(Stdio::null())
                .spawn()
                .expect("PROXY_LOAD_PERF needs perf installed")
        });
    if profiler.is_some() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut connections = Vec::new();
    for _ in 0..concurrency {
        connections.push(Connection::open(&target.address).await);
    }
    let started = Instant::now();
    let mut workers = Vec::new();
    for mut connection in connections {
        let (target, upload) = (target.clone(), upload.clone());
        workers.push(tokio::spawn(async move {
            let (method, path) = if upload.is_empty() {
                ("GET", format!("{}/ping", target.prefix))
            } else {
                ("POST", format!("{}/upload", target.prefix))
            };
            let expected = format!("{{\"bytes\":{}}}", upload.len());
            let mut latencies = Vec::with_capacity(requests);
            for _ in 0..requests {
                let t = Instant::now();
                let (status, body) = connection
                    .send(method, &path, target.key, upload.clone())
                    .await;
                latencies.push(t.elapsed());
                assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
                if !upload.is_empty() {
                    assert_eq!(String::from_utf8_lossy(&body), expected, "{path}");
                }
            }
            latencies
        }));
    }
    let mut peak_rss_kib = 0;
    while !workers.iter().all(|w| w.is_finished()) {
        peak_rss_kib = peak_rss_kib.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    if let Some(mut perf) = profiler {
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }
    latencies.sort();
    Measured {
        bytes: (latencies.len() * upload.len()) as u64,
        latencies,
        elapsed,
        peak_rss_kib,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let server = DockerServer::start(
        env!("CARGO_BIN_EXE_berth-server"),
        "proxy-bench",
        &[("BERTH_RUNTIME__EXECD_IMAGE", EXECD.to_owned())],
    )
    .await;
    let (address, pid) = (server.address.clone(), server.pid());

    let mut api = Connection::open(&address).await;
    let body = serde_json::json!({"image": {"uri": IMAGE}, "entrypoint": ["sleep", "3600"],
        "timeout": 1800, "resourceLimits": {}});
    let (status, bytes) = api
        .send("POST", "/v1/sandboxes", true, Bytes::from(body.to_string()))
        .await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&bytes));
    let id = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, bytes) = api
        .send(
            "GET",
            &format!("/v1/sandboxes/{id}/endpoints/{AGENT_PORT}"),
            true,
            Bytes::new(),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let endpoint = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let direct = Target {
        address: endpoint.clone(),
        prefix: String::new(),
        key: false,
    };
    let proxied = Target {
        address: address.clone(),
        prefix: format!("/v1/sandboxes/{id}/proxy/{AGENT_PORT}"),
        key: true,
    };

    // The sandbox runs before the agent listens: until then the proxy answers 502.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = Connection::open(&address)
            .await
            .send(
                "GET",
                &format!("{}/ping", proxied.prefix),
                true,
                Bytes::new(),
            )
            .await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
        assert!(Instant::now() < deadline, "the agent never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("agent of sandbox {id}: direct at {endpoint}, proxied at {address}");

    let upload = Bytes::from(vec![0x5a_u8; UPLOAD]);
    // Warm-up: pooled connections to the sandbox made, caches filled, on both paths.
    for target in [&direct, &proxied] {
        load(target, "warm-up", 32, 20, &Bytes::new(), pid).await;
        load(target, "warm-up", 4, 4, &upload, pid).await;
    }

    let mut missed = Vec::new();
    for (concurrency, pings, _) in PHASES {
        let d = load(
            &direct,
            "ping direct",
            concurrency,
            pings,
            &Bytes::new(),
            pid,
        )
        .await;
        let p = load(
            &proxied,
            &format!("ping proxied c{concurrency}"),
            concurrency,
            pings,
            &Bytes::new(),
            pid,
        )
        .await;
        let (r50, r99) = (p.p(0.5) / d.p(0.5), p.p(0.99) / d.p(0.99));
        println!(
            "  GET /ping, concurrency {concurrency:>2} ({} requests each): direct p50 {:.3} ms p99 {:.3} ms; proxied p50 {:.3} ms p99 {:.3} ms; ratio p50 {r50:.2}× p99 {r99:.2}× (goal ≤ 1.20×)",
            d.latencies.len(),
            d.p(0.5),
            d.p(0.99),
            p.p(0.5),
            p.p(0.99),
        );
        if r50 > 1.2 || r99 > 1.2 {
            missed.push(format!("ping latency at concurrency {concurrency}"));
        }
    }
    let mut upload_peak_rss = 0;
    for (concurrency, _, uploads) in PHASES {
        let d = load(&direct, "upload direct", concurrency, uploads, &upload, pid).await;
        let p = load(
            &proxied,
            &format!("upload proxied c{concurrency}"),
            concurrency,
            uploads,
            &upload,
            pid,
        )
        .await;
        upload_peak_rss = upload_peak_rss.max(p.peak_rss_kib);
        let ratio = p.mib_per_s() / d.mib_per_s();
        println!(
            "  POST /upload 1 MiB, concurrency {concurrency:>2} ({} uploads each): direct {:.0} MiB/s (p50 {:.2} ms); proxied {:.0} MiB/s (p50 {:.2} ms); proxied/direct {:.0}% (goal ≥ 80%)",
            d.latencies.len(),
            d.mib_per_s(),
            d.p(0.5),
            p.mib_per_s(),
            p.p(0.5),
            ratio * 100.0
        );
        if ratio < 0.8 {
            missed.push(format!("upload throughput at concurrency {concurrency}"));
        }
    }
    println!(
        "  server RSS: peak while relaying uploads {:.1} MiB, after {:.1} MiB",
        upload_peak_rss as f64 / 1024.0,
        rss_kib(pid) as f64 / 1024.0
    );
    if missed.is_empty() {
        println!("  all proxy goals met");
    } else {
        println!("  goals missed: {}", missed.join(", "));
    }

    let (status, _) = Connection::open(&address)
        .await
        .send("DELETE", &format!("/v1/sandboxes/{id}"), true, Bytes::new())
        .await;
    assert_eq!(status, 204);
    drop(server);
}
