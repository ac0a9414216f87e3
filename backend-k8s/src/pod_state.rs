//! Berth's state of one sandbox, kept on its Pod: all of it (expiry, metadata exactly as set,
//! the volumes report, what Berth created for it, the create's deadline) is one versioned JSON
//! annotation, so a restarted server or a second replica reads everything back from the cluster.
//!
//! The schema is this module's own, never a wire type: a change to the API's JSON must never
//! make the state of running sandboxes unreadable. A state written by a newer Berth (a higher
//! `v`) is refused rather than misread.

use std::collections::BTreeMap;

use berth_core::model::{
    Metadata, MetadataKey, MetadataValue, MountedVolume, ReadOnlyMode, VolumeBackendKind,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The annotation holding [`PodState`].
pub const STATE_ANNOTATION: &str = "berth.opensandbox.io/state";
/// The schema version this Berth writes and reads.
pub const STATE_VERSION: u32 = 1;

/// Berth's state of one sandbox, as stored on its Pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    /// Schema version ([`STATE_VERSION`]).
    pub v: u32,
    /// When the sandbox was created (milliseconds, as reported).
    pub created_at: DateTime<Utc>,
    /// Expiry; renewals change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// User metadata, exactly as set.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Entry process as requested.
    pub entrypoint: Vec<String>,
    /// What is mounted (never a credential).
    #[serde(default)]
    pub volumes: Vec<StoredVolume>,
    /// Claims Berth created for this sandbox (named by the create), so a create that never got
    /// its Pod running can be swept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created_claims: Vec<String>,
    /// Until when the create may run: any replica that finds the Pod still not Running past it
    /// deletes it (and what was made for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_deadline: Option<DateTime<Utc>>,
}

/// One mounted volume as stored (this module's own shape of the report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredVolume {
    /// Volume name.
    pub name: String,
    /// `host`, `pvc`, `ossfs` or `nfs`.
    pub backend: String,
    /// Host path, claim name, bucket or `server:path`.
    pub source: String,
    /// Where it is mounted.
    pub mount_path: String,
    /// The subPath, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    /// Whether it was asked read-only.
    pub read_only: bool,
    /// `recursive`, `non-recursive` or `none`: how read-only is really enforced.
    pub read_only_mode: String,
}

/// Why a Pod's state cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PodStateError {
    /// The Pod has no state annotation (not made by Berth, or damaged by hand).
    #[error("the Pod has no {STATE_ANNOTATION} annotation")]
    Missing,
    /// The annotation does not decode.
    #[error("the {STATE_ANNOTATION} annotation does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    /// Written by a newer Berth.
    #[error(
        "the {STATE_ANNOTATION} annotation has schema version {0}; this Berth reads {STATE_VERSION}"
    )]
    NewerVersion(u32),
    /// A stored volume names a backend or mode this Berth does not know.
    #[error("the {STATE_ANNOTATION} annotation names an unknown {what} {value:?}")]
    Unknown {
        /// What kind of value.
        what: &'static str,
        /// The value.
        value: String,
    },
}

