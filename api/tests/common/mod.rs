//! Running the real `berth-server` binary on the real engine in tests: a free port, labels
//! that mark everything it makes as this run's, SIGTERM and the exit code, and cleanup on drop
//! (also when a test panics) of the run's containers, volumes and the server itself.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lines of a docker CLI listing.
pub fn docker_list(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Containers of a run.
pub fn run_containers(run: &str) -> Vec<String> {
    docker_list(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=berth.test-run={run}"),
    ])
}

/// A fresh directory under the temp dir, removed when dropped — also after a failed test, when a
/// killed or failed server may have left staging mounts in it: those are detached first, deepest
/// first. Declare it before the `Server` using it, so that the server is stopped (and its
/// containers removed) before the directory goes.
pub struct ScratchDir(PathBuf);

impl std::ops::Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let root = self.0.to_string_lossy().into_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| point.starts_with(&root))
            .collect();
        mounts.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in mounts {
            let _ = Command::new("umount").args(["-l", point]).status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn tempfile_dir() -> ScratchDir {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "berth-api-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir).unwrap();
    ScratchDir(dir)
}

/// Whether anything is mounted at or below `dir`.
pub fn mounts_below(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(dir.to_str().unwrap())
}

/// The `berth-server` binary without the caller's `BERTH_` variables: a test's settings are
/// only what it sets (another `BERTH_` variable would change the server, or, not being a
/// setting, make it refuse to start).
pub fn server_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth-server"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BERTH_") {
            command.env_remove(name);
        }
    }
    command
}

/// A running `berth-server`.
pub struct Server {
    pub child: std::process::Child,
    pub run: String,
    pub address: String,
}

impl Server {
    /// Starts the server with state under `state_dir`, labelled with `run`, plus `env`, and
    /// waits until it listens.
    pub fn start(run: &str, state_dir: &Path, env: &[(&str, String)]) -> Self {
        let port = free_port();
        let mut command = server_command();
        command
            .env("BERTH_SERVER__PORT", port.to_string())
            .env("BERTH_STORAGE__STATE_DIR", state_dir)
            .env(
                "BERTH_DOCKER__LABELS",
                format!("{{ \"berth.test\" = \"1\", \"berth.test-run\" = \"{run}\" }}"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut server = Self {
            child: command.spawn().unwrap(),
            run: run.to_owned(),
            address: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&server.address).is_err() {
            assert!(
                Instant::now() < deadline,
                "berth-server did not start listening"
            );
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "berth-server exited at startup"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Kills the server with SIGKILL, as a crash would, and leaves everything it made for the
    /// next server started on the same state directory and run.
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.run.clear();
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (at most 20 s) for the server to exit; its exit code.
    pub fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "berth-server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.run.is_empty() {
            // Crashed on purpose: what it made is the next server's.
            return;
        }
        remove_run_objects(&self.run);
    }
}

/// Removes the containers and volumes a server labelled with `run` made.
pub fn remove_run_objects(run: &str) {
    let containers = run_containers(run);
    if !containers.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&containers)
            .output();
    }
    let filter = format!("label=berth.test-run={run}");
    let volumes = docker_list(&["volume", "ls", "-q", "--filter", &filter]);
    if !volumes.is_empty() {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f"])
            .args(&volumes)
            .output();
    }
}

/// The official SDK the end-to-end scripts (`sdk/e2e.py`) run with.
pub const SDK: &str = "opensandbox==1.1.1";

/// A python with [`SDK`] from PyPI: a venv under the target directory, made and installed once
/// (the same one `sdk_e2e` uses).
pub fn sdk_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-venv-opensandbox-1.1.1");
    let python = venv.join("bin/python");
    let marker = venv.join(".installed");
    if !marker.exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is needed for the SDK test");
        assert!(status.success(), "creating the venv failed");
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "-q", SDK])
            .status()
            .unwrap();
        assert!(status.success(), "installing {SDK} from PyPI failed");
        std::fs::write(&marker, SDK).unwrap();
    }
    python
}

/// The SDK end-to-end script.
pub fn sdk_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/e2e.py")
}

/// The official CLI (`osb`), same release as [`SDK`].
pub const CLI: &str = "opensandbox-cli==1.1.1";

/// The `osb` command of [`CLI`], installed once into the venv of [`sdk_python`].
pub fn sdk_cli() -> PathBuf {
    let python = sdk_python();
    let bin = python.parent().unwrap();
    let marker = bin.parent().unwrap().join(".installed-cli");
    if !marker.exists() {
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "-q", CLI])
            .status()
            .unwrap();
        assert!(status.success(), "installing {CLI} from PyPI failed");
        std::fs::write(&marker, CLI).unwrap();
    }
    bin.join("osb")
}

/// Panics unless the Docker engine answers and has `images` (a test on the engine fails, never
/// skips, without it).
pub fn require_docker(images: &[&str]) {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .expect("the docker CLI is needed");
    assert!(
        out.status.success(),
        "the Docker engine is unreachable: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for image in images {
        let out = Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", image])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "image {image} is missing: run `cargo xtask test-image`"
        );
    }
}

/// The `berth` command. Cargo hands a package's tests only that package's binaries, so this
/// one is found beside the server in the target directory (`cargo xtask test` builds it).
pub fn berth_command() -> PathBuf {
    let berth = Path::new(env!("CARGO_BIN_EXE_berth-server")).with_file_name("berth");
    assert!(
        berth.exists(),
        "{} is missing: cargo build -p berth-cli --bin berth",
        berth.display()
    );
    berth
}

/// The shell blocks of a Markdown text fenced as ```` ```sh tested ````, in order.
pub fn tested_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_end() == "```sh tested" => current = Some(String::new()),
            Some(block) if line.trim_end() == "```" => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "a ```sh tested block is not closed");
    blocks
}

/// Runs the README's tested blocks ([`run_tested_blocks`]).
pub fn run_readme_blocks(address: &str, key: &str, image: &str, config_dir: &Path) -> String {
    run_tested_blocks("README.md", address, key, image, config_dir)
}

/// Runs the tested blocks of the repository's `doc` (a path from the repository's root) with
/// `bash -euo pipefail` in `work_dir`, the `berth` and `berth-server` commands first on `PATH`,
/// against the server at `address` with `key`, `IMAGE` set to `image`; their output. A block
/// that fails fails the test, with its output.
pub fn run_tested_blocks(
    doc: &str,
    address: &str,
    key: &str,
    image: &str,
    work_dir: &Path,
) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(doc))
        .unwrap();
    let blocks = tested_blocks(&text);
    assert!(!blocks.is_empty(), "{doc} has no tested block");
    let bin = berth_command().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut output = String::new();
    for block in blocks {
        let mut command = Command::new("bash");
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("BERTH_") || name.starts_with("OPEN_SANDBOX_") {
                command.env_remove(&*name);
            }
        }
        let out = command
            .args(["-euo", "pipefail", "-c", &block])
            .env("PATH", &path)
            .env("OPEN_SANDBOX_DOMAIN", address)
            .env("OPEN_SANDBOX_API_KEY", key)
            .env("BERTH_CLI_CONFIG", work_dir.join("berth.toml"))
            .env("IMAGE", image)
            .current_dir(work_dir)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "a block of {doc} failed ({}):\n{block}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        output.push_str(&stdout);
    }
    output
}

/// One API call over a fresh connection (`Connection: close`), blocking; the status and the JSON
/// body (`null` when there is none). `None` when the server cannot be reached or hangs up.
pub fn call(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Option<(u16, serde_json::Value)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .ok()?;
    let body = body.map(ToString::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    ))
}
