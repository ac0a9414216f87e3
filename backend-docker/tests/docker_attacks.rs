//! The mount attacks of ARCHITECTURE.md "Path safety" on the real engine. A sandbox with write access to a shared
//! volume plants symlinks, FIFOs and sockets; later sandboxes asking for those paths get a 400
//! with the exact code and nothing is created. A host thread exchanging a path component with a
//! symlink while sandboxes are created never redirects a mount (each created sandbox reads its
//! marker.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::fs;
use std::time::Duration;

use berth_core::ErrorCode;
use berth_core::runtime::Runtime;
use common::{TestEnv, exec, request_with};
use serde_json::json;

/// Asserts a create is refused with `code` (within 30 s: a FIFO must not hang it) and leaves no
/// container, staging mount or record behind.
async fn refused(env: &TestEnv, request: serde_json::Value, code: ErrorCode, what: &str) {
    let before = env.runtime().list().await.unwrap().len();
    let result = tokio::time::timeout(Duration::from_secs(30), env.create(request))
        .await
        .unwrap_or_else(|_| panic!("{what}: create hung"));
    match result {
        Err(e) => assert_eq!(e.code(), code, "{what}: {e}"),
        Ok(s) => {
            let (_, seen) = exec(&s.id, "ls -A /victim | head -5");
            panic!("{what}: ACCEPTED; the sandbox sees {seen:?}");
        }
    }
    assert_eq!(
        env.runtime().list().await.unwrap().len(),
        before,
        "{what}: a record was left"
    );
    let staged: Vec<_> = fs::read_dir(env.dir.join("state/mounts"))
        .unwrap()
        .collect();
    assert!(
        staged.is_empty(),
        "{what}: staging directories left: {staged:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_fifos_and_sockets_planted_by_another_sandbox_are_refused() {
    let env = TestEnv::new("plant").await;
    let claim = env.claim("shared");
    let attacker = env
        .create(request_with(
            json!([{"name": "shared", "pvc": {"claimName": claim}, "mountPath": "/shared"}]),
        ))
        .await
        .unwrap();
    let plant = "cd /shared && ln -s / root-link && ln -s ../.. up && ln -s hop2 hop1 && ln -s / hop2 \
                 && ln -s /nonexistent dangling && ln -s loop loop && mkdir -p d && ln -s /etc d/mid \
                 && mkdir -p ok && ln -s ok inside && mkfifo fifo && echo planted";
    assert_eq!(exec(&attacker.id, plant), (0, "planted\n".into()));
    // A socket, bound on the volume from the host side.
    let _socket =
        std::os::unix::net::UnixListener::bind(env.volume_mountpoint(&claim).join("socket"))
            .unwrap();

    let victim = |sub: &str| {
        request_with(
            json!([{"name": "victim", "pvc": {"claimName": claim}, "mountPath": "/victim", "subPath": sub}]),
        )
    };
    let cases = [
        ("root-link", ErrorCode::VolumeSubPathSymlink, "x -> /"),
        (
            "root-link/etc",
            ErrorCode::VolumeSubPathSymlink,
            "x -> / with a path below",
        ),
        ("up", ErrorCode::VolumeSubPathSymlink, "x -> ../.."),
        ("hop1", ErrorCode::VolumeSubPathSymlink, "chained links"),
        ("dangling", ErrorCode::VolumeSubPathSymlink, "dangling link"),
        (
            "dangling/new",
            ErrorCode::VolumeSubPathSymlink,
            "dangling link, creating below",
        ),
        ("loop", ErrorCode::VolumeSubPathSymlink, "looping link"),
        (
            "d/mid/passwd",
            ErrorCode::VolumeSubPathSymlink,
            "a link in the middle",
        ),
        (
            "inside",
            ErrorCode::VolumeSubPathSymlink,
            "a link that stays inside the volume",
        ),
        ("fifo", ErrorCode::VolumeUnsupportedFileType, "a FIFO"),
        (
            "fifo/below",
            ErrorCode::VolumeUnsupportedFileType,
            "a FIFO in the middle",
        ),
        ("socket", ErrorCode::VolumeUnsupportedFileType, "a socket"),
    ];
    for (sub, code, what) in cases {
        refused(&env, victim(sub), code, what).await;
        println!("attack {what:<40} subPath {sub:<16} -> 400 {code}");
    }
    assert!(
        !std::path::Path::new("/nonexistent").exists(),
        "a directory was created through the dangling link"
    );

    // A link in the middle of host.path itself.
    fs::create_dir(env.host_root.join("real")).unwrap();
    std::os::unix::fs::symlink("/etc", env.host_root.join("linked")).unwrap();
    let through_link = env.host_root.join("linked/ssl");
    refused(
        &env,
        request_with(json!([{"name": "victim", "host": {"path": through_link.to_str().unwrap()}, "mountPath": "/victim"}])),
        ErrorCode::VolumeSubPathSymlink,
        "a link in the middle of host.path",
    )
    .await;
    println!(
        "attack {:<40} host.path {} -> 400 {}",
        "a link in the middle of host.path",
        through_link.display(),
        ErrorCode::VolumeSubPathSymlink
    );
    env.runtime().delete(&attacker.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_race_never_redirects_a_sandbox_mount() {
    let env = TestEnv::new("race").await;
    let claim = env.claim("race");
    // Create the volume through a first sandbox, then prepare the race on the host side.
    let first = env
        .create(request_with(json!([{"name": "w", "pvc": {"claimName": claim}, "mountPath": "/w", "subPath": "session"}])))
        .await
        .unwrap();
    env.runtime().delete(&first.id).await.unwrap();
    let mountpoint = env.volume_mountpoint(&claim);
    fs::write(mountpoint.join("session/marker"), "intended\n").unwrap();
    std::os::unix::fs::symlink("/", mountpoint.join("decoy")).unwrap();

    let swapper = common::exchange_swapper::ExchangeSwapper::start(&mountpoint);
    // `cargo xtask harden paths` runs 200.
    let creates: usize = std::env::var("HARDEN_RACE_CREATES").map_or(40, |n| n.parse().unwrap());
    let (mut created, mut refused_count) = (0u32, 0u32);
    for _ in 0..creates {
        let request = request_with(
            json!([{"name": "w", "pvc": {"claimName": claim}, "mountPath": "/w", "subPath": "session", "readOnly": true}]),
        );
        match env.create(request).await {
            Ok(sandbox) => {
                let (code, seen) = exec(
                    &sandbox.id,
                    "cat /w/marker; ls /w/etc 2>/dev/null | head -1",
                );
                assert_eq!(
                    (code, seen.as_str()),
                    (0, "intended\n"),
                    "a sandbox sees the wrong directory"
                );
                env.runtime().delete(&sandbox.id).await.unwrap();
                created += 1;
            }
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::VolumeSubPathSymlink, "{e}");
                refused_count += 1;
            }
        }
    }
    let swaps = swapper.stop();
    println!(
        "exchange race with sandboxes: {creates} creates, {created} created (each read its own marker), {refused_count} refused as symlinks, 0 escapes, {swaps} swaps"
    );
    assert!(
        created > 0 && refused_count > 0 && swaps > 1000,
        "the race did not really happen: {created} created, {refused_count} refused, {swaps} swaps"
    );
    assert!(common::leftovers(&env.run).0.is_empty());
}
