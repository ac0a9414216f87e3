//! Harness for tests on the real Docker Engine. Every container and volume a test makes carries
//! `berth.test=1` and `berth.test-run=<run>`; dropping the harness — also when a test panics —
//! removes them with the docker CLI, detaches every mount under the test's directory (before
//! the directory is deleted, so no delete ever runs through a bind mount), and deletes the rest.
//! When the engine cannot be reached the harness panics: Docker tests fail, never skip.

#![allow(dead_code, unreachable_pub)]

pub mod engine_proxy;
pub mod exchange_swapper;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use berth_core::model::{SandboxId, SandboxSpec};
use berth_core::runtime::CreateSandbox;
use berth_core::validate::StoragePolicy;
use berth_core::wire;
use berth_docker::DockerRuntime;
use berth_docker::config::DockerConfig;

pub const IMAGE: &str = "berth-test/busybox:latest";

static RUNS: AtomicU32 = AtomicU32::new(0);

pub struct TestEnv {
    runtime: Option<std::sync::Arc<DockerRuntime>>,
    pub config: DockerConfig,
    pub dir: PathBuf,
    pub host_root: PathBuf,
    pub run: String,
    ids: AtomicU32,
    _tmp: Option<tempfile::TempDir>,
}

impl TestEnv {
    /// A runtime on the real engine with its own state directory and host root.
    pub async fn new(name: &str) -> Self {
        Self::with(name, |_| {}).await
    }

