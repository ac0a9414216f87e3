//! A typed async client of the Berth (OpenSandbox Lifecycle API v1) server.
//!
//! Every call answers the wire types of [`berth_core::wire`] or one [`ClientError`], whose
//! [`ErrorClass`] tells the `berth` command which exit status to use. The API key travels in
//! the `OPEN-SANDBOX-API-KEY` header only and is never part of any message or `Debug` output.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use berth_core::wire;
use chrono::{DateTime, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The header the API key travels in.
pub const API_KEY_HEADER: &str = "OPEN-SANDBOX-API-KEY";

/// How often [`Client::wait_until_running`] asks.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Largest page the server serves; `list_all` asks for it to make few round trips.
const LARGEST_PAGE: u32 = 200;
/// How much of an unexpected body an error quotes.
const EXCERPT_CHARS: usize = 200;

/// What kind of failure an error is, for the command's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Bad input caught before anything was sent (server address, API key).
    Usage,
    /// The server refused the request (HTTP 4xx), or the request names no possible sandbox.
    Client4xx,
    /// The server failed (HTTP 5xx), could not be reached, did not answer in time, answered
    /// something that is not the API, or the sandbox never came to run.
    ServerOrUnreachable,
}

/// Every way a call can fail.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server address is not `host:port` or an `http(s)://` URL.
    #[error("invalid server address {server:?}: {reason}; give host:port or an http(s):// URL")]
    InvalidServer {
        /// The address as given (credentials removed).
        server: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The API key cannot be sent in an HTTP header.
    #[error(
        "the API key cannot be sent in an HTTP header (it holds a control or non-ASCII character)"
    )]
    InvalidApiKey,
    /// The id cannot name a sandbox and cannot be sent as one path segment.
    #[error("{id:?} is not a sandbox id")]
    InvalidId {
        /// The id as given.
        id: String,
    },
    /// The server answered an error with the API's `{code, message}` body.
    #[error("{code}: {message} (HTTP {status}){hint}", hint = auth_hint(*status))]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's stable code, e.g. `SANDBOX::NOT_FOUND`.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server answered an error status without the API's error body (something else may
    /// be listening there, or a proxy in front of it answered).
    #[error(
        "{server} answered HTTP {status} without an API error body{}; is it a Berth server?",
        quoted_excerpt(excerpt)
    )]
    UnexpectedResponse {
        /// The server's base URL.
        server: String,
        /// HTTP status.
        status: u16,
        /// The start of the body.
        excerpt: String,
    },
    /// No connection could be made (refused, name not resolved, TLS failed).
    #[error(
        "cannot reach {server}: {reason}; is berth-server running? set --server or OPEN_SANDBOX_DOMAIN"
    )]
    Connect {
        /// The server's base URL.
        server: String,
        /// Why.
        reason: String,
    },
    /// The server did not answer within the client's timeout.
    #[error("no answer from {server} within {}; raise --request-timeout or check the server", humantime::format_duration(*after))]
    Timeout {
        /// The server's base URL.
        server: String,
        /// The timeout that ran out.
        after: Duration,
    },
    /// The connection broke during the exchange.
    #[error("the exchange with {server} failed: {reason}")]
    Transport {
        /// The server's base URL.
        server: String,
        /// Why.
        reason: String,
    },
    /// A success answer whose body is not what the API promises.
    #[error("unexpected answer to {request}: {reason}")]
    Decode {
        /// Method and path of the request.
        request: String,
        /// What could not be read.
        reason: String,
    },
    /// The server serves, but its runtime (Docker, Kubernetes) does not answer.
    #[error("{server} is serving but its runtime does not answer: {message}")]
    Unhealthy {
        /// The server's base URL.
        server: String,
        /// The server's explanation.
        message: String,
    },
    /// The sandbox ended (`Failed` or `Terminated`) instead of running.
    #[error("sandbox {id} is {state} and will not run{}", status_detail(reason.as_deref(), message.as_deref()))]
    SandboxEnded {
        /// Sandbox id.
        id: String,
        /// The state it ended in.
        state: wire::SandboxState,
        /// The server's short reason, if any.
        reason: Option<String>,
        /// The server's detail, if any.
        message: Option<String>,
    },
    /// The sandbox was not running when the wait ran out.
    #[error("sandbox {id} is not running after {} (last state: {})",
        humantime::format_duration(*after),
        state.map_or("unknown", wire::SandboxState::as_str))]
    WaitTimedOut {
        /// Sandbox id.
        id: String,
        /// The last state seen, if any answer came.
        state: Option<wire::SandboxState>,
        /// How long the wait lasted.
        after: Duration,
    },
}

