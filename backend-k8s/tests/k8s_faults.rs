//! Faults in every API server call of create, delete, expiry, renewal and metadata patch, on the
//! test cluster through a fault-injecting proxy (`cluster/api_proxy.rs`): each call refused, cut
//! before the API server sees it, carried out with its answer lost, or answered past
//! `kubernetes.api_timeout_seconds`. Every fault is a server error the caller can read;
//! afterwards the sandbox is whole or gone (never a Pod, claim or Secret of a failed create left
//! behind), and a retry finishes the job.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod cluster;

use std::time::Duration;

use berth_core::model::{MetadataKey, MetadataPatch, MetadataValue, SandboxId, SandboxState};
use berth_core::runtime::{Runtime, RuntimeError};
use berth_k8s::runtime::KubernetesRuntime;
use cluster::api_proxy::{ApiProxy, FaultKind};
use cluster::{TestNamespace, VolumePool, request, until_gone};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{Api, ListParams};
use serde_json::json;

/// Short enough for a test, long enough for a loaded 2-CPU machine's ordinary calls.
const API_TIMEOUT: Duration = Duration::from_secs(3);

const KINDS: [FaultKind; 4] = [
    FaultKind::RefuseBefore,
    FaultKind::CutBefore,
    FaultKind::LoseResponse,
    // Past the API timeout.
    FaultKind::Delay(Duration::from_secs(6)),
];

async fn proxied(test: &str) -> (TestNamespace, KubernetesRuntime, ApiProxy) {
    let proxy = ApiProxy::start().await;
    let kubeconfig = proxy.kubeconfig.clone();
    let (namespace, runtime) = TestNamespace::with(test, |c| {
        c.kubeconfig = Some(kubeconfig);
        c.api_timeout = API_TIMEOUT;
    })
    .await;
    (namespace, runtime, proxy)
}

/// A failed call is a server error, never a success or a client error; one answered too late
/// names the setting.
fn assert_server_error(error: &RuntimeError, what: &str, kind: FaultKind) {
    let status = error.code().http_status();
    assert!(
        status >= 500,
        "{what}: {status} {} {error}",
        error.code().as_str()
    );
    if let FaultKind::Delay(_) = kind {
        assert_eq!(status, 503, "{what}: {error}");
        assert!(
            error
                .to_string()
                .contains("kubernetes.api_timeout_seconds = 3 s"),
            "{what}: {error}"
        );
    }
    println!("{what}: {status} {} {error}", error.code().as_str());
}

/// The names of the claims and Secrets in the namespace that are not being deleted.
async fn claims_and_secrets(namespace: &TestNamespace) -> (Vec<String>, Vec<String>) {
    let live =
        |meta: &kube::api::ObjectMeta| meta.deletion_timestamp.is_none() && meta.name.is_some();
    let claims =
        Api::<PersistentVolumeClaim>::namespaced(namespace.client.clone(), &namespace.name)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|c| live(&c.metadata))
            .filter_map(|c| c.metadata.name)
            .collect();
    let secrets = Api::<Secret>::namespaced(namespace.client.clone(), &namespace.name)
        .list(&ListParams::default().labels("berth.managed-by=berth"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|s| live(&s.metadata))
        .filter_map(|s| s.metadata.name)
        .collect();
    (claims, secrets)
}