    pub async fn with(name: &str, tweak: impl FnOnce(&mut DockerConfig)) -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "Docker runtime tests need root (staging mounts)"
        );
        let tmp = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_owned();
        let run = format!(
            "{name}-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let host_root = dir.join("host");
        std::fs::create_dir(&host_root).unwrap();
        let mut config = DockerConfig::with_state_dir(dir.join("state"));
        config.allowed_host_paths = vec![host_root.clone()];
        config.extra_labels = BTreeMap::from([
            ("berth.test".into(), "1".into()),
            ("berth.test-run".into(), run.clone()),
        ]);
        tweak(&mut config);
        let runtime = match DockerRuntime::start(config.clone()).await {
            Ok(r) => r,
            Err(e) => panic!(
                "the Docker runtime did not start (is the engine running and `cargo xtask test-image` done?): {e}"
            ),
        };
        Self {
            runtime: Some(std::sync::Arc::new(runtime)),
            config,
            dir,
            host_root,
            run,
            ids: AtomicU32::new(0),
            _tmp: Some(tmp),
        }
    }

    /// Stops the runtime (as a crash would: nothing is flushed or cleaned) and starts a new one
    /// on the same state directory. `between` runs while no runtime holds the store.
    pub async fn restart(&mut self, between: impl FnOnce(&DockerConfig)) {
        let old = self.runtime.take().unwrap();
        let old = std::sync::Arc::try_unwrap(old)
            .unwrap_or_else(|_| panic!("the runtime is still shared"));
        drop(old);
        between(&self.config);
        self.runtime = Some(std::sync::Arc::new(
            DockerRuntime::start(self.config.clone()).await.unwrap(),
        ));
    }

    /// The runtime under test.
    /// Nothing of the run is left: no container, no volume, no staging mount or directory, no
    /// record.
    pub async fn assert_nothing_left(&self, what: &str) {
        let (containers, volumes) = leftovers(&self.run);
        assert!(
            containers.is_empty(),
            "{what}: containers left {containers:?}"
        );
        assert!(volumes.is_empty(), "{what}: volumes left {volumes:?}");
        assert!(mounts_below(&self.dir).is_empty(), "{what}: mounts left");
        let staged: Vec<_> = std::fs::read_dir(self.dir.join("state/mounts"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            staged.is_empty(),
            "{what}: staging directories left {staged:?}"
        );
        assert!(
            berth_core::runtime::Runtime::list(self.runtime().as_ref())
                .await
                .unwrap()
                .is_empty(),
            "{what}: a store record was left"
        );
    }

    pub fn runtime(&self) -> &std::sync::Arc<DockerRuntime> {
        self.runtime.as_ref().unwrap()
    }

    /// Creates from a JSON request.
    pub async fn create(
        &self,
        request: serde_json::Value,
    ) -> Result<berth_core::model::SandboxRecord, berth_core::runtime::RuntimeError> {
        use berth_core::runtime::Runtime;
        self.runtime().create(self.create_request(request)).await
    }

    /// The mountpoint of a named volume on the host.
    pub fn volume_mountpoint(&self, name: &str) -> PathBuf {
        let out = Command::new("docker")
            .args(["volume", "inspect", "--format", "{{.Mountpoint}}", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "no volume {name}");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    }

    /// Whether a named volume exists.
    pub fn volume_mountpoint_exists(&self, name: &str) -> bool {
        Command::new("docker")
            .args(["volume", "inspect", name])
            .output()
            .unwrap()
            .status
            .success()
    }

    /// A fresh sandbox id, unique across runs.
    pub fn id(&self) -> SandboxId {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        SandboxId::new(&format!("{}-{n}", self.label_safe_run())).unwrap()
    }

    /// Validates `request` (with this env's host root allowed) into a create call.
    pub fn create_request(&self, request: serde_json::Value) -> CreateSandbox {
        let wire: wire::CreateSandboxRequest = serde_json::from_value(request).unwrap();
        let policy = StoragePolicy {
            allowed_host_roots: vec![
                berth_core::model::HostPath::new(self.host_root.to_str().unwrap()).unwrap(),
            ],
            max_timeout_seconds: None,
        };
        CreateSandbox {
            id: self.id(),
            spec: SandboxSpec::from_request(wire, &policy)
                .unwrap_or_else(|v| panic!("test request invalid: {v}")),
            created_at: chrono::Utc::now(),
        }
    }

    /// A short DNS-label-safe id of this run (the conformance suite's `run_id`).
    pub fn short_run_id(&self) -> String {
        format!(
            "r{:x}{:x}",
            std::process::id(),
            self.ids.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A claim name unique to this run.
    pub fn claim(&self, name: &str) -> String {
        format!("{}-{name}", self.label_safe_run())
    }

    /// The run id cut to a DNS-label-safe prefix for ids and volume names.
    fn label_safe_run(&self) -> String {
        let mut run: String = self
            .run
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        run.truncate(40);
        run.trim_end_matches('-').to_owned()
    }
}

/// A request running the test image with `volumes`.
pub fn request_with(volumes: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "image": {"uri": IMAGE},
        "entrypoint": ["sleep", "3600"],
        "resourceLimits": {"cpu": "500m", "memory": "128Mi"},
        "volumes": volumes,
    })
}

/// Runs `sh -c script` in the sandbox's container; (exit code, stdout+stderr).
pub fn exec(id: &SandboxId, script: &str) -> (i32, String) {
    let out = Command::new("docker")
        .args(["exec", &format!("sandbox-{id}"), "sh", "-c", script])
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Containers and volumes of a run, according to the engine.
pub fn leftovers(run: &str) -> (Vec<String>, Vec<String>) {
    let list = |args: &[&str]| -> Vec<String> {
        let out = Command::new("docker").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let filter = format!("label=berth.test-run={run}");
    (
        list(&["ps", "-aq", "--filter", &filter]),
        list(&["volume", "ls", "-q", "--filter", &filter]),
    )
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = dir.to_str().unwrap();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(prefix))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let (containers, volumes) = leftovers(&self.run);
        if !containers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&containers)
                .output();
        }
        for m in mounts_below(&self.dir) {
            let _ = rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH);
        }
        if !volumes.is_empty() {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f"])
                .args(&volumes)
                .output();
        }
        assert!(
            mounts_below(&self.dir).is_empty() || std::thread::panicking(),
            "mounts left under {}",
            self.dir.display()
        );
    }
}
