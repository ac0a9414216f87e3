//! What Berth sends the engine, seen through a recording proxy on a Unix socket: reads make no
//! Docker call at all; every Docker call of the create path, refused or with its response lost
//! after the engine performed it, leaves nothing behind; host-side steps failing leave nothing
//! either; and the API version chosen decides which fields are sent (snapshots of both).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::fs;

use berth_core::ErrorCode;
use berth_core::runtime::Runtime;
use common::engine_proxy::{EngineProxy, FaultKind, proxied_env};
use common::{TestEnv, request_with};
use serde_json::json;

async fn proxied(
    name: &str,
    report_api: Option<&str>,
) -> (TestEnv, EngineProxy, tempfile::TempDir) {
    proxied_env(name, report_api, |_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_and_lists_make_no_docker_call() {
    let (env, proxy, _dir) = proxied("reads", None).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(env.create(request_with(json!([]))).await.unwrap().id);
    }
    proxy.clear();
    for _ in 0..50 {
        for id in &ids {
            env.runtime().get(id).await.unwrap();
        }
        assert_eq!(env.runtime().list().await.unwrap().len(), 3);
    }
    let calls = proxy.calls();
    println!("200 gets and lists: {} Docker calls", calls.len());
    assert!(calls.is_empty(), "reads called the engine: {calls:?}");
    for id in &ids {
        env.runtime().delete(id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failing_docker_call_of_a_create_leaves_nothing() {
    let (env, proxy, _dir) = proxied("faults", None).await;
    let claim = env.claim("made");
    fs::create_dir(env.host_root.join("h")).unwrap();
    let request = || {
        request_with(json!([
            {"name": "work", "pvc": {"claimName": claim}, "mountPath": "/workspace", "subPath": "uid-1/s1"},
            {"name": "host", "host": {"path": env.host_root.join("h").to_str().unwrap()}, "mountPath": "/h", "subPath": "x", "readOnly": true},
        ]))
    };
    // The create path, in order: image, claim lookup, claim creation, volume mountpoint,
    // container creation, start, inspect.
    let calls = [
        ("GET", "/images/"),
        ("GET", "/volumes/"),
        ("POST", "/volumes/create"),
        ("POST", "/containers/create"),
        ("POST", "/start"),
        ("GET", "/containers/"),
    ];
    let mut cases = 0;
    for (method, path) in calls {
        for kind in [FaultKind::RefuseBefore, FaultKind::LoseResponse] {
            proxy.fail_next(method, path, kind);
            let result = env.create(request()).await;
            assert_eq!(
                proxy.faults_pending(),
                0,
                "{method} {path} {kind:?}: the call was never made"
            );
            let err = result.expect_err("a create with a failing Docker call succeeded");
            assert!(
                matches!(
                    err.code(),
                    ErrorCode::GeneralInternalError
                        | ErrorCode::RuntimeUnavailable
                        | ErrorCode::SandboxImageNotFound
                ),
                "{method} {path} {kind:?}: {err}"
            );
            env.assert_nothing_left(&format!("{method} {path} {kind:?}"))
                .await;
            cases += 1;
        }
    }
    println!("{cases} injected Docker failures, each left nothing behind");
    // And the same request succeeds once the engine behaves.
    let sandbox = env.create(request()).await.unwrap();
    env.runtime().delete(&sandbox.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_host_side_steps_leave_nothing() {
    let env = TestEnv::new("hostfail").await;
    let claim = env.claim("made");
    // mkdir fails: the directory to create a subPath in is on a read-only mount.
    let frozen = env.host_root.join("frozen");
    fs::create_dir(&frozen).unwrap();
    rustix::mount::mount_bind(&frozen, &frozen).unwrap();
    rustix::mount::mount_remount(
        &frozen,
        rustix::mount::MountFlags::BIND | rustix::mount::MountFlags::RDONLY,
        "",
    )
    .unwrap();
    let request = request_with(json!([
        {"name": "work", "pvc": {"claimName": claim}, "mountPath": "/workspace", "subPath": "s"},
        {"name": "host", "host": {"path": frozen.to_str().unwrap()}, "mountPath": "/h", "subPath": "new-dir"},
    ]));
    let err = env.create(request).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::GeneralInternalError, "{err}");
    let (containers, volumes) = common::leftovers(&env.run);
    assert!(
        containers.is_empty() && volumes.is_empty(),
        "mkdir failure left {containers:?} {volumes:?}"
    );
    assert_eq!(
        common::mounts_below(&env.dir.join("state")),
        Vec::<String>::new()
    );
    rustix::mount::unmount(&frozen, rustix::mount::UnmountFlags::DETACH).unwrap();

    // The staging mount fails: the sandbox's staging directory is taken by a file.
    let create = env.create_request(request_with(json!([
        {"name": "work", "pvc": {"claimName": claim}, "mountPath": "/workspace", "subPath": "s"},
    ])));
    fs::write(
        env.dir.join("state/mounts").join(create.id.as_str()),
        "in the way",
    )
    .unwrap();
    let err = env.runtime().create(create).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::GeneralInternalError, "{err}");
    let (containers, volumes) = common::leftovers(&env.run);
    assert!(
        containers.is_empty() && volumes.is_empty(),
        "mount failure left {containers:?} {volumes:?}"
    );
    assert!(env.runtime().list().await.unwrap().is_empty());
    assert_eq!(
        common::mounts_below(&env.dir.join("state")),
        Vec::<String>::new()
    );
}

/// The JSON of the container create call, with run-specific values replaced.
fn create_body(proxy: &EngineProxy) -> (Option<String>, serde_json::Value) {
    let call = proxy
        .calls()
        .into_iter()
        .find(|c| c.method == "POST" && c.path.starts_with("/containers/create"))
        .unwrap();
    (call.version, serde_json::from_slice(&call.body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_negotiated_version_decides_the_fields_sent() {
    let request = |env: &TestEnv| {
        request_with(json!([
            {"name": "skills", "host": {"path": env.host_root.to_str().unwrap()}, "mountPath": "/skills", "readOnly": true},
        ]))
    };
    let settings = {
        let mut s = insta::Settings::clone_current();
        s.add_redaction(".HostConfig.Mounts[].Source", "[staging path]");
        s.add_redaction(".Labels", "[labels]");
        s
    };

    let (env, proxy, _dir) = proxied("v141", None).await;
    assert_eq!(env.runtime().engine().api.to_string(), "1.41");
    let sandbox = env.create(request(&env)).await.unwrap();
    let (version, body) = create_body(&proxy);
    // bollard 0.21 drops the `/v1.xx` prefix (it joins an absolute path onto the versioned
    // base URL), so the engine applies its own newest API; Berth's gating on the negotiated
    // version is what keeps newer fields away from older engines. Should bollard start sending
    // the prefix, this fails and the proxy's version rewriting takes over.
    assert_eq!(version, None);
    assert!(
        !body.to_string().contains("ReadOnlyForceRecursive"),
        "a 1.41 engine was sent a 1.44 field"
    );
    settings.bind(|| insta::assert_json_snapshot!("create_body_sent_to_api_1_41", body));
    env.runtime().delete(&sandbox.id).await.unwrap();

    let (env, proxy, _dir) = proxied("v145", Some("1.45")).await;
    assert_eq!(env.runtime().engine().api.to_string(), "1.45");
    let sandbox = env.create(request(&env)).await.unwrap();
    let (version, body) = create_body(&proxy);
    assert_eq!(version, None);
    assert_eq!(
        body["HostConfig"]["Mounts"][0]["BindOptions"]["ReadOnlyForceRecursive"],
        json!(true)
    );
    settings.bind(|| insta::assert_json_snapshot!("create_body_sent_to_api_1_45", body));
    env.runtime().delete(&sandbox.id).await.unwrap();
}
