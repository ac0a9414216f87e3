//! Reads and status changes at once: `list` and `list_page` in tight loops while sandboxes are
//! created, paused, resumed and deleted (each change goes through the container index and the
//! store into the runtime's one state; see ARCHITECTURE.md, "One owner of runtime state"). A
//! lock-order bug — two locks taken in both orders, as the index and the store once did —
//! deadlocks here; a watchdog turns a hang into a failure instead of a stuck CI job.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use berth_core::model::SandboxState;
use berth_core::runtime::{ListSelection, Runtime};
use common::TestEnv;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_never_deadlock_with_status_changes() {
    let finished = Arc::new(AtomicBool::new(false));
    let watchdog_done = finished.clone();
    std::thread::spawn(move || {
        for _ in 0..1800 {
            std::thread::sleep(Duration::from_millis(100));
            if watchdog_done.load(Ordering::Relaxed) {
                return;
            }
        }
        // Straight to stderr: the test harness captures eprintln! and would lose it at exit.
        let _ = writeln!(
            std::io::stderr().lock(),
            "reads_never_deadlock_with_status_changes: not finished in 180 s (deadlock?)"
        );
        std::process::exit(101);
    });

    let env = TestEnv::new("locks").await;
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for n in 0..3 {
        let (runtime, stop, reads) = (env.runtime().clone(), stop.clone(), reads.clone());
        readers.push(tokio::spawn(async move {
            let selection = ListSelection {
                states: vec![SandboxState::Running, SandboxState::Paused],
                metadata: vec![],
                offset: 0,
                limit: 50,
            };
            while !stop.load(Ordering::Relaxed) {
                if n == 0 {
                    runtime.list().await.unwrap();
                } else {
                    runtime.list_page(&selection).await.unwrap();
                }
                reads.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }));
    }
    let request = common::request_with(json!([]));
    for _ in 0..6 {
        let id = env.create(request.clone()).await.unwrap().id;
        for _ in 0..5 {
            env.runtime().pause(&id).await.unwrap();
            env.runtime().resume(&id).await.unwrap();
        }
        env.runtime().delete(&id).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    finished.store(true, Ordering::Relaxed);
    let reads = reads.load(Ordering::Relaxed);
    eprintln!("{reads} reads during 6 creates, 60 pauses/resumes and 6 deletes");
    assert!(reads > 100, "the readers hardly ran ({reads} reads)");
}
