//! What Berth ships for a cluster, on the test cluster's real API server (`cargo xtask k8s-env
//! up`; kubeconfig `XTASK_K8S_KUBECONFIG`): the manifests in `deploy/kubernetes/` and the objects
//! the renderer makes (its insta snapshots) are accepted with server-side dry run and stored as
//! sent — the API server is v1.20, which drops fields it does not know without a word — and the
//! runtime does its whole job with a token bound only to the shipped Role, and no more.
//!
//! Each test works in namespaces of its own (`berth.test=1`), deleted also when it panics; the
//! tests fail, never skip, without a cluster.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod cluster;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_core::model::{MetadataPatch, SandboxState};
use berth_core::runtime::{Runtime, RuntimeError};
use berth_k8s::config::KubernetesConfig;
use berth_k8s::runtime::KubernetesRuntime;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolumeClaim, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, PostParams, WatchParams};
use kube::discovery::{ApiResource, Scope};
use serde_json::{Value, json};

use cluster::{IMAGE, TestNamespace, VolumePool, request, until_gone};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every YAML document of every `*.yaml` in `deploy/kubernetes/`, with its file name, in the
/// order of the file names (the apply order the README gives).
fn manifests() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{name} is not YAML: {e}"));
        documents.extend(
            parsed
                .into_iter()
                .filter(|d| !d.is_null())
                .map(|d| (name.clone(), d)),
        );
    }
    documents
}

/// The insta snapshots of the renderer, each the JSON (or YAML) after insta's header.
fn snapshots() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).unwrap();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            // `---`, insta's header, `---`, then the snapshot.
            let body = text
                .strip_prefix("---\n")
                .and_then(|rest| rest.split_once("\n---\n"))
                .map_or(text.as_str(), |(_, body)| body);
            let value = serde_json::from_str(body)
                .or_else(|_| serde_saphyr::from_str(body))
                .unwrap_or_else(|e| panic!("snapshot {name} is neither JSON nor YAML: {e}"));
            (name, value)
        })
        .collect()
}

/// Every Kubernetes object (`apiVersion` + `kind`) inside `value`, outermost first.
fn objects_in(value: &Value, found: &mut Vec<Value>) {
    match value {
        Value::Object(map) if map.contains_key("apiVersion") && map.contains_key("kind") => {
            found.push(value.clone());
        }
        Value::Object(map) => map.values().for_each(|v| objects_in(v, found)),
        Value::Array(items) => items.iter().for_each(|v| objects_in(v, found)),
        _ => {}
    }
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// Go encodes these as absent when the field has `omitempty`, with the same meaning.
fn is_empty_value(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

/// Where `stored` does not hold what was `sent`: every field sent must come back with the same
/// value. The server may add fields (defaults) and append to arrays (admission adds
/// tolerations); it may not drop or change anything but an empty value.
fn differences(sent: &Value, stored: &Value, at: &str, out: &mut Vec<String>) {
    match (sent, stored) {
        (Value::Object(sent), Value::Object(stored)) => {
            for (key, value) in sent {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match stored.get(key) {
                    Some(kept) => differences(value, kept, &path, out),
                    None if is_empty_value(value) => {}
                    None => out.push(format!("{path}: sent {value}, dropped by the server")),
                }
            }
        }
        (Value::Array(sent), Value::Array(stored)) => {
            if stored.len() < sent.len() {
                out.push(format!(
                    "{at}: sent {} elements, the server kept {}",
                    sent.len(),
                    stored.len()
                ));
            }
            for (i, (s, k)) in sent.iter().zip(stored).enumerate() {
                differences(s, k, &format!("{at}[{i}]"), out);
            }
        }
        (sent, stored) if sent == stored => {}
        (sent, stored) => out.push(format!("{at}: sent {sent}, the server stored {stored}")),
    }
}

/// What the server is expected to store for `sent`: a Secret's `stringData` is write-only and
/// lands base64-encoded in `data`.
fn as_stored(sent: &Value) -> Value {
    let mut expected = sent.clone();
    if kind(sent) == "Secret"
        && let Some(Value::Object(strings)) = expected
            .as_object_mut()
            .and_then(|o| o.remove("stringData"))
    {
        let data = expected["data"].as_object().cloned().unwrap_or_default();
        let mut data = data;
        for (key, value) in strings {
            let bytes =
                k8s_openapi::ByteString(value.as_str().unwrap_or_default().as_bytes().to_vec());
            data.insert(key, serde_json::to_value(bytes).unwrap());
        }
        expected["data"] = Value::Object(data);
    }
    expected
}

/// A redacted registry Secret made valid again: the server checks that a
/// `kubernetes.io/dockerconfigjson` Secret holds a JSON document.
fn unredacted(mut object: Value) -> Value {
    if kind(&object) == "Secret" && object["type"] == "kubernetes.io/dockerconfigjson" {
        let document = r#"{"auths":{}}"#;
        if let Some(strings) = object["stringData"].as_object_mut() {
            strings.insert(".dockerconfigjson".into(), document.into());
        }
        if let Some(data) = object["data"].as_object_mut() {
            let bytes = k8s_openapi::ByteString(document.as_bytes().to_vec());
            data.insert(
                ".dockerconfigjson".into(),
                serde_json::to_value(bytes).unwrap(),
            );
        }
    }
    object
}

/// The resource of `object`'s kind and its scope, as the server's discovery describes them.
async fn discover(client: &kube::Client, object: &Value) -> (ApiResource, Scope) {
    let api_version = object["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind(object));
    let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the server does not serve {api_version} {}: {e}",
                kind(object)
            )
        });
    (resource, capabilities.scope)
}

