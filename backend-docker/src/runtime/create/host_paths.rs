//! Resolving host, pvc-subPath and ossfs volumes from pinned fds and staging them (blocking
//! file-system work, run off the async threads; ARCHITECTURE.md, "Path safety").

use std::path::PathBuf;
use std::sync::Arc;

use berth_core::ErrorCode;
use berth_core::model::{SandboxId, SandboxSpec, VolumeSource};
use berth_core::runtime::RuntimeError;

use super::{Verified, needs_host_path, rejected, sub_path_segments};
use crate::ossfs::OssfsKey;
use crate::render::{MountSource, PlannedMount, plan_mount};
use crate::runtime::DockerRuntime;
use crate::safe_path::{Missing, SafePathError, TrustedRoot};

impl DockerRuntime {
    /// Resolves and stages every host and pvc-subPath volume (blocking file-system work, off the
    /// async threads) and plans every mount in mount order.
    pub(super) async fn prepare_host_paths(
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
