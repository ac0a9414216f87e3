//! The OpenSandbox Lifecycle API v1 on the wire: request and response bodies exactly as the spec
//! spells them (camelCase), plus Berth's additive `volumes` field on sandbox responses.
//!
//! Request types reject unknown fields, so nothing a client sends is silently ignored; they accept
//! any string where the spec has a constraint, so that [`crate::validate`] can report every
//! violation with its field path and a stable code instead of failing on the first one.
//! Response types tolerate unknown fields, so a newer server does not break an older client.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Request bodies are JSON objects, and so is every struct in them. A derived `Deserialize` also
/// builds a struct from a JSON array of its field values in order (`"image": ["busybox"]`), which
/// the schema does not allow and no client means: it would be input taken in a form nobody
/// checks. Each request type therefore derives with `remote = "Self"` (serde then makes the
/// derived code inherent functions) and gets its trait impls here, which hand that code only
/// JSON objects; anything else is refused with the field's path like any other type error.
macro_rules! from_objects_only {
    ($($request:ident),+ $(,)?) => {$(
        impl<'de> Deserialize<'de> for $request {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct ObjectVisitor;
                impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
                    type Value = $request;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a JSON object (", stringify!($request), ")"))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        map: A,
                    ) -> Result<$request, A::Error> {
                        $request::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    }
                }
                deserializer.deserialize_map(ObjectVisitor)
            }
        }

        impl Serialize for $request {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                $request::serialize(self, serializer)
            }
        }
    )+};
}

from_objects_only!(
    CreateSandboxRequest,
    ImageSpec,
    ImageAuth,
    PlatformSpec,
    NetworkPolicy,
    NetworkRule,
    CredentialProxyConfig,
    Volume,
    PersistentVolumeClaimSource,
    HostPathSource,
    VolumeMount,
    HostBackend,
    PvcBackend,
    OssfsBackend,
    NfsBackend,
    RenewSandboxExpirationRequest,
);

/// `POST /v1/sandboxes` body. Every field of the spec is here (and the newer SDK's `templateId`,
/// `resourceRequests`, `lifecycle`), so that fields Berth does not implement are refused by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSandboxRequest {
    /// Container image to run. Exactly one of `image` and `snapshotId`; as Berth refuses
    /// `snapshotId`, required (absent, it is reported with the other violations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = true, nullable = false)]
    pub image: Option<ImageSpec>,
    /// Snapshot to restore from (not implemented by Berth: refused when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Required OS and CPU architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
    /// Seconds until automatic termination, at least 60; absent or null means no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 60)]
    pub timeout: Option<i64>,
    /// Resource limits: `cpu` and `memory` in Kubernetes quantity syntax; required (`{}` for
    /// none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = true, nullable = false)]
    pub resource_limits: Option<BTreeMap<String, String>>,
    /// Environment variables of the entry process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// User metadata; keys and values follow Kubernetes label syntax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// The entry process, `[executable, args...]`; required with `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = true, nullable = false)]
    pub entrypoint: Option<Vec<String>>,
    /// Egress policy (not implemented by Berth: refused unless empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicy>,
    /// Credential proxy settings (not implemented by Berth: refused when enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_proxy: Option<CredentialProxyConfig>,
    /// Secured endpoint access (not implemented by Berth: `false` is accepted, `true` refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_access: Option<bool>,
    /// Storage mounted into the sandbox, in one of two forms (see `Volume`): Berth's, where each
    /// entry says where it is mounted, or the Kubernetes one, where `mounts` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    /// Kubernetes form only: where the `volumes` are mounted, as a Pod's `volumeMounts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<VolumeMount>>,
    /// Provider-specific parameters (none implemented by Berth: refused unless empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<BTreeMap<String, String>>,
    /// Newer SDKs: a server-side template (not implemented by Berth: refused when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// Newer SDKs: resource requests (not implemented by Berth: refused unless empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_requests: Option<BTreeMap<String, String>>,
    /// Newer SDKs: lifecycle hooks (not implemented by Berth: refused when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub lifecycle: Option<serde_json::Value>,
}

/// A container image and optional registry credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageSpec {
    /// Image reference, e.g. `python:3.11`.
    pub uri: String,
    /// Registry credentials; never echoed in responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ImageAuth>,
}

impl fmt::Debug for ImageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageSpec")
            .field("uri", &self.uri)
            .field("auth", &self.auth)
            .finish()
    }
}

