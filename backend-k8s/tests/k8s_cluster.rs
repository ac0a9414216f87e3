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

use berth_core::model::{MetadataPatch, ReadOnlyMode, SandboxId, SandboxState};
use berth_core::runtime::{ListSelection, Runtime, RuntimeError};
use berth_k8s::config::KubernetesConfig;
use berth_k8s::runtime::KubernetesRuntime;
use kube::api::{Api, PostParams};
use serde_json::json;

use cluster::{
    HostDir, IMAGE, TestNamespace, VolumePool, claim_dir, host_file, kubeconfig, request,
    request_allowing, shell, until_gone,
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
    // Stopping: its Pod may keep its IP a while, but there is nothing to reach.
    let stopping = runtime.endpoint(&created.id, 8080).await;
    assert!(
        matches!(
            stopping,
            Err(RuntimeError::EndpointNotAvailable { .. } | RuntimeError::NotFound { .. })
        ),
        "{stopping:?}"
    );
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
/// ran, a Secret that never got its owner, a claim to be deleted with its sandbox that never got
/// one) is swept; a live sandbox, a claim the user keeps and a claim a Pod uses are not.
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
    // Claims of a create that crashed before its Pod: one to go with its sandbox, one the user
    // keeps, one to go with its sandbox that another Pod uses. A storage class nothing provides
    // keeps them unbound (no test's volume is taken).
    let pvc = |claim: &str, delete: bool| {
        json!({"claimName": claim, "deleteOnSandboxTermination": delete,
               "storageClass": "berth-test-unprovided"})
    };
    let claims_of_crash = request(
        "sweep-claims",
        json!({"volumes": [
            {"name": "gone", "pvc": pvc("sweep-gone", true), "mountPath": "/a"},
            {"name": "kept", "pvc": pvc("sweep-kept", false), "mountPath": "/b"},
            {"name": "used", "pvc": pvc("sweep-used", true), "mountPath": "/c"},
        ]}),
    );
    let plan = berth_k8s::render::PodPlan {
        claims_to_create: ["sweep-gone", "sweep-kept", "sweep-used"]
            .map(str::to_owned)
            .into(),
        ..Default::default()
    };
    let claim_objects = berth_k8s::render::render(&config, &claims_of_crash, &plan).unwrap();
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(namespace.client.clone(), &namespace.name);
    assert_eq!(claim_objects.claims.len(), 3);
    for claim in &claim_objects.claims {
        claims.create(&PostParams::default(), claim).await.unwrap();
    }
    let user_pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "not-a-sandbox"},
        "spec": {
            "containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "Never",
                            "command": ["sleep", "600"]}],
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "sweep-used"}}],
        },
    }))
    .unwrap();
    namespace
        .pods()
        .create(&PostParams::default(), &user_pod)
        .await
        .unwrap();
    // The kubelet reports the missing image; the Secret and the claims age past the grace.
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
    assert_eq!(report.orphan_claims, ["sweep-gone"], "{report:?}");
    assert!(
        claims
            .get_opt("sweep-gone")
            .await
            .unwrap()
            .is_none_or(|c| c.metadata.deletion_timestamp.is_some()),
        "the swept claim is still there"
    );
    for kept in ["sweep-kept", "sweep-used"] {
        let claim = claims.get(kept).await.unwrap();
        assert!(claim.metadata.deletion_timestamp.is_none(), "{kept} swept");
    }
    assert_eq!(
        runtime.get(&live.id).await.unwrap().status.state,
        SandboxState::Running
    );
    // A second sweep finds nothing more.
    let again = runtime.sweep_now().await.unwrap();
    assert!(again.orphan_secrets.is_empty(), "{again:?}");
    assert!(again.orphan_claims.is_empty(), "{again:?}");
}

