//! Creating a sandbox, its dry run, and releasing everything a sandbox holds (on delete, and as
//! the rollback of a failed create).
//!
//! Order of a create: image → (volume lock) claims looked up, the store record written with
//! everything about to be made, missing claims created → per-sandbox NFS volumes → host and
//! pvc-subPath paths resolved from pinned fds and staged → container created and started →
//! each staged mount checked from inside the container. Any failure releases all of it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use berth_core::ErrorCode;
use berth_core::model::{
    MountedVolume, ReadOnlyMode, SandboxId, SandboxSpec, SubPath, Volume, VolumeSource,
};
use berth_core::runtime::{CreateSandbox, RenderedSandbox, RuntimeError};
use berth_core::validate::{Violation, Violations};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, RemoveVolumeOptions,
};
use futures_util::StreamExt;

use super::named_volumes::Claim;
use super::{DockerRuntime, docker_error, is_not_found, store_error};
use crate::index::{ContainerView, status_of};
use crate::ossfs::OssfsKey;
use crate::render::{
    MountSource, PlannedMount, container_name, nfs_volume_name, plan_mount, render_container,
    render_nfs_volume,
};
use crate::safe_path::{Missing, SafePathError, TrustedRoot};
use crate::store::{CreatedVolume, Phase, StoredSandbox, StoredVolume};

/// A staged mount's identity, checked from inside the container after start.
struct Verified {
    volume: usize,
    dev: u64,
    ino: u64,
}

fn rejected(field: String, code: ErrorCode, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Rejected(Violations::one(Violation::new(field, code, message)))
}

/// Whether a volume needs a host path resolved (and staged): host, pvc with subPath, and
/// ossfs (its shared mount is staged per sandbox, so read-only holds per sandbox).
fn needs_host_path(volume: &Volume) -> bool {
    matches!(
        volume.source,
        VolumeSource::Host { .. } | VolumeSource::Ossfs(_)
    ) || matches!(volume.source, VolumeSource::Pvc(_) if volume.sub_path.is_some())
}

fn sub_path_segments(sub_path: Option<&SubPath>) -> Vec<String> {
    sub_path
        .map(|s| s.segments().map(str::to_owned).collect())
        .unwrap_or_default()
}

impl DockerRuntime {
    pub(super) async fn create_sandbox(
        &self,
        request: CreateSandbox,
    ) -> Result<berth_core::model::SandboxRecord, RuntimeError> {
        let id = &request.id;
        if self.store.get(id.as_str()).map_err(store_error)?.is_some()
            || self.index.get(id.as_str()).is_some()
        {
            return Err(RuntimeError::Internal {
                context: "creating sandbox".into(),
                detail: format!("id {id} is already in use"),
            });
        }
        self.check_volumes_supported(&request.spec)?;
        self.ensure_image(&request.spec).await?;

        let mut stored = {
            let _guard = self.volume_lock.lock().await;
            let claims = self.plan_claims(&request.spec).await?;
            let mut stored = self.initial_record(&request, &claims);
            self.store.put(&stored).map_err(store_error)?;
            if let Err(e) = self.create_claims(&mut stored).await {
                drop(_guard);
                self.rollback(&stored).await;
                return Err(e);
            }
            stored
        };
        match self.build(&request, &mut stored).await {
            Ok(()) => {
                stored.phase = Phase::Created;
                if let Err(e) = self.store.put(&stored) {
                    self.rollback(&stored).await;
                    return Err(store_error(e));
                }
                Ok(self.record_of(&stored))
            }
            Err(e) => {
                self.rollback(&stored).await;
                Err(e)
            }
        }
    }