/// The API of `object`'s kind, in `object`'s namespace when the kind is namespaced.
async fn api_for(client: &kube::Client, object: &Value) -> Api<DynamicObject> {
    match discover(client, object).await {
        (resource, Scope::Namespaced) => {
            let namespace = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_else(|| panic!("{} {} names no namespace", kind(object), name(object)));
            Api::namespaced_with(client.clone(), namespace, &resource)
        }
        (resource, Scope::Cluster) => Api::all_with(client.clone(), &resource),
    }
}

/// Posts `object` with `dryRun=All` and returns what the server would store.
async fn dry_run(client: &kube::Client, object: &Value) -> Result<Value, kube::Error> {
    let api = api_for(client, object).await;
    let typed: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let stored = api.create(&params, &typed).await?;
    Ok(serde_json::to_value(stored).unwrap())
}

/// Creates `object` for real.
async fn create(client: &kube::Client, object: &Value) {
    let api = api_for(client, object).await;
    let typed: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    api.create(&PostParams::default(), &typed)
        .await
        .unwrap_or_else(|e| panic!("creating {} {}: {e}", kind(object), name(object)));
}

/// Moves `object` from the manifests' namespaces to the test's (`moved`): its own namespace and
/// those of RoleBinding subjects. A namespace the map does not know is a failure: every
/// manifest must be in one of the namespaces the README describes.
fn relocate(mut object: Value, moved: &BTreeMap<&str, String>) -> Value {
    let rename = |value: &mut Value| {
        if let Some(from) = value.as_str() {
            let to = moved.get(from).unwrap_or_else(|| {
                panic!("a manifest uses namespace {from:?}, not one of {moved:?}")
            });
            *value = Value::String(to.clone());
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

/// The manifests' two namespaces: the server's and the sandboxes'.
const SERVER_NAMESPACE: &str = "berth";
const SANDBOX_NAMESPACE: &str = "berth-sandboxes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_manifest_is_accepted_and_stored_as_written() {
    let server = TestNamespace::empty("deploy-srv").await;
    let sandboxes = TestNamespace::empty("deploy-sbx").await;
    let moved = BTreeMap::from([
        (SERVER_NAMESPACE, server.name.clone()),
        (SANDBOX_NAMESPACE, sandboxes.name.clone()),
    ]);
    let documents = manifests();
    let mut failures = Vec::new();
    let mut stored_by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (file, document) in &documents {
        let sent = if kind(document) == "Namespace" {
            // A namespace of the manifests must not exist yet for its create to pass; a dry
            // run under a fresh name is the same check.
            assert!(
                moved.contains_key(name(document)),
                "{file}: namespace {:?} is not one the README describes",
                name(document)
            );
            let mut renamed = document.clone();
            renamed["metadata"]["name"] = format!("{}-ns", moved[name(document)]).into();
            renamed
        } else {
            assert!(
                document["metadata"]["namespace"].is_string()
                    || discover(&server.client, document).await.1 == Scope::Cluster,
                "{file}: {} {} names no namespace (it would land in the applier's)",
                kind(document),
                name(document)
            );
            relocate(document.clone(), &moved)
        };
        match dry_run(&server.client, &sent).await {
            Ok(stored) => {
                let mut lost = Vec::new();
                differences(&as_stored(&sent), &stored, "", &mut lost);
                failures.extend(
                    lost.into_iter()
                        .map(|l| format!("{file}: {} {}: {l}", kind(document), name(document))),
                );
                stored_by_kind
                    .entry(kind(document).to_owned())
                    .or_default()
                    .push(stored);
            }
            Err(e) => failures.push(format!(
                "{file}: {} {} refused: {e}",
                kind(document),
                name(document)
            )),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let kinds: Vec<&str> = stored_by_kind.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "Namespace",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ],
        "the manifests' kinds"
    );
    println!("{} manifests accepted as written", documents.len());

    // The pieces fit together: the Deployment runs as the bound ServiceAccount, and the
    // configuration puts sandboxes where the Role grants rights.
    let one = |kind: &str| {
        let all = &stored_by_kind[kind];
        assert_eq!(all.len(), 1, "one {kind} expected");
        all[0].clone()
    };
    let account = one("ServiceAccount");
    let binding = one("RoleBinding");
    let role = one("Role");
    let deployment = one("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["namespace"], server.name.as_str());
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(role["metadata"]["namespace"], sandboxes.name.as_str());
    let config = one("ConfigMap");
    let toml = config["data"]["berth.toml"].as_str().unwrap();
    let configured_namespace = toml
        .lines()
        .find_map(|l| l.trim().strip_prefix("namespace = "))
        .map(|v| v.trim_matches('"'));
    assert_eq!(configured_namespace, Some(SANDBOX_NAMESPACE), "{toml}");
    // Hardened, as stored by the server (not only as written).
    let container = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/health");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_snapshot_is_accepted_and_stored_as_rendered() {
    let namespace = TestNamespace::empty("snapshots").await;
    let snapshots = snapshots();
    assert!(!snapshots.is_empty(), "no snapshots in tests/snapshots");
    let mut failures = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    let mut checked = 0;
    for (file, snapshot) in &snapshots {
        let mut objects = Vec::new();
        objects_in(snapshot, &mut objects);
        for object in objects {
            let mut sent = unredacted(object);
            sent["metadata"]["namespace"] = namespace.name.clone().into();
            // What a Pod names must exist for admission (claims and Secrets need not).
            if let Some(account) = sent["spec"]["serviceAccountName"].as_str() {
                ensure_service_account(&namespace, account).await;
            }
            let _runtime_class = match sent["spec"]["runtimeClassName"].as_str() {
                Some(class) => Some(RuntimeClassFor::ensure(&namespace.client, class).await),
                None => None,
            };
            match dry_run(&namespace.client, &sent).await {
                Ok(stored) => {
                    let mut lost = Vec::new();
                    differences(&as_stored(&sent), &stored, "", &mut lost);
                    failures.extend(
                        lost.into_iter()
                            .map(|l| format!("{file}: {} {}: {l}", kind(&sent), name(&sent))),
                    );
                }
                Err(e) => failures.push(format!(
                    "{file}: {} {} refused: {e}",
                    kind(&sent),
                    name(&sent)
                )),
            }
            kinds.insert(kind(&sent).to_owned());
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    for expected in ["Pod", "Secret", "PersistentVolumeClaim"] {
        assert!(
            kinds.contains(expected),
            "no {expected} in any snapshot: {kinds:?}"
        );
    }
    println!(
        "{checked} objects from {} snapshots accepted as rendered",
        snapshots.len()
    );
}

async fn ensure_service_account(namespace: &TestNamespace, name: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(namespace.client.clone(), &namespace.name);
    if accounts.get_opt(name).await.unwrap().is_none() {
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        accounts
            .create(&PostParams::default(), &account)
            .await
            .unwrap();
    }
}

/// A RuntimeClass a snapshot's Pod names (admission refuses a Pod naming a missing one);
/// deleted on drop if the test made it.
struct RuntimeClassFor {
    made: Option<(kube::Client, String)>,
}

impl RuntimeClassFor {
    async fn ensure(client: &kube::Client, name: &str) -> Self {
        let object = json!({
            "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": name, "labels": {"berth.test": "1"}},
            "handler": "runc",
        });
        let api = api_for(client, &object).await;
        if api.get_opt(name).await.unwrap().is_some() {
            return Self { made: None };
        }
        let typed: DynamicObject = serde_json::from_value(object).unwrap();
        match api.create(&PostParams::default(), &typed).await {
            Ok(_) => Self {
                made: Some((client.clone(), name.to_owned())),
            },
            // Made meanwhile by another test: it exists, and it is theirs.
            Err(kube::Error::Api(s)) if s.code == 409 => Self { made: None },
            Err(e) => panic!("creating RuntimeClass {name}: {e}"),
        }
    }
}

impl Drop for RuntimeClassFor {
    fn drop(&mut self) {
        let Some((client, name)) = self.made.take() else {
            return;
        };
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    let api: Api<k8s_openapi::api::node::v1::RuntimeClass> = Api::all(client);
                    let _ = api.delete(&name, &Default::default()).await;
                });
        })
        .join();
    }
}

