//! Connecting to the Docker Engine: the API version is negotiated down to what the engine
//! speaks (bollard's default, 1.53, is newer than Debian's Engine 20.10 with API 1.41), and
//! every field newer than the negotiated version is gated here, because an engine silently
//! ignores fields it does not know. Every call is bounded by `docker.engine_timeout_seconds`
//! (see ARCHITECTURE.md, "Configuration").

use std::fmt;
use std::future::Future;
use std::time::Duration;

use berth_core::runtime::RuntimeError;
use bollard::Docker;

/// A Docker Engine API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    /// Major version (1).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl ApiVersion {
    /// The oldest version Berth speaks (Docker Engine 20.10).
    pub const MINIMUM: ApiVersion = ApiVersion {
        major: 1,
        minor: 41,
    };

    /// Parses `1.41`.
    pub fn parse(s: &str) -> Option<Self> {
        let (major, minor) = s.split_once('.')?;
        Some(Self {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }

    /// `BindOptions.ReadOnlyForceRecursive` (1.44).
    pub fn has_read_only_force_recursive(self) -> bool {
        self >= Self {
            major: 1,
            minor: 44,
        }
    }

    /// `VolumeOptions.Subpath` (1.45).
    pub fn has_volume_subpath(self) -> bool {
        self >= Self {
            major: 1,
            minor: 45,
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why the engine could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine cannot be reached.
    #[error("cannot reach the Docker Engine at {address}: {source}")]
    Unreachable {
        /// Where it was looked for.
        address: String,
        /// The error.
        source: Box<bollard::errors::Error>,
    },
    /// The engine is older than Berth supports.
    #[error(
        "the Docker Engine speaks API {found}; Berth needs at least {}",
        ApiVersion::MINIMUM
    )]
    TooOld {
        /// What it speaks.
        found: String,
    },
}

/// A connected engine and what it speaks.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The client, at the negotiated version.
    pub docker: Docker,
    /// The negotiated API version.
    pub api: ApiVersion,
    /// The engine's own version string (e.g. `20.10.24+dfsg1`).
    pub engine_version: String,
    /// The Unix socket it was reached on, if any (to find the engine's process).
    pub socket: Option<std::path::PathBuf>,
    /// Longest wait for one call (`docker.engine_timeout_seconds`).
    pub timeout: Duration,
}

impl Engine {
    /// Runs one engine call bounded by `docker.engine_timeout_seconds`, body included (bollard's
    /// own timeout, set on the client too, only bounds the wait for the response head). `Err`
    /// when it did not finish in time; otherwise the engine's answer, never bollard's timeout.
    pub async fn bounded<T>(
        &self,
        context: &str,
        call: impl Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<Result<T, bollard::errors::Error>, RuntimeError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Err(bollard::errors::Error::RequestTimeoutError)) | Err(_) => Err(timed_out(
                context,
                "docker.engine_timeout_seconds",
                self.timeout,
            )),
            Ok(answer) => Ok(answer),
        }
    }

    /// A client for a call whose answer may take longer than one ordinary call: the wait for
    /// its response head is bounded by `head_timeout` instead (an image pull, whose head
    /// comes once the registry answered). The caller bounds the whole of it.
    pub fn client_waiting(&self, head_timeout: Duration) -> Docker {
        self.docker.clone().with_timeout(head_timeout)
    }

    /// A client for a long-lived stream (events): Engine 20.10 sends the head of `/events`
    /// only with the first event, so bollard's request timeout would cut a quiet subscription.
    pub fn client_for_streams(&self) -> Docker {
        // `Duration::MAX` becomes a far-future deadline in tokio, i.e. no timeout.
        self.docker.clone().with_timeout(Duration::MAX)
    }
}

/// The error of an engine call that did not finish within the configured `key`.
pub fn timed_out(context: &str, key: &str, limit: Duration) -> RuntimeError {
    RuntimeError::Unavailable {
        detail: format!(
            "{context}: the Docker Engine did not answer within {key} = {} s",
            limit.as_secs()
        ),
    }
}

/// Connects to `host` (or the local default) and negotiates the API version; every call
/// through the client waits at most `timeout` for the engine's response head.
pub async fn connect(host: Option<&str>, timeout: Duration) -> Result<Engine, EngineError> {
    let address = host.map_or_else(
        || std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into()),
        str::to_owned,
    );
    let unreachable = |source| EngineError::Unreachable {
        address: address.clone(),
        source: Box::new(source),
    };
    let docker = match host {
        Some(h) => Docker::connect_with_host(h),
        None => Docker::connect_with_defaults(),
    }
    .map_err(unreachable)?
    .with_timeout(timeout);
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    let version = docker.version().await.map_err(unreachable)?;
    let negotiated = docker.client_version();
    let api = ApiVersion::parse(&format!(
        "{}.{}",
        negotiated.major_version, negotiated.minor_version
    ))
    .ok_or_else(|| EngineError::TooOld {
        found: format!("{negotiated:?}"),
    })?;
    if api < ApiVersion::MINIMUM {
        return Err(EngineError::TooOld {
            found: api.to_string(),
        });
    }
    Ok(Engine {
        docker,
        api,
        engine_version: version.version.unwrap_or_else(|| "unknown".into()),
        socket: address
            .strip_prefix("unix://")
            .map(std::path::PathBuf::from),
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        let v = |s| ApiVersion::parse(s).unwrap();
        assert!(v("1.41") < v("1.44") && v("1.9") < v("1.41") && v("1.45") < v("2.0"));
        assert!(!v("1.41").has_volume_subpath() && v("1.45").has_volume_subpath());
        assert!(
            !v("1.43").has_read_only_force_recursive() && v("1.44").has_read_only_force_recursive()
        );
        assert_eq!(ApiVersion::parse("x"), None);
    }
}
