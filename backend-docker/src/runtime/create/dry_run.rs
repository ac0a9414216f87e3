//! The dry run of a create: what would be made, rendered without making anything.

use berth_core::model::VolumeSource;
use berth_core::runtime::{CreateSandbox, RenderedSandbox, RuntimeError};
use bollard::models::ContainerCreateBody;

use crate::render::{
    PlannedMount, container_name, plan_mount, render_container, render_nfs_volume,
};
use crate::runtime::DockerRuntime;

impl DockerRuntime {
    pub(in crate::runtime) async fn render_sandbox(
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
        let mut body: ContainerCreateBody = render_container(
            &self.config,
            self.engine.api,
            &request.id,
            &request.spec,
            &mounts,
            request.expires_at(),
        );
        if self.config.execd_image.is_some() {
            crate::execd::wrap(&mut body, &self.config);
        }
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
        let mut runtime_object = serde_json::json!({
            "apiVersion": self.engine.api.to_string(),
            "containerName": container_name(&request.id),
            "container": body,
            "createsVolumes": stored.created_volumes.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            "nfsVolumes": nfs,
            "ossfsMounts": ossfs,
        });
        if let Some(image) = &self.config.execd_image {
            // Read from it on the first create, then uploaded in one archive before the start.
            runtime_object["execd"] = serde_json::json!({
                "image": image,
                "files": [crate::execd::EXECD_PATH, crate::execd::BOOTSTRAP_PATH],
            });
        }
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
