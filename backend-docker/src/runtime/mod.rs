//! `DockerRuntime`: the `Runtime` over the Docker Engine API (see ARCHITECTURE.md, "Map").
//!
//! Reads (get, list) come from the runtime's one in-memory state — records mirrored by the
//! store, container views fed by the index — never from a Docker call or the disk
//! (ARCHITECTURE.md, "Reads never call the engine"). Writes go to Docker, then to the index at
//! once. Creates record their intent in the store before making anything, and roll back
//! everything they made on any failure ("Record before objects", "Nothing half-made").

mod create;
mod execd;
mod named_volumes;
mod ossfs_mounts;
mod startup;
pub(crate) mod step_times;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use berth_core::model::{
    HostPath, MetadataKey, MetadataPatch, MetadataValue, SandboxId, SandboxRecord, SandboxState,
    SandboxStatus,
};
use berth_core::runtime::{
    Capabilities, CreateSandbox, ListSelection, ListedPage, RenderedSandbox, Runtime, RuntimeError,
};
use berth_core::wire;
use bollard::query_parameters::{InspectContainerOptions, RemoveContainerOptions};
use chrono::{DateTime, Utc};

use crate::config::DockerConfig;
use crate::engine::Engine;
use crate::index::{ContainerIndex, ContainerStatus, IndexTasks};
use crate::render::container_name;
use crate::safe_path::TrustedRoot;
use crate::safe_path::staging::StagingArea;
use crate::state::{ExpiryClaim, SharedState};
use crate::store::{Store, StoreError, StoredSandbox};

pub use startup::StartupError;

/// The Docker runtime.
#[derive(Debug)]
pub struct DockerRuntime {
    engine: Engine,
    config: DockerConfig,
    /// Records, container views and the list order: one owner, one lock (ARCHITECTURE.md,
    /// "One owner of runtime state"). The store and the index write it; reads only read it.
    state: Arc<SharedState>,
    store: Arc<Store>,
    /// `None` when the server cannot mount (not root): host and pvc-subPath volumes are then
    /// refused unless `allow_unstaged_paths`.
    staging: Option<Arc<StagingArea>>,
    roots: Arc<Vec<(HostPath, TrustedRoot)>>,
    /// `None` when ossfs is not offered (no helper installed, or no staging).
    ossfs: Option<ossfs_mounts::OssfsHost>,
    index: ContainerIndex,
    _index_tasks: IndexTasks,
    capabilities: Capabilities,
    /// Serialises decisions about named volumes (create, reference count, removal).
    volume_lock: tokio::sync::Mutex<()>,
    nonces: AtomicU64,
    /// The injected agent's archive per platform, read once (`runtime.execd_image`).
    execd: execd::ExecdArchives,
}

fn store_error(e: StoreError) -> RuntimeError {
    RuntimeError::Internal {
        context: "state store".into(),
        detail: e.to_string(),
    }
}

/// Maps a Docker API error: an unreachable or silent engine is `Unavailable`, anything else
/// `Internal`. Answers that are the request's fault are classified before this, by
/// `create::refusal`.
fn docker_error(context: &str) -> impl FnOnce(bollard::errors::Error) -> RuntimeError + '_ {
    move |e| match e {
        // bollard's client timeout (set to `docker.engine_timeout_seconds` at connect).
        bollard::errors::Error::RequestTimeoutError => RuntimeError::Unavailable {
            detail: format!(
                "{context}: the Docker Engine did not answer within docker.engine_timeout_seconds"
            ),
        },
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => RuntimeError::Internal {
            context: context.to_owned(),
            detail: format!("engine answered {status_code}: {message}"),
        },
        other if is_connection_error(&other) => RuntimeError::Unavailable {
            detail: format!("{context}: {}", berth_core::runtime::with_causes(&other)),
        },
        other => RuntimeError::Internal {
            context: context.to_owned(),
            detail: other.to_string(),
        },
    }
}

