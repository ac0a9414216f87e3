//! The objects Berth makes for a sandbox besides its Pod, on a real API server, scheduler,
//! kubelet and garbage collector (`cargo xtask k8s-env up`; the kubeconfig is
//! `XTASK_K8S_KUBECONFIG`): claims it creates go with the last Pod that mounts them when asked
//! to, registry Secrets are owned by the Pod, the operator's Pod template is merged into a
//! running Pod, and host volumes stay inside the allowlist. Each test works in a namespace of its
//! own, deleted at the end (also when the test panics); the tests fail, never skip, when the
//! cluster cannot be reached.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod cluster;

use std::time::Duration;

use berth_core::model::{HostPath, SandboxSpec, SandboxState};
use berth_core::runtime::{Runtime, RuntimeError};
use berth_core::validate::{StoragePolicy, Violation};
use berth_k8s::pod_state::STATE_ANNOTATION;
use berth_k8s::render::{
    LABEL_DELETE_WITH_SANDBOXES, LABEL_MADE_FOR, LABEL_MANAGED_BY, MANAGED_BY, pod_name,
    registry_secret_name,
};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use cluster::{
    HostDir, IMAGE, TestNamespace, VolumePool, claim_dir, host_file, request, request_allowing,
    until_gone,
};

fn claims(namespace: &TestNamespace) -> Api<PersistentVolumeClaim> {
    Api::namespaced(namespace.client.clone(), &namespace.name)
}

fn secrets(namespace: &TestNamespace) -> Api<Secret> {
    Api::namespaced(namespace.client.clone(), &namespace.name)
}

/// The owners of an object as (kind, name, uid), sorted.
fn owners(meta: &ObjectMeta) -> Vec<(String, String, String)> {
    let mut owners: Vec<_> = meta
        .owner_references
        .iter()
        .flatten()
        .map(|o| (o.kind.clone(), o.name.clone(), o.uid.clone()))
        .collect();
    owners.sort();
    owners
}

