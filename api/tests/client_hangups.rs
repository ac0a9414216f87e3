//! Clients that hang up mid-create, on the real engine through the real binary: 15 creates with a
//! host volume and a pvc volume on subPaths, each client closing its connection 20–500 ms after
//! sending. Every create runs to its end detached from the connection and, with nobody to
//! answer, is rolled back — deleted as its client would have deleted it: afterwards no sandbox is
//! listed, and no container or staging mount of the run is left (see ARCHITECTURE.md, invariant
//! "Nothing half-made"). The claim the creates asked to exist stays, unused, as after any delete
//! (another session may already have written to it).

#![cfg(feature = "docker")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Server, docker_list, mounts_below, run_containers, tempfile_dir};

const CREATES: u64 = 15;

fn create_body(host_root: &std::path::Path, n: u64) -> String {
    serde_json::json!({
        "image": {"uri": "berth-test/busybox:latest"},
        "entrypoint": ["sleep", "600"],
        "resourceLimits": {"cpu": "250m", "memory": "64Mi"},
        "metadata": {"hangup": "yes"},
        "volumes": [
            {"name": "skills", "host": {"path": host_root.to_str().unwrap()}, "mountPath": "/skills", "subPath": format!("s{n}"), "readOnly": true},
            {"name": "work", "pvc": {"claimName": "hangup-sessions"}, "mountPath": "/workspace", "subPath": format!("uid-1-session-{n}")},
        ],
    })
    .to_string()
}

fn list_total(address: &str) -> u64 {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET /v1/sandboxes?metadata=hangup%3Dyes HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    json["pagination"]["totalItems"].as_u64().unwrap()
}

#[test]
fn creates_whose_clients_hang_up_leave_nothing() {
    let tmp = tempfile_dir();
    let host_root = tmp.join("host");
    std::fs::create_dir(&host_root).unwrap();
    let state = tmp.join("state");
    let run = format!("hangup-{}", std::process::id());
    let server = Server::start(
        &run,
        &state,
        &[(
            "BERTH_STORAGE__ALLOWED_HOST_PATHS",
            format!("[\"{}\"]", host_root.display()),
        )],
    );

    let clients: Vec<_> = (0..CREATES)
        .map(|n| {
            let (address, body) = (server.address.clone(), create_body(&host_root, n));
            std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(&address).unwrap();
                write!(
                    stream,
                    "POST /v1/sandboxes HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                // 20 ms to about 500 ms: some hang up before anything is made, some mid-way.
                std::thread::sleep(Duration::from_millis(20 + n * 34));
                stream.shutdown(std::net::Shutdown::Both).unwrap();
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }

    // Every create ends on its own (within the engine's timeouts) and is rolled back.
    let deadline = Instant::now() + Duration::from_secs(120);
    let volume_filter = format!("label=berth.test-run={run}");
    loop {
        let listed = list_total(&server.address);
        let containers = run_containers(&run);
        let volumes = docker_list(&["volume", "ls", "-q", "--filter", &volume_filter]);
        let staged = mounts_below(&state);
        if listed == 0
            && containers.is_empty()
            && volumes.iter().all(|v| v == "hangup-sessions")
            && !staged
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind after the clients hung up: {listed} sandboxes listed, containers {containers:?}, volumes {volumes:?}, staging mounts: {staged}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
