//! An engine that does not answer in time: a create call held past `docker.engine_timeout_seconds`
//! (or an image pull past `docker.image_pull_timeout_seconds`) is `RUNTIME::UNAVAILABLE` naming
//! the setting and its seconds, and leaves nothing behind. The proxy lets the engine do the call
//! and holds its answer back.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::fs;
use std::time::Duration;

use berth_core::ErrorCode;
use berth_core::runtime::RuntimeError;
use common::engine_proxy::{EngineProxy, FaultKind, proxied_env};
use common::{TestEnv, request_with};
use serde_json::json;

/// Short enough for a test, long enough for startup's own calls on a loaded 2-CPU machine.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(3);
/// Far past either timeout.
const HELD: Duration = Duration::from_secs(10);

async fn proxied(name: &str) -> (TestEnv, EngineProxy, tempfile::TempDir) {
    proxied_env(name, None, |c| {
        c.engine_timeout = ENGINE_TIMEOUT;
        c.image_pull_timeout = Duration::from_secs(2);
    })
    .await
}

fn unavailable_detail(error: RuntimeError) -> String {
    assert_eq!(error.code(), ErrorCode::RuntimeUnavailable, "{error}");
    assert_eq!(error.code().http_status(), 503);
    match error {
        RuntimeError::Unavailable { detail } => detail,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_call_held_past_the_engine_timeout_is_unavailable_and_leaves_nothing() {
    let (env, proxy, _dir) = proxied("slow-engine").await;
    fs::create_dir(env.host_root.join("work")).unwrap();
    let host =
        json!({"name": "work", "host": {"path": env.host_root.join("work")}, "mountPath": "/work"});
    let nfs = json!({"name": "archive", "nfs": {"server": "nfs-server.invalid", "path": "/exports"}, "mountPath": "/archive"});
    // Each engine call of the create path, answered too late (the NFS volume's mount would
    // fail at start, so it is only in the request whose volume create is held).
    for (method, path, volumes) in [
        ("GET", "/images/", json!([host])),
        ("POST", "/volumes/create", json!([host, nfs])),
        ("POST", "/containers/create", json!([host])),
        ("POST", "/start", json!([host])),
        ("GET", "/containers/", json!([host])),
    ] {
        proxy.fail_next(method, path, FaultKind::Delay(HELD));
        let err = env.create(request_with(volumes)).await.unwrap_err();
        assert_eq!(
            proxy.faults_pending(),
            0,
            "{method} {path} was never called"
        );
        let detail = unavailable_detail(err);
        println!("{method} {path}: {detail}");
        assert!(
            detail.contains("did not answer within docker.engine_timeout_seconds = 3 s"),
            "{method} {path}: {detail}"
        );
        env.assert_nothing_left(&format!("{method} {path} held"))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_held_past_the_pull_timeout_is_unavailable() {
    let (env, proxy, _dir) = proxied("slow-pull").await;
    proxy.fail_next("POST", "/images/create", FaultKind::Delay(HELD));
    let mut request = request_with(json!([]));
    request["image"]["uri"] = json!("berth-test/never-built:1");
    let err = env.create(request).await.unwrap_err();
    assert_eq!(proxy.faults_pending(), 0, "no pull was made");
    let detail = unavailable_detail(err);
    assert!(
        detail.contains("pulling image: the Docker Engine did not answer within docker.image_pull_timeout_seconds = 2 s"),
        "{detail}"
    );
    env.assert_nothing_left("pull held").await;
}
