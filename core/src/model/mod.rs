//! The validated domain model. Only valid values are representable: every string a user sent
//! is wrapped in a newtype whose only constructor checks it, so backends receive typed values
//! and never re-parse user input.

mod invalid;
mod labels;
mod names;
mod paths;
mod quantity;
mod record;
mod remote_storage;

use std::collections::BTreeMap;
use std::fmt;

pub use invalid::InvalidValue;
pub(crate) use invalid::quoted;
pub use labels::{
    EnvName, Metadata, MetadataKey, MetadataPatch, MetadataValue, RESERVED_METADATA_DOMAIN,
};
pub use names::{
    ClaimName, SandboxId, StorageClassName, VolumeName, is_dns_label, is_dns_subdomain,
};
pub use paths::{
    HostPath, MAX_PATH_BYTES, MAX_SEGMENT_BYTES, MountPath, SubPath, lexical_key,
    suggest_normal_form,
};
pub use quantity::{ByteQuantity, CpuLimit, memory_limit};
pub use record::{MountedVolume, SandboxRecord, SandboxStatus};
pub use remote_storage::{
    MountOption, NfsExportPath, NfsServer, OssBucket, OssCredentials, OssEndpoint, OssfsVersion,
};

pub use crate::wire::{
    PlatformArch, PlatformOs, PlatformSpec, ReadOnlyMode, SandboxState, VolumeBackendKind,
};

/// A sandbox to create, fully validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    /// The image to run.
    pub image: ImageRef,
    /// The entry process (non-empty).
    pub entrypoint: Entrypoint,
    /// Required platform, if any.
    pub platform: Option<PlatformSpec>,
    /// Seconds until expiry (≥ 60, ≤ the policy's maximum); `None` means no expiry.
    pub timeout_seconds: Option<u64>,
    /// Resource limits.
    pub resources: ResourceLimits,
    /// Environment of the entry process.
    pub env: BTreeMap<EnvName, String>,
    /// User metadata.
    pub metadata: Metadata,
    /// Volumes in request order (use [`SandboxSpec::volumes_in_mount_order`] to mount them).
    pub volumes: Vec<Volume>,
}

impl SandboxSpec {
    /// Volumes with parents before children (fewer path segments first; ties keep request
    /// order), so nested mount paths are mounted on top of their parents.
    pub fn volumes_in_mount_order(&self) -> Vec<&Volume> {
        let mut ordered: Vec<&Volume> = self.volumes.iter().collect();
        ordered.sort_by_key(|v| v.mount_path.depth());
        ordered
    }
}