impl PodState {
    /// Reads the state from a Pod's annotations.
    pub fn from_annotations(
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Result<Self, PodStateError> {
        let text = annotations
            .and_then(|a| a.get(STATE_ANNOTATION))
            .ok_or(PodStateError::Missing)?;
        let state: Self = serde_json::from_str(text)?;
        if state.v > STATE_VERSION {
            return Err(PodStateError::NewerVersion(state.v));
        }
        Ok(state)
    }

    /// The annotation's value.
    pub fn to_annotation(&self) -> String {
        // A struct of strings, maps and timestamps always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The metadata as the model types it. Keys and values were validated when set; a pair
    /// that no longer validates was written by hand and is left out.
    pub fn typed_metadata(&self) -> Metadata {
        self.metadata
            .iter()
            .filter_map(|(k, v)| Some((MetadataKey::new(k).ok()?, MetadataValue::new(v).ok()?)))
            .collect()
    }

    /// Stores `metadata` exactly as set.
    pub fn set_metadata(&mut self, metadata: &Metadata) {
        self.metadata = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// The volumes as reported.
    pub fn reported_volumes(&self) -> Result<Vec<MountedVolume>, PodStateError> {
        self.volumes.iter().map(StoredVolume::to_report).collect()
    }
}

impl StoredVolume {
    /// The stored shape of a report.
    pub fn from_report(report: &MountedVolume) -> Self {
        Self {
            name: report.name.clone(),
            backend: report.backend.as_str().to_owned(),
            source: report.source.clone(),
            mount_path: report.mount_path.clone(),
            sub_path: report.sub_path.clone(),
            read_only: report.read_only,
            read_only_mode: read_only_mode_name(report.read_only_mode).to_owned(),
        }
    }

    /// The report of a stored volume.
    pub fn to_report(&self) -> Result<MountedVolume, PodStateError> {
        let unknown = |what, value: &str| PodStateError::Unknown {
            what,
            value: value.to_owned(),
        };
        let backend = [
            VolumeBackendKind::Host,
            VolumeBackendKind::Pvc,
            VolumeBackendKind::Ossfs,
            VolumeBackendKind::Nfs,
        ]
        .into_iter()
        .find(|k| k.as_str() == self.backend)
        .ok_or_else(|| unknown("backend", &self.backend))?;
        let read_only_mode = [
            ReadOnlyMode::Recursive,
            ReadOnlyMode::NonRecursive,
            ReadOnlyMode::None,
        ]
        .into_iter()
        .find(|m| read_only_mode_name(*m) == self.read_only_mode)
        .ok_or_else(|| unknown("read-only mode", &self.read_only_mode))?;
        Ok(MountedVolume {
            name: self.name.clone(),
            backend,
            source: self.source.clone(),
            mount_path: self.mount_path.clone(),
            sub_path: self.sub_path.clone(),
            read_only: self.read_only,
            read_only_mode,
        })
    }
}

/// The stored spelling of a read-only mode (fixed here, whatever the wire spells).
fn read_only_mode_name(mode: ReadOnlyMode) -> &'static str {
    match mode {
        ReadOnlyMode::Recursive => "recursive",
        ReadOnlyMode::NonRecursive => "non-recursive",
        ReadOnlyMode::None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> PodState {
        PodState {
            v: STATE_VERSION,
            created_at: DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap(),
            expires_at: DateTime::from_timestamp(1_700_003_600, 0),
            metadata: BTreeMap::from([("team".into(), "ml".into()), ("x".into(), "".into())]),
            entrypoint: vec!["sleep".into(), "600".into()],
            volumes: vec![StoredVolume {
                name: "work".into(),
                backend: "pvc".into(),
                source: "sessions".into(),
                mount_path: "/workspace".into(),
                sub_path: Some("uid-1/session-7".into()),
                read_only: true,
                read_only_mode: "recursive".into(),
            }],
            created_claims: vec!["sessions".into()],
            create_deadline: None,
        }
    }

    #[test]
    fn state_round_trips_through_the_annotation() {
        let annotations = BTreeMap::from([(STATE_ANNOTATION.to_owned(), state().to_annotation())]);
        let back = PodState::from_annotations(Some(&annotations)).unwrap();
        assert_eq!(back, state());
        let reports = back.reported_volumes().unwrap();
        assert_eq!(StoredVolume::from_report(&reports[0]), state().volumes[0]);
    }

    /// The stored format is pinned: a state written today must stay readable.
    #[test]
    fn version_1_as_written_today_still_reads() {
        let written = r#"{"v":1,"createdAt":"2023-11-14T22:13:20.123Z","expiresAt":"2023-11-14T23:13:20Z","metadata":{"team":"ml","x":""},"entrypoint":["sleep","600"],"volumes":[{"name":"work","backend":"pvc","source":"sessions","mountPath":"/workspace","subPath":"uid-1/session-7","readOnly":true,"readOnlyMode":"recursive"}],"createdClaims":["sessions"]}"#;
        let annotations = BTreeMap::from([(STATE_ANNOTATION.to_owned(), written.to_owned())]);
        assert_eq!(
            PodState::from_annotations(Some(&annotations)).unwrap(),
            state()
        );
    }

    #[test]
    fn missing_newer_and_unknown_states_are_errors() {
        assert!(matches!(
            PodState::from_annotations(None),
            Err(PodStateError::Missing)
        ));
        let mut newer = state();
        newer.v = STATE_VERSION + 1;
        let annotations = BTreeMap::from([(STATE_ANNOTATION.to_owned(), newer.to_annotation())]);
        assert!(matches!(
            PodState::from_annotations(Some(&annotations)),
            Err(PodStateError::NewerVersion(2))
        ));
        let mut odd = state();
        odd.volumes[0].backend = "ceph".into();
        assert!(matches!(
            odd.reported_volumes(),
            Err(PodStateError::Unknown {
                what: "backend",
                ..
            })
        ));
    }
}