/// A kubeconfig file holding the test cluster's server and CA with `token` as its only
/// credential; removed on drop.
struct TokenKubeconfig {
    dir: PathBuf,
    path: PathBuf,
}

impl TokenKubeconfig {
    fn write(token: &str, namespace: &str) -> Self {
        let admin = kube::config::Kubeconfig::read_from(cluster::kubeconfig()).unwrap();
        let context = admin
            .current_context
            .as_deref()
            .or_else(|| admin.contexts.first().map(|c| c.name.as_str()))
            .unwrap();
        let cluster_name = admin
            .contexts
            .iter()
            .find(|c| c.name == context)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .unwrap();
        let cluster = admin
            .clusters
            .iter()
            .find(|c| c.name == cluster_name)
            .and_then(|c| c.cluster.clone())
            .unwrap();
        let file = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": serde_json::to_value(cluster).unwrap()}],
            "users": [{"name": "berth", "user": {"token": token}}],
            "contexts": [{"name": "berth", "context": {"cluster": "test", "user": "berth", "namespace": namespace}}],
            "current-context": "berth",
        });
        let dir = std::env::temp_dir().join(format!("berth-deploy-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("kubeconfig");
        std::fs::write(&path, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        Self { dir, path }
    }

    async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        kube::Client::try_from(config).unwrap()
    }
}

