//! The agent injected with `runtime.execd_image`, on the real engine, seen through the
//! recording proxy: the sandbox starts through the launcher and runs its own entrypoint while
//! the stand-in agent (`berth-test/execd:latest`, `cargo xtask test-image`) answers on port
//! 44772 through `endpoints`; one archive upload per create; the image is read once; a missing
//! image, an image without the files and a failed upload each have their code and leave
//! nothing behind.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use berth_core::ErrorCode;
use berth_core::model::SandboxId;
use berth_core::runtime::Runtime;
use berth_docker::execd::{BOOTSTRAP_PATH, EXECD_PATH, EXECD_PORT};
use common::TestEnv;
use common::engine_proxy::{Call, EngineProxy, FaultKind, proxied_env};
use serde_json::json;

const EXECD_IMAGE: &str = "berth-test/execd:latest";

async fn proxied(name: &str, image: &str) -> (TestEnv, EngineProxy, tempfile::TempDir) {
    let image = image.to_owned();
    proxied_env(name, None, |c| c.execd_image = Some(image)).await
}

fn request(entrypoint: &[&str]) -> serde_json::Value {
    json!({
        "image": {"uri": common::IMAGE},
        "entrypoint": entrypoint,
        "resourceLimits": {"cpu": "500m", "memory": "128Mi"},
    })
}

fn count(calls: &[Call], method: &str, matches: impl Fn(&str) -> bool) -> usize {
    calls
        .iter()
        .filter(|c| c.method == method && matches(&c.path))
        .count()
}

fn archive_path(path: &str) -> bool {
    path.starts_with("/containers/") && path.contains("/archive")
}

/// `GET <path>` on the agent at `address`: the status line and the body (read to the end).
fn get(address: &str, path: &str) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: sandbox\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    Ok((
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    ))
}

