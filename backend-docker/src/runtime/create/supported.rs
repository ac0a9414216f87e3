//! Refusing, before anything is made, volumes the Docker runtime cannot mount on this server.
//!
//! The generic shortfalls (backend not offered, a subPath the backend cannot mount, provisioning hints,
//! platform) are `Capabilities::check`'s, which the API runs first and which is repeated here
//! for callers of the runtime that bypass the API. Only what the capabilities cannot express is
//! checked here: which ossfs version is installed, and staging for a host volume without subPath.

use berth_core::ErrorCode;
use berth_core::model::{OssfsVersion, SandboxSpec, VolumeSource};
use berth_core::runtime::RuntimeError;
use berth_core::validate::{Violation, Violations};

use crate::runtime::DockerRuntime;

impl DockerRuntime {
    /// Every shortfall of `spec` on this server, at once.
    pub(super) fn check_volumes_supported(&self, spec: &SandboxSpec) -> Result<(), RuntimeError> {
        let mut violations = match self.capabilities.check(spec) {
            Ok(()) => Vec::new(),
            Err(v) => v.as_slice().to_vec(),
        };
        for (i, volume) in spec.volumes.iter().enumerate() {
            match &volume.source {
                VolumeSource::Ossfs(source)
                    if self
                        .ossfs
                        .as_ref()
                        .is_some_and(|host| host.program(source.version).is_none()) =>
                {
                    violations.push(Violation::new(
                        format!("volumes[{i}].ossfs.version"),
                        ErrorCode::VolumeUnsupportedBackend,
                        format!(
                            "no ossfs {} helper is installed on this server ({})",
                            source.version.as_str(),
                            match source.version {
                                OssfsVersion::V1 => "storage.ossfs_command",
                                OssfsVersion::V2 => "storage.ossfs2_command",
                            }
                        ),
                    ));
                }
                // With a subPath, `Capabilities::check` already refused it (no subPath support).
                VolumeSource::Host { .. }
                    if volume.sub_path.is_none()
                        && self.staging.is_none()
                        && !self.config.allow_unstaged_paths =>
                {
                    violations.push(Violation::new(
                        format!("volumes[{i}]"),
                        ErrorCode::VolumeStagingUnavailable,
                        "this server cannot stage verified mounts (it is not root on the engine's host), so host and pvc-with-subPath volumes are refused; an operator may accept the residual race with storage.allow_unstaged_paths = true",
                    ));
                }
                _ => {}
            }
        }
        Violations::from_vec(violations).map_or(Ok(()), |v| Err(RuntimeError::Rejected(v)))
    }
}
