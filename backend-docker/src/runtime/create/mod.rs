//! Creating a sandbox: the orchestration of one create, and the helpers its steps share.
//!
//! Order of a create: image (and the injected agent's archive, read once: `crate::execd`) →
//! (volume lock) claims looked up, the store record written with everything about to be made,
//! missing claims created → per-sandbox NFS volumes → host and pvc-subPath paths resolved from
//! pinned fds and staged → container created, the agent copied in, started → each staged mount
//! checked from inside the container. Any failure releases all of it
//! (ARCHITECTURE.md, "Invariants": "Record before objects", "Nothing half-made").

mod build;
mod dry_run;
mod host_paths;
mod image;
mod record;
mod refusal;
mod release;
mod supported;

use berth_core::ErrorCode;
use berth_core::model::{SubPath, Volume, VolumeSource};
use berth_core::runtime::{CreateSandbox, RuntimeError};
use berth_core::validate::{Violation, Violations};

use super::{DockerRuntime, store_error};
use crate::store::Phase;

/// A staged mount's identity, checked from inside the container after start.
pub(super) struct Verified {
    volume: usize,
    dev: u64,
    ino: u64,
}

pub(super) fn rejected(field: String, code: ErrorCode, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Rejected(Violations::one(Violation::new(field, code, message)))
}

/// Whether a volume needs a host path resolved (and staged): host, pvc with subPath, and
/// ossfs (its shared mount is staged per sandbox, so read-only holds per sandbox).
pub(super) fn needs_host_path(volume: &Volume) -> bool {
    matches!(
        volume.source,
        VolumeSource::Host { .. } | VolumeSource::Ossfs(_)
    ) || matches!(volume.source, VolumeSource::Pvc(_) if volume.sub_path.is_some())
}

pub(super) fn sub_path_segments(sub_path: Option<&SubPath>) -> Vec<String> {
    sub_path
        .map(|s| s.segments().map(str::to_owned).collect())
        .unwrap_or_default()
}

impl DockerRuntime {
    pub(in crate::runtime) async fn create_sandbox(
        &self,
        request: CreateSandbox,
    ) -> Result<berth_core::model::SandboxRecord, RuntimeError> {
        let id = &request.id;
        let mut steps = super::step_times::StepTimes::start("create");
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
        steps.mark("image");
        // Read (once) before anything of the sandbox is made: a failure leaves nothing to undo.
        let execd = self.execd_archive(request.spec.platform).await?;
        steps.mark("agent");

        let mut stored = {
            let _guard = self.volume_lock.lock().await;
            let claims = self.plan_claims(&request.spec).await?;
            steps.mark("claims");
            let mut stored = self.initial_record(&request, &claims);
            self.store.put(&stored).await.map_err(store_error)?;
            steps.mark("store");
            if let Err(e) = self.create_claims(&mut stored).await {
                drop(_guard);
                self.rollback(&stored).await;
                return Err(e);
            }
            steps.mark("claim_create");
            stored
        };
        match self.build(&request, &mut stored, execd, &mut steps).await {
            Ok(()) => {
                stored.phase = Phase::Created;
                if let Err(e) = self.store.put(&stored).await {
                    self.rollback(&stored).await;
                    return Err(store_error(e));
                }
                steps.mark("store");
                steps.log(id.as_str());
                Ok(self.record_of(&stored))
            }
            Err(e) => {
                self.rollback(&stored).await;
                Err(e)
            }
        }
    }
}
