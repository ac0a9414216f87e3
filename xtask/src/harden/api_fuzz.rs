//! `harden api-fuzz`: schemathesis against `/openapi.json` of a real `berth-server` on the real
//! engine. Every phase schemathesis has (examples, coverage, fuzzing, and the stateful one,
//! whose links it infers from the schema: the spec declares none), every check it has but
//! `positive_data_acceptance` (see [`fuzz`]) plus `error_body` (`xtask/harden/api_fuzz_hooks.py`),
//! within `--seconds` of schemathesis' own clock, killed at twice that (a minute past it at the
//! least). It fails on any failed check: a 5xx, a status, content type or body the spec does not
//! give, an error without the `{code, message}` body, a request the spec forbids that is
//! accepted, a created sandbox that cannot be read, an operation served without the key the spec
//! asks for.
//!
//! - schemathesis: a venv at `target/harden-venv`, installed once from
//!   `xtask/harden/requirements.txt` (every package pinned) and again only when that file changes.
//! - The server: `target/debug/berth-server` on a free loopback port, with an API key, its state
//!   and an allowed host root in a temporary directory, and labels marking what it makes as this
//!   run's. Sandboxes get no network (`docker.network_mode = "none"`), and the hooks point every
//!   image, NFS server and OSS endpoint that could pass validation at this machine, so nothing
//!   leaves it.
//! - Afterwards, also on failure: every sandbox left is deleted through the API, the server is
//!   stopped with SIGTERM, the run's containers and volumes are removed, and the temporary
//!   directory too once nothing is mounted below it (a mount left there fails the run).
//! - Reports (JSON, HAR of every request, JUnit), the server's log and schemathesis' output are
//!   in `target/harden/api-fuzz/`; the examples schemathesis found failing are kept in
//!   `target/harden/api-fuzz-examples` and replayed first next time. `API_FUZZ_SEED=N` replays
//!   a run's generation (its seed is in the summary).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The bound CI gives the run: every phase runs at least once within a minute (coverage takes
/// seconds); longer runs add fuzzing and stateful scenarios.
pub(crate) const SMALL_SECONDS: u64 = 60;

/// The header the server takes the API key in.
const API_KEY_HEADER: &str = "OPEN-SANDBOX-API-KEY";
/// Python, schemathesis' start and loading the schema take seconds that a tiny bound would not
/// cover: the hard kill comes no sooner than this after the bound.
const KILL_MARGIN: Duration = Duration::from_secs(60);
/// How long the server may take to answer `/health` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server may take to stop on SIGTERM (its `shutdown_timeout_seconds` is 30).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// One request schemathesis sends may take this long (creates wait for the engine).
const REQUEST_TIMEOUT_SECONDS: &str = "120";

pub(crate) fn run(bound: super::Bound) -> Result<(), String> {
    fuzz_server(bound, None)
}

/// The same against a server with the Kubernetes runtime, in a namespace of the run's own on
/// the test cluster (brought up if it is not, and then taken down again).
pub(crate) fn run_on_cluster(bound: super::Bound) -> Result<(), String> {
    let namespace = format!("berth-api-fuzz-{}", std::process::id());
    crate::k8s_env::on_cluster(|| fuzz_server(bound, Some(namespace)))
}

fn fuzz_server(bound: super::Bound, namespace: Option<String>) -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = crate::target_dir(&root)?;
    let venv = ensure_venv(&root, &target)?;
    // The server of the test build: in CI already built, so nothing to compile.
    crate::build_both_commands()?;
    crate::test_image::ensure()?;
    let (name, runtime) = if namespace.is_some() {
        ("api-fuzz-k8s", "kubernetes")
    } else {
        ("api-fuzz", "docker")
    };
    let reports = fresh_dir(&target, &["harden", name])?;
    let examples = fresh_dir_keep(&target, &["harden", &format!("{name}-examples")])?;

    let mut run = Run::new(namespace)?;
    let fuzzed = run
        .start_server(&target.join("debug/berth-server"), &reports)
        .and_then(|()| fuzz(&venv, &root, &run, &reports, &examples, bound));
    let teardown = run.finish();
    let summary = summarize(&venv, &root, &reports, runtime);

    let mut problems = Vec::new();
    if let Err(e) = fuzzed {
        problems.push(e);
    }
    match teardown {
        Ok(notes) => problems.extend(notes),
        Err(e) => problems.push(e),
    }
    if let Err(e) = summary {
        problems.push(e);
    }
    eprintln!("xtask: {name} reports in {}", reports.display());
    if problems.is_empty() {
        eprintln!("xtask: {name} passed");
        Ok(())
    } else {
        Err(format!(
            "harden {name} failed:\n  {}",
            problems.join("\n  ")
        ))
    }
}

