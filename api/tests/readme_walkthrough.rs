//! The README's walkthrough of the `berth` command (its ```` ```sh tested ```` blocks), run as
//! written against a real server on the real engine: a session's file written in one sandbox
//! is served, through a signed proxy route, by the next sandbox on the same claim and subPath.
//! The same blocks run on the Kubernetes runtime in `k8s_servers`.

#![cfg(feature = "docker")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

const IMAGE: &str = "berth-test/busybox:latest";
const KEY: &str = "readme-walkthrough-key";

#[test]
fn the_readme_walkthrough_runs_as_written() {
    common::require_docker(&[IMAGE]);
    let dir = common::tempfile_dir();
    let run = format!("readme-{}", std::process::id());
    let server = common::Server::start(
        &run,
        &dir.join("state"),
        &[("BERTH_SERVER__API_KEY", KEY.to_owned())],
    );
    // The walkthrough's claim is a named volume; the server labels it as this run's.
    let output = common::run_readme_blocks(&server.address, KEY, IMAGE, &dir);
    // The second sandbox served the file the first wrote: curl's output is that line alone (the
    // first sandbox's entrypoint, which `berth get` shows, holds the words inside a command).
    assert!(
        output.lines().any(|line| line == "notes of session 7"),
        "{output}"
    );
    // Both sandboxes were removed by the walkthrough itself.
    assert_eq!(common::run_containers(&run), Vec::<String>::new());
    // Its listing showed the first sandbox with its volume, by label.
    assert!(
        output.contains("pvc:sessions[uid-1/session-7]->/workspace"),
        "{output}"
    );
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}
