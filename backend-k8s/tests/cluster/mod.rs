//! What the cluster tests share: a namespace of a test's own, hostPath PersistentVolumes for
//! claims to bind to, and request builders. Every object made here is labelled `berth.test=1`
//! and removed on drop, also when the test panics.

#![allow(dead_code, clippy::unwrap_used)] // Not every test binary uses every helper.

pub(crate) mod api_proxy;

use std::path::PathBuf;
use std::time::Duration;

use berth_core::model::{SandboxId, SandboxSpec, SandboxState};
use berth_core::runtime::{CreateSandbox, Runtime, RuntimeError};
use berth_core::validate::StoragePolicy;
use berth_core::wire;
use berth_k8s::config::KubernetesConfig;
use berth_k8s::runtime::KubernetesRuntime;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

pub(crate) const IMAGE: &str = "berth-test/busybox:latest";

pub(crate) fn kubeconfig() -> PathBuf {
    std::env::var_os("XTASK_K8S_KUBECONFIG")
        .map_or_else(|| PathBuf::from("/tmp/berth-k8s/kubeconfig"), PathBuf::from)
}

/// A namespace of the test's own, deleted on drop.
pub(crate) struct TestNamespace {
    pub(crate) name: String,
    pub(crate) client: kube::Client,
}

impl TestNamespace {
    pub(crate) async fn new(test: &str) -> (Self, KubernetesRuntime) {
        Self::with(test, |_| {}).await
    }

    pub(crate) async fn with(
        test: &str,
        tweak: impl FnOnce(&mut KubernetesConfig),
    ) -> (Self, KubernetesRuntime) {
        let made = Self::created(test).await;
        let mut runtime_config = KubernetesConfig::new(&made.name);
        runtime_config.kubeconfig = Some(kubeconfig());
        runtime_config.image_pull_policy = Some("Never".into());
        runtime_config.start_timeout = Duration::from_secs(60);
        runtime_config.delete_grace_period = Duration::from_secs(1);
        runtime_config
            .extra_labels
            .insert("berth.test".into(), "1".into());
        tweak(&mut runtime_config);
        let runtime = KubernetesRuntime::connect(runtime_config).await.unwrap();
        (made, runtime)
    }

    /// A new namespace labelled `berth.test=1` (deleted on drop).
    async fn created(test: &str) -> Self {
        let client = admin_client().await;
        let name = format!("berth-test-{test}-{}", std::process::id());
        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"berth.test": "1"}}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("the test cluster does not answer: {e}"));
        Self { name, client }
    }

    pub(crate) fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

/// A client with the test cluster's admin kubeconfig; panics naming the fix when there is none.
pub(crate) async fn admin_client() -> kube::Client {
    let path = kubeconfig();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap_or_else(|e| {
        panic!(
            "no test cluster: cannot read {} ({e}); run `cargo xtask k8s-env up`",
            path.display()
        )
    });
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

impl TestNamespace {
    /// A namespace of the test's own with no runtime on it (for a runtime the test makes
    /// itself); returns once its `default` ServiceAccount exists, so Pods can be posted at once.
    pub(crate) async fn empty(test: &str) -> Self {
        // Made first: dropped (namespace deleted) also when the wait below panics.
        let made = Self::created(test).await;
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(made.client.clone(), &made.name);
        for _ in 0..300 {
            if accounts.get_opt("default").await.unwrap().is_some() {
                return made;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "namespace {} got no default ServiceAccount within 30 s",
            made.name
        );
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes every Pod, claim and Secret in it.
        let (client, name) = (self.client.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    let _ = Api::<Namespace>::all(client)
                        .delete(&name, &DeleteParams::background())
                        .await;
                });
        })
        .join();
    }
}

pub(crate) fn request(id: &str, body: serde_json::Value) -> CreateSandbox {
    request_allowing(id, body, &[])
}

/// Waits (bounded) until `get` answers 404 — the Pod is gone — and says what it saw before.
pub(crate) async fn until_gone(runtime: &KubernetesRuntime, id: &SandboxId) -> Vec<SandboxState> {
    let mut seen = Vec::new();
    for _ in 0..600 {
        match runtime.get(id).await {
            Err(RuntimeError::NotFound { .. }) => return seen,
            Ok(record) => {
                if seen.last() != Some(&record.status.state) {
                    seen.push(record.status.state);
                }
            }
            Err(e) => panic!("get failed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("sandbox {id} still present after 120 s: {seen:?}");
}

/// hostPath PersistentVolumes with no storage class, for the claims Berth creates to bind to (the
/// test cluster has no provisioner); deleted, with their directories, on drop.
pub(crate) struct VolumePool {
    pub(crate) names: Vec<String>,
    pub(crate) dir: PathBuf,
    pub(crate) client: kube::Client,
}

impl VolumePool {
    pub(crate) async fn new(namespace: &TestNamespace, count: usize) -> Self {
        let dir = PathBuf::from(format!("/tmp/berth-k8s-pv-{}", namespace.name));
        let api = Api::<PersistentVolume>::all(namespace.client.clone());
        let mut names = Vec::new();
        for i in 0..count {
            let name = format!("{}-{i}", namespace.name);
            let volume: PersistentVolume = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"berth.test": "1"}},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "hostPath": {"path": dir.join(i.to_string()).to_str().unwrap(), "type": "DirectoryOrCreate"},
                },
            }))
            .unwrap();
            api.create(&PostParams::default(), &volume).await.unwrap();
            names.push(name);
        }
        Self {
            names,
            dir,
            client: namespace.client.clone(),
        }
    }
}

