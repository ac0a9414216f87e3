//! The harness of the `berth` command's end-to-end tests: a real `berth-server` on a free port
//! with a temporary state directory and an API key, and `berth` commands pointed at it with an
//! environment of their own.
//!
//! Runtime-agnostic: the caller passes the server's settings (`BERTH_*` variables, e.g.
//! `BERTH_RUNTIME__TYPE`, `BERTH_STORAGE__ALLOWED_HOST_PATHS`). Whatever the server makes is
//! labelled `berth.test=1`, `berth.test-suite=<suite>` and `berth.test-run=<run>` (through
//! `docker.labels`; do not pass `BERTH_DOCKER__LABELS`). On drop (also when a test panics) the
//! server's sandboxes are deleted through the API — so that it releases its mounts — the server
//! gets SIGTERM, the run's containers and volumes are removed by label, and the temporary
//! directory goes, once nothing is mounted under it. A drop that finds a leak (a container or
//! mount the server left, an unclean exit) fails the test, unless it failed already.
//! Leftovers of earlier runs of the same suite that crashed are swept when its first server
//! starts.
//!
//! The server binary is not one of this package's, so cargo does not build it for these tests:
//! build it first (`cargo build -p berth-api --bin berth-server`; `cargo xtask test` does).

#![allow(dead_code, unreachable_pub)] // Each test file uses part of the harness.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The image the tests run (built by `cargo xtask test-image`).
pub const TEST_IMAGE: &str = "berth-test/busybox:latest";

/// The variable naming `berth`'s configuration file.
pub const CONFIG_ENV: &str = "BERTH_CLI_CONFIG";
/// Longest a `berth` command may run before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest the server may take to answer `/health` after starting.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// Variables of the test process that must not reach a command or the server: they would
/// change its settings (or, for the server, name settings it does not know and stop it).
const PRIVATE_PREFIXES: [&str; 2] = ["BERTH_", "OPEN_SANDBOX_"];

/// The `berth-server` binary, beside the test executable's target directory
/// (`target/<profile>/deps/<test>` → `target/<profile>/berth-server`).
pub fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is under target/<profile>/deps");
    let binary = profile_dir.join("berth-server");
    assert!(
        binary.is_file(),
        "{} is missing: build it first: cargo build -p berth-api --bin berth-server",
        binary.display()
    );
    binary
}

/// A port nothing listens on (just released by the OS).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `host:port` where nothing listens.
pub fn dead_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// `prefix` and eight random hex digits: a fixed-length name no other run uses.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u32(N.fetch_add(1, Ordering::Relaxed));
    format!("{prefix}{:08x}", hasher.finish() as u32)
}

/// A temporary directory that is removed on drop (e.g. a root for host volumes: make it before
/// the server, so that it outlives the server's mounts of it).
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{SCRATCH_PREFIX}{}-", std::process::id()))
        .tempdir()
        .unwrap()
}

/// The start of [`scratch_dir`] names, before the pid of the process that made it.
const SCRATCH_PREFIX: &str = "berth-test-scratch-";

// ---------------------------------------------------------------------------------------------
// Docker (used for cleanup and for checking what really happened; harmless without Docker)

/// Runs the docker CLI; `None` when it cannot be started.
pub fn docker(args: &[&str]) -> Option<std::process::Output> {
    std::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
}