/// The connection to the engine failed (refused, cut, lost before the answer): the runtime is
/// unavailable for now — retried, the call may well succeed — not broken.
fn is_connection_error(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::HyperResponseError { .. }
            | bollard::errors::Error::HyperLegacyError { .. }
            | bollard::errors::Error::IOError { .. }
            | bollard::errors::Error::RequestTimeoutError
            | bollard::errors::Error::SocketNotFoundError(_)
    )
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerRuntime {
    /// The connected engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    fn next_nonce(&self, id: &SandboxId) -> String {
        let n = self.nonces.fetch_add(1, Ordering::Relaxed);
        format!(
            "{id}-{}-{n}",
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        )
    }

    fn stored(&self, id: &SandboxId) -> Result<StoredSandbox, RuntimeError> {
        self.store
            .get(id.as_str())
            .map_err(store_error)?
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_string() })
    }

    /// The sandbox as reported: the stored record with the index's view of its container.
    fn record_of(&self, stored: &StoredSandbox) -> SandboxRecord {
        self.state.read(|s| record_with(stored, s.view(&stored.id)))
    }

    /// Test hook: the store's next commit blocks until the returned hold is released.
    #[cfg(feature = "test-hooks")]
    pub fn hold_next_store_commit(&self) -> crate::store::CommitHold {
        self.store.hold_next_commit()
    }
}

/// The sandbox as reported, from its stored record and its container's view in the index.
fn record_with(
    stored: &StoredSandbox,
    view: Option<&crate::index::ContainerView>,
) -> SandboxRecord {
    // Milliseconds, like every other timestamp Berth reports.
    let at = view
        .and_then(|v| v.changed_at)
        .map(|t| chrono::SubsecRound::trunc_subsecs(t, 3))
        .or(Some(stored.created_at));
    let status = match (stored.phase, view.map(|v| v.status)) {
        (crate::store::Phase::Deleting, _) => SandboxStatus {
            state: SandboxState::Stopping,
            reason: Some("deleting".into()),
            message: Some("the sandbox is being deleted".into()),
            last_transition_at: at,
        },
        (crate::store::Phase::Creating, _) | (_, Some(ContainerStatus::Created)) => {
            SandboxStatus::new(SandboxState::Pending, stored.created_at)
        }
        (_, Some(ContainerStatus::Running)) => {
            SandboxStatus::new(SandboxState::Running, at.unwrap_or(stored.created_at))
        }
        (_, Some(ContainerStatus::Paused)) => {
            SandboxStatus::new(SandboxState::Paused, at.unwrap_or(stored.created_at))
        }
        (
            _,
            Some(ContainerStatus::Exited {
                code: 0,
                oom_killed: false,
            }),
        ) => SandboxStatus {
            state: SandboxState::Terminated,
            reason: Some("exited".into()),
            message: Some("the entry process exited with code 0".into()),
            last_transition_at: at,
        },
        (_, Some(ContainerStatus::Exited { code, oom_killed })) => SandboxStatus {
            state: SandboxState::Failed,
            reason: Some(
                if oom_killed {
                    "oom_killed"
                } else {
                    "exited_with_error"
                }
                .into(),
            ),
            message: Some(if oom_killed {
                format!(
                    "the entry process was killed for exceeding its memory limit (exit code {code})"
                )
            } else {
                format!("the entry process exited with code {code}")
            }),
            last_transition_at: at,
        },
        (_, Some(ContainerStatus::Gone) | None) => SandboxStatus {
            state: SandboxState::Failed,
            reason: Some("container_missing".into()),
            message: Some(format!(
                "container {} no longer exists; delete the sandbox to release its volumes",
                container_name_str(&stored.id)
            )),
            last_transition_at: at,
        },
    };
    debug_assert_eq!(
        status.state,
        crate::state::sandbox_state(stored.phase, view.map(|v| v.status)),
        "list_page and get disagree"
    );
    SandboxRecord {
        id: SandboxId::new(&stored.id).unwrap_or_else(|_| unreachable_id()),
        image: stored.image.clone(),
        platform: stored.platform,
        entrypoint: stored.entrypoint.clone(),
        metadata: stored
            .metadata
            .iter()
            .filter_map(|(k, v)| Some((MetadataKey::new(k).ok()?, MetadataValue::new(v).ok()?)))
            .collect(),
        status,
        created_at: stored.created_at,
        expires_at: stored.expires_at,
        volumes: stored.volumes.iter().map(|v| v.report.clone()).collect(),
    }
}