impl Drop for VolumePool {
    fn drop(&mut self) {
        let (client, names) = (self.client.clone(), self.names.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    let api = Api::<PersistentVolume>::all(client);
                    for name in names {
                        let _ = api.delete(&name, &DeleteParams::default()).await;
                    }
                });
        })
        .join();
        remove_when_unmounted(&self.dir);
    }
}

/// Removes `dir` once nothing is mounted below it (no Pod uses it any more): never a delete
/// through a bind mount. Gives up, leaving it, after 120 s.
fn remove_when_unmounted(dir: &std::path::Path) {
    let shown = dir.to_str().unwrap_or("/").to_owned();
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .contains(&shown)
    };
    for _ in 0..600 {
        if !mounted() {
            let _ = std::fs::remove_dir_all(dir);
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "{} is still mounted after 120 s; left in place",
        dir.display()
    );
}

/// The directory on the host behind a bound claim (the test pool's hostPath volumes).
pub(crate) async fn claim_dir(namespace: &TestNamespace, claim: &str) -> PathBuf {
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(namespace.client.clone(), &namespace.name);
    let volume_name = claims
        .get(claim)
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
    PathBuf::from(volume.spec.unwrap().host_path.unwrap().path)
}

/// Polls (bounded) until `path` on the host exists and returns its content.
pub(crate) async fn host_file(path: &std::path::Path) -> String {
    for _ in 0..300 {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{} never appeared", path.display());
}

pub(crate) fn shell(id: &str, script: &str, volumes: serde_json::Value) -> CreateSandbox {
    request(
        id,
        json!({"entrypoint": ["sh", "-c", format!("{script}; sleep 600")], "volumes": volumes}),
    )
}

/// [`request`], validated as a server whose `storage.allowed_host_paths` is `roots` would (the
/// API builds the validation policy and the runtime's allowlist from that one key).
pub(crate) fn request_allowing(
    id: &str,
    body: serde_json::Value,
    roots: &[berth_core::model::HostPath],
) -> CreateSandbox {
    let mut full = json!({
        "image": {"uri": IMAGE},
        "entrypoint": ["sleep", "600"],
        "resourceLimits": {"cpu": "100m", "memory": "64Mi"},
        "timeout": 600,
    });
    full.as_object_mut()
        .unwrap()
        .extend(body.as_object().unwrap().clone());
    let request: wire::CreateSandboxRequest = serde_json::from_value(full).unwrap();
    let policy = StoragePolicy {
        allowed_host_roots: roots.to_vec(),
        ..StoragePolicy::default()
    };
    CreateSandbox {
        id: SandboxId::new(id).unwrap(),
        spec: SandboxSpec::from_request(request, &policy).unwrap(),
        created_at: chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 3),
    }
}

/// A host directory of the test's own under /tmp, named after it, for host volumes; removed on
/// drop once nothing is mounted below it (never a delete through a bind mount).
pub(crate) struct HostDir {
    pub(crate) path: PathBuf,
}

impl HostDir {
    pub(crate) fn new(test: &str) -> Self {
        let path = PathBuf::from(format!("/tmp/berth-k8s-host-{test}-{}", std::process::id()));
        std::fs::create_dir(&path).unwrap();
        Self { path }
    }

    /// The directory as an allowed root.
    pub(crate) fn root(&self) -> berth_core::model::HostPath {
        berth_core::model::HostPath::new(self.path.to_str().unwrap()).unwrap()
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        remove_when_unmounted(&self.path);
    }
}

impl VolumePool {
    /// One hostPath PersistentVolume per claim name, reserved for that claim of `namespace`
    /// (`claimRef`): the claim binds this volume and no other test's claim can take it, so a
    /// test may prepare the volume's directory (`dir/<i>`, in the order of `claims`) before
    /// any Pod mounts it.
    pub(crate) async fn reserved(namespace: &TestNamespace, claims: &[&str]) -> Self {
        let dir = PathBuf::from(format!("/tmp/berth-k8s-pv-{}", namespace.name));
        let api = Api::<PersistentVolume>::all(namespace.client.clone());
        let mut pool = Self {
            names: Vec::new(),
            dir,
            client: namespace.client.clone(),
        };
        for (i, claim) in claims.iter().enumerate() {
            let name = format!("{}-{i}", namespace.name);
            let volume: PersistentVolume = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"berth.test": "1"}},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "claimRef": {"namespace": namespace.name, "name": claim},
                    "hostPath": {"path": pool.dir.join(i.to_string()).to_str().unwrap(), "type": "DirectoryOrCreate"},
                },
            }))
            .unwrap();
            api.create(&PostParams::default(), &volume).await.unwrap();
            // Named as soon as it exists: removed on drop also if a later create panics.
            pool.names.push(name);
        }
        pool
    }
}