/// The owner entry of the Pod named `name`, as the API server has it now.
async fn pod_owner(namespace: &TestNamespace, name: &str) -> (String, String, String) {
    let pod = namespace.pods().get(name).await.unwrap();
    ("Pod".to_owned(), name.to_owned(), pod.metadata.uid.unwrap())
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// The violations of a refused create (anything else fails the test).
fn violations(result: Result<berth_core::model::SandboxRecord, RuntimeError>) -> Vec<Violation> {
    match result {
        Err(RuntimeError::Rejected(v)) => v.as_slice().to_vec(),
        Err(other) => panic!("expected a refusal naming the field, got {other:?}"),
        Ok(record) => panic!("expected a refusal, the sandbox was made: {record:?}"),
    }
}

/// Waits (bounded) until `name` is gone from the API server.
async fn until_deleted<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for _ in 0..600 {
        if api.get_opt(name).await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{name} is still there after 120 s");
}

/// No Pod, and no claim or Secret of Berth's, in the namespace. Creates are synchronous API
/// calls, so anything a refused create made would be listed here.
async fn assert_nothing_made(namespace: &TestNamespace) {
    let berths = ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let pods = namespace.pods().list(&ListParams::default()).await.unwrap();
    let claims = claims(namespace).list(&berths).await.unwrap();
    let secrets = secrets(namespace).list(&berths).await.unwrap();
    let names = |items: Vec<ObjectMeta>| -> Vec<String> {
        items.into_iter().filter_map(|m| m.name).collect()
    };
    assert_eq!(
        (
            names(pods.items.into_iter().map(|p| p.metadata).collect()),
            names(claims.items.into_iter().map(|c| c.metadata).collect()),
            names(secrets.items.into_iter().map(|s| s.metadata).collect()),
        ),
        (Vec::new(), Vec::new(), Vec::new()),
        "(pods, claims, secrets) left by a refused create"
    );
}

/// A claim Berth creates with `deleteOnSandboxTermination` carries Berth's labels and is owned
/// by the Pod, and the garbage collector removes it once the Pod is gone; one created without
/// it has no owner and outlives the sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_claim_goes_with_its_sandbox_only_when_asked() {
    let (namespace, runtime) = TestNamespace::new("claim-gc").await;
    let _pool = VolumePool::reserved(&namespace, &["scratch", "keep"]).await;
    let created = runtime
        .create(request(
            "gc-1",
            json!({"volumes": [
                {"name": "scratch", "mountPath": "/scratch", "pvc": {
                    "claimName": "scratch", "createIfNotExists": true,
                    "deleteOnSandboxTermination": true,
                    "storage": "512Mi", "accessModes": ["ReadWriteOnce"]}},
                {"name": "keep", "mountPath": "/keep", "pvc": {
                    "claimName": "keep", "createIfNotExists": true,
                    "storage": "256Mi", "accessModes": ["ReadWriteMany"]}},
            ]}),
        ))
        .await
        .unwrap();
    assert_eq!(created.status.state, SandboxState::Running);
    let owner = pod_owner(&namespace, "sandbox-gc-1").await;
    let claims = claims(&namespace);

    let scratch = claims.get("scratch").await.unwrap();
    assert_eq!(label(&scratch.metadata, LABEL_MANAGED_BY), Some(MANAGED_BY));
    assert_eq!(label(&scratch.metadata, LABEL_MADE_FOR), Some("gc-1"));
    assert_eq!(
        label(&scratch.metadata, LABEL_DELETE_WITH_SANDBOXES),
        Some("true")
    );
    assert_eq!(owners(&scratch.metadata), std::slice::from_ref(&owner));
    let spec = scratch.spec.unwrap();
    assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
    assert_eq!(
        spec.resources.unwrap().requests.unwrap()["storage"].0,
        "512Mi"
    );

    let keep = claims.get("keep").await.unwrap();
    assert_eq!(label(&keep.metadata, LABEL_MANAGED_BY), Some(MANAGED_BY));
    assert_eq!(label(&keep.metadata, LABEL_DELETE_WITH_SANDBOXES), None);
    assert!(owners(&keep.metadata).is_empty(), "{:?}", keep.metadata);
    let spec = keep.spec.unwrap();
    assert_eq!(spec.access_modes.unwrap(), ["ReadWriteMany"]);
    assert_eq!(
        spec.resources.unwrap().requests.unwrap()["storage"].0,
        "256Mi"
    );

    runtime.delete(&created.id).await.unwrap();
    until_gone(&runtime, &created.id).await;
    until_deleted(&claims, "scratch").await;
    // The Pod's dependents have been collected; the claim nobody asked to delete is untouched.
    let keep = claims.get("keep").await.unwrap();
    assert!(keep.metadata.deletion_timestamp.is_none(), "{keep:?}");
    assert!(owners(&keep.metadata).is_empty());
}

/// Two sandboxes on one claim Berth created for deletion with its sandboxes: both Pods own it,
/// and it goes with the last of them, not the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_created_claim_goes_with_the_last_of_its_sandboxes() {
    let (namespace, runtime) = TestNamespace::new("claim-shared").await;
    let _pool = VolumePool::reserved(&namespace, &["shared"]).await;
    let body = json!({"volumes": [{"name": "shared", "mountPath": "/shared", "pvc": {
        "claimName": "shared", "createIfNotExists": true, "deleteOnSandboxTermination": true,
        "storage": "256Mi", "accessModes": ["ReadWriteMany"]}}]});
    let first = runtime
        .create(request("shared-1", body.clone()))
        .await
        .unwrap();
    let second = runtime.create(request("shared-2", body)).await.unwrap();
    let first_owner = pod_owner(&namespace, "sandbox-shared-1").await;
    let second_owner = pod_owner(&namespace, "sandbox-shared-2").await;
    let claims = claims(&namespace);
    let claim = claims.get("shared").await.unwrap();
    assert_eq!(owners(&claim.metadata), [first_owner, second_owner.clone()]);
    // Made by the first create; the second found it and only joined its owners.
    assert_eq!(label(&claim.metadata, LABEL_MADE_FOR), Some("shared-1"));

    runtime.delete(&first.id).await.unwrap();
    until_gone(&runtime, &first.id).await;
    // The collector drops the owner that is gone and keeps the claim for the other: seen as
    // the owner list shrinking to the second Pod while the claim stays.
    let mut last = Vec::new();
    for _ in 0..600 {
        let claim = claims
            .get_opt("shared")
            .await
            .unwrap()
            .expect("the claim went with the first of two sandboxes mounting it");
        assert!(
            claim.metadata.deletion_timestamp.is_none(),
            "the claim is being deleted while a sandbox still mounts it: {:?}",
            claim.metadata
        );
        last = owners(&claim.metadata);
        if last == [second_owner.clone()] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        last,
        [second_owner],
        "the collector never dropped the gone Pod"
    );
    assert_eq!(
        runtime.get(&second.id).await.unwrap().status.state,
        SandboxState::Running
    );

    runtime.delete(&second.id).await.unwrap();
    until_gone(&runtime, &second.id).await;
    until_deleted(&claims, "shared").await;
}