impl DockerRuntime {
    /// Removes the container and releases everything the record names.
    async fn delete_stored(
        &self,
        id: &SandboxId,
        stored: &StoredSandbox,
    ) -> Result<(), RuntimeError> {
        let mut steps = step_times::StepTimes::start("delete");
        // The intent is committed first: a crash from here on is finished by the next start
        // (`reconcile`), never left as a stopped container under a live record.
        if stored.phase != crate::store::Phase::Deleting {
            let mut deleting = stored.clone();
            deleting.phase = crate::store::Phase::Deleting;
            self.store.put(&deleting).await.map_err(store_error)?;
        }
        steps.mark("store");
        self.remove_container(id).await?;
        self.index.remove(id.as_str());
        steps.mark("remove_container");
        let released = self.release_everything(stored).await;
        steps.mark("release");
        steps.log(id.as_str());
        released
    }

    async fn remove_container(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            v: false,
            link: false,
        };
        match self
            .engine
            .bounded(
                "removing container",
                self.engine
                    .docker
                    .remove_container(&container_name(id), Some(options)),
            )
            .await?
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // An earlier removal the engine still carries out (its client — this server before
            // a crash — went away): done once the container is gone.
            Err(e) if is_removal_in_progress(&e) => self.until_container_gone(id).await,
            Err(e) => Err(docker_error("removing container")(e)),
        }
    }

    /// Waits (within the engine timeout) until the engine no longer knows `id`'s container.
    async fn until_container_gone(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        let deadline = tokio::time::Instant::now() + self.config.engine_timeout;
        loop {
            let inspected = self
                .engine
                .bounded(
                    "waiting for a container's removal",
                    self.engine
                        .docker
                        .inspect_container(&container_name(id), None::<InspectContainerOptions>),
                )
                .await?;
            match inspected {
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(docker_error("waiting for a container's removal")(e)),
                Ok(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(RuntimeError::Internal {
                        context: "removing container".into(),
                        detail: format!(
                            "the engine's removal of {} has not ended within docker.engine_timeout_seconds",
                            container_name(id)
                        ),
                    });
                }
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }
}

/// The engine's 409 for a container another request is already removing.
fn is_removal_in_progress(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 409, message }
            if message.contains("already in progress")
    )
}

fn container_name_str(id: &str) -> String {
    format!("sandbox-{id}")
}

/// Ids in the store were validated when stored; a record failing now was damaged on disk.
fn unreachable_id() -> SandboxId {
    SandboxId::new("invalid-stored-id").unwrap_or_else(|_| unreachable!("a constant DNS label"))
}

