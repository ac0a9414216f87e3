//! `berth_cli::client::Client` over real HTTP: the server's router listening on 127.0.0.1 in
//! this process over the in-memory runtime, with an API key; plus stand-in servers that refuse,
//! hang, or answer something that is not the API.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::{AppState, router};
use berth_cli::client::{Client, ClientError, EndpointOptions, ErrorClass, ListQuery};
use berth_core::model::SandboxId;
use berth_core::testkit::InMemoryRuntime;
use berth_core::validate::StoragePolicy;
use berth_core::wire::{self, SandboxState};
use chrono::{SubsecRound, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const IMAGE: &str = "berth-test/busybox:latest";
const KEY: &str = "k3y-that-must-never-show-7d1f";
const TIMEOUT: Duration = Duration::from_secs(30);

struct Server {
    address: String,
    runtime: Arc<InMemoryRuntime>,
}

impl Server {
    async fn start() -> Self {
        let runtime = Arc::new(InMemoryRuntime::new());
        runtime.add_image(IMAGE);
        let policy = StoragePolicy {
            allowed_host_roots: Vec::new(),
            max_timeout_seconds: Some(86_400),
        };
        let app = router(
            AppState::new(runtime.clone(), policy).with_api_key(Some(KEY.to_owned()), false),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { address, runtime }
    }

    fn client(&self) -> Client {
        Client::new(&self.address, Some(KEY.to_owned()), TIMEOUT).unwrap()
    }
}

fn request(metadata: &[(&str, &str)]) -> wire::CreateSandboxRequest {
    wire::CreateSandboxRequest {
        image: Some(wire::ImageSpec {
            uri: IMAGE.to_owned(),
            auth: None,
        }),
        entrypoint: Some(vec!["sleep".into(), "600".into()]),
        timeout: Some(600),
        resource_limits: Some(BTreeMap::from([("cpu".to_owned(), "250m".to_owned())])),
        metadata: Some(
            metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn api_code(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match result.unwrap_err() {
        ClientError::Api { status, code, .. } => (status, code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn ids(sandboxes: &[wire::Sandbox]) -> BTreeSet<String> {
    sandboxes.iter().map(|s| s.id.clone()).collect()
}

#[tokio::test]
async fn the_lifecycle_round_trips() {
    let server = Server::start().await;
    let client = server.client();
    client.health().await.unwrap();

    let created = client.create(&request(&[("team", "ml")])).await.unwrap();
    assert_eq!(created.status.state, SandboxState::Running);
    assert_eq!(created.metadata["team"], "ml");
    let id = created.id.clone();

    let got = client.get(&id).await.unwrap();
    assert_eq!(got.id, id);
    assert_eq!(got.image.as_ref().unwrap().uri, IMAGE);
    assert_eq!(got.entrypoint, ["sleep", "600"]);
    assert_eq!(got.created_at, created.created_at);

    client.pause(&id).await.unwrap();
    assert_eq!(
        client.get(&id).await.unwrap().status.state,
        SandboxState::Paused
    );
    // Pausing twice is the server's 409, answered as such.
    let (status, code) = api_code(client.pause(&id).await);
    assert_eq!((status, code.as_str()), (409, "SANDBOX::INVALID_STATE"));
    client.resume(&id).await.unwrap();
    assert_eq!(
        client.get(&id).await.unwrap().status.state,
        SandboxState::Running
    );

    let expires_at = (Utc::now() + chrono::Duration::hours(2)).trunc_subsecs(0);
    let renewed = client.renew(&id, expires_at).await.unwrap();
    assert_eq!(renewed.expires_at, expires_at);
    assert_eq!(client.get(&id).await.unwrap().expires_at, Some(expires_at));
    let (status, code) = api_code(
        client
            .renew(&id, Utc::now() - chrono::Duration::hours(1))
            .await,
    );
    assert_eq!(
        (status, code.as_str()),
        (400, "SANDBOX::INVALID_EXPIRATION")
    );

    let patch = BTreeMap::from([
        ("team".to_owned(), None),
        ("berth.dev/owner".to_owned(), Some("ada".to_owned())),
    ]);
    let patched = client.patch_metadata(&id, &patch).await.unwrap();
    assert_eq!(
        patched.metadata,
        BTreeMap::from([("berth.dev/owner".to_owned(), "ada".to_owned())])
    );
    assert_eq!(client.get(&id).await.unwrap().metadata, patched.metadata);

    let direct = client
        .endpoint(&id, 8080, EndpointOptions::default())
        .await
        .unwrap();
    assert_eq!(direct.endpoint, "127.0.0.1:8080");
    let proxied = client
        .endpoint(
            &id,
            8080,
            EndpointOptions {
                use_server_proxy: true,
                expires: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        proxied.endpoint,
        format!("{}/v1/sandboxes/{id}/proxy/8080", server.address)
    );
    let signed = client
        .endpoint(
            &id,
            8080,
            EndpointOptions {
                use_server_proxy: false,
                expires: Some(Utc::now() + chrono::Duration::minutes(10)),
            },
        )
        .await
        .unwrap();
    assert!(
        signed
            .endpoint
            .starts_with(&format!("{}/v1/sandboxes/{id}/signed/", server.address)),
        "{}",
        signed.endpoint
    );
    let (status, code) = api_code(
        client
            .endpoint(
                &id,
                0,
                EndpointOptions {
                    use_server_proxy: false,
                    expires: None,
                },
            )
            .await,
    );
    assert_eq!((status, code.as_str()), (400, "SANDBOX::INVALID_PORT"));

    client.delete(&id).await.unwrap();
    let error = client.get(&id).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Api { status: 404, code, .. } if code == "SANDBOX::NOT_FOUND"),
        "{error:?}"
    );
    assert_eq!(error.class(), ErrorClass::Client4xx);
    assert_eq!(error.api_code(), Some("SANDBOX::NOT_FOUND"));
    let (status, code) = api_code(client.delete(&id).await);
    assert_eq!((status, code.as_str()), (404, "SANDBOX::NOT_FOUND"));
}

#[tokio::test]
async fn a_dry_run_creates_nothing_and_an_invalid_request_is_the_servers_400() {
    let server = Server::start().await;
    let client = server.client();
    let dry = client.dry_run(&request(&[("team", "ml")])).await.unwrap();
    assert_eq!(dry.sandbox.metadata["team"], "ml");
    assert_eq!(dry.runtime["image"], IMAGE);
    let listed = client.list(&ListQuery::default()).await.unwrap();
    assert!(listed.items.is_empty());
    assert_eq!(listed.pagination.total_items, 0);

    let mut bad = request(&[]);
    bad.entrypoint = None;
    let error = client.create(&bad).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Api { status: 400, .. }),
        "{error:?}"
    );
    assert_eq!(error.class(), ErrorClass::Client4xx);
}

#[tokio::test]
async fn listing_pages_and_filters_as_the_server_parses_them() {
    let server = Server::start().await;
    let client = server.client();
    let mut team_a = BTreeSet::new();
    let mut team_b = BTreeSet::new();
    for n in 0..5 {
        let (team, set) = if n < 3 {
            ("a", &mut team_a)
        } else {
            ("b", &mut team_b)
        };
        let created = client
            .create(&request(&[("berth.dev/team", team), ("n", &n.to_string())]))
            .await
            .unwrap();
        set.insert(created.id);
    }
    let paused = team_a.iter().next().unwrap().clone();
    client.pause(&paused).await.unwrap();
    let everyone: BTreeSet<String> = team_a.union(&team_b).cloned().collect();

    let first = client
        .list(&ListQuery {
            page_size: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.pagination.total_items, 5);
    assert_eq!(first.pagination.total_pages, 3);
    assert!(first.pagination.has_next_page);
    let last = client
        .list(&ListQuery {
            page: Some(3),
            page_size: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(last.items.len(), 1);
    assert!(!last.pagination.has_next_page);

    // Paging by two still yields every sandbox once.
    let all = client
        .list_all(&ListQuery {
            page_size: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(ids(&all), everyone);

    let by_state = |states: &[&str]| ListQuery {
        states: states.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    let only_paused = client.list_all(&by_state(&["paused"])).await.unwrap();
    assert_eq!(ids(&only_paused), BTreeSet::from([paused.clone()]));
    let either = client
        .list_all(&by_state(&["Running", "PAUSED"]))
        .await
        .unwrap();
    assert_eq!(ids(&either), everyone);
    let (status, code) = api_code(client.list(&by_state(&["asleep"])).await);
    assert_eq!((status, code.as_str()), (400, "GENERAL::INVALID_QUERY"));

    let by_metadata = |pairs: &[(&str, &str)]| ListQuery {
        metadata: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    };
    let a = client
        .list_all(&by_metadata(&[("berth.dev/team", "a")]))
        .await
        .unwrap();
    assert_eq!(ids(&a), team_a);
    let b_four = client
        .list_all(&by_metadata(&[("berth.dev/team", "b"), ("n", "4")]))
        .await
        .unwrap();
    assert_eq!(b_four.len(), 1);
    assert_eq!(b_four[0].metadata["n"], "4");
    assert!(
        client
            .list_all(&by_metadata(&[("berth.dev/team", "a"), ("n", "4")]))
            .await
            .unwrap()
            .is_empty()
    );

    // States and metadata together, with a page size.
    let running_a = client
        .list_all(&ListQuery {
            states: vec!["running".into()],
            metadata: vec![("berth.dev/team".into(), "a".into())],
            page: None,
            page_size: Some(1),
        })
        .await
        .unwrap();
    let mut expected = team_a.clone();
    expected.remove(&paused);
    assert_eq!(ids(&running_a), expected);
}

#[tokio::test]
async fn a_missing_or_wrong_key_reads_clearly() {
    let server = Server::start().await;
    for (key, expected_code) in [
        (None, "MISSING_API_KEY"),
        (Some("not-the-key".to_owned()), "INVALID_API_KEY"),
    ] {
        let client = Client::new(&server.address, key, TIMEOUT).unwrap();
        // Health needs no key.
        client.health().await.unwrap();
        let error = client.list(&ListQuery::default()).await.unwrap_err();
        let ClientError::Api {
            status,
            code,
            message,
        } = &error
        else {
            panic!("expected an API error, got {error:?}");
        };
        assert_eq!((*status, code.as_str()), (401, expected_code));
        let shown = error.to_string();
        assert!(shown.contains(expected_code), "{shown}");
        assert!(shown.contains(message.as_str()), "{shown}");
        assert!(shown.contains("--api-key"), "{shown}");
        assert!(shown.contains("OPEN_SANDBOX_API_KEY"), "{shown}");
        assert_eq!(error.class(), ErrorClass::Client4xx);
    }
}

#[tokio::test]
async fn a_server_error_is_classed_apart_from_client_errors() {
    let server = Server::start().await;
    let client = server.client();
    let id = client.create(&request(&[])).await.unwrap().id;
    server.runtime.set_unavailable(true);
    let error = client.get(&id).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Api { status: 503, code, .. } if code == "RUNTIME::UNAVAILABLE"),
        "{error:?}"
    );
    assert_eq!(error.class(), ErrorClass::ServerOrUnreachable);
    // The command exits 3 for it, printing the code and message (1 is for the server's 4xx).
    let (address, sandbox) = (server.address.clone(), id.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["get", &sandbox, "--server", &address, "--api-key", KEY])
            .env("BERTH_CLI_CONFIG", "/nonexistent/berth-config.toml")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("RUNTIME::UNAVAILABLE"), "{stderr}");
    let unhealthy = client.health().await.unwrap_err();
    assert!(
        matches!(unhealthy, ClientError::Unhealthy { .. }),
        "{unhealthy:?}"
    );
    assert_eq!(unhealthy.class(), ErrorClass::ServerOrUnreachable);
    server.runtime.set_unavailable(false);
    client.health().await.unwrap();
}

#[tokio::test]
async fn ids_never_escape_their_path_segment() {
    let server = Server::start().await;
    let client = server.client();
    let id = client.create(&request(&[])).await.unwrap().id;
    let other = client.create(&request(&[])).await.unwrap().id;

    // Each would reach another route or sandbox if sent unencoded.
    for sneaky in [
        format!("{other}/../{id}"),
        format!("../sandboxes/{id}"),
        format!("{id}/pause"),
        format!("{id}/.."),
        format!("{id}?x=1"),
        format!("{id}#x"),
        format!("%2E%2E/{id}"),
        format!("{id}%2F"),
    ] {
        let (status, code) = api_code(client.delete(&sneaky).await);
        assert_eq!(
            (status, code.as_str()),
            (404, "SANDBOX::NOT_FOUND"),
            "{sneaky}"
        );
        let (status, code) = api_code(client.pause(&sneaky).await);
        assert_eq!(
            (status, code.as_str()),
            (404, "SANDBOX::NOT_FOUND"),
            "{sneaky}"
        );
        let (status, code) = api_code(client.get(&sneaky).await);
        assert_eq!(
            (status, code.as_str()),
            (404, "SANDBOX::NOT_FOUND"),
            "{sneaky}"
        );
    }
    // Dot segments cannot be sent as one (URL parsers resolve them); none is an id.
    for dots in ["", ".", ".."] {
        let error = client.delete(dots).await.unwrap_err();
        assert!(
            matches!(&error, ClientError::InvalidId { .. }),
            "{dots:?}: {error:?}"
        );
        assert_eq!(error.class(), ErrorClass::Client4xx);
    }
    for kept in [&id, &other] {
        assert_eq!(
            client.get(kept).await.unwrap().status.state,
            SandboxState::Running
        );
    }
    assert_eq!(
        client.list_all(&ListQuery::default()).await.unwrap().len(),
        2
    );
}

#[tokio::test]
async fn waiting_ends_running_ended_or_timed_out() {
    let server = Server::start().await;
    let client = server.client();

    let running = client.create(&request(&[])).await.unwrap().id;
    let mut seen = Vec::new();
    let sandbox = client
        .wait_until_running(&running, TIMEOUT, |s| seen.push(s.status.state))
        .await
        .unwrap();
    assert_eq!(sandbox.id, running);
    assert_eq!(seen, [SandboxState::Running]);

    let failed = client.create(&request(&[])).await.unwrap().id;
    server
        .runtime
        .simulate_exit(&SandboxId::new(&failed).unwrap(), 3, false)
        .unwrap();
    let error = client
        .wait_until_running(&failed, TIMEOUT, |_| {})
        .await
        .unwrap_err();
    let ClientError::SandboxEnded { state, reason, .. } = &error else {
        panic!("expected SandboxEnded, got {error:?}");
    };
    assert_eq!(*state, SandboxState::Failed);
    assert_eq!(reason.as_deref(), Some("exited_with_error"));
    assert!(error.to_string().contains("Failed"), "{error}");

    let paused = client.create(&request(&[])).await.unwrap().id;
    client.pause(&paused).await.unwrap();
    let mut polls = 0;
    let started = Instant::now();
    let error = client
        .wait_until_running(&paused, Duration::from_millis(1200), |s| {
            assert_eq!(s.status.state, SandboxState::Paused);
            polls += 1;
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::WaitTimedOut {
                state: Some(SandboxState::Paused),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(polls >= 2, "polled {polls} times");
    assert!(started.elapsed() < Duration::from_secs(10));

    // Resumed while waited for, it is answered running.
    let waiter = {
        let client = client.clone();
        let paused = paused.clone();
        tokio::spawn(async move {
            client
                .wait_until_running(&paused, TIMEOUT, |_| {})
                .await
                .map(|s| s.status.state)
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    client.resume(&paused).await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), SandboxState::Running);

    client.delete(&paused).await.unwrap();
    let (status, code) = api_code(client.wait_until_running(&paused, TIMEOUT, |_| {}).await);
    assert_eq!((status, code.as_str()), (404, "SANDBOX::NOT_FOUND"));
}

#[tokio::test]
async fn a_refused_connection_says_what_to_check() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = Client::new(&format!("127.0.0.1:{port}"), Some(KEY.to_owned()), TIMEOUT).unwrap();
    let error = client.get("some-id").await.unwrap_err();
    let ClientError::Connect { server, reason } = &error else {
        panic!("expected Connect, got {error:?}");
    };
    assert_eq!(server, &format!("http://127.0.0.1:{port}"));
    assert_eq!(reason, "connection refused");
    let shown = error.to_string();
    assert!(
        shown.starts_with(&format!(
            "cannot reach http://127.0.0.1:{port}: connection refused;"
        )),
        "{shown}"
    );
    assert!(shown.contains("OPEN_SANDBOX_DOMAIN"), "{shown}");
    assert_eq!(error.class(), ErrorClass::ServerOrUnreachable);
    assert!(matches!(
        client.health().await,
        Err(ClientError::Connect { .. })
    ));
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    // Accepts and reads, never answers; keeps every connection open.
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            held.push(socket);
        }
    });
    let after = Duration::from_millis(300);
    let client = Client::new(&address, None, after).unwrap();
    let started = Instant::now();
    let error = client.list(&ListQuery::default()).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Timeout { after: a, .. } if *a == after),
        "{error:?}"
    );
    assert!(started.elapsed() >= after);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(error.to_string().contains("300ms"), "{error}");
    assert_eq!(error.class(), ErrorClass::ServerOrUnreachable);

    // A create has its own, longer bound: it waits for the sandbox to run.
    let create_after = Duration::from_millis(1500);
    let client = client.with_create_timeout(create_after);
    let started = Instant::now();
    let error = client.create(&request(&[])).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Timeout { after: a, .. } if *a == create_after),
        "{error:?}"
    );
    assert!(started.elapsed() >= create_after);
    // Other calls keep the client's.
    let error = client.get("some-id").await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Timeout { after: a, .. } if *a == after),
        "{error:?}"
    );
}

/// A server that answers every request with `head` (status line and headers) and `body`, then
/// closes the connection.
async fn answering(head: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let response = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let response = response.clone();
            tokio::spawn(async move {
                let mut read = Vec::new();
                let mut buffer = [0_u8; 4096];
                while !read.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buffer).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    read.extend_from_slice(&buffer[..n]);
                }
                socket.write_all(response.as_bytes()).await.unwrap();
                socket.shutdown().await.unwrap();
            });
        }
    });
    address
}

