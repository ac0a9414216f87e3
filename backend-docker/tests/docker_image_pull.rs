//! Pulling a missing image with `image.auth`, against a registry that requires it: a minimal
//! Registry v2 server in the test (Basic auth on every route) serves the test image, exported
//! with `docker save`, under a tag the engine does not have. The engine reaches it on loopback
//! (plain HTTP is allowed there), so the credentials really travel from the request through
//! Berth and the engine to a registry that checks them.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_core::ErrorCode;
use berth_core::model::SandboxState;
use berth_core::runtime::Runtime;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use sha2::{Digest, Sha256};

/// `Basic base64("berth:s3cret")`.
const GOOD_AUTH: &str = "Basic YmVydGg6czNjcmV0";
const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// The test image as registry content: (manifest, blobs by digest).
fn image_content(dir: &std::path::Path, unique: &str) -> (Vec<u8>, HashMap<String, Bytes>) {
    let archive = dir.join("image.tar");
    let saved = Command::new("docker")
        .args(["save", "-o"])
        .arg(&archive)
        .arg(common::IMAGE)
        .status()
        .unwrap();
    assert!(saved.success(), "docker save failed");
    let unpacked = dir.join("image");
    std::fs::create_dir(&unpacked).unwrap();
    let untarred = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(untarred.success());
    let saved_manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("manifest.json")).unwrap()).unwrap();
    // A label unique to the run makes a new image id, so the engine cannot answer from what
    // it already has and must fetch the manifest and the config from the registry.
    let mut config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(unpacked.join(saved_manifest[0]["Config"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    config["config"]["Labels"] = json!({ "berth.pull-test": unique });
    let config = serde_json::to_vec(&config).unwrap();
    let mut blobs = HashMap::new();
    let mut layers = Vec::new();
    for layer in saved_manifest[0]["Layers"].as_array().unwrap() {
        // Uncompressed: its digest is its diff id, and the engine detects the (lack of)
        // compression itself.
        let bytes = std::fs::read(unpacked.join(layer.as_str().unwrap())).unwrap();
        layers.push(json!({
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "size": bytes.len(),
            "digest": digest(&bytes),
        }));
        blobs.insert(digest(&bytes), Bytes::from(bytes));
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": config.len(),
            "digest": digest(&config),
        },
        "layers": layers,
    }))
    .unwrap();
    blobs.insert(digest(&config), Bytes::from(config));
    (manifest, blobs)
}

struct Registry {
    address: String,
    authorized: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `/v2/` and the one repository's manifest and blobs, to Basic `berth:s3cret` only.
async fn start_registry(manifest: Vec<u8>, blobs: HashMap<String, Bytes>) -> Registry {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (authorized, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (ok, no) = (authorized.clone(), refused.clone());
    let manifest = Bytes::from(manifest);
    let blobs = Arc::new(blobs);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (ok, no, manifest, blobs) =
                (ok.clone(), no.clone(), manifest.clone(), blobs.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: Request<hyper::body::Incoming>| {
                        let (ok, no, manifest, blobs) =
                            (ok.clone(), no.clone(), manifest.clone(), blobs.clone());
                        async move {
                            let builder = Response::builder()
                                .header("Docker-Distribution-API-Version", "registry/2.0");
                            let authorized = request
                                .headers()
                                .get("authorization")
                                .is_some_and(|v| v == GOOD_AUTH);
                            if !authorized {
                                no.fetch_add(1, Ordering::Relaxed);
                                return builder
                                .status(StatusCode::UNAUTHORIZED)
                                .header("WWW-Authenticate", "Basic realm=\"berth-test\"")
                                .body(Full::new(Bytes::from_static(
                                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                                )));
                            }
                            ok.fetch_add(1, Ordering::Relaxed);
                            let path = request.uri().path().to_owned();
                            let head = request.method() == hyper::Method::HEAD;
                            let (status, content_type, body, digest_header) = if path == "/v2/" {
                                (
                                    StatusCode::OK,
                                    "application/json",
                                    Bytes::from_static(b"{}"),
                                    None,
                                )
                            } else if path.starts_with("/v2/berth-auth/busybox/manifests/") {
                                (
                                    StatusCode::OK,
                                    MANIFEST_TYPE,
                                    manifest.clone(),
                                    Some(digest(&manifest)),
                                )
                            } else if let Some(d) =
                                path.strip_prefix("/v2/berth-auth/busybox/blobs/")
                                && let Some(blob) = blobs.get(d)
                            {
                                (
                                    StatusCode::OK,
                                    "application/octet-stream",
                                    blob.clone(),
                                    Some(d.to_owned()),
                                )
                            } else {
                                (
                                    StatusCode::NOT_FOUND,
                                    "application/json",
                                    Bytes::from_static(b"{}"),
                                    None,
                                )
                            };
                            let mut builder = builder
                                .status(status)
                                .header("Content-Type", content_type)
                                .header("Content-Length", body.len());
                            if let Some(d) = digest_header {
                                builder = builder.header("Docker-Content-Digest", d);
                            }
                            builder.body(Full::new(if head { Bytes::new() } else { body }))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Registry {
        address,
        authorized,
        refused,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_pulled_with_the_request_credentials() {
    let env = common::TestEnv::new("pull").await;
    let (manifest, blobs) = image_content(&env.dir, &env.run);
    let registry = start_registry(manifest, blobs).await;
    let image = format!(
        "{}/berth-auth/busybox:{}",
        registry.address,
        env.run.to_lowercase()
    );
    struct RemoveImage(String);
    impl Drop for RemoveImage {
        fn drop(&mut self) {
            let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
        }
    }
    let _cleanup = RemoveImage(image.clone());
    let request = |auth: Option<serde_json::Value>| {
        let mut r = common::request_with(json!([]));
        r["image"] = json!({"uri": image});
        if let Some(auth) = auth {
            r["image"]["auth"] = auth;
        }
        r
    };

    // Without credentials, and with wrong ones: refused by the registry, a 400 naming the image.
    for auth in [
        None,
        Some(json!({"username": "berth", "password": "wrong"})),
    ] {
        let err = env.create(request(auth.clone())).await.unwrap_err();
        assert_eq!(
            err.code(),
            ErrorCode::SandboxImageNotFound,
            "{auth:?}: {err}"
        );
        assert!(err.to_string().contains(&image), "{err}");
        assert!(
            !err.to_string().contains("wrong"),
            "the password is not echoed: {err}"
        );
    }
    assert_eq!(registry.authorized.load(Ordering::Relaxed), 0);
    assert!(registry.refused.load(Ordering::Relaxed) >= 2);
    let (containers, _) = common::leftovers(&env.run);
    assert!(containers.is_empty(), "{containers:?}");

    // With the right ones: pulled, created, running.
    let sandbox = env
        .create(request(Some(
            json!({"username": "berth", "password": "s3cret"}),
        )))
        .await
        .unwrap();
    assert_eq!(sandbox.status.state, SandboxState::Running);
    let (authorized, refused) = (
        registry.authorized.load(Ordering::Relaxed),
        registry.refused.load(Ordering::Relaxed),
    );
    assert!(
        authorized >= 3,
        "manifest and blobs were fetched: {authorized} authorized, {refused} refused requests"
    );
    assert_eq!(common::exec(&sandbox.id, "echo pulled").1, "pulled\n");
    env.runtime().delete(&sandbox.id).await.unwrap();
}
