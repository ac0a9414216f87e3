//! The in-memory view of Berth's containers that gets and lists are answered from, so reads make
//! no Docker list call. It is fed by the Docker events stream (subscribed before the initial
//! list, so nothing between the two is missed), corrected by Berth's own writes at once
//! (read-your-writes), and resynchronised by a full list periodically.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bollard::models::{ContainerStateStatusEnum, ContainerSummaryStateEnum, EventMessage};
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};
use futures_util::StreamExt;

use crate::engine::Engine;
use crate::render::LABEL_ID;

/// A container's lifecycle state as the index knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Paused (Docker still reports `Running=true` for these).
    Paused,
    /// The entry process ended.
    Exited {
        /// Its exit code.
        code: i64,
        /// Whether the kernel's OOM killer ended it.
        oom_killed: bool,
    },
    /// Being removed, or dead.
    Gone,
}

/// What the index holds for one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    /// Docker's container id.
    pub container_id: String,
    /// Its state.
    pub status: ContainerStatus,
    /// When the state last changed (event time), if known.
    pub changed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The background tasks feeding an index; dropping this stops them.
#[derive(Debug)]
pub struct IndexTasks {
    pump: tokio::task::JoinHandle<()>,
    apply: tokio::task::JoinHandle<()>,
}

impl Drop for IndexTasks {
    fn drop(&mut self) {
        self.pump.abort();
        self.apply.abort();
    }
}

/// Told of every status change (`None`: the container is gone), under the index's write lock,
/// so changes arrive in the order they happened.
type ObserverFn = dyn Fn(&str, Option<ContainerStatus>) + Send + Sync;

/// The index. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct ContainerIndex {
    views: Arc<RwLock<HashMap<String, ContainerView>>>,
    observer: Arc<std::sync::OnceLock<Box<ObserverFn>>>,
}

impl std::fmt::Debug for ContainerIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerIndex")
            .field("views", &self.views)
            .finish_non_exhaustive()
    }
}

impl ContainerIndex {
    /// Sets the one observer of status changes (before [`ContainerIndex::start`], so the
    /// initial list is reported too). It runs under the index's write lock: it may take other
    /// locks, but nothing may hold those while taking the index's.
    pub fn observe(
        &self,
        observer: impl Fn(&str, Option<ContainerStatus>) + Send + Sync + 'static,
    ) {
        if self.observer.set(Box::new(observer)).is_err() {
            tracing::error!("the container index already has an observer");
        }
    }

    fn notify(&self, sandbox_id: &str, status: Option<ContainerStatus>) {
        if let Some(observer) = self.observer.get() {
            observer(sandbox_id, status);
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, ContainerView>> {
        self.views
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The view of one sandbox.
    pub fn get(&self, sandbox_id: &str) -> Option<ContainerView> {
        self.views
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(sandbox_id)
            .cloned()
    }

    /// Runs `f` on all views, under the read lock.
    pub fn with_views<R>(&self, f: impl FnOnce(&HashMap<String, ContainerView>) -> R) -> R {
        f(&self
            .views
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The status of one sandbox's container, without copying the view.
    pub fn status(&self, sandbox_id: &str) -> Option<ContainerStatus> {
        self.views
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(sandbox_id)
            .map(|v| v.status)
    }

    /// Records a state Berth itself just caused.
    pub fn set(&self, sandbox_id: &str, view: ContainerView) {
        let mut views = self.write();
        let status = view.status;
        views.insert(sandbox_id.to_owned(), view);
        self.notify(sandbox_id, Some(status));
    }

    /// Changes the status of a known sandbox.
    pub fn set_status(&self, sandbox_id: &str, status: ContainerStatus) {
        let mut views = self.write();
        if let Some(view) = views.get_mut(sandbox_id) {
            view.status = status;
            view.changed_at = Some(chrono::Utc::now());
            self.notify(sandbox_id, Some(status));
        }
    }

    /// Forgets a sandbox.
    pub fn remove(&self, sandbox_id: &str) {
        let mut views = self.write();
        if views.remove(sandbox_id).is_some() {
            self.notify(sandbox_id, None);
        }
    }

    /// Subscribes to events, then lists, then keeps applying events and resyncing every
    /// `resync` in background tasks (stopped when the returned guard is dropped). Returns once
    /// the initial list is applied.
    pub async fn start(
        &self,
        engine: &Engine,
        filter: HashMap<String, Vec<String>>,
        resync: Duration,
    ) -> Result<IndexTasks, bollard::errors::Error> {
        // The subscription replays from a second before the list: the request goes out when the
        // stream is first polled, and nothing that happens meanwhile may be missed. Events the
        // list already reflects are applied again, which is harmless.
        let since = (chrono::Utc::now().timestamp() - 1).to_string();
        let mut event_filter = filter.clone();
        event_filter.insert("type".to_owned(), vec!["container".to_owned()]);
        let mut events = engine.docker.events(Some(EventsOptions {
            since: Some(since),
            filters: Some(event_filter),
            ..Default::default()
        }));
        // The subscription is made when the stream is first polled; buffer what arrives while
        // the initial list runs.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<EventMessage>();
        let pump = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    Ok(event) => {
                        if tx.send(event).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "docker events stream ended; the periodic resync keeps the index correct");
                        break;
                    }
                }
            }
        });
        self.resync(engine, &filter).await?;
        let index = self.clone();
        let engine = engine.clone();
        let apply = tokio::spawn(async move {
            let mut tick = tokio::time::interval(resync);
            tick.tick().await;
            loop {
                tokio::select! {
                    event = rx.recv() => match event {
                        Some(event) => index.apply(&event),
                        None => {
                            // The stream ended: rely on resyncs alone.
                            tick.tick().await;
                            if let Err(e) = index.resync(&engine, &filter).await {
                                tracing::warn!(error = %e, "index resync failed");
                            }
                        }
                    },
                    _ = tick.tick() => {
                        if let Err(e) = index.resync(&engine, &filter).await {
                            tracing::warn!(error = %e, "index resync failed");
                        }
                    }
                }
            }
        });
        Ok(IndexTasks { pump, apply })
    }

