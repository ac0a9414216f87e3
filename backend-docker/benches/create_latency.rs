//! create→Running on the real engine: a Berth sandbox with three volumes (host + subPath,
//! pvc + subPath, whole pvc — two of them staged) against the same container made directly
//! through the Docker API (create + start), and against `docker run -d`. Median of 20 each.
//! Needs root and the test image (`cargo xtask test-image`).

#![allow(missing_docs, clippy::unwrap_used)] // A benchmark harness, not an API.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_core::model::{HostPath, SandboxId, SandboxSpec};
use berth_core::runtime::{CreateSandbox, Runtime};
use berth_core::validate::StoragePolicy;
use berth_docker::DockerRuntime;
use berth_docker::config::DockerConfig;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};

const IMAGE: &str = "berth-test/busybox:latest";
const ROUNDS: usize = 20;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir()
        .unwrap();
    let host_root = tmp.path().join("host");
    std::fs::create_dir(&host_root).unwrap();
    let mut config = DockerConfig::with_state_dir(tmp.path().join("state"));
    config.allowed_host_paths = vec![host_root.clone()];
    config.extra_labels = BTreeMap::from([("berth.test".into(), "1".into())]);
    let runtime = DockerRuntime::start(config).await.unwrap();
    let claim = format!("bench-{}", std::process::id());
    let policy = StoragePolicy {
        allowed_host_roots: vec![HostPath::new(host_root.to_str().unwrap()).unwrap()],
        max_timeout_seconds: None,
    };

    let mut berth = Vec::new();
    for i in 0..ROUNDS + 1 {
        let request = serde_json::json!({
            "image": {"uri": IMAGE}, "entrypoint": ["sleep", "3600"], "resourceLimits": {},
            "volumes": [
                {"name": "host", "host": {"path": host_root.to_str().unwrap()}, "mountPath": "/host", "subPath": format!("u{i}")},
                {"name": "work", "pvc": {"claimName": claim}, "mountPath": "/workspace", "subPath": format!("s{i}")},
                {"name": "cache", "pvc": {"claimName": claim}, "mountPath": "/cache", "readOnly": true}
            ]
        });
        let spec =
            SandboxSpec::from_request(serde_json::from_value(request).unwrap(), &policy).unwrap();
        let id = SandboxId::new(&format!("bench-{}-{i}", std::process::id())).unwrap();
        let started = Instant::now();
        runtime
            .create(CreateSandbox {
                id: id.clone(),
                spec,
                created_at: chrono::Utc::now(),
            })
            .await
            .unwrap();
        let took = started.elapsed();
        runtime.delete(&id).await.unwrap();
        if i > 0 {
            berth.push(took); // the first round warms caches
        }
    }

    let docker = &runtime.engine().docker;
    let mut direct = Vec::new();
    for i in 0..ROUNDS + 1 {
        let name = format!("bench-direct-{}-{i}", std::process::id());
        let body = ContainerCreateBody {
            image: Some(IMAGE.into()),
            entrypoint: Some(vec!["sleep".into(), "3600".into()]),
            labels: Some([("berth.test".to_owned(), "1".to_owned())].into()),
            ..Default::default()
        };
        let started = Instant::now();
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name),
                    ..Default::default()
                }),
                body,
            )
            .await
            .unwrap();
        docker.start_container(&created.id, None).await.unwrap();
        let took = started.elapsed();
        docker
            .remove_container(
                &created.id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
        if i > 0 {
            direct.push(took);
        }
    }

    let mut cli = Vec::new();
    for i in 0..ROUNDS + 1 {
        let started = Instant::now();
        let out = std::process::Command::new("docker")
            .args([
                "run",
                "-d",
                "--label",
                "berth.test=1",
                IMAGE,
                "sleep",
                "3600",
            ])
            .output()
            .unwrap();
        let took = started.elapsed();
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        std::process::Command::new("docker")
            .args(["rm", "-f", &id])
            .output()
            .unwrap();
        if i > 0 {
            cli.push(took);
        }
    }
    let _ = std::process::Command::new("docker")
        .args(["volume", "rm", &claim])
        .output();

    let (b, d, c) = (median(berth), median(direct), median(cli));
    println!("create→Running, median of {ROUNDS}:");
    println!(
        "  Berth, 3 volumes (2 staged)      {:>8.1} ms",
        b.as_secs_f64() * 1e3
    );
    println!(
        "  Docker API create+start, none   {:>8.1} ms  (Berth/direct = {:.2}×)",
        d.as_secs_f64() * 1e3,
        b.as_secs_f64() / d.as_secs_f64()
    );
    println!(
        "  docker run -d (CLI), none        {:>8.1} ms",
        c.as_secs_f64() * 1e3
    );
}