fn auth_hint(status: u16) -> &'static str {
    if status == 401 {
        "; pass the server's key with --api-key or OPEN_SANDBOX_API_KEY"
    } else {
        ""
    }
}

fn quoted_excerpt(excerpt: &str) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!(" ({excerpt:?})")
    }
}

fn status_detail(reason: Option<&str>, message: Option<&str>) -> String {
    match (reason, message) {
        (Some(r), Some(m)) => format!(": {r}: {m}"),
        (Some(one), None) | (None, Some(one)) => format!(": {one}"),
        (None, None) => String::new(),
    }
}

impl ClientError {
    /// The kind of failure, for the exit status.
    pub fn class(&self) -> ErrorClass {
        let by_status = |status: u16| {
            if (400..500).contains(&status) {
                ErrorClass::Client4xx
            } else {
                ErrorClass::ServerOrUnreachable
            }
        };
        match self {
            Self::InvalidServer { .. } | Self::InvalidApiKey => ErrorClass::Usage,
            Self::InvalidId { .. } => ErrorClass::Client4xx,
            Self::Api { status, .. } | Self::UnexpectedResponse { status, .. } => {
                by_status(*status)
            }
            Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::Transport { .. }
            | Self::Decode { .. }
            | Self::Unhealthy { .. }
            | Self::SandboxEnded { .. }
            | Self::WaitTimedOut { .. } => ErrorClass::ServerOrUnreachable,
        }
    }

    /// The server's error code, when the server answered one.
    pub fn api_code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The filter and page of [`Client::list`], sent as the server parses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Wanted states, any of them (case-insensitive); empty means all.
    pub states: Vec<String>,
    /// Required metadata pairs, all of them.
    pub metadata: Vec<(String, String)>,
    /// Page number, from 1 (server default 1).
    pub page: Option<u32>,
    /// Items per page, 1 to 200 (server default 20).
    pub page_size: Option<u32>,
}

impl ListQuery {
    /// The query string. `metadata` is one parameter whose value is itself a URL-encoded
    /// `k=v&k2=v2`, as the spec has it, so its pairs are encoded twice.
    fn to_query_string(&self) -> String {
        let mut params: Vec<String> = self
            .states
            .iter()
            .map(|s| format!("state={}", encode_component(s)))
            .collect();
        if !self.metadata.is_empty() {
            let pairs: Vec<String> = self
                .metadata
                .iter()
                .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
                .collect();
            params.push(format!("metadata={}", encode_component(&pairs.join("&"))));
        }
        if let Some(page) = self.page {
            params.push(format!("page={page}"));
        }
        if let Some(size) = self.page_size {
            params.push(format!("pageSize={size}"));
        }
        params.join("&")
    }
}

/// Options of [`Client::endpoint`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointOptions {
    /// Answer the server proxy's route to the port instead of the direct address.
    pub use_server_proxy: bool,
    /// Answer a signed proxy route, usable without the API key until then (at most 30 days
    /// ahead). Not with `use_server_proxy`.
    pub expires: Option<DateTime<Utc>>,
}

/// A client of one server. Cloning is cheap (the connection pool is shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Arc<str>,
    api_key: Option<HeaderValue>,
    timeout: Duration,
    create_timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.base)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("create_timeout", &self.create_timeout)
            .finish()
    }
}

