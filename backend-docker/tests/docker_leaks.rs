//! 100 creates and deletes leak no file descriptor and no mount. Alone in its test binary, so
//! the process-wide counts it reads are its own.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::fs;

use berth_core::runtime::Runtime;
use common::{TestEnv, request_with};
use serde_json::json;

fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

fn mount_count() -> usize {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_creates_and_deletes_leak_no_fd_and_no_mount() {
    let env = TestEnv::new("leak").await;
    let claim = env.claim("leak");
    let request = || {
        request_with(json!([
            {"name": "w", "pvc": {"claimName": claim, "deleteOnSandboxTermination": true}, "mountPath": "/w", "subPath": "s"},
            {"name": "h", "host": {"path": env.host_root.to_str().unwrap()}, "mountPath": "/h", "subPath": "x", "readOnly": true},
        ]))
    };
    // One round first, so pools and caches reach their steady size.
    let warm = env.create(request()).await.unwrap();
    env.runtime().delete(&warm.id).await.unwrap();
    let (fds_before, mounts_before) = (open_fds(), mount_count());
    for _ in 0..100 {
        let sandbox = env.create(request()).await.unwrap();
        env.runtime().delete(&sandbox.id).await.unwrap();
    }
    let (fds_after, mounts_after) = (open_fds(), mount_count());
    println!(
        "100 creates/deletes: fds {fds_before} -> {fds_after}, mounts {mounts_before} -> {mounts_after}"
    );
    assert_eq!(mounts_after, mounts_before, "mounts leaked");
    // Connection pooling may hold a few more sockets; a leak would be at least one per round.
    assert!(
        fds_after <= fds_before + 8,
        "file descriptors leaked: {fds_before} -> {fds_after}"
    );
    assert!(common::leftovers(&env.run).0.is_empty());
}
