//! What the benchmarks share: a keep-alive HTTP/1.1 client connection, a server on the real
//! engine, the server's RSS, and percentiles.

#![allow(dead_code)] // Not every benchmark uses every piece.

pub(crate) mod kubernetes;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// The API key every benchmark's server runs with.
pub(crate) const KEY: &str = "bench-key";

/// One keep-alive connection; requests go one after another.
pub(crate) struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    pub(crate) async fn open(address: &str) -> Self {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Self { sender }
    }

    /// An API call with the key and an optional JSON body: status and body.
    pub(crate) async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, Bytes) {
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        self.send(method, path, true, body).await
    }

    /// Any request: with the API key or not; a body that starts with `{` is sent as JSON,
    /// another as bytes (uploads to a sandbox).
    pub(crate) async fn send(
        &mut self,
        method: &str,
        path: &str,
        with_key: bool,
        body: Bytes,
    ) -> (u16, Bytes) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if with_key {
            request = request.header("open-sandbox-api-key", KEY);
        }
        if !body.is_empty() {
            let json = body.starts_with(b"{");
            request = request.header(
                "content-type",
                if json {
                    "application/json"
                } else {
                    "application/octet-stream"
                },
            );
        }
        let request = request.body(Full::new(body)).unwrap();
        // The previous response is read; wait until the connection takes the next request.
        self.sender.ready().await.unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }
}

/// The resident set of process `pid`, in KiB.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The peak resident set of process `pid` so far, in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap())
        })
        .unwrap()
}

/// The `p` quantile (0..=1) of sorted durations.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Stops `server` (SIGTERM, then waits) and removes the containers of run `run` (those labelled
/// `berth.test-run=<run>`), also those a failed run could not delete.
pub(crate) fn stop_and_remove_run(server: &mut std::process::Child, run: &str) {
    use std::process::Command;
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let filter = format!("label=berth.test-run={run}");
    if let Ok(out) = Command::new("docker")
        .args(["ps", "-aq", "--filter", &filter])
        .output()
    {
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

/// A `berth-server` on the real engine for one benchmark run, on a free loopback port with the
/// benchmark key, its state and an allowed host root (`host_root`) in a directory of its own,
/// and everything it makes labelled as this run's. Dropping it (also when the benchmark panics)
/// stops the server, removes the run's containers, detaches staging mounts a failed run left
/// and removes the directory.
pub(crate) struct DockerServer {
    child: std::process::Child,
    pub(crate) run: String,
    pub(crate) dir: std::path::PathBuf,
    pub(crate) host_root: std::path::PathBuf,
    pub(crate) address: String,
}

impl DockerServer {
    /// Starts `berth-server` (`binary`) for run `name-<pid>` with `env` on top of the above, and
    /// waits until it listens.
    pub(crate) async fn start(binary: &str, name: &str, env: &[(&str, String)]) -> Self {
        use std::process::{Command, Stdio};
        let run = format!("{name}-{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("berth-{run}"));
        std::fs::create_dir(&dir).unwrap();
        let host_root = dir.join("host");
        std::fs::create_dir(&host_root).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(binary);
        command
            .env("BERTH_SERVER__PORT", port.to_string())
            .env("BERTH_SERVER__API_KEY", KEY)
            .env("BERTH_SERVER__LOG_LEVEL", "warn")
            .env("BERTH_STORAGE__STATE_DIR", dir.join("state"))
            .env(
                "BERTH_STORAGE__ALLOWED_HOST_PATHS",
                format!("[\"{}\"]", host_root.display()),
            )
            .env(
                "BERTH_DOCKER__LABELS",
                format!("{{ \"berth.test\" = \"1\", \"berth.test-run\" = \"{run}\" }}"),
            )
            .stdout(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut server = Self {
            child: command.spawn().unwrap(),
            run,
            dir,
            host_root,
            address: format!("127.0.0.1:{port}"),
        };
        while tokio::net::TcpStream::connect(&server.address)
            .await
            .is_err()
        {
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "berth-server exited at startup"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DockerServer {
    fn drop(&mut self) {
        stop_and_remove_run(&mut self.child, &self.run);
        // Staging mounts of sandboxes a failed run could not delete: detached (deepest first)
        // before the directory is removed.
        for m in mounts_below(&self.dir) {
            let _ = std::process::Command::new("umount")
                .args(["-l", &m])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Mount points at or below `dir`, deepest first.
pub(crate) fn mounts_below(dir: &std::path::Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts
}
