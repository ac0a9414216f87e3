//! The Kubernetes runtime under load, through the real server on the test cluster
//! (`cargo xtask bench k8s` brings the cluster up and runs it; the target is `bench = false`, so a
//! plain `cargo bench` leaves it out). Everything happens in a namespace of the run's own,
//! labelled `berth.test=1` and deleted at the end, also when the run panics:
//!
//! - create→Running through `POST /v1/sandboxes` beside the same Pod created directly and
//!   watched until Running (interleaved rounds, median);
//! - `GET /v1/sandboxes/{id}` and a filtered list page at concurrency 32 on loopback (p50, p99,
//!   requests/s) with 100 and with 1000 sandbox Pods in the server's cache: Pods rendered by
//!   berth-k8s itself, created directly and kept unschedulable (Pending, never on the node);
//! - the server's RSS (VmRSS, VmHWM) idle and after the load.
//!
//! `XTASK_K8S_KUBECONFIG` names the cluster (default `/tmp/berth-k8s/kubeconfig`).
//! `K8S_LOAD_PODS`, `K8S_LOAD_ROUNDS` and `K8S_LOAD_REQUESTS` (per worker) make smaller runs.

#![allow(missing_docs, clippy::unwrap_used)] // A benchmark harness, not an API.

mod harness;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::model::{SandboxId, SandboxSpec};
use berth_core::runtime::CreateSandbox;
use berth_core::validate::StoragePolicy;
use berth_core::wire;
use berth_k8s::config::KubernetesConfig;
use berth_k8s::pod_status::{StartProgress, start_progress};
use berth_k8s::render::{LABEL_MANAGED_BY, MANAGED_BY, PodPlan, render};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};

use harness::kubernetes::{NamespaceGuard, cluster_client};
use harness::{Connection, KEY, percentile};

/// Sandbox Pods in the cache for the last load step (the first has 100).
const PODS: usize = 1000;
/// create→Running measurements of each kind (one more warm-up round is not counted).
const ROUNDS: usize = 20;
const CONCURRENCY: usize = 32;
const REQUESTS_PER_WORKER: usize = 400;
/// Pod creations in flight while the cache is filled.
const CREATE_CONCURRENCY: usize = 16;
const IMAGE: &str = "berth-test/busybox:latest";
/// Grace period of every delete (the server's `kubernetes.delete_grace_period_seconds` too).
const GRACE_SECONDS: u32 = 1;
/// A node label no node has: Pods selecting it stay Pending and never use the node.
const NO_NODE: (&str, &str) = ("berth.test/bench-no-such-node", "true");

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().map_or(default, |n| {
        n.parse()
            .unwrap_or_else(|_| panic!("{name}={n:?}: a number"))
    })
}

/// `GET path`, which must answer 200, as JSON.
async fn get_json(connection: &mut Connection, path: &str) -> serde_json::Value {
    let (status, bytes) = connection.call("GET", path, None).await;
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&bytes));
    serde_json::from_slice(&bytes).unwrap()
}

/// The server's memory: (VmRSS, VmHWM) in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap())
            })
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mean(all: &[Duration]) -> Duration {
    all.iter().sum::<Duration>() / u32::try_from(all.len()).unwrap()
}

/// Runs `CONCURRENCY` workers, each on its own keep-alive connection, calling `path_for(i)`
/// `requests` times; prints the figures under `name` (none for a warm-up) and returns the peak
/// VmRSS seen meanwhile.
async fn load(
    address: &str,
    name: Option<&str>,
    requests: usize,
    path_for: Arc<dyn Fn(usize) -> String + Send + Sync>,
    pid: u32,
) -> u64 {
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let (address, path_for) = (address.to_owned(), path_for.clone());
        workers.push(tokio::spawn(async move {
            let mut connection = Connection::open(&address).await;
            let mut latencies = Vec::with_capacity(requests);
            for i in 0..requests {
                let path = path_for(w * requests + i);
                let t = Instant::now();
                let (status, _) = connection.call("GET", &path, None).await;
                latencies.push(t.elapsed());
                assert_eq!(status, 200, "{path}");
            }
            latencies
        }));
    }
    let mut peak_rss = 0;
    let mut all = Vec::new();
    while !workers.iter().all(|w| w.is_finished()) {
        peak_rss = peak_rss.max(memory_kib(pid).0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    let Some(name) = name else {
        return peak_rss;
    };
    println!(
        "  {name:<40} p50 {:>6.3} ms   p99 {:>6.3} ms   {:>7.0} req/s   ({} requests, concurrency {CONCURRENCY})",
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        all.len() as f64 / elapsed.as_secs_f64(),
        all.len()
    );
    peak_rss
}

/// Stops the server (also when the benchmark panics).
struct ServerGuard(std::process::Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            // Already gone when it exited at startup.
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

/// The create request both paths make: the same image, command, resources and timeout.
fn create_body(metadata: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "image": {"uri": IMAGE},
        "entrypoint": ["sleep", "3600"],
        "resourceLimits": {"cpu": "100m", "memory": "64Mi"},
        "timeout": 3600,
        "metadata": metadata,
    })
}

