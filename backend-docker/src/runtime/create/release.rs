//! Releasing everything a sandbox holds: on delete, and as the rollback of a failed create.

use std::sync::Arc;

use berth_core::model::SandboxId;
use berth_core::runtime::RuntimeError;
use bollard::query_parameters::RemoveVolumeOptions;

use crate::runtime::{DockerRuntime, docker_error, is_not_found, store_error};
use crate::store::StoredSandbox;

impl DockerRuntime {
    /// Releases what a failed create made (every volume it created, whatever its flags).
    pub(in crate::runtime) async fn rollback(&self, stored: &StoredSandbox) {
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
    pub(in crate::runtime) async fn release_everything(
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
                .bounded(
                    "removing NFS volume",
                    self.engine
                        .docker
                        .remove_volume(name, Some(RemoveVolumeOptions { force: false })),
                )
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) if is_not_found(&e) => {}
                Ok(Err(e)) => note(docker_error("removing NFS volume")(e)),
                Err(timed_out) => note(timed_out),
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
                && let Err(e) = self.store.schedule_volume_removal(created).await
            {
                note(store_error(e));
            }
        }
        if let Err(e) = self.store.remove(&stored.id).await {
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
}
