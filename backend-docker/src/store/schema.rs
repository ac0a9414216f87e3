//! The store's on-disk format, owned by the store: versioned record types that no change to the
//! API's JSON can alter, and the one place records convert to and from the runtime's types.
//!
//! The version lives in the settings table (`schema_version`; a store from before it was
//! written is format 1). Format 1 is byte for byte what Berth wrote when the record embedded the
//! API's `VolumeStatus`; `tests/fixtures/store-format-1/` holds records in it, and a test loads
//! them. A new format gets new types here and a conversion from the old one; old records keep
//! loading.

use std::collections::BTreeMap;

use berth_core::model::{PlatformArch, PlatformOs, PlatformSpec, ReadOnlyMode, VolumeBackendKind};
use berth_core::wire::VolumeStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{CreatedVolume, Phase, StoredSandbox, StoredVolume};
use crate::ossfs::OssfsKey;

/// The format this server writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The settings key holding the format of the records on disk.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// Why a stored record cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Not valid JSON of the record type.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Valid JSON holding a value the runtime cannot use.
    #[error("{0}")]
    Invalid(String),
    /// Written by a newer Berth, in a format this one does not know.
    #[error("format {found} is newer than this server's {SCHEMA_VERSION}")]
    Newer {
        /// The format on disk.
        found: u32,
    },
}