#[tokio::test]
async fn answers_that_are_not_the_api_are_reported_with_an_excerpt() {
    let html = answering(
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html",
        "<html>\n  upstream down</html>",
    )
    .await;
    let error = Client::new(&html, None, TIMEOUT)
        .unwrap()
        .get("x")
        .await
        .unwrap_err();
    let ClientError::UnexpectedResponse {
        status, excerpt, ..
    } = &error
    else {
        panic!("expected UnexpectedResponse, got {error:?}");
    };
    assert_eq!(*status, 502);
    assert_eq!(excerpt, "<html> upstream down</html>");
    assert_eq!(error.class(), ErrorClass::ServerOrUnreachable);

    let not_found = answering("HTTP/1.1 404 Not Found", "not found").await;
    let error = Client::new(&not_found, None, TIMEOUT)
        .unwrap()
        .get("x")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::UnexpectedResponse { status: 404, .. }),
        "{error:?}"
    );
    assert_eq!(error.class(), ErrorClass::Client4xx);

    let garbage = answering(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json",
        "{\"id\": \"x\"}",
    )
    .await;
    let error = Client::new(&garbage, None, TIMEOUT)
        .unwrap()
        .get("x")
        .await
        .unwrap_err();
    let ClientError::Decode { request, .. } = &error else {
        panic!("expected Decode, got {error:?}");
    };
    assert_eq!(request, "GET /v1/sandboxes/x");

    // A redirect is not followed (the key would go along to wherever it points).
    let redirect = answering(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:9/v1/sandboxes/x",
        "",
    )
    .await;
    let error = Client::new(&redirect, Some(KEY.to_owned()), TIMEOUT)
        .unwrap()
        .get("x")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::UnexpectedResponse { status: 307, .. }),
        "{error:?}"
    );
}

