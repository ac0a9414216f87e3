//! The server proxy on the real engine, through the real `berth-server`: a busybox `httpd` in a
//! sandbox serves a file, fetched through the proxy with the API key and through a signed route
//! without it; a port where nothing listens is 502, a deleted sandbox 404.

#![cfg(feature = "docker")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Server, tempfile_dir};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const KEY: &str = "proxy-docker-key";
const PAGE: &str = "served from inside the sandbox";

/// One request on its own connection: the status and the body as text.
async fn http(
    address: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, String) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", address);
    if let Some(key) = key {
        request = request.header(berth_api::API_KEY_HEADER, key);
    }
    let request = match body {
        Some(b) => request
            .header("content-type", "application/json")
            .body(BoxBody::new(Full::new(Bytes::from(b.to_string())))),
        None => request.body(BoxBody::new(Empty::<Bytes>::new())),
    }
    .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_served_in_a_sandbox_is_fetched_through_the_proxy() {
    let tmp = tempfile_dir();
    let run = format!("proxy-docker-{}", std::process::id());
    let server = Server::start(
        &run,
        &tmp.join("state"),
        &[("BERTH_SERVER__API_KEY", KEY.to_owned())],
    );
    let address = server.address.clone();
    let script = format!(
        "mkdir -p /tmp/www && echo '{PAGE}' > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
    );
    let (status, body) = http(
        &address,
        "POST",
        "/v1/sandboxes",
        Some(KEY),
        Some(json!({
            "image": {"uri": "berth-test/busybox:latest"},
            "entrypoint": ["sh", "-c", script],
            "timeout": 600,
            "resourceLimits": {"cpu": "250m"},
        })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = json_of(&body)["id"].as_str().unwrap().to_owned();
    let page = format!("/v1/sandboxes/{id}/proxy/8080/index.html");

    // The sandbox runs before httpd listens: until then the proxy says nothing answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        let (status, body) = http(&address, "GET", &page, Some(KEY), None).await;
        if status != StatusCode::BAD_GATEWAY {
            break (status, body);
        }
        assert_eq!(json_of(&body)["code"], "SANDBOX::ENDPOINT_UNREACHABLE");
        assert!(Instant::now() < deadline, "httpd never answered: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, format!("{PAGE}\n"));
    assert_eq!(
        http(&address, "GET", &page, None, None).await.0,
        StatusCode::UNAUTHORIZED,
        "the proxy needs the key"
    );

    // The route `endpoints` answers, as a client would use it.
    let (_, body) = http(
        &address,
        "GET",
        &format!("/v1/sandboxes/{id}/endpoints/8080?use_server_proxy=true"),
        Some(KEY),
        None,
    )
    .await;
    let endpoint = json_of(&body)["endpoint"].as_str().unwrap().to_owned();
    let route = endpoint.strip_prefix(address.as_str()).unwrap();
    let (status, body) = http(
        &address,
        "GET",
        &format!("{route}/index.html"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, format!("{PAGE}\n").as_str())
    );

    // A signed route: no key needed.
    let expires = chrono::Utc::now().timestamp() + 300;
    let (status, body) = http(
        &address,
        "GET",
        &format!("/v1/sandboxes/{id}/endpoints/8080?expires={expires}"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let endpoint = json_of(&body)["endpoint"].as_str().unwrap().to_owned();
    let route = endpoint.strip_prefix(address.as_str()).unwrap();
    assert!(route.contains("/signed/"), "{route}");
    let (status, body) = http(&address, "GET", &format!("{route}/index.html"), None, None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, format!("{PAGE}\n").as_str())
    );

    // Nothing listens on port 9 in the sandbox.
    let (status, body) = http(
        &address,
        "GET",
        &format!("/v1/sandboxes/{id}/proxy/9/"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(json_of(&body)["code"], "SANDBOX::ENDPOINT_UNREACHABLE");

    let (status, _) = http(
        &address,
        "DELETE",
        &format!("/v1/sandboxes/{id}"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = http(&address, "GET", &page, Some(KEY), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(json_of(&body)["code"], "SANDBOX::NOT_FOUND");

    drop(server);
    std::fs::remove_dir_all(&tmp).unwrap();
}