/// Runs `create` in a task of its own and, until it ends, reads the sandbox `id` as a client
/// would; returns the create's result and the first status whose message `shows` accepts.
async fn create_watching_status(
    runtime: &std::sync::Arc<KubernetesRuntime>,
    request: berth_core::runtime::CreateSandbox,
    shows: impl Fn(&str) -> bool,
) -> (
    Result<berth_core::model::SandboxRecord, RuntimeError>,
    Option<berth_core::model::SandboxStatus>,
) {
    let id = request.id.clone();
    let create = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.create(request).await }
    });
    let mut shown = None;
    while !create.is_finished() {
        if let Ok(record) = runtime.get(&id).await
            && record.status.message.as_deref().is_some_and(&shows)
        {
            shown = Some(record.status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (create.await.unwrap(), shown)
}

/// Waits (bounded) until the Pod `name` is gone from the API server.
async fn until_pod_gone(namespace: &TestNamespace, name: &str) {
    for _ in 0..300 {
        if namespace.pods().get_opt(name).await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("Pod {name} is still there 60 s after its create failed");
}

/// A sandbox no node can take: while its create waits, `get` shows the scheduler's cause; at
/// `kubernetes.start_timeout_seconds` the create fails naming it (not as an outage), and its Pod
/// is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unschedulable_sandbox_fails_at_its_deadline_naming_the_cause() {
    let (namespace, runtime) =
        TestNamespace::with("unsched", |c| c.start_timeout = Duration::from_secs(15)).await;
    let runtime = std::sync::Arc::new(runtime);
    // More CPUs than any node of the test cluster has.
    let asked = request(
        "unsched-1",
        json!({"resourceLimits": {"cpu": "512", "memory": "64Mi"}}),
    );
    let (created, shown) =
        create_watching_status(&runtime, asked, |m| m.contains("Insufficient cpu")).await;
    let status = shown.expect("while the create waited, get never showed the scheduling cause");
    println!("while waiting: {status:?}");
    assert_eq!(status.state, SandboxState::Pending);
    let error = created.unwrap_err();
    println!("at the deadline: {} {error}", error.code());
    assert_eq!(error.code().as_str(), "SANDBOX::START_TIMEOUT", "{error}");
    assert_eq!(error.code().http_status(), 504);
    let message = error.to_string();
    assert!(
        message.contains("Insufficient cpu")
            && message.contains("kubernetes.start_timeout_seconds (15 s)"),
        "{message}"
    );
    until_pod_gone(&namespace, "sandbox-unsched-1").await;
    until_gone(&runtime, &SandboxId::new("unsched-1").unwrap()).await;
}

/// A volume the kubelet cannot mount (a host root that does not exist on the node) leaves the
/// container only "ContainerCreating"; the kubelet's FailedMount event names the cause, shown
/// while the create waits and in its error at the deadline; the Pod is gone after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_that_will_not_mount_is_named_while_waiting_and_at_the_deadline() {
    // Never created: the kubelet's hostPath type check (Directory) fails on it.
    let missing = format!("/tmp/berth-k8s-missing-root-{}", std::process::id());
    let root = berth_core::model::HostPath::new(&missing).unwrap();
    let allowed = root.clone();
    let (namespace, runtime) = TestNamespace::with("mount", move |c| {
        c.start_timeout = Duration::from_secs(20);
        c.allowed_host_paths = vec![allowed];
    })
    .await;
    let runtime = std::sync::Arc::new(runtime);
    let asked = request_allowing(
        "mount-1",
        json!({"volumes": [{"name": "work", "host": {"path": format!("{missing}/work")},
                            "mountPath": "/work"}]}),
        &[root],
    );
    let (created, shown) =
        create_watching_status(&runtime, asked, |m| m.contains("FailedMount")).await;
    let status = shown.expect("while the create waited, get never showed the mount failure");
    println!("while waiting: {status:?}");
    assert_eq!(
        (status.state, status.reason.as_deref()),
        (SandboxState::Pending, Some("FailedMount"))
    );
    assert!(status.message.unwrap().contains(&missing));
    let error = created.unwrap_err();
    println!("at the deadline: {} {error}", error.code());
    assert_eq!(error.code().as_str(), "SANDBOX::START_TIMEOUT", "{error}");
    let message = error.to_string();
    assert!(
        message.contains("FailedMount") && message.contains(&missing),
        "{message}"
    );
    until_pod_gone(&namespace, "sandbox-mount-1").await;
    assert!(!std::path::Path::new(&missing).exists());
}

/// On this API server (1.20) `volumeMounts[].recursiveReadOnly` does not exist: read-only
/// mounts are offered and reported non-recursive, Berth does not send the field, and the server
/// (asked anyway by a dry run) drops it silently, as the decision assumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mounts_are_non_recursive_where_the_server_lacks_recursive_read_only() {
    let host = HostDir::new("rro");
    std::fs::create_dir(host.path.join("data")).unwrap();
    let root = host.root();
    let allowed = root.clone();
    let (namespace, runtime) = TestNamespace::with("rro", move |c| {
        c.allowed_host_paths = vec![allowed];
    })
    .await;
    let offered = runtime.capabilities();
    for (kind, support) in &offered.volume_backends {
        assert_eq!(
            (support.read_only, support.read_only_sub_path),
            (ReadOnlyMode::NonRecursive, ReadOnlyMode::NonRecursive),
            "{kind:?}"
        );
    }
    let why = &offered.details["readOnly"];
    assert!(
        why.starts_with("non-recursive") && why.contains("(1.20)"),
        "{why}"
    );
    assert_eq!(
        berth_k8s::runtime::probe_recursive_read_only(&namespace.client, &namespace.name).await,
        Ok(false),
        "a 1.20 API server keeps recursiveReadOnly?"
    );
    assert!(
        namespace
            .pods()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "the dry run stored a Pod"
    );

    let asked = request_allowing(
        "rro-1",
        json!({"volumes": [{"name": "data", "host": {"path": format!("{root}/data")},
                            "mountPath": "/data", "readOnly": true}]}),
        &[root],
    );
    let rendered = runtime.render(&asked).await.unwrap();
    assert!(
        !rendered
            .runtime_object
            .to_string()
            .contains("recursiveReadOnly"),
        "Berth would send recursiveReadOnly: {}",
        rendered.runtime_object
    );
    let created = runtime.create(asked).await.unwrap();
    assert_eq!(
        (
            created.volumes[0].read_only,
            created.volumes[0].read_only_mode
        ),
        (true, ReadOnlyMode::NonRecursive)
    );
    let pod = namespace.pods().get("sandbox-rro-1").await.unwrap();
    let mounts: Vec<_> = pod
        .spec
        .unwrap()
        .containers
        .into_iter()
        .flat_map(|c| c.volume_mounts.unwrap_or_default())
        .filter(|m| m.mount_path == "/data")
        .collect();
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        (
            mounts[0].read_only,
            mounts[0].recursive_read_only.as_deref()
        ),
        (Some(true), None)
    );
    runtime.delete(&created.id).await.unwrap();
    until_gone(&runtime, &created.id).await;
}