/// One sandbox, format 1.
#[derive(Debug, Serialize, Deserialize)]
struct SandboxV1 {
    id: String,
    phase: PhaseV1,
    image: String,
    platform: Option<PlatformV1>,
    entrypoint: Vec<String>,
    metadata: BTreeMap<String, String>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    volumes: Vec<VolumeV1>,
    created_volumes: Vec<CreatedVolumeV1>,
    sandbox_volumes: Vec<String>,
    ports: BTreeMap<u16, u16>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum PhaseV1 {
    Creating,
    Created,
    /// Added to format 1 later: present only while a delete runs, so only a crash mid-delete
    /// leaves one for a server that predates it (which then refuses that record).
    Deleting,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct PlatformV1 {
    os: OsV1,
    arch: ArchV1,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OsV1 {
    Linux,
    Windows,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ArchV1 {
    Amd64,
    Arm64,
}

/// One mounted volume, format 1: the report's fields (camelCase, as the API spelled them when
/// this format was made) and the store's own (snake_case).
#[derive(Debug, Serialize, Deserialize)]
struct VolumeV1 {
    name: String,
    backend: BackendV1,
    source: String,
    #[serde(rename = "mountPath")]
    mount_path: String,
    #[serde(rename = "subPath", default, skip_serializing_if = "Option::is_none")]
    sub_path: Option<String>,
    #[serde(rename = "readOnly")]
    read_only: bool,
    #[serde(rename = "readOnlyMode")]
    read_only_mode: ReadOnlyModeV1,
    docker_volume: Option<String>,
    staged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ossfs_key: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BackendV1 {
    Host,
    Pvc,
    Ossfs,
    Nfs,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ReadOnlyModeV1 {
    Recursive,
    NonRecursive,
    None,
}

/// A volume Berth created, format 1 (in records and in the removal queue).
#[derive(Debug, Serialize, Deserialize)]
struct CreatedVolumeV1 {
    name: String,
    nonce: String,
    delete_on_termination: bool,
}

/// A sandbox record as the current format writes it.
pub fn encode_sandbox(sandbox: &StoredSandbox) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&SandboxV1::from(sandbox))
}

/// A sandbox record written in format `version`.
pub fn decode_sandbox(version: u32, bytes: &[u8]) -> Result<StoredSandbox, SchemaError> {
    match version {
        1 => serde_json::from_slice::<SandboxV1>(bytes)?.try_into(),
        found => Err(SchemaError::Newer { found }),
    }
}

/// A queued volume removal as the current format writes it.
pub fn encode_created_volume(volume: &CreatedVolume) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&CreatedVolumeV1::from(volume))
}

/// A queued volume removal written in format `version`.
pub fn decode_created_volume(version: u32, bytes: &[u8]) -> Result<CreatedVolume, SchemaError> {
    match version {
        1 => Ok(serde_json::from_slice::<CreatedVolumeV1>(bytes)?.into()),
        found => Err(SchemaError::Newer { found }),
    }
}

impl From<&StoredSandbox> for SandboxV1 {
    fn from(s: &StoredSandbox) -> Self {
        Self {
            id: s.id.clone(),
            phase: match s.phase {
                Phase::Creating => PhaseV1::Creating,
                Phase::Created => PhaseV1::Created,
                Phase::Deleting => PhaseV1::Deleting,
            },
            image: s.image.clone(),
            platform: s.platform.map(|p| PlatformV1 {
                os: match p.os {
                    PlatformOs::Linux => OsV1::Linux,
                    PlatformOs::Windows => OsV1::Windows,
                },
                arch: match p.arch {
                    PlatformArch::Amd64 => ArchV1::Amd64,
                    PlatformArch::Arm64 => ArchV1::Arm64,
                },
            }),
            entrypoint: s.entrypoint.clone(),
            metadata: s.metadata.clone(),
            created_at: s.created_at,
            expires_at: s.expires_at,
            volumes: s.volumes.iter().map(VolumeV1::from).collect(),
            created_volumes: s
                .created_volumes
                .iter()
                .map(CreatedVolumeV1::from)
                .collect(),
            sandbox_volumes: s.sandbox_volumes.clone(),
            ports: s.ports.clone(),
        }
    }
}

impl TryFrom<SandboxV1> for StoredSandbox {
    type Error = SchemaError;

    fn try_from(s: SandboxV1) -> Result<Self, SchemaError> {
        Ok(Self {
            id: s.id,
            phase: match s.phase {
                PhaseV1::Creating => Phase::Creating,
                PhaseV1::Created => Phase::Created,
                PhaseV1::Deleting => Phase::Deleting,
            },
            image: s.image,
            platform: s.platform.map(|p| PlatformSpec {
                os: match p.os {
                    OsV1::Linux => PlatformOs::Linux,
                    OsV1::Windows => PlatformOs::Windows,
                },
                arch: match p.arch {
                    ArchV1::Amd64 => PlatformArch::Amd64,
                    ArchV1::Arm64 => PlatformArch::Arm64,
                },
            }),
            entrypoint: s.entrypoint,
            metadata: s.metadata,
            created_at: s.created_at,
            expires_at: s.expires_at,
            volumes: s
                .volumes
                .into_iter()
                .map(StoredVolume::try_from)
                .collect::<Result<_, _>>()?,
            created_volumes: s.created_volumes.into_iter().map(Into::into).collect(),
            sandbox_volumes: s.sandbox_volumes,
            ports: s.ports,
        })
    }
}

impl From<&StoredVolume> for VolumeV1 {
    fn from(v: &StoredVolume) -> Self {
        let r = &v.report;
        Self {
            name: r.name.clone(),
            backend: match r.backend {
                VolumeBackendKind::Host => BackendV1::Host,
                VolumeBackendKind::Pvc => BackendV1::Pvc,
                VolumeBackendKind::Ossfs => BackendV1::Ossfs,
                VolumeBackendKind::Nfs => BackendV1::Nfs,
            },
            source: r.source.clone(),
            mount_path: r.mount_path.clone(),
            sub_path: r.sub_path.clone(),
            read_only: r.read_only,
            read_only_mode: match r.read_only_mode {
                ReadOnlyMode::Recursive => ReadOnlyModeV1::Recursive,
                ReadOnlyMode::NonRecursive => ReadOnlyModeV1::NonRecursive,
                ReadOnlyMode::None => ReadOnlyModeV1::None,
            },
            docker_volume: v.docker_volume.clone(),
            staged: v.staged,
            ossfs_key: v.ossfs_key.clone().map(String::from),
        }
    }
}

impl TryFrom<VolumeV1> for StoredVolume {
    type Error = SchemaError;

    fn try_from(v: VolumeV1) -> Result<Self, SchemaError> {
        let ossfs_key = v
            .ossfs_key
            .map(OssfsKey::try_from)
            .transpose()
            .map_err(|e| SchemaError::Invalid(format!("volume {}: {e}", v.name)))?;
        Ok(Self {
            report: VolumeStatus {
                name: v.name,
                backend: match v.backend {
                    BackendV1::Host => VolumeBackendKind::Host,
                    BackendV1::Pvc => VolumeBackendKind::Pvc,
                    BackendV1::Ossfs => VolumeBackendKind::Ossfs,
                    BackendV1::Nfs => VolumeBackendKind::Nfs,
                },
                source: v.source,
                mount_path: v.mount_path,
                sub_path: v.sub_path,
                read_only: v.read_only,
                read_only_mode: match v.read_only_mode {
                    ReadOnlyModeV1::Recursive => ReadOnlyMode::Recursive,
                    ReadOnlyModeV1::NonRecursive => ReadOnlyMode::NonRecursive,
                    ReadOnlyModeV1::None => ReadOnlyMode::None,
                },
            },
            docker_volume: v.docker_volume,
            staged: v.staged,
            ossfs_key,
        })
    }
}

impl From<&CreatedVolume> for CreatedVolumeV1 {
    fn from(v: &CreatedVolume) -> Self {
        Self {
            name: v.name.clone(),
            nonce: v.nonce.clone(),
            delete_on_termination: v.delete_on_termination,
        }
    }
}

impl From<CreatedVolumeV1> for CreatedVolume {
    fn from(v: CreatedVolumeV1) -> Self {
        Self {
            name: v.name,
            nonce: v.nonce,
            delete_on_termination: v.delete_on_termination,
        }
    }
}
