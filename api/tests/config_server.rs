//! Configuration seen from a running `berth-server` on the real engine: an environment value is
//! typed by the field it sets (a numeric API key is a key), and `server.shutdown_timeout_seconds`
//! bounds a shutdown that an unfinished request would otherwise hold forever.

#![cfg(feature = "docker")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{Server, tempfile_dir};

/// One server at a time in this file: `common::free_port` can hand two servers started at once
/// the same port, and the second would then talk to the first.
static ONE_SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The status of `GET path` on a fresh connection, with `key` as the API key if given.
fn get_status(address: &str, path: &str, key: Option<&str>) -> u16 {
    let mut stream = TcpStream::connect(address).unwrap();
    let key_header = key.map_or(String::new(), |k| {
        format!("{}: {k}\r\n", berth_api::API_KEY_HEADER)
    });
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{key_header}\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_numeric_api_key_from_the_environment_is_the_key() {
    // Before: exit 2, "invalid type: integer, expected a string".
    let _one = ONE_SERVER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = tempfile_dir();
    let run = format!("config-key-{}", std::process::id());
    let mut server = Server::start(
        &run,
        &tmp.join("state"),
        &[("BERTH_SERVER__API_KEY", "123456".to_owned())],
    );
    assert_eq!(
        get_status(&server.address, "/v1/sandboxes", Some("123456")),
        200
    );
    assert_eq!(get_status(&server.address, "/v1/sandboxes", None), 401);
    server.terminate();
    assert_eq!(server.wait(), Some(0));
    drop(server);
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn shutdown_timeout_bounds_a_request_that_never_finishes() {
    let _one = ONE_SERVER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = tempfile_dir();
    let run = format!("config-shutdown-{}", std::process::id());
    let mut server = Server::start(
        &run,
        &tmp.join("state"),
        &[("BERTH_SERVER__SHUTDOWN_TIMEOUT_SECONDS", "1".to_owned())],
    );
    // A create whose body never completes. `Expect: 100-continue` makes the server say when the
    // handler starts reading the body, so the request is known to be in progress at SIGTERM.
    let mut stream = TcpStream::connect(&server.address).unwrap();
    write!(
        stream,
        "POST /v1/sandboxes HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "connection closed early"
        );
        seen.push(byte[0]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    stream.write_all(b"{\"image\":").unwrap();
    server.terminate();
    // Without the bound axum waits for this request forever and `wait` fails at its 20 s.
    assert_eq!(server.wait(), Some(0));
    drop(stream);
    drop(server);
    std::fs::remove_dir_all(&tmp).unwrap();
}