/// The non-empty lines a docker CLI listing prints (none when docker fails).
pub fn docker_lines(args: &[&str]) -> Vec<String> {
    match docker(args) {
        Some(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Panics unless the Docker engine answers and has every one of `images` (a test on the engine
/// fails, never skips, without them).
pub fn require_docker(images: &[&str]) {
    let out = docker(&["version", "--format", "{{.Server.Version}}"])
        .expect("the docker CLI is needed for this test");
    assert!(
        out.status.success(),
        "the Docker engine is unreachable: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for image in images {
        let out = docker(&["image", "inspect", "--format", "{{.Id}}", image]).unwrap();
        assert!(
            out.status.success(),
            "image {image} is missing: run `cargo xtask test-image`"
        );
    }
}

fn remove_containers(ids: &[String]) {
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids.iter().map(String::as_str));
        let _ = docker(&args);
    }
}

fn remove_volumes(names: &[String]) {
    if !names.is_empty() {
        let mut args = vec!["volume", "rm", "-f"];
        args.extend(names.iter().map(String::as_str));
        let _ = docker(&args);
    }
}

// ---------------------------------------------------------------------------------------------
// Mounts

/// Mount points at or below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape_mount_point(point)))
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// `/proc/self/mountinfo` writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_point(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Detaches every mount at or below `dir` (lazily, so a busy one goes too); whether none is
/// left.
fn unmount_below(dir: &Path) -> bool {
    for point in mounts_below(dir) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&point)
            .stdin(Stdio::null())
            .output();
    }
    mounts_below(dir).is_empty()
}

// ---------------------------------------------------------------------------------------------
// Leftovers of crashed runs

fn is_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether `text` starts with the pid (`<pid>-...`) of a process that is gone (not this one).
fn names_a_dead_process(text: &str) -> bool {
    let pid: Option<u32> = text.split('-').next().and_then(|p| p.parse().ok());
    pid.is_some_and(|pid| pid != std::process::id() && !is_alive(pid))
}

/// Whether run name `run` (`<suite>-<pid>-<n>`) is of `suite` and of a process that is gone.
fn is_orphan(suite: &str, run: &str) -> bool {
    run.strip_prefix(suite)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(names_a_dead_process)
}