/// The venv's `bin` directory, with schemathesis installed from the pinned requirements. A
/// marker holding the requirements it was installed from makes this a no-op until they change.
fn ensure_venv(root: &Path, target: &Path) -> Result<PathBuf, String> {
    let requirements = root.join("xtask/harden/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .map_err(|e| format!("reading {}: {e}", requirements.display()))?;
    let venv = target.join("harden-venv");
    let bin = venv.join("bin");
    let marker = venv.join(".installed-requirements");
    let installed = std::fs::read_to_string(&marker).unwrap_or_default();
    if installed == wanted && bin.join("schemathesis").exists() {
        return Ok(bin);
    }
    eprintln!("xtask: installing schemathesis into {}", venv.display());
    crate::run(
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )
    .map_err(|e| format!("{e} (python3 with its venv module is needed)"))?;
    crate::run(
        Command::new(bin.join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements),
    )?;
    std::fs::write(&marker, wanted).map_err(|e| format!("writing {}: {e}", marker.display()))?;
    Ok(bin)
}

/// `target/<path…>`, created (each level) and emptied.
fn fresh_dir(target: &Path, path: &[&str]) -> Result<PathBuf, String> {
    let dir = fresh_dir_keep(target, path)?;
    std::fs::remove_dir_all(&dir).map_err(|e| format!("emptying {}: {e}", dir.display()))?;
    crate::create_dir(&dir)?;
    Ok(dir)
}

/// `target/<path…>`, created (each level) if missing, its contents kept.
fn fresh_dir_keep(target: &Path, path: &[&str]) -> Result<PathBuf, String> {
    let mut dir = target.to_path_buf();
    for part in path {
        dir.push(part);
        crate::create_dir(&dir)?;
    }
    Ok(dir)
}

/// One run: its label, its temporary directory and its server. Dropping it cleans up whatever
/// [`Run::finish`] did not get to (an early return, a panic).
struct Run {
    /// The value of the `berth.test-run` label on everything the server makes.
    label: String,
    /// Holds the server's state (`state/`) and the allowed host root (`host/`).
    dir: PathBuf,
    api_key: String,
    address: String,
    server: Option<Child>,
    finished: bool,
    /// The Kubernetes runtime's namespace (made for the run, deleted after it); `None`: Docker.
    namespace: Option<String>,
}

impl Run {
    fn new(namespace: Option<String>) -> Result<Self, String> {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("berth-api-fuzz-{pid}"));
        // A directory left by an earlier run with the same pid holds nothing of this one's.
        if dir.exists() && mounts_below(&dir).is_empty() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let run = Self {
            label: format!("api-fuzz-{pid}"),
            dir,
            api_key: api_key(),
            address: String::new(),
            server: None,
            finished: false,
            namespace,
        };
        if let Some(namespace) = &run.namespace {
            create_namespace(namespace)?;
        }
        for sub in ["state", "host"] {
            crate::create_dir(&run.dir.join(sub))?;
        }
        Ok(run)
    }

    fn host_root(&self) -> PathBuf {
        self.dir.join("host")
    }

    /// Starts the server, its output in `reports/server.log`, and waits until `/health` is 200.
    fn start_server(&mut self, binary: &Path, reports: &Path) -> Result<(), String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        self.address = format!("127.0.0.1:{port}");
        let log_path = reports.join("server.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let mut command = Command::new(binary);
        // Only this run's settings: another BERTH_ variable of the caller's would change it.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("BERTH_") {
                command.env_remove(name);
            }
        }
        let host_root = self.host_root();
        command
            .env("BERTH_SERVER__HOST", "127.0.0.1")
            .env("BERTH_SERVER__PORT", port.to_string())
            .env("BERTH_SERVER__API_KEY", &self.api_key)
            .env("BERTH_STORAGE__STATE_DIR", self.dir.join("state"))
            .env(
                "BERTH_STORAGE__ALLOWED_HOST_PATHS",
                format!("[{}]", toml_string(&host_root.to_string_lossy())),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let labels = format!(
            "{{ \"berth.test\" = \"1\", \"berth.test-run\" = {} }}",
            toml_string(&self.label)
        );
        match &self.namespace {
            None => {
                command
                    .env("BERTH_DOCKER__LABELS", labels)
                    // Sandboxes run fuzzed commands: they get no network at all.
                    .env("BERTH_DOCKER__NETWORK_MODE", "none")
                    // Pulls only ever go to a closed loopback port (the hooks see to it);
                    // bounded anyway.
                    .env("BERTH_DOCKER__IMAGE_PULL_TIMEOUT_SECONDS", "20");
            }
            Some(namespace) => {
                command
                    .env("BERTH_RUNTIME__TYPE", "kubernetes")
                    .env("BERTH_KUBERNETES__NAMESPACE", namespace)
                    .env(
                        "BERTH_KUBERNETES__KUBECONFIG",
                        crate::k8s_env::kubeconfig_path(),
                    )
                    .env("BERTH_KUBERNETES__LABELS", labels)
                    // Images are never pulled: the test image is there, any other fails at
                    // once (ErrImageNeverPull).
                    .env("BERTH_KUBERNETES__IMAGE_PULL_POLICY", "Never")
                    // A Pod whose volumes cannot be mounted waits this long before the create
                    // fails.
                    .env("BERTH_KUBERNETES__START_TIMEOUT_SECONDS", "15")
                    .env("BERTH_KUBERNETES__DELETE_GRACE_PERIOD_SECONDS", "1");
            }
        }
        eprintln!(
            "xtask: starting berth-server on {} (log: {})",
            self.address,
            log_path.display()
        );
        let child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        self.server = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok((200, _)) = http(&self.address, "GET", "/health", None) {
                return Ok(());
            }
            if let Some(child) = self.server.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "berth-server exited at startup ({status}); see {}",
                    log_path.display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "berth-server did not answer /health with 200 within {} s; see {}",
                    START_TIMEOUT.as_secs(),
                    log_path.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Deletes the sandboxes left, stops the server, removes the run's containers and volumes
    /// and the temporary directory. `Ok` holds what it found wrong on the way (each a failure
    /// of the run); `Err` that it could not clean up.
    fn finish(mut self) -> Result<Vec<String>, String> {
        self.finished = true;
        let mut notes = Vec::new();
        if self.server.is_some() {
            notes.extend(self.delete_sandboxes());
        }
        if let Some(note) = self.stop_server() {
            notes.push(note);
        }
        match self.namespace.take() {
            // The namespace takes every Pod, claim and Secret of the run with it.
            Some(namespace) => {
                if let Err(e) = delete_namespace(&namespace) {
                    notes.push(e);
                }
            }
            None => {
                let (containers, volumes) = remove_labelled(&self.label);
                eprintln!(
                    "xtask: teardown: removed {containers} container(s) and {volumes} volume(s) of the run"
                );
            }
        }
        let mounts = mounts_below(&self.dir);
        if !mounts.is_empty() {
            notes.push(format!(
                "mounts left below {} once the sandboxes were deleted and the server stopped: {}",
                self.dir.display(),
                mounts.join(", ")
            ));
        }
        self.remove_dir()?;
        Ok(notes)
    }

    /// Deletes every sandbox the server still lists; what went wrong.
    fn delete_sandboxes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let key = Some(self.api_key.as_str());
        let mut deleted = std::collections::BTreeSet::new();
        // Each pass lists the first page again: deleting shifts the pages. A deleted Pod is
        // listed (Stopping) until it is gone: passes continue, a second apart, for a while.
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            let ids = match http(&self.address, "GET", "/v1/sandboxes?pageSize=200", key) {
                Ok((200, body)) => sandbox_ids(&body),
                Ok((status, body)) => {
                    notes.push(format!(
                        "teardown: GET /v1/sandboxes answered {status}: {body}"
                    ));
                    return notes;
                }
                Err(e) => {
                    notes.push(format!("teardown: GET /v1/sandboxes: {e}"));
                    return notes;
                }
            };
            if ids.is_empty() {
                eprintln!(
                    "xtask: teardown: deleted {} sandbox(es) the run left",
                    deleted.len()
                );
                return notes;
            }
            if !deleted.is_empty() {
                std::thread::sleep(Duration::from_secs(1));
            }
            for id in ids {
                let path = format!("/v1/sandboxes/{id}");
                match http(&self.address, "DELETE", &path, key) {
                    Ok((204 | 404, _)) => {
                        deleted.insert(id);
                    }
                    Ok((status, body)) => {
                        notes.push(format!("teardown: DELETE {path} answered {status}: {body}"));
                        return notes;
                    }
                    Err(e) => {
                        notes.push(format!("teardown: DELETE {path}: {e}"));
                        return notes;
                    }
                }
            }
        }
        notes.push("teardown: sandboxes still listed 180 s after the first delete".into());
        notes
    }

    /// SIGTERM, then SIGKILL past [`STOP_TIMEOUT`]; a note unless it exited 0.
    fn stop_server(&mut self) -> Option<String> {
        let mut child = self.server.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(format!("berth-server had exited by itself ({status})"));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return None,
                Ok(Some(status)) => {
                    return Some(format!("berth-server exited with {status} on SIGTERM"));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Some(format!(
                        "berth-server did not stop within {} s of SIGTERM; killed",
                        STOP_TIMEOUT.as_secs()
                    ));
                }
            }
        }
    }

    /// Removes the temporary directory, unmounting what is left below it first: removing a
    /// directory through a mount would delete what the mount shows.
    fn remove_dir(&self) -> Result<(), String> {
        let mut mounts = mounts_below(&self.dir);
        // Deepest first.
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in &mounts {
            let _ = Command::new("umount")
                .arg(mount)
                .stderr(Stdio::null())
                .status();
        }
        let left = mounts_below(&self.dir);
        if !left.is_empty() {
            return Err(format!(
                "could not unmount {}; {} is kept",
                left.join(", "),
                self.dir.display()
            ));
        }
        std::fs::remove_dir_all(&self.dir)
            .map_err(|e| format!("removing {}: {e}", self.dir.display()))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        match self.namespace.take() {
            Some(namespace) => {
                if let Err(e) = delete_namespace(&namespace) {
                    eprintln!("xtask: {e}");
                }
            }
            None => {
                remove_labelled(&self.label);
            }
        }
        if let Err(e) = self.remove_dir() {
            eprintln!("xtask: {e}");
        }
    }
}

