//! The contract between the API and a runtime (Docker, Kubernetes): the `Runtime` trait, what a
//! runtime can do (`Capabilities`), and how it fails (`RuntimeError`).
//!
//! The API validates a request (see [`crate::validate`]), checks it against the runtime's
//! capabilities, and only then calls the runtime; a runtime never re-parses user strings.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error_code::ErrorCode;
use crate::model::{
    MetadataPatch, MountPath, PlatformSpec, ReadOnlyMode, SandboxId, SandboxRecord, SandboxSpec,
    SandboxState, VolumeBackendKind, quoted,
};
use crate::validate::{Violation, Violations};
use crate::wire;

/// Capabilities every runtime drops from a sandbox's processes by default (the same set on
/// Docker and Kubernetes, so a sandbox can do the same things wherever it runs).
pub const DROPPED_CAPABILITIES: [&str; 9] = [
    "AUDIT_WRITE",
    "MKNOD",
    "NET_ADMIN",
    "NET_RAW",
    "SYS_ADMIN",
    "SYS_MODULE",
    "SYS_PTRACE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
];

/// A create call: the validated spec plus the identity and time the API assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSandbox {
    /// Id for the new sandbox.
    pub id: SandboxId,
    /// What to create.
    pub spec: SandboxSpec,
    /// Creation time; `expires_at` is this plus the spec's timeout.
    pub created_at: DateTime<Utc>,
}

impl CreateSandbox {
    /// When the sandbox expires, if it has a timeout.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        let seconds = i64::try_from(self.spec.timeout_seconds?).ok()?;
        self.created_at
            .checked_add_signed(chrono::TimeDelta::try_seconds(seconds)?)
    }
}

/// Which sandboxes a list wants, and which page of them (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListSelection {
    /// Any of these states; empty means all.
    pub states: Vec<SandboxState>,
    /// All of these metadata pairs.
    pub metadata: Vec<(String, String)>,
    /// Matching sandboxes to skip (newest first).
    pub offset: usize,
    /// Most sandboxes to return.
    pub limit: usize,
}

/// A page of sandboxes and how many matched in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPage {
    /// The page, newest first.
    pub items: Vec<SandboxRecord>,
    /// Matching sandboxes in all.
    pub total: usize,
}

impl ListSelection {
    /// Whether a sandbox in `state` with `metadata` is wanted.
    pub fn matches<'a>(
        &self,
        state: SandboxState,
        metadata: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> bool {
        (self.states.is_empty() || self.states.contains(&state))
            && self
                .metadata
                .iter()
                .all(|(k, v)| metadata.clone().any(|(mk, mv)| mk == k && mv == v))
    }

    /// Selects the page from full records: filter, newest first (ties by id, so pages are
    /// stable), skip, take.
    pub fn select(&self, mut records: Vec<SandboxRecord>) -> ListedPage {
        records.retain(|r| {
            self.matches(
                r.status.state,
                r.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )
        });
        records.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        let total = records.len();
        let items = records
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect();
        ListedPage { items, total }
    }
}

/// A dry run's result: the sandbox as it would be, and the runtime object that would be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedSandbox {
    /// The sandbox as it would be reported.
    pub sandbox: SandboxRecord,
    /// The Docker create body or Pod, credentials redacted.
    pub runtime_object: serde_json::Value,
}

/// How a runtime serves one volume backend: the facts a request can be checked against, stated
/// so that any runtime (an engine on one host, a cluster) can state them honestly. How it does
/// so (staging, the engine's or the kubelet's own support) is a runtime detail for its log;
/// what it did for each volume is that volume's report (`readOnlyMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendSupport {
    /// Whether a volume of this backend can be mounted at a `subPath`.
    pub sub_path: bool,
    /// The effective mode of a read-only mount of the whole volume (`Recursive` or
    /// `NonRecursive`).
    pub read_only: ReadOnlyMode,
    /// The effective mode of a read-only mount of a `subPath` (meaningful when `sub_path`).
    pub read_only_sub_path: ReadOnlyMode,
}