/// Removes what crashed earlier runs of `suite` left: containers and volumes by label, and
/// their temporary directories (after detaching any mount left in them). Once per suite and
/// process.
fn sweep_orphans(suite: &str) {
    static SWEPT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    if !SWEPT.lock().unwrap().insert(suite.to_owned()) {
        return;
    }
    let filter = format!("label=berth.test-suite={suite}");
    let orphans = |lines: Vec<String>| -> Vec<String> {
        lines
            .iter()
            .filter_map(|line| line.split_once(' '))
            .filter(|(_, run)| is_orphan(suite, run))
            .map(|(id, _)| id.to_owned())
            .collect()
    };
    remove_containers(&orphans(docker_lines(&[
        "ps",
        "-a",
        "--filter",
        &filter,
        "--format",
        "{{.ID}} {{.Label \"berth.test-run\"}}",
    ])));
    remove_volumes(&orphans(docker_lines(&[
        "volume",
        "ls",
        "--filter",
        &filter,
        "--format",
        "{{.Name}} {{.Label \"berth.test-run\"}}",
    ])));
    // Server directories first: they may hold mounts of scratch directories.
    let server_prefix = format!("berth-{suite}-");
    for prefix in [server_prefix.as_str(), SCRATCH_PREFIX] {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(prefix) else {
                continue;
            };
            if names_a_dead_process(rest) && unmount_below(&entry.path()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// One HTTP/1.1 exchange on a fresh connection: the status and body (`None` when no connection
/// or no answer). For checks that should not depend on the client under test.
pub fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let host = address.split('/').next().unwrap_or(address);
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

// ---------------------------------------------------------------------------------------------
// The server

/// A running `berth-server` of one test.
pub struct TestServer {
    child: Option<Child>,
    /// `127.0.0.1:<port>`.
    pub address: String,
    /// The key it requires.
    pub api_key: String,
    /// This run's name, the value of the `berth.test-run` label.
    pub run: String,
    dir: Option<tempfile::TempDir>,
    exit_code: Option<Option<i32>>,
    problems: Vec<String>,
}

impl TestServer {
    /// Starts `berth-server` for `suite` (a name per test file, in the labels and temporary
    /// directory names, so a later run can sweep what a crashed one left) with `env` on top of
    /// the harness's settings, and waits until `/health` answers 200. `BERTH_SERVER__API_KEY`
    /// in `env` replaces the generated key.
    pub fn start(suite: &str, env: &[(&str, String)]) -> Self {
        assert!(
            !suite.is_empty() && !suite.contains(char::is_whitespace),
            "suite {suite:?}"
        );
        sweep_orphans(suite);
        let binary = server_binary();
        static N: AtomicU32 = AtomicU32::new(0);
        let run = format!(
            "{suite}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-{run}-"))
            .tempdir()
            .unwrap();
        let api_key = env
            .iter()
            .find(|(k, _)| *k == "BERTH_SERVER__API_KEY")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| unique_name("berth-test-key-"));
        let mut server = Self {
            child: None,
            address: String::new(),
            api_key,
            run,
            dir: Some(dir),
            exit_code: None,
            problems: Vec::new(),
        };
        // A port taken between choosing and binding it makes the server exit: try another.
        for _attempt in 0..3 {
            let port = free_port();
            server.address = format!("127.0.0.1:{port}");
            let log = File::create(server.log_path()).unwrap();
            let mut command = std::process::Command::new(&binary);
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("BERTH_") {
                    command.env_remove(name);
                }
            }
            command
                .env("BERTH_SERVER__PORT", port.to_string())
                .env("BERTH_SERVER__API_KEY", &server.api_key)
                .env("BERTH_STORAGE__STATE_DIR", server.state_dir())
                .env(
                    "BERTH_DOCKER__LABELS",
                    format!(
                        "{{ \"berth.test\" = \"1\", \"berth.test-suite\" = \"{suite}\", \"berth.test-run\" = \"{}\" }}",
                        server.run
                    ),
                )
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            server.child = Some(command.spawn().unwrap());
            if server.wait_healthy() {
                return server;
            }
            let log = server.log();
            let exited = server.child.as_mut().unwrap().try_wait().unwrap().is_some();
            if !(exited && log.contains("in use")) {
                panic!(
                    "berth-server did not become healthy within {START_TIMEOUT:?}; its log:\n{log}"
                );
            }
        }
        panic!(
            "berth-server found no free port; its log:\n{}",
            server.log()
        );
    }

    /// Polls `/health` until 200; false when the server exits or the time runs out.
    fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some((200, _)) = http(&self.address, "GET", "/health", &[]) {
                return true;
            }
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// `http://127.0.0.1:<port>`, as `berth` prints the server.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The server's temporary directory (state, log, the commands' configuration file).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// `storage.state_dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir().join("state")
    }

    /// The configuration file [`berth`] points the commands at (absent until written).
    pub fn config_file(&self) -> PathBuf {
        self.dir().join("berth-config.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join("server.log")
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Ids of the run's containers (any state).
    pub fn containers(&self) -> Vec<String> {
        docker_lines(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=berth.test-run={}", self.run),
        ])
    }

    /// Names of the run's volumes.
    pub fn volumes(&self) -> Vec<String> {
        docker_lines(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=berth.test-run={}", self.run),
        ])
    }

    /// The id of the container of sandbox `sandbox_id` in this run, if there is one (Docker
    /// runtime: the container carries the id in label `opensandbox.io/id`).
    pub fn container_of(&self, sandbox_id: &str) -> Option<String> {
        let found = docker_lines(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=berth.test-run={}", self.run),
            "--filter",
            &format!("label=opensandbox.io/id={sandbox_id}"),
        ]);
        assert!(
            found.len() <= 1,
            "{sandbox_id}: several containers {found:?}"
        );
        found.into_iter().next()
    }

    /// Deletes every sandbox through the API (so the server releases what it mounted), sends
    /// SIGTERM and waits for the exit (SIGKILL after a while); the exit code (`None`: killed by
    /// a signal). Idempotent.
    pub fn stop(&mut self) -> Option<i32> {
        if let Some(code) = self.exit_code {
            return code;
        }
        let mut child = self.child.take()?;
        if child.try_wait().ok().flatten().is_none()
            && let Err(e) = delete_all_sandboxes(&self.address, &self.api_key)
        {
            self.problems.push(format!(
                "deleting the sandboxes through the API failed: {e}"
            ));
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if Instant::now() > deadline {
                self.problems.push(format!(
                    "berth-server did not stop within {STOP_TIMEOUT:?} of SIGTERM"
                ));
                let _ = child.kill();
                break child.wait().ok().and_then(|s| s.code());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if code != Some(0) {
            self.problems
                .push(format!("berth-server exited with {code:?}, not 0"));
        }
        self.exit_code = Some(code);
        code
    }
}

/// Deletes every sandbox of the server at `address`, in a thread of its own (the caller may be
/// inside an async runtime).
fn delete_all_sandboxes(address: &str, api_key: &str) -> Result<(), String> {
    let address = address.to_owned();
    let api_key = api_key.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let client =
                berth_cli::client::Client::new(&address, Some(api_key), Duration::from_secs(120))
                    .map_err(|e| e.to_string())?;
            let sandboxes = client
                .list_all(&berth_cli::client::ListQuery::default())
                .await
                .map_err(|e| e.to_string())?;
            for sandbox in sandboxes {
                client
                    .delete(&sandbox.id)
                    .await
                    .map_err(|e| format!("{}: {e}", sandbox.id))?;
            }
            Ok(())
        })
    })
    .join()
    .map_err(|_| "the deleting thread panicked".to_owned())?
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
        let containers = self.containers();
        if !containers.is_empty() {
            self.problems.push(format!(
                "containers left after the server deleted its sandboxes and stopped: {containers:?}"
            ));
            remove_containers(&containers);
        }
        // Claims the server created and keeps by design (no deleteOnSandboxTermination).
        remove_volumes(&self.volumes());
        let dir = self.dir().to_owned();
        let mounts = mounts_below(&dir);
        if !mounts.is_empty() {
            self.problems
                .push(format!("mounts left under {}: {mounts:?}", dir.display()));
        }
        let log = self.log();
        if unmount_below(&dir) {
            drop(self.dir.take());
        } else if let Some(kept) = self.dir.take() {
            // Removing a tree with a live bind mount in it would delete the mounted files.
            let kept = kept.keep();
            self.problems.push(format!(
                "{} kept: mounts could not be detached",
                kept.display()
            ));
        }
        if std::thread::panicking() {
            eprintln!(
                "berth-server {} ({}): {:?}\n--- its log ---\n{}",
                self.run,
                self.address,
                self.problems,
                tail(&log, 60)
            );
        } else if !self.problems.is_empty() {
            panic!(
                "berth-server {}: {}\n--- its log ---\n{}",
                self.run,
                self.problems.join("\n"),
                tail(&log, 60)
            );
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// The `berth` command

/// `berth` with none of the caller's `BERTH_*`/`OPEN_SANDBOX_*` variables, a piped standard
/// input (never a terminal) and a timeout.
pub fn berth_bare() -> assert_cmd::Command {
    let mut command = assert_cmd::Command::cargo_bin("berth").unwrap();
    for (name, _) in std::env::vars_os() {
        if is_private(&name) {
            command.env_remove(name);
        }
    }
    command.timeout(COMMAND_TIMEOUT);
    command
}

fn is_private(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    PRIVATE_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// `berth` reading its settings from `config` only (no server or key in the environment); the
/// default location (`$XDG_CONFIG_HOME/berth/config.toml`) is moved under `config`'s directory
/// too, so the user's own file is never read even if [`CONFIG_ENV`] were not honoured.
pub fn berth_with_config(config: &Path) -> assert_cmd::Command {
    let mut command = berth_bare();
    command.env(CONFIG_ENV, config).env(
        "XDG_CONFIG_HOME",
        config
            .parent()
            .unwrap_or(Path::new("/nonexistent"))
            .join("xdg"),
    );
    command
}

/// `berth` pointed at `server` through the environment (`OPEN_SANDBOX_DOMAIN`,
/// `OPEN_SANDBOX_API_KEY`), with a configuration file of the server's temporary directory.
pub fn berth(server: &TestServer) -> assert_cmd::Command {
    let mut command = berth_with_config(&server.config_file());
    command
        .env("OPEN_SANDBOX_DOMAIN", &server.address)
        .env("OPEN_SANDBOX_API_KEY", &server.api_key);
    command
}
