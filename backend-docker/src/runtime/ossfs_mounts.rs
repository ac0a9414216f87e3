//! Shared ossfs mounts: mounted through the configured helper when the first sandbox needs
//! one, reused by every sandbox with the same key, unmounted when the last one is released.
//!
//! The reference count is the store itself: a mount is in use while some record names its key.
//! Records are written (with their keys) before anything is mounted, and every decision to
//! mount or unmount is taken under one lock after reading the store, so a crash at any point
//! leaves either a record that owns the mount or a mount that startup reconciliation detaches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_core::ErrorCode;
use berth_core::model::{OssfsSource, OssfsVersion, SandboxSpec, SubPath, VolumeSource};
use berth_core::runtime::RuntimeError;
use berth_core::validate::{Violation, Violations};
use tokio::io::AsyncReadExt;

use super::DockerRuntime;
use crate::config::OssfsConfig;
use crate::ossfs::{OssfsKey, credentials_file, mount_arguments};
use crate::safe_path::SafePathError;
use crate::safe_path::ossfs_area::{MountpointState, OssfsArea};
use crate::store::StoredSandbox;

/// What the runtime needs to mount buckets: the host area, the helpers found, and the lock.
#[derive(Debug)]
pub(super) struct OssfsHost {
    area: Arc<OssfsArea>,
    programs: BTreeMap<OssfsVersion, PathBuf>,
    timeout: Duration,
    /// Serialises mount and unmount decisions.
    lock: tokio::sync::Mutex<()>,
}