/// The per-session workflow on real Pods and a real kubelet: session 1 writes on a claim's
/// subPath and goes; session 2 on the same subPath reads it; session 3 on another subPath does
/// not see it; a read-only mount cannot be written; a symlink planted by one sandbox in the
/// shared claim gives a later sandbox asking for it as its subPath no host access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_find_their_files_again_on_a_shared_claim() {
    let (namespace, runtime) = TestNamespace::new("sessions").await;
    let _pool = VolumePool::reserved(&namespace, &["sessions"]).await;
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
    let root = claim_dir(&namespace, "sessions").await;
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

/// The in-sandbox agent on a real Pod (`execd_image`): the init container copies it in, the
/// sandbox's entrypoint still runs (wrapped by bootstrap.sh), and the agent answers `/ping` on
/// port 44772 at the address `endpoint` gives — reachable from the host, as from the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_is_injected_and_answers_on_its_port() {
    let (namespace, runtime) = TestNamespace::with("execd", |c| {
        c.execd_image = Some("berth-test/execd:latest".into());
    })
    .await;
    let created = runtime
        .create(shell(
            "agent-1",
            "echo entrypoint-ran > /tmp/ran",
            serde_json::json!([]),
        ))
        .await
        .unwrap();
    assert_eq!(created.status.state, SandboxState::Running);
    let endpoint = runtime.endpoint(&created.id, 44772).await.unwrap();
    let pod = namespace
        .pods()
        .get(&format!("sandbox-{}", created.id))
        .await
        .unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(
        spec.init_containers.unwrap_or_default()[0].name,
        "berth-execd"
    );
    assert_eq!(
        spec.containers[0].command.as_ref().unwrap()[0],
        "/opt/opensandbox/bootstrap.sh"
    );
    // The agent starts in the background: ask (bounded) until it answers.
    let mut answer = String::new();
    for _ in 0..100 {
        if let Ok(mut stream) = std::net::TcpStream::connect(&endpoint.endpoint) {
            use std::io::{Read, Write};
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request = format!(
                "GET /ping HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                endpoint.endpoint
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                answer.clear();
                let _ = stream.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.1 200") {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the agent at {} never answered /ping: {answer:?}",
        endpoint.endpoint
    );
    runtime.delete(&created.id).await.unwrap();
    until_gone(&runtime, &created.id).await;
}

/// The agent's init container cannot run (its image is missing) or finds nothing to copy (an
/// image without `/execd`): the create answers at once with the codes Docker uses, on the
/// setting, and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_agent_image_fails_at_once_with_its_code() {
    for (test, image, code) in [
        (
            "execd-missing",
            "berth-test/missing-execd:latest",
            "EXECD::IMAGE_NOT_FOUND",
        ),
        ("execd-empty", IMAGE, "EXECD::FILES_MISSING"),
    ] {
        let (namespace, runtime) = TestNamespace::with(test, |c| {
            c.execd_image = Some(image.into());
        })
        .await;
        let error = runtime
            .create(request("agent-bad", serde_json::json!({})))
            .await
            .unwrap_err();
        let body = error.to_error_response();
        assert_eq!(body.code, code, "{image}: {body:?}");
        assert!(body.message.contains("runtime.execd_image"), "{body:?}");
        for _ in 0..300 {
            if namespace
                .pods()
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            namespace
                .pods()
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .is_empty(),
            "the Pod of a failed create is still there"
        );
    }
}