impl Drop for TokenKubeconfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `what`, or a failure after a bound far above its normal time (a watch refused by RBAC
/// retries forever: the test must fail, not hang).
async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(180), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 180 s"))
}

/// Waits (bounded) until the token controller has filled the Secret `name` in, and returns the
/// token.
async fn service_account_token(namespace: &TestNamespace, account: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(namespace.client.clone(), &namespace.name);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": format!("{account}-token-test"),
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
            .get(&format!("{account}-token-test"))
            .await
            .unwrap()
            .data
            .and_then(|d| d.get("token").cloned());
        if let Some(token) = filled {
            return String::from_utf8(token.0).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the token controller did not fill in a token for {account} within 30 s");
}

/// Warnings and errors logged while this binary runs that name a refusal (403, forbidden):
/// Berth's background tasks (the watches, the Lease, the periodic sweep) log a failed call and
/// retry, so a right the Role lacks shows up here rather than as a failed call.
static REFUSALS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

struct RefusalLog;

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl tracing::Subscriber for RefusalLog {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = String::new();
        event.record(&mut Fields(&mut text));
        if text.contains("403") || text.to_lowercase().contains("forbidden") {
            REFUSALS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!("{}: {text}", event.metadata().target()));
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn assert_nothing_refused() {
    let refusals = REFUSALS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert!(
        refusals.is_empty(),
        "background calls refused: {refusals:#?}"
    );
}

fn assert_forbidden<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden for Berth's token, got {other:?}"),
    }
}

