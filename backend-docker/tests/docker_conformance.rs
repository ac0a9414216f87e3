//! The Docker runtime passes core's conformance suite on the real engine.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::sync::Arc;

use berth_core::model::HostPath;
use berth_core::runtime::Runtime;
use berth_core::testkit::conformance::{self, AfterDelete, ConformanceTarget};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_runtime_passes_the_conformance_suite() {
    let env = common::TestEnv::new("conf").await;
    let host_root = HostPath::new(env.host_root.to_str().unwrap()).unwrap();
    let runtime: Arc<dyn Runtime> = env.runtime().clone();
    let target = ConformanceTarget {
        runtime: runtime.clone(),
        image: common::IMAGE.into(),
        entrypoint: vec!["sleep".into(), "3600".into()],
        missing_image: "berth-test/missing:latest".into(),
        host_root: Some(host_root),
        endpoint_port: 8080,
        run_id: env.short_run_id(),
        // Strict: a deleted sandbox is 404 at once.
        after_delete: AfterDelete::Gone,
    };
    let report = conformance::run(&target).await;
    drop(target);
    report.assert_passed();
    assert!(runtime.list().await.unwrap().is_empty());
    let (containers, volumes) = common::leftovers(&env.run);
    assert!(
        containers.is_empty() && volumes.is_empty(),
        "left behind: {containers:?} {volumes:?}"
    );
    assert!(
        common::mounts_below(&env.dir.join("state")).is_empty(),
        "staging mounts left behind"
    );
}