/// Polls (bounded) until the namespace has no sandbox Pod, no claim and no Berth Secret left
/// that is not being deleted.
async fn until_nothing_left(namespace: &TestNamespace, what: &str) {
    for _ in 0..300 {
        let pods = namespace
            .pods()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        let (claims, secrets) = claims_and_secrets(namespace).await;
        if pods == 0 && claims.is_empty() && secrets.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (claims, secrets) = claims_and_secrets(namespace).await;
    panic!("{what}: left behind: claims {claims:?}, Secrets {secrets:?} (or a Pod)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failing_call_of_a_create_leaves_nothing() {
    let (namespace, runtime, proxy) = proxied("faults-create").await;
    // A volume per create: a claim that bound one and was rolled back leaves it Released.
    let _pool = VolumePool::new(&namespace, 26).await;
    // Each create makes a claim of its own, removed with the sandbox, and needs registry
    // credentials (a Secret): every kind of object a create makes.
    let body = |claim: &str| {
        json!({
            "image": {"uri": cluster::IMAGE, "auth": {"username": "u", "password": "p"}},
            "volumes": [{"name": "work", "pvc": {"claimName": claim, "deleteOnSandboxTermination": true},
                "mountPath": "/workspace", "subPath": "s"}],
        })
    };
    // The create path, in order: the claim read, its creation, the Secret, the Pod, the
    // Secret's and the claim's owner references.
    let calls = [
        ("GET", "/persistentvolumeclaims/"),
        ("POST", "/persistentvolumeclaims"),
        ("POST", "/secrets"),
        ("POST", "/pods"),
        ("PATCH", "/secrets/"),
        ("PATCH", "/persistentvolumeclaims/"),
    ];
    let mut cases = 0;
    for (method, path) in calls {
        for kind in KINDS {
            let what = format!("create {method} {path} {kind:?}");
            let id = format!("fault-{cases}");
            proxy.fail_next(method, path, kind);
            let result = runtime
                .create(request(&id, body(&format!("claim-{cases}"))))
                .await;
            assert_eq!(proxy.faults_pending(), 0, "{what}: the call was never made");
            assert_server_error(
                &result.expect_err("a create with a failing call succeeded"),
                &what,
                kind,
            );
            assert!(
                matches!(
                    runtime.get(&SandboxId::new(&id).unwrap()).await,
                    Err(RuntimeError::NotFound { .. })
                ) || !until_gone(&runtime, &SandboxId::new(&id).unwrap())
                    .await
                    .is_empty(),
                "{what}"
            );
            until_nothing_left(&namespace, &what).await;
            cases += 1;
        }
    }
    println!("{cases} injected API server failures in creates, each left nothing behind");
    // And the same create succeeds once the API server behaves.
    let id = SandboxId::new("fault-ok").unwrap();
    runtime
        .create(request(id.as_str(), body("claim-ok")))
        .await
        .unwrap();
    runtime.delete(&id).await.unwrap();
    until_gone(&runtime, &id).await;
    until_nothing_left(&namespace, "after the good create").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failing_call_of_a_delete_or_an_expiry_is_finished_by_a_retry() {
    let (namespace, runtime, proxy) = proxied("faults-delete").await;
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let mut cases = 0;
    for expiry in [false, true] {
        let calls: &[(&str, &str)] = if expiry {
            // A fresh read of the Pod, then its delete with that read as precondition.
            &[("GET", "/pods/sandbox-"), ("DELETE", "/pods/sandbox-")]
        } else {
            &[("DELETE", "/pods/sandbox-")]
        };
        for &(method, path) in calls {
            for kind in KINDS {
                let what = format!(
                    "{} {method} {path} {kind:?}",
                    if expiry { "expiry" } else { "delete" }
                );
                let id = SandboxId::new(&format!("fault-{cases}")).unwrap();
                runtime
                    .create(request(id.as_str(), json!({})))
                    .await
                    .unwrap();
                proxy.fail_next(method, path, kind);
                let failed = if expiry {
                    runtime.delete_if_expired(&id, later).await.map(|_| ())
                } else {
                    runtime.delete(&id).await
                };
                assert_eq!(proxy.faults_pending(), 0, "{what}: the call was never made");
                assert_server_error(&failed.unwrap_err(), &what, kind);
                // Retried: done, or already done.
                let retried = if expiry {
                    runtime.delete_if_expired(&id, later).await.map(|_| ())
                } else {
                    runtime.delete(&id).await
                };
                match retried {
                    Ok(()) | Err(RuntimeError::NotFound { .. }) => {}
                    Err(e) => panic!("{what}: the retry failed: {e}"),
                }
                until_gone(&runtime, &id).await;
                until_nothing_left(&namespace, &what).await;
                cases += 1;
            }
        }
    }
    println!("{cases} injected API server failures in deletes and expiries, each finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_renewal_or_patch_leaves_the_record_agreeing_with_the_pod() {
    let (namespace, runtime, proxy) = proxied("faults-patch").await;
    let id = SandboxId::new("fault-patch").unwrap();
    runtime
        .create(request(id.as_str(), json!({})))
        .await
        .unwrap();
    let mut cases = 0;
    for (n, kind) in KINDS.into_iter().enumerate() {
        let what = format!("renew {kind:?}");
        let until = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0)
            + chrono::Duration::hours(2 + n as i64);
        proxy.fail_next("PATCH", "/pods/sandbox-", kind);
        let err = runtime.renew(&id, until).await.unwrap_err();
        assert_eq!(proxy.faults_pending(), 0, "{what}: the call was never made");
        assert_server_error(&err, &what, kind);
        // Renewed on the API server or not: the record says what the Pod says, and the retry
        // renews.
        let on_pod = pod_expiry(&namespace, &id).await;
        until_record_says(&runtime, &id, &what, |r| r.expires_at == on_pod).await;
        runtime.renew(&id, until).await.unwrap();
        until_record_says(&runtime, &id, &what, |r| r.expires_at == Some(until)).await;

        let what = format!("patch {kind:?}");
        let key = MetadataKey::new(&format!("k{n}")).unwrap();
        let patch = MetadataPatch([(key.clone(), Some(MetadataValue::new("v").unwrap()))].into());
        proxy.fail_next("PATCH", "/pods/sandbox-", kind);
        let err = runtime.patch_metadata(&id, &patch).await.unwrap_err();
        assert_eq!(proxy.faults_pending(), 0, "{what}: the call was never made");
        assert_server_error(&err, &what, kind);
        runtime.patch_metadata(&id, &patch).await.unwrap();
        until_record_says(&runtime, &id, &what, |r| r.metadata.contains_key(&key)).await;
        cases += 2;
    }
    println!(
        "{cases} injected API server failures in renewals and patches, the record agreeing each time"
    );
    assert_eq!(
        runtime.get(&id).await.unwrap().status.state,
        SandboxState::Running
    );
    runtime.delete(&id).await.unwrap();
    until_gone(&runtime, &id).await;
}

async fn pod_expiry(
    namespace: &TestNamespace,
    id: &SandboxId,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let pod = namespace
        .pods()
        .get(&format!("sandbox-{id}"))
        .await
        .unwrap();
    berth_k8s::pod_state::PodState::from_annotations(pod.metadata.annotations.as_ref())
        .unwrap()
        .expires_at
}

/// Polls (bounded) until the runtime's record of `id` satisfies `check` (its Pod watch may
/// still be on its way).
async fn until_record_says(
    runtime: &KubernetesRuntime,
    id: &SandboxId,
    what: &str,
    check: impl Fn(&berth_core::model::SandboxRecord) -> bool,
) {
    for _ in 0..150 {
        if check(&runtime.get(id).await.unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{what}: the record never agreed: {:?}",
        runtime.get(id).await
    );
}
