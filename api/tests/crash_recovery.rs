//! The server killed with SIGKILL mid-work, on the real engine through the real binary, then
//! started again on the same state directory: every sandbox is whole or gone — never a record
//! without its container, a container without its record, or a staging mount of a sandbox that
//! is gone — and what was acknowledged (creates, renewals, metadata patches, deletes) survives.
//! Whole: listed, `Running`, its container running. Gone: not listed, no container. At the end
//! each test deletes what is left through the API and finds no container and no mount of its
//! run: a leftover of a cut-off create or delete would remain there.

#![cfg(feature = "docker")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{
    ScratchDir, Server, call, mounts_below, require_docker, run_containers, tempfile_dir,
};
use serde_json::{Value, json};

const IMAGE: &str = "berth-test/busybox:latest";

/// A server's state directory, host root and run label, kept across its restarts.
struct Setup {
    tmp: ScratchDir,
    host_root: PathBuf,
    run: String,
}

impl Setup {
    fn new(name: &str) -> Self {
        require_docker(&[IMAGE]);
        let tmp = tempfile_dir();
        let host_root = tmp.join("host");
        std::fs::create_dir(&host_root).unwrap();
        Self {
            tmp,
            host_root,
            run: format!("crash-{name}-{}", std::process::id()),
        }
    }

    fn start(&self) -> Server {
        Server::start(
            &self.run,
            &self.tmp.join("state"),
            &[(
                "BERTH_STORAGE__ALLOWED_HOST_PATHS",
                format!("[\"{}\"]", self.host_root.display()),
            )],
        )
    }

    fn create_body(&self, suite: &str, n: usize) -> Value {
        json!({
            "image": {"uri": IMAGE},
            "entrypoint": ["sleep", "600"],
            "resourceLimits": {"cpu": "100m", "memory": "32Mi"},
            "timeout": 1800,
            "metadata": {"crash": suite},
            "volumes": [
                {"name": "skills", "host": {"path": self.host_root.to_str().unwrap()},
                 "mountPath": "/skills", "subPath": format!("s{n}"), "readOnly": true},
                {"name": "work", "pvc": {"claimName": format!("{}-sessions", self.run)},
                 "mountPath": "/workspace", "subPath": format!("uid-1-session-{n}")},
            ],
        })
    }

