//! Named volumes: looking claims up, creating missing ones with a per-create nonce label (so
//! "Berth created it" is never wrong: creating an existing volume succeeds silently), and
//! removing volumes Berth created only once no sandbox uses them — Docker does not count a
//! staged bind as use of a volume, so Berth keeps the count itself, from the store.

use std::collections::{BTreeSet, HashMap};

use berth_core::ErrorCode;
use berth_core::model::{SandboxSpec, VolumeSource};
use berth_core::runtime::RuntimeError;
use berth_core::validate::{Violation, Violations};
use bollard::models::{Volume, VolumeCreateRequest};
use bollard::query_parameters::RemoveVolumeOptions;

use super::{DockerRuntime, docker_error, is_not_found, store_error};
use crate::render::{LABEL_NONCE, LABEL_SANDBOX, base_labels};
use crate::store::{CreatedVolume, StoredSandbox};

/// What a `pvc` volume of a request refers to.
#[derive(Debug, Clone)]
pub(super) enum Claim {
    /// The volume exists.
    Exists,
    /// It is missing and will be created.
    ToCreate,
}

impl DockerRuntime {
    pub(super) async fn inspect_volume(&self, name: &str) -> Result<Option<Volume>, RuntimeError> {
        match self
            .engine
            .bounded("inspecting volume", self.engine.docker.inspect_volume(name))
            .await?
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(docker_error("inspecting volume")(e)),
        }
    }

    /// Looks every claim of `spec` up (by volume index); a missing claim that may not be created
    /// is a 400 `VOLUME::PVC_NOT_FOUND`, all of them reported at once.
    pub(super) async fn plan_claims(
        &self,
        spec: &SandboxSpec,
    ) -> Result<HashMap<usize, Claim>, RuntimeError> {
        let mut claims = HashMap::new();
        let mut violations = Vec::new();
        let mut to_create = BTreeSet::new();
        for (i, volume) in spec.volumes.iter().enumerate() {
            let VolumeSource::Pvc(pvc) = &volume.source else {
                continue;
            };
            let name = pvc.claim_name.as_str();
            let claim = match self.inspect_volume(name).await? {
                Some(_) => Claim::Exists,
                None if pvc.create_if_not_exists || to_create.contains(name) => {
                    to_create.insert(name.to_owned());
                    Claim::ToCreate
                }
                None => {
                    violations.push(Violation::new(
                        format!("volumes[{i}].pvc.claimName"),
                        ErrorCode::VolumePvcNotFound,
                        format!("volume \"{name}\" does not exist and createIfNotExists is false"),
                    ));
                    continue;
                }
            };
            claims.insert(i, claim);
        }
        match Violations::from_vec(violations) {
            Some(v) => Err(RuntimeError::Rejected(v)),
            None => Ok(claims),
        }
    }

    /// Creates the volumes `stored.created_volumes` names; drops from that list any volume that
    /// turns out not to carry this create's nonce (someone else created it first).
    pub(super) async fn create_claims(
        &self,
        stored: &mut StoredSandbox,
    ) -> Result<(), RuntimeError> {
        let mut mine = Vec::new();
        for created in &stored.created_volumes {
            let mut labels = base_labels(&self.config);
            labels.insert(LABEL_NONCE.into(), created.nonce.clone());
            labels.insert(LABEL_SANDBOX.into(), stored.id.clone());
            let request = VolumeCreateRequest {
                name: Some(created.name.clone()),
                labels: Some(labels),
                ..Default::default()
            };
            let volume = self
                .engine
                .bounded("creating volume", self.engine.docker.create_volume(request))
                .await?
                .map_err(docker_error("creating volume"))?;
            if volume.labels.get(LABEL_NONCE) == Some(&created.nonce) {
                mine.push(created.clone());
            } else {
                tracing::info!(volume = %created.name, "volume appeared before Berth created it; it is not Berth's");
            }
        }
        if mine.len() != stored.created_volumes.len() {
            stored.created_volumes = mine;
            self.store.put(stored).await.map_err(store_error)?;
        }
        Ok(())
    }

    /// Removes scheduled volumes that no sandbox in the store uses and that still carry the
    /// nonce Berth created them with. Call with the volume lock held.
    pub(super) async fn sweep_volumes(&self) -> Result<(), RuntimeError> {
        let scheduled: Vec<CreatedVolume> =
            self.store.volumes_to_remove().await.map_err(store_error)?;
        if scheduled.is_empty() {
            return Ok(());
        }
        let in_use: BTreeSet<String> = self
            .store
            .all()
            .map_err(store_error)?
            .iter()
            .flat_map(|s| s.volumes.iter().filter_map(|v| v.docker_volume.clone()))
            .collect();
        for volume in scheduled {
            if in_use.contains(&volume.name) {
                continue;
            }
            match self.inspect_volume(&volume.name).await? {
                Some(v) if v.labels.get(LABEL_NONCE) == Some(&volume.nonce) => {
                    match self
                        .engine
                        .bounded(
                            "removing volume",
                            self.engine.docker.remove_volume(
                                &volume.name,
                                Some(RemoveVolumeOptions { force: false }),
                            ),
                        )
                        .await?
                    {
                        Ok(()) => {}
                        Err(e) if is_not_found(&e) => {}
                        Err(bollard::errors::Error::DockerResponseServerError {
                            status_code: 409,
                            message,
                        }) => {
                            // A container Berth does not manage uses it: keep it scheduled.
                            tracing::warn!(volume = %volume.name, %message, "volume still in use outside Berth; removal deferred");
                            continue;
                        }
                        Err(e) => return Err(docker_error("removing volume")(e)),
                    }
                }
                // Gone, or replaced by someone else's volume of the same name: not Berth's to remove.
                _ => {}
            }
            self.store
                .volume_removed(&volume.name)
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }
}
