//! Graceful shutdown with a create in flight: SIGTERM arrives while the create is inside a
//! slow host-side step (an ossfs stand-in helper that takes a second to mount). The server
//! stops accepting, finishes the create — the client gets its 202 with a running sandbox —
//! and exits 0; the sandbox is intact after a restart and is then deleted without residue.

#![cfg(feature = "docker")] // Runs the server on the Docker runtime.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{Server, tempfile_dir};

const SLOW_HELPER: &str = r#"#!/bin/sh
dir="$(dirname "$0")"
echo called >> "$dir/calls.log"
sleep 1
mkdir -p "$dir/bucket"
exec mount --bind "$dir/bucket" "$2"
"#;

/// One HTTP/1.1 exchange on a fresh connection: (status, body).
fn http(address: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn sigterm_finishes_an_in_flight_create_and_exits_0() {
    let tmp = tempfile_dir();
    let helpers = tmp.join("helpers");
    std::fs::create_dir(&helpers).unwrap();
    let helper = helpers.join("ossfs2");
    std::fs::write(&helper, SLOW_HELPER).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = format!("shutdown-{}", std::process::id());
    let state = tmp.join("state");
    let env = [
        (
            "BERTH_STORAGE__OSSFS2_COMMAND",
            helper.display().to_string(),
        ),
        (
            "BERTH_STORAGE__OSSFS_COMMAND",
            "/nonexistent/ossfs".to_owned(),
        ),
    ];
    let mut server = Server::start(&run, &state, &env);
    let request = serde_json::json!({
        "image": {"uri": "berth-test/busybox:latest"},
        "entrypoint": ["sleep", "3600"],
        "resourceLimits": {"cpu": "250m"},
        "volumes": [{"name": "bucket", "mountPath": "/bucket", "subPath": "p",
            "ossfs": {"bucket": "team-data", "endpoint": "oss.example.com",
                "accessKeyId": "AKID", "accessKeySecret": "secret"}}],
    })
    .to_string();
    let address = server.address.clone();
    let create = std::thread::spawn(move || {
        let reply = http(&address, "POST", "/v1/sandboxes", Some(&request));
        (reply, Instant::now())
    });

    // The create is in the helper: terminate now.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !helpers.join("calls.log").exists() {
        assert!(
            Instant::now() < deadline,
            "the create never reached the helper"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let terminated_at = Instant::now();
    server.terminate();
    let ((status, body), answered_at) = create.join().unwrap();
    assert!(
        answered_at > terminated_at,
        "the create was not in flight when SIGTERM arrived"
    );
    assert_eq!(status, 202, "{body}");
    let sandbox: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sandbox["status"]["state"], "Running", "{body}");
    assert_eq!(server.wait(), Some(0), "berth-server did not exit cleanly");
    let id = sandbox["id"].as_str().unwrap().to_owned();

    // The finished create is intact after a restart, and deletes without residue.
    let mut server = Server::start(&run, &state, &env);
    let (status, body) = http(&server.address, "GET", &format!("/v1/sandboxes/{id}"), None);
    assert_eq!(status, 200, "{body}");
    let got: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(got["status"]["state"], "Running", "{body}");
    assert_eq!(got["volumes"][0]["backend"], "ossfs", "{body}");
    let (status, body) = http(
        &server.address,
        "DELETE",
        &format!("/v1/sandboxes/{id}"),
        None,
    );
    assert_eq!(status, 204, "{body}");
    server.terminate();
    assert_eq!(server.wait(), Some(0));
    assert!(common::run_containers(&run).is_empty(), "containers left");
    assert!(!common::mounts_below(&tmp), "mounts left");
    assert_eq!(
        std::fs::read_to_string(helpers.join("calls.log")).unwrap(),
        "called\n",
        "one mount for the one sandbox"
    );
    drop(server);
    std::fs::remove_dir_all(&tmp).unwrap();
}