impl BackendSupport {
    /// A backend mounted with subPath support and one read-only mode for every mount.
    pub const fn uniform(read_only: ReadOnlyMode) -> Self {
        Self {
            sub_path: true,
            read_only,
            read_only_sub_path: read_only,
        }
    }

    /// The mode a volume of this backend gets: `None` unless it is read-only.
    pub fn read_only_mode(&self, read_only: bool, with_sub_path: bool) -> ReadOnlyMode {
        match (read_only, with_sub_path) {
            (false, _) => ReadOnlyMode::None,
            (true, false) => self.read_only,
            (true, true) => self.read_only_sub_path,
        }
    }
}

/// What a runtime can do, filled from its startup probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Runtime name (`docker`, `kubernetes`, `in-memory`).
    pub runtime: String,
    /// Engine or cluster version string, for the startup log.
    pub engine_version: Option<String>,
    /// Volume backends offered, each with what it supports.
    pub volume_backends: BTreeMap<VolumeBackendKind, BackendSupport>,
    /// Whether pause/resume work (if not, both answer `SANDBOX::UNSUPPORTED_FEATURE`).
    pub pause: bool,
    /// Whether `pvc.storageClass` / `storage` / `accessModes` are honoured (Kubernetes), or would be
    /// ignored (Docker: then they are refused).
    pub pvc_provisioning_hints: bool,
    /// The platform sandboxes run on, if fixed; a request for another is refused.
    pub platform: Option<PlatformSpec>,
    /// Mount paths the runtime reserves beyond Berth's own.
    pub reserved_mount_paths: Vec<MountPath>,
    /// Free-form facts about how this runtime works here, for the startup log only (Docker:
    /// staging, whether the engine sees staging mounts, the API version). Nothing checks them.
    pub details: BTreeMap<String, String>,
}

impl Capabilities {
    /// Whether volumes of `kind` are offered.
    pub fn offers(&self, kind: VolumeBackendKind) -> bool {
        self.volume_backends.contains_key(&kind)
    }

    /// The read-only mode this runtime states for `volume` (`None` when its backend is not
    /// offered): what its report's `readOnlyMode` must say.
    pub fn read_only_mode(&self, volume: &crate::model::Volume) -> Option<ReadOnlyMode> {
        self.volume_backends
            .get(&volume.source.kind())
            .map(|b| b.read_only_mode(volume.read_only, volume.sub_path.is_some()))
    }

    /// Checks a validated spec against what this runtime can do: every shortfall, at once.
    pub fn check(&self, spec: &SandboxSpec) -> Result<(), Violations> {
        let mut violations = Vec::new();
        if let (Some(wanted), Some(have)) = (spec.platform, self.platform)
            && wanted != have
        {
            violations.push(Violation::new(
                "platform",
                ErrorCode::SandboxUnsupportedFeature,
                format!(
                    "this {} runtime runs {:?}/{:?} sandboxes, not {:?}/{:?}",
                    self.runtime, have.os, have.arch, wanted.os, wanted.arch
                ),
            ));
        }
        for (i, volume) in spec.volumes.iter().enumerate() {
            let kind = volume.source.kind();
            let Some(support) = self.volume_backends.get(&kind) else {
                let offered: Vec<&str> = self.volume_backends.keys().map(|b| b.as_str()).collect();
                violations.push(Violation::new(
                    format!("volumes[{i}].{kind}"),
                    ErrorCode::VolumeUnsupportedBackend,
                    format!(
                        "the {} runtime does not offer {kind} volumes (it offers: {})",
                        self.runtime,
                        offered.join(", ")
                    ),
                ));
                continue;
            };
            if volume.sub_path.is_some() && !support.sub_path {
                violations.push(Violation::new(
                    format!("volumes[{i}].subPath"),
                    ErrorCode::VolumeStagingUnavailable,
                    format!(
                        "the {} runtime cannot mount a subPath of a {kind} volume here",
                        self.runtime
                    ),
                ));
            }
            if let crate::model::VolumeSource::Pvc(pvc) = &volume.source
                && pvc.has_provisioning_hints()
                && !self.pvc_provisioning_hints
            {
                violations.push(Violation::new(
                    format!("volumes[{i}].pvc"),
                    ErrorCode::SandboxUnsupportedFeature,
                    format!(
                        "storageClass, storage and accessModes are Kubernetes provisioning hints that the {} runtime cannot honour; omit them",
                        self.runtime
                    ),
                ));
            }
            if let Some(reserved) = self
                .reserved_mount_paths
                .iter()
                .find(|r| volume.mount_path.is_at_or_below(r))
            {
                violations.push(Violation::new(
                    format!("volumes[{i}].mountPath"),
                    ErrorCode::VolumeReservedMountPath,
                    format!(
                        "{} is reserved by the {} runtime ({reserved})",
                        quoted(volume.mount_path.as_str()),
                        self.runtime
                    ),
                ));
            }
        }
        Violations::from_vec(violations).map_or(Ok(()), Err)
    }
}

