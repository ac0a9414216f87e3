//! The router driven with `oneshot` over the in-memory runtime: every status code and every
//! error code path of the API, auth, request ids, the same routes at `/` and `/v1`, panics, and
//! concurrent mutations of one sandbox.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use berth_api::{AppState, router};
use berth_core::model::HostPath;
use berth_core::runtime::{BackendSupport, Capabilities, Runtime};
use berth_core::testkit::InMemoryRuntime;
use berth_core::testkit::intercepted::{Call, HookFuture, Intercepted};
use berth_core::validate::StoragePolicy;
use berth_core::wire;
use chrono::Utc;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const IMAGE: &str = "berth-test/busybox:latest";

fn policy() -> StoragePolicy {
    StoragePolicy {
        allowed_host_roots: vec![HostPath::new("/data").unwrap()],
        max_timeout_seconds: Some(86_400),
    }
}

fn app_with(runtime: Arc<dyn Runtime>, key: Option<&str>) -> Router {
    router(AppState::new(runtime, policy()).with_api_key(key.map(str::to_owned), false))
}

fn memory() -> Arc<InMemoryRuntime> {
    let runtime = Arc::new(InMemoryRuntime::new());
    runtime.add_image(IMAGE);
    runtime
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = match body {
        Some(b) => request
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// Asserts an error reply: status, code, and exactly the two fields.
fn assert_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.body);
    assert_eq!(reply.body["code"], code, "{}", reply.body);
    let fields: Vec<&String> = reply.body.as_object().unwrap().keys().collect();
    assert_eq!(
        fields,
        ["code", "message"],
        "error bodies have exactly code and message"
    );
}