/// An endpoint without extra headers.
fn address(host: &str, port: u16) -> wire::Endpoint {
    wire::Endpoint {
        endpoint: format!("{host}:{port}"),
        headers: None,
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        self.engine
            .bounded("pinging the engine", self.engine.docker.ping())
            .await?
            .map(|_| ())
            .map_err(|e| RuntimeError::Unavailable {
                detail: e.to_string(),
            })
    }

    async fn create(&self, request: CreateSandbox) -> Result<SandboxRecord, RuntimeError> {
        self.create_sandbox(request).await
    }

    async fn get(&self, id: &SandboxId) -> Result<SandboxRecord, RuntimeError> {
        self.state
            .read(|s| {
                s.record(id.as_str())
                    .map(|stored| record_with(stored, s.view(id.as_str())))
            })
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_string() })
    }

    /// Reads the page from the state's list index (ordered, with postings per state and
    /// metadata pair) and builds full records only for the page.
    async fn list_page(&self, selection: &ListSelection) -> Result<ListedPage, RuntimeError> {
        // One read of the one state: the page, its records and their containers agree.
        Ok(self.state.read(|state| {
            let (ids, total) = state.listing().select(selection);
            let items = ids
                .into_iter()
                .filter_map(|id| state.record(id))
                .map(|s| record_with(s, state.view(&s.id)))
                .collect();
            ListedPage { items, total }
        }))
    }

    /// From the state's expiry index, not a scan.
    async fn next_expiry(&self) -> Result<Option<DateTime<Utc>>, RuntimeError> {
        Ok(self.state.read(|state| state.next_expiry()))
    }

    /// From the state's expiry index, not a scan.
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<SandboxId>, RuntimeError> {
        Ok(self.state.read(|state| {
            state
                .due(now, limit)
                .into_iter()
                .filter_map(|id| SandboxId::new(id).ok())
                .collect()
        }))
    }

    /// From the list index's per-state postings, not a scan.
    async fn count_by_state(
        &self,
    ) -> Result<std::collections::BTreeMap<SandboxState, usize>, RuntimeError> {
        Ok(self.state.read(|state| state.count_by_state()))
    }

    async fn list(&self) -> Result<Vec<SandboxRecord>, RuntimeError> {
        Ok(self.state.read(|state| {
            state
                .records()
                .map(|s| record_with(s, state.view(&s.id)))
                .collect()
        }))
    }

    async fn delete(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        let stored = self.stored(id)?;
        self.delete_stored(id, &stored).await
    }

    /// The expiry check and the claim happen on the store's writer, in order with renewals'
    /// commits: a renewal committed first wins; one arriving after finds the sandbox gone.
    async fn delete_if_expired(
        &self,
        id: &SandboxId,
        now: DateTime<Utc>,
    ) -> Result<bool, RuntimeError> {
        let stored = match self
            .store
            .claim_expired(id.as_str(), now)
            .await
            .map_err(store_error)?
        {
            ExpiryClaim::Missing => return Err(RuntimeError::NotFound { id: id.to_string() }),
            ExpiryClaim::NotExpired => return Ok(false),
            ExpiryClaim::Claimed(stored) => stored,
        };
        match self.delete_stored(id, &stored).await {
            Ok(()) => Ok(true),
            Err(e) => {
                self.store.release_claim(id.as_str());
                Err(e)
            }
        }
    }

    async fn pause(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.transition(
            id,
            ContainerStatus::Running,
            ContainerStatus::Paused,
            "pause",
        )
        .await
    }

    async fn resume(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.transition(
            id,
            ContainerStatus::Paused,
            ContainerStatus::Running,
            "resume",
        )
        .await
    }

    async fn renew(
        &self,
        id: &SandboxId,
        expires_at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, RuntimeError> {
        // Read and written on the store's writer: never over a reaper's claim.
        if self
            .store
            .set_expiry(id.as_str(), expires_at)
            .await
            .map_err(store_error)?
        {
            Ok(expires_at)
        } else {
            Err(RuntimeError::NotFound { id: id.to_string() })
        }
    }

    async fn patch_metadata(
        &self,
        id: &SandboxId,
        patch: &MetadataPatch,
    ) -> Result<SandboxRecord, RuntimeError> {
        let mut stored = self.stored(id)?;
        let mut record = self.record_of(&stored);
        patch
            .apply_checked(&mut record.metadata)
            .map_err(RuntimeError::Rejected)?;
        stored.metadata = record
            .metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.store.put(&stored).await.map_err(store_error)?;
        Ok(self.record_of(&stored))
    }

    async fn endpoint(&self, id: &SandboxId, port: u16) -> Result<wire::Endpoint, RuntimeError> {
        let stored = self.running_stored(id, port)?;
        let host = &self.config.publish_host;
        if let Some(host_port) = stored.ports.get(&port) {
            return Ok(address(host, *host_port));
        }
        if self.config.network_mode == "host" {
            return Ok(address(host, port));
        }
        self.container_endpoint(id, port).await
    }

    /// The container's own address on its network, where it has one and
    /// `docker.proxy_via_published_ports` is off: a published port is served by the engine's
    /// forwarder (`docker-proxy`), a second relay behind the server's.
    async fn proxy_endpoint(
        &self,
        id: &SandboxId,
        port: u16,
    ) -> Result<wire::Endpoint, RuntimeError> {
        if self.config.proxy_via_published_ports || self.config.network_mode == "host" {
            return self.endpoint(id, port).await;
        }
        self.running_stored(id, port)?;
        self.container_endpoint(id, port).await
    }

    async fn render(&self, request: &CreateSandbox) -> Result<RenderedSandbox, RuntimeError> {
        self.render_sandbox(request).await
    }
}

