//! The container index follows the engine's events stream; when that stream ends (here the
//! recording proxy cuts it), the index re-subscribes, replays the gap and resyncs. With the
//! periodic resync an hour away, only the re-subscription can explain the index seeing a
//! change made outside Berth after the cut.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::process::Command;
use std::time::Duration;

use berth_core::model::{SandboxId, SandboxState};
use berth_core::runtime::Runtime;
use common::engine_proxy::proxied_env;
use common::{TestEnv, request_with};
use serde_json::json;

/// Polls the runtime's view (memory only: a get makes no engine call) until the sandbox is in
/// `state`; panics with `why` after a generous bound.
async fn wait_for_state(env: &TestEnv, id: &SandboxId, state: SandboxState, why: &str) {
    for _ in 0..300 {
        if env.runtime().get(id).await.unwrap().status.state == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = env.runtime().get(id).await.unwrap().status.state;
    panic!("after 30 s the index still shows {seen:?}, not {state:?}: {why}");
}

fn docker(args: &[&str]) {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_sees_outside_changes_after_the_events_stream_is_cut() {
    let (env, proxy, _proxy_dir) = proxied_env("events-cut", None, |c| {
        // Far beyond the test: the periodic resync cannot be what finds the change.
        c.index_resync = Duration::from_secs(3600);
    })
    .await;
    let id = env.create(request_with(json!([]))).await.unwrap().id;
    let container = format!("sandbox-{id}");

    // The stream works: an outside pause is seen.
    docker(&["pause", &container]);
    wait_for_state(
        &env,
        &id,
        SandboxState::Paused,
        "the events stream never worked",
    )
    .await;

    for round in 0..2 {
        proxy.cut_event_streams();
        // Changed while the stream is down (or just re-subscribing): the replay or the resync
        // after the gap must bring it in.
        docker(&["unpause", &container]);
        wait_for_state(
            &env,
            &id,
            SandboxState::Running,
            &format!("cut {round}: the events stream was not re-subscribed"),
        )
        .await;
        docker(&["pause", &container]);
        wait_for_state(
            &env,
            &id,
            SandboxState::Paused,
            &format!("cut {round}: the re-subscribed stream does not deliver new events"),
        )
        .await;
    }
    let subscriptions = proxy
        .calls()
        .iter()
        .filter(|c| c.method == "GET" && c.path.starts_with("/events"))
        .count();
    assert!(
        subscriptions >= 3,
        "expected a subscription per cut, saw {subscriptions}"
    );

    docker(&["unpause", &container]);
    env.runtime().delete(&id).await.unwrap();
}
