//! End to end with the official SDK: starts the real `berth-server` binary on the real Docker
//! engine and runs `sdk/e2e.py` with the `opensandbox` Python SDK from PyPI (installed into a
//! venv under the target directory, once). Then stops the server with SIGTERM and expects a
//! clean exit and nothing left behind. Also: configuration errors exit 2 naming the key.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SDK: &str = "opensandbox==1.1.1";

/// The venv's python, creating the venv and installing the SDK when missing.
fn sdk_python() -> PathBuf {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn docker_list(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

struct Server {
    child: std::process::Child,
    run: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let filter = format!("label=berth.test-run={}", self.run);
        let containers = docker_list(&["ps", "-aq", "--filter", &filter]);
        if !containers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&containers)
                .output();
        }
        let volumes = docker_list(&["volume", "ls", "-q", "--filter", &filter]);
        if !volumes.is_empty() {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f"])
                .args(&volumes)
                .output();
        }
    }
}

#[test]
fn the_official_sdk_drives_berth_end_to_end() {
    let python = sdk_python();
    let tmp = tempfile_dir();
    let host_root = tmp.join("host");
    std::fs::create_dir(&host_root).unwrap();
    let port = free_port();
    let run = format!("sdk-{}", std::process::id());
    let mut server = Server {
        child: Command::new(env!("CARGO_BIN_EXE_berth-server"))
            .env("BERTH_SERVER__PORT", port.to_string())
            .env("BERTH_SERVER__API_KEY", "sdk-test-key")
            .env("BERTH_STORAGE__STATE_DIR", tmp.join("state"))
            .env(
                "BERTH_STORAGE__ALLOWED_HOST_PATHS",
                format!("[\"{}\"]", host_root.display()),
            )
            .env(
                "BERTH_DOCKER__LABELS",
                format!("{{ \"berth.test\" = \"1\", \"berth.test-run\" = \"{run}\" }}"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
        run: run.clone(),
    };
    let address = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&address).is_err() {
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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/e2e.py");
    let status = Command::new(&python)
        .arg(&script)
        .env("BERTH_ADDRESS", &address)
        .env("BERTH_API_KEY", "sdk-test-key")
        .env("BERTH_HOST_ROOT", &host_root)
        .env("BERTH_RUN", &run)
        .status()
        .unwrap();
    assert!(status.success(), "the SDK end-to-end script failed");

    // SIGTERM: a clean shutdown, exit 0.
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "berth-server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0), "berth-server did not exit cleanly");
    let containers = docker_list(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=berth.test-run={run}"),
    ]);
    assert!(containers.is_empty(), "containers left: {containers:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(tmp.to_str().unwrap()),
        "staging mounts left"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn configuration_errors_exit_2_and_name_the_key() {
    for (key, value, named) in [
        ("BERTH_SERVER__PORT", "eighty", "server.port"),
        ("BERTH_SERVER__HOST", "0.0.0.0", "server.api_key"),
        (
            "BERTH_STORAGE__ALLOWED_HOST_PATHS",
            "[\"/no/such/dir\"]",
            "storage.allowed_host_paths",
        ),
        ("BERTH_RUNTIME__TYPE", "podman", "runtime.type"),
    ] {
        let tmp = tempfile_dir();
        let out = Command::new(env!("CARGO_BIN_EXE_berth-server"))
            .env("BERTH_STORAGE__STATE_DIR", tmp.join("state"))
            .env(key, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}={value}: {stderr}");
        assert!(stderr.contains(named), "{key}={value}: {stderr}");
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

fn tempfile_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "berth-api-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir).unwrap();
    dir
}
