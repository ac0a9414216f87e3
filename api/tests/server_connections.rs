//! The bounds on client connections (`berth_api::serve`), over real TCP: a client that sends
//! nothing, or its headers too slowly, is closed at `header_read_timeout`; past
//! `max_connections` new connections are closed at once; and others are served meanwhile.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::serve::{ServeOptions, serve};
use berth_api::{AppState, router};
use berth_core::testkit::InMemoryRuntime;
use berth_core::validate::StoragePolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

struct TestServer {
    address: std::net::SocketAddr,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<()>,
}

async fn start(options: ServeOptions) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = router(AppState::new(
        Arc::new(InMemoryRuntime::new()),
        StoragePolicy::default(),
    ));
    let stop = CancellationToken::new();
    let served = tokio::spawn(serve(listener, app, options, stop.clone()));
    TestServer {
        address,
        stop,
        served,
    }
}

/// `GET /health` on a new connection; the status line.
async fn health(address: std::net::SocketAddr) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("no answer within 10 s")
        .unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

/// Waits (at most `within`) for the server to close `stream`; how long that took.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buffer = [0_u8; 1024];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buffer)).await {
            Err(_) => panic!("still open after {within:?}"),
            // Closed, or reset; a 408 hyper may write first is read past.
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn slow_and_silent_clients_are_closed_at_the_header_timeout_while_others_are_served() {
    let server = start(ServeOptions {
        header_read_timeout: Duration::from_secs(1),
        max_connections: 100,
    })
    .await;
    let mut silent = TcpStream::connect(server.address).await.unwrap();
    let mut slow = TcpStream::connect(server.address).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHo").await.unwrap();
    // Served while those two hang on.
    assert_eq!(health(server.address).await, "HTTP/1.1 200 OK");
    // A byte every 200 ms does not keep the slow one open.
    let dripping = async {
        for byte in b"st: t\r\nX-Slow: 1" {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    dripping.await;
    let slow_closed = closed_within(&mut slow, Duration::from_secs(10)).await;
    let silent_closed = closed_within(&mut silent, Duration::from_secs(10)).await;
    // Both within a few seconds of their start, rather than never.
    assert!(slow_closed < Duration::from_secs(5), "{slow_closed:?}");
    assert!(silent_closed < Duration::from_secs(5), "{silent_closed:?}");
    assert_eq!(health(server.address).await, "HTTP/1.1 200 OK");
    server.stop.cancel();
    server.served.await.unwrap();
}

#[tokio::test]
async fn past_max_connections_new_ones_are_closed_at_once_until_slots_free() {
    let server = start(ServeOptions {
        header_read_timeout: Duration::from_secs(2),
        max_connections: 3,
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(server.address).await.unwrap());
    }
    // Let the server accept all three before the fourth comes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = TcpStream::connect(server.address).await.unwrap();
    let refused_after = closed_within(&mut refused, Duration::from_secs(1)).await;
    assert!(
        refused_after < Duration::from_millis(500),
        "{refused_after:?}"
    );
    // The idle ones reach their header timeout; then a client is served again.
    for stream in &mut idle {
        closed_within(stream, Duration::from_secs(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(health(server.address).await, "HTTP/1.1 200 OK");
    server.stop.cancel();
    server.served.await.unwrap();
}

#[tokio::test]
async fn stopping_finishes_the_request_in_flight_and_closes_idle_connections() {
    let server = start(ServeOptions::default()).await;
    // A keep-alive connection that has been served once, then sits idle.
    let mut idle = TcpStream::connect(server.address).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0_u8; 4096];
    let n = idle.read(&mut buffer).await.unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200 OK"));
    server.stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), server.served)
        .await
        .expect("serve did not return after stop")
        .unwrap();
    closed_within(&mut idle, Duration::from_secs(5)).await;
    // Nothing listens any more.
    assert!(TcpStream::connect(server.address).await.is_err());
}
