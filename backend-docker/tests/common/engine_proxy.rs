//! A recording proxy in front of the real Docker Engine, on a Unix socket: it logs every call
//! (method, path, body), can refuse a call before forwarding it or lose the response after the
//! engine performed it, and can report a newer API version than the engine has (rewriting the
//! version prefix back on the way through), so what Berth would send to a newer engine is seen.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// One call seen by the proxy.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// Path without the `/v1.xx` prefix, with the query.
    pub path: String,
    /// The `/v1.xx` prefix the client used, if any.
    pub version: Option<String>,
    pub body: Vec<u8>,
}

/// What to do to a matching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer 500 without forwarding: the engine never sees the call.
    RefuseBefore,
    /// Hang up without forwarding or answering: the engine never sees the call, the client
    /// sees its connection cut.
    CutBefore,
    /// Forward, let the engine finish, then drop the connection: the engine did it, the client
    /// never hears.
    LoseResponse,
    /// Forward, let the engine finish, then hold its answer this long before passing it on: an
    /// engine that is slow to answer.
    Delay(std::time::Duration),
    /// Answer with this status and engine message without forwarding: an engine answer that
    /// cannot be produced on demand here (the text must be the real engine's).
    AnswerWith(u16, &'static str),
}

#[derive(Debug, Clone)]
struct Fault {
    method: String,
    path_contains: String,
    kind: FaultKind,
}

#[derive(Debug, Default)]
struct Shared {
    calls: Vec<Call>,
    faults: Vec<Fault>,
    /// Bumped to end every `/events` response in flight (see `cut_event_streams`).
    event_cuts: Option<tokio::sync::watch::Sender<u64>>,
}

pub struct EngineProxy {
    pub socket: PathBuf,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

impl EngineProxy {
    /// Listens on `<dir>/docker-proxy.sock`, forwarding to `upstream`. With `report_api`, the
    /// engine's `/version` answers that API version, and calls made with it are forwarded with
    /// the engine's real version prefix.
    pub async fn start(dir: &Path, upstream: &str, report_api: Option<&str>) -> Self {
        let socket = dir.join("docker-proxy.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let shared = Arc::new(Mutex::new(Shared {
            event_cuts: Some(tokio::sync::watch::Sender::new(0)),
            ..Shared::default()
        }));
        let upstream = PathBuf::from(upstream.trim_start_matches("unix://"));
        let report_api = report_api.map(str::to_owned);
        let state = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (state, upstream, report_api) =
                    (state.clone(), upstream.clone(), report_api.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, state.clone(), upstream.clone(), report_api.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            socket,
            shared,
            task,
        }
    }

    /// The address to give the runtime.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Applies `kind` to the next call whose method is `method` and whose path contains `path`.
    pub fn fail_next(&self, method: &str, path_contains: &str, kind: FaultKind) {
        self.shared.lock().unwrap().faults.push(Fault {
            method: method.into(),
            path_contains: path_contains.into(),
            kind,
        });
    }

    /// Whether every injected fault was used.
    pub fn faults_pending(&self) -> usize {
        self.shared.lock().unwrap().faults.len()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().unwrap().calls.clone()
    }

    pub fn clear(&self) {
        self.shared.lock().unwrap().calls.clear();
    }

    /// Ends every `/events` response in flight, as an engine restart or a proxy timeout would
    /// (later subscriptions are served normally).
    pub fn cut_event_streams(&self) {
        if let Some(cuts) = &self.shared.lock().unwrap().event_cuts {
            cuts.send_modify(|n| *n += 1);
        }
    }
}

/// A test environment whose runtime reaches the real engine through a new proxy (its socket in
/// the returned directory), with `tweak` applied to the runtime's configuration.
pub async fn proxied_env(
    name: &str,
    report_api: Option<&str>,
    tweak: impl FnOnce(&mut berth_docker::config::DockerConfig),
) -> (super::TestEnv, EngineProxy, tempfile::TempDir) {
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = EngineProxy::start(proxy_dir.path(), ENGINE, report_api).await;
    let host = proxy.host();
    let env = super::TestEnv::with(name, |c| {
        c.host = Some(host);
        tweak(c);
    })
    .await;
    (env, proxy, proxy_dir)
}