    /// Refuses, before anything is made, volumes this runtime cannot mount here.
    fn check_volumes_supported(&self, spec: &SandboxSpec) -> Result<(), RuntimeError> {
        let mut violations = Vec::new();
        for (i, volume) in spec.volumes.iter().enumerate() {
            if !self
                .capabilities
                .volume_backends
                .contains(&volume.source.kind())
            {
                violations.push(Violation::new(
                    format!("volumes[{i}].{}", volume.source.kind()),
                    ErrorCode::VolumeUnsupportedBackend,
                    match volume.source.kind() {
                        berth_core::model::VolumeBackendKind::Ossfs => "this server does not offer ossfs volumes: no ossfs helper was found (storage.ossfs_command, storage.ossfs2_command) or it cannot make mounts".to_owned(),
                        kind => format!("the docker runtime does not offer {kind} volumes"),
                    },
                ));
            } else if let (VolumeSource::Ossfs(source), Some(host)) = (&volume.source, &self.ossfs)
                && host.program(source.version).is_none()
            {
                violations.push(Violation::new(
                    format!("volumes[{i}].ossfs.version"),
                    ErrorCode::VolumeUnsupportedBackend,
                    format!(
                        "no ossfs {} helper is installed on this server ({})",
                        source.version.as_str(),
                        match source.version {
                            berth_core::model::OssfsVersion::V1 => "storage.ossfs_command",
                            berth_core::model::OssfsVersion::V2 => "storage.ossfs2_command",
                        }
                    ),
                ));
            } else if needs_host_path(volume)
                && self.staging.is_none()
                && !self.config.allow_unstaged_paths
            {
                violations.push(Violation::new(
                    format!("volumes[{i}]"),
                    ErrorCode::VolumeStagingUnavailable,
                    "this server cannot stage verified mounts (it is not root on the engine's host), so host and pvc-with-subPath volumes are refused; an operator may accept the residual race with storage.allow_unstaged_paths = true",
                ));
            }
        }
        Violations::from_vec(violations).map_or(Ok(()), |v| Err(RuntimeError::Rejected(v)))
    }

