//! A fault-injecting proxy in front of the test cluster's API server. The runtime under test
//! talks plain HTTP to it on loopback (through a kubeconfig of its own, [`ApiProxy::kubeconfig`]);
//! the proxy forwards each call through an admin client (TLS, the admin's credentials), watches
//! streamed through. A call that matches an injected fault is refused with a 500 `Status`, cut
//! before the API server sees it, or carried out with its answer lost or held back.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kube::client::Body;

/// What to do to a matching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    /// Answer 500 without forwarding: the API server never sees the call.
    RefuseBefore,
    /// Hang up without forwarding or answering.
    CutBefore,
    /// Forward, let the API server finish, then hang up without answering.
    LoseResponse,
    /// Forward, let the API server finish, then hold its answer this long.
    Delay(Duration),
}

#[derive(Debug)]
struct Fault {
    method: String,
    path_contains: String,
    kind: FaultKind,
}

#[derive(Debug, Default)]
struct Shared {
    faults: Vec<Fault>,
    /// Method and path of every call that is not a watch.
    calls: Vec<String>,
}

pub(crate) struct ApiProxy {
    /// A kubeconfig that points at the proxy.
    pub(crate) kubeconfig: PathBuf,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiProxy {
    pub(crate) async fn start() -> Self {
        let admin = super::admin_client().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster:\n    server: http://{address}\nusers:\n- name: anonymous\n  user: {{}}\ncontexts:\n- name: proxy\n  context:\n    cluster: proxy\n    user: anonymous\ncurrent-context: proxy\n"
            ),
        )
        .unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (state, admin) = (state.clone(), admin.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, state.clone(), admin.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            kubeconfig,
            shared,
            task,
            _dir: dir,
        }
    }

    /// Applies `kind` to the next call whose method is `method` and whose path (with the
    /// query) contains `path_contains`.
    pub(crate) fn fail_next(&self, method: &str, path_contains: &str, kind: FaultKind) {
        self.shared.lock().unwrap().faults.push(Fault {
            method: method.into(),
            path_contains: path_contains.into(),
            kind,
        });
    }

    /// Injected faults no call has met yet.
    pub(crate) fn faults_pending(&self) -> usize {
        self.shared.lock().unwrap().faults.len()
    }

    /// `METHOD path` of every call but watches, in order.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.shared.lock().unwrap().calls.clone()
    }

    pub(crate) fn clear(&self) {
        self.shared.lock().unwrap().calls.clear();
    }
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Mutex<Shared>>,
    admin: kube::Client,
) -> Result<Response<Body>, std::io::Error> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let method = parts.method.to_string();
    let fault = {
        let mut s = shared.lock().unwrap();
        if !path.contains("watch=") {
            s.calls.push(format!("{method} {path}"));
        }
        let found = s
            .faults
            .iter()
            .position(|f| f.method == method && path.contains(&f.path_contains));
        found.map(|i| s.faults.remove(i).kind)
    };
    match fault {
        Some(FaultKind::RefuseBefore) => {
            let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "injected failure", "reason": "InternalError", "code": 500});
            return Ok(Response::builder()
                .status(500)
                .header("content-type", "application/json")
                .body(Body::from(Bytes::from(status.to_string())))
                .unwrap());
        }
        Some(FaultKind::CutBefore) => {
            return Err(std::io::Error::other("injected: connection cut"));
        }
        _ => {}
    }
    let mut forwarded = Request::builder().method(parts.method).uri(&path);
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST && name != hyper::header::CONTENT_LENGTH {
            forwarded = forwarded.header(name, value);
        }
    }
    let response = admin
        .send(forwarded.body(Body::from(body)).unwrap())
        .await
        .map_err(std::io::Error::other)?;
    match fault {
        Some(FaultKind::LoseResponse) => {
            let _ = response.into_body().collect().await;
            Err(std::io::Error::other("injected: response lost"))
        }
        Some(FaultKind::Delay(held)) => {
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes();
            tokio::time::sleep(held).await;
            Ok(Response::from_parts(parts, Body::from(bytes)))
        }
        _ => Ok(response),
    }
}