/// Polls `/ping` until the agent (started in the background by the launcher) answers 200; the
/// answer at the end of the wait.
async fn wait_for_ping(address: String) -> std::io::Result<(String, String)> {
    tokio::task::spawn_blocking(move || {
        let mut last = Err(std::io::ErrorKind::NotConnected.into());
        for _ in 0..100 {
            last = get(&address, "/ping");
            if matches!(&last, Ok((status, _)) if status == "HTTP/1.1 200 OK") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        last
    })
    .await
    .unwrap()
}

fn inspect(id: &SandboxId) -> serde_json::Value {
    let out = std::process::Command::new("docker")
        .args(["inspect", &format!("sandbox-{id}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "no container for {id}");
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_beside_the_entrypoint_and_answers_through_the_endpoint() {
    let (env, proxy, _dir) = proxied("execd", EXECD_IMAGE).await;
    let entrypoint = ["sh", "-c", "echo started > /tmp/started; exec sleep 3600"];

    // The dry run shows the wrapped container and says what is injected.
    let rendered = env
        .runtime()
        .render(&env.create_request(request(&entrypoint)))
        .await
        .unwrap();
    let container = &rendered.runtime_object["container"];
    assert_eq!(container["Entrypoint"][0], BOOTSTRAP_PATH);
    assert_eq!(rendered.runtime_object["execd"]["image"], EXECD_IMAGE);
    assert!(proxy.calls().iter().all(|c| !archive_path(&c.path)));

    proxy.clear();
    let first = env.create(request(&entrypoint)).await.unwrap();
    let calls = proxy.calls();
    assert_eq!(
        count(&calls, "GET", archive_path),
        2,
        "the image's two files, read once: {calls:#?}"
    );
    assert_eq!(count(&calls, "PUT", archive_path), 1, "one upload");
    assert_eq!(
        count(&calls, "POST", |p| p.starts_with("/containers/create")),
        2,
        "the source container and the sandbox's"
    );
    assert_eq!(
        count(&calls, "DELETE", |p| p.starts_with("/containers/")),
        1
    );
    // The upload comes between the create and the start.
    let position = |method: &str, matches: &dyn Fn(&str) -> bool| {
        calls
            .iter()
            .rposition(|c| c.method == method && matches(&c.path))
            .unwrap()
    };
    let created = position("POST", &|p| p.starts_with("/containers/create"));
    let uploaded = position("PUT", &archive_path);
    let started = position("POST", &|p| p.ends_with("/start"));
    assert!(created < uploaded && uploaded < started, "{calls:#?}");

    // The record keeps the client's entrypoint; the container starts through the launcher.
    assert_eq!(first.entrypoint, entrypoint);
    let container = inspect(&first.id);
    let mut expected = vec![BOOTSTRAP_PATH];
    expected.extend(entrypoint);
    assert_eq!(container["Config"]["Entrypoint"], json!(expected));
    let env_vars = container["Config"]["Env"].as_array().unwrap();
    assert!(
        env_vars.contains(&json!(format!("EXECD={EXECD_PATH}"))),
        "{env_vars:?}"
    );
    // The entrypoint ran, as the container's main process, and the files are in place.
    let (code, text) = common::exec(
        &first.id,
        "cat /tmp/started; tr '\\0' ' ' < /proc/1/cmdline; echo; ls -ln /opt/opensandbox",
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("started\nsleep 3600 \n"), "{text}");
    for file in ["execd", "bootstrap.sh"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("-rwxr-xr-x") && l.contains(" 0 ") && l.ends_with(file)),
            "{file}: {text}"
        );
    }

    // The agent answers through the runtime's endpoint, as the SDK asks it.
    let endpoint = env
        .runtime()
        .endpoint(&first.id, EXECD_PORT)
        .await
        .unwrap()
        .endpoint;
    assert!(endpoint.starts_with("127.0.0.1:"), "{endpoint}");
    let (status, _) = wait_for_ping(endpoint.clone()).await.unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    // The server proxy goes to the container's own address instead, past the engine's
    // forwarder of published ports, and finds the same agent there.
    let direct = env
        .runtime()
        .proxy_endpoint(&first.id, EXECD_PORT)
        .await
        .unwrap()
        .endpoint;
    let address = container["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        .as_str()
        .unwrap();
    assert_eq!(direct, format!("{address}:{EXECD_PORT}"));
    let (status, _) = wait_for_ping(direct).await.unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    let events = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(&endpoint).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET /sse?n=3&interval_ms=10 HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.starts_with("data: "))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(events, ["data: event 1", "data: event 2", "data: event 3"]);

    // A second create reads nothing from the image again: one create, one upload.
    proxy.clear();
    let second = env.create(request(&["sleep", "3600"])).await.unwrap();
    let calls = proxy.calls();
    assert_eq!(count(&calls, "GET", archive_path), 0, "{calls:#?}");
    assert_eq!(count(&calls, "PUT", archive_path), 1);
    assert_eq!(
        count(&calls, "POST", |p| p.starts_with("/containers/create")),
        1
    );
    println!(
        "first create: 2 archive reads, 1 upload; second: {} reads, {} upload",
        count(&calls, "GET", archive_path),
        count(&calls, "PUT", archive_path)
    );

    for id in [&first.id, &second.id] {
        env.runtime().delete(id).await.unwrap();
    }
    env.assert_nothing_left("after two injected sandboxes")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_agent_image_is_its_own_error_and_leaves_nothing() {
    let (env, proxy, _dir) = proxied(
        "execd-missing",
        "registry.invalid/berth-test/no-such-execd:1",
    )
    .await;
    let error = env.create(request(&["sleep", "3600"])).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ExecdImageNotFound, "{error}");
    assert_eq!(error.code().http_status(), 503);
    let body = error.to_error_response();
    assert!(
        body.message.starts_with("runtime.execd_image: ")
            && body
                .message
                .contains("registry.invalid/berth-test/no-such-execd:1"),
        "{}",
        body.message
    );
    let calls = proxy.calls();
    assert_eq!(
        count(&calls, "POST", |p| p.starts_with("/containers/create")),
        0,
        "{calls:#?}"
    );
    env.assert_nothing_left("missing agent image").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_without_the_agent_is_its_own_error_and_leaves_nothing() {
    // The busybox test image has neither /execd nor /bootstrap.sh.
    let (env, proxy, _dir) = proxied("execd-nofiles", common::IMAGE).await;
    for attempt in 0..2 {
        proxy.clear();
        let error = env.create(request(&["sleep", "3600"])).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::ExecdFilesMissing, "{error}");
        let message = error.to_error_response().message;
        assert!(message.contains("/execd"), "{message}");
        // Not cached: the image is read again (the operator may have fixed it).
        let calls = proxy.calls();
        assert_eq!(
            count(&calls, "GET", archive_path),
            1,
            "attempt {attempt}: {calls:#?}"
        );
        assert_eq!(
            count(&calls, "DELETE", |p| p.starts_with("/containers/")),
            1,
            "the source container is removed"
        );
        env.assert_nothing_left("image without the agent").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_rolls_the_create_back() {
    let (env, proxy, _dir) = proxied("execd-upload", EXECD_IMAGE).await;
    proxy.fail_next(
        "PUT",
        "/archive",
        FaultKind::AnswerWith(500, "Error response from daemon: no space left on device"),
    );
    let error = env.create(request(&["sleep", "3600"])).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ExecdUploadFailed, "{error}");
    assert!(
        error
            .to_error_response()
            .message
            .contains("no space left on device"),
        "{error}"
    );
    assert_eq!(proxy.faults_pending(), 0);
    env.assert_nothing_left("refused upload").await;

    // The engine copied the files but its answer was lost: a failed upload (or an unreachable
    // engine, by how the connection ended), rolled back.
    proxy.fail_next("PUT", "/archive", FaultKind::LoseResponse);
    let error = env.create(request(&["sleep", "3600"])).await.unwrap_err();
    assert!(
        matches!(
            error.code(),
            ErrorCode::ExecdUploadFailed | ErrorCode::RuntimeUnavailable
        ),
        "{error}"
    );
    env.assert_nothing_left("lost upload answer").await;

    // And the next create works, from the cached archive.
    let sandbox = env.create(request(&["sleep", "3600"])).await.unwrap();
    env.runtime().delete(&sandbox.id).await.unwrap();
    env.assert_nothing_left("after a good create").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_container_a_crash_left_is_removed_at_start() {
    let mut env = TestEnv::with("execd-crash", |c| {
        c.execd_image = Some(EXECD_IMAGE.into());
    })
    .await;
    // As a read of the image cut off by a crash leaves it: created, labelled, never started.
    let label = |k: &str, v: &str| ["--label".to_owned(), format!("{k}={v}")];
    let mut args = vec!["create".to_owned()];
    for (k, v) in [
        ("berth.managed-by", "berth".to_owned()),
        ("berth.instance", env.config.instance_id()),
        (
            berth_docker::execd::LABEL_EXECD_SOURCE,
            EXECD_IMAGE.to_owned(),
        ),
        ("berth.test", "1".to_owned()),
        ("berth.test-run", env.run.clone()),
    ] {
        args.extend(label(k, &v));
    }
    args.push(EXECD_IMAGE.to_owned());
    let out = std::process::Command::new("docker")
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(common::leftovers(&env.run).0.len(), 1);
    env.restart(|_| {}).await;
    env.assert_nothing_left("after the restart").await;
}

/// Injection changes nothing of the contract: the whole conformance suite, with the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_agent_the_runtime_still_passes_the_conformance_suite() {
    use berth_core::model::HostPath;
    use berth_core::testkit::conformance::{self, AfterDelete, ConformanceTarget};

    let env = TestEnv::with("execd-conf", |c| {
        c.execd_image = Some(EXECD_IMAGE.into());
    })
    .await;
    let runtime: std::sync::Arc<dyn Runtime> = env.runtime().clone();
    let target = ConformanceTarget {
        runtime: runtime.clone(),
        image: common::IMAGE.into(),
        entrypoint: vec!["sleep".into(), "3600".into()],
        missing_image: "berth-test/missing:latest".into(),
        host_root: Some(HostPath::new(env.host_root.to_str().unwrap()).unwrap()),
        endpoint_port: EXECD_PORT,
        run_id: env.short_run_id(),
        after_delete: AfterDelete::Gone,
    };
    let report = conformance::run(&target).await;
    drop(target);
    report.assert_passed();
    env.assert_nothing_left("after the conformance suite").await;
}
