//! What the benchmarks share: a keep-alive HTTP/1.1 client connection, the server's RSS, and
//! percentiles.

#![allow(dead_code)] // Not every benchmark uses every piece.

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
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
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