    async fn ensure_image(&self, spec: &SandboxSpec) -> Result<(), RuntimeError> {
        let uri = &spec.image.uri;
        match self.engine.docker.inspect_image(uri).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(docker_error("inspecting image")(e)),
        }
        let credentials = spec
            .image
            .auth
            .as_ref()
            .map(|a| bollard::auth::DockerCredentials {
                username: Some(a.username.clone()),
                password: Some(a.password.clone()),
                ..Default::default()
            });
        let options = CreateImageOptions {
            from_image: Some(uri.clone()),
            ..Default::default()
        };
        let mut pull = self
            .engine
            .docker
            .create_image(Some(options), None, credentials);
        while let Some(progress) = pull.next().await {
            if let Err(e) = progress {
                let detail = match e {
                    bollard::errors::Error::DockerResponseServerError { message, .. } => message,
                    bollard::errors::Error::DockerStreamError { error } => error,
                    other if super::is_connection_error(&other) => {
                        return Err(docker_error("pulling image")(other));
                    }
                    other => other.to_string(),
                };
                return Err(RuntimeError::ImageNotFound {
                    image: uri.clone(),
                    detail,
                });
            }
        }
        Ok(())
    }

    /// The store record of a create about to happen: every object it will make is named in it
    /// before it is made.
    fn initial_record(
        &self,
        request: &CreateSandbox,
        claims: &std::collections::HashMap<usize, Claim>,
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

    /// Makes the NFS volumes, the staging mounts and the container, starts it, and checks the
    /// staged mounts from inside.
    async fn build(
        &self,
        request: &CreateSandbox,
        stored: &mut StoredSandbox,
    ) -> Result<(), RuntimeError> {
        let id = &request.id;
        let spec = &request.spec;
        for (volume, nfs) in spec.volumes.iter().filter_map(|v| match &v.source {
            VolumeSource::Nfs(nfs) => Some((v, nfs)),
            _ => None,
        }) {
            let body = render_nfs_volume(&self.config, id, volume, nfs);
            self.engine
                .docker
                .create_volume(body)
                .await
                .map_err(docker_error("creating NFS volume"))?;
        }
        self.mount_ossfs(spec, stored).await?;
        let ossfs_keys: Vec<Option<OssfsKey>> =
            stored.volumes.iter().map(|v| v.ossfs_key.clone()).collect();
        let (mounts, verified) = self.prepare_host_paths(id, spec, &ossfs_keys).await?;
        let body = render_container(
            &self.config,
            self.engine.api,
            id,
            spec,
            &mounts,
            request.expires_at(),
        );
        let options = CreateContainerOptions {
            name: Some(container_name(id)),
            ..Default::default()
        };
        let created = self
            .engine
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    message,
                } => RuntimeError::ImageNotFound {
                    image: spec.image.uri.clone(),
                    detail: message,
                },
                other => docker_error("creating container")(other),
            })?;
        self.index.set(
            id.as_str(),
            ContainerView {
                container_id: created.id.clone(),
                status: crate::index::ContainerStatus::Created,
                changed_at: None,
            },
        );
        self.engine
            .docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| match e {
                // The engine could not run the entry process (no such program, not executable): the
                // request's fault, answered with what the engine said.
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 400,
                    message,
                } => rejected(
                    "entrypoint".into(),
                    ErrorCode::SandboxInvalidParameter,
                    format!("the engine could not start the entry process: {message}"),
                ),
                other => docker_error("starting container")(other),
            })?;
        let inspect = self
            .engine
            .docker
            .inspect_container(&created.id, None::<InspectContainerOptions>)
            .await
            .map_err(docker_error("inspecting container"))?;
        let state = inspect.state.clone().unwrap_or_default();
        self.index.set(
            id.as_str(),
            ContainerView {
                container_id: created.id.clone(),
                status: status_of(&state),
                changed_at: Some(chrono::Utc::now()),
            },
        );
        if let Some(ports) = inspect
            .network_settings
            .as_ref()
            .and_then(|n| n.ports.as_ref())
        {
            for (key, bindings) in ports {
                let container_port = key.split('/').next().and_then(|p| p.parse::<u16>().ok());
                let host_port = bindings
                    .iter()
                    .flatten()
                    .find_map(|b| b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok()));
                if let (Some(c), Some(h)) = (container_port, host_port) {
                    stored.ports.insert(c, h);
                }
            }
        }
        if !verified.is_empty() {
            let pid = state
                .pid
                .and_then(|p| u32::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| RuntimeError::Internal {
                    context: "verifying mounts".into(),
                    detail: format!(
                        "the container is {:?} and has no process to inspect",
                        state.status
                    ),
                })?;
            for v in &verified {
                let volume = &spec.volumes[v.volume];
                let sees = crate::safe_path::container_sees(pid, &volume.mount_path, v.dev, v.ino)
                    .map_err(|e| RuntimeError::Internal {
                        context: "verifying mounts".into(),
                        detail: e.to_string(),
                    })?;
                if !sees {
                    return Err(rejected(
                        format!("volumes[{}]", v.volume),
                        ErrorCode::VolumeStagingUnavailable,
                        "the engine does not see Berth's staging mount (does it run in another mount namespace or on another host?)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Resolves and stages every host and pvc-subPath volume (blocking file-system work, off the
    /// async threads) and plans every mount in mount order.
    async fn prepare_host_paths(
        &self,
        id: &SandboxId,
        spec: &SandboxSpec,
        ossfs_keys: &[Option<OssfsKey>],
    ) -> Result<(Vec<PlannedMount>, Vec<Verified>), RuntimeError> {
        // Roots for each volume that needs one: the allowed host root, or the volume's mountpoint.
        let mut jobs = Vec::new();
        for (i, volume) in spec.volumes.iter().enumerate() {
            if !needs_host_path(volume) {
                continue;
            }
            let (root, segments, shown, field) = match &volume.source {
                VolumeSource::Host { path } => {
                    let (root_path, _) = self
                        .roots
                        .iter()
                        .filter(|(root, _)| path.is_within(root))
                        .max_by_key(|(root, _)| root.as_str().len())
                        .ok_or_else(|| {
                            rejected(
                                format!("volumes[{i}].host.path"),
                                ErrorCode::VolumeHostPathNotAllowed,
                                "not under an allowed root",
                            )
                        })?;
                    let below: Vec<String> = path
                        .segments_below(root_path)
                        .unwrap_or_default()
                        .into_iter()
                        .map(str::to_owned)
                        .chain(sub_path_segments(volume.sub_path.as_ref()))
                        .collect();
                    let field = if volume.sub_path.is_some() {
                        "subPath"
                    } else {
                        "host.path"
                    };
                    (
                        RootRef::Host(root_path.clone()),
                        below,
                        root_path.to_string(),
                        field,
                    )
                }
                VolumeSource::Pvc(pvc) => {
                    let info = self
                        .inspect_volume(pvc.claim_name.as_str())
                        .await?
                        .ok_or_else(|| {
                            rejected(
                                format!("volumes[{i}].pvc.claimName"),
                                ErrorCode::VolumePvcNotFound,
                                format!("volume \"{}\" disappeared", pvc.claim_name),
                            )
                        })?;
                    let plain_local = info.driver == "local"
                        && info.options.is_empty()
                        && !info.mountpoint.is_empty();
                    if !plain_local {
                        return Err(rejected(
                            format!("volumes[{i}].subPath"),
                            ErrorCode::VolumePvcSubPathUnsupportedDriver,
                            format!(
                                "volume \"{}\" (driver {}{}) is not a plain local directory, so a subPath cannot be staged from it; mount it whole",
                                pvc.claim_name,
                                info.driver,
                                if info.options.is_empty() {
                                    String::new()
                                } else {
                                    " with driver options".into()
                                }
                            ),
                        ));
                    }
                    (
                        RootRef::Engine(PathBuf::from(info.mountpoint)),
                        sub_path_segments(volume.sub_path.as_ref()),
                        format!("volume {}", pvc.claim_name),
                        "subPath",
                    )
                }
                // The subPath is the bucket prefix, already given to the helper.
                VolumeSource::Ossfs(_) => {
                    let key = ossfs_keys.get(i).cloned().flatten().ok_or_else(|| {
                        RuntimeError::Internal {
                            context: format!("preparing volumes[{i}]"),
                            detail: "no ossfs mount key".into(),
                        }
                    })?;
                    (
                        RootRef::Ossfs,
                        vec![key.to_string()],
                        "ossfs mount".to_owned(),
                        "ossfs",
                    )
                }
                _ => continue,
            };
            jobs.push(Job {
                volume: i,
                name: volume.name.to_string(),
                read_only: volume.read_only,
                root,
                segments,
                shown,
                field,
            });
        }

        let staging = self.staging.clone();
        let roots = Arc::clone(&self.roots);
        let ossfs_area = self.ossfs.as_ref().map(|h| Arc::clone(h.area()));
        let sandbox = id.to_string();
        let prepared =
            tokio::task::spawn_blocking(move || -> Result<Vec<Prepared>, PrepareFailure> {
                let mut out = Vec::new();
                for job in jobs {
                    let fail = |error| PrepareFailure {
                        volume: job.volume,
                        field: job.field,
                        error,
                    };
                    let opened;
                    let root = match &job.root {
                        RootRef::Host(path) => {
                            &roots
                                .iter()
                                .find(|(p, _)| p == path)
                                .ok_or_else(|| {
                                    fail(SafePathError::Missing {
                                        path: path.to_string(),
                                    })
                                })?
                                .1
                        }
                        RootRef::Engine(path) => {
                            opened = TrustedRoot::open_engine_path(path).map_err(fail)?;
                            &opened
                        }
                        RootRef::Ossfs => ossfs_area
                            .as_ref()
                            .ok_or_else(|| {
                                fail(SafePathError::Missing {
                                    path: "storage.ossfs_mount_root".into(),
                                })
                            })?
                            .root(),
                    };
                    let segments: Vec<&str> = job.segments.iter().map(String::as_str).collect();
                    let resolved = root
                        .resolve(&segments, Missing::Create, &job.shown)
                        .map_err(fail)?;
                    out.push(match &staging {
                        Some(area) => {
                            let staged = area
                                .stage(&sandbox, &job.name, &resolved, job.read_only)
                                .map_err(fail)?;
                            Prepared {
                                volume: job.volume,
                                bind: staged.path,
                                identity: Some((resolved.dev, resolved.ino)),
                            }
                        }
                        // Unstaged (operator opt-in): the verified path itself, with the documented race.
                        None => Prepared {
                            volume: job.volume,
                            bind: root.unstaged_path(&segments),
                            identity: None,
                        },
                    });
                }
                Ok(out)
            })
            .await
            .map_err(|e| RuntimeError::Internal {
                context: "preparing volumes".into(),
                detail: e.to_string(),
            })?
            .map_err(
                |PrepareFailure {
                     volume,
                     field,
                     error,
                 }| match error {
                    SafePathError::Io { .. } => RuntimeError::Internal {
                        context: format!("preparing volumes[{volume}]"),
                        detail: error.to_string(),
                    },
                    other => rejected(
                        format!("volumes[{volume}].{field}"),
                        other.code(),
                        other.to_string(),
                    ),
                },
            )?;

        let staging_root = self
            .staging
            .as_ref()
            .map(|a| a.path().to_owned())
            .unwrap_or_default();
        let mut mounts = Vec::new();
        for volume in spec.volumes_in_mount_order() {
            let i = spec
                .volumes
                .iter()
                .position(|v| std::ptr::eq(v, volume))
                .unwrap_or_default();
            let mut planned = plan_mount(id, volume, &staging_root);
            if let Some(p) = prepared.iter().find(|p| p.volume == i) {
                planned.source = MountSource::Bind(p.bind.clone());
            }
            mounts.push(planned);
        }
        let verified = prepared
            .into_iter()
            .filter_map(|p| {
                p.identity.map(|(dev, ino)| Verified {
                    volume: p.volume,
                    dev,
                    ino,
                })
            })
            .collect();
        Ok((mounts, verified))
    }

    /// Releases what a failed create made (every volume it created, whatever its flags).
    pub(super) async fn rollback(&self, stored: &StoredSandbox) {
        let id = SandboxId::new(&stored.id).ok();
        if let Some(id) = &id
            && let Err(e) = self.remove_container(id).await
        {
            tracing::error!(sandbox = %stored.id, error = %e, "rollback: removing the container failed");
        }
        self.index.remove(&stored.id);
        if let Err(e) = self.release(stored, true).await {
            tracing::error!(sandbox = %stored.id, error = %e, "rollback incomplete");
        }
    }

    /// Releases a deleted sandbox: staging mounts, its NFS volumes, the volumes it created with
    /// `deleteOnSandboxTermination` (once unused), and its record.
    pub(super) async fn release_everything(
        &self,
        stored: &StoredSandbox,
    ) -> Result<(), RuntimeError> {
        self.release(stored, false).await
    }

    /// Every step is attempted even when an earlier one fails; the first failure is returned.
    /// A delete whose staging mounts cannot be released keeps its record, so the delete can be
    /// retried; a rollback always drops it (startup reconciliation releases stale staging).
    async fn release(
        &self,
        stored: &StoredSandbox,
        rolling_back: bool,
    ) -> Result<(), RuntimeError> {
        let mut first_error: Option<RuntimeError> = None;
        let mut note = |e: RuntimeError| {
            tracing::error!(sandbox = %stored.id, error = %e, "releasing sandbox resources");
            first_error.get_or_insert(e);
        };
        let mut staging_released = true;
        if let Some(area) = &self.staging {
            let area = Arc::clone(area);
            let sandbox = stored.id.clone();
            let released = tokio::task::spawn_blocking(move || area.release_sandbox(&sandbox))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            if let Err(detail) = released {
                staging_released = false;
                note(RuntimeError::Internal {
                    context: "releasing staging mounts".into(),
                    detail,
                });
            }
        }
        for name in &stored.sandbox_volumes {
            match self
                .engine
                .docker
                .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
                .await
            {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => note(docker_error("removing NFS volume")(e)),
            }
        }
        if !staging_released && !rolling_back {
            return Err(first_error.unwrap_or_else(|| RuntimeError::Internal {
                context: "releasing staging mounts".into(),
                detail: "failed".into(),
            }));
        }
        let _guard = self.volume_lock.lock().await;
        for created in &stored.created_volumes {
            if (rolling_back || created.delete_on_termination)
                && let Err(e) = self.store.schedule_volume_removal(created)
            {
                note(store_error(e));
            }
        }
        if let Err(e) = self.store.remove(&stored.id) {
            note(store_error(e));
        }
        if let Err(e) = self.sweep_volumes().await {
            note(e);
        }
        drop(_guard);
        if let Err(e) = self.release_ossfs(stored).await {
            note(e);
        }
        first_error.map_or(Ok(()), Err)
    }

    pub(super) async fn render_sandbox(
        &self,
        request: &CreateSandbox,
    ) -> Result<RenderedSandbox, RuntimeError> {
        self.check_volumes_supported(&request.spec)?;
        let claims = self.plan_claims(&request.spec).await?;
        let stored = self.initial_record(request, &claims);
        let staging_root = self
            .staging
            .as_ref()
            .map(|a| a.path().to_owned())
            .unwrap_or_default();
        let mounts: Vec<PlannedMount> = request
            .spec
            .volumes_in_mount_order()
            .into_iter()
            .map(|v| plan_mount(&request.id, v, &staging_root))
            .collect();
        let body: ContainerCreateBody = render_container(
            &self.config,
            self.engine.api,
            &request.id,
            &request.spec,
            &mounts,
            request.expires_at(),
        );
        let nfs: Vec<_> = request
            .spec
            .volumes
            .iter()
            .filter_map(|v| match &v.source {
                VolumeSource::Nfs(nfs) => {
                    Some(render_nfs_volume(&self.config, &request.id, v, nfs))
                }
                _ => None,
            })
            .collect();
        // The shared host mounts ossfs volumes use (mounted unless already live); never keys.
        let ossfs: Vec<serde_json::Value> = request
            .spec
            .volumes
            .iter()
            .zip(&stored.volumes)
            .filter_map(|(volume, stored)| match (&volume.source, &stored.ossfs_key, &self.ossfs) {
                (VolumeSource::Ossfs(source), Some(key), Some(host)) => Some(serde_json::json!({
                    "volume": volume.name.as_str(),
                    "mountpoint": host.area().mountpoint(key),
                    "version": source.version.as_str(),
                    "bucket": source.bucket.as_str(),
                    "endpoint": source.endpoint.as_str(),
                    "prefix": volume.sub_path.as_ref().map(|p| p.as_str()),
                    "options": source.options.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })),
                _ => None,
            })
            .collect();
        let runtime_object = serde_json::json!({
            "apiVersion": self.engine.api.to_string(),
            "containerName": container_name(&request.id),
            "container": body,
            "createsVolumes": stored.created_volumes.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            "nfsVolumes": nfs,
            "ossfsMounts": ossfs,
        });
        let mut record = self.record_of(&stored);
        record.status = berth_core::model::SandboxStatus::new(
            berth_core::model::SandboxState::Pending,
            request.created_at,
        );
        Ok(RenderedSandbox {
            sandbox: record,
            runtime_object,
        })
    }
}

/// Which trusted root a volume resolves from.
enum RootRef {
    /// An allowed host root (opened at startup).
    Host(berth_core::model::HostPath),
    /// A named volume's mountpoint, as the engine reported it.
    Engine(PathBuf),
    /// The ossfs mount root (the segment is the mount key).
    Ossfs,
}

/// A resolved (and staged) volume: what Docker binds, and the inode to check after start.
struct Prepared {
    volume: usize,
    bind: PathBuf,
    identity: Option<(u64, u64)>,
}

/// Which volume could not be prepared, and why.
struct PrepareFailure {
    volume: usize,
    field: &'static str,
    error: SafePathError,
}

struct Job {
    volume: usize,
    name: String,
    read_only: bool,
    root: RootRef,
    segments: Vec<String>,
    shown: String,
    field: &'static str,
}