/// Registry credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageAuth {
    /// Registry user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Registry password or token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl fmt::Debug for ImageAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Target operating system and CPU architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct PlatformSpec {
    /// Operating system.
    pub os: PlatformOs,
    /// CPU architecture.
    pub arch: PlatformArch,
}

/// Operating systems of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlatformOs {
    /// Linux.
    Linux,
    /// Windows.
    Windows,
}

/// CPU architectures of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlatformArch {
    /// x86-64.
    Amd64,
    /// 64-bit ARM.
    Arm64,
}

impl PlatformOs {
    /// The name the spec, OCI platforms and Kubernetes' `kubernetes.io/os` label share.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Linux => "linux",
            Self::Windows => "windows",
        }
    }
}

impl PlatformArch {
    /// The name the spec, OCI platforms and Kubernetes' `kubernetes.io/arch` label share.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }
}

/// Egress network policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Action when no rule matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<NetworkAction>,
    /// Rules, evaluated in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<NetworkRule>>,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkAction {
    /// Allow matching traffic.
    Allow,
    /// Deny matching traffic.
    Deny,
}

/// One egress rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkRule {
    /// What to do with matching traffic.
    pub action: NetworkAction,
    /// FQDN or wildcard domain.
    pub target: String,
}

/// Credential proxy settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialProxyConfig {
    /// Whether the proxy is enabled.
    #[serde(default)]
    pub enabled: bool,
}

/// One volume of a create request, in one of two forms; a request uses one form throughout.
///
/// - **Berth's form**: `name`, exactly one of `host`, `pvc`, `ossfs`, `nfs`, and `mountPath`, with
///   optional `subPath` and `readOnly`. Each entry is one mount.
/// - **The Kubernetes form** (as in a Pod spec): `name` and exactly one of `persistentVolumeClaim`,
///   `hostPath`, `nfs`; where and how it is mounted is said by the request's top-level `mounts`.
///   One volume may be mounted several times and every volume must be mounted. Each mount becomes
///   one volume of Berth's form: the first mount of volume `v` is named `v`, its n-th mount
///   (n ≥ 2, in `mounts` order) `v-n` (with `v` cut short so the name keeps within 63
///   characters); a derived name that another volume already has is refused
///   (`VOLUME::DUPLICATE_NAME`), never renamed again.
///
/// A request with a `mounts` entry, a `persistentVolumeClaim` or a `hostPath` is in the Kubernetes
/// form; `host`, `pvc`, `ossfs`, `mountPath`, `subPath` or `readOnly: true` on one of its volumes is
/// then `VOLUME::MIXED_FORMS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    /// DNS label, unique within the request.
    pub name: String,
    /// Berth's form: host directory backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostBackend>,
    /// Berth's form: named volume / PersistentVolumeClaim backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcBackend>,
    /// Berth's form: Alibaba Cloud OSS backend through ossfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ossfs: Option<OssfsBackend>,
    /// Either form: NFS export backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<NfsBackend>,
    /// Kubernetes form: an existing PersistentVolumeClaim (a named volume on Docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimSource>,
    /// Kubernetes form: a host directory under one of the server's allowed roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathSource>,
    /// Berth's form, required there: absolute, normalised path inside the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    /// Berth's form: mount read-only (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// Berth's form: relative, normalised path below the backend's root to mount instead of the
    /// root; empty means the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
}

/// Kubernetes form: a PersistentVolumeClaim reference, as in a Pod's `volumes`.
///
/// As in Kubernetes the claim must exist: it is never created (`createIfNotExists: false` in
/// Berth's form), so a missing one is `VOLUME::PVC_NOT_FOUND`. Use Berth's `pvc` form to have
/// Berth create it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentVolumeClaimSource {
    /// Claim (Docker: volume) name, a DNS-1123 subdomain.
    pub claim_name: String,
    /// Forces every mount of this volume read-only, as in Kubernetes (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
}

