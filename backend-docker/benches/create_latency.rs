//! create→Running on the real engine: a Berth sandbox with three volumes (host + subPath,
//! pvc + subPath, whole pvc — two of them staged) against the same container made directly
//! through the Docker API (create + start), and against `docker run -d`. Then the injected
//! agent (`runtime.execd_image`): a sandbox without volumes through Berth without and with it,
//! and the engine calls alone — create + start, with Berth's one archive upload between them,
//! and with upstream's three (the directory, then each file). Median of 20 each. Needs root and
//! the test images (`cargo xtask test-image`).

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
const EXECD_IMAGE: &str = "berth-test/execd:latest";
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
    drop(runtime);
    execd().await;
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A runtime on a state directory of its own under `dir`, injecting `execd_image`.
async fn runtime_in(dir: &std::path::Path, name: &str, execd_image: Option<&str>) -> DockerRuntime {
    let mut config = DockerConfig::with_state_dir(dir.join(name));
    config.extra_labels = BTreeMap::from([("berth.test".into(), "1".into())]);
    config.execd_image = execd_image.map(str::to_owned);
    DockerRuntime::start(config).await.unwrap()
}

/// The injected agent's cost: through Berth, and the engine calls alone.
async fn execd() {
    use berth_docker::execd::{ImageFile, agent_archive, file_from_archive};
    use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
    use futures_util::StreamExt;

    let tmp = tempfile::Builder::new()
        .prefix("berth-bench-execd-")
        .tempdir()
        .unwrap();
    let plain = runtime_in(tmp.path(), "plain", None).await;
    let injected = runtime_in(tmp.path(), "injected", Some(EXECD_IMAGE)).await;
    let policy = StoragePolicy::default();
    let spec = || {
        let request = serde_json::json!({
            "image": {"uri": IMAGE}, "entrypoint": ["sleep", "3600"], "resourceLimits": {},
        });
        SandboxSpec::from_request(serde_json::from_value(request).unwrap(), &policy).unwrap()
    };
    let (mut without, mut with) = (Vec::new(), Vec::new());
    // Alternated, so both see the same engine; the first round warms caches (and reads the
    // agent's image once).
    for i in 0..ROUNDS + 1 {
        for (runtime, samples, kind) in [
            (&plain, &mut without, "plain"),
            (&injected, &mut with, "execd"),
        ] {
            let id = SandboxId::new(&format!("bench-{kind}-{}-{i}", std::process::id())).unwrap();
            let started = Instant::now();
            runtime
                .create(CreateSandbox {
                    id: id.clone(),
                    spec: spec(),
                    created_at: chrono::Utc::now(),
                })
                .await
                .unwrap();
            let took = started.elapsed();
            runtime.delete(&id).await.unwrap();
            if i > 0 {
                samples.push(took);
            }
        }
    }

    // The engine calls alone. The files as the engine hands them out (what upstream uploads
    // as they are), and Berth's one archive of both.
    let docker = &plain.engine().docker;
    let source = docker
        .create_container(
            None::<CreateContainerOptions>,
            ContainerCreateBody {
                image: Some(EXECD_IMAGE.into()),
                labels: Some([("berth.test".to_owned(), "1".to_owned())].into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    for path in ["/execd", "/bootstrap.sh"] {
        let mut stream = docker.download_from_container(
            &source.id,
            Some(DownloadFromContainerOptions { path: path.into() }),
        );
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            archive.extend_from_slice(&chunk.unwrap());
        }
        raw.push(bytes::Bytes::from(archive));
    }
    let force = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    docker
        .remove_container(&source.id, Some(force.clone()))
        .await
        .unwrap();
    let files: Vec<ImageFile> = raw.iter().map(|a| file_from_archive(a).unwrap()).collect();
    let one = agent_archive(&files[0], &files[1]);
    let directory = {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        builder
            .append_data(&mut header, "opt/opensandbox/", std::io::empty())
            .unwrap();
        bytes::Bytes::from(builder.into_inner().unwrap())
    };
    let upload = |path: &str| UploadToContainerOptions {
        path: path.into(),
        ..Default::default()
    };
    let mut calls: [Vec<Duration>; 3] = Default::default();
    for i in 0..ROUNDS + 1 {
        for (variant, samples) in calls.iter_mut().enumerate() {
            let body = ContainerCreateBody {
                image: Some(IMAGE.into()),
                entrypoint: Some(vec!["sleep".into(), "3600".into()]),
                labels: Some([("berth.test".to_owned(), "1".to_owned())].into()),
                ..Default::default()
            };
            let started = Instant::now();
            let created = docker
                .create_container(None::<CreateContainerOptions>, body)
                .await
                .unwrap();
            match variant {
                1 => docker
                    .upload_to_container(
                        &created.id,
                        Some(upload("/")),
                        bollard::body_full(one.clone()),
                    )
                    .await
                    .unwrap(),
                2 => {
                    docker
                        .upload_to_container(
                            &created.id,
                            Some(upload("/")),
                            bollard::body_full(directory.clone()),
                        )
                        .await
                        .unwrap();
                    for archive in &raw {
                        docker
                            .upload_to_container(
                                &created.id,
                                Some(upload("/opt/opensandbox")),
                                bollard::body_full(archive.clone()),
                            )
                            .await
                            .unwrap();
                    }
                }
                _ => {}
            }
            docker.start_container(&created.id, None).await.unwrap();
            let took = started.elapsed();
            docker
                .remove_container(&created.id, Some(force.clone()))
                .await
                .unwrap();
            if i > 0 {
                samples.push(took);
            }
        }
    }
    let [bare, single, triple] = calls.map(median);
    let (without, with) = (median(without), median(with));
    println!(
        "the injected agent (runtime.execd_image = {EXECD_IMAGE}, {} KiB archive), median of {ROUNDS}:",
        one.len() / 1024
    );
    println!("  Berth, no volumes, without       {:>8.1} ms", ms(without));
    println!(
        "  Berth, no volumes, with          {:>8.1} ms  (+{:.1} ms)",
        ms(with),
        ms(with) - ms(without)
    );
    println!("  API create+start                 {:>8.1} ms", ms(bare));
    println!(
        "  + 1 upload (Berth)               {:>8.1} ms  (+{:.1} ms)",
        ms(single),
        ms(single) - ms(bare)
    );
    println!(
        "  + 3 uploads (upstream)           {:>8.1} ms  (+{:.1} ms)",
        ms(triple),
        ms(triple) - ms(bare)
    );
}