    /// Creates `count` sandboxes of `suite` one after the other; their ids.
    fn create_all(&self, server: &Server, suite: &str, count: usize) -> Vec<String> {
        (0..count)
            .map(|n| {
                let body = self.create_body(suite, n);
                let (status, body) =
                    call(&server.address, "POST", "/v1/sandboxes", Some(&body)).unwrap();
                assert_eq!(status, 202, "{body}");
                body["id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    /// Deletes what is left through `server`, then checks the run left nothing behind.
    fn finish(self, server: Server, suite: &str) {
        for id in listed(&server.address, suite) {
            let (status, body) = call(&server.address, "DELETE", &sandbox(&id), None).unwrap();
            assert_eq!(status, 204, "delete {id}: {body}");
        }
        assert_eq!(run_containers(&self.run), Vec::<String>::new());
        assert!(
            !mounts_below(&self.tmp.join("state")),
            "staging mounts left after every sandbox was deleted"
        );
        drop(server);
    }
}

fn sandbox(id: &str) -> String {
    format!("/v1/sandboxes/{id}")
}

/// Ids of the sandboxes of `suite` the server lists.
fn listed(address: &str, suite: &str) -> BTreeSet<String> {
    let (status, body) = call(
        address,
        "GET",
        &format!("/v1/sandboxes?metadata=crash%3D{suite}&pageSize=200"),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The sandbox ids of the run's containers, from their labels.
fn container_ids(run: &str) -> BTreeSet<String> {
    run_containers(run)
        .iter()
        .map(|container| {
            let out = std::process::Command::new("docker")
                .args([
                    "inspect",
                    "--format",
                    "{{index .Config.Labels \"opensandbox.io/id\"}} {{.State.Running}}",
                    container,
                ])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let (id, running) = text.split_once(' ').unwrap();
            assert_eq!(running, "true", "container of {id} is not running");
            id.to_owned()
        })
        .collect()
}

/// Every listed sandbox of `suite` is whole and every container belongs to one; the listed ids.
fn whole_or_gone(setup: &Setup, server: &Server, suite: &str) -> BTreeSet<String> {
    let listed = listed(&server.address, suite);
    for id in &listed {
        let (status, body) = call(&server.address, "GET", &sandbox(id), None).unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"]["state"], "Running", "{body}");
        assert_eq!(body["volumes"].as_array().unwrap().len(), 2, "{body}");
    }
    assert_eq!(
        container_ids(&setup.run),
        listed,
        "containers and listed sandboxes differ"
    );
    listed
}

/// Runs `calls` concurrently and kills the server once `kill_after` of them have answered;
/// the answers that came (index, status, body).
fn kill_midway(
    server: Server,
    calls: Vec<(String, String, Option<Value>)>,
    kill_after: usize,
) -> Vec<(usize, u16, Value)> {
    let answered = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = calls
        .into_iter()
        .enumerate()
        .map(|(n, (method, path, body))| {
            let (address, answered) = (server.address.clone(), Arc::clone(&answered));
            std::thread::spawn(move || {
                let answer = call(&address, &method, &path, body.as_ref());
                if answer.is_some() {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
                answer.map(|(status, body)| (n, status, body))
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered.load(Ordering::SeqCst) < kill_after {
        assert!(Instant::now() < deadline, "too few answers before the kill");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.crash();
    threads
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .collect()
}

fn expiry(body: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(body["expiresAt"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn a_crash_during_20_concurrent_creates_leaves_each_sandbox_whole_or_gone() {
    let setup = Setup::new("creates");
    let server = setup.start();
    let calls = (0..20)
        .map(|n| {
            let body = setup.create_body("creates", n);
            ("POST".to_owned(), "/v1/sandboxes".to_owned(), Some(body))
        })
        .collect();
    let answers = kill_midway(server, calls, 5);
    let acknowledged: BTreeSet<String> = answers
        .iter()
        .filter(|(_, status, _)| *status == 202)
        .map(|(_, _, body)| body["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(acknowledged.len() >= 5, "{answers:?}");

    let server = setup.start();
    let listed = whole_or_gone(&setup, &server, "creates");
    assert!(
        acknowledged.is_subset(&listed),
        "acknowledged creates lost: {:?}",
        acknowledged.difference(&listed).collect::<Vec<_>>()
    );
    println!(
        "{} creates acknowledged before the kill; {} sandboxes whole after the restart",
        acknowledged.len(),
        listed.len()
    );
    setup.finish(server, "creates");
}

#[test]
fn renewals_patches_and_deletes_acknowledged_before_a_crash_survive_it() {
    let setup = Setup::new("deletes");
    let server = setup.start();
    let ids = setup.create_all(&server, "deletes", 10);
    // Renewals and patches, each acknowledged, then a crash at once.
    let mut renewed = Vec::new();
    for id in &ids[..5] {
        let at = (Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
        let (status, body) = call(
            &server.address,
            "POST",
            &format!("{}/renew-expiration", sandbox(id)),
            Some(&json!({"expiresAt": at})),
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        renewed.push(expiry(&body));
        let (status, body) = call(
            &server.address,
            "PATCH",
            &format!("{}/metadata", sandbox(id)),
            Some(&json!({"patched": id})),
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    server.crash();
    let server = setup.start();
    for (id, at) in ids[..5].iter().zip(&renewed) {
        let (status, body) = call(&server.address, "GET", &sandbox(id), None).unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(expiry(&body), *at, "renewal of {id} lost: {body}");
        assert_eq!(
            body["metadata"]["patched"],
            id.as_str(),
            "patch lost: {body}"
        );
    }

    // Concurrent deletes, the server killed after three answers.
    let calls = ids
        .iter()
        .map(|id| ("DELETE".to_owned(), sandbox(id), None))
        .collect();
    let answers = kill_midway(server, calls, 3);
    let deleted: BTreeSet<String> = answers
        .iter()
        .filter(|(_, status, _)| *status == 204)
        .map(|(n, _, _)| ids[*n].clone())
        .collect();
    assert!(deleted.len() >= 3, "{answers:?}");
    let server = setup.start();
    let listed = whole_or_gone(&setup, &server, "deletes");
    assert!(
        listed.is_disjoint(&deleted),
        "acknowledged deletes came back: {:?}",
        listed.intersection(&deleted).collect::<Vec<_>>()
    );
    println!(
        "{} deletes acknowledged before the kill; {} of 10 sandboxes whole after the restart",
        deleted.len(),
        listed.len()
    );
    setup.finish(server, "deletes");
}

#[test]
fn sandboxes_expiring_while_the_server_crashes_are_all_gone_after_the_restart() {
    let setup = Setup::new("expiries");
    let server = setup.start();
    let ids = setup.create_all(&server, "expiries", 6);
    let at = (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    for id in &ids {
        let (status, body) = call(
            &server.address,
            "POST",
            &format!("{}/renew-expiration", sandbox(id)),
            Some(&json!({"expiresAt": at})),
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    // Killed once the reaper has begun: the first expired sandbox is gone or going.
    let deadline = Instant::now() + Duration::from_secs(60);
    while listed(&server.address, "expiries").len() == ids.len()
        && run_containers(&setup.run).len() == ids.len()
    {
        assert!(Instant::now() < deadline, "nothing was reaped within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.crash();
    let server = setup.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = listed(&server.address, "expiries");
        let containers = run_containers(&setup.run);
        if listed.is_empty() && containers.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expired sandboxes still there 60 s after the restart: listed {listed:?}, containers {containers:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    setup.finish(server, "expiries");
}