/// An image reference and optional registry credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The reference, e.g. `python:3.11` (non-blank, no whitespace or control characters).
    pub uri: String,
    /// Registry credentials.
    pub auth: Option<RegistryAuth>,
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageRef")
            .field("uri", &self.uri)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Registry credentials (never shown by `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RegistryAuth(<redacted>)")
    }
}

/// The entry process: `[executable, args...]`, at least the executable, no NUL anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entrypoint(Vec<String>);

impl Entrypoint {
    /// Validates an entrypoint.
    pub fn new(argv: Vec<String>) -> Result<Self, InvalidValue> {
        let code = crate::error_code::ErrorCode::SandboxInvalidParameter;
        match argv.first() {
            None => return Err(InvalidValue::new(code, "must name at least the executable")),
            Some(exe) if exe.trim().is_empty() => {
                return Err(InvalidValue::new(
                    code,
                    "the executable (first element) must not be blank",
                ));
            }
            Some(_) => {}
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(InvalidValue::new(code, "arguments must not contain NUL"));
        }
        Ok(Self(argv))
    }

    /// The argument vector.
    pub fn argv(&self) -> &[String] {
        &self.0
    }
}

/// Resource limits. Absent values mean "no limit from the request".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceLimits {
    /// CPU limit.
    pub cpu: Option<CpuLimit>,
    /// Memory limit in bytes.
    pub memory: Option<ByteQuantity>,
}

/// One volume: a name, one backend, where to mount it and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Unique within the sandbox.
    pub name: VolumeName,
    /// The backend and its settings.
    pub source: VolumeSource,
    /// Where it appears in the sandbox.
    pub mount_path: MountPath,
    /// The part of the backend to mount; for ossfs, the bucket prefix.
    pub sub_path: Option<SubPath>,
    /// Mount read-only.
    pub read_only: bool,
}

/// Exactly one backend of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A host directory under an allowed root.
    Host {
        /// The directory.
        path: HostPath,
    },
    /// A named volume / PersistentVolumeClaim.
    Pvc(PvcSource),
    /// An OSS bucket through ossfs.
    Ossfs(OssfsSource),
    /// An NFS export.
    Nfs(NfsSource),
}

impl VolumeSource {
    /// Which backend this is.
    pub fn kind(&self) -> VolumeBackendKind {
        match self {
            Self::Host { .. } => VolumeBackendKind::Host,
            Self::Pvc(_) => VolumeBackendKind::Pvc,
            Self::Ossfs(_) => VolumeBackendKind::Ossfs,
            Self::Nfs(_) => VolumeBackendKind::Nfs,
        }
    }

    /// What to report as the source: host path, claim name, bucket, or `server:path`.
    /// Never a credential.
    pub fn describe(&self) -> String {
        match self {
            Self::Host { path } => path.to_string(),
            Self::Pvc(pvc) => pvc.claim_name.to_string(),
            Self::Ossfs(oss) => oss.bucket.to_string(),
            Self::Nfs(nfs) => format!("{}:{}", nfs.server, nfs.path.as_str()),
        }
    }
}

/// Kubernetes access modes for a created claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessMode {
    /// `ReadWriteOnce`.
    ReadWriteOnce,
    /// `ReadOnlyMany`.
    ReadOnlyMany,
    /// `ReadWriteMany`.
    ReadWriteMany,
    /// `ReadWriteOncePod`.
    ReadWriteOncePod,
}

impl AccessMode {
    const ALL: [AccessMode; 4] = [
        Self::ReadWriteOnce,
        Self::ReadOnlyMany,
        Self::ReadWriteMany,
        Self::ReadWriteOncePod,
    ];

    /// Parses the Kubernetes spelling.
    pub fn new(s: &str) -> Result<Self, InvalidValue> {
        Self::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| {
            InvalidValue::new(
                crate::error_code::ErrorCode::VolumeInvalidPvcAccessMode,
                format!(
                    "{} is not an access mode; use ReadWriteOnce, ReadOnlyMany, ReadWriteMany or ReadWriteOncePod",
                    quoted(s)
                ),
            )
        })
    }

    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadWriteOnce => "ReadWriteOnce",
            Self::ReadOnlyMany => "ReadOnlyMany",
            Self::ReadWriteMany => "ReadWriteMany",
            Self::ReadWriteOncePod => "ReadWriteOncePod",
        }
    }
}

/// A named volume / PersistentVolumeClaim and how to provision it when missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvcSource {
    /// Volume or claim name.
    pub claim_name: ClaimName,
    /// Create it when missing.
    pub create_if_not_exists: bool,
    /// Remove it with the sandbox, if Berth created it for this sandbox.
    pub delete_on_sandbox_termination: bool,
    /// StorageClass for a created claim.
    pub storage_class: Option<StorageClassName>,
    /// Capacity for a created claim.
    pub storage: Option<ByteQuantity>,
    /// Access modes for a created claim (no duplicates; empty means the runtime's default).
    pub access_modes: Vec<AccessMode>,
}

impl PvcSource {
    /// Whether the request carries Kubernetes provisioning hints (class, size, access modes).
    pub fn has_provisioning_hints(&self) -> bool {
        self.storage_class.is_some() || self.storage.is_some() || !self.access_modes.is_empty()
    }
}

/// An OSS bucket mounted through ossfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OssfsSource {
    /// Bucket.
    pub bucket: OssBucket,
    /// Endpoint host.
    pub endpoint: OssEndpoint,
    /// ossfs major version.
    pub version: OssfsVersion,
    /// Allowlisted options.
    pub options: Vec<MountOption>,
    /// Credentials.
    pub credentials: OssCredentials,
}

/// An NFS export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsSource {
    /// Server.
    pub server: NfsServer,
    /// Export path.
    pub path: NfsExportPath,
    /// Allowlisted options.
    pub options: Vec<MountOption>,
}
