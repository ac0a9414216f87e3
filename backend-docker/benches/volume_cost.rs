//! The cost of a safe volume, against the engine's floor measured in the same run, rounds
//! interleaved so both sides see the same machine (host network, the test image, the same
//! limits; median of 40 after a warm-up round — with 20, the ratios moved by ±0.05 between
//! runs):
//!
//! - create→Running without volumes: Berth, against the same container body (Berth's own
//!   rendering) created and started directly;
//! - with a host volume and a pvc volume, each on a subPath: Berth (staging, the claim, the
//!   in-container check), against that same container with plain binds of the two directories;
//! - delete of the sandbox with volumes: Berth, against `docker rm -f` of the plain one.
//!
//! `VOLUME_COST_STEPS=1` also prints each create's and delete's step times (the runtime's debug
//! log). Needs root and the test image (`cargo xtask test-image`).

#![allow(missing_docs, clippy::unwrap_used)] // A benchmark harness, not an API.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_core::model::{HostPath, SandboxId, SandboxSpec};
use berth_core::runtime::{CreateSandbox, Runtime};
use berth_core::validate::StoragePolicy;
use berth_docker::DockerRuntime;
use berth_docker::config::DockerConfig;
use berth_docker::render::{MountSource, PlannedMount, render_container};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};

const IMAGE: &str = "berth-test/busybox:latest";
const ROUNDS: usize = 40;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::var_os("VOLUME_COST_STEPS").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter("berth_docker=debug")
            .with_writer(std::io::stderr)
            .init();
    }
    let rounds = std::env::var("VOLUME_COST_ROUNDS")
        .ok()
        .map_or(ROUNDS, |n| n.parse().unwrap());
    let pid = std::process::id();
    let tmp = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir()
        .unwrap();
    let host_root = tmp.path().join("host");
    std::fs::create_dir(&host_root).unwrap();
    let mut config = DockerConfig::with_state_dir(tmp.path().join("state"));
    config.network_mode = "host".into();
    config.allowed_host_paths = vec![host_root.clone()];
    config.extra_labels = BTreeMap::from([("berth.test".into(), "1".into())]);
    let runtime = DockerRuntime::start(config.clone()).await.unwrap();
    let docker = runtime.engine().docker.clone();
    let api = runtime.engine().api;
    let claim = format!("bench-cost-{pid}");
    let policy = StoragePolicy {
        allowed_host_roots: vec![HostPath::new(host_root.to_str().unwrap()).unwrap()],
        max_timeout_seconds: None,
    };
    let spec = |volumes: serde_json::Value| {
        let request = serde_json::json!({
            "image": {"uri": IMAGE}, "entrypoint": ["sleep", "3600"],
            "resourceLimits": {"cpu": "500m", "memory": "128Mi"}, "volumes": volumes,
        });
        SandboxSpec::from_request(serde_json::from_value(request).unwrap(), &policy).unwrap()
    };
    let berth_create = |id: SandboxId, spec: SandboxSpec| {
        let runtime = &runtime;
        async move {
            let started = Instant::now();
            runtime
                .create(CreateSandbox {
                    id,
                    spec,
                    created_at: chrono::Utc::now(),
                })
                .await
                .unwrap();
            started.elapsed()
        }
    };
    // The floor: Berth's own container body, with `mounts`, created and started directly.
    let direct_create = |name: String, mounts: Vec<PlannedMount>| {
        let (docker, config) = (docker.clone(), config.clone());
        let body_spec = spec(serde_json::json!([]));
        async move {
            let id = SandboxId::new(&name).unwrap();
            let mut body = render_container(&config, api, &id, &body_spec, &mounts, None);
            // Not Berth's: the runtime under test must not take it for one of its own.
            body.labels = Some([("berth.test".to_owned(), "1".to_owned())].into());
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
            (created.id, started.elapsed())
        }
    };
    let remove = |container: String| {
        let docker = docker.clone();
        async move {
            let started = Instant::now();
            docker
                .remove_container(
                    &container,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await
                .unwrap();
            started.elapsed()
        }
    };

    let (mut berth_bare, mut floor_bare) = (Vec::new(), Vec::new());
    let (mut berth_volumes, mut floor_volumes) = (Vec::new(), Vec::new());
    let (mut berth_delete, mut floor_delete) = (Vec::new(), Vec::new());
    for i in 0..=rounds {
        // Without volumes.
        let id = SandboxId::new(&format!("cost-{pid}-bare-{i}")).unwrap();
        let took = berth_create(id.clone(), spec(serde_json::json!([]))).await;
        runtime.delete(&id).await.unwrap();
        let (container, direct) = direct_create(format!("cost-{pid}-floor-bare-{i}"), vec![]).await;
        remove(container).await;
        if i > 0 {
            berth_bare.push(took);
            floor_bare.push(direct);
        }

        // A host volume and a pvc volume, each on a subPath.
        let id = SandboxId::new(&format!("cost-{pid}-vol-{i}")).unwrap();
        let took = berth_create(
            id.clone(),
            spec(serde_json::json!([
                {"name": "skills", "host": {"path": host_root.to_str().unwrap()}, "mountPath": "/skills", "subPath": format!("u{i}")},
                {"name": "work", "pvc": {"claimName": claim}, "mountPath": "/workspace", "subPath": format!("s{i}")},
            ])),
        )
        .await;
        let started = Instant::now();
        runtime.delete(&id).await.unwrap();
        let deleted = started.elapsed();
        // The same directories, prepared beforehand, bound plainly.
        let volume = docker.inspect_volume(&claim).await.unwrap().mountpoint;
        let (host_dir, volume_dir) = (
            host_root.join(format!("f{i}")),
            std::path::Path::new(&volume).join(format!("f{i}")),
        );
        std::fs::create_dir(&host_dir).unwrap();
        std::fs::create_dir(&volume_dir).unwrap();
        let mounts = vec![
            PlannedMount {
                target: "/skills".into(),
                source: MountSource::Bind(host_dir),
                read_only: false,
            },
            PlannedMount {
                target: "/workspace".into(),
                source: MountSource::Bind(volume_dir),
                read_only: false,
            },
        ];
        let (container, direct) = direct_create(format!("cost-{pid}-floor-vol-{i}"), mounts).await;
        let direct_deleted = remove(container).await;
        if i > 0 {
            berth_volumes.push(took);
            floor_volumes.push(direct);
            berth_delete.push(deleted);
            floor_delete.push(direct_deleted);
        }
    }
    let _ = std::process::Command::new("docker")
        .args(["volume", "rm", &claim])
        .output();

    let report = |what: &str, berth: Vec<Duration>, floor: Vec<Duration>, against: &str| {
        let (b, f) = (median(berth), median(floor));
        println!(
            "  {what:<44} Berth {:>6.1} ms   {against:<34} {:>6.1} ms   {:.2}×",
            ms(b),
            ms(f),
            b.as_secs_f64() / f.as_secs_f64()
        );
    };
    println!(
        "the cost of a safe volume, median of {rounds} (host network, the same image and limits):"
    );
    report(
        "create→Running, no volumes",
        berth_bare,
        floor_bare,
        "same body, create + start",
    );
    report(
        "create→Running, host + pvc on subPaths",
        berth_volumes,
        floor_volumes,
        "same container, plain binds",
    );
    report(
        "delete, host + pvc on subPaths",
        berth_delete,
        floor_delete,
        "docker rm -f",
    );
}