/// An answer: its status and whole body.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Client {
    /// A client of `server`: `host:port` (as `OPEN_SANDBOX_DOMAIN` gives it; http assumed) or
    /// an `http(s)://host[:port][/prefix]` URL. Requests go to `<base>/v1/...`; each one,
    /// body included, must finish within `timeout` (a create within its own bound:
    /// [`Client::with_create_timeout`]).
    pub fn new(
        server: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let base = normalize_server(server)?;
        let api_key = api_key
            .map(|key| {
                let mut value =
                    HeaderValue::from_str(&key).map_err(|_| ClientError::InvalidApiKey)?;
                value.set_sensitive(true);
                Ok::<_, ClientError>(value)
            })
            .transpose()?;
        // Each request carries its own timeout (a create's is longer).
        let http = reqwest::Client::builder()
            // The key is a custom header, which reqwest would carry along a redirect to
            // another host; a Berth server never redirects.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Connect {
                server: base.clone(),
                reason: format!("the HTTP client could not be set up: {}", error_chain(&e)),
            })?;
        Ok(Self {
            http,
            base: base.into(),
            api_key,
            timeout,
            create_timeout: timeout,
        })
    }

    /// Gives a create `timeout` instead of the client's: a create waits for the sandbox to run,
    /// image pull included, and a client that hangs up earlier has its create rolled back.
    #[must_use]
    pub fn with_create_timeout(mut self, timeout: Duration) -> Self {
        self.create_timeout = timeout;
        self
    }

    /// The normalized base URL (no trailing slash), for messages.
    pub fn server(&self) -> &str {
        &self.base
    }

    /// Whether the server serves and its runtime answers (`GET /health`, which needs no key):
    /// its answer when it does.
    pub async fn health(&self) -> Result<wire::HealthResponse, ClientError> {
        let answer = self
            .send(Method::GET, "/health", "", None, self.timeout)
            .await?;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE
            && let Ok(degraded) = serde_json::from_slice::<wire::HealthResponse>(&answer.body)
        {
            return Err(ClientError::Unhealthy {
                server: self.base.to_string(),
                message: degraded.message.unwrap_or(degraded.status),
            });
        }
        self.decode("GET /health", &answer)
    }

    /// Creates a sandbox; the server answers once it runs.
    pub async fn create(
        &self,
        request: &wire::CreateSandboxRequest,
    ) -> Result<wire::CreateSandboxResponse, ClientError> {
        let body = Some(json_body(request)?);
        let answer = self
            .send(Method::POST, "/v1/sandboxes", "", body, self.create_timeout)
            .await?;
        self.decode("POST /v1/sandboxes", &answer)
    }

    /// What a create would make (`?dryRun=true`); nothing is created.
    pub async fn dry_run(
        &self,
        request: &wire::CreateSandboxRequest,
    ) -> Result<wire::DryRunResponse, ClientError> {
        self.call(
            Method::POST,
            "/v1/sandboxes",
            "dryRun=true",
            Some(json_body(request)?),
        )
        .await
    }

    /// One sandbox.
    pub async fn get(&self, id: &str) -> Result<wire::Sandbox, ClientError> {
        self.call(Method::GET, &sandbox_path(id, "")?, "", None)
            .await
    }

    /// One page of sandboxes, newest first.
    pub async fn list(
        &self,
        query: &ListQuery,
    ) -> Result<wire::ListSandboxesResponse, ClientError> {
        self.call(Method::GET, "/v1/sandboxes", &query.to_query_string(), None)
            .await
    }

    /// Every sandbox matching the query, from its page (default 1) on, following the pages.
    /// Without a page size, pages are as large as the server allows. A sandbox that moves to
    /// a later page while paging (newer ones were created) is listed once.
    pub async fn list_all(&self, query: &ListQuery) -> Result<Vec<wire::Sandbox>, ClientError> {
        let mut query = query.clone();
        query.page_size = Some(query.page_size.unwrap_or(LARGEST_PAGE));
        let mut page = query.page.unwrap_or(1);
        let mut seen = HashSet::new();
        let mut all = Vec::new();
        loop {
            query.page = Some(page);
            let answer = self.list(&query).await?;
            let fetched = answer.items.len();
            for item in answer.items {
                if seen.insert(item.id.clone()) {
                    all.push(item);
                }
            }
            // An empty page ends it too, so a server that always claims a next page cannot
            // keep the client looping.
            if !answer.pagination.has_next_page || fetched == 0 {
                return Ok(all);
            }
            page = page.saturating_add(1);
        }
    }

    /// Deletes a sandbox and what it holds.
    pub async fn delete(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &sandbox_path(id, "")?, None)
            .await
    }

    /// Pauses a running sandbox.
    pub async fn pause(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::POST, &sandbox_path(id, "/pause")?, None)
            .await
    }

    /// Resumes a paused sandbox.
    pub async fn resume(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::POST, &sandbox_path(id, "/resume")?, None)
            .await
    }

    /// Sets a new absolute expiry, which must be in the future.
    pub async fn renew(
        &self,
        id: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<wire::RenewSandboxExpirationResponse, ClientError> {
        let body = json_body(&wire::RenewSandboxExpirationRequest { expires_at })?;
        self.call(
            Method::POST,
            &sandbox_path(id, "/renew-expiration")?,
            "",
            Some(body),
        )
        .await
    }

    /// Merge-patches the metadata: a value sets a key, `None` removes it, keys not named are
    /// left alone. Answers the patched sandbox.
    pub async fn patch_metadata(
        &self,
        id: &str,
        patch: &BTreeMap<String, Option<String>>,
    ) -> Result<wire::Sandbox, ClientError> {
        let body = json_body(&wire::PatchSandboxMetadataRequest(patch.clone()))?;
        self.call(
            Method::PATCH,
            &sandbox_path(id, "/metadata")?,
            "",
            Some(body),
        )
        .await
    }

    /// Where a port of the sandbox is reachable (`host:port`, or a proxy route; no scheme).
    pub async fn endpoint(
        &self,
        id: &str,
        port: u16,
        options: EndpointOptions,
    ) -> Result<wire::Endpoint, ClientError> {
        let mut query = Vec::new();
        if options.use_server_proxy {
            query.push("use_server_proxy=true".to_owned());
        }
        if let Some(expires) = options.expires {
            query.push(format!("expires={}", expires.timestamp()));
        }
        self.call(
            Method::GET,
            &sandbox_path(id, &format!("/endpoints/{port}"))?,
            &query.join("&"),
            None,
        )
        .await
    }

    /// Asks for the sandbox until it is `Running` and answers it then; `on_state` sees every
    /// answer (to show progress). Fails at once if it is `Failed` or `Terminated`, if a read
    /// fails (a deleted sandbox is `SANDBOX::NOT_FOUND`), or once `timeout` has passed.
    pub async fn wait_until_running(
        &self,
        id: &str,
        timeout: Duration,
        mut on_state: impl FnMut(&wire::Sandbox),
    ) -> Result<wire::Sandbox, ClientError> {
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        let mut last_state = None;
        let timed_out = |state| ClientError::WaitTimedOut {
            id: id.to_owned(),
            state,
            after: started.elapsed(),
        };
        loop {
            let sandbox = tokio::time::timeout_at(deadline, self.get(id))
                .await
                .map_err(|_| timed_out(last_state))??;
            on_state(&sandbox);
            let status = &sandbox.status;
            match status.state {
                wire::SandboxState::Running => return Ok(sandbox),
                wire::SandboxState::Failed | wire::SandboxState::Terminated => {
                    return Err(ClientError::SandboxEnded {
                        id: id.to_owned(),
                        state: status.state,
                        reason: status.reason.clone(),
                        message: status.message.clone(),
                    });
                }
                state => last_state = Some(state),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(timed_out(last_state));
            }
            tokio::time::sleep_until((now + POLL_INTERVAL).min(deadline)).await;
        }
    }

    /// A call whose success body is `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let request = format!("{method} {path}");
        let answer = self.send(method, path, query, body, self.timeout).await?;
        self.decode(&request, &answer)
    }

    /// A success's body, or the error the answer is.
    fn decode<T: DeserializeOwned>(
        &self,
        request: &str,
        answer: &Answer,
    ) -> Result<T, ClientError> {
        if !answer.status.is_success() {
            return Err(self.error_answer(answer));
        }
        serde_json::from_slice(&answer.body).map_err(|e| ClientError::Decode {
            request: request.to_owned(),
            reason: format!("{e}{}", quoted_excerpt(&excerpt(&answer.body))),
        })
    }

    /// A call whose success has no body worth reading.
    async fn call_empty(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(), ClientError> {
        let answer = self.send(method, path, "", body, self.timeout).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(self.error_answer(&answer))
        }
    }

    /// Sends one request to `<base><path>?<query>` and reads the whole answer within `timeout`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Answer, ClientError> {
        let mut url = format!("{}{path}", self.base);
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        let mut request = self.http.request(method, url).timeout(timeout);
        if let Some(key) = &self.api_key {
            request = request.header(API_KEY_HEADER, key.clone());
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, timeout))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e, timeout))?;
        Ok(Answer {
            status,
            body: body.to_vec(),
        })
    }

    /// The error of a non-success answer.
    fn error_answer(&self, answer: &Answer) -> ClientError {
        // Own type, not `wire::ErrorResponse`: that one refuses unknown fields, and an error
        // should read well even from a server that adds some.
        #[derive(Deserialize)]
        struct ErrorBody {
            code: String,
            message: String,
        }
        match serde_json::from_slice::<ErrorBody>(&answer.body) {
            Ok(body) => ClientError::Api {
                status: answer.status.as_u16(),
                code: body.code,
                message: body.message,
            },
            Err(_) => ClientError::UnexpectedResponse {
                server: self.base.to_string(),
                status: answer.status.as_u16(),
                excerpt: excerpt(&answer.body),
            },
        }
    }

    fn transport_error(&self, error: &reqwest::Error, timeout: Duration) -> ClientError {
        let server = self.base.to_string();
        if error.is_timeout() {
            ClientError::Timeout {
                server,
                after: timeout,
            }
        } else if error.is_connect() {
            ClientError::Connect {
                server,
                reason: error_chain(error),
            }
        } else {
            ClientError::Transport {
                server,
                reason: error_chain(error),
            }
        }
    }
}

