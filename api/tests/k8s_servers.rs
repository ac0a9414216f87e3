//! The real `berth-server` binary on the Kubernetes runtime, against the test cluster (run by
//! `cargo xtask test` with it up; `XTASK_K8S_KUBECONFIG` names its kubeconfig):
//!
//! - the official SDK end to end (`sdk/e2e.py` with `SDK_E2E_RUNTIME=kubernetes`), a pvc on
//!   per-session subPaths and host volumes included;
//! - two servers on one namespace: exactly one reaps (the holder of the reaper's Lease), and
//!   when it stops the other takes over;
//! - concurrent metadata patches and renewals of one sandbox through both servers lose nothing;
//! - the `berth` command: the README walkthrough as written, and the other commands on a Pod.
//!
//! Each test works in a namespace of its own labelled `berth.test=1`, deleted on drop with the
//! volumes and host directories it made, also when the test panics. Servers log to a file in
//! that directory; a failing test prints the log.

#![cfg(feature = "kubernetes")] // Runs the server on the Kubernetes runtime.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

const KEY: &str = "k8s-servers-test-key";
const IMAGE: &str = "berth-test/busybox:latest";

fn kubeconfig() -> PathBuf {
    std::env::var_os("XTASK_K8S_KUBECONFIG")
        .map_or_else(|| PathBuf::from("/tmp/berth-k8s/kubeconfig"), PathBuf::from)
}

/// A namespace of the test's own and a host directory for what the test keeps on the host
/// (volumes, host roots, server logs); on drop the namespace (with every Pod, claim and Lease in
/// it), the test's PersistentVolumes and, once nothing is mounted below it, the directory go.
struct TestNamespace {
    name: String,
    client: kube::Client,
    dir: PathBuf,
    volumes: Vec<String>,
}