/// A namespace for the run's Kubernetes runtime, labelled `berth.test=1`.
fn create_namespace(name: &str) -> Result<(), String> {
    let body = format!(
        r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}","labels":{{"berth.test":"1"}}}}}}"#
    );
    match crate::k8s_env::api_call("POST", "/api/v1/namespaces", Some(&body))? {
        (201, _) => Ok(()),
        (status, body) => Err(format!("creating namespace {name}: {status} {body}")),
    }
}

/// Deletes the run's namespace (every Pod, claim and Secret in it) and waits, bounded, until
/// it is gone.
fn delete_namespace(name: &str) -> Result<(), String> {
    let path = format!("/api/v1/namespaces/{name}");
    match crate::k8s_env::api_call("DELETE", &path, None)? {
        (200 | 202 | 404, _) => {}
        (status, body) => return Err(format!("deleting namespace {name}: {status} {body}")),
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        if let Ok((404, _)) = crate::k8s_env::api_call("GET", &path, None) {
            eprintln!("xtask: teardown: namespace {name} deleted");
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(format!(
        "namespace {name} still there 180 s after its deletion"
    ))
}

/// A key nobody else knows, without a crate: the kernel's random UUID.
fn api_key() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|uuid| format!("api-fuzz-{}", uuid.trim()))
        .unwrap_or_else(|_| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            format!("api-fuzz-{}-{nanos}", std::process::id())
        })
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `"id"` values of a list page's sandboxes (the only objects in it with an `id`).
fn sandbox_ids(body: &str) -> Vec<String> {
    body.split("\"id\":\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|id| {
            !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

/// Mount points at or below `dir` (in this mount namespace, which is the server's).
fn mounts_below(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let inside = format!("{dir}/");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| *point == dir || point.starts_with(&inside))
        .map(str::to_owned)
        .collect()
}

/// Removes the containers and volumes labelled with `label`; how many of each.
fn remove_labelled(label: &str) -> (usize, usize) {
    crate::remove_docker_objects(&format!("label=berth.test-run={label}"))
}

/// One HTTP/1.1 request without a body: the status and the body.
fn http(
    address: &str,
    method: &str,
    path: &str,
    api_key: Option<&str>,
) -> Result<(u16, String), String> {
    let timeout = Some(Duration::from_secs(60));
    let mut stream = TcpStream::connect(address).map_err(|e| format!("connecting: {e}"))?;
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .map_err(|e| format!("setting timeouts: {e}"))?;
    let key = api_key
        .map(|k| format!("{API_KEY_HEADER}: {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{key}Connection: close\r\n\r\n"
    )
    .map_err(|e| format!("sending: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("reading: {e}"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// Runs schemathesis, bounded; `Err` when it found something or could not run.
fn fuzz(
    venv: &Path,
    root: &Path,
    run: &Run,
    reports: &Path,
    examples: &Path,
    bound: super::Bound,
) -> Result<(), String> {
    let hooks = root.join("xtask/harden/api_fuzz_hooks.py");
    let output_path = reports.join("schemathesis.txt");
    let output = std::fs::File::create(&output_path)
        .map_err(|e| format!("creating {}: {e}", output_path.display()))?;
    let output_err = output
        .try_clone()
        .map_err(|e| format!("{}: {e}", output_path.display()))?;
    let mut command = Command::new(venv.join("schemathesis"));
    command
        .arg("run")
        .arg(format!("http://{}/openapi.json", run.address))
        .args(["--header", &format!("{API_KEY_HEADER}: {}", run.api_key)])
        // Every check but one: `positive_data_acceptance` wants every schema-valid request
        // accepted, and Berth refuses many for rules a schema cannot state (an expiry in the
        // future, a mount naming one of the request's volumes, label syntax).
        .args(["--checks", "all"])
        .args(["--exclude-checks", "positive_data_acceptance"])
        // Every failing case of an operation is reported, not only the first one.
        .arg("--continue-on-failure")
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-time", &bound.seconds.to_string()])
        .args(["--workers", "1"])
        .args(["--request-timeout", REQUEST_TIMEOUT_SECONDS])
        .args(["--report", "json,har,junit"])
        .arg("--report-dir")
        .arg(reports)
        .arg("--report-json-path")
        .arg(reports.join("report.json"))
        .arg("--report-har-path")
        .arg(reports.join("requests.har"))
        .arg("--report-junit-path")
        .arg(reports.join("junit.xml"))
        .arg("--generation-database")
        .arg(examples.join("db"))
        .arg("--no-color");
    if let Ok(seed) = std::env::var("API_FUZZ_SEED") {
        command.args(["--seed", &seed]);
    }
    command
        .current_dir(reports)
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .env(
            "API_FUZZ_RUNTIME",
            if run.namespace.is_some() {
                "kubernetes"
            } else {
                "docker"
            },
        )
        .env("API_FUZZ_HOST_ROOT", run.host_root())
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(output_err);
    let limit = Duration::from_secs(bound.seconds.saturating_mul(2))
        .max(Duration::from_secs(bound.seconds) + KILL_MARGIN);
    eprintln!(
        "xtask: schemathesis for {} s (killed at {} s); its output: {}",
        bound.seconds,
        limit.as_secs(),
        output_path.display()
    );
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting schemathesis: {e}"))?;
    let status = wait_bounded(&mut child, limit)?;
    match status {
        None => Err(format!(
            "schemathesis did not finish within {} s; killed (its output: {})",
            limit.as_secs(),
            output_path.display()
        )),
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!(
            "schemathesis found failures or could not run ({status}); its output: {}",
            output_path.display()
        )),
    }
}

/// Waits for `child` up to `limit`, then kills it: its status, `None` when it was killed.
fn wait_bounded(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for schemathesis: {e}"))?
        {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Prints the summary of the run's reports (`xtask/harden/api_fuzz_summary.py`); `Err` when it
/// counts a failure or cannot read them.
fn summarize(venv: &Path, root: &Path, reports: &Path, runtime: &str) -> Result<(), String> {
    let script = root.join("xtask/harden/api_fuzz_summary.py");
    let status = Command::new(venv.join("python"))
        .arg(&script)
        .arg(reports)
        .arg(root.join("api/openapi.yaml"))
        .env("API_FUZZ_RUNTIME", runtime)
        .status()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "the summary counts failures ({status}); details in {}",
            reports.join("schemathesis.txt").display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_a_list_page() {
        let body = r#"{"items":[{"id":"a1-b2","status":{"state":"Running"},"image":{"uri":"x"}},{"id":"c3"}],"pagination":{"page":1}}"#;
        assert_eq!(sandbox_ids(body), ["a1-b2", "c3"]);
        assert!(sandbox_ids(r#"{"items":[],"pagination":{}}"#).is_empty());
        // Anything but an id's characters is not taken for one.
        assert!(sandbox_ids(r#"{"id":"../x"}"#).is_empty());
    }

    #[test]
    fn toml_strings_are_quoted_and_escaped() {
        assert_eq!(toml_string("api-fuzz-1"), "\"api-fuzz-1\"");
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }

    #[test]
    fn the_kill_comes_after_the_bound() {
        let mut sleeper = Command::new("sleep").arg("5").spawn().unwrap();
        let started = Instant::now();
        assert!(
            wait_bounded(&mut sleeper, Duration::from_millis(300))
                .unwrap()
                .is_none()
        );
        assert!(started.elapsed() < Duration::from_secs(4));
        let mut quick = Command::new("true").spawn().unwrap();
        assert!(
            wait_bounded(&mut quick, Duration::from_secs(5))
                .unwrap()
                .is_some_and(|s| s.success())
        );
    }
}