impl DockerRuntime {
    /// The stored sandbox, if its container runs (or is paused): a port of anything else has
    /// no endpoint.
    fn running_stored(&self, id: &SandboxId, port: u16) -> Result<StoredSandbox, RuntimeError> {
        let stored = self.stored(id)?;
        let status = self.index.get(id.as_str()).map(|v| v.status);
        if !matches!(
            status,
            Some(ContainerStatus::Running | ContainerStatus::Paused)
        ) {
            return Err(RuntimeError::EndpointNotAvailable {
                id: id.clone(),
                port,
                detail: "the sandbox is not running".into(),
            });
        }
        Ok(stored)
    }

    /// `port` at the container's address on its network (an engine call).
    async fn container_endpoint(
        &self,
        id: &SandboxId,
        port: u16,
    ) -> Result<wire::Endpoint, RuntimeError> {
        let inspect = self
            .engine
            .bounded(
                "inspecting container",
                self.engine
                    .docker
                    .inspect_container(&container_name(id), None::<InspectContainerOptions>),
            )
            .await?
            .map_err(docker_error("inspecting container"))?;
        let ip = inspect
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|networks| {
                networks
                    .values()
                    .find_map(|n| n.ip_address.clone().filter(|ip| !ip.is_empty()))
            });
        match ip {
            Some(ip) => Ok(address(&ip, port)),
            None => Err(RuntimeError::EndpointNotAvailable {
                id: id.clone(),
                port,
                detail: format!(
                    "port {port} is not published and the container has no address on network {}",
                    self.config.network_mode
                ),
            }),
        }
    }

    async fn transition(
        &self,
        id: &SandboxId,
        from: ContainerStatus,
        to: ContainerStatus,
        action: &'static str,
    ) -> Result<(), RuntimeError> {
        let stored = self.stored(id)?;
        let current = self.record_of(&stored).status.state;
        let status = self.index.get(id.as_str()).map(|v| v.status);
        if status != Some(from) {
            return Err(RuntimeError::InvalidState {
                id: id.clone(),
                state: current,
                action,
            });
        }
        let name = container_name(id);
        let result = match to {
            ContainerStatus::Paused => {
                self.engine
                    .bounded(action, self.engine.docker.pause_container(&name))
                    .await?
            }
            _ => {
                self.engine
                    .bounded(action, self.engine.docker.unpause_container(&name))
                    .await?
            }
        };
        match result {
            Ok(()) => {
                self.index.set_status(id.as_str(), to);
                Ok(())
            }
            // The engine refused because the state changed under us (409): report the state.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Err(RuntimeError::InvalidState {
                id: id.clone(),
                state: current,
                action,
            }),
            Err(e) => Err(docker_error(action)(e)),
        }
    }
}
