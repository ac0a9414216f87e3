//! The in-memory view of Berth's containers that gets and lists are answered from, so reads make
//! no Docker call (ARCHITECTURE.md, "Reads never call the engine"). It is fed by the Docker
//! events stream (subscribed before the initial list, so nothing between the two is missed;
//! re-subscribed with backoff when it ends, replaying the gap), corrected by Berth's own writes
//! at once (read-your-writes), and resynchronised by a full list periodically and after every
//! gap in the stream. Its data lives in the runtime's one [`SharedState`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{ContainerStateStatusEnum, ContainerSummaryStateEnum, EventMessage};
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};
use futures_util::StreamExt;

use crate::engine::Engine;
use crate::render::LABEL_ID;
use crate::state::SharedState;

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

/// What the events pump hands the apply task, in order.
#[derive(Debug)]
enum Input {
    /// A container event.
    Event(EventMessage),
    /// The stream was re-subscribed after a gap: list everything again.
    Resync,
}

/// First wait before re-subscribing to a stream that ended; doubled up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between re-subscriptions. A stream that stayed up this long was healthy: the
/// next wait starts again from [`RECONNECT_FIRST`].
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A Docker `since` value for an event: its time with nanoseconds when the engine gave them.
fn event_since(event: &EventMessage) -> Option<String> {
    match (event.time_nano, event.time) {
        (Some(nanos), _) => Some(format!(
            "{}.{:09}",
            nanos.div_euclid(1_000_000_000),
            nanos.rem_euclid(1_000_000_000)
        )),
        (None, Some(secs)) => Some(secs.to_string()),
        (None, None) => None,
    }
}

/// The container half of the runtime state: Berth's containers as the engine last reported
/// them, which gets and lists are answered from. It holds no data of its own: it is a handle on
/// the runtime's [`SharedState`] (one owner, one lock). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ContainerIndex {
    state: Arc<SharedState>,
}

impl ContainerIndex {
    /// An index writing into `state`.
    pub fn new(state: Arc<SharedState>) -> Self {
        Self { state }
    }

    /// The view of one sandbox.
    pub fn get(&self, sandbox_id: &str) -> Option<ContainerView> {
        self.state.read(|s| s.view(sandbox_id).cloned())
    }

    /// The status of one sandbox's container, without copying the view.
    pub fn status(&self, sandbox_id: &str) -> Option<ContainerStatus> {
        self.state.read(|s| s.view(sandbox_id).map(|v| v.status))
    }

    /// Records a state Berth itself just caused.
    pub fn set(&self, sandbox_id: &str, view: ContainerView) {
        self.state.write(|s| s.set_view(sandbox_id, view));
    }

    /// Changes the status of a known sandbox.
    pub fn set_status(&self, sandbox_id: &str, status: ContainerStatus) {
        self.state.write(|s| s.set_status(sandbox_id, status));
    }

    /// Forgets a sandbox.
    pub fn remove(&self, sandbox_id: &str) {
        self.state.write(|s| s.remove_view(sandbox_id));
    }

    /// Subscribes to events, then lists, then keeps applying events and resyncing every
    /// `resync` in background tasks (stopped when the returned guard is dropped). Returns once
    /// the initial list is applied. A stream that ends is re-subscribed with backoff, replaying
    /// from the last event seen, followed by a full resync, so a gap loses nothing.
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
        // Buffers what arrives while the initial list (or a resync) runs.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Input>();
        let pump = tokio::spawn(pump_events(engine.clone(), event_filter, since, tx));
        self.resync(engine, &filter).await?;
        let index = self.clone();
        let engine = engine.clone();
        let apply = tokio::spawn(async move {
            let mut tick = tokio::time::interval(resync);
            tick.tick().await;
            loop {
                let resync_now = tokio::select! {
                    input = rx.recv() => match input {
                        Some(Input::Event(event)) => {
                            index.apply(&event);
                            false
                        }
                        Some(Input::Resync) => true,
                        // The pump only stops when the tasks are dropped.
                        None => return,
                    },
                    _ = tick.tick() => true,
                };
                if resync_now && let Err(e) = index.resync(&engine, &filter).await {
                    tracing::warn!(error = %e, "index resync failed");
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
        self.state.write(|s| s.replace_views(fresh));
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
        let action = event.action.as_deref().unwrap_or_default();
        let exit_code = || {
            actor
                .attributes
                .as_ref()
                .and_then(|a| a.get("exitCode"))
                .and_then(|c| c.parse().ok())
                .unwrap_or(-1)
        };
        self.state.write(|state| {
            let previous = state.view(&sandbox).map(|v| v.status);
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
                "die" => ContainerStatus::Exited {
                    code: exit_code(),
                    oom_killed: matches!(
                        previous,
                        Some(ContainerStatus::Exited {
                            oom_killed: true,
                            ..
                        })
                    ),
                },
                "destroy" => {
                    // Only forget the container the event is about (a new one may have the same
                    // sandbox id).
                    state.remove_view_of(&sandbox, &container_id);
                    return;
                }
                _ => return,
            };
            state.set_view(
                &sandbox,
                ContainerView {
                    container_id,
                    status,
                    changed_at: at,
                },
            );
        });
    }
}

/// Feeds `tx` with the engine's container events for as long as the index runs. A stream that
/// ends (the engine restarted, a proxy cut it, a read failed) is re-subscribed after a backoff,
/// with `since` at the last event seen so the engine replays the gap, and the apply task is
/// asked for a full resync for whatever the engine no longer keeps.
async fn pump_events(
    engine: Engine,
    filter: HashMap<String, Vec<String>>,
    mut since: String,
    tx: tokio::sync::mpsc::UnboundedSender<Input>,
) {
    // A subscription lives as long as the index: no per-call timeout on it (bollard's bounds
    // the wait for the response head, and a head held back would cut a quiet stream).
    let docker = engine.client_for_streams();
    let mut backoff = RECONNECT_FIRST;
    loop {
        let mut events = docker.events(Some(EventsOptions {
            since: Some(since.clone()),
            filters: Some(filter.clone()),
            ..Default::default()
        }));
        let subscribed = tokio::time::Instant::now();
        let ended = loop {
            match events.next().await {
                Some(Ok(event)) => {
                    if let Some(at) = event_since(&event) {
                        since = at;
                    }
                    if tx.send(Input::Event(event)).is_err() {
                        return;
                    }
                }
                Some(Err(e)) => break e.to_string(),
                None => break "the engine closed it".to_owned(),
            }
        };
        drop(events);
        if subscribed.elapsed() >= RECONNECT_MAX {
            backoff = RECONNECT_FIRST;
        }
        tracing::warn!(reason = %ended, retry_in_ms = backoff.as_millis(), %since, "docker events stream ended; re-subscribing");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_MAX);
        if tx.send(Input::Resync).is_err() {
            return;
        }
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