/// The Pod Berth makes for `body`, rendered by berth-k8s itself with the server's settings.
fn rendered_pod(config: &KubernetesConfig, body: serde_json::Value) -> (String, Pod) {
    let request: wire::CreateSandboxRequest = serde_json::from_value(body).unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    let create = CreateSandbox {
        id: SandboxId::new(&id).unwrap(),
        spec: SandboxSpec::from_request(request, &StoragePolicy::default()).unwrap(),
        created_at: chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 3),
    };
    let objects = render(config, &create, &PodPlan::default()).unwrap();
    (id, objects.pod)
}

/// Bounded wait until `GET /v1/sandboxes/{id}` answers 404 (the watch saw the Pod go).
async fn until_gone_from_berth(address: &str, id: &str) {
    let mut connection = Connection::open(address).await;
    let started = Instant::now();
    loop {
        let (status, bytes) = connection
            .call("GET", &format!("/v1/sandboxes/{id}"), None)
            .await;
        match status {
            404 => return,
            200 => {}
            _ => panic!("GET {id}: {status} {}", String::from_utf8_lossy(&bytes)),
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "sandbox {id} still present 120 s after its delete"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One create→Running through the server, then its delete until gone.
async fn create_via_berth(address: &str) -> Duration {
    // A fresh connection per create: the server may close an idle keep-alive connection during
    // the slow create, and connection set-up is noise next to a create.
    let mut connection = Connection::open(address).await;
    let body = create_body(serde_json::json!({"bench": "create"}));
    let t = Instant::now();
    let (status, bytes) = connection.call("POST", "/v1/sandboxes", Some(&body)).await;
    let took = t.elapsed();
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&bytes));
    let sandbox: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(sandbox["status"]["state"], "Running", "{sandbox}");
    let id = sandbox["id"].as_str().unwrap().to_owned();
    let (status, bytes) = connection
        .call("DELETE", &format!("/v1/sandboxes/{id}"), None)
        .await;
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&bytes));
    until_gone_from_berth(address, &id).await;
    took
}

/// The same Pod created with the Kubernetes API and watched until Running (the condition
/// Berth's create waits for), then deleted and watched until gone. The watch is open before
/// the clock starts, as the server's is.
async fn create_directly(pods: &Api<Pod>, config: &KubernetesConfig, round: usize) -> Duration {
    let (_, mut pod) = rendered_pod(config, create_body(serde_json::json!({"bench": "create"})));
    let name = format!("direct-{round}");
    pod.metadata.name = Some(name.clone());
    // Not Berth's labels: the server's watch leaves this Pod alone.
    pod.metadata.labels = Some(BTreeMap::from([("berth.test".into(), "1".into())]));
    let by_name = format!("metadata.name={name}");
    let version = pods
        .list_metadata(&ListParams::default().fields(&by_name))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut events = pods
        .watch(
            &WatchParams::default().fields(&by_name).timeout(240),
            &version,
        )
        .await
        .unwrap()
        .boxed();
    let run = async {
        let t = Instant::now();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        loop {
            match events.next().await {
                Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p))) => {
                    match start_progress(&p) {
                        StartProgress::Running => break,
                        StartProgress::Failed(why) => panic!("{name} failed to start: {why:?}"),
                        StartProgress::Starting { .. } => {}
                    }
                }
                Some(Ok(WatchEvent::Error(e))) => panic!("watching {name}: {e}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("watching {name}: {e}"),
                None => panic!("the watch of {name} ended before it ran"),
            }
        }
        let took = t.elapsed();
        let delete = DeleteParams {
            grace_period_seconds: Some(GRACE_SECONDS),
            ..DeleteParams::default()
        };
        pods.delete(&name, &delete).await.unwrap();
        loop {
            match events.next().await {
                Some(Ok(WatchEvent::Deleted(_))) => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("watching {name}: {e}"),
                None => panic!("the watch of {name} ended before it was deleted"),
            }
        }
        took
    };
    tokio::time::timeout(Duration::from_secs(200), run)
        .await
        .unwrap_or_else(|_| panic!("{name} did not run and go within 200 s"))
}

