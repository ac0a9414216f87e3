//! Store commits (an fsync each) run on the store's writer thread, never on an async worker:
//! with a commit held on a barrier, a get, a list and a list page still complete on a
//! single-threaded runtime, where a commit on the worker would freeze everything. They answer
//! what was committed before — memory never shows what the disk does not hold. A watchdog turns
//! a freeze into a failure instead of a stuck CI job. The reaper's conditional delete is ordered
//! with a held renewal. Needs the `test-hooks` feature.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_core::runtime::{ListSelection, Runtime};
use common::TestEnv;
use serde_json::json;

/// Exits the process (failing the test) unless `finished` is set within `seconds`.
fn watchdog(name: &'static str, seconds: u64, finished: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        for _ in 0..seconds * 10 {
            std::thread::sleep(Duration::from_millis(100));
            if finished.load(Ordering::Relaxed) {
                return;
            }
        }
        // Straight to stderr: the test harness captures eprintln! and would lose it at exit.
        let _ = writeln!(
            std::io::stderr().lock(),
            "{name}: not finished in {seconds} s (a store commit blocked the runtime?)"
        );
        std::process::exit(101);
    });
}

#[tokio::test(flavor = "current_thread")]
async fn reads_complete_while_a_store_commit_is_held() {
    let finished = Arc::new(AtomicBool::new(false));
    watchdog(
        "reads_complete_while_a_store_commit_is_held",
        180,
        finished.clone(),
    );
    let env = TestEnv::new("store-blocking").await;
    let created = env.create(common::request_with(json!([]))).await.unwrap();
    let id = created.id.clone();

    let mut hold = env.runtime().hold_next_store_commit();
    let renewed_to = created.created_at + chrono::Duration::hours(5);
    let renew = {
        let (runtime, id) = (env.runtime().clone(), id.clone());
        tokio::spawn(async move { runtime.renew(&id, renewed_to).await })
    };
    // The writer is now inside the renewal's commit, written but not committed.
    hold.entered().await;

    let got = env.runtime().get(&id).await.unwrap();
    assert_eq!(
        got.expires_at, created.expires_at,
        "a get shows a write that is not committed yet"
    );
    let listed = env.runtime().list().await.unwrap();
    assert!(listed.iter().any(|r| r.id == id), "list lost the sandbox");
    let page = env
        .runtime()
        .list_page(&ListSelection {
            states: vec![],
            metadata: vec![],
            offset: 0,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(page.items.iter().any(|r| r.id == id), "list_page lost it");
    assert!(
        !renew.is_finished(),
        "the renewal finished with its commit held"
    );

    hold.release();
    assert_eq!(renew.await.unwrap().unwrap(), renewed_to);
    assert_eq!(
        env.runtime().get(&id).await.unwrap().expires_at,
        Some(renewed_to),
        "the renewal is shown once committed"
    );
    env.runtime().delete(&id).await.unwrap();
    finished.store(true, Ordering::Relaxed);
}

/// The reaper's check of the expiry and its delete are one decision, ordered with renewals'
/// commits: with a renewal held inside its commit, `delete_if_expired` waits for it and then
/// finds the sandbox renewed (where reading the expiry and then deleting would have reaped a
/// sandbox just renewed). A renewal after the reaper's claim finds the sandbox gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_committing_while_the_reaper_looks_wins() {
    let env = TestEnv::new("reap-renew").await;
    let runtime = env.runtime().clone();
    let created = env.create(common::request_with(json!([]))).await.unwrap();
    let id = created.id.clone();
    let now = chrono::Utc::now();
    assert!(
        !runtime.delete_if_expired(&id, now).await.unwrap(),
        "no expiry: not reaped"
    );
    let past = created.created_at - chrono::Duration::hours(1);
    runtime.renew(&id, past).await.unwrap();

    let mut hold = runtime.hold_next_store_commit();
    let renewed_to = now + chrono::Duration::hours(5);
    let renew = {
        let (runtime, id) = (runtime.clone(), id.clone());
        tokio::spawn(async move { runtime.renew(&id, renewed_to).await })
    };
    hold.entered().await;
    // Still expired as far as any read can tell: the renewal is not committed.
    assert_eq!(runtime.get(&id).await.unwrap().expires_at, Some(past));
    let reap = {
        let (runtime, id) = (runtime.clone(), id.clone());
        tokio::spawn(async move { runtime.delete_if_expired(&id, now).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !reap.is_finished(),
        "the reaper decided before the renewal committed"
    );
    hold.release();
    assert_eq!(renew.await.unwrap().unwrap(), renewed_to);
    assert!(
        !reap.await.unwrap().unwrap(),
        "a sandbox renewed while the reaper looked was reaped"
    );
    assert_eq!(runtime.get(&id).await.unwrap().expires_at, Some(renewed_to));

    runtime.renew(&id, past).await.unwrap();
    assert!(runtime.delete_if_expired(&id, now).await.unwrap());
    let gone = berth_core::ErrorCode::SandboxNotFound;
    assert_eq!(runtime.get(&id).await.unwrap_err().code(), gone);
    assert_eq!(
        runtime.renew(&id, renewed_to).await.unwrap_err().code(),
        gone
    );
    assert_eq!(
        runtime
            .delete_if_expired(&id, now)
            .await
            .unwrap_err()
            .code(),
        gone
    );
    env.assert_nothing_left("reaped").await;
}