/// Kubernetes form: a host directory, as in a Pod's `volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPathSource {
    /// Absolute host path under one of the server's allowed roots (`storage.allowed_host_paths`).
    pub path: String,
    /// Kubernetes `hostPath.type`. Berth's host volumes behave as `DirectoryOrCreate` (a missing
    /// directory is created with its parent's owner, group and mode, an existing regular file is
    /// mounted as it is), so only absent, `""` and `DirectoryOrCreate` are accepted. Every other
    /// Kubernetes type, `Directory` included (Berth cannot promise the directory already exists),
    /// is `SANDBOX::UNSUPPORTED_FEATURE`; a value Kubernetes does not know is
    /// `SANDBOX::INVALID_PARAMETER`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Kubernetes form: one mount of a volume named in `volumes`, as in a container's `volumeMounts`.
///
/// The mount is read-only when it says so or when its volume's source does
/// (`persistentVolumeClaim.readOnly`, `nfs.readOnly`), as in Kubernetes where the source's flag
/// forces every mount read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMount {
    /// Name of the entry of `volumes` to mount.
    pub name: String,
    /// Absolute, normalised path inside the sandbox.
    pub mount_path: String,
    /// Relative, normalised path below the volume's root to mount instead of the root; empty
    /// means the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    /// Mount read-only (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_true() -> bool {
    true
}

/// Host directory backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct HostBackend {
    /// Absolute host path under one of the server's allowed roots.
    pub path: String,
}

/// Named volume (Docker) / PersistentVolumeClaim (Kubernetes) backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct PvcBackend {
    /// Volume or claim name (DNS-1123 subdomain).
    pub claim_name: String,
    /// Create the volume when missing (default true).
    #[serde(default = "default_true")]
    pub create_if_not_exists: bool,
    /// Remove the volume with the sandbox, if Berth created it (default false).
    #[serde(default)]
    pub delete_on_sandbox_termination: bool,
    /// Kubernetes StorageClass for a created claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Capacity for a created claim, e.g. `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Access modes for a created claim, e.g. `["ReadWriteOnce"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_modes: Option<Vec<String>>,
}

/// Alibaba Cloud OSS through ossfs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct OssfsBackend {
    /// Bucket name.
    pub bucket: String,
    /// OSS endpoint host name, e.g. `oss-cn-hangzhou.aliyuncs.com`.
    pub endpoint: String,
    /// ossfs major version, `1.0` or `2.0` (default `2.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Extra mount options from Berth's allowlist, without a leading `-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    /// Access key id.
    pub access_key_id: String,
    /// Access key secret; never echoed, logged or stored.
    pub access_key_secret: String,
}

impl fmt::Debug for OssfsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OssfsBackend")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("version", &self.version)
            .field("options", &self.options)
            .field("access_key_id", &"<redacted>")
            .field("access_key_secret", &"<redacted>")
            .finish()
    }
}

/// NFS export, in either form (Kubernetes spells it the same, with `readOnly` and without
/// `options`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct NfsBackend {
    /// Server host name or IP address.
    pub server: String,
    /// Absolute export path on the server.
    pub path: String,
    /// Extra mount options from Berth's allowlist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    /// Forces every mount of this export read-only, as in Kubernetes (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
}

/// `202` body of `POST /v1/sandboxes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSandboxResponse {
    /// Sandbox id.
    pub id: String,
    /// Current status.
    pub status: SandboxStatus,
    /// User metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Platform constraint, when one was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
    /// When the sandbox expires; absent means no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When the sandbox was created.
    pub created_at: DateTime<Utc>,
    /// The entry process.
    pub entrypoint: Vec<String>,
    /// Berth: what is really mounted.
    #[serde(default)]
    pub volumes: Vec<VolumeStatus>,
}

/// A sandbox as `GET /v1/sandboxes/{id}` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    /// Sandbox id.
    pub id: String,
    /// The image it runs (credentials are never echoed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSpec>,
    /// The snapshot it was restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Platform constraint, when one was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
    /// Current status.
    pub status: SandboxStatus,
    /// User metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The entry process.
    pub entrypoint: Vec<String>,
    /// When the sandbox expires; absent means no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When the sandbox was created.
    pub created_at: DateTime<Utc>,
    /// Berth: what is really mounted.
    #[serde(default)]
    pub volumes: Vec<VolumeStatus>,
}

/// Lifecycle state.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
pub enum SandboxState {
    /// Being provisioned.
    Pending,
    /// Running.
    Running,
    /// Being paused.
    Pausing,
    /// Paused with its state retained.
    Paused,
    /// Being resumed.
    Resuming,
    /// Being terminated.
    Stopping,
    /// Ended normally.
    Terminated,
    /// Ended with an error.
    Failed,
}

