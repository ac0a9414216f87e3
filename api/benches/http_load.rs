//! The HTTP API under load, on the real Docker engine (`cargo xtask bench`; needs root and the
//! test image). With 500 sandboxes present: `GET /v1/sandboxes/{id}` and a filtered list page
//! at concurrency 32 on loopback (p50, p99, requests/s); create→Running with two volumes through
//! the API beside the same container made directly through the Docker API; the server's RSS
//! idle and under load. `HTTP_LOAD_PERF=<dir>` records a `perf` profile of each load phase.

#![allow(missing_docs, clippy::unwrap_used)] // A benchmark harness, not an API.

mod harness;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{Connection, DockerServer, percentile, rss_kib};

/// Sandboxes present during the load phases; `HTTP_LOAD_SANDBOXES` overrides it (to see that
/// latency stays flat as the number grows).
const SANDBOXES: usize = 500;
const CONCURRENCY: usize = 32;
const REQUESTS_PER_WORKER: usize = 400;
const IMAGE: &str = "berth-test/busybox:latest";

/// Runs `CONCURRENCY` workers, each on its own keep-alive connection, calling `path_for(i)`.
async fn load(
    address: &str,
    name: &str,
    path_for: Arc<dyn Fn(usize) -> String + Send + Sync>,
    pid: u32,
) -> u64 {
    // HTTP_LOAD_PERF=<dir>: record a `perf` profile of the server during this phase.
    let profiler = std::env::var_os("HTTP_LOAD_PERF").map(|dir| {
        let slug: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let output = std::path::Path::new(&dir).join(format!("{slug}.data"));
        Command::new("perf")
            .args(["record", "-F", "1999", "-g", "-p", &pid.to_string(), "-o"])
            .arg(&output)
            .stderr(Stdio::null())
            .spawn()
            .expect("HTTP_LOAD_PERF needs perf installed")
    });
    if profiler.is_some() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let (address, path_for) = (address.to_owned(), path_for.clone());
        workers.push(tokio::spawn(async move {
            let mut connection = Connection::open(&address).await;
            let mut latencies = Vec::with_capacity(REQUESTS_PER_WORKER);
            for i in 0..REQUESTS_PER_WORKER {
                let path = path_for(w * REQUESTS_PER_WORKER + i);
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
        peak_rss = peak_rss.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    if let Some(mut perf) = profiler {
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }
    all.sort();
    println!(
        "  {name:<34} p50 {:>6.3} ms   p99 {:>6.3} ms   {:>7.0} req/s   ({} requests, concurrency {CONCURRENCY})",
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        all.len() as f64 / elapsed.as_secs_f64(),
        all.len()
    );
    peak_rss
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let server = DockerServer::start(env!("CARGO_BIN_EXE_berth-server"), "bench", &[]).await;
    let (address, pid, run) = (server.address.clone(), server.pid(), server.run.clone());
    let host_root = server.host_root.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle_empty = rss_kib(pid);

    // The sandboxes, created 8 at a time.
    let started = Instant::now();
    let mut ids = Vec::new();
    let sandboxes: usize = std::env::var("HTTP_LOAD_SANDBOXES")
        .ok()
        .map_or(SANDBOXES, |n| {
            n.parse().expect("HTTP_LOAD_SANDBOXES: a number")
        });
    let numbers: Vec<usize> = (0..sandboxes).collect();
    for chunk in numbers.chunks(8) {
        let mut tasks = Vec::new();
        for &i in chunk {
            let address = address.clone();
            let team = if i % 2 == 0 { "a" } else { "b" };
            tasks.push(tokio::spawn(async move {
                let body = serde_json::json!({"image": {"uri": IMAGE}, "entrypoint": ["sleep", "3600"],
                    "resourceLimits": {"memory": "16Mi"}, "metadata": {"team": team, "n": i.to_string()}});
                let mut connection = Connection::open(&address).await;
                let (status, bytes) = connection.call("POST", "/v1/sandboxes", Some(&body)).await;
                assert_eq!(status, 202, "{}", String::from_utf8_lossy(&bytes));
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["id"].as_str().unwrap().to_owned()
            }));
        }
        for t in tasks {
            ids.push(t.await.unwrap());
        }
    }
    println!(
        "{sandboxes} sandboxes created in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle_full = rss_kib(pid);

    println!("with {sandboxes} sandboxes present:");
    let ids = Arc::new(ids);
    let get_ids = ids.clone();
    let peak_get = load(
        &address,
        "GET /v1/sandboxes/{id}",
        Arc::new(move |i| format!("/v1/sandboxes/{}", get_ids[i * 7919 % get_ids.len()])),
        pid,
    )
    .await;
    let full_pages = (sandboxes / 2 / 20).clamp(1, 12);
    let peak_list = load(
        &address,
        "GET /v1/sandboxes?metadata=team=a (page)",
        // Full pages only (up to 12 of them), whatever the number of sandboxes.
        Arc::new(move |i| {
            format!(
                "/v1/sandboxes?metadata=team%3Da&state=Running&pageSize=20&page={}",
                i % full_pages + 1
            )
        }),
        pid,
    )
    .await;

    // create→Running with two volumes, through the API, beside the direct Docker API.
    let mut via_api = Vec::new();
    for i in 0..21 {
        // A fresh connection per create: the server may close an idle keep-alive connection
        // during the slow create, and connection set-up is noise next to a create.
        let mut connection = Connection::open(&address).await;
        let body = serde_json::json!({"image": {"uri": IMAGE}, "entrypoint": ["sleep", "3600"], "resourceLimits": {},
            "volumes": [
                {"name": "work", "pvc": {"claimName": format!("{run}-sessions")}, "mountPath": "/workspace", "subPath": format!("s{i}")},
                {"name": "skills", "host": {"path": host_root.to_str().unwrap()}, "mountPath": "/skills", "readOnly": true}]});
        let t = Instant::now();
        let (status, bytes) = connection.call("POST", "/v1/sandboxes", Some(&body)).await;
        let took = t.elapsed();
        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&bytes));
        let id = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            connection
                .call("DELETE", &format!("/v1/sandboxes/{id}"), None)
                .await
                .0,
            204
        );
        if i > 0 {
            via_api.push(took);
        }
    }
    let docker = bollard::Docker::connect_with_defaults().unwrap();
    let mut direct = Vec::new();
    for i in 0..21 {
        let body = bollard::models::ContainerCreateBody {
            image: Some(IMAGE.into()),
            entrypoint: Some(vec!["sleep".into(), "3600".into()]),
            labels: Some([("berth.test".to_owned(), "1".to_owned())].into()),
            ..Default::default()
        };
        let options = bollard::query_parameters::CreateContainerOptions {
            name: Some(format!("{run}-direct-{i}")),
            ..Default::default()
        };
        let t = Instant::now();
        let created = docker.create_container(Some(options), body).await.unwrap();
        docker.start_container(&created.id, None).await.unwrap();
        let took = t.elapsed();
        let remove = bollard::query_parameters::RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        docker
            .remove_container(&created.id, Some(remove))
            .await
            .unwrap();
        if i > 0 {
            direct.push(took);
        }
    }
    via_api.sort();
    direct.sort();
    let (a, d) = (percentile(&via_api, 0.5), percentile(&direct, 0.5));
    println!(
        "create→Running, median of 20: API with 2 volumes {:.1} ms, direct Docker API create+start {:.1} ms, ratio {:.2}×",
        a.as_secs_f64() * 1e3,
        d.as_secs_f64() * 1e3,
        a.as_secs_f64() / d.as_secs_f64()
    );
    println!(
        "RSS: idle empty {:.1} MiB, idle with {sandboxes} sandboxes {:.1} MiB, peak under GET load {:.1} MiB, under list load {:.1} MiB",
        rss_idle_empty as f64 / 1024.0,
        rss_idle_full as f64 / 1024.0,
        peak_get as f64 / 1024.0,
        peak_list as f64 / 1024.0
    );

    // Clean up: delete through the API, then stop the server. Four at a time: Engine 20.10
    // here once deadlocked (network inspect and container removal hung) under eight.
    for chunk in ids.chunks(4) {
        let mut tasks = Vec::new();
        for id in chunk {
            let (address, id) = (address.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                Connection::open(&address)
                    .await
                    .call("DELETE", &format!("/v1/sandboxes/{id}"), None)
                    .await
                    .0
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 204);
        }
    }
    drop(server);
    let _ = Command::new("docker")
        .args(["volume", "rm", &format!("{run}-sessions")])
        .output();
}