/// A claim that does not exist, with `createIfNotExists: false`, is refused on its field before
/// anything is made: not the claim another volume would have created, not the registry Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_claim_is_refused_and_nothing_is_made() {
    let (namespace, runtime) = TestNamespace::new("claim-missing").await;
    let refused = runtime
        .create(request(
            "missing-1",
            json!({
                "image": {"uri": IMAGE, "auth": {"username": "robot", "password": "pw"}},
                "volumes": [
                    {"name": "fresh", "mountPath": "/fresh", "pvc": {"claimName": "fresh"}},
                    {"name": "absent", "mountPath": "/absent",
                     "pvc": {"claimName": "absent", "createIfNotExists": false}},
                ],
            }),
        ))
        .await;
    let found = violations(refused);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].field, "volumes[1].pvc.claimName", "{found:?}");
    assert_eq!(found[0].code.as_str(), "VOLUME::PVC_NOT_FOUND", "{found:?}");
    assert!(found[0].message.contains("\"absent\""), "{found:?}");
    assert_nothing_made(&namespace).await;
    assert!(claims(&namespace).get_opt("fresh").await.unwrap().is_none());
}

/// Removes the test's own finalizer from a claim on drop (also on panic), so the claim and its
/// namespace can go.
struct HeldClaim {
    api: Api<PersistentVolumeClaim>,
    name: String,
}

const HOLD: &str = "berth.test/hold";

impl Drop for HeldClaim {
    fn drop(&mut self) {
        let (api, name) = (self.api.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    let Ok(Some(claim)) = api.get_opt(&name).await else {
                        return;
                    };
                    let kept: Vec<String> = claim
                        .metadata
                        .finalizers
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|f| f != HOLD)
                        .collect();
                    let patch = json!({"metadata": {"finalizers": kept}});
                    let _ = api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                });
        })
        .join();
    }
}

/// A claim stuck terminating (held by a finalizer) is a conflict at once: the create neither
/// waits for a Pod that could never start nor makes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_being_deleted_is_refused_at_once() {
    let (namespace, runtime) = TestNamespace::new("claim-terminating").await;
    let claims = claims(&namespace);
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "going", "labels": {"berth.test": "1"}, "finalizers": [HOLD]},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    claims.create(&PostParams::default(), &claim).await.unwrap();
    let _held = HeldClaim {
        api: claims.clone(),
        name: "going".into(),
    };
    claims
        .delete("going", &DeleteParams::default())
        .await
        .unwrap();
    let before = claims.get("going").await.unwrap();
    assert!(before.metadata.deletion_timestamp.is_some(), "{before:?}");

    let started = std::time::Instant::now();
    let result = runtime
        .create(request(
            "late-1",
            json!({"volumes": [{"name": "data", "mountPath": "/data", "pvc": {"claimName": "going"}}]}),
        ))
        .await;
    println!("a terminating claim answered after {:?}", started.elapsed());
    match result {
        Err(RuntimeError::Rejected(violations)) => {
            let all = violations.as_slice();
            assert_eq!(all.len(), 1, "{all:?}");
            assert_eq!(all[0].field, "volumes[0].pvc.claimName");
            assert_eq!(all[0].code.as_str(), "VOLUME::PVC_BEING_DELETED");
            assert_eq!(all[0].code.http_status(), 409);
            for part in ["\"going\"", "being deleted"] {
                assert!(
                    all[0].message.contains(part),
                    "{part:?} missing from: {}",
                    all[0].message
                );
            }
        }
        other => panic!("expected a 409 refusal at once, got {other:?}"),
    }
    assert_nothing_made(&namespace).await;
    // Left as it was: still terminating, not recreated.
    let after = claims.get("going").await.unwrap();
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert!(after.metadata.deletion_timestamp.is_some());
}