impl SandboxState {
    /// Every state, in lifecycle order.
    pub const ALL: [SandboxState; 8] = [
        Self::Pending,
        Self::Running,
        Self::Pausing,
        Self::Paused,
        Self::Resuming,
        Self::Stopping,
        Self::Terminated,
        Self::Failed,
    ];

    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Pausing => "Pausing",
            Self::Paused => "Paused",
            Self::Resuming => "Resuming",
            Self::Stopping => "Stopping",
            Self::Terminated => "Terminated",
            Self::Failed => "Failed",
        }
    }

    /// Parses a state case-insensitively, as the list filter does.
    pub fn parse_case_insensitive(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status with state and transition details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    /// Lifecycle state.
    pub state: SandboxState,
    /// Short machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_at: Option<DateTime<Utc>>,
}

/// Berth's report of one mounted volume. Never carries a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    /// Volume name from the request.
    pub name: String,
    /// Which backend serves it.
    pub backend: VolumeBackendKind,
    /// Host path, claim name, bucket, or `server:path`.
    pub source: String,
    /// Where it is mounted in the sandbox.
    pub mount_path: String,
    /// The sub-path mounted, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    /// Whether it was requested read-only.
    pub read_only: bool,
    /// How read-only is enforced.
    pub read_only_mode: ReadOnlyMode,
}

/// Volume backends.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum VolumeBackendKind {
    /// A host directory.
    Host,
    /// A named volume or PersistentVolumeClaim.
    Pvc,
    /// An OSS bucket through ossfs.
    Ossfs,
    /// An NFS export.
    Nfs,
}

impl VolumeBackendKind {
    /// Every backend.
    pub const ALL: [VolumeBackendKind; 4] = [Self::Host, Self::Pvc, Self::Ossfs, Self::Nfs];

    /// The wire spelling, which is also the request field name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Pvc => "pvc",
            Self::Ossfs => "ossfs",
            Self::Nfs => "nfs",
        }
    }
}

impl fmt::Display for VolumeBackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a read-only mount is enforced.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ReadOnlyMode {
    /// Read-only including every mount below it.
    Recursive,
    /// Only the top mount is read-only; submounts may be writable.
    NonRecursive,
    /// Writable.
    None,
}

/// `GET /v1/sandboxes` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListSandboxesResponse {
    /// The page of sandboxes, newest first.
    pub items: Vec<Sandbox>,
    /// Where this page sits.
    pub pagination: PaginationInfo,
}

/// Pagination of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaginationInfo {
    /// Page number, from 1.
    pub page: u32,
    /// Items per page.
    pub page_size: u32,
    /// Items matching the filter.
    pub total_items: u64,
    /// Pages in all.
    pub total_pages: u64,
    /// Whether a later page exists.
    pub has_next_page: bool,
}

/// Access endpoint of a port in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// `host:port`, without a scheme.
    pub endpoint: String,
    /// Headers a request to the endpoint must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

/// `POST /v1/sandboxes/{id}/renew-expiration` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct RenewSandboxExpirationRequest {
    /// New absolute expiry (RFC 3339), in the future.
    pub expires_at: DateTime<Utc>,
}

/// `200` body of a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenewSandboxExpirationResponse {
    /// The expiry now in force.
    pub expires_at: DateTime<Utc>,
}

/// `PATCH /v1/sandboxes/{id}/metadata` body: an RFC 7396 merge patch of the metadata object.
/// A string adds or replaces a key, `null` deletes it, an absent key is left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct PatchSandboxMetadataRequest(pub BTreeMap<String, Option<String>>);

/// The body of every error response: exactly these two fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorResponse {
    /// Stable machine-readable code, e.g. `VOLUME::INVALID_SUB_PATH`.
    pub code: String,
    /// What went wrong, with the field path of every violation.
    pub message: String,
}

/// `GET /health` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `healthy`, or `degraded` when the runtime does not answer.
    pub status: String,
    /// `reachable` or `unreachable`.
    pub runtime: String,
    /// Why the runtime does not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `200` body of `POST /v1/sandboxes?dryRun=true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRunResponse {
    /// The sandbox as it would be.
    pub sandbox: Sandbox,
    /// The runtime object Berth would send (Docker create body or Pod), credentials redacted.
    #[schema(value_type = Object)]
    pub runtime: serde_json::Value,
}
