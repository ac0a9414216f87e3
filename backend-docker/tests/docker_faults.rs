//! Faults in every engine call of delete, expiry, pause and resume (the create path's are in
//! `docker_engine_calls` and `docker_engine_timeouts`), through the recording proxy: each call
//! refused, cut before the engine sees it, answered too late, or carried out by the engine with
//! its answer lost. Every fault is a server error the caller can read (a 5xx code naming what
//! failed); afterwards the record and the engine agree, and a retry (or, for a volume whose
//! removal failed, the next start) finishes the job with nothing left behind. Renewals and
//! metadata patches make no engine call, so no engine fault reaches them.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::process::Command;
use std::time::Duration;

use berth_core::ErrorCode;
use berth_core::model::{MetadataKey, MetadataPatch, MetadataValue, SandboxId, SandboxState};
use berth_core::runtime::{Runtime, RuntimeError};
use common::engine_proxy::{EngineProxy, FaultKind, proxied_env};
use common::{TestEnv, request_with};
use serde_json::json;

/// Short enough for a test, long enough for startup's own calls on a loaded 2-CPU machine.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(3);
/// Past the engine timeout.
const HELD: Duration = Duration::from_secs(6);

/// Every way a call can fail.
const KINDS: [FaultKind; 4] = [
    FaultKind::RefuseBefore,
    FaultKind::CutBefore,
    FaultKind::LoseResponse,
    FaultKind::Delay(HELD),
];

async fn proxied(name: &str) -> (TestEnv, EngineProxy, tempfile::TempDir) {
    proxied_env(name, None, |c| c.engine_timeout = ENGINE_TIMEOUT).await
}

/// A sandbox with a claim Berth creates and removes with it, a host volume (a staging mount)
/// and an expiry.
fn request(env: &TestEnv, claim: &str) -> serde_json::Value {
    let mut request = request_with(json!([
        {"name": "work", "pvc": {"claimName": claim, "deleteOnSandboxTermination": true}, "mountPath": "/workspace", "subPath": "s"},
        {"name": "host", "host": {"path": env.host_root.to_str().unwrap()}, "mountPath": "/h", "subPath": "x"},
    ]));
    request["timeout"] = json!(600);
    request
}

/// A failed call is a server error naming what failed, never a success or a client error: an
/// engine that refused is an internal error (500), one that could not be reached or did not
/// answer in time is unavailable (503, worth a retry).
fn assert_server_error(error: &RuntimeError, what: &str, kind: FaultKind) {
    let expected = match kind {
        FaultKind::RefuseBefore => ErrorCode::GeneralInternalError,
        _ => ErrorCode::RuntimeUnavailable,
    };
    assert_eq!(error.code(), expected, "{what}: {error}");
    println!(
        "{what}: {} {} {error}",
        error.code().http_status(),
        error.code().as_str()
    );
}

/// Waits until the proxy has used the fault (a held answer is still on its way).
fn assert_fault_used(proxy: &EngineProxy, what: &str) {
    assert_eq!(proxy.faults_pending(), 0, "{what}: the call was never made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failing_call_of_a_delete_or_an_expiry_is_finished_by_a_retry() {
    let (mut env, proxy, _dir) = proxied("delete-faults").await;
    // The delete path, in order: the container's removal, then the claim's inspection and
    // removal (scheduled in the store first, so a failure there keeps it scheduled).
    let calls = [
        ("DELETE", "/containers/sandbox-"),
        ("GET", "/volumes/"),
        ("DELETE", "/volumes/"),
    ];
    let mut cases = 0;
    for expiry in [false, true] {
        for (method, path) in calls {
            for kind in KINDS {
                let what = format!(
                    "{} {method} {path} {kind:?}",
                    if expiry { "expiry" } else { "delete" }
                );
                let claim = env.claim(&format!("c{cases}"));
                let sandbox = env.create(request(&env, &claim)).await.unwrap();
                proxy.fail_next(method, path, kind);
                let later = chrono::Utc::now() + chrono::Duration::hours(1);
                let failed = if expiry {
                    env.runtime()
                        .delete_if_expired(&sandbox.id, later)
                        .await
                        .map(|_| ())
                } else {
                    env.runtime().delete(&sandbox.id).await
                };
                assert_fault_used(&proxy, &what);
                assert_server_error(&failed.unwrap_err(), &what, kind);
                // Retried: done, or already done as far as the record goes.
                let retried = if expiry {
                    env.runtime()
                        .delete_if_expired(&sandbox.id, later)
                        .await
                        .map(|expired| assert!(expired, "{what}: not expired on retry"))
                } else {
                    env.runtime().delete(&sandbox.id).await
                };
                match retried {
                    Ok(()) | Err(RuntimeError::NotFound { .. }) => {}
                    Err(e) => panic!("{what}: the retry failed: {e}"),
                }
                assert!(
                    matches!(
                        env.runtime().get(&sandbox.id).await,
                        Err(RuntimeError::NotFound { .. })
                    ),
                    "{what}: the sandbox is still there"
                );
                if path.starts_with("/volumes") && !env.runtime().list().await.unwrap().is_empty() {
                    panic!("{what}: a record was left");
                }
                // A claim whose removal failed stays scheduled: the next start removes it.
                if !common::leftovers(&env.run).1.is_empty() {
                    assert!(path.starts_with("/volumes"), "{what}: a volume was left");
                    env.restart(|_| {}).await;
                }
                env.assert_nothing_left(&what).await;
                cases += 1;
            }
        }
    }
    println!("{cases} injected faults in deletes and expiries, each finished with nothing left");
}

/// Whether the engine has the sandbox's container paused.
fn engine_paused(id: &SandboxId) -> bool {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.Paused}}",
            &format!("sandbox-{id}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim() == "true"
}