/// Registry credentials go into a dockerconfigjson Secret the Pod owns and names in
/// `imagePullSecrets`; they appear nowhere else (not in the Pod, its annotations or the record),
/// and the Secret goes with the Pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_credentials_live_in_a_secret_the_pod_owns() {
    const PASSWORD: &str = "berth-test-registry-password-4d1f";
    let (namespace, runtime) = TestNamespace::new("registry").await;
    let created = runtime
        .create(request(
            "reg-1",
            json!({"image": {"uri": IMAGE, "auth": {"username": "robot", "password": PASSWORD}}}),
        ))
        .await
        .unwrap();
    assert_eq!(created.status.state, SandboxState::Running);
    let pod = namespace.pods().get(&pod_name(&created.id)).await.unwrap();
    let name = registry_secret_name(&created.id);
    let pull_secrets: Vec<String> = pod
        .spec
        .as_ref()
        .unwrap()
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(pull_secrets, std::slice::from_ref(&name));

    let secrets = secrets(&namespace);
    let secret = secrets.get(&name).await.unwrap();
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    assert_eq!(label(&secret.metadata, LABEL_MANAGED_BY), Some(MANAGED_BY));
    assert_eq!(
        owners(&secret.metadata),
        [pod_owner(&namespace, &pod_name(&created.id)).await]
    );
    let config: serde_json::Value =
        serde_json::from_slice(&secret.data.unwrap()[".dockerconfigjson"].0).unwrap();
    assert_eq!(
        config["auths"]["docker.io"],
        json!({"username": "robot", "password": PASSWORD})
    );

    let annotations = serde_json::to_string(&pod.metadata.annotations).unwrap();
    assert!(annotations.contains(STATE_ANNOTATION), "{annotations}");
    assert!(!annotations.contains(PASSWORD), "{annotations}");
    let whole_pod = serde_json::to_string(&pod).unwrap();
    assert!(
        !whole_pod.contains(PASSWORD),
        "the Pod carries the password"
    );
    let record = format!("{created:?} {:?}", runtime.get(&created.id).await.unwrap());
    assert!(!record.contains(PASSWORD), "{record}");

    runtime.delete(&created.id).await.unwrap();
    until_gone(&runtime, &created.id).await;
    until_deleted(&secrets, &name).await;
}

