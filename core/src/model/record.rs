//! What a runtime reports about an existing sandbox, and how that becomes the wire's `Sandbox`.

use chrono::{DateTime, Utc};

use super::{Metadata, PlatformSpec, ReadOnlyMode, SandboxId, SandboxState, Volume};
use crate::wire;

/// A sandbox as a runtime knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRecord {
    /// Id.
    pub id: SandboxId,
    /// Image reference it runs.
    pub image: String,
    /// Platform constraint it was created with.
    pub platform: Option<PlatformSpec>,
    /// Entry process.
    pub entrypoint: Vec<String>,
    /// User metadata.
    pub metadata: Metadata,
    /// Current status.
    pub status: SandboxStatus,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// What is mounted.
    pub volumes: Vec<MountedVolume>,
}

/// State and transition details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxStatus {
    /// Lifecycle state.
    pub state: SandboxState,
    /// Short machine-readable reason (`exited`, `oom_killed`, ...).
    pub reason: Option<String>,
    /// Human-readable detail.
    pub message: Option<String>,
    /// When the state last changed.
    pub last_transition_at: Option<DateTime<Utc>>,
}

impl SandboxStatus {
    /// A status with only a state and its transition time.
    pub fn new(state: SandboxState, at: DateTime<Utc>) -> Self {
        Self {
            state,
            reason: None,
            message: None,
            last_transition_at: Some(at),
        }
    }
}

/// One volume as really mounted: exactly what the wire reports (never a credential), so the
/// model uses the wire type rather than a copy of it.
pub type MountedVolume = wire::VolumeStatus;

impl wire::VolumeStatus {
    /// The report of `volume` mounted by a runtime that enforces read-only as `read_only_mode`.
    pub fn of(volume: &Volume, read_only_mode: ReadOnlyMode) -> Self {
        Self {
            name: volume.name.to_string(),
            backend: volume.source.kind(),
            source: volume.source.describe(),
            mount_path: volume.mount_path.to_string(),
            sub_path: volume.sub_path.as_ref().map(ToString::to_string),
            read_only: volume.read_only,
            read_only_mode: if volume.read_only {
                read_only_mode
            } else {
                ReadOnlyMode::None
            },
        }
    }
}

impl From<&SandboxStatus> for wire::SandboxStatus {
    fn from(s: &SandboxStatus) -> Self {
        Self {
            state: s.state,
            reason: s.reason.clone(),
            message: s.message.clone(),
            last_transition_at: s.last_transition_at,
        }
    }
}

fn wire_metadata(metadata: &Metadata) -> std::collections::BTreeMap<String, String> {
    metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl From<&SandboxRecord> for wire::Sandbox {
    fn from(r: &SandboxRecord) -> Self {
        Self {
            id: r.id.to_string(),
            image: Some(wire::ImageSpec {
                uri: r.image.clone(),
                auth: None,
            }),
            snapshot_id: None,
            platform: r.platform,
            status: (&r.status).into(),
            metadata: wire_metadata(&r.metadata),
            entrypoint: r.entrypoint.clone(),
            expires_at: r.expires_at,
            created_at: r.created_at,
            volumes: r.volumes.clone(),
        }
    }
}

/// By value: a list page moves its records into the response instead of copying them.
impl From<SandboxRecord> for wire::Sandbox {
    fn from(r: SandboxRecord) -> Self {
        Self {
            id: r.id.into_string(),
            image: Some(wire::ImageSpec {
                uri: r.image,
                auth: None,
            }),
            snapshot_id: None,
            platform: r.platform,
            status: (&r.status).into(),
            metadata: r
                .metadata
                .into_iter()
                .map(|(k, v)| (k.into_string(), v.into_string()))
                .collect(),
            entrypoint: r.entrypoint,
            expires_at: r.expires_at,
            created_at: r.created_at,
            volumes: r.volumes,
        }
    }
}

impl From<&SandboxRecord> for wire::CreateSandboxResponse {
    fn from(r: &SandboxRecord) -> Self {
        Self {
            id: r.id.to_string(),
            status: (&r.status).into(),
            metadata: wire_metadata(&r.metadata),
            platform: r.platform,
            expires_at: r.expires_at,
            created_at: r.created_at,
            entrypoint: r.entrypoint.clone(),
            volumes: r.volumes.clone(),
        }
    }
}
