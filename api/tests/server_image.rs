//! The server's container image (`cargo xtask image`; the suite builds `berth-server:dev` from
//! the test build with the same packing) runs the README's quickstart on the host's engine: the
//! server in a container of its own, talking to the host's Docker socket, with what staging
//! needs (docs/operations.md): `CAP_SYS_ADMIN` to mount, `CAP_SYS_PTRACE` and the host's PID
//! namespace to check each mount from inside the sandbox's container, its state directory bind-
//! mounted `rshared` at the same path (a shared mount, so the engine sees what the server stages
//! there), and the engine's volume directory at the same path.

#![cfg(feature = "docker")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

const IMAGE: &str = "berth-test/busybox:latest";
const SERVER_IMAGE: &str = "berth-server:dev";
const KEY: &str = "server-image-key";

/// The server's container; removed, with everything its run made, when dropped.
struct ServerContainer {
    name: String,
    run: String,
}

impl Drop for ServerContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
        common::remove_run_objects(&self.run);
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Makes `dir` a shared mount of its own (a bind mount onto itself), as `rshared` needs; the
/// scratch directory detaches it when dropped.
fn make_shared(dir: &std::path::Path) {
    for args in [
        vec!["--bind", dir.to_str().unwrap(), dir.to_str().unwrap()],
        vec!["--make-rshared", dir.to_str().unwrap()],
    ] {
        let status = Command::new("mount").args(&args).status().unwrap();
        assert!(status.success(), "mount {args:?}");
    }
}

#[test]
fn the_quickstart_runs_through_the_server_image() {
    common::require_docker(&[IMAGE, SERVER_IMAGE]);
    let dir = common::tempfile_dir();
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    make_shared(&state);
    let volumes = format!(
        "{}/volumes",
        docker(&["info", "--format", "{{.DockerRootDir}}"])
    );
    let run = format!("server-image-{}", std::process::id());
    let port = common::free_port();
    let server = ServerContainer {
        name: run.clone(),
        run: run.clone(),
    };
    let state_path = state.to_str().unwrap();
    docker(&[
        "run",
        "-d",
        "--name",
        &server.name,
        "--label",
        "berth.test=1",
        "--label",
        &format!("berth.test-server={run}"),
        "--network",
        "host",
        "--pid",
        "host",
        "--cap-add",
        "SYS_ADMIN",
        "--cap-add",
        "SYS_PTRACE",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        &format!("{state_path}:{state_path}:rshared"),
        "-v",
        &format!("{volumes}:{volumes}:rslave"),
        "-e",
        &format!("BERTH_STORAGE__STATE_DIR={state_path}"),
        "-e",
        &format!("BERTH_SERVER__PORT={port}"),
        "-e",
        &format!("BERTH_SERVER__API_KEY={KEY}"),
        "-e",
        &format!(
            "BERTH_DOCKER__LABELS={{ \"berth.test\" = \"1\", \"berth.test-run\" = \"{run}\" }}"
        ),
        SERVER_IMAGE,
    ]);
    let address = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::call(&address, "GET", "/health", None).map(|(s, _)| s) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the server in its image did not become healthy:\n{}",
            docker(&["logs", &server.name])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The image's server staged and checked its mounts itself (no unstaged fallback).
    let logs = Command::new("docker")
        .args(["logs", &server.name])
        .output()
        .unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
    assert!(
        logs.contains("engine_sees_mounts") && logs.contains("Some(true)"),
        "{logs}"
    );

    let output = common::run_readme_blocks(&address, KEY, IMAGE, &dir);
    assert!(
        output.lines().any(|line| line == "notes of session 7"),
        "{output}"
    );
    // The walkthrough removed both of its sandboxes.
    assert_eq!(common::run_containers(&run), Vec::<String>::new());
}