#[test]
fn server_addresses_are_normalized_or_refused() {
    for (given, base) in [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("localhost:8080", "http://localhost:8080"),
        (" sandbox.example.com ", "http://sandbox.example.com"),
        ("[::1]:8080", "http://[::1]:8080"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        (
            "https://Berth.Example.com:443/api/",
            "https://berth.example.com/api",
        ),
        ("http://host:8080/a/b", "http://host:8080/a/b"),
    ] {
        let client = Client::new(given, None, TIMEOUT).unwrap();
        assert_eq!(client.server(), base, "{given}");
    }
    for bad in [
        "",
        "   ",
        "ftp://host",
        "unix:///run/berth.sock",
        "http://",
        "host:notaport",
        "host:99999",
        "a b:80",
        "http://host:8080/?x=1",
        "http://host:8080/#top",
    ] {
        let error = Client::new(bad, None, TIMEOUT).unwrap_err();
        assert!(
            matches!(error, ClientError::InvalidServer { .. }),
            "{bad:?}: {error:?}"
        );
        assert_eq!(error.class(), ErrorClass::Usage);
    }
    // Credentials in the address are refused without being echoed.
    let error = Client::new("http://ada:hunter2@host:8080", None, TIMEOUT).unwrap_err();
    assert!(matches!(error, ClientError::InvalidServer { .. }));
    assert!(
        !format!("{error} {error:?}").contains("hunter2"),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_key_never_shows() {
    let server = Server::start().await;
    let client = server.client();
    let shown = format!("{client:?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert_eq!(client.server(), format!("http://{}", server.address));

    let mut errors = vec![
        client.get("no-such-sandbox").await.unwrap_err(),
        client.get("..").await.unwrap_err(),
    ];
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let refused = Client::new(&format!("127.0.0.1:{port}"), Some(KEY.to_owned()), TIMEOUT).unwrap();
    assert!(!format!("{refused:?}").contains(KEY));
    errors.push(refused.get("x").await.unwrap_err());
    errors.push(Client::new("127.0.0.1:1", Some(format!("{KEY}\n")), TIMEOUT).unwrap_err());
    errors.push(Client::new("ftp://x", Some(KEY.to_owned()), TIMEOUT).unwrap_err());
    for error in &errors {
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(KEY), "{shown}");
    }
    assert!(matches!(errors[3], ClientError::InvalidApiKey));
    assert_eq!(errors[3].class(), ErrorClass::Usage);
}

#[tokio::test]
async fn a_path_prefix_is_kept() {
    let server = Server::start().await;
    let prefixed = Client::new(
        &format!("http://{}/prefix", server.address),
        Some(KEY.to_owned()),
        TIMEOUT,
    )
    .unwrap();
    // This server serves no prefix, so the prefixed route is unknown there.
    let (status, code) = api_code(prefixed.list(&ListQuery::default()).await);
    assert_eq!((status, code.as_str()), (404, "GENERAL::NOT_FOUND"));
}
