//! Starting the runtime: connect and negotiate, open the store and the staging area, probe
//! what the server can do, open the allowed roots (refusing to start on a bad one), start the
//! index, and reconcile what a crash or an outside hand left behind.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use berth_core::model::{
    HostPath, PlatformArch, PlatformOs, PlatformSpec, ReadOnlyMode, SandboxId, VolumeBackendKind,
};
use berth_core::runtime::{BackendSupport, Capabilities};
use bollard::query_parameters::{
    InspectNetworkOptions, ListContainersOptions, RemoveContainerOptions,
};

use super::DockerRuntime;
use super::ossfs_mounts::OssfsHost;
use crate::config::DockerConfig;
use crate::engine::{self, EngineError};
use crate::index::{ContainerIndex, ContainerStatus};
use crate::render::{LABEL_ID, instance_filter};
use crate::safe_path::staging::StagingArea;
use crate::safe_path::{Missing, SafePathError, TrustedRoot};
use crate::store::{Phase, Store, StoreError};

/// Why the runtime cannot start; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The engine cannot be used.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The state directory cannot be made or used.
    #[error("storage.state_dir {path}: {detail}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An allowed host root is unusable.
    #[error("storage.allowed_host_paths entry {path}: {source}")]
    AllowedRoot {
        /// The entry.
        path: PathBuf,
        /// Why.
        source: SafePathError,
    },
    /// The configured network does not exist.
    #[error("docker.network_mode = {network:?}: {detail}")]
    Network {
        /// The configured network.
        network: String,
        /// What the engine said.
        detail: String,
    },
    /// The ossfs mount root (or the credentials directory) is unusable.
    #[error("storage.ossfs_mount_root {path}: {source}")]
    Ossfs {
        /// The configured root.
        path: PathBuf,
        /// Why.
        source: SafePathError,
    },
    /// The initial container list failed.
    #[error("listing containers for the index: {0}")]
    Index(bollard::errors::Error),
}

/// Probes whether this process can make staging mounts (it stages a directory of the state dir
/// onto the staging area) and, while the probe mount exists, whether the engine's process sees
/// it: `Some(false)` when the engine runs in a mount namespace the staging mounts do not reach,
/// `None` when the engine's process cannot be found (not on a local Unix socket).
fn probe_staging(
    state_dir: &std::path::Path,
    area: &StagingArea,
    engine_socket: Option<&std::path::Path>,
) -> Result<Option<bool>, SafePathError> {
    let root = TrustedRoot::open_configured(state_dir)?;
    let probe = root.resolve(&["probe"], Missing::Create, "state_dir")?;
    let result = area
        .stage("probe", "probe", &probe, true)
        .map(|staged| {
            let pid = engine_socket.map(crate::safe_path::socket_peer_pid)?;
            let seen = pid.and_then(|pid| {
                crate::safe_path::process_sees(
                    pid,
                    &staged.path.to_string_lossy(),
                    probe.dev,
                    probe.ino,
                )
            });
            match seen {
                Ok(seen) => Some(seen),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell whether the engine sees staging mounts; each create checks its own");
                    None
                }
            }
        });
    area.release_sandbox("probe")?;
    result
}

