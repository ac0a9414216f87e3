//! Sandbox states on the real engine, as the events-fed index sees them: an entry process that
//! exits 0 is Terminated, one that fails is Failed with its exit code, an OOM kill is Failed
//! with reason oom_killed, and changes made outside Berth (docker pause, docker rm) show up.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::time::Duration;

use berth_core::ErrorCode;
use berth_core::model::{SandboxId, SandboxRecord, SandboxState};
use berth_core::runtime::Runtime;
use common::TestEnv;
use serde_json::json;

/// Polls `get` until the state is `want` (the index follows events asynchronously).
async fn wait_for(env: &TestEnv, id: &SandboxId, want: SandboxState) -> SandboxRecord {
    for _ in 0..100 {
        let record = env.runtime().get(id).await.unwrap();
        if record.status.state == want {
            assert_listed_as(env, id, want).await;
            return record;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{id} never became {want}: {:?}",
        env.runtime().get(id).await.unwrap().status
    );
}

/// A list filtered by `state` finds the sandbox, and one filtered by every other state does not
/// (the list index follows the container index's changes as they happen).
async fn assert_listed_as(env: &TestEnv, id: &SandboxId, state: SandboxState) {
    let listed = |states: Vec<SandboxState>| async move {
        let selection = berth_core::runtime::ListSelection {
            states,
            metadata: vec![],
            offset: 0,
            limit: 200,
        };
        let page = env.runtime().list_page(&selection).await.unwrap();
        page.items.iter().any(|r| &r.id == id)
    };
    assert!(listed(vec![state]).await, "{id} is not listed as {state}");
    let others: Vec<SandboxState> = SandboxState::ALL
        .iter()
        .copied()
        .filter(|s| *s != state)
        .collect();
    assert!(
        !listed(others).await,
        "{id} is also listed in another state than {state}"
    );
}

fn running(script: &str, memory: &str) -> serde_json::Value {
    json!({"image": {"uri": common::IMAGE}, "entrypoint": ["sh", "-c", script], "resourceLimits": {"memory": memory}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_and_oom_kills_become_terminated_and_failed() {
    let env = TestEnv::new("states").await;
    let ok = env
        .create(running("sleep 1; exit 0", "64Mi"))
        .await
        .unwrap()
        .id;
    let bad = env
        .create(running("sleep 1; exit 3", "64Mi"))
        .await
        .unwrap()
        .id;
    let oom = env
        .create(running(
            "sleep 1; dd if=/dev/zero of=/dev/null bs=64M count=1",
            "8Mi",
        ))
        .await
        .unwrap()
        .id;

    let done = wait_for(&env, &ok, SandboxState::Terminated).await;
    assert_eq!(done.status.reason.as_deref(), Some("exited"));
    let failed = wait_for(&env, &bad, SandboxState::Failed).await;
    assert_eq!(failed.status.reason.as_deref(), Some("exited_with_error"));
    assert!(failed.status.message.unwrap().contains("code 3"));
    let killed = wait_for(&env, &oom, SandboxState::Failed).await;
    assert_eq!(
        killed.status.reason.as_deref(),
        Some("oom_killed"),
        "{:?}",
        killed.status
    );

    // An ended sandbox can be neither paused nor resumed, and has no endpoint.
    assert_eq!(
        env.runtime().pause(&ok).await.unwrap_err().code(),
        ErrorCode::SandboxInvalidState
    );
    assert_eq!(
        env.runtime().resume(&bad).await.unwrap_err().code(),
        ErrorCode::SandboxInvalidState
    );
    assert_eq!(
        env.runtime().endpoint(&ok, 80).await.unwrap_err().code(),
        ErrorCode::SandboxEndpointNotAvailable
    );
    for id in [ok, bad, oom] {
        env.runtime().delete(&id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_outside_berth_show_up() {
    let env = TestEnv::new("outside").await;
    let id = env.create(running("sleep 3600", "64Mi")).await.unwrap().id;
    let name = format!("sandbox-{id}");
    assert!(
        std::process::Command::new("docker")
            .args(["pause", &name])
            .status()
            .unwrap()
            .success()
    );
    wait_for(&env, &id, SandboxState::Paused).await;
    // Paused by someone else: pausing again is a clean 409, resuming works.
    assert_eq!(
        env.runtime().pause(&id).await.unwrap_err().code(),
        ErrorCode::SandboxInvalidState
    );
    env.runtime().resume(&id).await.unwrap();
    assert_eq!(
        env.runtime().get(&id).await.unwrap().status.state,
        SandboxState::Running
    );
    assert_listed_as(&env, &id, SandboxState::Running).await;

    assert!(
        std::process::Command::new("docker")
            .args(["rm", "-f", &name])
            .status()
            .unwrap()
            .success()
    );
    // `docker rm -f` kills first (a die event: Failed, exited_with_error), then destroys; wait
    // for the destroy to be seen.
    let mut gone = wait_for(&env, &id, SandboxState::Failed).await;
    for _ in 0..100 {
        if gone.status.reason.as_deref() == Some("container_missing") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        gone = env.runtime().get(&id).await.unwrap();
    }
    assert_eq!(gone.status.state, SandboxState::Failed);
    assert_eq!(gone.status.reason.as_deref(), Some("container_missing"));
    // Deleting it still releases what it held.
    env.runtime().delete(&id).await.unwrap();
    assert_eq!(
        env.runtime().get(&id).await.unwrap_err().code(),
        ErrorCode::SandboxNotFound
    );
}