/// The operator's template on a real Pod: its labels, annotations, toleration, volume and mount
/// and env hold, Berth's volume and the request's env are added, and the running container sees
/// all of it. A request volume clashing with the template's by name or mount path is refused,
/// naming both, before anything is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_template_is_merged_into_a_running_pod() {
    let template: Pod = serde_json::from_value(json!({
        "metadata": {
            "labels": {"tier": "sandbox"},
            "annotations": {"example.com/owner": "platform-team"},
        },
        "spec": {
            "tolerations": [{"key": "example.com/dedicated", "operator": "Equal",
                             "value": "sandboxes", "effect": "NoSchedule"}],
            "volumes": [{"name": "cache", "emptyDir": {}}],
            "containers": [{
                "name": "main",
                "env": [{"name": "TEMPLATE_GREETING", "value": "from-template"}],
                "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
            }],
        },
    }))
    .unwrap();
    let (namespace, runtime) =
        TestNamespace::with("template", move |c| c.pod_template = Some(template)).await;
    let _pool = VolumePool::reserved(&namespace, &["out"]).await;

    let refused = runtime
        .create(request(
            "clash-1",
            json!({"volumes": [
                {"name": "cache", "mountPath": "/data", "pvc": {"claimName": "out"}},
                {"name": "other", "mountPath": "/cache", "pvc": {"claimName": "out"}},
            ]}),
        ))
        .await;
    let found = violations(refused);
    let fields: Vec<(&str, &str)> = found
        .iter()
        .map(|v| (v.field.as_str(), v.code.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("volumes[0].name", "VOLUME::DUPLICATE_NAME"),
            ("volumes[1].mountPath", "VOLUME::DUPLICATE_MOUNT_PATH"),
        ]
    );
    for v in &found {
        assert!(v.message.contains("pod template"), "{v:?}");
    }
    assert!(found[0].message.contains("\"cache\""), "{:?}", found[0]);
    assert!(
        found[1].message.contains("/cache") && found[1].message.contains("\"cache\""),
        "the template's volume and the clashing path: {:?}",
        found[1]
    );
    assert_nothing_made(&namespace).await;

    let script = "echo \"$TEMPLATE_GREETING $REQUEST_GREETING\" > /out/env; \
                  echo kept > /cache/probe && cat /cache/probe > /out/cache; sleep 600";
    let created = runtime
        .create(request(
            "tmpl-1",
            json!({
                "entrypoint": ["sh", "-c", script],
                "env": {"REQUEST_GREETING": "from-request"},
                "volumes": [{"name": "out", "mountPath": "/out", "pvc": {"claimName": "out"}}],
            }),
        ))
        .await
        .unwrap();
    assert_eq!(created.status.state, SandboxState::Running);

    let pod = namespace.pods().get(&pod_name(&created.id)).await.unwrap();
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels["tier"], "sandbox");
    assert_eq!(labels["opensandbox.io/id"], "tmpl-1");
    assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY);
    let annotations = pod.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["example.com/owner"], "platform-team");
    assert!(
        annotations.contains_key(STATE_ANNOTATION),
        "{annotations:?}"
    );
    let spec = pod.spec.unwrap();
    assert!(
        spec.tolerations.iter().flatten().any(|t| {
            t.key.as_deref() == Some("example.com/dedicated")
                && t.value.as_deref() == Some("sandboxes")
                && t.effect.as_deref() == Some("NoSchedule")
        }),
        "{:?}",
        spec.tolerations
    );
    let volumes: Vec<(&str, bool, Option<&str>)> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| {
            (
                v.name.as_str(),
                v.empty_dir.is_some(),
                v.persistent_volume_claim
                    .as_ref()
                    .map(|c| c.claim_name.as_str()),
            )
        })
        .collect();
    assert_eq!(
        volumes,
        [("cache", true, None), ("out", false, Some("out"))],
        "the template's volume first, Berth's appended"
    );
    assert_eq!(spec.containers.len(), 1);
    let container = &spec.containers[0];
    assert_eq!(container.name, "sandbox");
    let mounts: Vec<(&str, &str)> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    assert_eq!(mounts, [("cache", "/cache"), ("out", "/out")]);
    let env: Vec<(&str, Option<&str>)> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    for wanted in [
        ("TEMPLATE_GREETING", Some("from-template")),
        ("REQUEST_GREETING", Some("from-request")),
    ] {
        assert!(env.contains(&wanted), "{wanted:?} not in {env:?}");
    }

    // What the running container sees.
    let out = claim_dir(&namespace, "out").await;
    assert_eq!(
        host_file(&out.join("env")).await.trim(),
        "from-template from-request"
    );
    assert_eq!(host_file(&out.join("cache")).await.trim(), "kept");

    runtime.delete(&created.id).await.unwrap();
    until_gone(&runtime, &created.id).await;
}

