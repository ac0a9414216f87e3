//! The official SDK's high-level `Sandbox.create()` on the real engine, through the real
//! `berth-server` injecting the test agent (`runtime.execd_image`): `create()` returns only after
//! its health check pinged the agent at the endpoint Berth answered for execd's port, directly
//! and through the server proxy (`sdk/agent.py`). Then the official CLI (`osb`) checks the health
//! of the sandbox left running, pauses and resumes it, and kills it.

#![cfg(feature = "docker")] // Runs the server on the Docker runtime.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Server, tempfile_dir};
use serde_json::Value;

const KEY: &str = "sdk-agent-key";
const BUSYBOX: &str = "berth-test/busybox:latest";
const EXECD: &str = "berth-test/execd:latest";

/// Output of a finished command, echoed for the test log; panics unless it succeeded.
fn succeeded(what: &str, out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- {what}\n{stdout}{stderr}");
    assert!(out.status.success(), "{what} failed: {stdout}{stderr}");
    stdout
}

/// `osb` against the server with the key, a scratch home (no user configuration), JSON output.
fn osb(osb: &Path, home: &Path, address: &str, args: &[&str]) -> Value {
    let out = Command::new(osb)
        .env("HOME", home)
        .env_remove("OPEN_SANDBOX_API_KEY")
        .env_remove("OPEN_SANDBOX_DOMAIN")
        .args([
            "--no-color",
            "--api-key",
            KEY,
            "--domain",
            address,
            "--protocol",
            "http",
        ])
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    let text = succeeded(&format!("osb {}", args.join(" ")), out);
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("osb {args:?}: not JSON: {text}"))
}

/// The sandbox's state as the server reports it.
fn state(osb_bin: &Path, home: &Path, address: &str, id: &str) -> String {
    let info = osb(osb_bin, home, address, &["sandbox", "get", id]);
    info.pointer("/status/state")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no status.state in {info}"))
        .to_owned()
}

#[test]
fn the_sdk_create_passes_its_health_check_on_the_injected_agent() {
    common::require_docker(&[BUSYBOX, EXECD]);
    let python = common::sdk_python();
    let osb_bin = common::sdk_cli();
    let tmp = tempfile_dir();
    let home = tmp.join("home");
    std::fs::create_dir(&home).unwrap();
    let run = format!("sdk-agent-{}", std::process::id());
    let mut server = Server::start(
        &run,
        &tmp.join("state"),
        &[
            ("BERTH_SERVER__API_KEY", KEY.to_owned()),
            ("BERTH_RUNTIME__EXECD_IMAGE", EXECD.to_owned()),
        ],
    );
    let address = server.address.clone();

    // Both creates through the SDK; the second sandbox is kept for the CLI.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/agent.py");
    let out = Command::new(&python)
        .arg(&script)
        .env("BERTH_ADDRESS", &address)
        .env("BERTH_API_KEY", KEY)
        .env("BERTH_RUN", &run)
        .env("BERTH_KEEP", "1")
        .output()
        .unwrap();
    let log = succeeded("sdk/agent.py", out);
    let id = log
        .lines()
        .find_map(|l| l.strip_prefix("KEPT "))
        .expect("the script names the sandbox it kept")
        .trim()
        .to_owned();
    assert_eq!(
        common::run_containers(&run).len(),
        1,
        "only the kept sandbox runs"
    );

    // The CLI: health, pause, resume (which waits for the health check again), kill.
    let health = osb(&osb_bin, &home, &address, &["sandbox", "health", &id]);
    assert_eq!(health.get("healthy"), Some(&Value::Bool(true)), "{health}");
    osb(&osb_bin, &home, &address, &["sandbox", "pause", &id]);
    assert_eq!(state(&osb_bin, &home, &address, &id), "Paused");
    osb(&osb_bin, &home, &address, &["sandbox", "resume", &id]);
    assert_eq!(state(&osb_bin, &home, &address, &id), "Running");
    let health = osb(&osb_bin, &home, &address, &["sandbox", "health", &id]);
    assert_eq!(health.get("healthy"), Some(&Value::Bool(true)), "{health}");
    osb(&osb_bin, &home, &address, &["sandbox", "kill", &id]);

    // SIGTERM: a clean shutdown, nothing left behind.
    server.terminate();
    assert_eq!(server.wait(), Some(0), "berth-server did not exit cleanly");
    let containers = common::run_containers(&run);
    assert!(containers.is_empty(), "containers left: {containers:?}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