/// `error` and its causes, each once: a transport error's own text ("client error
/// (SendRequest)") says little; its cause says what happened ("connection closed before
/// message completed"). For the detail of [`RuntimeError::Unavailable`].
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

/// How a runtime call fails. Each variant has one stable code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuntimeError {
    /// No sandbox has this id.
    #[error("sandbox {id} not found")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// The sandbox's state does not allow the operation.
    #[error("sandbox {id} is {state}; cannot {action} it")]
    InvalidState {
        /// The sandbox.
        id: SandboxId,
        /// Its current state.
        state: SandboxState,
        /// What was asked (`pause`, `resume`, ...).
        action: &'static str,
    },
    /// The runtime does not support the operation at all.
    #[error("the {runtime} runtime does not support {action}")]
    Unsupported {
        /// Runtime name.
        runtime: String,
        /// What was asked.
        action: &'static str,
    },
    /// The image is neither present nor pullable.
    #[error(
        "image {} is not present and cannot be pulled: {detail}",
        quoted(image)
    )]
    ImageNotFound {
        /// The image reference.
        image: String,
        /// What the engine said.
        detail: String,
    },
    /// The request is valid on its face but the runtime found it unusable (a missing claim, a
    /// symlink below a trusted root, ...). Nothing was left behind.
    #[error("{0}")]
    Rejected(Violations),
    /// No endpoint for this port.
    #[error("sandbox {id} has no endpoint for port {port}: {detail}")]
    EndpointNotAvailable {
        /// The sandbox.
        id: SandboxId,
        /// The port.
        port: u16,
        /// Why.
        detail: String,
    },
    /// On Kubernetes, the pod has no IP yet.
    #[error("the pod of sandbox {id} has no IP yet")]
    PodIpNotAvailable {
        /// The sandbox.
        id: SandboxId,
    },
    /// Optimistic concurrency gave up: another writer changed the sandbox (a `resourceVersion`
    /// precondition failed) on every one of a bounded number of attempts. Nothing was changed.
    #[error("sandbox {id} kept changing under this call ({detail}); retry")]
    Conflict {
        /// The sandbox.
        id: SandboxId,
        /// What was contended, and how often it was retried.
        detail: String,
    },
    /// The sandbox was made but did not run within the runtime's start deadline; it was
    /// removed. Not an outage: the engine answered, the sandbox could not start in time.
    #[error("sandbox {id} did not run within {limit}: {cause}")]
    StartTimeout {
        /// The sandbox.
        id: SandboxId,
        /// The deadline, as the setting that sets it (`kubernetes.start_timeout_seconds (60 s)`).
        limit: String,
        /// Why it did not run, as the engine or cluster said.
        cause: String,
    },
    /// The engine or cluster cannot be reached.
    #[error("the runtime cannot be reached: {detail}")]
    Unavailable {
        /// What failed.
        detail: String,
    },
    /// Anything else; the detail goes to the log, not to the client.
    #[error("{context}: {detail}")]
    Internal {
        /// What was being done.
        context: String,
        /// What went wrong.
        detail: String,
    },
}