/// Berth with a token bound only to the shipped Role: a create with a claim it makes and
/// deletes with the sandbox and with registry credentials, metadata, renewal, a conditional
/// reap, a delete, the sweep and the reaper's Lease all work; what the Role does not grant is
/// refused, so this is not an admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_does_its_whole_job_with_only_the_roles_rights() {
    // Process-wide; set once (no other test here installs one).
    let _ = tracing::subscriber::set_global_default(RefusalLog);
    let server = TestNamespace::empty("rbac-srv").await;
    let sandboxes = TestNamespace::empty("rbac-sbx").await;
    let moved = BTreeMap::from([
        (SERVER_NAMESPACE, server.name.clone()),
        (SANDBOX_NAMESPACE, sandboxes.name.clone()),
    ]);
    let rbac: Vec<Value> = manifests()
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| ["ServiceAccount", "Role", "RoleBinding"].contains(&kind(d)))
        .map(|d| relocate(d, &moved))
        .collect();
    assert_eq!(rbac.len(), 3, "one ServiceAccount, Role and RoleBinding");
    for object in &rbac {
        create(&server.client, object).await;
    }
    let account = rbac
        .iter()
        .find(|d| kind(d) == "ServiceAccount")
        .map(|d| name(d).to_owned())
        .unwrap();
    let token = service_account_token(&server, &account).await;
    let kubeconfig = TokenKubeconfig::write(&token, &sandboxes.name);
    let berth = kubeconfig.client().await;

    // Not an admin: its own namespace, other namespaces, cluster objects and verbs the Role
    // leaves out are refused. It is authenticated (403, not 401) and can list its Pods.
    Api::<Pod>::namespaced(berth.clone(), &sandboxes.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    // The event watch only logs a refusal and retries: asked directly, as the runtime asks.
    let events = Api::<Event>::namespaced(berth.clone(), &sandboxes.name);
    events
        .list(&ListParams::default().fields(berth_k8s::events::WATCHED_EVENTS))
        .await
        .unwrap();
    let _ = events
        .watch(
            &WatchParams::default()
                .fields(berth_k8s::events::WATCHED_EVENTS)
                .timeout(1),
            "0",
        )
        .await
        .unwrap();
    assert_forbidden(
        "listing Pods in the server's own namespace",
        Api::<Pod>::namespaced(berth.clone(), &server.name)
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "reading Secrets in the server's own namespace",
        Api::<Secret>::namespaced(berth.clone(), &server.name)
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "listing Pods in kube-system",
        Api::<Pod>::namespaced(berth.clone(), "kube-system")
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "listing nodes",
        Api::<Node>::all(berth.clone())
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "reading a Secret's value in the sandbox namespace",
        Api::<Secret>::namespaced(berth.clone(), &sandboxes.name)
            .get("anything")
            .await,
    );
    assert_forbidden(
        "deleting every Pod of the sandbox namespace at once",
        Api::<Pod>::namespaced(berth.clone(), &sandboxes.name)
            .delete_collection(&Default::default(), &ListParams::default())
            .await,
    );
    assert_forbidden(
        "binding a Role (granting itself more)",
        Api::<RoleBinding>::namespaced(berth.clone(), &sandboxes.name)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": "more"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                    "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": server.name}],
                }))
                .unwrap(),
            )
            .await,
    );
    assert_forbidden(
        "reading a Lease other than Berth's",
        Api::<Lease>::namespaced(berth.clone(), &sandboxes.name)
            .get("someone-else")
            .await,
    );

    let _pool = VolumePool::new(&sandboxes, 1).await;
    let mut config = KubernetesConfig::new(&sandboxes.name);
    config.kubeconfig = Some(kubeconfig.path.clone());
    config.image_pull_policy = Some("Never".into());
    config.start_timeout = Duration::from_secs(60);
    config.delete_grace_period = Duration::from_secs(1);
    config.extra_labels.insert("berth.test".into(), "1".into());
    config.lease_identity = "deploy-test".into();
    let runtime = bounded("connecting", KubernetesRuntime::connect(config))
        .await
        .unwrap();

    let created = bounded(
        "create",
        runtime.create(request(
            "rbac-1",
            json!({
                "image": {"uri": IMAGE, "auth": {"username": "bot", "password": "not-a-secret"}},
                "metadata": {"team": "ml"},
                "volumes": [{"name": "work", "mountPath": "/workspace",
                    "pvc": {"claimName": "rbac-work", "createIfNotExists": true,
                            "deleteOnSandboxTermination": true}}],
            }),
        )),
    )
    .await
    .unwrap();
    assert_eq!(created.status.state, SandboxState::Running);
    // What the create made, as the admin sees it: owned by the Pod, so they go with it.
    let pod = sandboxes.pods().get("sandbox-rbac-1").await.unwrap();
    let pod_uid = pod.metadata.uid.clone().unwrap();
    let owned_by_pod = |owners: Option<
        Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    >| { owners.unwrap_or_default().iter().any(|o| o.uid == pod_uid) };
    let admin_secrets: Api<Secret> = Api::namespaced(sandboxes.client.clone(), &sandboxes.name);
    let registry = admin_secrets.get("sandbox-rbac-1-registry").await.unwrap();
    assert!(
        owned_by_pod(registry.metadata.owner_references),
        "registry Secret not owned by the Pod"
    );
    let admin_claims: Api<PersistentVolumeClaim> =
        Api::namespaced(sandboxes.client.clone(), &sandboxes.name);
    let claim = admin_claims.get("rbac-work").await.unwrap();
    assert!(
        owned_by_pod(claim.metadata.owner_references),
        "claim not owned by the Pod"
    );

    let patch = MetadataPatch::from_request(
        &serde_json::from_value(json!({"team": null, "step": "2"})).unwrap(),
    )
    .unwrap();
    let patched = bounded(
        "metadata patch",
        runtime.patch_metadata(&created.id, &patch),
    )
    .await
    .unwrap();
    assert_eq!(
        patched
            .metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>(),
        [("step".to_owned(), "2".to_owned())]
    );
    let later = created.expires_at.unwrap() + chrono::TimeDelta::try_hours(1).unwrap();
    assert_eq!(
        bounded("renew", runtime.renew(&created.id, later))
            .await
            .unwrap(),
        later
    );
    // Not expired yet: the reaper's conditional delete reads the Pod and leaves it.
    assert!(
        !bounded(
            "delete_if_expired",
            runtime.delete_if_expired(&created.id, chrono::Utc::now())
        )
        .await
        .unwrap()
    );

    // The reaper's Lease: taken, then renewed (an update) by this token.
    let leases: Api<Lease> = Api::namespaced(sandboxes.client.clone(), &sandboxes.name);
    let first_renewal = bounded("taking the Lease", async {
        loop {
            if runtime.leads_reaping().await
                && let Some(lease) = leases.get_opt("berth-reaper").await.unwrap()
            {
                return lease.spec.unwrap();
            }
            // A Lease call the Role refuses is only logged: fail now, not at the bound.
            assert_nothing_refused();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(
        first_renewal.holder_identity.as_deref(),
        Some("deploy-test")
    );
    bounded("renewing the Lease", async {
        loop {
            let now = leases.get("berth-reaper").await.unwrap().spec.unwrap();
            if now.renew_time != first_renewal.renew_time {
                assert_eq!(now.holder_identity.as_deref(), Some("deploy-test"));
                return;
            }
            assert_nothing_refused();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;

    // The sweep, with its deletes: leftovers of a "crashed" create (posted by the admin, as a
    // server that died after posting them would have left them) go with this token.
    let mut sweeper_config = KubernetesConfig::new(&sandboxes.name);
    sweeper_config.kubeconfig = Some(kubeconfig.path.clone());
    sweeper_config.start_timeout = Duration::from_secs(1);
    sweeper_config.lease_identity = "deploy-test-sweeper".into();
    let sweeper = bounded("connecting", KubernetesRuntime::connect(sweeper_config))
        .await
        .unwrap();
    let crashed = request(
        "rbac-crashed",
        json!({"image": {"uri": "berth-test/absent:none", "auth": {"username": "u", "password": "p"}}}),
    );
    let mut render_config = KubernetesConfig::new(&sandboxes.name);
    render_config.image_pull_policy = Some("Never".into());
    // Past the sweeper's 1 s grace, inside the 60 s of `runtime`, whose own periodic sweep (it
    // leads) must not take them first.
    let plan = berth_k8s::render::PodPlan {
        create_deadline: Some(chrono::Utc::now() - chrono::TimeDelta::try_seconds(10).unwrap()),
        ..Default::default()
    };
    let leftovers = berth_k8s::render::render(&render_config, &crashed, &plan).unwrap();
    admin_secrets
        .create(&PostParams::default(), &leftovers.secrets[0])
        .await
        .unwrap();
    sandboxes
        .pods()
        .create(&PostParams::default(), &leftovers.pod)
        .await
        .unwrap();
    bounded("the leftover Pod to fail", async {
        while !sweeper
            .get(&crashed.id)
            .await
            .is_ok_and(|r| r.status.state == SandboxState::Failed)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    // The Secret's creation time has whole seconds: let it age past the sweeper's 1 s grace.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = bounded("sweep", sweeper.sweep_now()).await.unwrap();
    assert_eq!(report.stuck_pods, ["sandbox-rbac-crashed"], "{report:?}");
    assert_eq!(
        report.orphan_secrets,
        [leftovers.secrets[0].metadata.name.clone().unwrap()],
        "{report:?}"
    );
    drop(sweeper);

    // A delete, and the reaper's conditional delete of an expired sandbox.
    bounded("delete", runtime.delete(&created.id))
        .await
        .unwrap();
    bounded("the sandbox to go", until_gone(&runtime, &created.id)).await;
    let reaped = bounded(
        "second create",
        runtime.create(request("rbac-2", json!({}))),
    )
    .await
    .unwrap();
    let past_expiry = reaped.expires_at.unwrap() + chrono::TimeDelta::try_seconds(1).unwrap();
    assert!(
        bounded(
            "delete_if_expired",
            runtime.delete_if_expired(&reaped.id, past_expiry)
        )
        .await
        .unwrap()
    );
    bounded("the reaped sandbox to go", until_gone(&runtime, &reaped.id)).await;
    assert!(matches!(
        runtime.delete(&reaped.id).await,
        Err(RuntimeError::NotFound { .. })
    ));

    drop(runtime);
    assert_nothing_refused();

    // The garbage collector takes the claim and the Secret with the first sandbox's Pod.
    bounded("the claim and Secret to go with their Pod", async {
        while admin_claims.get_opt("rbac-work").await.unwrap().is_some()
            || admin_secrets
                .get_opt("sandbox-rbac-1-registry")
                .await
                .unwrap()
                .is_some()
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
}
