//! Making a sandbox's objects once its record is written: NFS volumes, ossfs and staging
//! mounts, the container (created, started, inspected), and the post-start mount check.

use berth_core::ErrorCode;
use berth_core::model::{SandboxId, SandboxSpec, VolumeSource};
use berth_core::runtime::{CreateSandbox, RuntimeError};
use bollard::query_parameters::{CreateContainerOptions, InspectContainerOptions};

use super::refusal::{Step, classify};
use super::{Verified, rejected};
use crate::index::{ContainerView, status_of};
use crate::ossfs::OssfsKey;
use crate::render::{container_name, render_container, render_nfs_volume};
use crate::runtime::step_times::StepTimes;
use crate::runtime::{DockerRuntime, docker_error};
use crate::store::StoredSandbox;

impl DockerRuntime {
    /// Makes the NFS volumes, the staging mounts and the container (with the agent's `execd`
    /// archive copied in, when one is injected), starts it, and checks the staged mounts from
    /// inside.
    pub(super) async fn build(
        &self,
        request: &CreateSandbox,
        stored: &mut StoredSandbox,
        execd: Option<bytes::Bytes>,
        steps: &mut StepTimes,
    ) -> Result<(), RuntimeError> {
        let id = &request.id;
        let spec = &request.spec;
        for (volume, nfs) in spec.volumes.iter().filter_map(|v| match &v.source {
            VolumeSource::Nfs(nfs) => Some((v, nfs)),
            _ => None,
        }) {
            let body = render_nfs_volume(&self.config, id, volume, nfs);
            self.engine
                .bounded(
                    "creating NFS volume",
                    self.engine.docker.create_volume(body),
                )
                .await?
                .map_err(docker_error("creating NFS volume"))?;
        }
        steps.mark("nfs");
        self.mount_ossfs(spec, stored).await?;
        steps.mark("ossfs");
        let ossfs_keys: Vec<Option<OssfsKey>> =
            stored.volumes.iter().map(|v| v.ossfs_key.clone()).collect();
        let (mounts, verified) = self.prepare_host_paths(id, spec, &ossfs_keys).await?;
        steps.mark("host_paths");
        let mut body = render_container(
            &self.config,
            self.engine.api,
            id,
            spec,
            &mounts,
            request.expires_at(),
        );
        if execd.is_some() {
            crate::execd::wrap(&mut body, &self.config);
        }
        let options = CreateContainerOptions {
            name: Some(container_name(id)),
            ..Default::default()
        };
        let created = self
            .engine
            .bounded(
                "creating container",
                self.engine.docker.create_container(Some(options), body),
            )
            .await?
            .map_err(|e| engine_failure(Step::CreateContainer, id, spec, e))?;
        steps.mark("create_container");
        self.index.set(
            id.as_str(),
            ContainerView {
                container_id: created.id.clone(),
                status: crate::index::ContainerStatus::Created,
                changed_at: None,
            },
        );
        if let Some(archive) = execd {
            self.upload_execd(&created.id, archive).await?;
            steps.mark("agent_upload");
        }
        self.engine
            .bounded(
                "starting container",
                self.engine.docker.start_container(&created.id, None),
            )
            .await?
            .map_err(|e| engine_failure(Step::StartContainer, id, spec, e))?;
        steps.mark("start");
        let inspect = self
            .engine
            .bounded(
                "inspecting container",
                self.engine
                    .docker
                    .inspect_container(&created.id, None::<InspectContainerOptions>),
            )
            .await?
            .map_err(docker_error("inspecting container"))?;
        steps.mark("inspect");
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
            if let Some(unseen) = unseen_mount(pid, spec, verified).await? {
                return Err(rejected(
                    format!("volumes[{unseen}]"),
                    ErrorCode::VolumeStagingUnavailable,
                    "the engine does not see Berth's staging mount (does it run in another mount namespace or on another host?)",
                ));
            }
            steps.mark("verify");
        }
        Ok(())
    }
}

/// The first staged volume the container's process `pid` does not see as Berth verified it.
/// Walking `/proc/<pid>/root` is blocking file-system work: it runs off the async threads.
async fn unseen_mount(
    pid: u32,
    spec: &SandboxSpec,
    verified: Vec<Verified>,
) -> Result<Option<usize>, RuntimeError> {
    let checks: Vec<_> = verified
        .into_iter()
        .map(|v| {
            (
                v.volume,
                spec.volumes[v.volume].mount_path.clone(),
                v.dev,
                v.ino,
            )
        })
        .collect();
    let internal = |detail: String| RuntimeError::Internal {
        context: "verifying mounts".into(),
        detail,
    };
    tokio::task::spawn_blocking(move || {
        for (volume, mount_path, dev, ino) in checks {
            if !crate::safe_path::container_sees(pid, &mount_path, dev, ino)
                .map_err(|e| internal(e.to_string()))?
            {
                return Ok(Some(volume));
            }
        }
        Ok(None)
    })
    .await
    .map_err(|e| internal(e.to_string()))?
}

/// A failed container call: the request's fault when `classify` says so, else internal (or
/// unavailable).
fn engine_failure(
    step: Step,
    id: &SandboxId,
    spec: &SandboxSpec,
    error: bollard::errors::Error,
) -> RuntimeError {
    if let bollard::errors::Error::DockerResponseServerError {
        status_code,
        message,
    } = &error
        && let Some(refused) = classify(step, *status_code, message, id, spec)
    {
        return refused;
    }
    docker_error(match step {
        Step::CreateContainer => "creating container",
        Step::StartContainer => "starting container",
    })(error)
}