/// The real engine's socket.
pub const ENGINE: &str = "unix:///var/run/docker.sock";

/// `body`, ended early when `cut` changes.
fn cuttable(body: Incoming, cut: tokio::sync::watch::Receiver<u64>) -> ProxyBody {
    let frames = futures_util::stream::unfold((body, cut), |(mut body, mut cut)| async move {
        tokio::select! {
            frame = body.frame() => frame.map(|frame| (frame, (body, cut))),
            _ = cut.changed() => None,
        }
    });
    http_body_util::StreamBody::new(frames).boxed()
}

fn split_version(path: &str) -> (Option<String>, String) {
    if let Some(rest) = path.strip_prefix("/v")
        && let Some(slash) = rest.find('/')
        && rest[..slash]
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.')
    {
        return (Some(rest[..slash].to_owned()), rest[slash..].to_owned());
    }
    (None, path.to_owned())
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Mutex<Shared>>,
    upstream: PathBuf,
    report_api: Option<String>,
) -> Result<Response<ProxyBody>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let (version, path) = split_version(&path_and_query);
    let method = parts.method.to_string();
    let fault = {
        let mut s = shared.lock().unwrap();
        s.calls.push(Call {
            method: method.clone(),
            path: path.clone(),
            version: version.clone(),
            body: body.to_vec(),
        });
        let found = s
            .faults
            .iter()
            .position(|f| f.method == method && path.contains(&f.path_contains));
        found.map(|i| s.faults.remove(i).kind)
    };
    if let Some(FaultKind::AnswerWith(status, message)) = fault {
        return Ok(Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(full(serde_json::json!({ "message": message }).to_string()))
            .unwrap());
    }
    if fault == Some(FaultKind::CutBefore) {
        return Err(std::io::Error::other("injected: connection cut"));
    }
    if fault == Some(FaultKind::RefuseBefore) {
        return Ok(Response::builder()
            .status(500)
            .body(full(r#"{"message":"injected failure"}"#))
            .unwrap());
    }
    // Forward with the engine's own prefix: a client that believes the engine is newer still
    // reaches it.
    let forwarded = match (&version, &report_api) {
        (Some(_), Some(_)) => format!("/v1.41{path}"),
        _ => path_and_query.clone(),
    };
    let stream = tokio::net::UnixStream::connect(&upstream).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(parts.method.clone())
        .uri(forwarded);
    for (name, value) in &parts.headers {
        builder = builder.header(name, value);
    }
    let response = sender
        .send_request(builder.body(Full::new(body)).unwrap())
        .await
        .map_err(std::io::Error::other)?;
    if fault == Some(FaultKind::LoseResponse) {
        // Let the engine finish, then hang up without answering.
        let _ = response.into_body().collect().await;
        return Err(std::io::Error::other("injected: response lost"));
    }
    if let Some(FaultKind::Delay(delay)) = fault {
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        tokio::time::sleep(delay).await;
        return Ok(Response::from_parts(parts, full(bytes)));
    }
    if path == "/version"
        && let Some(api) = &report_api
    {
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        let mut json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
        json["ApiVersion"] = serde_json::Value::String(api.clone());
        let mut response = Response::from_parts(parts, full(serde_json::to_vec(&json).unwrap()));
        response.headers_mut().remove(hyper::header::CONTENT_LENGTH);
        return Ok(response);
    }
    if path.starts_with("/events") {
        let cut = shared
            .lock()
            .unwrap()
            .event_cuts
            .as_ref()
            .map(tokio::sync::watch::Sender::subscribe);
        if let Some(cut) = cut {
            return Ok(response.map(|b| cuttable(b, cut)));
        }
    }
    Ok(response.map(|b| b.boxed()))
}