/// Polls until the record says what the engine has (the event stream carries a change the
/// runtime did not hear the answer to).
async fn until_record_agrees(env: &TestEnv, id: &SandboxId, what: &str) -> SandboxState {
    let expected = if engine_paused(id) {
        SandboxState::Paused
    } else {
        SandboxState::Running
    };
    for _ in 0..100 {
        if env.runtime().get(id).await.unwrap().status.state == expected {
            return expected;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: the record never said {expected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failing_pause_or_resume_leaves_the_record_agreeing_with_the_engine() {
    let (env, proxy, _dir) = proxied("pause-faults").await;
    let claim = env.claim("p");
    let sandbox = env.create(request(&env, &claim)).await.unwrap();
    let id = &sandbox.id;
    let mut cases = 0;
    for kind in KINDS {
        // Pause, with the fault.
        let what = format!("pause {kind:?}");
        proxy.fail_next("POST", "/pause", kind);
        let err = env.runtime().pause(id).await.unwrap_err();
        assert_fault_used(&proxy, &what);
        assert_server_error(&err, &what, kind);
        if until_record_agrees(&env, id, &what).await == SandboxState::Running {
            env.runtime().pause(id).await.unwrap();
        } else {
            // The engine did pause: a second pause is the caller's mistake, said as such.
            let again = env.runtime().pause(id).await.unwrap_err();
            assert_eq!(again.code().http_status(), 409, "{what}: {again}");
        }
        assert!(engine_paused(id), "{what}");

        // Resume, with the fault.
        let what = format!("resume {kind:?}");
        proxy.fail_next("POST", "/unpause", kind);
        let err = env.runtime().resume(id).await.unwrap_err();
        assert_fault_used(&proxy, &what);
        assert_server_error(&err, &what, kind);
        if until_record_agrees(&env, id, &what).await == SandboxState::Paused {
            env.runtime().resume(id).await.unwrap();
        } else {
            let again = env.runtime().resume(id).await.unwrap_err();
            assert_eq!(again.code().http_status(), 409, "{what}: {again}");
        }
        assert!(!engine_paused(id), "{what}");
        cases += 2;
    }
    println!("{cases} injected faults in pauses and resumes, the record agreeing each time");
    env.runtime().delete(id).await.unwrap();
    env.assert_nothing_left("after the pause faults").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_and_metadata_patches_make_no_engine_call() {
    let (env, proxy, _dir) = proxied("store-only").await;
    let claim = env.claim("r");
    let sandbox = env.create(request(&env, &claim)).await.unwrap();
    proxy.clear();
    let until = chrono::Utc::now() + chrono::Duration::hours(2);
    env.runtime().renew(&sandbox.id, until).await.unwrap();
    let patch = MetadataPatch(
        [(
            MetadataKey::new("team").unwrap(),
            Some(MetadataValue::new("infra").unwrap()),
        )]
        .into(),
    );
    env.runtime()
        .patch_metadata(&sandbox.id, &patch)
        .await
        .unwrap();
    let calls = proxy.calls();
    assert!(
        calls.is_empty(),
        "renew and patch called the engine: {calls:?}"
    );
    let record = env.runtime().get(&sandbox.id).await.unwrap();
    assert_eq!(
        record.expires_at.map(|t| t.timestamp()),
        Some(until.timestamp())
    );
    assert_eq!(record.metadata.len(), 1);
    env.runtime().delete(&sandbox.id).await.unwrap();
    env.assert_nothing_left("after renewals").await;
}