    /// Replaces the index with a fresh list (one list call, plus an inspect per exited
    /// container for its exit code).
    pub async fn resync(
        &self,
        engine: &Engine,
        filter: &HashMap<String, Vec<String>>,
    ) -> Result<(), bollard::errors::Error> {
        let containers = engine
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filter.clone()),
                ..Default::default()
            }))
            .await?;
        let mut fresh = HashMap::new();
        for c in containers {
            let (Some(id), Some(sandbox)) = (
                c.id.clone(),
                c.labels.as_ref().and_then(|l| l.get(LABEL_ID)).cloned(),
            ) else {
                continue;
            };
            let status = match c.state {
                Some(ContainerSummaryStateEnum::CREATED) => ContainerStatus::Created,
                Some(
                    ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING,
                ) => ContainerStatus::Running,
                Some(ContainerSummaryStateEnum::PAUSED) => ContainerStatus::Paused,
                Some(ContainerSummaryStateEnum::EXITED) => {
                    let state = engine
                        .docker
                        .inspect_container(&id, None::<InspectContainerOptions>)
                        .await?
                        .state
                        .unwrap_or_default();
                    ContainerStatus::Exited {
                        code: state.exit_code.unwrap_or(-1),
                        oom_killed: state.oom_killed.unwrap_or(false),
                    }
                }
                _ => ContainerStatus::Gone,
            };
            fresh.insert(
                sandbox,
                ContainerView {
                    container_id: id,
                    status,
                    changed_at: None,
                },
            );
        }
        let mut views = self.write();
        for sandbox in views.keys() {
            if !fresh.contains_key(sandbox) {
                self.notify(sandbox, None);
            }
        }
        for (sandbox, view) in &fresh {
            if views.get(sandbox).map(|v| v.status) != Some(view.status) {
                self.notify(sandbox, Some(view.status));
            }
        }
        *views = fresh;
        Ok(())
    }

    /// Applies one container event.
    pub fn apply(&self, event: &EventMessage) {
        let Some(actor) = &event.actor else { return };
        let Some(sandbox) = actor
            .attributes
            .as_ref()
            .and_then(|a| a.get(LABEL_ID))
            .cloned()
        else {
            return;
        };
        let container_id = actor.id.clone().unwrap_or_default();
        let at = event
            .time
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0));
        let mut views = self.write();
        let action = event.action.as_deref().unwrap_or_default();
        let previous = views.get(&sandbox).map(|v| v.status);
        let status = match action {
            "create" => ContainerStatus::Created,
            "start" | "unpause" | "restart" => ContainerStatus::Running,
            "pause" => ContainerStatus::Paused,
            "oom" => match previous {
                Some(ContainerStatus::Exited { code, .. }) => ContainerStatus::Exited {
                    code,
                    oom_killed: true,
                },
                // Remembered until the die event that follows.
                _ => ContainerStatus::Exited {
                    code: 137,
                    oom_killed: true,
                },
            },
            "die" => {
                let code = actor
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get("exitCode"))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(-1);
                let oom_killed = matches!(
                    previous,
                    Some(ContainerStatus::Exited {
                        oom_killed: true,
                        ..
                    })
                );
                ContainerStatus::Exited { code, oom_killed }
            }
            "destroy" => {
                // Only forget the container the event is about (a new one may have the same sandbox id).
                if views
                    .get(&sandbox)
                    .is_some_and(|v| v.container_id == container_id)
                {
                    views.remove(&sandbox);
                    self.notify(&sandbox, None);
                }
                return;
            }
            _ => return,
        };
        self.notify(&sandbox, Some(status));
        views.insert(
            sandbox,
            ContainerView {
                container_id,
                status,
                changed_at: at,
            },
        );
    }
}

/// Maps a full inspect state (used right after Berth's own writes).
pub fn status_of(state: &bollard::models::ContainerState) -> ContainerStatus {
    match state.status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerStatus::Created,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerStatus::Paused,
        Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::RESTARTING) => {
            ContainerStatus::Running
        }
        Some(ContainerStateStatusEnum::EXITED) => ContainerStatus::Exited {
            code: state.exit_code.unwrap_or(-1),
            oom_killed: state.oom_killed.unwrap_or(false),
        },
        _ => ContainerStatus::Gone,
    }
}
