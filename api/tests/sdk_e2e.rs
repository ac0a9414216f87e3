//! End to end with the official SDK: starts the real `berth-server` binary on the real Docker
//! engine and runs `sdk/e2e.py` with the `opensandbox` Python SDK from PyPI (installed into a
//! venv under the target directory, once). Then stops the server with SIGTERM and expects a
//! clean exit and nothing left behind. Also: configuration errors exit 2 naming the key.

#![cfg(feature = "docker")] // Runs the server on the Docker runtime.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, sdk_python, tempfile_dir};

#[test]
fn the_official_sdk_drives_berth_end_to_end() {
    let python = sdk_python();
    let tmp = tempfile_dir();
    let host_root = tmp.join("host");
    std::fs::create_dir(&host_root).unwrap();
    let run = format!("sdk-{}", std::process::id());
    let mut server = Server::start(
        &run,
        &tmp.join("state"),
        &[
            ("BERTH_SERVER__API_KEY", "sdk-test-key".to_owned()),
            (
                "BERTH_STORAGE__ALLOWED_HOST_PATHS",
                format!("[\"{}\"]", host_root.display()),
            ),
        ],
    );
    let address = server.address.clone();
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
    server.terminate();
    assert_eq!(server.wait(), Some(0), "berth-server did not exit cleanly");
    let containers = common::run_containers(&run);
    assert!(containers.is_empty(), "containers left: {containers:?}");
    assert!(!common::mounts_below(&tmp), "staging mounts left");
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
        let out = common::server_command()
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