/// Creates `count` unschedulable sandbox Pods (numbered from `first`) directly, a bounded number
/// at a time; returns their ids.
async fn fill_cache(
    pods: &Api<Pod>,
    config: &KubernetesConfig,
    first: usize,
    count: usize,
) -> Vec<String> {
    let slots = Arc::new(tokio::sync::Semaphore::new(CREATE_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for n in first..first + count {
        let team = if n % 2 == 0 { "a" } else { "b" };
        let (id, mut pod) = rendered_pod(
            config,
            create_body(serde_json::json!({"team": team, "n": n.to_string()})),
        );
        pod.spec
            .as_mut()
            .unwrap()
            .node_selector
            .get_or_insert_with(BTreeMap::new)
            .insert(NO_NODE.0.into(), NO_NODE.1.into());
        let (pods, slots) = (pods.clone(), slots.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.unwrap();
            pods.create(&PostParams::default(), &pod).await.unwrap();
            id
        });
    }
    let mut ids = Vec::with_capacity(count);
    while let Some(id) = tasks.join_next().await {
        ids.push(id.unwrap());
    }
    ids
}

/// Bounded wait until the server lists exactly `count` sandboxes.
async fn until_cached(address: &str, count: usize) {
    let mut connection = Connection::open(address).await;
    let started = Instant::now();
    loop {
        let page = get_json(&mut connection, "/v1/sandboxes?pageSize=1").await;
        let total = page["pagination"]["totalItems"].as_u64().unwrap();
        if total == count as u64 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the server lists {total} sandboxes, not {count}, after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bounded wait until the scheduler has marked all `count` Pods unschedulable: its status writes
/// would otherwise reach the server's watch during the load. It writes once per Pod (a later
/// attempt that fails the same way changes nothing).
async fn until_settled(pods: &Api<Pod>, count: usize) {
    let started = Instant::now();
    loop {
        let marked = pods
            .list(&ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}")))
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            c.type_ == "PodScheduled"
                                && c.reason.as_deref() == Some("Unschedulable")
                        })
                    })
            })
            .count();
        if marked == count {
            // What the watch still has to deliver.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{marked} of {count} Pods marked unschedulable after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let pods_wanted = env_number("K8S_LOAD_PODS", PODS).max(1);
    let rounds = env_number("K8S_LOAD_ROUNDS", ROUNDS).max(1);
    let requests = env_number("K8S_LOAD_REQUESTS", REQUESTS_PER_WORKER).max(1);
    let kubeconfig = harness::kubernetes::kubeconfig();
    let client = cluster_client(&kubeconfig).await;

    let name = format!("berth-bench-k8s-{}", std::process::id());
    let namespace = NamespaceGuard::create(&client, &name).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &name);
    // The server's settings, for rendering Pods exactly as it does.
    let mut config = KubernetesConfig::new(&name);
    config.image_pull_policy = Some("Never".into());

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut server = ServerGuard(
        Command::new(env!("CARGO_BIN_EXE_berth-server"))
            .env("BERTH_RUNTIME__TYPE", "kubernetes")
            .env("BERTH_SERVER__PORT", port.to_string())
            .env("BERTH_SERVER__API_KEY", KEY)
            .env("BERTH_SERVER__LOG_LEVEL", "warn")
            .env("BERTH_KUBERNETES__NAMESPACE", &name)
            .env("BERTH_KUBERNETES__KUBECONFIG", &kubeconfig)
            // Every Pod, Secret and claim it makes is a test resource.
            .env("BERTH_KUBERNETES__LABELS", r#"{"berth.test" = "1"}"#)
            .env("BERTH_KUBERNETES__IMAGE_PULL_POLICY", "Never")
            .env(
                "BERTH_KUBERNETES__DELETE_GRACE_PERIOD_SECONDS",
                GRACE_SECONDS.to_string(),
            )
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = server.0.id();
    let started = Instant::now();
    while tokio::net::TcpStream::connect(&address).await.is_err() {
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "berth-server exited at startup"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "berth-server does not listen after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Listening precedes the watch's first listing; reads wait for it.
    until_cached(&address, 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_idle_empty, _) = memory_kib(pid);
    println!(
        "berth-server (kubernetes runtime), namespace {name}, ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // create→Running, through the server and directly, interleaved (the first round of each
    // warms up and is not counted; which goes first alternates). The kubelet notices a started
    // container at its next relist (every second), so single rounds scatter over about a
    // second: more rounds (K8S_LOAD_ROUNDS) give a steadier median.
    let phase = Instant::now();
    let mut via_berth = Vec::new();
    let mut direct = Vec::new();
    for round in 0..=rounds {
        let (b, d) = if round % 2 == 0 {
            let b = create_via_berth(&address).await;
            (b, create_directly(&pods, &config, round).await)
        } else {
            let d = create_directly(&pods, &config, round).await;
            (create_via_berth(&address).await, d)
        };
        if round > 0 {
            via_berth.push(b);
            direct.push(d);
        }
    }
    via_berth.sort();
    direct.sort();
    let (b, d) = (percentile(&via_berth, 0.5), percentile(&direct, 0.5));
    println!(
        "create→Running, median of {rounds}: through Berth {:.1} ms, directly (create + watch) {:.1} ms, ratio {:.2}× (goal ≤ 1.10×)",
        ms(b),
        ms(d),
        b.as_secs_f64() / d.as_secs_f64()
    );
    println!(
        "  Berth {:.1}–{:.1} ms (mean {:.1}), direct {:.1}–{:.1} ms (mean {:.1}); {} rounds with deletes in {:.0} s",
        ms(via_berth[0]),
        ms(via_berth[via_berth.len() - 1]),
        ms(mean(&via_berth)),
        ms(direct[0]),
        ms(direct[direct.len() - 1]),
        ms(mean(&direct)),
        rounds + 1,
        phase.elapsed().as_secs_f64()
    );

    // Reads with 100, then with all the Pods cached.
    let mut steps = vec![pods_wanted.min(100), pods_wanted];
    steps.dedup();
    let mut ids: Vec<String> = Vec::new();
    let mut peaks = Vec::new();
    let mut rss_idle_full = 0;
    for &count in &steps {
        let t = Instant::now();
        let made = fill_cache(&pods, &config, ids.len(), count - ids.len()).await;
        ids.extend(made);
        until_cached(&address, count).await;
        let cached = t.elapsed();
        until_settled(&pods, count).await;
        println!(
            "{count} sandbox Pods (Pending, unschedulable) created and cached in {:.1} s, settled in {:.1} s",
            cached.as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
        if count == pods_wanted {
            tokio::time::sleep(Duration::from_secs(2)).await;
            rss_idle_full = memory_kib(pid).0;
        }
        let get_ids = Arc::new(ids.clone());
        let get_path: Arc<dyn Fn(usize) -> String + Send + Sync> =
            Arc::new(move |i| format!("/v1/sandboxes/{}", get_ids[i * 7919 % get_ids.len()]));
        if peaks.is_empty() {
            // Connections, buffers and caches warm up in an unreported round, so the first
            // figures are not the slowest for that alone.
            load(&address, None, requests.min(50), get_path.clone(), pid).await;
        }
        println!("with {count} sandbox Pods cached:");
        let peak_get = load(
            &address,
            Some("GET /v1/sandboxes/{id}"),
            requests,
            get_path,
            pid,
        )
        .await;
        let full_pages = (count / 2 / 20).clamp(1, 12);
        let peak_list = load(
            &address,
            Some("GET /v1/sandboxes?metadata=team=a (page)"),
            requests,
            // Full pages only (up to 12 of them), whatever the number of Pods.
            Arc::new(move |i| {
                format!(
                    "/v1/sandboxes?metadata=team%3Da&state=Pending&pageSize=20&page={}",
                    i % full_pages + 1
                )
            }),
            pid,
        )
        .await;
        peaks.push((count, peak_get, peak_list));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_after, hwm) = memory_kib(pid);
    println!(
        "RSS: idle empty {:.1} MiB, idle with {pods_wanted} Pods cached {:.1} MiB, after the load {:.1} MiB, high-water mark of the run (VmHWM) {:.1} MiB (goal ≤ 60 MiB)",
        mib(rss_idle_empty),
        mib(rss_idle_full),
        mib(rss_after),
        mib(hwm)
    );
    for (count, get, list) in peaks {
        println!(
            "  peak VmRSS under load with {count} Pods: GET {:.1} MiB, list {:.1} MiB",
            mib(get),
            mib(list)
        );
    }

    // Stop the server before the namespace goes, so it does not follow a thousand deletions.
    drop(server);
    drop(namespace);
}