fn create_body(extra: Value) -> Value {
    let mut body = json!({"image": {"uri": IMAGE}, "entrypoint": ["sleep", "600"], "resourceLimits": {"cpu": "250m"}});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

async fn create(app: &Router, extra: Value) -> String {
    let reply = call(
        app,
        Method::POST,
        "/v1/sandboxes",
        Some(create_body(extra)),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn create_get_delete_at_v1_and_root() {
    let app = app_with(memory(), None);
    let reply = call(&app, Method::POST, "/v1/sandboxes", Some(create_body(json!({"timeout": 600, "metadata": {"team": "ml"},
        "volumes": [{"name": "w", "pvc": {"claimName": "sessions"}, "mountPath": "/workspace", "subPath": "uid-1"}]}))), &[]).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    assert_eq!(reply.headers["location"], format!("/v1/sandboxes/{id}"));
    assert_eq!(reply.body["status"]["state"], "Running");
    assert_eq!(reply.body["volumes"][0]["subPath"], "uid-1");
    assert!(reply.body.get("image").is_none());
    for prefix in ["/v1", ""] {
        let got = call(
            &app,
            Method::GET,
            &format!("{prefix}/sandboxes/{id}"),
            None,
            &[],
        )
        .await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body["image"]["uri"], IMAGE);
        assert_eq!(got.body["metadata"]["team"], "ml");
    }
    assert_eq!(
        call(&app, Method::DELETE, &format!("/sandboxes/{id}"), None, &[])
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &call(&app, Method::GET, &format!("/v1/sandboxes/{id}"), None, &[]).await,
        404,
        "SANDBOX::NOT_FOUND",
    );
    assert_error(
        &call(
            &app,
            Method::DELETE,
            &format!("/v1/sandboxes/{id}"),
            None,
            &[],
        )
        .await,
        404,
        "SANDBOX::NOT_FOUND",
    );
    assert_error(
        &call(&app, Method::GET, "/v1/sandboxes/Not_An_Id", None, &[]).await,
        404,
        "SANDBOX::NOT_FOUND",
    );
}

/// The Kubernetes volume form (volumes + mounts) is accepted on every runtime: one reported
/// volume per mount; mixing it with Berth's form, or mounting an unknown volume, is a 400.
#[tokio::test]
async fn the_kubernetes_volume_form_is_accepted_and_checked() {
    let runtime = memory();
    runtime.add_claim(&berth_core::model::ClaimName::new("agent-sessions").unwrap());
    let app = app_with(runtime, None);
    let kubernetes_form = json!({
        "volumes": [
            {"name": "sessions", "persistentVolumeClaim": {"claimName": "agent-sessions"}},
            {"name": "skills", "hostPath": {"path": "/data/skills"}},
        ],
        "mounts": [
            {"name": "sessions", "mountPath": "/workspace", "subPath": "uid-1/session-7"},
            {"name": "sessions", "mountPath": "/mnt/previous", "subPath": "uid-1/session-6", "readOnly": true},
            {"name": "skills", "mountPath": "/skills", "readOnly": true},
        ],
    });
    let reply = call(
        &app,
        Method::POST,
        "/v1/sandboxes",
        Some(create_body(kubernetes_form)),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let volumes: Vec<(String, bool)> = reply.body["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                v["readOnly"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        volumes,
        [
            ("sessions".to_owned(), false),
            ("sessions-2".to_owned(), true),
            ("skills".to_owned(), true),
        ]
    );
    let mixed = json!({
        "volumes": [
            {"name": "sessions", "persistentVolumeClaim": {"claimName": "agent-sessions"}},
            {"name": "work", "pvc": {"claimName": "agent-sessions"}, "mountPath": "/work"},
        ],
        "mounts": [{"name": "sessions", "mountPath": "/workspace"}],
    });
    let reply = call(
        &app,
        Method::POST,
        "/v1/sandboxes",
        Some(create_body(mixed)),
        &[],
    )
    .await;
    assert_error(&reply, 400, "VOLUME::MIXED_FORMS");
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("volumes[1].mountPath") && message.contains("mounts"),
        "{message}"
    );
    let unknown = json!({
        "volumes": [{"name": "sessions", "persistentVolumeClaim": {"claimName": "agent-sessions"}}],
        "mounts": [
            {"name": "sessions", "mountPath": "/workspace"},
            {"name": "scratch", "mountPath": "/scratch"},
        ],
    });
    let reply = call(
        &app,
        Method::POST,
        "/v1/sandboxes",
        Some(create_body(unknown)),
        &[],
    )
    .await;
    assert_error(&reply, 400, "VOLUME::UNKNOWN_VOLUME");
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("mounts[1].name")
    );
}

#[tokio::test]
async fn dry_run_renders_without_side_effects() {
    let runtime = memory();
    let app = app_with(runtime.clone(), None);
    let reply = call(
        &app,
        Method::POST,
        "/v1/sandboxes?dryRun=true",
        Some(create_body(json!({
        "volumes": [{"name": "w", "pvc": {"claimName": "fresh"}, "mountPath": "/w"}]}))),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["sandbox"]["volumes"][0]["source"], "fresh");
    assert_eq!(reply.body["runtime"]["createsClaims"], json!(["fresh"]));
    assert!(runtime.list().await.unwrap().is_empty());
    assert!(!runtime.has_claim(&berth_core::model::ClaimName::new("fresh").unwrap()));
    assert_error(
        &call(
            &app,
            Method::POST,
            "/v1/sandboxes?dryRun=maybe",
            Some(create_body(json!({}))),
            &[],
        )
        .await,
        400,
        "GENERAL::INVALID_QUERY",
    );
    assert_error(
        &call(
            &app,
            Method::POST,
            "/v1/sandboxes?dry_run=true",
            Some(create_body(json!({}))),
            &[],
        )
        .await,
        400,
        "GENERAL::INVALID_QUERY",
    );
}

#[tokio::test]
async fn create_errors_have_codes_and_field_paths() {
    let runtime = memory();
    let app = app_with(runtime.clone(), None);
    let post = |body: Value| {
        let app = app.clone();
        async move { call(&app, Method::POST, "/v1/sandboxes", Some(body), &[]).await }
    };
    let reply = post(create_body(json!({"volumes": [{"name": "w", "host": {"path": "/etc"}, "mountPath": "/w", "subPath": "../x"}]}))).await;
    assert_error(&reply, 400, "VOLUME::INVALID_SUB_PATH");
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("volumes[0].subPath") && message.contains("volumes[0].host.path"),
        "{message}"
    );
    assert_error(
        &post(create_body(json!({"image": {"uri": "missing:1"}}))).await,
        400,
        "SANDBOX::IMAGE_NOT_FOUND",
    );
    assert_error(&post(create_body(json!({"volumes": [{"name": "w", "pvc": {"claimName": "nope", "createIfNotExists": false}, "mountPath": "/w"}]}))).await, 400, "VOLUME::PVC_NOT_FOUND");
    assert_error(
        &post(create_body(json!({"secureAccess": true}))).await,
        400,
        "SANDBOX::UNSUPPORTED_FEATURE",
    );
    assert_error(
        &post(create_body(json!({"timeout": 100_000}))).await,
        400,
        "SANDBOX::INVALID_PARAMETER",
    );
    assert_error(
        &post(create_body(json!({"metadata": {"opensandbox.io/x": "y"}}))).await,
        400,
        "SANDBOX::INVALID_METADATA_LABEL",
    );
    // Transport-level: JSON syntax, types with paths, unknown fields, media type, size.
    let bad = call(
        &app,
        Method::POST,
        "/v1/sandboxes",
        None,
        &[("content-type", "application/json")],
    )
    .await;
    assert_error(&bad, 400, "GENERAL::INVALID_BODY");
    let typed = post(create_body(
        json!({"volumes": [{"name": "w", "mountPath": "/w", "readOnly": "yes"}]}),
    ))
    .await;
    assert_error(&typed, 400, "GENERAL::INVALID_BODY");
    assert!(
        typed.body["message"]
            .as_str()
            .unwrap()
            .starts_with("volumes[0].readOnly"),
        "{}",
        typed.body
    );
    // An object given as the array of its field values (serde's derived code would take it).
    let arrayed = post(json!({"image": [IMAGE], "entrypoint": ["sleep", "60"]})).await;
    assert_error(&arrayed, 400, "GENERAL::INVALID_BODY");
    assert!(
        arrayed.body["message"]
            .as_str()
            .unwrap()
            .starts_with("image: invalid type: sequence, expected a JSON object"),
        "{}",
        arrayed.body
    );
    let unknown = post(create_body(json!({"imagePullPolicy": "Always"}))).await;
    assert_error(&unknown, 400, "GENERAL::INVALID_BODY");
    assert!(
        unknown.body["message"]
            .as_str()
            .unwrap()
            .contains("imagePullPolicy")
    );
    let request = Request::post("/v1/sandboxes")
        .header("content-type", "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    let reply = app.clone().oneshot(request).await.unwrap();
    assert_eq!(reply.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = json!({"image": {"uri": IMAGE}, "env": {"A": "x".repeat(2 << 20)}});
    assert_error(&post(huge).await, 413, "GENERAL::PAYLOAD_TOO_LARGE");
    assert!(
        runtime.list().await.unwrap().is_empty(),
        "a refused create left a sandbox"
    );
}

#[tokio::test]
async fn capabilities_are_checked_before_the_runtime() {
    let caps = Capabilities {
        volume_backends: [(
            wire::VolumeBackendKind::Pvc,
            BackendSupport::uniform(wire::ReadOnlyMode::Recursive),
        )]
        .into_iter()
        .collect(),
        ..InMemoryRuntime::new().capabilities()
    };
    let runtime = Arc::new(InMemoryRuntime::new().with_capabilities(caps));
    runtime.add_image(IMAGE);
    let app = app_with(runtime, None);
    let reply = call(&app, Method::POST, "/v1/sandboxes", Some(create_body(json!({
        "volumes": [{"name": "n", "nfs": {"server": "nas.example.org", "path": "/e"}, "mountPath": "/n"}]}))), &[]).await;
    assert_error(&reply, 400, "VOLUME::UNSUPPORTED_BACKEND");
}

#[tokio::test]
async fn lists_filter_and_paginate() {
    let app = app_with(memory(), None);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create(&app, json!({"metadata": {"team": if i % 2 == 0 { "ml" } else { "web" }, "n": i.to_string()}})).await);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    call(
        &app,
        Method::POST,
        &format!("/v1/sandboxes/{}/pause", ids[0]),
        None,
        &[],
    )
    .await;
    let list = |q: &str| {
        let app = app.clone();
        let q = q.to_owned();
        async move { call(&app, Method::GET, &format!("/v1/sandboxes{q}"), None, &[]).await }
    };
    let all = list("").await;
    assert_eq!(all.body["pagination"]["totalItems"], 5);
    assert_eq!(all.body["items"][0]["id"], ids[4].as_str(), "newest first");
    let page = list("?pageSize=2&page=3").await;
    assert_eq!(
        page.body["pagination"],
        json!({"page": 3, "pageSize": 2, "totalItems": 5, "totalPages": 3, "hasNextPage": false})
    );
    assert_eq!(page.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        list("?pageSize=2").await.body["pagination"]["hasNextPage"],
        true
    );
    assert_eq!(
        list("?state=paused").await.body["pagination"]["totalItems"],
        1
    );
    assert_eq!(
        list("?state=RUNNING&state=Paused").await.body["pagination"]["totalItems"],
        5
    );
    assert_eq!(
        list("?metadata=team%3Dml").await.body["pagination"]["totalItems"],
        3
    );
    assert_eq!(
        list("?metadata=team%3Dml%26n%3D2").await.body["pagination"]["totalItems"],
        1
    );
    assert_eq!(
        list("?metadata=team%3Dml&state=Paused").await.body["pagination"]["totalItems"],
        1
    );
    for bad in [
        "?page=0",
        // The spec's integers are 32-bit.
        "?page=2147483648",
        "?pageSize=201",
        "?pageSize=x",
        "?state=Bogus",
        "?metadata=novalue",
        "?sort=asc",
    ] {
        assert_error(&list(bad).await, 400, "GENERAL::INVALID_QUERY");
    }
}

#[tokio::test]
async fn pause_resume_renew_patch_endpoint() {
    let app = app_with(memory(), None);
    let id = create(
        &app,
        json!({"timeout": 600, "metadata": {"team": "ml", "old": "x"}}),
    )
    .await;
    let at = |p: &str| format!("/v1/sandboxes/{id}{p}");
    assert_eq!(
        call(&app, Method::POST, &at("/pause"), None, &[])
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_error(
        &call(&app, Method::POST, &at("/pause"), None, &[]).await,
        409,
        "SANDBOX::INVALID_STATE",
    );
    assert_eq!(
        call(&app, Method::POST, &at("/resume"), None, &[])
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_error(
        &call(&app, Method::POST, &at("/resume"), None, &[]).await,
        409,
        "SANDBOX::INVALID_STATE",
    );

    let later = (Utc::now() + chrono::TimeDelta::hours(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let renewed = call(
        &app,
        Method::POST,
        &at("/renew-expiration"),
        Some(json!({"expiresAt": later})),
        &[],
    )
    .await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
    assert_eq!(renewed.body, json!({"expiresAt": later}));
    assert_error(
        &call(
            &app,
            Method::POST,
            &at("/renew-expiration"),
            Some(json!({"expiresAt": "2020-01-01T00:00:00Z"})),
            &[],
        )
        .await,
        400,
        "SANDBOX::INVALID_EXPIRATION",
    );
    assert_error(
        &call(
            &app,
            Method::POST,
            &at("/renew-expiration"),
            Some(json!({"expiresAt": "tomorrow"})),
            &[],
        )
        .await,
        400,
        "GENERAL::INVALID_BODY",
    );

    let patched = call(
        &app,
        Method::PATCH,
        &at("/metadata"),
        Some(json!({"team": "web", "old": null, "new": "y"})),
        &[],
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(patched.body["metadata"], json!({"team": "web", "new": "y"}));
    assert_error(
        &call(
            &app,
            Method::PATCH,
            &at("/metadata"),
            Some(json!({"opensandbox.io/id": "x"})),
            &[],
        )
        .await,
        400,
        "SANDBOX::INVALID_METADATA_LABEL",
    );
    assert_eq!(
        call(&app, Method::PATCH, &at("/metadata"), Some(json!({})), &[])
            .await
            .body["metadata"],
        json!({"team": "web", "new": "y"})
    );

    let endpoint = call(&app, Method::GET, &at("/endpoints/8080"), None, &[]).await;
    assert_eq!(endpoint.body, json!({"endpoint": "127.0.0.1:8080"}));
    for bad in ["0", "65536", "http", "-1"] {
        assert_error(
            &call(
                &app,
                Method::GET,
                &at(&format!("/endpoints/{bad}")),
                None,
                &[],
            )
            .await,
            400,
            "SANDBOX::INVALID_PORT",
        );
    }
    // The server proxy's routes (api/tests/proxy.rs has the rest).
    let proxied = call(
        &app,
        Method::GET,
        &at("/endpoints/80?use_server_proxy=true"),
        None,
        &[("host", "berth.test:8080")],
    )
    .await;
    assert_eq!(
        proxied.body,
        json!({"endpoint": format!("berth.test:8080/v1/sandboxes/{id}/proxy/80")})
    );
    assert_error(
        &call(&app, Method::GET, &at("/endpoints/80?expires=1"), None, &[]).await,
        400,
        "SANDBOX::INVALID_EXPIRATION",
    );
    assert_error(
        &call(
            &app,
            Method::GET,
            "/v1/sandboxes/nope/endpoints/80",
            None,
            &[],
        )
        .await,
        404,
        "SANDBOX::NOT_FOUND",
    );
}

#[tokio::test]
async fn routes_methods_snapshots() {
    let app = app_with(memory(), None);
    assert_error(
        &call(&app, Method::GET, "/v1/nothing-here", None, &[]).await,
        404,
        "GENERAL::NOT_FOUND",
    );
    assert_error(
        &call(&app, Method::PUT, "/v1/sandboxes", None, &[]).await,
        405,
        "GENERAL::METHOD_NOT_ALLOWED",
    );
    assert_error(
        &call(&app, Method::GET, "/v1/sandboxes/x/pause", None, &[]).await,
        405,
        "GENERAL::METHOD_NOT_ALLOWED",
    );
    for (method, uri) in [
        (Method::GET, "/v1/snapshots"),
        (Method::GET, "/v1/snapshots/s"),
        (Method::DELETE, "/snapshots/s"),
        (Method::POST, "/v1/sandboxes/x/snapshots"),
    ] {
        assert_error(
            &call(&app, method, uri, None, &[]).await,
            501,
            "SNAPSHOT::NOT_IMPLEMENTED",
        );
    }
}

#[tokio::test]
async fn auth_comes_first_and_request_ids_are_kept() {
    let app = app_with(memory(), Some("s3cret"));
    for uri in [
        "/v1/sandboxes",
        "/v1/sandboxes/unknown",
        "/v1/no-such-route",
        "/metrics",
    ] {
        assert_error(
            &call(&app, Method::GET, uri, None, &[]).await,
            401,
            "MISSING_API_KEY",
        );
        assert_error(
            &call(
                &app,
                Method::GET,
                uri,
                None,
                &[("open-sandbox-api-key", "wrong")],
            )
            .await,
            401,
            "INVALID_API_KEY",
        );
    }
    let ok = call(
        &app,
        Method::GET,
        "/v1/sandboxes",
        None,
        &[("OPEN-SANDBOX-API-KEY", "s3cret")],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        call(&app, Method::GET, "/health", None, &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, Method::GET, "/openapi.json", None, &[])
            .await
            .status,
        StatusCode::OK
    );
    let given = call(
        &app,
        Method::GET,
        "/v1/sandboxes",
        None,
        &[("x-request-id", "trace-123")],
    )
    .await;
    assert_eq!(given.status, StatusCode::UNAUTHORIZED);
    assert_eq!(given.headers["x-request-id"], "trace-123");
    let generated = call(&app, Method::GET, "/v1/sandboxes", None, &[]).await;
    assert_eq!(
        generated.headers["x-request-id"].to_str().unwrap().len(),
        36
    );
    let public = router(AppState::new(memory(), policy()).with_api_key(Some("k".into()), true));
    assert_eq!(
        call(&public, Method::GET, "/metrics", None, &[])
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_unreachable_runtime_is_a_503() {
    let runtime = memory();
    let app = app_with(runtime.clone(), None);
    let id = create(&app, json!({})).await;
    runtime.set_unavailable(true);
    assert_error(
        &call(
            &app,
            Method::POST,
            "/v1/sandboxes",
            Some(create_body(json!({}))),
            &[],
        )
        .await,
        503,
        "RUNTIME::UNAVAILABLE",
    );
    assert_error(
        &call(&app, Method::GET, &format!("/v1/sandboxes/{id}"), None, &[]).await,
        503,
        "RUNTIME::UNAVAILABLE",
    );
    let health = call(&app, Method::GET, "/health", None, &[]).await;
    assert_eq!(
        (health.status, health.body["runtime"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unreachable"))
    );
}

#[tokio::test]
async fn metrics_count_requests_and_sandboxes() {
    let app = app_with(memory(), None);
    create(&app, json!({})).await;
    call(&app, Method::GET, "/v1/sandboxes/nope", None, &[]).await;
    let reply = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(
        reply
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(
            "berth_http_requests_total{method=\"POST\",route=\"/v1/sandboxes\",status=\"202\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "berth_http_requests_total{method=\"GET\",route=\"/v1/sandboxes/{sandbox_id}\",status=\"404\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("berth_sandboxes{state=\"Running\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "berth_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/sandboxes\"} 1"
        ),
        "{text}"
    );
}

async fn metrics_text(app: &Router, key: &str) -> String {
    let reply = call_raw(
        app,
        Method::GET,
        "/metrics",
        &[("open-sandbox-api-key", key)],
    )
    .await;
    assert_eq!(reply.0, StatusCode::OK);
    reply.1
}

/// A request without a body, answered as status and text.
async fn call_raw(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let reply = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = reply.status();
    let bytes = reply.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Invented methods and paths, with and without the key, add no label values: the scrape is
/// the same size after 20 such requests as after 2 000.
#[tokio::test]
async fn metrics_labels_are_a_closed_set() {
    let app = app_with(memory(), Some("k"));
    // Scrapes count too: make the scrape's own label set exist first.
    metrics_text(&app, "k").await;
    let mut sizes = Vec::new();
    for round in [20, 2_000] {
        for i in 0..round {
            let method = Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
            let key = if i % 2 == 0 { "k" } else { "wrong" };
            let path = format!("/v1/sandboxes/s{i}/x{i}");
            call_raw(
                &app,
                method.clone(),
                &path,
                &[("open-sandbox-api-key", key)],
            )
            .await;
            call_raw(&app, method, "/v1/sandboxes", &[]).await;
        }
        sizes.push(metrics_text(&app, "k").await.lines().count());
    }
    assert_eq!(sizes[0], sizes[1], "label sets grew with invented requests");
    let text = metrics_text(&app, "k").await;
    assert!(text.contains("method=\"OTHER\""), "{text}");
    assert!(!text.contains("INVENTED"), "{text}");
    assert!(!text.contains("/x1"), "{text}");
}

/// The in-memory runtime with faults a test switches on: `get` panics; `create` stops half-way
/// (the sandbox exists, the call has not returned) and `delete` before it acts, until the test
/// opens their gate.
#[derive(Default)]
struct Faulty {
    inner: Arc<InMemoryRuntime>,
    panic_on_get: bool,
    create_gate: Option<Arc<tokio::sync::Semaphore>>,
    delete_gate: Option<Arc<tokio::sync::Semaphore>>,
}

/// A closed gate: calls wait at it until the test adds permits.
fn gate() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(0))
}

fn pass(gate: Option<&Arc<tokio::sync::Semaphore>>) -> HookFuture {
    let gate = gate.cloned();
    Box::pin(async move {
        if let Some(gate) = gate {
            gate.acquire().await.unwrap().forget();
        }
    })
}

impl Faulty {
    fn runtime(self) -> Arc<dyn Runtime> {
        let mut runtime = Intercepted::new(self.inner);
        let (panic_on_get, delete_gate) = (self.panic_on_get, self.delete_gate);
        runtime.before = Arc::new(move |call, _| {
            assert!(
                !(panic_on_get && call == Call::Get),
                "deliberate panic in get"
            );
            match call {
                Call::Delete | Call::DeleteIfExpired => pass(delete_gate.as_ref()),
                _ => pass(None),
            }
        });
        let create_gate = self.create_gate;
        runtime.after = Arc::new(move |call, _| match call {
            Call::Create => pass(create_gate.as_ref()),
            _ => pass(None),
        });
        Arc::new(runtime)
    }
}

/// Waits (bounded) until the runtime holds `n` sandboxes.
async fn until_count(runtime: &InMemoryRuntime, n: usize) {
    for _ in 0..500 {
        if runtime.list().await.unwrap().len() == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "the runtime holds {} sandboxes, not {n}",
        runtime.list().await.unwrap().len()
    );
}

/// State over `inner` whose creates stop half-way (the sandbox exists) until `gate` opens.
fn create_gated(inner: &Arc<InMemoryRuntime>, gate: &Arc<tokio::sync::Semaphore>) -> AppState {
    AppState::new(
        Faulty {
            inner: inner.clone(),
            create_gate: Some(gate.clone()),
            ..Faulty::default()
        }
        .runtime(),
        policy(),
    )
}

/// A create request with the plain body.
fn create_request() -> Request<Body> {
    Request::post("/v1/sandboxes")
        .header("content-type", "application/json")
        .body(Body::from(create_body(json!({})).to_string()))
        .unwrap()
}

#[tokio::test]
async fn a_create_whose_client_hangs_up_is_rolled_back() {
    let (inner, gate) = (memory(), gate());
    let state = create_gated(&inner, &gate);
    let app = router(state.clone());
    // The client gives up while the runtime is half-way: the handler's future is dropped.
    let request = app.clone().oneshot(create_request());
    let gave_up = tokio::time::timeout(std::time::Duration::from_millis(50), request).await;
    assert!(gave_up.is_err(), "the create must still be running");
    until_count(&inner, 1).await;
    gate.add_permits(1);
    // The create finishes with nobody to tell: it is rolled back, and shutdown waits for that.
    assert!(
        state
            .finish_in_flight(std::time::Duration::from_secs(10))
            .await
    );
    assert!(inner.list().await.unwrap().is_empty(), "left half-made");
}

#[tokio::test]
async fn a_create_answered_just_as_its_client_hangs_up_is_rolled_back() {
    // The create sends its record, and the client hangs up before the handler runs again to take
    // it (on a busy server the connection's task and the create's run on different threads): the
    // record was sent but never taken, and must be rolled back like any untaken create.
    let (inner, gate) = (memory(), gate());
    let state = create_gated(&inner, &gate);
    let app = router(state.clone());
    let mut request = Box::pin(app.clone().oneshot(create_request()));
    let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), &mut request).await;
    assert!(waiting.is_err(), "the create must still be running");
    until_count(&inner, 1).await;
    gate.add_permits(1);
    // The create task ends (its record sent) while the handler is not polled.
    assert!(
        state
            .finish_in_flight(std::time::Duration::from_secs(10))
            .await
    );
    assert_eq!(inner.list().await.unwrap().len(), 1);
    drop(request);
    assert!(
        state
            .finish_in_flight(std::time::Duration::from_secs(10))
            .await
    );
    assert!(
        inner.list().await.unwrap().is_empty(),
        "a record sent to a client that had gone was kept"
    );
}

#[tokio::test]
async fn a_create_past_the_deadline_is_a_504_and_rolled_back() {
    let inner = memory();
    let gate = gate();
    let state = AppState::new(
        Faulty {
            inner: inner.clone(),
            create_gate: Some(gate.clone()),
            ..Faulty::default()
        }
        .runtime(),
        policy(),
    )
    .with_request_deadline(std::time::Duration::from_millis(100));
    let app = router(state.clone());
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        call(
            &app,
            Method::POST,
            "/v1/sandboxes",
            Some(create_body(json!({}))),
            &[],
        ),
    )
    .await
    .expect("no deadline: the create hangs with its runtime");
    assert_error(&reply, 504, "GENERAL::DEADLINE_EXCEEDED");
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("server.request_deadline_seconds")
    );
    // Still running in the background; shutdown's bound ends the wait, not the call.
    assert!(
        !state
            .finish_in_flight(std::time::Duration::from_millis(50))
            .await
    );
    gate.add_permits(1);
    until_count(&inner, 0).await;
}

#[tokio::test]
async fn a_delete_whose_client_hangs_up_still_completes() {
    let inner = memory();
    let gate = gate();
    let state = AppState::new(
        Faulty {
            inner: inner.clone(),
            delete_gate: Some(gate.clone()),
            ..Faulty::default()
        }
        .runtime(),
        policy(),
    );
    let app = router(state.clone());
    let id = create(&app, json!({})).await;
    let request = app.clone().oneshot(
        Request::delete(format!("/v1/sandboxes/{id}"))
            .body(Body::empty())
            .unwrap(),
    );
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(50), request)
            .await
            .is_err()
    );
    gate.add_permits(1);
    until_count(&inner, 0).await;
    assert!(state.locks.is_empty(), "a lock entry outlived its call");
}

#[tokio::test]
async fn a_panic_is_a_json_500_and_serving_goes_on() {
    let app = app_with(
        Faulty {
            inner: memory(),
            panic_on_get: true,
            ..Faulty::default()
        }
        .runtime(),
        None,
    );
    let id = create(&app, json!({})).await;
    assert_error(
        &call(&app, Method::GET, &format!("/v1/sandboxes/{id}"), None, &[]).await,
        500,
        "GENERAL::INTERNAL_ERROR",
    );
    assert_eq!(
        call(&app, Method::GET, "/v1/sandboxes", None, &[])
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mutations_of_one_sandbox_give_clean_outcomes() {
    let app = app_with(memory(), None);
    for _ in 0..20 {
        let id = create(&app, json!({})).await;
        let mut tasks = Vec::new();
        for (method, suffix) in [
            (Method::DELETE, ""),
            (Method::POST, "/pause"),
            (Method::POST, "/resume"),
            (Method::POST, "/pause"),
        ] {
            let (app, uri) = (app.clone(), format!("/v1/sandboxes/{id}{suffix}"));
            tasks.push(tokio::spawn(async move {
                call(&app, method, &uri, None, &[]).await.status.as_u16()
            }));
        }
        for task in tasks {
            let status = task.await.unwrap();
            assert!([202, 204, 404, 409].contains(&status), "got {status}");
        }
        assert_eq!(
            call(&app, Method::GET, &format!("/v1/sandboxes/{id}"), None, &[])
                .await
                .status,
            StatusCode::NOT_FOUND
        );
    }
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn every_request_gets_one_access_log_line_without_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // The test runtime is single-threaded: every poll happens on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = app_with(memory(), Some("the-key"));
    call(
        &app,
        Method::GET,
        "/v1/sandboxes/nope",
        None,
        &[
            ("open-sandbox-api-key", "the-key"),
            ("x-request-id", "req-42"),
        ],
    )
    .await;
    call(
        &app,
        Method::GET,
        "/v1/sandboxes",
        None,
        &[("open-sandbox-api-key", "wrong-key")],
    )
    .await;
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("berth_api::access"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    for needle in [
        "method=GET",
        "path=\"/v1/sandboxes/nope\"",
        "route=/v1/sandboxes/{sandbox_id}",
        "status=404",
        "request_id=\"req-42\"",
    ] {
        assert!(lines[0].contains(needle), "{needle} missing: {}", lines[0]);
    }
    assert!(lines[1].contains("status=401"), "{}", lines[1]);
    assert!(
        !log.contains("the-key") && !log.contains("wrong-key") && !log.contains("pageSize"),
        "a key or the query reached the log: {log}"
    );
}