/// Host volumes on real Pods: a path below the allowed root is mounted (the sandbox reads a
/// file prepared on the host and copies it to a writable host directory), a read-only one
/// cannot be written, and a path outside the allowlist is refused on its field with no Pod made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_volumes_stay_inside_the_allowlist() {
    let host = HostDir::new("allowlist");
    let root = host.root();
    std::fs::create_dir(host.path.join("sub")).unwrap();
    std::fs::create_dir(host.path.join("sub/dir")).unwrap();
    std::fs::create_dir(host.path.join("out")).unwrap();
    std::fs::write(
        host.path.join("sub/dir/input.txt"),
        "prepared-on-the-host\n",
    )
    .unwrap();
    let allowed = root.clone();
    let (namespace, runtime) = TestNamespace::with("hostpath", move |c| {
        c.allowed_host_paths = vec![allowed];
    })
    .await;
    let input = format!("{}/sub/dir", host.path.display());
    let output = format!("{}/out", host.path.display());

    let script = "cat /in/input.txt > /out/copied; \
                  if touch /in/written 2>/dev/null; then echo writable; else echo readonly; fi > /out/ro; \
                  sleep 600";
    let created = runtime
        .create(request_allowing(
            "host-1",
            json!({
                "entrypoint": ["sh", "-c", script],
                "volumes": [
                    {"name": "in", "host": {"path": input}, "mountPath": "/in", "readOnly": true},
                    {"name": "out", "host": {"path": output}, "mountPath": "/out"},
                ],
            }),
            std::slice::from_ref(&root),
        ))
        .await
        .unwrap();
    assert_eq!(created.status.state, SandboxState::Running);
    assert_eq!(
        host_file(&host.path.join("out/copied")).await.trim(),
        "prepared-on-the-host"
    );
    assert_eq!(
        host_file(&host.path.join("out/ro")).await.trim(),
        "readonly"
    );
    assert!(!host.path.join("sub/dir/written").exists());
    // The allowed root is the hostPath, the rest of the path the kubelet's subPath.
    let pod = namespace.pods().get(&pod_name(&created.id)).await.unwrap();
    let spec = pod.spec.unwrap();
    let in_volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "in")
        .unwrap();
    assert_eq!(
        in_volume.host_path.as_ref().unwrap().path,
        host.path.to_str().unwrap()
    );
    let in_mount = spec.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "in")
        .unwrap();
    assert_eq!(
        (in_mount.sub_path.as_deref(), in_mount.read_only),
        (Some("sub/dir"), Some(true))
    );

    // A sibling whose name merely starts with the root's: outside it, by path components.
    let outside = format!("{}-sibling", host.path.display());
    let body = json!({"volumes": [
        {"name": "ok", "host": {"path": input}, "mountPath": "/ok", "readOnly": true},
        {"name": "escape", "host": {"path": outside}, "mountPath": "/escape"},
    ]});
    // The runtime checks on its own, whatever validation let through (here a broader policy).
    let broader = HostPath::new("/tmp").unwrap();
    let refused = runtime
        .create(request_allowing("host-2", body.clone(), &[broader]))
        .await;
    let found = violations(refused);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].field.as_str(), found[0].code.as_str()),
        ("volumes[1].host.path", "VOLUME::HOST_PATH_NOT_ALLOWED")
    );
    assert!(found[0].message.contains(&outside), "{found:?}");
    assert!(
        namespace
            .pods()
            .get_opt("sandbox-host-2")
            .await
            .unwrap()
            .is_none(),
        "a Pod was made for a refused host path"
    );
    // Through the API both come from `storage.allowed_host_paths`, so validation refuses it
    // first, on the same field with the same code.
    let mut full = body;
    full.as_object_mut().unwrap().extend(
        json!({"image": {"uri": IMAGE}, "entrypoint": ["sleep", "600"],
               "resourceLimits": {"cpu": "100m", "memory": "64Mi"}})
        .as_object()
        .unwrap()
        .clone(),
    );
    let wire_request = serde_json::from_value(full).unwrap();
    let policy = StoragePolicy {
        allowed_host_roots: vec![root],
        ..StoragePolicy::default()
    };
    let validated = SandboxSpec::from_request(wire_request, &policy).unwrap_err();
    let validated: Vec<(&str, &str)> = validated
        .as_slice()
        .iter()
        .map(|v| (v.field.as_str(), v.code.as_str()))
        .collect();
    assert_eq!(
        validated,
        [("volumes[1].host.path", "VOLUME::HOST_PATH_NOT_ALLOWED")]
    );

    // The sandbox goes before its host directory does.
    runtime.delete(&created.id).await.unwrap();
    until_gone(&runtime, &created.id).await;
    drop(runtime);
    drop(namespace);
    drop(host);
}
