//! The Kubernetes runtime on a real API server and a real kubelet (`cargo xtask k8s-env up`;
//! the kubeconfig is `XTASK_K8S_KUBECONFIG`, default `/tmp/berth-k8s/kubeconfig`). Each test
//! works in a namespace of its own, labelled `berth.test=1`, deleted at the end (also when the
//! test panics). The tests fail, never skip, when the cluster cannot be reached.
//!
//! `cargo xtask test` runs them on a cluster it brings up and takes down (`test = false` keeps
//! them out of a plain `cargo test --workspace`, which has no cluster).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod cluster;

use std::path::PathBuf;
use std::time::Duration;

use berth_core::model::{MetadataPatch, SandboxId, SandboxState};
use berth_core::runtime::{ListSelection, Runtime, RuntimeError};
use berth_k8s::config::KubernetesConfig;
use berth_k8s::runtime::KubernetesRuntime;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, PostParams};
use serde_json::json;

use cluster::{
    IMAGE, TestNamespace, VolumePool, host_file, kubeconfig, request, shell, until_gone,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_lives_and_dies_as_a_pod() {
    let (namespace, runtime) = TestNamespace::new("life").await;
    let created = runtime
        .create(request("life-1", json!({"metadata": {"team": "ml"}})))
        .await
        .unwrap();
    assert_eq!(created.status.state, SandboxState::Running);

    let got = runtime.get(&created.id).await.unwrap();
    assert_eq!(got.metadata, created.metadata);
    let page = runtime
        .list_page(&ListSelection {
            metadata: vec![("team".into(), "ml".into())],
            limit: 10,
            ..ListSelection::default()
        })
        .await
        .unwrap();
    assert_eq!((page.total, page.items[0].id.as_str()), (1, "life-1"));

    let later = created.expires_at.unwrap() + chrono::TimeDelta::try_hours(1).unwrap();
    assert_eq!(runtime.renew(&created.id, later).await.unwrap(), later);
    let patch = MetadataPatch::from_request(
        &serde_json::from_value(json!({"team": null, "step": "2"})).unwrap(),
    )
    .unwrap();
    let patched = runtime.patch_metadata(&created.id, &patch).await.unwrap();
    assert_eq!(
        patched
            .metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>(),
        [("step".to_owned(), "2".to_owned())]
    );
    // What the server stored is what Berth sent: read the Pod back, not the cache.
    let pod = namespace.pods().get("sandbox-life-1").await.unwrap();
    let state = berth_k8s::pod_state::PodState::from_annotations(pod.metadata.annotations.as_ref())
        .unwrap();
    assert_eq!(state.expires_at, Some(later));
    assert_eq!(state.metadata.get("step").map(String::as_str), Some("2"));
    let spec = pod.spec.unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));

    let endpoint = runtime.endpoint(&created.id, 8080).await.unwrap();
    assert!(endpoint.endpoint.ends_with(":8080"), "{endpoint:?}");
    let pod_ip = pod.status.unwrap().pod_ip.unwrap();
    assert_eq!(endpoint.endpoint, format!("{pod_ip}:8080"));
    assert_eq!(
        runtime
            .pause(&created.id)
            .await
            .unwrap_err()
            .code()
            .as_str(),
        "SANDBOX::UNSUPPORTED_FEATURE"
    );

    runtime.delete(&created.id).await.unwrap();
    let seen = until_gone(&runtime, &created.id).await;
    assert!(
        seen.iter().all(|s| *s == SandboxState::Stopping),
        "between delete and gone, only Stopping: {seen:?}"
    );
    assert!(matches!(
        runtime.delete(&created.id).await,
        Err(RuntimeError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_fails_at_once_and_leaves_nothing() {
    let (namespace, runtime) = TestNamespace::new("image").await;
    let started = std::time::Instant::now();
    let err = runtime
        .create(request(
            "image-1",
            json!({"image": {"uri": "berth-test/absent:none"}}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code().as_str(), "SANDBOX::IMAGE_NOT_FOUND", "{err}");
    assert!(err.to_string().contains("ErrImageNeverPull"), "{err}");
    // Reported from the watch, well before the 60 s start deadline.
    println!("missing image answered after {:?}", started.elapsed());
    // Deleted with grace 0: gone from the API server (not only Terminating) soon.
    for _ in 0..300 {
        let pods = namespace.pods().list(&Default::default()).await.unwrap();
        if pods.items.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the Pod of a failed create is still there after 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_runtime_passes_the_conformance_suite() {
    let host_root = PathBuf::from(format!("/tmp/berth-k8s-host-{}", std::process::id()));
    std::fs::create_dir(&host_root).unwrap();
    let root = berth_core::model::HostPath::new(host_root.to_str().unwrap()).unwrap();
    let allowed = root.clone();
    let (namespace, runtime) = TestNamespace::with("conf", move |c| {
        c.allowed_host_paths = vec![allowed];
    })
    .await;
    let pool = VolumePool::new(&namespace, 8).await;
    let runtime: std::sync::Arc<dyn Runtime> = std::sync::Arc::new(runtime);
    let target = berth_core::testkit::conformance::ConformanceTarget {
        runtime: runtime.clone(),
        image: IMAGE.into(),
        entrypoint: vec!["sleep".into(), "3600".into()],
        missing_image: "berth-test/missing:latest".into(),
        host_root: Some(root),
        endpoint_port: 8080,
        run_id: format!("k{}", std::process::id()),
        after_delete: berth_core::testkit::conformance::AfterDelete::StoppingThenGone {
            within: Duration::from_secs(120),
            sleep: std::sync::Arc::new(|d| Box::pin(tokio::time::sleep(d))),
        },
    };
    let report = berth_core::testkit::conformance::run(&target).await;
    drop(target);
    drop(runtime);
    drop(pool);
    drop(namespace);
    let _ = std::fs::remove_dir_all(&host_root);
    report.assert_passed();
}

/// Two replicas on one namespace: exactly one leads the reaping; when it goes, the other takes
/// over once the hold runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_replica_reaps_and_the_other_takes_over() {
    let (namespace, first) =
        TestNamespace::with("lease", |c| c.lease_identity = "one".into()).await;
    let mut config = KubernetesConfig::new(&namespace.name);
    config.kubeconfig = Some(kubeconfig());
    config.lease_identity = "two".into();
    let second = KubernetesRuntime::connect(config).await.unwrap();
    let mut leaders = Vec::new();
    for _ in 0..100 {
        leaders = vec![first.leads_reaping().await, second.leads_reaping().await];
        if leaders.iter().any(|l| *l) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        leaders.iter().filter(|l| **l).count(),
        1,
        "leaders: {leaders:?}"
    );
    // Over a few renewal rounds the answer stays: one leader.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = [first.leads_reaping().await, second.leads_reaping().await];
        assert_eq!(now.iter().filter(|l| **l).count(), 1, "leaders: {now:?}");
    }
    let (leader, follower) = if first.leads_reaping().await {
        (first, second)
    } else {
        (second, first)
    };
    drop(leader);
    let started = std::time::Instant::now();
    while !follower.leads_reaping().await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the follower never took over"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("took over after {:?}", started.elapsed());
}

/// What a server that crashed mid-create leaves (a Pod past its create deadline that never
/// ran, a Secret that never got its owner) is swept; a live sandbox is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_crashed_create_are_swept() {
    let (namespace, runtime) =
        TestNamespace::with("sweep", |c| c.start_timeout = Duration::from_secs(2)).await;
    let live = runtime
        .create(request("sweep-live", json!({})))
        .await
        .unwrap();

    // As a crashed server left it: objects rendered and posted, nobody waiting on them.
    let mut config = KubernetesConfig::new(&namespace.name);
    config.image_pull_policy = Some("Never".into());
    let crashed = request(
        "sweep-crashed",
        json!({"image": {"uri": "berth-test/absent:none", "auth": {"username": "u", "password": "p"}}}),
    );
    let plan = berth_k8s::render::PodPlan {
        create_deadline: Some(chrono::Utc::now() - chrono::TimeDelta::try_minutes(5).unwrap()),
        ..Default::default()
    };
    let objects = berth_k8s::render::render(&config, &crashed, &plan).unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(namespace.client.clone(), &namespace.name);
    secrets
        .create(&PostParams::default(), &objects.secrets[0])
        .await
        .unwrap();
    namespace
        .pods()
        .create(&PostParams::default(), &objects.pod)
        .await
        .unwrap();
    // The kubelet reports the missing image; the Secret ages past the grace.
    for _ in 0..150 {
        if runtime
            .get(&crashed.id)
            .await
            .is_ok_and(|r| r.status.state == SandboxState::Failed)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let report = runtime.sweep_now().await.unwrap();
    assert_eq!(report.stuck_pods, ["sandbox-sweep-crashed"], "{report:?}");
    assert_eq!(
        report.orphan_secrets,
        [objects.secrets[0].metadata.name.clone().unwrap()],
        "{report:?}"
    );
    assert_eq!(
        runtime.get(&live.id).await.unwrap().status.state,
        SandboxState::Running
    );
    // A second sweep finds nothing more.
    let again = runtime.sweep_now().await.unwrap();
    assert!(again.orphan_secrets.is_empty(), "{again:?}");
}

/// The per-session workflow on real Pods and a real kubelet: session 1 writes on a claim's
/// subPath and goes; session 2 on the same subPath reads it; session 3 on another subPath does
/// not see it; a read-only mount cannot be written; a symlink planted by one sandbox in the
/// shared claim gives a later sandbox asking for it as its subPath no host access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_find_their_files_again_on_a_shared_claim() {
    let (namespace, runtime) = TestNamespace::new("sessions").await;
    let _pool = VolumePool::new(&namespace, 2).await;
    let claim = |sub_path: &str, read_only: bool| {
        json!([{"name": "work", "pvc": {"claimName": "sessions"}, "mountPath": "/workspace",
                "subPath": sub_path, "readOnly": read_only}])
    };
    let one = runtime
        .create(shell(
            "session-1",
            "echo from-session-1 > /workspace/x",
            claim("uid-1/session-7", false),
        ))
        .await
        .unwrap();
    // Where the claim landed on the host: its PersistentVolume's hostPath.
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(namespace.client.clone(), &namespace.name);
    let volume_name = claims
        .get("sessions")
        .await
        .unwrap()
        .spec
        .unwrap()
        .volume_name
        .unwrap();
    let volume = Api::<PersistentVolume>::all(namespace.client.clone())
        .get(&volume_name)
        .await
        .unwrap();
    let root = PathBuf::from(volume.spec.unwrap().host_path.unwrap().path);
    assert_eq!(
        host_file(&root.join("uid-1/session-7/x")).await.trim(),
        "from-session-1"
    );
    runtime.delete(&one.id).await.unwrap();

    runtime
        .create(shell(
            "session-2",
            "cat /workspace/x > /workspace/seen",
            claim("uid-1/session-7", false),
        ))
        .await
        .unwrap();
    assert_eq!(
        host_file(&root.join("uid-1/session-7/seen")).await.trim(),
        "from-session-1",
        "session 2 must read what session 1 wrote"
    );
    runtime
        .create(shell(
            "session-3",
            "ls -a /workspace > /workspace/listing",
            claim("uid-1/session-8", false),
        ))
        .await
        .unwrap();
    let listing = host_file(&root.join("uid-1/session-8/listing")).await;
    assert!(
        !listing.contains('x') || !listing.lines().any(|l| l == "x"),
        "{listing}"
    );

    // Read-only: the write fails inside, and the result lands on a writable neighbour.
    let volumes = json!([
        {"name": "work", "pvc": {"claimName": "sessions"}, "mountPath": "/workspace", "subPath": "uid-1/session-7", "readOnly": true},
        {"name": "out", "pvc": {"claimName": "sessions"}, "mountPath": "/out", "subPath": "uid-1/results"},
    ]);
    runtime
        .create(shell(
            "session-ro",
            "if touch /workspace/y 2>/dev/null; then echo writable; else echo readonly; fi > /out/ro",
            volumes,
        ))
        .await
        .unwrap();
    assert_eq!(
        host_file(&root.join("uid-1/results/ro")).await.trim(),
        "readonly"
    );
    assert!(!root.join("uid-1/session-7/y").exists());

    // A planted link to / in the shared claim, asked for as a subPath by a later sandbox.
    runtime
        .create(shell(
            "planter",
            "ln -s / /workspace/evil",
            claim("shared", false),
        ))
        .await
        .unwrap();
    for _ in 0..100 {
        if root.join("shared/evil").symlink_metadata().is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let attempt = runtime
        .create(shell(
            "victim",
            "ls / > /workspace/root-listing",
            claim("shared/evil", false),
        ))
        .await;
    match attempt {
        Err(e) => {
            println!("a subPath through a planted link to /: {} {e}", e.code());
            assert_eq!(e.code().as_str(), "VOLUME::SUB_PATH_SYMLINK", "{e}");
            assert!(e.to_string().contains("volumes[0].subPath"), "{e}");
        }
        Ok(record) => panic!(
            "a sandbox got a subPath through a link to / (escape!): {:?}",
            record.status
        ),
    }
    assert!(
        !std::path::Path::new("/root-listing").exists(),
        "the victim wrote to the host's /"
    );
    // Every sandbox gone before the volumes and their directories go.
    for id in ["session-2", "session-3", "session-ro", "planter"] {
        let id = SandboxId::new(id).unwrap();
        runtime.delete(&id).await.unwrap();
        until_gone(&runtime, &id).await;
    }
    until_gone(&runtime, &one.id).await;
}
