//! The in-memory runtime passes the conformance suite (also without pause, as its capabilities
//! then say; and with slow deletes only where the target allows `Stopping` for a while), and its
//! failure switches produce the runtime error codes the API maps.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;

use berth_core::ErrorCode;
use berth_core::model::{ClaimName, SandboxId, SandboxSpec, SandboxState};
use berth_core::runtime::{CreateSandbox, Runtime};
use berth_core::testkit::InMemoryRuntime;
use berth_core::testkit::conformance::{self, AfterDelete, ConformanceTarget, Outcome};
use berth_core::validate::StoragePolicy;
use berth_core::wire;
use chrono::Utc;

const IMAGE: &str = "berth-test/busybox:latest";

fn target(runtime: Arc<InMemoryRuntime>) -> ConformanceTarget {
    ConformanceTarget {
        runtime,
        image: IMAGE.into(),
        entrypoint: vec!["sleep".into(), "3600".into()],
        missing_image: "berth-test/missing:latest".into(),
        host_root: Some(berth_core::model::HostPath::new("/srv/berth-conformance").unwrap()),
        endpoint_port: 8080,
        run_id: "mem".into(),
        after_delete: AfterDelete::Gone,
    }
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let runtime = Arc::new(InMemoryRuntime::new());
    runtime.add_image(IMAGE);
    let report = conformance::run(&target(runtime.clone())).await;
    report.assert_passed();
    assert!(
        report.results.iter().all(|(_, o)| *o == Outcome::Passed),
        "nothing may be skipped here: {report:?}"
    );
    assert!(
        runtime.list().await.unwrap().is_empty(),
        "the suite left sandboxes behind"
    );
}

/// A runtime without pause passes when its capabilities say so: pause and resume are then
/// checked to answer `SANDBOX::UNSUPPORTED_FEATURE`, not skipped.
#[tokio::test]
async fn a_runtime_without_pause_passes_when_its_capabilities_say_so() {
    let mut caps = InMemoryRuntime::new().capabilities();
    caps.pause = false;
    let runtime = Arc::new(InMemoryRuntime::new().with_capabilities(caps));
    runtime.add_image(IMAGE);
    let report = conformance::run(&target(runtime)).await;
    report.assert_passed();
    assert!(
        report
            .results
            .iter()
            .any(|(n, o)| *n == "pause_resume" && *o == Outcome::Passed)
    );
}

/// Deletes that finish later (`Stopping` for a few reads, then 404) fail the strict suite that
/// Docker runs with, and pass where the target allows them for a bound.
#[tokio::test]
async fn slow_deletes_pass_only_where_the_target_allows_them() {
    let runtime = Arc::new(InMemoryRuntime::new());
    runtime.add_image(IMAGE);
    runtime.simulate_slow_delete(3);
    let strict = conformance::run(&target(runtime.clone())).await;
    assert!(
        strict
            .results
            .iter()
            .any(|(n, o)| *n == "delete" && matches!(o, Outcome::Failed(_))),
        "{strict:?}"
    );
    let sleep: conformance::Sleep = Arc::new(|d| Box::pin(tokio::time::sleep(d)));
    let mut lenient = target(runtime.clone());
    lenient.run_id = "mem2".into();
    lenient.after_delete = AfterDelete::StoppingThenGone {
        within: std::time::Duration::from_secs(10),
        sleep,
    };
    conformance::run(&lenient).await.assert_passed();
}

/// The suite must be able to fail: a runtime that forgets a rule is caught.
#[tokio::test]
async fn the_suite_catches_a_runtime_without_images() {
    let runtime = Arc::new(InMemoryRuntime::new()); // no image present: every create fails
    let report = conformance::run(&target(runtime)).await;
    let failed: Vec<&str> = report
        .results
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Failed(_)))
        .map(|(n, _)| *n)
        .collect();
    assert!(
        failed.contains(&"create_get_list") && failed.contains(&"claim_ownership"),
        "{failed:?}"
    );
    assert_eq!(report.passed() + failed.len(), report.results.len());
}

fn create_request(id: &str) -> CreateSandbox {
    let request = wire::CreateSandboxRequest {
        image: Some(wire::ImageSpec {
            uri: IMAGE.into(),
            auth: None,
        }),
        entrypoint: Some(vec!["sleep".into()]),
        resource_limits: Some(Default::default()),
        ..Default::default()
    };
    CreateSandbox {
        id: SandboxId::new(id).unwrap(),
        spec: SandboxSpec::from_request(request, &StoragePolicy::default()).unwrap(),
        created_at: Utc::now(),
    }
}

#[tokio::test]
async fn exits_and_outages_map_to_states_and_codes() {
    let runtime = InMemoryRuntime::new();
    runtime.add_image(IMAGE);
    let done = runtime.create(create_request("done")).await.unwrap().id;
    let crashed = runtime.create(create_request("crashed")).await.unwrap().id;
    let oom = runtime.create(create_request("oom")).await.unwrap().id;
    runtime.simulate_exit(&done, 0, false).unwrap();
    runtime.simulate_exit(&crashed, 2, false).unwrap();
    runtime.simulate_exit(&oom, 137, true).unwrap();
    let status = |r: berth_core::model::SandboxRecord| (r.status.state, r.status.reason.unwrap());
    assert_eq!(
        status(runtime.get(&done).await.unwrap()),
        (SandboxState::Terminated, "exited".into())
    );
    assert_eq!(
        status(runtime.get(&crashed).await.unwrap()),
        (SandboxState::Failed, "exited_with_error".into())
    );
    assert_eq!(
        status(runtime.get(&oom).await.unwrap()),
        (SandboxState::Failed, "oom_killed".into())
    );
    assert_eq!(
        runtime.pause(&done).await.unwrap_err().code(),
        ErrorCode::SandboxInvalidState
    );
    assert_eq!(
        runtime.endpoint(&done, 80).await.unwrap_err().code(),
        ErrorCode::SandboxEndpointNotAvailable
    );

    runtime.set_unavailable(true);
    assert_eq!(
        runtime.get(&done).await.unwrap_err().code(),
        ErrorCode::RuntimeUnavailable
    );
    assert_eq!(
        runtime.list().await.unwrap_err().code(),
        ErrorCode::RuntimeUnavailable
    );
    assert_eq!(
        runtime
            .create(create_request("later"))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::RuntimeUnavailable
    );
    runtime.set_unavailable(false);
    assert_eq!(runtime.list().await.unwrap().len(), 3);
}

#[tokio::test]
async fn claims_made_outside_berth_are_never_removed() {
    let runtime = InMemoryRuntime::new();
    runtime.add_image(IMAGE);
    let claim = ClaimName::new("preexisting").unwrap();
    runtime.add_claim(&claim);
    let mut create = create_request("user");
    let spec_json = serde_json::json!({
        "image": {"uri": IMAGE}, "entrypoint": ["sleep"], "resourceLimits": {},
        "volumes": [{"name": "d", "pvc": {"claimName": "preexisting", "createIfNotExists": false,
                     "deleteOnSandboxTermination": true}, "mountPath": "/d"}]
    });
    create.spec = SandboxSpec::from_request(
        serde_json::from_value(spec_json).unwrap(),
        &StoragePolicy::default(),
    )
    .unwrap();
    runtime.create(create).await.unwrap();
    runtime
        .delete(&SandboxId::new("user").unwrap())
        .await
        .unwrap();
    assert!(runtime.has_claim(&claim));
}
