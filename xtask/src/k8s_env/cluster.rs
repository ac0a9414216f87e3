//! The running cluster as seen from outside: its directory layout, the daemons in it, the API
//! (through `curl` with the cluster's CA and bearer token, so xtask needs no HTTP or JSON crate)
//! and `k8s-env status`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Cache;
use super::process::Daemon;

/// The one node; it must resolve to 127.0.0.1 (the kubelet refuses a loopback node IP, so the
/// API server reaches it through its Hostname address).
pub(crate) const NODE_NAME: &str = "localhost";
pub(crate) const APISERVER_PORT: u16 = 6443;
pub(crate) const CONTROLLER_MANAGER_PORT: u16 = 6444;
pub(crate) const SCHEDULER_PORT: u16 = 6445;
pub(crate) const ETCD_CLIENT_PORT: u16 = 2379;
pub(crate) const ETCD_PEER_PORT: u16 = 2380;
pub(crate) const KUBELET_PORT: u16 = 10250;
pub(crate) const KUBELET_HEALTHZ_PORT: u16 = 10248;
pub(crate) const ETCD_BINARY: &str = "/usr/bin/etcd";

/// Paths inside the cluster directory.
pub(crate) struct Layout {
    pub(crate) dir: PathBuf,
}

impl Layout {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    pub(crate) fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The API server's self-signed certificate (and its CA), which it writes on first start.
    pub(crate) fn ca(&self) -> PathBuf {
        self.dir.join("certs/apiserver.crt")
    }

    pub(crate) fn token_file(&self) -> PathBuf {
        self.dir.join("tokens.csv")
    }

    pub(crate) fn kubelet_root(&self) -> PathBuf {
        self.dir.join("kubelet")
    }

    pub(crate) fn dockershim_root(&self) -> PathBuf {
        self.dir.join("dockershim")
    }

    /// Every daemon, in start order (`down` stops them in reverse).
    pub(crate) fn daemons(&self, cache: &Cache) -> Vec<Daemon> {
        vec![
            Daemon::new(&self.dir, "etcd", ETCD_BINARY),
            Daemon::new(&self.dir, "kube-apiserver", cache.bin("kube-apiserver")),
            Daemon::new(
                &self.dir,
                "kube-controller-manager",
                cache.bin("kube-controller-manager"),
            ),
            Daemon::new(&self.dir, "kube-scheduler", cache.bin("kube-scheduler")),
            Daemon::new(&self.dir, "kubelet", cache.bin("kubelet")),
        ]
    }

    /// The admin bearer token from `tokens.csv` (`token,user,uid,groups`).
    pub(crate) fn token(&self) -> Result<String, String> {
        let path = self.token_file();
        let text =
            fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        text.split(',')
            .next()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("no token in {}", path.display()))
    }

    /// GET on the API server; `None` when it cannot be reached or answers an error status.
    pub(crate) fn api_get(&self, path: &str) -> Option<String> {
        let token = self.token().ok()?;
        if !self.ca().is_file() {
            return None;
        }
        let output = Command::new("curl")
            .args([
                "--silent",
                "--fail",
                "--max-time",
                "2",
                "--user-agent",
                "berth-xtask",
            ])
            .arg("--cacert")
            .arg(self.ca())
            .arg("--header")
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("https://127.0.0.1:{APISERVER_PORT}{path}"))
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Any call on the API server with a JSON body; its status and body. An error when it
    /// cannot be reached.
    pub(crate) fn api_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        use std::io::Write;
        let token = self.token()?;
        let mut child = Command::new("curl")
            .args([
                "--silent",
                "--max-time",
                "30",
                "--user-agent",
                "berth-xtask",
            ])
            .args(["--request", method, "--write-out", "\n%{http_code}"])
            .args(["--header", "Content-Type: application/json"])
            .args(["--data-binary", "@-"])
            .arg("--cacert")
            .arg(self.ca())
            .arg("--header")
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("https://127.0.0.1:{APISERVER_PORT}{path}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("running curl: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(body.unwrap_or_default().as_bytes())
                .map_err(|e| format!("writing to curl: {e}"))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|e| format!("running curl: {e}"))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        match status.trim().parse::<u16>() {
            Ok(status) if status != 0 => Ok((status, body.to_owned())),
            _ => Err(format!(
                "{method} {path}: the API server cannot be reached (curl exit {})",
                output.status
            )),
        }
    }

    pub(crate) fn apiserver_ready(&self) -> bool {
        self.api_get("/readyz")
            .is_some_and(|body| body.trim() == "ok")
    }

    pub(crate) fn node_ready(&self) -> bool {
        self.api_get(&format!("/api/v1/nodes/{NODE_NAME}?pretty=false"))
            .is_some_and(|node| node_is_ready_and_untainted(&node))
    }
}

/// Whether a Node (compact JSON, as the API server writes it: condition fields in the order
/// type, status, ...) has condition Ready=True and no taints, i.e. pods can be scheduled on it.
pub(crate) fn node_is_ready_and_untainted(node: &str) -> bool {
    node.contains(r#"{"type":"Ready","status":"True","#) && !node.contains(r#""taints":"#)
}

/// `k8s-env status`: each daemon and the node; fails unless all is well.
pub(crate) fn status(cache: &Cache, dir: &Path) -> Result<(), String> {
    let layout = Layout::new(dir);
    let mut healthy = true;
    for daemon in layout.daemons(cache) {
        match daemon.running_pid() {
            Some(pid) => println!("{:<24} running (pid {pid})", daemon.name),
            None => {
                println!("{:<24} not running", daemon.name);
                healthy = false;
            }
        }
    }
    let node_ready = layout.node_ready();
    println!(
        "{:<24} {}",
        format!("node {NODE_NAME}"),
        if node_ready {
            "Ready"
        } else {
            "not Ready (or API unreachable)"
        }
    );
    println!("{:<24} {}", "kubeconfig", layout.kubeconfig().display());
    if healthy && node_ready {
        Ok(())
    } else {
        Err(format!(
            "the cluster in {} is not (fully) up",
            dir.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READY: &str = r#"{"kind":"Node","spec":{},"status":{"conditions":[{"type":"MemoryPressure","status":"False","reason":"x"},{"type":"Ready","status":"True","reason":"KubeletReady"}]}}"#;

    #[test]
    fn a_ready_untainted_node_is_ready() {
        assert!(node_is_ready_and_untainted(READY));
    }

    #[test]
    fn a_not_ready_or_tainted_node_is_not() {
        let not_ready = READY.replace(r#""Ready","status":"True""#, r#""Ready","status":"False""#);
        assert!(!node_is_ready_and_untainted(&not_ready));
        let tainted = READY.replace(
            r#""spec":{}"#,
            r#""spec":{"taints":[{"key":"node.kubernetes.io/not-ready","effect":"NoSchedule"}]}"#,
        );
        assert!(!node_is_ready_and_untainted(&tainted));
    }
}
