//! The test cluster for the Kubernetes benchmarks (`cargo xtask k8s-env up` starts it;
//! `XTASK_K8S_KUBECONFIG` names its kubeconfig): a client, a namespace of the run's own
//! (deleted on drop and waited for, with the volumes reserved for it), and a `berth-server` on
//! it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume};
use kube::api::{Api, DeleteParams, PostParams};

use super::KEY;

pub(crate) fn kubeconfig() -> PathBuf {
    std::env::var_os("XTASK_K8S_KUBECONFIG")
        .map_or_else(|| PathBuf::from("/tmp/berth-k8s/kubeconfig"), PathBuf::from)
}

/// A client for the test cluster; panics naming the fix when there is none.
pub(crate) async fn cluster_client(kubeconfig: &Path) -> kube::Client {
    let hint = "`cargo xtask k8s-env up` starts the test cluster";
    let file = kube::config::Kubeconfig::read_from(kubeconfig).unwrap_or_else(|e| {
        panic!(
            "no test cluster: cannot read {} ({e}); {hint}",
            kubeconfig.display()
        )
    });
    let config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", kubeconfig.display()));
    let client =
        kube::Client::try_from(config).unwrap_or_else(|e| panic!("no client for the cluster: {e}"));
    match tokio::time::timeout(Duration::from_secs(20), client.apiserver_version()).await {
        Ok(Ok(_)) => client,
        Ok(Err(e)) => panic!(
            "the test cluster of {} does not answer: {e}; {hint}",
            kubeconfig.display()
        ),
        Err(_) => panic!(
            "the test cluster of {} does not answer within 20 s; {hint}",
            kubeconfig.display()
        ),
    }
}

/// The run's namespace, labelled `berth.test=1`: deleted on drop, also when the benchmark
/// panics, with everything in it and the PersistentVolumes reserved for it; the drop waits
/// (bounded) until it is gone, so a following run starts on a quiet cluster.
pub(crate) struct NamespaceGuard {
    pub(crate) name: String,
    pub(crate) client: kube::Client,
    volumes: Vec<String>,
}

impl NamespaceGuard {
    pub(crate) async fn create(client: &kube::Client, name: &str) -> Self {
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"berth.test": "1"}}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        Self {
            name: name.to_owned(),
            client: client.clone(),
            volumes: Vec::new(),
        }
    }

    /// A hostPath PersistentVolume at `path`, bound in advance to claim `claim` of this
    /// namespace (the cluster has no provisioner); every Pod may mount it.
    pub(crate) async fn reserve_volume(&mut self, claim: &str, path: &Path) {
        let name = format!("{}-{claim}", self.name);
        let volume: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"berth.test": "1"}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": path.to_str().unwrap(), "type": "DirectoryOrCreate"},
                "claimRef": {"namespace": self.name, "name": claim},
            },
        }))
        .unwrap();
        Api::<PersistentVolume>::all(self.client.clone())
            .create(&PostParams::default(), &volume)
            .await
            .unwrap_or_else(|e| panic!("creating volume {name}: {e}"));
        self.volumes.push(name);
    }
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let (client, name, volumes) =
            (self.client.clone(), self.name.clone(), self.volumes.clone());
        // Inside the benchmark's runtime a blocking wait needs a thread and runtime of its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    let namespaces = Api::<Namespace>::all(client.clone());
                    let started = Instant::now();
                    if let Err(e) = namespaces.delete(&name, &DeleteParams::background()).await {
                        eprintln!("deleting namespace {name} failed: {e}");
                        return;
                    }
                    let mut gone = false;
                    while started.elapsed() < Duration::from_secs(300) {
                        if matches!(namespaces.get_opt(&name).await, Ok(None)) {
                            println!(
                                "namespace {name} deleted in {:.1} s",
                                started.elapsed().as_secs_f64()
                            );
                            gone = true;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    if !gone {
                        eprintln!(
                            "namespace {name} still terminating after 300 s; left to the cluster"
                        );
                    }
                    let api = Api::<PersistentVolume>::all(client);
                    for volume in volumes {
                        let _ = api.delete(&volume, &DeleteParams::default()).await;
                    }
                });
        })
        .join();
    }
}

/// A `berth-server` on the Kubernetes runtime in a namespace of its own, with the benchmark key,
/// a host root it allows (`host_root`) and a claim `<run>-sessions` every Pod may mount, its
/// state in a directory of its own. Dropping it stops the server, deletes the namespace (every
/// Pod, claim and Secret) and then the directory.
pub(crate) struct KubernetesServer {
    child: Child,
    pub(crate) run: String,
    pub(crate) address: String,
    pub(crate) host_root: PathBuf,
    dir: PathBuf,
    namespace: Option<NamespaceGuard>,
}

impl KubernetesServer {
    /// Starts `binary` for run `name-<pid>` with `env` on top, and waits until `/health` is
    /// 200 (the Pod cache has synced).
    pub(crate) async fn start(binary: &str, name: &str, env: &[(&str, String)]) -> Self {
        let run = format!("{name}-{}", std::process::id());
        let kubeconfig = kubeconfig();
        let client = cluster_client(&kubeconfig).await;
        let mut namespace = NamespaceGuard::create(&client, &format!("berth-{run}")).await;
        let dir = std::env::temp_dir().join(format!("berth-{run}"));
        std::fs::create_dir(&dir).unwrap();
        let host_root = dir.join("host");
        std::fs::create_dir(&host_root).unwrap();
        namespace
            .reserve_volume(&format!("{run}-sessions"), &dir.join("sessions"))
            .await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(binary);
        command
            .env("BERTH_RUNTIME__TYPE", "kubernetes")
            .env("BERTH_SERVER__PORT", port.to_string())
            .env("BERTH_SERVER__API_KEY", KEY)
            .env("BERTH_SERVER__LOG_LEVEL", "warn")
            .env("BERTH_STORAGE__STATE_DIR", dir.join("state"))
            .env(
                "BERTH_STORAGE__ALLOWED_HOST_PATHS",
                format!("[\"{}\"]", host_root.display()),
            )
            .env("BERTH_KUBERNETES__NAMESPACE", &namespace.name)
            .env("BERTH_KUBERNETES__KUBECONFIG", &kubeconfig)
            // Every Pod, Secret and claim it makes is a test resource.
            .env("BERTH_KUBERNETES__LABELS", r#"{"berth.test" = "1"}"#)
            .env("BERTH_KUBERNETES__IMAGE_PULL_POLICY", "Never")
            // Sandboxes ignore SIGTERM (a shell as PID 1): a short grace.
            .env("BERTH_KUBERNETES__DELETE_GRACE_PERIOD_SECONDS", "1")
            .stdout(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut server = Self {
            child: command.spawn().unwrap(),
            run,
            address: format!("127.0.0.1:{port}"),
            host_root,
            dir,
            namespace: Some(namespace),
        };
        let started = Instant::now();
        loop {
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "berth-server exited at startup"
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "berth-server not healthy after 60 s"
            );
            if let Ok(stream) = tokio::net::TcpStream::connect(&server.address).await {
                drop(stream);
                let mut connection = super::Connection::open(&server.address).await;
                if connection.call("GET", "/health", None).await.0 == 200 {
                    return server;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for KubernetesServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
        // The namespace first: its Pods hold the directory's volumes mounted.
        drop(self.namespace.take());
        for _ in 0..600 {
            if super::mounts_below(&self.dir).is_empty() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("{} is still mounted; left in place", self.dir.display());
    }
}
