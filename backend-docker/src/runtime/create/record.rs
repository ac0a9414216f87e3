//! The store record a create writes before it makes anything (ARCHITECTURE.md, "Invariants":
//! "Record before objects").

use std::collections::{BTreeMap, HashMap};

use berth_core::model::{MountedVolume, ReadOnlyMode, VolumeSource};
use berth_core::runtime::CreateSandbox;

use super::needs_host_path;
use crate::ossfs::OssfsKey;
use crate::render::nfs_volume_name;
use crate::runtime::DockerRuntime;
use crate::runtime::named_volumes::Claim;
use crate::store::{CreatedVolume, Phase, StoredSandbox, StoredVolume};

impl DockerRuntime {
    /// The store record of a create about to happen: every object it will make is named in it
    /// before it is made.
    pub(super) fn initial_record(
        &self,
        request: &CreateSandbox,
        claims: &HashMap<usize, Claim>,
    ) -> StoredSandbox {
        let spec = &request.spec;
        let mut created_volumes: Vec<CreatedVolume> = Vec::new();
        let mut sandbox_volumes = Vec::new();
        let mut volumes = Vec::new();
        for (i, volume) in spec.volumes.iter().enumerate() {
            let mut docker_volume = None;
            let mut ossfs_key = None;
            match &volume.source {
                VolumeSource::Pvc(pvc) => {
                    let name = pvc.claim_name.to_string();
                    if matches!(claims.get(&i), Some(Claim::ToCreate))
                        && !created_volumes.iter().any(|c| c.name == name)
                    {
                        created_volumes.push(CreatedVolume {
                            name: name.clone(),
                            nonce: self.next_nonce(&request.id),
                            delete_on_termination: pvc.delete_on_sandbox_termination,
                        });
                    }
                    docker_volume = Some(name);
                }
                VolumeSource::Nfs(_) => sandbox_volumes.push(nfs_volume_name(&request.id, volume)),
                VolumeSource::Ossfs(source) => {
                    ossfs_key = Some(OssfsKey::derive(
                        self.store.ossfs_salt(),
                        source,
                        volume.sub_path.as_ref(),
                    ));
                }
                VolumeSource::Host { .. } => {}
            }
            let staged = needs_host_path(volume) && self.staging.is_some();
            let mode = match (volume.read_only, staged) {
                (false, _) => ReadOnlyMode::None,
                (true, true) => ReadOnlyMode::Recursive,
                (true, false) => ReadOnlyMode::NonRecursive,
            };
            volumes.push(StoredVolume {
                report: MountedVolume::of(volume, mode),
                docker_volume,
                staged,
                ossfs_key,
            });
        }
        StoredSandbox {
            id: request.id.to_string(),
            phase: Phase::Creating,
            image: spec.image.uri.clone(),
            platform: spec.platform,
            entrypoint: spec.entrypoint.argv().to_vec(),
            metadata: spec
                .metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created_at: request.created_at,
            expires_at: request.expires_at(),
            volumes,
            created_volumes,
            sandbox_volumes,
            ports: BTreeMap::new(),
        }
    }
}