/// What this server offers, per volume backend, given whether it can stage verified mounts
/// (ARCHITECTURE.md, "Path safety"). A staged mount is made read-only recursively
/// (`mount_setattr`); a Docker named volume or an unstaged bind is read-only at its top only.
fn capabilities(
    engine: &crate::engine::Engine,
    config: &DockerConfig,
    staging: bool,
    engine_sees_mounts: Option<bool>,
    ossfs: Option<String>,
    platform: Option<PlatformSpec>,
) -> Capabilities {
    // Host paths and pvc subPaths are resolved by Berth and bind-mounted: staged, or (accepting
    // the residual race) handed over unstaged; otherwise they are refused.
    let host_paths = staging || config.allow_unstaged_paths;
    let bound = if staging {
        ReadOnlyMode::Recursive
    } else {
        ReadOnlyMode::NonRecursive
    };
    let mut volume_backends = std::collections::BTreeMap::new();
    volume_backends.insert(
        VolumeBackendKind::Host,
        BackendSupport {
            sub_path: host_paths,
            read_only: bound,
            read_only_sub_path: bound,
        },
    );
    volume_backends.insert(
        VolumeBackendKind::Pvc,
        BackendSupport {
            sub_path: host_paths,
            read_only: ReadOnlyMode::NonRecursive,
            read_only_sub_path: bound,
        },
    );
    // A per-sandbox local-driver volume of the whole export: Docker has no way to mount a
    // directory inside it, so a subPath is refused rather than ignored.
    volume_backends.insert(
        VolumeBackendKind::Nfs,
        BackendSupport {
            sub_path: false,
            read_only: ReadOnlyMode::NonRecursive,
            read_only_sub_path: ReadOnlyMode::NonRecursive,
        },
    );
    if ossfs.is_some() {
        // Offered only with staging: the shared mount is staged per sandbox.
        volume_backends.insert(
            VolumeBackendKind::Ossfs,
            BackendSupport::uniform(ReadOnlyMode::Recursive),
        );
    }
    let sub_paths = match (staging, config.allow_unstaged_paths) {
        (true, _) => "staged bind mounts",
        (false, true) => "unstaged verified paths (storage.allow_unstaged_paths)",
        (false, false) => "refused (cannot stage)",
    };
    let details = [
        ("api_version", engine.api.to_string()),
        ("staging", staging.to_string()),
        ("host_paths", sub_paths.to_owned()),
        (
            "engine_sees_mounts",
            engine_sees_mounts.map_or_else(|| "not probed".to_owned(), |b| b.to_string()),
        ),
        (
            "ossfs",
            ossfs.unwrap_or_else(|| "not offered (no helper found, or no staging)".to_owned()),
        ),
        ("network", config.network_mode.clone()),
        (
            "execd",
            config.execd_image.as_ref().map_or_else(
                || "not injected (runtime.execd_image unset)".to_owned(),
                |image| format!("injected from {image}"),
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Capabilities {
        runtime: "docker".into(),
        engine_version: Some(format!(
            "Docker Engine {} (API {})",
            engine.engine_version, engine.api
        )),
        volume_backends,
        pause: true,
        pvc_provisioning_hints: false,
        platform,
        reserved_mount_paths: Vec::new(),
        details,
    }
}

/// What startup opens on the host: the state directory, the store, the staging area (and
/// whether the engine sees it), the ossfs area, and the allowed roots.
struct HostSide {
    store: Store,
    staging: Option<Arc<StagingArea>>,
    engine_sees_mounts: Option<bool>,
    ossfs: Option<OssfsHost>,
    roots: Vec<(HostPath, TrustedRoot)>,
}

/// Opens everything startup needs on the host. Blocking (directories, a database, mounts):
/// run off the async threads.
fn open_host(
    config: &DockerConfig,
    engine_socket: Option<&std::path::Path>,
) -> Result<HostSide, StartupError> {
    let state_error = |detail: String| StartupError::StateDir {
        path: config.state_dir.clone(),
        detail,
    };
    match std::fs::create_dir(&config.state_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(state_error(e.to_string())),
    }
    let store = Store::open(&config.state_dir.join("state.redb"))?;
    let area = StagingArea::open(&config.state_dir.join("mounts"))
        .map_err(|e| state_error(e.to_string()))?;
    let (staging, engine_sees_mounts) = match probe_staging(&config.state_dir, &area, engine_socket)
    {
        Ok(Some(false)) => {
            tracing::warn!(
                "the engine does not see this server's staging mounts (another mount namespace?); host, pvc-subPath and ossfs volumes are refused unless storage.allow_unstaged_paths"
            );
            (None, Some(false))
        }
        Ok(sees) => (Some(Arc::new(area)), sees),
        Err(e) => {
            tracing::warn!(error = %e, "this server cannot make staging mounts; host and pvc-subPath volumes are refused unless storage.allow_unstaged_paths");
            (None, None)
        }
    };
    let ossfs = match &staging {
        Some(_) => OssfsHost::open(&config.ossfs, &config.state_dir).map_err(|source| {
            StartupError::Ossfs {
                path: config.ossfs.mount_root.clone(),
                source,
            }
        })?,
        None => None,
    };
    let mut roots = Vec::new();
    for path in &config.allowed_host_paths {
        let root =
            TrustedRoot::open_configured(path).map_err(|source| StartupError::AllowedRoot {
                path: path.clone(),
                source,
            })?;
        let host_path = path
            .to_str()
            .and_then(|p| HostPath::new(p).ok())
            .ok_or_else(|| StartupError::AllowedRoot {
                path: path.clone(),
                source: SafePathError::Missing {
                    path: "an absolute, normal path".into(),
                },
            })?;
        roots.push((host_path, root));
    }
    Ok(HostSide {
        store,
        staging,
        engine_sees_mounts,
        ossfs,
        roots,
    })
}

/// Runs blocking `f` off the async threads; a panic in it is a panic here.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    match tokio::task::spawn_blocking(f).await {
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        other => other,
    }
}

impl DockerRuntime {
    /// Connects, probes, reconciles; ready to serve when it returns.
    pub async fn start(config: DockerConfig) -> Result<Self, StartupError> {
        let engine = engine::connect(config.host.as_deref(), config.engine_timeout).await?;
        let HostSide {
            store,
            staging,
            engine_sees_mounts,
            ossfs,
            roots,
        } = {
            let (host_config, socket) = (config.clone(), engine.socket.clone());
            blocking(move || open_host(&host_config, socket.as_deref()))
                .await
                .map_err(|e| StartupError::StateDir {
                    path: config.state_dir.clone(),
                    detail: e.to_string(),
                })??
        };
        let store = Arc::new(store);
        if !matches!(config.network_mode.as_str(), "host" | "none")
            && !config.network_mode.starts_with("container:")
        {
            engine
                .docker
                .inspect_network(&config.network_mode, None::<InspectNetworkOptions>)
                .await
                .map_err(|e| StartupError::Network {
                    network: config.network_mode.clone(),
                    detail: e.to_string(),
                })?;
        }
        let info = engine.docker.info().await.map_err(|e| {
            StartupError::Engine(EngineError::Unreachable {
                address: "info".into(),
                source: Box::new(e),
            })
        })?;
        let platform = match (info.os_type.as_deref(), info.architecture.as_deref()) {
            (Some("linux"), Some("x86_64" | "amd64")) => Some(PlatformSpec {
                os: PlatformOs::Linux,
                arch: PlatformArch::Amd64,
            }),
            (Some("linux"), Some("aarch64" | "arm64")) => Some(PlatformSpec {
                os: PlatformOs::Linux,
                arch: PlatformArch::Arm64,
            }),
            _ => None,
        };
        let capabilities = capabilities(
            &engine,
            &config,
            staging.is_some(),
            engine_sees_mounts,
            ossfs.as_ref().map(OssfsHost::describe),
            platform,
        );
        // The index writes into the same state the store mirrors into (one owner, one lock).
        // Its tasks hold only the state, never the store (and its file lock).
        let state = Arc::clone(store.state());
        let index = ContainerIndex::new(Arc::clone(&state));
        let tasks = index
            .start(&engine, instance_filter(&config), config.index_resync)
            .await
            .map_err(StartupError::Index)?;
        tracing::info!(
            engine = %engine.engine_version,
            api = %engine.api,
            staging = staging.is_some(),
            engine_sees_mounts = ?engine_sees_mounts,
            ossfs = %ossfs.as_ref().map_or_else(|| "not offered (no helper found)".to_owned(), |h| h.describe()),
            network = %config.network_mode,
            roots = roots.len(),
            "docker runtime ready"
        );
        let runtime = Self {
            engine,
            config,
            state,
            store,
            staging,
            roots: Arc::new(roots),
            ossfs,
            index,
            _index_tasks: tasks,
            capabilities,
            volume_lock: tokio::sync::Mutex::new(()),
            nonces: std::sync::atomic::AtomicU64::new(0),
            execd: super::execd::ExecdArchives::default(),
        };
        runtime.reconcile().await;
        Ok(runtime)
    }

    /// Rolls back creates a crash interrupted, releases records whose container is gone only
    /// when they never finished creating, removes Berth containers that no record owns and
    /// that never started, and releases staging mounts no record owns.
    async fn reconcile(&self) {
        let records = match self.store.all() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "reconcile: cannot read the store");
                return;
            }
        };
        let mut known = BTreeSet::new();
        for record in &records {
            match record.phase {
                Phase::Creating => {
                    tracing::warn!(sandbox = %record.id, "reconcile: rolling back a create that did not finish");
                    self.rollback(record).await;
                }
                Phase::Deleting => {
                    tracing::warn!(sandbox = %record.id, "reconcile: finishing a delete that did not finish");
                    let id = SandboxId::new(&record.id).unwrap_or_else(|_| super::unreachable_id());
                    if let Err(e) = self.delete_stored(&id, record).await {
                        // Kept, still `Deleting`: a delete through the API retries it.
                        tracing::error!(sandbox = %record.id, error = %e, "reconcile: the delete failed again");
                        known.insert(record.id.clone());
                    }
                }
                Phase::Created => {
                    known.insert(record.id.clone());
                }
            }
        }
        // This instance's containers with no finished record that never started.
        if let Ok(containers) = self
            .engine
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(instance_filter(&self.config)),
                ..Default::default()
            }))
            .await
        {
            for c in containers {
                let Some(sandbox) = c.labels.as_ref().and_then(|l| l.get(LABEL_ID)) else {
                    continue;
                };
                let never_started = matches!(
                    self.index.get(sandbox).map(|v| v.status),
                    Some(ContainerStatus::Created)
                );
                if !known.contains(sandbox) && never_started {
                    tracing::warn!(%sandbox, "reconcile: removing a container that was created but never started");
                    let options = RemoveContainerOptions {
                        force: true,
                        v: false,
                        link: false,
                    };
                    let _ = self
                        .engine
                        .docker
                        .remove_container(c.id.as_deref().unwrap_or_default(), Some(options))
                        .await;
                    self.index.remove(sandbox);
                }
            }
        }
        self.sweep_execd_sources().await;
        if let Some(area) = &self.staging {
            let area = Arc::clone(area);
            // A walk of the staging area and unmounts: off the async threads.
            let _ = blocking(move || release_stale_staging(&area, &known)).await;
        }
        self.reconcile_ossfs().await;
        let _guard = self.volume_lock.lock().await;
        if let Err(e) = self.sweep_volumes().await {
            tracing::error!(error = %e, "reconcile: volume sweep failed");
        }
    }
}

/// Releases the staging mounts of sandboxes that have no finished record.
fn release_stale_staging(area: &StagingArea, known: &BTreeSet<String>) {
    match area.sandboxes() {
        Ok(staged) => {
            for sandbox in staged.into_iter().filter(|s| !known.contains(s)) {
                if SandboxId::new(&sandbox).is_ok() {
                    tracing::warn!(%sandbox, "reconcile: releasing stale staging mounts");
                    if let Err(e) = area.release_sandbox(&sandbox) {
                        tracing::error!(%sandbox, error = %e, "reconcile: releasing stale staging mounts failed");
                    }
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "reconcile: cannot list staging mounts"),
    }
}
