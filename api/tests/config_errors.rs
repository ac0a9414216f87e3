//! Configuration errors through the real `berth-server` binary: each exits 2 before any runtime
//! starts, with a message naming the key (no engine needed).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs `berth-server` with `env` (state under a fresh temp dir) and waits, with a generous
/// bound, for it to exit: a server that starts serving instead fails the test.
fn run_to_exit(env: &[(&str, &str)]) -> Output {
    let tmp = common::tempfile_dir();
    let mut command = common::server_command();
    command
        .env("BERTH_STORAGE__STATE_DIR", tmp.join("state"))
        .env("BERTH_SERVER__PORT", common::free_port().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.spawn().unwrap();
    let pid = child.id();
    let (done, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output().unwrap()));
    let result = output.recv_timeout(Duration::from_secs(30));
    if result.is_err() {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let _ = std::fs::remove_dir_all(&tmp);
    result.unwrap_or_else(|_| {
        panic!("berth-server with {env:?} did not exit: it should refuse the configuration")
    })
}

fn assert_exit_2_naming(env: &[(&str, &str)], named: &str) {
    let out = run_to_exit(env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{env:?}: {stderr}");
    assert!(
        stderr.contains(named),
        "{env:?} should name {named}: {stderr}"
    );
}

#[test]
fn a_bad_log_level_exits_2_naming_the_key() {
    // Before: silently logged at `info` and served.
    assert_exit_2_naming(
        &[("BERTH_SERVER__LOG_LEVEL", "berth_api=loud")],
        "server.log_level",
    );
}

/// The Docker runtime's rule; a build without it refuses `runtime.type = "docker"` first.
#[cfg(feature = "docker")]
#[test]
fn a_request_deadline_shorter_than_a_docker_create_exits_2_naming_both_keys() {
    let env = [
        ("BERTH_SERVER__REQUEST_DEADLINE_SECONDS", "100"),
        ("BERTH_DOCKER__IMAGE_PULL_TIMEOUT_SECONDS", "90"),
        ("BERTH_DOCKER__ENGINE_TIMEOUT_SECONDS", "10"),
    ];
    assert_exit_2_naming(&env, "server.request_deadline_seconds");
    assert_exit_2_naming(
        &env,
        "docker.image_pull_timeout_seconds + docker.engine_timeout_seconds",
    );
}

#[test]
fn out_of_range_timeouts_exit_2_naming_the_key() {
    for (variable, value, key) in [
        (
            "BERTH_SERVER__SHUTDOWN_TIMEOUT_SECONDS",
            "0",
            "server.shutdown_timeout_seconds",
        ),
        (
            "BERTH_DOCKER__ENGINE_TIMEOUT_SECONDS",
            "3601",
            "docker.engine_timeout_seconds",
        ),
        (
            "BERTH_SERVER__REQUEST_DEADLINE_SECONDS",
            "ten",
            "server.request_deadline_seconds",
        ),
    ] {
        assert_exit_2_naming(&[(variable, value)], key);
    }
}

/// Only in a build without the Docker runtime (`--no-default-features --features kubernetes`,
/// or none): the default configuration names the feature to rebuild with.
#[cfg(not(feature = "docker"))]
#[test]
fn a_runtime_not_built_in_exits_2_naming_its_feature() {
    assert_exit_2_naming(
        &[],
        "runtime.type = \"docker\": this berth-server was built without the \"docker\" feature; rebuild with --features docker",
    );
}