/// `program` as a path to run: as configured when it names a path, else the first match in
/// `PATH`; `None` when no executable file is there.
fn find_program(program: &Path) -> Option<PathBuf> {
    let executable = |p: &Path| {
        rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok()
            && std::fs::metadata(p).is_ok_and(|m| m.is_file())
    };
    if program.components().count() > 1 {
        return executable(program).then(|| program.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
}

impl OssfsHost {
    /// Opens the area and looks for the helpers. `Ok(None)` when no helper is installed: the
    /// backend is then not offered (and nothing is created on the host).
    pub(super) fn open(
        config: &OssfsConfig,
        state_dir: &Path,
    ) -> Result<Option<Self>, SafePathError> {
        let programs: BTreeMap<OssfsVersion, PathBuf> = [
            (OssfsVersion::V1, &config.command_v1),
            (OssfsVersion::V2, &config.command_v2),
        ]
        .into_iter()
        .filter_map(|(version, program)| find_program(program).map(|p| (version, p)))
        .collect();
        if programs.is_empty() {
            return Ok(None);
        }
        let area = OssfsArea::open(&config.mount_root, &state_dir.join("ossfs-credentials"))?;
        Ok(Some(Self {
            area: Arc::new(area),
            programs,
            timeout: config.mount_timeout,
            lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// The helper for `version`, if installed.
    pub(super) fn program(&self, version: OssfsVersion) -> Option<&Path> {
        self.programs.get(&version).map(PathBuf::as_path)
    }

    /// Helpers found, for the startup log.
    pub(super) fn describe(&self) -> String {
        self.programs
            .iter()
            .map(|(v, p)| format!("{} = {}", v.as_str(), p.display()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The area (mount root and credentials), for resolving a mounted key.
    pub(super) fn area(&self) -> &Arc<OssfsArea> {
        &self.area
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&OssfsArea) -> Result<T, SafePathError> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let area = Arc::clone(&self.area);
        // Off the async threads: a stat of a hung FUSE mount can block.
        tokio::task::spawn_blocking(move || f(&area))
            .await
            .map_err(|e| RuntimeError::Internal {
                context: "ossfs".into(),
                detail: e.to_string(),
            })?
            .map_err(|e| RuntimeError::Internal {
                context: "ossfs".into(),
                detail: e.to_string(),
            })
    }
}

fn mount_failed(volume: usize, message: String) -> RuntimeError {
    RuntimeError::Rejected(Violations::one(Violation::new(
        format!("volumes[{volume}].ossfs"),
        ErrorCode::VolumeOssfsMountFailed,
        message,
    )))
}

/// The helper's diagnostics as shown to the client: the last part, credentials removed.
fn helper_said(output: &[u8], source: &OssfsSource) -> String {
    let mut text = String::from_utf8_lossy(output).trim().to_owned();
    for secret in [
        source.credentials.access_key_secret(),
        source.credentials.access_key_id(),
    ] {
        text = text.replace(secret, "<redacted>");
    }
    let chars: Vec<char> = text.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(500)..].iter().collect();
    if tail.is_empty() {
        "(no output)".into()
    } else {
        tail
    }
}

/// How a helper run ended.
enum HelperOutcome {
    Exited(std::process::ExitStatus, Vec<u8>),
    TimedOut(Vec<u8>),
}

/// Runs the helper: no shell, stdin closed, its diagnostics collected (ossfs daemonises and
/// its daemon may keep the pipe open, so the output is read only until the helper exits).
async fn run_helper(
    program: &Path,
    args: Vec<std::ffi::OsString>,
    timeout: Duration,
) -> Result<HelperOutcome, std::io::Error> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stderr = child.stderr.take();
    let mut output = Vec::new();
    let mut chunk = [0_u8; 1024];
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            read = async {
                match stderr.as_mut() {
                    Some(s) => s.read(&mut chunk).await,
                    None => std::future::pending().await,
                }
            } => match read {
                Ok(0) | Err(_) => stderr = None,
                Ok(n) => if output.len() < 16 * 1024 { output.extend_from_slice(&chunk[..n]) },
            },
            () = &mut deadline => {
                // kill_on_drop also covers an early return; kill now so the mountpoint is free.
                let _ = child.kill().await;
                return Ok(HelperOutcome::TimedOut(output));
            }
        }
    };
    if let Some(mut s) = stderr {
        // Whatever is already buffered; a daemon holding the pipe does not hold us.
        let _ = tokio::time::timeout(Duration::from_millis(50), async {
            while let Ok(n) = s.read(&mut chunk).await {
                if n == 0 || output.len() >= 16 * 1024 {
                    break;
                }
                output.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
    }
    Ok(HelperOutcome::Exited(status, output))
}

impl DockerRuntime {
    /// Makes sure every ossfs mount the sandbox needs is live, mounting the missing ones.
    /// `stored` (already in the store) names their keys, so they are owned before they exist.
    pub(super) async fn mount_ossfs(
        &self,
        spec: &SandboxSpec,
        stored: &StoredSandbox,
    ) -> Result<(), RuntimeError> {
        let Some(host) = &self.ossfs else {
            return Ok(());
        };
        let _guard = host.lock.lock().await;
        for (i, volume) in spec.volumes.iter().enumerate() {
            let VolumeSource::Ossfs(source) = &volume.source else {
                continue;
            };
            let Some(key) = stored.volumes.get(i).and_then(|v| v.ossfs_key.clone()) else {
                return Err(RuntimeError::Internal {
                    context: "mounting ossfs".into(),
                    detail: format!("volumes[{i}] has no mount key in its record"),
                });
            };
            self.mount_key(host, i, &key, source, volume.sub_path.as_ref())
                .await?;
        }
        Ok(())
    }

    async fn mount_key(
        &self,
        host: &OssfsHost,
        volume: usize,
        key: &OssfsKey,
        source: &OssfsSource,
        prefix: Option<&SubPath>,
    ) -> Result<(), RuntimeError> {
        let k = key.clone();
        match host.blocking(move |area| area.state(&k)).await? {
            MountpointState::Mounted => return Ok(()),
            MountpointState::Disconnected => {
                tracing::warn!(%key, "ossfs mount lost its helper; mounting it again");
                let k = key.clone();
                host.blocking(move |area| area.detach(&k)).await?;
            }
            MountpointState::Absent | MountpointState::Unmounted => {}
        }
        let program = host.program(source.version).ok_or_else(|| {
            mount_failed(
                volume,
                format!("no ossfs {} helper is installed", source.version.as_str()),
            )
        })?;
        let k = key.clone();
        host.blocking(move |area| area.create_mountpoint(&k))
            .await?;
        let mountpoint = host.area.mountpoint(key);
        let result = async {
            let credentials = host
                .area
                .write_credentials(key, &credentials_file(source, prefix))
                .map_err(|e| RuntimeError::Internal {
                    context: "mounting ossfs".into(),
                    detail: e.to_string(),
                })?;
            let args = mount_arguments(source, prefix, &mountpoint, credentials.path());
            let outcome = run_helper(program, args, host.timeout).await;
            // Removed right after the helper returns, whatever happened.
            drop(credentials);
            let outcome = outcome.map_err(|e| RuntimeError::Internal {
                context: format!("running the ossfs helper {}", program.display()),
                detail: e.to_string(),
            })?;
            match outcome {
                HelperOutcome::TimedOut(output) => Err(mount_failed(
                    volume,
                    format!(
                        "the ossfs helper did not finish within {} s (is the endpoint reachable?): {}",
                        host.timeout.as_secs(),
                        helper_said(&output, source)
                    ),
                )),
                HelperOutcome::Exited(status, output) if !status.success() => Err(mount_failed(
                    volume,
                    format!(
                        "the ossfs helper failed ({status}): {}",
                        helper_said(&output, source)
                    ),
                )),
                HelperOutcome::Exited(..) => {
                    // The helper may return just before the kernel shows the mount.
                    for _ in 0..20 {
                        let k = key.clone();
                        if host.blocking(move |area| area.state(&k)).await?
                            == MountpointState::Mounted
                        {
                            return Ok(());
                        }
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    Err(mount_failed(
                        volume,
                        "the ossfs helper reported success but nothing is mounted".into(),
                    ))
                }
            }
        }
        .await;
        if result.is_err() {
            let k = key.clone();
            if let Err(e) = host.blocking(move |area| area.detach(&k)).await {
                tracing::error!(%key, error = %e, "removing a failed ossfs mountpoint");
            }
        } else {
            tracing::info!(%key, bucket = %source.bucket, "ossfs mounted");
        }
        result
    }

    /// Unmounts the ossfs mounts of `stored` that no record uses any more. Called after the
    /// sandbox's record is removed (a record that could not be removed keeps its mounts).
    pub(super) async fn release_ossfs(&self, stored: &StoredSandbox) -> Result<(), RuntimeError> {
        let Some(host) = &self.ossfs else {
            return Ok(());
        };
        let mut keys: Vec<OssfsKey> = stored
            .volumes
            .iter()
            .filter_map(|v| v.ossfs_key.clone())
            .collect();
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Ok(());
        }
        let _guard = host.lock.lock().await;
        let mut first_error = None;
        for key in keys {
            if self.store.ossfs_key_in_use(&key) {
                continue;
            }
            let k = key.clone();
            match host.blocking(move |area| area.detach(&k)).await {
                Ok(()) => tracing::info!(%key, "ossfs unmounted (last user gone)"),
                Err(e) => {
                    tracing::error!(%key, error = %e, "unmounting ossfs");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// At startup: removes credentials files a crash left, detaches mounts no record uses, and
    /// reports mounts records use that are not live (credentials are not kept, so they cannot
    /// be mounted again until a sandbox asks with its keys).
    pub(super) async fn reconcile_ossfs(&self) {
        let Some(host) = &self.ossfs else {
            return;
        };
        let _guard = host.lock.lock().await;
        match host.blocking(|area| area.sweep_credentials()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                files = n,
                "reconcile: removed ossfs credentials files a crash left"
            ),
            Err(e) => tracing::error!(error = %e, "reconcile: sweeping ossfs credentials files"),
        }
        let keys = match host.blocking(|area| area.keys()).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::error!(error = %e, "reconcile: listing ossfs mounts");
                return;
            }
        };
        for key in keys {
            if self.store.ossfs_key_in_use(&key) {
                let k = key.clone();
                match host.blocking(move |area| area.state(&k)).await {
                    Ok(MountpointState::Mounted) => {}
                    other => {
                        tracing::warn!(%key, state = ?other, "reconcile: an ossfs mount in use is not live (host restarted?); it is mounted again when a sandbox next asks for it")
                    }
                }
                continue;
            }
            tracing::warn!(%key, "reconcile: detaching an ossfs mount no sandbox uses");
            let k = key.clone();
            if let Err(e) = host.blocking(move |area| area.detach(&k)).await {
                tracing::error!(%key, error = %e, "reconcile: detaching ossfs mount");
            }
        }
    }
}
