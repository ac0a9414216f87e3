//! Engine answers that are the request's fault (or a conflict on the host) are a 4xx with a
//! stable code, the field and the engine's reason — never an internal error — and leave nothing
//! behind: an NFS export that cannot be mounted (or asked for at a subPath), CPU and memory
//! limits the host cannot grant, a published port already taken.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::fs;

use berth_core::ErrorCode;
use berth_core::runtime::{Runtime, RuntimeError};
use common::engine_proxy::{FaultKind, proxied_env};
use common::{TestEnv, request_with};
use serde_json::json;

/// The one violation of a rejection: (field, code, message).
fn rejection(error: &RuntimeError) -> (String, ErrorCode, String) {
    match error {
        RuntimeError::Rejected(v) => {
            let [one] = v.as_slice() else {
                panic!("more than one violation: {v}")
            };
            (one.field.clone(), one.code, one.message.clone())
        }
        other => panic!("not a rejection: {other:?} ({})", other.code().as_str()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nfs_export_that_cannot_be_mounted_is_the_requests_fault() {
    let env = TestEnv::new("nfs-mount").await;
    fs::create_dir(env.host_root.join("work")).unwrap();
    // A host volume first (staged before the container starts), then the NFS volume: its
    // index is 1, and the staging mount must go too.
    let request = request_with(json!([
        {"name": "work", "host": {"path": env.host_root.join("work")}, "mountPath": "/work"},
        {"name": "archive", "nfs": {"server": "nfs-server.invalid", "path": "/exports/archive"},
         "mountPath": "/archive", "readOnly": true}
    ]));
    let err = env.create(request).await.unwrap_err();
    println!("engine said: {err}");
    let (field, code, message) = rejection(&err);
    assert_eq!(
        (field.as_str(), code),
        ("volumes[1].nfs", ErrorCode::VolumeNfsMountFailed)
    );
    assert_eq!(code.http_status(), 400);
    assert!(
        message.starts_with(
            "the engine could not mount NFS export nfs-server.invalid:/exports/archive: "
        ) && message.contains("nfs-server.invalid"),
        "the engine's reason is passed on: {message}"
    );
    assert!(
        !message.contains("/var/lib/docker"),
        "the engine's host path is not: {message}"
    );
    env.assert_nothing_left("nfs mount failed").await;
}

/// Docker mounts an NFS export whole (a local-driver volume): a subPath would be silently
/// ignored, exposing the whole export, so the capabilities say no and the create is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nfs_sub_path_is_refused_not_ignored() {
    let env = TestEnv::new("nfs-subpath").await;
    assert!(
        env.runtime()
            .capabilities()
            .volume_backends
            .get(&berth_core::model::VolumeBackendKind::Nfs)
            .is_some_and(|nfs| !nfs.sub_path)
    );
    let request = request_with(json!([
        {"name": "archive", "nfs": {"server": "nfs-server.invalid", "path": "/exports/archive"},
         "mountPath": "/archive", "subPath": "uid-1"}
    ]));
    let err = env.create(request).await.unwrap_err();
    let (field, code, _) = rejection(&err);
    assert_eq!(
        (field.as_str(), code),
        ("volumes[0].subPath", ErrorCode::VolumeStagingUnavailable)
    );
    env.assert_nothing_left("nfs subPath refused").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_the_host_cannot_grant_name_their_field() {
    let env = TestEnv::new("limits").await;
    let cpus = std::thread::available_parallelism().unwrap().get();
    for (limits, field, engine_says) in [
        (
            json!({"cpu": "64", "memory": "128Mi"}),
            "resourceLimits.cpu",
            "CPUs available",
        ),
        (
            json!({"cpu": "5m", "memory": "128Mi"}),
            "resourceLimits.cpu",
            "invalid argument",
        ),
        (
            json!({"cpu": "500m", "memory": "1Mi"}),
            "resourceLimits.memory",
            "Minimum memory limit allowed is 6MB",
        ),
    ] {
        assert!(cpus < 64, "this host has 64 CPUs or more");
        let mut request = request_with(json!([]));
        request["resourceLimits"] = limits.clone();
        let err = env.create(request).await.unwrap_err();
        println!("{limits}: {err}");
        let (got_field, code, message) = rejection(&err);
        assert_eq!(
            (got_field.as_str(), code),
            (field, ErrorCode::SandboxUnsatisfiableResourceLimits),
            "{limits}"
        );
        assert_eq!(code.http_status(), 400);
        assert!(message.contains(engine_says), "{limits}: {message}");
        env.assert_nothing_left(&limits.to_string()).await;
    }
}

/// Berth publishes `docker.published_ports` on engine-chosen host ports, and Engine 20.10
/// retries another port when the one it chose is taken, so "port is already allocated" cannot
/// be produced on demand with Berth's configuration: the engine's real answer (recorded from
/// 20.10 starting a container whose fixed host port was taken) is injected at the start call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_port_already_taken_is_a_conflict() {
    const ENGINE_ANSWER: &str = "driver failed programming external connectivity on endpoint sandbox-x (bec5126f0447690399e51c597c9b74cc2de31b648e5f00b0d37a0e650f188c78): Bind for 127.0.0.1:45999 failed: port is already allocated";
    let (env, proxy, _proxy_dir) =
        proxied_env("port-taken", None, |c| c.published_ports = vec![8080]).await;
    fs::create_dir(env.host_root.join("work")).unwrap();
    proxy.fail_next("POST", "/start", FaultKind::AnswerWith(500, ENGINE_ANSWER));
    let err = env
        .create(request_with(json!([
            {"name": "work", "host": {"path": env.host_root.join("work")}, "mountPath": "/work"}
        ])))
        .await
        .unwrap_err();
    assert_eq!(proxy.faults_pending(), 0, "the start call was never made");
    let (field, code, message) = rejection(&err);
    assert_eq!(
        (field.as_str(), code),
        (
            "docker.published_ports",
            ErrorCode::SandboxPortAlreadyAllocated
        )
    );
    assert_eq!(code.http_status(), 409);
    assert!(
        message.contains("Bind for 127.0.0.1:45999 failed: port is already allocated"),
        "{message}"
    );
    env.assert_nothing_left("port taken").await;

    // With the port free, the same create works: the conflict was the host's, not the request's.
    let record = env
        .create(request_with(json!([
            {"name": "work", "host": {"path": env.host_root.join("work")}, "mountPath": "/work"}
        ])))
        .await
        .unwrap();
    env.runtime().delete(&record.id).await.unwrap();
    env.assert_nothing_left("after delete").await;
}