impl RuntimeError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } => ErrorCode::SandboxNotFound,
            Self::InvalidState { .. } => ErrorCode::SandboxInvalidState,
            Self::Unsupported { .. } => ErrorCode::SandboxUnsupportedFeature,
            Self::ImageNotFound { .. } => ErrorCode::SandboxImageNotFound,
            Self::Rejected(v) => v.code(),
            Self::EndpointNotAvailable { .. } => ErrorCode::SandboxEndpointNotAvailable,
            Self::PodIpNotAvailable { .. } => ErrorCode::KubernetesPodIpNotAvailable,
            Self::Conflict { .. } => ErrorCode::SandboxConflict,
            Self::StartTimeout { .. } => ErrorCode::SandboxStartTimeout,
            Self::Unavailable { .. } => ErrorCode::RuntimeUnavailable,
            Self::Internal { .. } => ErrorCode::GeneralInternalError,
        }
    }

    /// The error body for a client: internal details are replaced by a generic message.
    pub fn to_error_response(&self) -> wire::ErrorResponse {
        let message = match self {
            Self::Internal { .. } => "internal error; the server log has the details".to_owned(),
            Self::Rejected(v) => return v.to_error_response(),
            other => other.to_string(),
        };
        wire::ErrorResponse {
            code: self.code().as_str().to_owned(),
            message,
        }
    }
}