impl TestNamespace {
    async fn new(test: &str) -> Self {
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
        let client = kube::Client::try_from(config).unwrap();
        let name = format!("berth-test-servers-{test}-{}", std::process::id());
        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"berth.test": "1"}}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("the test cluster does not answer: {e}"));
        let namespace = Self {
            dir: std::env::temp_dir().join(&name),
            name,
            client,
            volumes: Vec::new(),
        };
        std::fs::create_dir(&namespace.dir).unwrap();
        namespace
    }

    /// A hostPath PersistentVolume bound in advance to claim `claim` of this namespace: the
    /// cluster has no provisioner, and no other test's claim can take it.
    async fn volume_for(&mut self, claim: &str) {
        let name = format!("{}-{claim}", self.name);
        let path = self.dir.join("volumes").join(claim);
        let volume: PersistentVolume = serde_json::from_value(json!({
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
            .unwrap();
        self.volumes.push(name);
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Who holds the reaper's Lease of this namespace.
    async fn lease_holder(&self) -> Option<String> {
        Api::<Lease>::namespaced(self.client.clone(), &self.name)
            .get_opt("berth-reaper")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let (client, name, volumes) =
            (self.client.clone(), self.name.clone(), self.volumes.clone());
        // Drop may run inside the test's runtime: the calls get a runtime of their own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    let _ = Api::<Namespace>::all(client.clone())
                        .delete(&name, &DeleteParams::background())
                        .await;
                    let api = Api::<PersistentVolume>::all(client);
                    for volume in volumes {
                        let _ = api.delete(&volume, &DeleteParams::default()).await;
                    }
                });
        })
        .join();
        // Only once the namespace's Pods have gone and nothing is mounted below it: never a
        // delete through a mount.
        let dir = self.dir.to_str().unwrap_or("/").to_owned();
        for _ in 0..600 {
            if !common::mounts_below(&self.dir) {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("{dir} is still mounted after 120 s; left in place");
    }
}

/// A `berth-server` on the Kubernetes runtime in a test namespace, its output in a log file.
struct Server {
    child: Child,
    endpoint: Endpoint,
    log: PathBuf,
}

/// Where a server answers: the API calls the tests make.
#[derive(Clone)]
struct Endpoint {
    address: String,
}

impl std::ops::Deref for Server {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Server {
    /// Starts `berth-server` on `namespace` with the settings every test here uses, plus `env`.
    fn start(namespace: &TestNamespace, name: &str, env: &[(&str, String)]) -> Self {
        let port = common::free_port();
        let log = namespace.dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut command = common::server_command();
        command
            .env("BERTH_RUNTIME__TYPE", "kubernetes")
            .env("BERTH_KUBERNETES__NAMESPACE", &namespace.name)
            .env("BERTH_KUBERNETES__KUBECONFIG", kubeconfig())
            // Every Pod, Secret and claim it makes is a test resource.
            .env("BERTH_KUBERNETES__LABELS", r#"{"berth.test" = "1"}"#)
            // The test image is loaded, never pulled (no registry is reachable).
            .env("BERTH_KUBERNETES__IMAGE_PULL_POLICY", "Never")
            .env("BERTH_KUBERNETES__START_TIMEOUT_SECONDS", "60")
            // Sandboxes ignore SIGTERM (a shell as PID 1): without a short grace a Pod takes
            // the default 10 s to go.
            .env("BERTH_KUBERNETES__DELETE_GRACE_PERIOD_SECONDS", "1")
            .env("BERTH_SERVER__REQUEST_DEADLINE_SECONDS", "120")
            .env("BERTH_SERVER__SHUTDOWN_TIMEOUT_SECONDS", "10")
            .env("BERTH_SERVER__API_KEY", KEY)
            .env("BERTH_SERVER__PORT", port.to_string())
            .env(
                "BERTH_STORAGE__STATE_DIR",
                namespace.dir.join(format!("{name}-state")),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        for (k, v) in env {
            command.env(k, v);
        }
        Self {
            child: command.spawn().unwrap(),
            endpoint: Endpoint {
                address: format!("127.0.0.1:{port}"),
            },
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The end of a `Lease` holder's identity that is this server's (its default identity is
    /// host name and process id).
    fn identity_suffix(&self) -> String {
        format!("-{}", self.child.id())
    }

    /// Waits (bounded) until `/health` answers 200: listening, and the Pod cache has synced.
    async fn healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("berth-server exited at startup ({status})");
            }
            if let Ok((200, _)) = request(&self.address, "GET", "/health", None).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/health not 200 within 60 s of the start"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM, then waits (bounded) for the exit; its code.
    async fn terminate(&mut self) -> Option<i32> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "berth-server ignored SIGTERM");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The log lines saying this server's reaper deleted `id`.
    fn reaped_in_log(&self, id: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("reaper: deleted expired sandbox") && l.contains(id))
            .count()
    }
}

impl Endpoint {
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (status, text) = request(&self.address, method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates a sandbox running `sleep`; its id.
    async fn create(&self, timeout: u64, metadata: Value) -> String {
        let body = json!({
            "image": {"uri": IMAGE},
            "entrypoint": ["sleep", "600"],
            "resourceLimits": {"cpu": "50m", "memory": "32Mi"},
            "timeout": timeout,
            "metadata": metadata,
        });
        let (status, created) = self.call("POST", "/v1/sandboxes", Some(&body)).await;
        assert_eq!(status, 202, "create: {created}");
        created["id"].as_str().unwrap().to_owned()
    }

    /// Renews `id` to expire at `at`, trying again while the server answers 409
    /// `SANDBOX::CONFLICT` (what it says to do); how many times it did.
    async fn renew(&self, id: &str, at: DateTime<Utc>) -> usize {
        let path = format!("/v1/sandboxes/{id}/renew-expiration");
        let body = json!({"expiresAt": at.to_rfc3339()});
        let mut conflicts = 0;
        loop {
            match self.call("POST", &path, Some(&body)).await {
                (200, renewed) => {
                    assert_eq!(expiry(&renewed), Some(at), "renew answered {renewed}");
                    return conflicts;
                }
                (409, e) if e["code"] == "SANDBOX::CONFLICT" => conflicts += 1,
                (status, e) => panic!("renew {id}: {status} {e}"),
            }
        }
    }

    /// Polls (bounded) until `id` is a 404 here; the states it answered before.
    async fn until_gone(&self, id: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen: Vec<String> = Vec::new();
        loop {
            match self.call("GET", &format!("/v1/sandboxes/{id}"), None).await {
                (404, _) => return seen,
                (200, sandbox) => {
                    let state = sandbox["status"]["state"].as_str().unwrap().to_owned();
                    if seen.last() != Some(&state) {
                        seen.push(state);
                    }
                }
                (status, e) => panic!("get {id}: {status} {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "{id} still there after {within:?} (seen {seen:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `berth_reaper_actions_total` for `result`, from `/metrics`.
    async fn reaper_actions(&self, result: &str) -> u64 {
        let (status, text) = request(&self.address, "GET", "/metrics", None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{text}");
        let series = format!("berth_reaper_actions_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("no {series}in /metrics:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} ----\n{}", self.log.display(), self.log_text());
        }
    }
}

/// One HTTP/1.1 request with the API key; the status and the body. An error when the server
/// cannot be reached.
async fn request(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", address)
        .header("OPEN-SANDBOX-API-KEY", KEY);
    let body = match body {
        Some(body) => {
            builder = builder.header("content-type", "application/json");
            Full::new(Bytes::from(body.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    let response = sender
        .send_request(builder.body(body).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn expiry(sandbox: &Value) -> Option<DateTime<Utc>> {
    let text = sandbox["expiresAt"].as_str()?;
    Some(DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc))
}

/// The official SDK's end-to-end script (`sdk/e2e.py`) against a server on a namespace: its
/// sessions claim bound in advance to a volume of the test, a host root the server allows.
struct SdkSession {
    run: String,
    claim: String,
    host_root: PathBuf,
}

impl SdkSession {
    /// The claim's volume and the host root; the server must allow `host_root`.
    async fn prepare(namespace: &mut TestNamespace) -> Self {
        let run = format!("k8s-{}", std::process::id());
        // The script's sessions claim (createIfNotExists; kept after its sandboxes).
        let claim = format!("sdk-sessions-{run}");
        namespace.volume_for(&claim).await;
        let host_root = namespace.dir.join("host");
        std::fs::create_dir(&host_root).unwrap();
        Self {
            run,
            claim,
            host_root,
        }
    }

    /// `BERTH_STORAGE__ALLOWED_HOST_PATHS` for the server.
    fn allowed_host_paths(&self) -> String {
        format!("[\"{}\"]", self.host_root.display())
    }

    /// Runs the script against the server at `address`, and checks what it leaves.
    async fn run(&self, namespace: &TestNamespace, address: &str) {
        let python = tokio::task::spawn_blocking(common::sdk_python)
            .await
            .unwrap();
        let status = tokio::process::Command::new(&python)
            .arg(common::sdk_script())
            .env("BERTH_ADDRESS", address)
            .env("BERTH_API_KEY", KEY)
            .env("BERTH_HOST_ROOT", &self.host_root)
            .env("BERTH_RUN", &self.run)
            .env("SDK_E2E_RUNTIME", "kubernetes")
            .status()
            .await
            .unwrap();
        assert!(status.success(), "the SDK end-to-end script failed");

        // The script waited for every sandbox to go: no Pod is left, and the claim it kept is
        // the one the sessions shared, bound to this test's volume.
        let pods = namespace.pods().list(&ListParams::default()).await.unwrap();
        let left: Vec<_> = pods.items.iter().map(|p| p.metadata.name.clone()).collect();
        assert!(left.is_empty(), "Pods left: {left:?}");
        let kept =
            Api::<PersistentVolumeClaim>::namespaced(namespace.client.clone(), &namespace.name)
                .get(&self.claim)
                .await
                .unwrap();
        assert_eq!(
            kept.spec.and_then(|s| s.volume_name),
            Some(format!("{}-{}", namespace.name, self.claim))
        );
        let note = std::fs::read_to_string(
            namespace
                .dir
                .join("volumes")
                .join(&self.claim)
                .join("uid-1-session-1/note"),
        )
        .unwrap();
        assert_eq!(note, "from session 1\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdk_drives_berth_on_kubernetes_end_to_end() {
    let mut namespace = TestNamespace::new("sdk").await;
    let session = SdkSession::prepare(&mut namespace).await;
    let mut server = Server::start(
        &namespace,
        "server",
        &[(
            "BERTH_STORAGE__ALLOWED_HOST_PATHS",
            session.allowed_host_paths(),
        )],
    );
    server.healthy().await;
    session.run(&namespace, &server.address).await;
    assert_eq!(
        server.terminate().await,
        Some(0),
        "no clean exit on SIGTERM"
    );
}

/// The shipped manifests (`deploy/kubernetes/`) run the server's image (`berth-server:dev`,
/// packed by `cargo xtask image --dev` as `cargo xtask image` packs a release) as a Deployment on
/// the test cluster, and the official SDK drives it end to end. The test cluster has no kube-proxy
/// (no Service IPs), its API server listens on loopback, and it runs without the ServiceAccount
/// admission plugin (no token volume is mounted by itself): a small overlay, the only change to
/// the manifests, runs the Pod on the host's network (`hostNetwork`, a free port), points it at
/// the API server (`KUBERNETES_SERVICE_HOST/PORT`), mounts a token of the shipped ServiceAccount
/// where a cluster would, and moves everything into the test's namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_deployment_runs_the_server_image_and_the_sdk_drives_it() {
    let server_namespace = TestNamespace::new("deploy-srv").await;
    let mut sandboxes = TestNamespace::new("deploy-sbx").await;
    let session = SdkSession::prepare(&mut sandboxes).await;
    let port = common::free_port();
    let api_server = url_of_kubeconfig();
    let moved = BTreeMap::from([
        ("berth", server_namespace.name.clone()),
        ("berth-sandboxes", sandboxes.name.clone()),
    ]);
    let client = server_namespace.client.clone();
    let ns = server_namespace.name.clone();

    // The Secret the README has the operator make, and a token of the shipped ServiceAccount.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "berth-api-key"},
                "stringData": {"api-key": KEY, "route-signing-keys": format!("[\"{}\"]", "ab".repeat(32))},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let mut created_token = false;
    for (file, document) in shipped_manifests() {
        let kind = document["kind"].as_str().unwrap().to_owned();
        if kind == "Namespace" {
            continue;
        }
        let mut object = relocated(document, &moved);
        let namespace = object["metadata"]["namespace"].as_str().unwrap().to_owned();
        match kind.as_str() {
            "ConfigMap" => {
                let toml = object["data"]["berth.toml"].as_str().unwrap().replace(
                    "namespace = \"berth-sandboxes\"",
                    &format!("namespace = \"{}\"", sandboxes.name),
                );
                object["data"]["berth.toml"] = toml.into();
                create::<ConfigMap>(&client, &namespace, object).await;
            }
            "ServiceAccount" => {
                create::<ServiceAccount>(&client, &namespace, object).await;
                service_account_token(&client, &namespace, "berth").await;
                created_token = true;
            }
            "Role" => create::<Role>(&client, &namespace, object).await,
            "RoleBinding" => create::<RoleBinding>(&client, &namespace, object).await,
            "Service" => create::<Service>(&client, &namespace, object).await,
            "Deployment" => {
                let pod = &mut object["spec"]["template"]["spec"];
                pod["hostNetwork"] = true.into();
                pod["volumes"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "token", "secret": {"secretName": "berth-token"}}));
                let container = &mut pod["containers"][0];
                container["image"] = "berth-server:dev".into();
                container["imagePullPolicy"] = "Never".into();
                container["ports"][0]["containerPort"] = port.into();
                container["volumeMounts"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({
                        "name": "token",
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                        "readOnly": true,
                    }));
                let env = container["env"].as_array_mut().unwrap();
                for (name, value) in [
                    ("KUBERNETES_SERVICE_HOST", api_server.0.clone()),
                    ("KUBERNETES_SERVICE_PORT", api_server.1.to_string()),
                    ("BERTH_SERVER__PORT", port.to_string()),
                    ("BERTH_KUBERNETES__IMAGE_PULL_POLICY", "Never".to_owned()),
                    (
                        "BERTH_KUBERNETES__LABELS",
                        r#"{"berth.test" = "1"}"#.to_owned(),
                    ),
                    ("BERTH_KUBERNETES__START_TIMEOUT_SECONDS", "60".to_owned()),
                    (
                        "BERTH_KUBERNETES__DELETE_GRACE_PERIOD_SECONDS",
                        "1".to_owned(),
                    ),
                    ("BERTH_SERVER__REQUEST_DEADLINE_SECONDS", "120".to_owned()),
                    (
                        "BERTH_STORAGE__ALLOWED_HOST_PATHS",
                        session.allowed_host_paths(),
                    ),
                ] {
                    env.push(json!({"name": name, "value": value}));
                }
                create::<Deployment>(&client, &namespace, object).await;
            }
            other => panic!("{file}: a {other} the test does not know how to apply"),
        }
    }
    assert!(created_token, "the manifests have no ServiceAccount");

    // Ready as the readiness probe sees it: /health answers 200 once the cache has synced.
    let address = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !matches!(
        request(&address, "GET", "/health", None).await,
        Ok((200, _))
    ) {
        assert!(
            Instant::now() < deadline,
            "the Deployment's server is not healthy within 120 s; its containers:\n{}",
            pod_logs(&ns)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    session.run(&sandboxes, &address).await;
}

/// Every YAML document of `deploy/kubernetes/*.yaml`, in file order, with its file name.
fn shipped_manifests() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document).unwrap();
            if !value.is_null() {
                documents.push((file.display().to_string(), value));
            }
        }
    }
    documents
}

/// `object` moved from the manifests' namespaces to the test's: its own and its RoleBinding
/// subjects'.
fn relocated(mut object: Value, moved: &BTreeMap<&str, String>) -> Value {
    let rename = |value: &mut Value| {
        if let Some(from) = value.as_str() {
            *value = moved
                .get(from)
                .unwrap_or_else(|| panic!("a manifest uses namespace {from:?}"))
                .clone()
                .into();
        }
    };
    rename(&mut object["metadata"]["namespace"]);
    if let Some(subjects) = object["subjects"].as_array_mut() {
        for subject in subjects {
            rename(&mut subject["namespace"]);
        }
    }
    object
}

async fn create<K>(client: &kube::Client, namespace: &str, object: Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
    K::DynamicType: Default,
{
    let typed: K = serde_json::from_value(object).unwrap();
    Api::<K>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &typed)
        .await
        .unwrap_or_else(|e| panic!("creating a {}: {e}", K::kind(&K::DynamicType::default())));
}

/// Makes the Secret `berth-token` that the token controller fills with a token of `account`,
/// and waits (bounded) until it has.
async fn service_account_token(client: &kube::Client, namespace: &str, account: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": "berth-token",
            "annotations": {"kubernetes.io/service-account.name": account},
        },
        "type": "kubernetes.io/service-account-token",
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    for _ in 0..300 {
        let filled = secrets
            .get("berth-token")
            .await
            .unwrap()
            .data
            .is_some_and(|d| d.contains_key("token"));
        if filled {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the token controller did not fill in a token for {account} within 30 s");
}

/// The API server's host and port, from the test cluster's kubeconfig.
fn url_of_kubeconfig() -> (String, u16) {
    let text = std::fs::read_to_string(kubeconfig()).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .expect("the kubeconfig names no server")
        .trim()
        .trim_matches('"')
        .to_owned();
    let url: hyper::Uri = server.parse().unwrap();
    (
        url.host().unwrap().to_owned(),
        url.port_u16().unwrap_or(443),
    )
}

/// The logs of the containers of `namespace`'s Pods (the kubelet runs them on the local engine).
fn pod_logs(namespace: &str) -> String {
    let ids = common::docker_list(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.kubernetes.pod.namespace={namespace}"),
    ]);
    let mut text = String::new();
    for id in ids {
        let out = std::process::Command::new("docker")
            .args(["logs", "--tail", "50", &id])
            .output()
            .unwrap();
        text.push_str(&format!(
            "--- {id}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_servers_exactly_one_reaps_and_the_other_takes_over_when_it_stops() {
    let namespace = TestNamespace::new("reap").await;
    let mut servers = [
        Server::start(&namespace, "a", &[]),
        Server::start(&namespace, "b", &[]),
    ];
    for server in &mut servers {
        server.healthy().await;
    }
    // Which one holds the reaper's Lease (both race for it at start).
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let holder = namespace.lease_holder().await;
        if let Some(i) = holder.as_ref().and_then(|h| {
            servers
                .iter()
                .position(|s| h.ends_with(&s.identity_suffix()))
        }) {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no server holds the Lease ({holder:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let other = 1 - leader;

    // Sandboxes made and renewed to expire in 3 s through one server.
    let expiring = |server: &Endpoint, count: usize, phase: &'static str| {
        let server = server.clone();
        async move {
            let mut ids = Vec::new();
            for _ in 0..count {
                ids.push(server.create(60, json!({"phase": phase})).await);
            }
            let at = Utc::now().trunc_subsecs(0) + chrono::TimeDelta::seconds(3);
            for id in &ids {
                server.renew(id, at).await;
            }
            (ids, at)
        }
    };
    // Made through the server that does not lead: the leader learns of them and of their
    // expiry from its Pod watch only.
    let (first, at) = expiring(&servers[other], 3, "one").await;
    for id in &first {
        for server in &servers {
            let seen = server.until_gone(id, Duration::from_secs(120)).await;
            assert!(
                seen.iter().all(|s| s == "Running" || s == "Stopping"),
                "{id}: {seen:?}"
            );
        }
    }
    eprintln!(
        "the first batch (expired at {at}) was gone from both servers {:?} later",
        (Utc::now() - at).to_std().unwrap_or_default()
    );
    let mut expected = [0, 0];
    expected[leader] = first.len() as u64;
    let counts = [
        servers[0].reaper_actions("deleted").await,
        servers[1].reaper_actions("deleted").await,
    ];
    assert_eq!(
        counts,
        expected,
        "reaper deletes of A and B; the Lease holder is {}",
        ["A", "B"][leader]
    );
    for id in &first {
        assert_eq!(servers[leader].reaped_in_log(id), 1, "{id}");
        assert_eq!(servers[other].reaped_in_log(id), 0, "{id}");
    }
    for server in &servers {
        assert_eq!(server.reaper_actions("failed").await, 0);
    }

    // The leader stops and gives up the Lease (no waiting for it to run out); the other takes
    // over: what expires now is reaped by it.
    let stopped = Instant::now();
    assert_eq!(servers[leader].terminate().await, Some(0));
    let after_stop = namespace.lease_holder().await;
    assert!(
        after_stop
            .as_ref()
            .is_none_or(|h| !h.ends_with(&servers[leader].identity_suffix())),
        "the stopped leader still holds the Lease: {after_stop:?}"
    );
    let (second, at) = expiring(&servers[other], 2, "two").await;
    for id in &second {
        servers[other]
            .until_gone(id, Duration::from_secs(180))
            .await;
    }
    eprintln!(
        "takeover: the second batch (expired at {at}) was gone {:?} after the leader stopped",
        stopped.elapsed()
    );
    assert_eq!(
        servers[other].reaper_actions("deleted").await,
        second.len() as u64
    );
    for id in &second {
        assert_eq!(servers[other].reaped_in_log(id), 1, "{id}");
    }
    let holder = namespace.lease_holder().await.unwrap();
    assert!(
        holder.ends_with(&servers[other].identity_suffix()),
        "the Lease is held by {holder} after the takeover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_and_renewals_through_two_servers_lose_nothing() {
    const KEYS: usize = 40;
    // Not in order: the expiry that must stick is the last renewal's, not the latest time.
    const RENEWALS: [i64; 10] = [7, 3, 9, 1, 8, 2, 10, 4, 6, 5];
    let namespace = TestNamespace::new("patch").await;
    let mut servers = [
        Server::start(&namespace, "a", &[]),
        Server::start(&namespace, "b", &[]),
    ];
    for server in &mut servers {
        server.healthy().await;
    }
    let id = servers[0].create(600, json!({"origin": "a"})).await;
    // The operator's labels (kubernetes.labels) are on the Pod.
    let pod = namespace
        .pods()
        .get(&format!("sandbox-{id}"))
        .await
        .unwrap();
    assert_eq!(
        pod.metadata
            .labels
            .unwrap_or_default()
            .get("berth.test")
            .map(String::as_str),
        Some("1")
    );
    // B knows it once its Pod watch has shown it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while servers[1]
        .call("GET", &format!("/v1/sandboxes/{id}"), None)
        .await
        .0
        != 200
    {
        assert!(Instant::now() < deadline, "B never saw {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let addresses = [servers[0].address.clone(), servers[1].address.clone()];
    let mut patches = tokio::task::JoinSet::new();
    for i in 0..KEYS {
        let (address, id) = (addresses[i % 2].clone(), id.clone());
        patches.spawn(async move {
            let server = Endpoint { address };
            let body = json!({format!("key-{i}"): format!("value-{i}")});
            let path = format!("/v1/sandboxes/{id}/metadata");
            let mut conflicts = 0;
            loop {
                match server.call("PATCH", &path, Some(&body)).await {
                    (200, patched) => {
                        assert_eq!(
                            patched["metadata"][format!("key-{i}")],
                            body[format!("key-{i}")]
                        );
                        return conflicts;
                    }
                    (409, e) if e["code"] == "SANDBOX::CONFLICT" => conflicts += 1,
                    (status, e) => panic!("patch key-{i}: {status} {e}"),
                }
            }
        });
    }
    let base = Utc::now().trunc_subsecs(0) + chrono::TimeDelta::hours(1);
    let renewals = tokio::spawn({
        let (addresses, id) = (addresses.clone(), id.clone());
        async move {
            let mut conflicts = 0;
            for (j, minutes) in RENEWALS.into_iter().enumerate() {
                let server = Endpoint {
                    address: addresses[j % 2].clone(),
                };
                conflicts += server
                    .renew(&id, base + chrono::TimeDelta::minutes(minutes))
                    .await;
            }
            conflicts
        }
    });
    let mut conflicts = 0;
    while let Some(done) = patches.join_next().await {
        conflicts += done.unwrap();
    }
    let renewal_conflicts = renewals.await.unwrap();
    eprintln!(
        "{KEYS} patches and {} renewals: {conflicts} and {renewal_conflicts} answers 409 SANDBOX::CONFLICT, tried again",
        RENEWALS.len()
    );

    let mut expected: BTreeMap<String, String> = (0..KEYS)
        .map(|i| (format!("key-{i}"), format!("value-{i}")))
        .collect();
    expected.insert("origin".into(), "a".into());
    let last = base + chrono::TimeDelta::minutes(RENEWALS[RENEWALS.len() - 1]);
    for (server, name) in servers.iter().zip(["A", "B"]) {
        // A server's reads come from its Pod watch: the other's last write may still be on its way.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, sandbox) = server
                .call("GET", &format!("/v1/sandboxes/{id}"), None)
                .await;
            assert_eq!(status, 200, "{sandbox}");
            let metadata: BTreeMap<String, String> =
                serde_json::from_value(sandbox["metadata"].clone()).unwrap();
            let settled = metadata == expected && expiry(&sandbox) == Some(last);
            if settled {
                break;
            }
            if Instant::now() >= deadline {
                let missing: Vec<_> = expected
                    .keys()
                    .filter(|k| !metadata.contains_key(*k))
                    .collect();
                panic!(
                    "{name}: missing keys {missing:?}, expiry {:?} (the last renewal's: {last}); {sandbox}",
                    expiry(&sandbox)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The official SDK's high-level `Sandbox.create()` on Kubernetes with the agent injected
/// (`runtime.execd_image`, an init container): its health check reaches the agent at the Pod's
/// address, and again through Berth's proxy (`use_server_proxy=True`) — the one way to reach a
/// Pod from outside the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_reaches_the_agent_of_a_pod_directly_and_through_the_proxy() {
    let python = tokio::task::spawn_blocking(common::sdk_python)
        .await
        .unwrap();
    let namespace = TestNamespace::new("agent").await;
    let run = format!("k8s-agent-{}", std::process::id());
    let mut server = Server::start(
        &namespace,
        "server",
        &[(
            "BERTH_RUNTIME__EXECD_IMAGE",
            "berth-test/execd:latest".to_owned(),
        )],
    );
    server.healthy().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/agent.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .env("BERTH_ADDRESS", &server.address)
        .env("BERTH_API_KEY", KEY)
        .env("BERTH_RUN", &run)
        .output()
        .await
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("--- sdk/agent.py\n{log}");
    assert!(out.status.success(), "sdk/agent.py failed:\n{log}");
    // Through the proxy, the SDK's health check went to the server, not to the Pod.
    assert!(
        log.contains("/proxy/44772/ping"),
        "no health check through the proxy:\n{log}"
    );
    assert_eq!(
        server.terminate().await,
        Some(0),
        "no clean exit on SIGTERM"
    );
}

/// Runs the `berth` command against `address`, isolated from the caller's settings; its exit
/// code, standard output and standard error.
fn berth(address: &str, config_dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut command = std::process::Command::new(common::berth_command());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("BERTH_") || name.starts_with("OPEN_SANDBOX_") {
            command.env_remove(&*name);
        }
    }
    let out = command
        .args(args)
        .env("OPEN_SANDBOX_DOMAIN", address)
        .env("OPEN_SANDBOX_API_KEY", KEY)
        .env("BERTH_CLI_CONFIG", config_dir.join("berth.toml"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_berth_command_drives_a_kubernetes_server() {
    let mut namespace = TestNamespace::new("cli").await;
    // The README's claim, bound in advance to a volume of this test's namespace.
    namespace.volume_for("sessions").await;
    let mut server = Server::start(&namespace, "server", &[]);
    server.healthy().await;
    let (address, dir) = (server.address.clone(), namespace.dir.clone());

    // The README's walkthrough, as written: a session's file outlives its Pod.
    let output =
        tokio::task::spawn_blocking(move || common::run_readme_blocks(&address, KEY, IMAGE, &dir))
            .await
            .unwrap();
    assert!(
        output.lines().any(|line| line == "notes of session 7"),
        "{output}"
    );
    let note = std::fs::read_to_string(
        namespace
            .dir
            .join("volumes/sessions/uid-1/session-7/notes.txt"),
    )
    .unwrap();
    assert_eq!(note, "notes of session 7\n");

    // The other commands, on a Pod.
    let (address, dir) = (server.address.clone(), namespace.dir.clone());
    let run = move |args: &[&str]| berth(&address, &dir, args);
    let (code, id, err) = run(&[
        "create",
        "--image",
        IMAGE,
        "--timeout",
        "10m",
        "--cpu",
        "50m",
        "--memory",
        "32Mi",
        "--label",
        "suite=cli",
        "--",
        "sleep",
        "600",
    ]);
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_owned();
    // Its Pod (the walkthrough's may still be going, a Pod's deletion takes its grace period).
    let selector = ListParams::default().labels(&format!("opensandbox.io/id={id}"));
    let pods = namespace.pods().list(&selector).await.unwrap();
    assert_eq!(pods.items.len(), 1, "one Pod for sandbox {id}");

    let (code, out, err) = run(&["get", &id, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let sandbox: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sandbox["status"]["state"], "Running");
    assert_eq!(sandbox["metadata"]["suite"], "cli");

    let (code, out, err) = run(&["label", &id, "stage=review", "suite-"]);
    assert_eq!((code, out.as_str()), (0, "stage=review\n"), "{err}");
    let (code, _, err) = run(&["renew", &id, "--for", "2h"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(&["get", &id, "-o", "json"]);
    let renewed = expiry(&serde_json::from_str(&out).unwrap()).unwrap();
    assert!(
        renewed > Utc::now() + chrono::Duration::minutes(110),
        "{out}"
    );

    // The direct endpoint is the Pod's address.
    let (code, out, err) = run(&["endpoint", &id, "8000"]);
    assert_eq!(code, 0, "{err}");
    let pod_ip = namespace.pods().list(&selector).await.unwrap().items[0]
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap();
    assert_eq!(out, format!("{pod_ip}:8000\n"));

    // A Pod cannot pause: the server's code, exit status 1.
    let (code, _, err) = run(&["pause", &id]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("SANDBOX::UNSUPPORTED_FEATURE"), "{err}");

    let (code, out, err) = run(&["ls", "--label", "stage=review"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().nth(1).unwrap().starts_with(&id), "{out}");
    let (code, out, err) = run(&["rm", "--label", "stage=review", "--yes"]);
    assert_eq!((code, out.trim()), (0, id.as_str()), "{err}");
    // The Pod goes within its grace period; until then the sandbox is seen going, never
    // running.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, out, err) = run(&["get", &id, "-o", "json"]);
        if code == 1 {
            assert!(err.contains("SANDBOX::NOT_FOUND"), "{err}");
            break;
        }
        assert_eq!(code, 0, "{err}");
        let state = serde_json::from_str::<Value>(&out).unwrap()["status"]["state"].clone();
        assert_eq!(state, "Stopping", "{out}");
        assert!(Instant::now() < deadline, "{id} still there after 60 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    assert_eq!(
        server.terminate().await,
        Some(0),
        "no clean exit on SIGTERM"
    );
}

/// The sandboxes of `suite` a server lists (ids).
async fn listed(server: &Endpoint, suite: &str) -> std::collections::BTreeSet<String> {
    let (status, page) = server
        .call(
            "GET",
            &format!("/v1/sandboxes?metadata=crash%3D{suite}&pageSize=200"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The ids of the sandbox Pods in the namespace that are not being deleted.
async fn live_pods(namespace: &TestNamespace) -> std::collections::BTreeSet<String> {
    namespace
        .pods()
        .list(&ListParams::default().labels("berth.managed-by=berth"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name?.strip_prefix("sandbox-").map(str::to_owned))
        .collect()
}

/// Polls (bounded) until every sandbox of `suite` the server lists is `Running` and the live
/// sandbox Pods are exactly those: each sandbox whole (record and Pod) or gone (neither).
async fn until_whole_or_gone(
    namespace: &TestNamespace,
    server: &Endpoint,
    suite: &str,
) -> std::collections::BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let listed = listed(server, suite).await;
        let pods = live_pods(namespace).await;
        let mut running = true;
        for id in &listed {
            let (status, sandbox) = server
                .call("GET", &format!("/v1/sandboxes/{id}"), None)
                .await;
            running &= status == 200 && sandbox["status"]["state"] == "Running";
        }
        if running && listed == pods {
            return listed;
        }
        assert!(
            Instant::now() < deadline,
            "{suite}: not whole or gone 120 s after the restart: listed {listed:?}, live Pods {pods:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// SIGKILL during 20 concurrent creates (each with a claim on its own subPath), then a new
/// server on the same namespace: every sandbox is whole (listed, `Running`, its Pod live) or
/// gone (neither), and every create acknowledged before the kill is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_20_concurrent_creates_leaves_each_pod_sandbox_whole_or_gone() {
    let mut namespace = TestNamespace::new("crash-creates").await;
    namespace.volume_for("sessions").await;
    let mut server = Server::start(&namespace, "a", &[]);
    server.healthy().await;
    let address = server.address.clone();
    let creates: Vec<_> = (0..20)
        .map(|n| {
            let server = Endpoint {
                address: address.clone(),
            };
            tokio::spawn(async move {
                let body = json!({
                    "image": {"uri": IMAGE},
                    "entrypoint": ["sleep", "600"],
                    "resourceLimits": {"cpu": "10m", "memory": "16Mi"},
                    "metadata": {"crash": "creates"},
                    "volumes": [{"name": "work", "pvc": {"claimName": "sessions"},
                        "mountPath": "/workspace", "subPath": format!("uid-1-session-{n}")}],
                });
                match request(&server.address, "POST", "/v1/sandboxes", Some(&body)).await {
                    Ok((202, text)) => Some(
                        serde_json::from_str::<Value>(&text).unwrap()["id"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                    ),
                    // Cut off by the kill (or answered as it began).
                    _ => None,
                }
            })
        })
        .collect();
    // Killed once some creates have been answered and others are still on their way.
    let deadline = Instant::now() + Duration::from_secs(60);
    while creates.iter().filter(|c| c.is_finished()).count() < 3 {
        assert!(Instant::now() < deadline, "no create answered within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let mut acknowledged = std::collections::BTreeSet::new();
    for create in creates {
        if let Some(id) = create.await.unwrap() {
            acknowledged.insert(id);
        }
    }
    let mut server = Server::start(&namespace, "b", &[]);
    server.healthy().await;
    let whole = until_whole_or_gone(&namespace, &server, "creates").await;
    eprintln!(
        "SIGKILL during 20 creates on Kubernetes: {} acknowledged, {} whole after the restart, {} gone",
        acknowledged.len(),
        whole.len(),
        20 - whole.len()
    );
    assert!(
        acknowledged.is_subset(&whole),
        "acknowledged creates lost: {:?}",
        acknowledged.difference(&whole).collect::<Vec<_>>()
    );
    assert!(acknowledged.len() < 20, "the kill came after every create");
    for id in &whole {
        assert_eq!(
            server
                .call("DELETE", &format!("/v1/sandboxes/{id}"), None)
                .await
                .0,
            204
        );
    }
    assert!(live_pods(&namespace).await.is_empty());
    server.terminate().await;
}

/// Renewals and patches acknowledged before a SIGKILL survive it; sandboxes being deleted or
/// expiring when it comes are whole or gone after the restart, and the expired ones go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_patches_deletes_and_expiries_cut_by_a_crash_end_whole_or_gone() {
    let namespace = TestNamespace::new("crash-deletes").await;
    let mut server = Server::start(&namespace, "a", &[]);
    server.healthy().await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(server.create(1800, json!({"crash": "deletes"})).await);
    }
    // Acknowledged before the kill: a renewal and a patch of each of the first four.
    let renewed_to = Utc::now().trunc_subsecs(0) + chrono::TimeDelta::hours(2);
    for id in &ids[..4] {
        server.renew(id, renewed_to).await;
        let (status, body) = server
            .call(
                "PATCH",
                &format!("/v1/sandboxes/{id}/metadata"),
                Some(&json!({"kept": "yes"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // Four expire in two seconds; four are deleted concurrently; the kill comes mid-way.
    let soon = Utc::now().trunc_subsecs(0) + chrono::TimeDelta::seconds(2);
    for id in &ids[4..8] {
        server.renew(id, soon).await;
    }
    let deletes: Vec<_> = ids[8..]
        .iter()
        .map(|id| {
            let (address, id) = (server.address.clone(), id.clone());
            tokio::spawn(async move {
                let answer =
                    request(&address, "DELETE", &format!("/v1/sandboxes/{id}"), None).await;
                (id, answer.map(|(status, _)| status))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let mut deleted = Vec::new();
    for delete in deletes {
        if let (id, Ok(204)) = delete.await.unwrap() {
            deleted.push(id);
        }
    }
    let mut server = Server::start(&namespace, "b", &[]);
    server.healthy().await;
    // The expired ones go (the new server's reaper), the deleted ones are gone.
    for id in &ids[4..8] {
        server.until_gone(id, Duration::from_secs(60)).await;
    }
    let whole = until_whole_or_gone(&namespace, &server, "deletes").await;
    eprintln!(
        "SIGKILL during 4 deletes and 4 expiries on Kubernetes: {} deletes acknowledged; after the restart {} whole, the expired gone",
        deleted.len(),
        whole.len()
    );
    for id in &deleted {
        assert!(!whole.contains(id), "acknowledged delete of {id} undone");
    }
    for id in &ids[..4] {
        let (status, sandbox) = server
            .call("GET", &format!("/v1/sandboxes/{id}"), None)
            .await;
        assert_eq!(status, 200, "{sandbox}");
        assert_eq!(expiry(&sandbox), Some(renewed_to), "renewal of {id} lost");
        assert_eq!(sandbox["metadata"]["kept"], "yes", "patch of {id} lost");
    }
    for id in &whole {
        server
            .call("DELETE", &format!("/v1/sandboxes/{id}"), None)
            .await;
    }
    assert!(live_pods(&namespace).await.is_empty());
    server.terminate().await;
}