/// Why a transport error happened: its causes, innermost last, without reqwest's own
/// sentence (which repeats the URL) and hyper's wrapper ("client error (Connect)").
fn error_chain(error: &reqwest::Error) -> String {
    let mut causes: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return "connection refused".to_owned();
        }
        let text = cause.to_string();
        if !text.starts_with("client error (") && !causes.contains(&text) {
            causes.push(text);
        }
        source = cause.source();
    }
    if causes.is_empty() {
        error.to_string()
    } else {
        causes.join(": ")
    }
}

/// The base URL of a server address, without a trailing slash.
fn normalize_server(server: &str) -> Result<String, ClientError> {
    let given = server.trim();
    let invalid = |shown: &str, reason: &str| ClientError::InvalidServer {
        server: shown.to_owned(),
        reason: reason.to_owned(),
    };
    if given.is_empty() {
        return Err(invalid(given, "it is empty"));
    }
    // `host:port` has no scheme; anything with `scheme:/` is taken as a URL.
    let has_scheme = given
        .split_once(':')
        .is_some_and(|(_, rest)| rest.starts_with('/'));
    let text = if has_scheme {
        given.to_owned()
    } else {
        format!("http://{given}")
    };
    let mut url = Url::parse(&text).map_err(|e| invalid(given, &e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        // Never echo credentials, not even in the error.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        return Err(invalid(
            url.as_str(),
            "it carries credentials; pass the API key with --api-key instead",
        ));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(given, "the scheme is not http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(given, "it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(given, "it has a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `/v1/sandboxes/<id><rest>`, the id encoded as exactly one path segment.
fn sandbox_path(id: &str, rest: &str) -> Result<String, ClientError> {
    // URL parsers resolve `.` and `..` segments (also percent-encoded ones) before sending,
    // so those cannot be sent as an id at all; no sandbox has such an id.
    if matches!(id, "" | "." | "..") {
        return Err(ClientError::InvalidId { id: id.to_owned() });
    }
    Ok(format!("/v1/sandboxes/{}{rest}", encode_component(id)))
}

/// Percent-encodes all but RFC 3986's unreserved characters: safe as one path segment (`/`
/// becomes `%2F`) and as a query key or value.
fn encode_component(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn json_body(value: &impl serde::Serialize) -> Result<Vec<u8>, ClientError> {
    // The wire types have string keys only, so this cannot fail in practice.
    serde_json::to_vec(value).map_err(|e| ClientError::Decode {
        request: "encoding the request body".to_owned(),
        reason: e.to_string(),
    })
}

/// The start of a body, on one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some((cut, _)) = words.char_indices().nth(EXCERPT_CHARS) {
        words.truncate(cut);
        words.push('…');
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_refused_and_slashes_encoded() {
        for bad in ["", ".", ".."] {
            assert!(matches!(
                sandbox_path(bad, ""),
                Err(ClientError::InvalidId { .. })
            ));
        }
        assert_eq!(
            sandbox_path("../x", "/pause").ok().as_deref(),
            Some("/v1/sandboxes/..%2Fx/pause")
        );
        assert_eq!(encode_component("a b%/é"), "a%20b%25%2F%C3%A9");
    }

    #[test]
    fn metadata_is_encoded_twice() {
        let query = ListQuery {
            states: vec!["running".into()],
            metadata: vec![("a/b".into(), "x y".into()), ("k".into(), "v".into())],
            page: Some(2),
            page_size: Some(5),
        };
        assert_eq!(
            query.to_query_string(),
            "state=running&metadata=a%252Fb%3Dx%2520y%26k%3Dv&page=2&pageSize=5"
        );
    }

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        assert_eq!(excerpt(b"a\n  b"), "a b");
        let long = excerpt("x".repeat(500).as_bytes());
        assert_eq!(long.chars().count(), EXCERPT_CHARS + 1);
    }
}