/// A sandbox runtime. Implementations own the state they need to answer across restarts and
/// must pass the conformance suite (`testkit::conformance`, feature `testkit`).
///
/// Every method that names a sandbox answers [`RuntimeError::NotFound`] for an unknown id.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// What this runtime can do.
    fn capabilities(&self) -> Capabilities;

    /// Whether the engine or cluster answers now ([`RuntimeError::Unavailable`] if not).
    async fn ping(&self) -> Result<(), RuntimeError>;

    /// Creates and starts a sandbox; returns once it runs. On failure nothing is left behind.
    async fn create(&self, request: CreateSandbox) -> Result<SandboxRecord, RuntimeError>;

    /// One sandbox.
    async fn get(&self, id: &SandboxId) -> Result<SandboxRecord, RuntimeError>;

    /// Every sandbox this runtime manages, in no particular order.
    async fn list(&self) -> Result<Vec<SandboxRecord>, RuntimeError>;

    /// One page of the sandboxes `selection` wants. Runtimes with many sandboxes override this
    /// to filter before building full records.
    async fn list_page(&self, selection: &ListSelection) -> Result<ListedPage, RuntimeError> {
        Ok(selection.select(self.list().await?))
    }

    /// The earliest `expiresAt` of any sandbox (`None` when none expires): the reaper sleeps
    /// until then. Runtimes with many sandboxes override this to answer from an index.
    async fn next_expiry(&self) -> Result<Option<DateTime<Utc>>, RuntimeError> {
        Ok(self.list().await?.iter().filter_map(|r| r.expires_at).min())
    }

    /// At most `limit` sandboxes whose expiry is at or before `now`, earliest first. Runtimes
    /// with many sandboxes override this to answer from an index.
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<SandboxId>, RuntimeError> {
        let mut due: Vec<(DateTime<Utc>, SandboxId)> = self
            .list()
            .await?
            .into_iter()
            .filter_map(|r| r.expires_at.filter(|e| *e <= now).map(|e| (e, r.id)))
            .collect();
        due.sort();
        Ok(due.into_iter().take(limit).map(|(_, id)| id).collect())
    }

    /// How many sandboxes are in each state (states with none may be absent), for `/metrics`.
    /// Runtimes with many sandboxes override this to answer from an index.
    async fn count_by_state(&self) -> Result<BTreeMap<SandboxState, usize>, RuntimeError> {
        let mut counts = BTreeMap::new();
        for record in self.list().await? {
            *counts.entry(record.status.state).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Stops and removes a sandbox, releasing what `deleteOnSandboxTermination` says.
    async fn delete(&self, id: &SandboxId) -> Result<(), RuntimeError>;

    /// Deletes a sandbox only if its expiry is at or before `now`, as one decision with the
    /// delete: a renewal that lands first (from this server or another replica) wins, and the
    /// sandbox stays. `Ok(true)` when it was deleted, `Ok(false)` when it has not expired (or
    /// has no expiry). Docker checks under its one state owner; a cluster runtime deletes with
    /// a `resourceVersion` precondition.
    async fn delete_if_expired(
        &self,
        id: &SandboxId,
        now: DateTime<Utc>,
    ) -> Result<bool, RuntimeError>;

    /// Completes when the earliest expiry may have changed through another writer (a renewal or
    /// create through another replica of a shared cluster), so that a reaper asleep until the
    /// old earliest expiry looks again. A runtime only this server writes never completes: the
    /// server wakes its reaper itself on its own creates and renewals.
    async fn expiries_changed(&self) {
        std::future::pending::<()>().await;
    }

    /// Called once as the server stops, after its calls in flight: gives up what this replica
    /// holds for the others (a cluster runtime's reaper Lease), so another takes over at once
    /// rather than when it runs out. Nothing, by default.
    async fn shutdown(&self) {}

    /// Whether this replica should reap expired sandboxes now. Several servers may share one
    /// cluster and exactly one leads (a cluster runtime holds a lease); a runtime only one
    /// server uses always leads.
    async fn leads_reaping(&self) -> bool {
        true
    }

    /// Pauses a running sandbox ([`RuntimeError::InvalidState`] otherwise).
    async fn pause(&self, id: &SandboxId) -> Result<(), RuntimeError>;

    /// Resumes a paused sandbox ([`RuntimeError::InvalidState`] otherwise).
    async fn resume(&self, id: &SandboxId) -> Result<(), RuntimeError>;

    /// Sets a new expiry (already checked to be in the future) and returns it.
    async fn renew(
        &self,
        id: &SandboxId,
        expires_at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, RuntimeError>;

    /// Applies a validated metadata merge patch, all or nothing, and returns the sandbox.
    async fn patch_metadata(
        &self,
        id: &SandboxId,
        patch: &MetadataPatch,
    ) -> Result<SandboxRecord, RuntimeError>;

    /// The `host:port` (no scheme) at which a port of the sandbox is reachable.
    async fn endpoint(&self, id: &SandboxId, port: u16) -> Result<wire::Endpoint, RuntimeError>;

    /// Where the server proxy connects for a port of the sandbox. By default the endpoint
    /// clients get; a runtime whose server can reach the sandbox with one hop fewer answers
    /// that (Docker: the container's own address rather than the engine's port forwarder, which
    /// would make every proxied request cross two relays).
    async fn proxy_endpoint(
        &self,
        id: &SandboxId,
        port: u16,
    ) -> Result<wire::Endpoint, RuntimeError> {
        self.endpoint(id, port).await
    }

    /// What `create` would do, without any side effect.
    async fn render(&self, request: &CreateSandbox) -> Result<RenderedSandbox, RuntimeError>;
}

#[cfg(test)]
mod tests {
    use super::with_causes;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn causes_follow_the_error_each_once() {
        let inner = Layer("connection closed before message completed", None);
        let repeated = Layer("client error (SendRequest)", Some(Box::new(inner)));
        let outer = Layer("client error (SendRequest)", Some(Box::new(repeated)));
        assert_eq!(
            with_causes(&outer),
            "client error (SendRequest): connection closed before message completed"
        );
    }
}
