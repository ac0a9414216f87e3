//! `KubernetesRuntime`: the `Runtime` over the Kubernetes API, one plain Pod per sandbox.
//!
//! Reads come from the sandbox table, fed by a Pod watch (kube-runtime's `watcher`, which
//! re-lists and reconnects with backoff); they wait for the first full listing, so after a
//! restart a live sandbox is never a 404. Writes to a Pod are merge patches carrying the
//! `resourceVersion` they were decided on; a conflict re-reads and retries a bounded number of
//! times. A create subscribes to the table's changes before it posts the Pod, then waits for
//! Running up to `kubernetes.start_timeout_seconds`; a start that cannot succeed (a missing
//! image, a configuration the kubelet refuses) fails at once, and everything made for it goes.
//!
//! A second watch, of the namespace's Warning events about Pods, puts the latest start warning
//! of each sandbox's Pod (`events`) into the table: a starting sandbox's status names what it
//! waits on (a volume that will not mount, no node that fits), and a create that reaches its
//! deadline fails with that cause (`SANDBOX::START_TIMEOUT`).

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use berth_core::ErrorCode;
use berth_core::model::{MetadataPatch, SandboxId, SandboxRecord, VolumeSource};
use berth_core::runtime::{
    Capabilities, CreateSandbox, ListSelection, ListedPage, RenderedSandbox, Runtime, RuntimeError,
};
use berth_core::validate::{Violation, Violations};
use berth_core::wire;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;

use crate::config::KubernetesConfig;
use crate::pod_state::{PodState, STATE_ANNOTATION};
use crate::pod_status::{StartFailure, StartProgress};
use crate::render::{
    LABEL_DELETE_WITH_SANDBOXES, LABEL_MANAGED_BY, MANAGED_BY, PodPlan, pod_name, render,
};
use crate::sandbox_table::SandboxTable;
use crate::sweep::{SweepReport, Sweeper};

/// How many times a write re-reads and retries after a `resourceVersion` conflict.
const CONFLICT_RETRIES: u32 = 8;

/// A pause before retry `attempt` (from 1) of a write that lost a race to another writer: random
/// within a window that doubles per attempt (10 ms, 20 ms, ... up to 640 ms), so writers that
/// collided do not collide again in lockstep.
fn conflict_backoff(attempt: u32) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let window_ms = 10u64 << attempt.saturating_sub(1).min(6);
    // A fresh `RandomState` is randomly keyed: enough entropy for jitter, no extra crate.
    let noise = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    std::time::Duration::from_millis(noise % window_ms + 1)
}

/// The Kubernetes runtime.
pub struct KubernetesRuntime {
    config: KubernetesConfig,
    pods: Api<Pod>,
    secrets: Api<Secret>,
    claims: Api<PersistentVolumeClaim>,
    table: Arc<RwLock<SandboxTable>>,
    /// Ids whose Pod the watch just reported; creates wait on it.
    changes: tokio::sync::broadcast::Sender<String>,
    /// True once the watch's first full listing is in the table.
    synced: tokio::sync::watch::Receiver<bool>,
    watch: tokio::task::JoinHandle<()>,
    /// Notified by the watch when the earliest expiry moved (the reaper's wake-up for changes
    /// made through other replicas).
    expiries_changed: Arc<tokio::sync::Notify>,
    /// The event watch feeding start warnings into the table.
    event_watch: tokio::task::JoinHandle<()>,
    /// Whether read-only mounts are sent with `recursiveReadOnly` (see
    /// [`recursive_read_only_decision`]).
    recursive_read_only: bool,
    /// Until when this replica holds the reaper's Lease (`None`: it does not).
    leads_until: Arc<std::sync::Mutex<Option<DateTime<Utc>>>>,
    lease: tokio::task::JoinHandle<()>,
    sweeper: Sweeper,
    sweeps: tokio::task::JoinHandle<()>,
    capabilities: Capabilities,
}

impl std::fmt::Debug for KubernetesRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRuntime")
            .field("namespace", &self.config.namespace)
            .finish_non_exhaustive()
    }
}

impl Drop for KubernetesRuntime {
    fn drop(&mut self) {
        self.watch.abort();
        self.event_watch.abort();
        self.lease.abort();
        self.sweeps.abort();
    }
}

fn api_error(context: &str) -> impl FnOnce(kube::Error) -> RuntimeError + '_ {
    move |e| match e {
        kube::Error::Api(status) => RuntimeError::Internal {
            context: context.to_owned(),
            detail: format!("API server answered {}: {}", status.code, status.message),
        },
        other => RuntimeError::Unavailable {
            detail: format!("{context}: {}", berth_core::runtime::with_causes(&other)),
        },
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == code)
}

fn rejected(field: String, code: ErrorCode, message: String) -> RuntimeError {
    RuntimeError::Rejected(Violations::one(Violation::new(field, code, message)))
}

/// Why the runtime cannot start; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The kubeconfig cannot be read or used.
    #[error("kubernetes.kubeconfig {path}: {detail}")]
    Kubeconfig {
        /// The file, or `(in-cluster / KUBECONFIG)`.
        path: String,
        /// What failed.
        detail: String,
    },
    /// The API server does not answer.
    #[error("the Kubernetes API server does not answer: {0}")]
    Unreachable(String),
}

impl KubernetesRuntime {
    /// Connects with `config.kubeconfig` (or the in-cluster configuration), asks the API
    /// server's version, and starts the runtime.
    pub async fn connect(config: KubernetesConfig) -> Result<Self, StartupError> {
        let shown = config.kubeconfig.as_ref().map_or_else(
            || "(in-cluster / KUBECONFIG)".to_owned(),
            |p| p.display().to_string(),
        );
        let fail = |detail: String| StartupError::Kubeconfig {
            path: shown.clone(),
            detail,
        };
        let client_config = match &config.kubeconfig {
            Some(path) => {
                let kubeconfig =
                    kube::config::Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
                kube::Config::from_custom_kubeconfig(
                    kubeconfig,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .map_err(|e| fail(e.to_string()))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| fail(e.to_string()))?,
        };
        let client = kube::client::ClientBuilder::try_from(client_config)
            .map_err(|e| fail(e.to_string()))?
            .with_layer(&crate::call_timeout::CallTimeoutLayer(config.api_timeout))
            .build();
        let version = client
            .apiserver_version()
            .await
            .map_err(|e| StartupError::Unreachable(e.to_string()))?;
        // Only a server recent enough to know the field is asked whether it keeps it.
        let probe = if may_know_recursive_read_only(&version.major, &version.minor) {
            Some(probe_recursive_read_only(&client, &config.namespace).await)
        } else {
            None
        };
        let recursive = recursive_read_only_decision(&version.major, &version.minor, probe);
        tracing::info!(
            server = %version.git_version,
            recursive_read_only = recursive.enabled,
            why = %recursive.why,
            "read-only mounts"
        );
        let mut capabilities = capabilities(&version.git_version, &recursive, &config);
        capabilities
            .details
            .insert("readOnly".to_owned(), recursive.why.clone());
        Ok(Self::start(client, config, capabilities, recursive.enabled))
    }

    /// Starts the runtime on `client` with `capabilities` (`recursive_read_only`: whether
    /// read-only mounts are sent with `recursiveReadOnly: Enabled`): the Pod and event watches
    /// of `config.namespace` begin at once; reads wait for the Pod watch's first full listing.
    pub fn start(
        client: kube::Client,
        config: KubernetesConfig,
        capabilities: Capabilities,
        recursive_read_only: bool,
    ) -> Self {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &config.namespace);
        let table = Arc::new(RwLock::new(SandboxTable::default()));
        let (changes, _) = tokio::sync::broadcast::channel(1024);
        let (synced_tx, synced) = tokio::sync::watch::channel(false);
        let expiries_changed = Arc::new(tokio::sync::Notify::new());
        let watch = tokio::spawn(watch_pods(
            pods.clone(),
            Arc::clone(&table),
            changes.clone(),
            synced_tx,
            Arc::clone(&expiries_changed),
        ));
        let event_watch = tokio::spawn(watch_events(
            Api::namespaced(client.clone(), &config.namespace),
            Arc::clone(&table),
        ));
        let leads_until = Arc::new(std::sync::Mutex::new(None));
        let lease = tokio::spawn(hold_lease(
            Api::namespaced(client.clone(), &config.namespace),
            config.lease_identity.clone(),
            Arc::clone(&leads_until),
        ));
        let sweeper = Sweeper {
            pods: pods.clone(),
            secrets: Api::namespaced(client.clone(), &config.namespace),
            claims: Api::namespaced(client.clone(), &config.namespace),
            table: Arc::clone(&table),
            grace: config.start_timeout,
        };
        let sweeps = tokio::spawn(sweep_while_leading(
            sweeper.clone(),
            Arc::clone(&leads_until),
        ));
        Self {
            sweeper,
            sweeps,
            leads_until,
            lease,
            secrets: Api::namespaced(client.clone(), &config.namespace),
            claims: Api::namespaced(client, &config.namespace),
            pods,
            config,
            table,
            changes,
            synced,
            watch,
            expiries_changed,
            event_watch,
            recursive_read_only,
            capabilities,
        }
    }

    /// Sweeps now what crashed creates left behind (the leader does it every
    /// [`SWEEP_EVERY`](crate::sweep::SWEEP_EVERY)).
    pub async fn sweep_now(&self) -> Result<SweepReport, RuntimeError> {
        self.wait_synced().await?;
        self.sweeper
            .sweep(Utc::now())
            .await
            .map_err(api_error("sweeping"))
    }

    /// Waits until the table holds the watch's first full listing.
    async fn wait_synced(&self) -> Result<(), RuntimeError> {
        let mut synced = self.synced.clone();
        synced
            .wait_for(|s| *s)
            .await
            .map(|_| ())
            .map_err(|_| RuntimeError::Unavailable {
                detail: "the Pod watch stopped".into(),
            })
    }

    fn read<R>(&self, f: impl FnOnce(&SandboxTable) -> R) -> R {
        f(&self
            .table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Which claims of `request` must be created; a missing claim that may not be, or a claim
    /// being deleted, is refused (all of them at once).
    async fn plan_claims(&self, request: &CreateSandbox) -> Result<BTreeSet<String>, RuntimeError> {
        let mut to_create = BTreeSet::new();
        let mut violations = Vec::new();
        for (i, volume) in request.spec.volumes.iter().enumerate() {
            let VolumeSource::Pvc(pvc) = &volume.source else {
                continue;
            };
            let name = pvc.claim_name.to_string();
            match self
                .claims
                .get_opt(&name)
                .await
                .map_err(api_error("reading claim"))?
            {
                Some(claim) if claim.metadata.deletion_timestamp.is_some() => {
                    violations.push(Violation::new(
                        format!("volumes[{i}].pvc.claimName"),
                        ErrorCode::VolumePvcBeingDeleted,
                        format!(
                            "claim {name:?} is being deleted (Terminating); wait until it is gone or use another"
                        ),
                    ));
                }
                Some(_) => {}
                None if pvc.create_if_not_exists => {
                    to_create.insert(name);
                }
                None => violations.push(Violation::new(
                    format!("volumes[{i}].pvc.claimName"),
                    ErrorCode::VolumePvcNotFound,
                    format!(
                        "claim {name:?} does not exist in namespace {} and createIfNotExists is false",
                        self.config.namespace
                    ),
                )),
            }
        }
        Violations::from_vec(violations).map_or(Ok(to_create), |v| Err(RuntimeError::Rejected(v)))
    }

    /// Removes a Pod that will not start, and what was made for it.
    async fn roll_back(&self, id: &SandboxId, secrets: &[String], claims: &[String]) {
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        if let Err(e) = self.pods.delete(&pod_name(id), &now).await
            && !is_status(&e, 404)
        {
            tracing::error!(sandbox = %id, error = %e, "rollback: deleting the Pod failed");
        }
        for name in secrets {
            if let Err(e) = self.secrets.delete(name, &DeleteParams::default()).await
                && !is_status(&e, 404)
            {
                tracing::error!(sandbox = %id, secret = %name, error = %e, "rollback: deleting a Secret failed");
            }
        }
        for name in claims {
            if let Err(e) = self.claims.delete(name, &DeleteParams::default()).await
                && !is_status(&e, 404)
            {
                tracing::error!(sandbox = %id, claim = %name, error = %e, "rollback: deleting a claim failed");
            }
        }
    }

    /// Removes claim `name` if it was made for sandbox `id` (its label says so) and no Pod owns
    /// it: a claim whose creation went unanswered. Deleted as read; read again when it changed
    /// in between (the volume binder updates a new claim within moments). One made for another
    /// sandbox, or taken by a Pod since, stays.
    async fn roll_back_claim_if_made_for(&self, id: &SandboxId, name: &str) {
        for attempt in 0..=CONFLICT_RETRIES {
            if attempt > 0 {
                tokio::time::sleep(conflict_backoff(attempt)).await;
            }
            let claim = match self.claims.get_opt(name).await {
                Ok(Some(claim)) => claim,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(sandbox = %id, claim = %name, error = %e, "rollback: reading a claim failed; the sweep removes it if it is an orphan");
                    return;
                }
            };
            let made_for_this = claim
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::render::LABEL_MADE_FOR))
                .is_some_and(|made_for| made_for == id.as_str());
            let owned = claim
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|o| !o.is_empty());
            if !made_for_this || owned || claim.metadata.deletion_timestamp.is_some() {
                return;
            }
            let as_read = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    resource_version: claim.metadata.resource_version.clone(),
                    uid: claim.metadata.uid.clone(),
                }),
                ..DeleteParams::default()
            };
            match self.claims.delete(name, &as_read).await {
                Ok(_) => return,
                Err(e) if is_status(&e, 404) => return,
                // Changed since the read: read it again.
                Err(e) if is_status(&e, 409) => {}
                Err(e) => {
                    tracing::error!(sandbox = %id, claim = %name, error = %e, "rollback: deleting a claim failed; the sweep removes it if it is an orphan");
                    return;
                }
            }
        }
        tracing::error!(sandbox = %id, claim = %name, "rollback: a claim kept changing; the sweep removes it if it is an orphan");
    }

    /// Makes every claim of `request` that Berth created with `deleteOnSandboxTermination`
    /// owned by the Pod too: the garbage collector removes such a claim with the last Pod that
    /// mounts it, not the first. The owner list is read and written with its resourceVersion.
    async fn own_shared_claims(
        &self,
        request: &CreateSandbox,
        pod: &Pod,
    ) -> Result<(), RuntimeError> {
        let claims: BTreeSet<String> = request
            .spec
            .volumes
            .iter()
            .filter_map(|v| match &v.source {
                VolumeSource::Pvc(pvc) => Some(pvc.claim_name.to_string()),
                _ => None,
            })
            .collect();
        let owner = owner_of(pod);
        for name in claims {
            let mut added = false;
            for attempt in 0..=CONFLICT_RETRIES {
                if attempt > 0 {
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                }
                let Some(claim) = self
                    .claims
                    .get_opt(&name)
                    .await
                    .map_err(api_error("reading a claim"))?
                else {
                    break;
                };
                let deleted_with_sandboxes = claim.metadata.labels.as_ref().is_some_and(|l| {
                    l.get(LABEL_DELETE_WITH_SANDBOXES).map(String::as_str) == Some("true")
                });
                if !deleted_with_sandboxes {
                    added = true;
                    break;
                }
                let mut owners = claim.metadata.owner_references.clone().unwrap_or_default();
                owners.push(owner.clone());
                let patch = serde_json::json!({"metadata": {
                    "resourceVersion": claim.metadata.resource_version,
                    "ownerReferences": owners,
                }});
                match self
                    .claims
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        added = true;
                        break;
                    }
                    Err(e) if is_status(&e, 409) => {}
                    Err(e) => return Err(api_error("adding an owner to a claim")(e)),
                }
            }
            if !added {
                return Err(RuntimeError::Conflict {
                    id: request.id.clone(),
                    detail: format!("claim {name:?} changed under {CONFLICT_RETRIES} retries"),
                });
            }
        }
        Ok(())
    }

    /// Makes every Secret owned by the Pod, so the garbage collector removes them with it.
    async fn own_secrets(&self, names: &[String], pod: &Pod) -> Result<(), RuntimeError> {
        let owner = owner_of(pod);
        for name in names {
            let patch = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
            self.secrets
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_error("making a Secret owned by its Pod"))?;
        }
        Ok(())
    }

    /// Waits for the Pod of `id` to run, fail, or pass the start deadline.
    async fn wait_running(
        &self,
        id: &SandboxId,
        spec: &berth_core::model::SandboxSpec,
        mut changes: tokio::sync::broadcast::Receiver<String>,
    ) -> Result<SandboxRecord, RuntimeError> {
        let deadline = tokio::time::Instant::now() + self.config.start_timeout;
        loop {
            let seen = self.read(|t| {
                t.get(id.as_str())
                    .map(|e| (e.start.clone(), e.record.clone()))
            });
            match seen {
                Some((StartProgress::Running, record)) => return Ok(record),
                Some((StartProgress::Failed(failure), record)) => {
                    return Err(match failure {
                        StartFailure::Image { detail } => RuntimeError::ImageNotFound {
                            image: record.image,
                            detail,
                        },
                        StartFailure::ContainerConfig { detail } => {
                            container_config_refusal(&detail, spec)
                        }
                        StartFailure::Ended { detail } => rejected(
                            "entrypoint".into(),
                            ErrorCode::SandboxInvalidParameter,
                            format!("the sandbox stopped while starting: {detail}"),
                        ),
                        StartFailure::SubPath(failure) => failure.to_error(spec),
                        StartFailure::Agent { code, detail } => {
                            rejected("runtime.execd_image".into(), code, detail)
                        }
                    });
                }
                _ => {}
            }
            let waited = tokio::time::timeout_at(deadline, async {
                loop {
                    match changes.recv().await {
                        Ok(changed) if changed == id.as_str() => return true,
                        Ok(_) => {}
                        // Missed some changes: look at the table again.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
                    }
                }
            })
            .await;
            match waited {
                Ok(true) => {}
                Ok(false) => {
                    return Err(RuntimeError::Unavailable {
                        detail: "the Pod watch stopped while a create waited".into(),
                    });
                }
                Err(_) => {
                    // The cause as the sandbox's status shows it now: the Pod's own, or the
                    // latest start warning reported for it.
                    let cause = self
                        .read(|t| {
                            t.get(id.as_str())
                                .and_then(|e| e.record.status.message.clone())
                        })
                        .map(|m| m.trim_end_matches([':', ' ']).to_owned())
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| {
                            "the Pod is not running and the cluster reported no cause".into()
                        });
                    return Err(RuntimeError::StartTimeout {
                        id: id.clone(),
                        limit: format!(
                            "kubernetes.start_timeout_seconds ({} s)",
                            self.config.start_timeout.as_secs()
                        ),
                        cause,
                    });
                }
            }
        }
    }

    /// Changes the state on the Pod of `id` with `change`, as a merge patch carrying the
    /// `resourceVersion` it was read at; a conflict re-reads and retries.
    async fn patch_state(
        &self,
        id: &SandboxId,
        change: impl Fn(&mut PodState) -> Result<(), RuntimeError>,
    ) -> Result<Pod, RuntimeError> {
        let name = pod_name(id);
        for attempt in 0..=CONFLICT_RETRIES {
            if attempt > 0 {
                tokio::time::sleep(conflict_backoff(attempt)).await;
            }
            let pod = self
                .pods
                .get_opt(&name)
                .await
                .map_err(api_error("reading the Pod"))?
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .ok_or_else(|| RuntimeError::NotFound { id: id.to_string() })?;
            let mut state =
                PodState::from_annotations(pod.metadata.annotations.as_ref()).map_err(|e| {
                    RuntimeError::Internal {
                        context: format!("reading the state of sandbox {id}"),
                        detail: e.to_string(),
                    }
                })?;
            change(&mut state)?;
            let patch = serde_json::json!({"metadata": {
                "resourceVersion": pod.metadata.resource_version,
                "annotations": {STATE_ANNOTATION: state.to_annotation()},
            }});
            match self
                .pods
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(patched) => {
                    self.apply_own_write(&patched);
                    return Ok(patched);
                }
                Err(e) if is_status(&e, 409) => continue,
                Err(e) if is_status(&e, 404) => {
                    return Err(RuntimeError::NotFound { id: id.to_string() });
                }
                Err(e) => return Err(api_error("patching the Pod")(e)),
            }
        }
        Err(RuntimeError::Conflict {
            id: id.clone(),
            detail: format!("the Pod changed under {CONFLICT_RETRIES} retries; try again"),
        })
    }

    /// Read-your-writes: Berth's own change is in the table before the watch reports it.
    fn apply_own_write(&self, pod: &Pod) {
        let mut table = self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = table.apply(pod) {
            tracing::warn!(error = %e, "a Pod Berth just wrote does not read back");
        }
    }
}

/// Feeds the table from the Pod watch (Berth's Pods only), forever; reconnects with backoff.
async fn watch_pods(
    pods: Api<Pod>,
    table: Arc<RwLock<SandboxTable>>,
    changes: tokio::sync::broadcast::Sender<String>,
    synced: tokio::sync::watch::Sender<bool>,
    expiries_changed: Arc<tokio::sync::Notify>,
) {
    let config = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let mut stream = watcher(pods, config).default_backoff().boxed();
    let mut listing: Vec<Pod> = Vec::new();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, "Pod watch failed; retrying with backoff");
                continue;
            }
        };
        let mut table = table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let earliest = table.next_expiry();
        let changed: Vec<String> = match event {
            watcher::Event::Init => {
                listing.clear();
                Vec::new()
            }
            watcher::Event::InitApply(pod) => {
                listing.push(pod);
                Vec::new()
            }
            watcher::Event::InitDone => {
                for e in table.replace_all(listing.iter()) {
                    tracing::warn!(error = %e, "a Pod of Berth's cannot be read; left out");
                }
                synced.send_replace(true);
                listing.drain(..).filter_map(|p| sandbox_id(&p)).collect()
            }
            watcher::Event::Apply(pod) => {
                if let Err(e) = table.apply(&pod) {
                    tracing::warn!(error = %e, "a Pod of Berth's cannot be read; left out");
                }
                sandbox_id(&pod).into_iter().collect()
            }
            watcher::Event::Delete(pod) => {
                table.delete(&pod);
                sandbox_id(&pod).into_iter().collect()
            }
        };
        let moved = table.next_expiry() != earliest;
        drop(table);
        if moved {
            // The reaper sleeps until the earliest expiry; a renewal or create through another
            // replica may have moved it. A stored permit wakes a reaper that sleeps later.
            expiries_changed.notify_one();
        }
        for id in changed {
            // Nobody waiting is fine.
            let _ = changes.send(id);
        }
    }
}

/// Feeds the table the namespace's start warnings about Pods (`events`), forever; reconnects
/// with backoff. Only warnings about a sandbox's current Pod are kept, so what the namespace's
/// other Pods report costs nothing here.
async fn watch_events(events: Api<Event>, table: Arc<RwLock<SandboxTable>>) {
    let config = watcher::Config::default().fields(crate::events::WATCHED_EVENTS);
    let mut stream = watcher(events, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(watcher::Event::Apply(event) | watcher::Event::InitApply(event)) => event,
            // An event that expires changes nothing: its warning stays the latest known cause
            // until a newer one or the Pod's end.
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "event watch failed; retrying with backoff");
                continue;
            }
        };
        if let Some((pod, warning)) = crate::events::start_warning(&event) {
            table
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .note_warning(&pod, warning);
        }
    }
}

/// Sweeps every [`SWEEP_EVERY`](crate::sweep::SWEEP_EVERY) while this replica leads.
async fn sweep_while_leading(
    sweeper: Sweeper,
    leads_until: Arc<std::sync::Mutex<Option<DateTime<Utc>>>>,
) {
    loop {
        tokio::time::sleep(crate::sweep::SWEEP_EVERY).await;
        let leads = leads_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|until| until > Utc::now());
        if leads && let Err(e) = sweeper.sweep(Utc::now()).await {
            tracing::warn!(error = %e, "sweep failed; retried on the next round");
        }
    }
}

/// The reaper's Lease, in the runtime's namespace.
const LEASE_NAME: &str = "berth-reaper";
/// How long a hold lasts unless renewed.
const LEASE_SECONDS: i32 = 15;
/// How often the lease is looked at (well inside its duration).
const LEASE_TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes, renews or follows the reaper's Lease forever (see `leadership`); `leads_until` says
/// until when this replica holds it. Every write carries the resourceVersion it was decided on.
async fn hold_lease(
    leases: Api<k8s_openapi::api::coordination::v1::Lease>,
    me: String,
    leads_until: Arc<std::sync::Mutex<Option<DateTime<Utc>>>>,
) {
    use crate::leadership::{LeaseDecision, claimed, decide};
    let namespace = leases.namespace().unwrap_or("default").to_owned();
    loop {
        let now = Utc::now();
        let held = match leases.get_opt(LEASE_NAME).await {
            Ok(current) => match decide(current.as_ref(), &me, now) {
                LeaseDecision::Follow { .. } => false,
                LeaseDecision::Renew | LeaseDecision::Take => {
                    let lease = claimed(
                        current.as_ref(),
                        LEASE_NAME,
                        &namespace,
                        &me,
                        now,
                        LEASE_SECONDS,
                    );
                    let written = match current {
                        Some(_) => {
                            leases
                                .replace(LEASE_NAME, &PostParams::default(), &lease)
                                .await
                        }
                        None => leases.create(&PostParams::default(), &lease).await,
                    };
                    match written {
                        Ok(_) => true,
                        // Another replica wrote first (409): it decides this round.
                        Err(e) if is_status(&e, 409) => false,
                        Err(e) => {
                            tracing::warn!(error = %e, "writing the reaper's Lease failed");
                            false
                        }
                    }
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "reading the reaper's Lease failed");
                false
            }
        };
        {
            let mut until = leads_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let was = until.is_some_and(|u| u > now);
            if held {
                *until =
                    now.checked_add_signed(chrono::TimeDelta::seconds(i64::from(LEASE_SECONDS)));
            }
            if held != was {
                tracing::info!(identity = %me, leads = held, "reaper leadership changed");
            }
        }
        tokio::time::sleep(LEASE_TICK).await;
    }
}

/// What this runtime offers. A read-only mount is recursive only where the API server keeps
/// `recursiveReadOnly` (see [`recursive_read_only_decision`]); otherwise it is non-recursive, and
/// every volume's report says so.
fn capabilities(
    server_version: &str,
    recursive: &RecursiveReadOnly,
    config: &KubernetesConfig,
) -> Capabilities {
    let mode = if recursive.enabled {
        berth_core::model::ReadOnlyMode::Recursive
    } else {
        berth_core::model::ReadOnlyMode::NonRecursive
    };
    let support = berth_core::runtime::BackendSupport {
        sub_path: true,
        read_only: mode,
        read_only_sub_path: mode,
    };
    Capabilities {
        runtime: "kubernetes".into(),
        engine_version: Some(server_version.to_owned()),
        volume_backends: [
            berth_core::model::VolumeBackendKind::Host,
            berth_core::model::VolumeBackendKind::Pvc,
            berth_core::model::VolumeBackendKind::Nfs,
            berth_core::model::VolumeBackendKind::Ossfs,
        ]
        .into_iter()
        .map(|kind| (kind, support))
        .collect(),
        pause: false,
        pvc_provisioning_hints: true,
        platform: None,
        reserved_mount_paths: Vec::new(),
        details: std::collections::BTreeMap::from([(
            "subPath".to_owned(),
            crate::render::sub_path_handling(config).to_owned(),
        )]),
    }
}

/// Whether read-only mounts are sent with `recursiveReadOnly: Enabled`, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecursiveReadOnly {
    /// Sent, and every read-only volume reported `recursive`.
    pub enabled: bool,
    /// Why (the startup log and the capabilities' details show it).
    pub why: String,
}

/// The first minor version whose API server has `volumeMounts[].recursiveReadOnly` (alpha,
/// behind the `RecursiveReadOnlyMounts` gate; beta and on by default from 1.31).
const RECURSIVE_READ_ONLY_SINCE: u32 = 30;

/// The leading number of a version part (`"30+"` on some managed clusters is 30).
fn version_number(part: &str) -> Option<u32> {
    let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Whether an API server of version `major.minor` may have the field at all (older ones drop
/// it silently: asking them proves nothing new).
pub fn may_know_recursive_read_only(major: &str, minor: &str) -> bool {
    match (version_number(major), version_number(minor)) {
        (Some(major), Some(minor)) => {
            major > 1 || (major == 1 && minor >= RECURSIVE_READ_ONLY_SINCE)
        }
        _ => false,
    }
}

/// Decides whether read-only mounts are recursive: only on a server of a version that has the
/// field (`major.minor`) whose dry run of a Pod kept it (`probe`: `Some(kept)`, `None` if not
/// asked or the dry run failed). A server that has the type but not the feature gate drops the
/// field like an old one; sending it there would claim what the mount does not do.
pub fn recursive_read_only_decision(
    major: &str,
    minor: &str,
    probe: Option<Result<bool, String>>,
) -> RecursiveReadOnly {
    let version = format!("{major}.{minor}");
    if !may_know_recursive_read_only(major, minor) {
        return RecursiveReadOnly {
            enabled: false,
            why: format!(
                "non-recursive: the API server ({version}) has no volumeMounts[].recursiveReadOnly (from 1.{RECURSIVE_READ_ONLY_SINCE}); submounts of a read-only volume may stay writable"
            ),
        };
    }
    match probe {
        Some(Ok(true)) => RecursiveReadOnly {
            enabled: true,
            why: format!(
                "recursive: the API server ({version}) keeps volumeMounts[].recursiveReadOnly; a node whose container runtime cannot mount recursively read-only refuses the Pod"
            ),
        },
        Some(Ok(false)) => RecursiveReadOnly {
            enabled: false,
            why: format!(
                "non-recursive: the API server ({version}) drops volumeMounts[].recursiveReadOnly (feature gate RecursiveReadOnlyMounts off); submounts of a read-only volume may stay writable"
            ),
        },
        Some(Err(e)) => RecursiveReadOnly {
            enabled: false,
            why: format!(
                "non-recursive: asking the API server ({version}) whether it keeps volumeMounts[].recursiveReadOnly failed ({e}); submounts of a read-only volume may stay writable"
            ),
        },
        None => RecursiveReadOnly {
            enabled: false,
            why: format!(
                "non-recursive: the API server ({version}) was not asked about volumeMounts[].recursiveReadOnly"
            ),
        },
    }
}

/// Asks the API server whether it keeps `volumeMounts[].recursiveReadOnly`: a server-side dry
/// run of a minimal Pod (nothing is stored) that sets it, read back. `Err` if the dry run was
/// refused (an admission policy, missing rights).
pub async fn probe_recursive_read_only(
    client: &kube::Client,
    namespace: &str,
) -> Result<bool, String> {
    let probe: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"generateName": "berth-probe-"},
        "spec": {
            "containers": [{
                "name": "probe",
                "image": "berth-probe",
                "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": true,
                    "recursiveReadOnly": "Enabled"}],
            }],
            "volumes": [{"name": "v", "emptyDir": {}}],
        },
    }))
    .map_err(|e| e.to_string())?;
    let answered = Api::<Pod>::namespaced(client.clone(), namespace)
        .create(
            &PostParams {
                dry_run: true,
                field_manager: None,
            },
            &probe,
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(answered
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .any(|m| m.recursive_read_only.as_deref() == Some("Enabled")))
}

/// What the kubelet's refusal of the sandbox container means. A subPath it will not prepare is
/// one that leads out of its volume through a link (planted by another sandbox, typically): the
/// same code as Docker's refusal of any link, on the volume the kubelet names.
fn container_config_refusal(detail: &str, spec: &berth_core::model::SandboxSpec) -> RuntimeError {
    let volume = detail
        .split_once("failed to prepare subPath for volumeMount \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(name, _)| name);
    match volume {
        Some(name) => {
            let field = spec
                .volumes
                .iter()
                .position(|v| v.name.as_str() == name)
                .map_or_else(|| "volumes".to_owned(), |i| format!("volumes[{i}].subPath"));
            rejected(
                field,
                ErrorCode::VolumeSubPathSymlink,
                format!(
                    "the kubelet refused to mount this subPath (it leads out of the volume through a link): {detail}"
                ),
            )
        }
        None => rejected(
            "volumes".into(),
            ErrorCode::SandboxInvalidParameter,
            format!("the kubelet refused the sandbox's container: {detail}"),
        ),
    }
}

/// An owner reference to `pod` (garbage collection of what was made for it).
fn owner_of(pod: &Pod) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    }
}

fn sandbox_id(pod: &Pod) -> Option<String> {
    pod.metadata
        .labels
        .as_ref()?
        .get(crate::render::LABEL_ID)
        .cloned()
}

#[async_trait]
impl Runtime for KubernetesRuntime {
    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        if !*self.synced.borrow() {
            return Err(RuntimeError::Unavailable {
                detail: "the Pod cache has not finished its first listing yet".into(),
            });
        }
        self.pods
            .list_metadata(&kube::api::ListParams::default().limit(1))
            .await
            .map(|_| ())
            .map_err(api_error("listing Pods"))
    }

    async fn create(&self, request: CreateSandbox) -> Result<SandboxRecord, RuntimeError> {
        self.wait_synced().await?;
        let id = request.id.clone();
        let claims_to_create = self.plan_claims(&request).await?;
        let plan = PodPlan {
            claims_to_create,
            create_deadline: chrono::TimeDelta::from_std(self.config.start_timeout)
                .ok()
                .and_then(|d| Utc::now().checked_add_signed(d)),
            recursive_read_only: self.recursive_read_only,
        };
        let objects = render(&self.config, &request, &plan).map_err(RuntimeError::Rejected)?;
        // Subscribed before the Pod exists: no change of it can be missed.
        let changes = self.changes.subscribe();
        let secret_names: Vec<String> = objects
            .secrets
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        let mut made_claims = Vec::new();
        let mut maybe_made_claim = None;
        let made = async {
            for claim in &objects.claims {
                let name = claim.metadata.name.clone().unwrap_or_default();
                match self.claims.create(&PostParams::default(), claim).await {
                    Ok(_) => made_claims.push(name),
                    // Made meanwhile by another create: it is theirs, and it exists.
                    Err(e) if is_status(&e, 409) => {}
                    Err(e) => {
                        // No answer (the connection failed or the answer was lost): the API
                        // server may have made it.
                        if !matches!(e, kube::Error::Api(_)) {
                            maybe_made_claim = Some(name);
                        }
                        return Err(api_error("creating a claim")(e));
                    }
                }
            }
            for secret in &objects.secrets {
                self.secrets
                    .create(&PostParams::default(), secret)
                    .await
                    .map_err(api_error("creating a Secret"))?;
            }
            let pod = self
                .pods
                .create(&PostParams::default(), &objects.pod)
                .await
                .map_err(api_error("creating the Pod"))?;
            self.apply_own_write(&pod);
            self.own_secrets(&secret_names, &pod).await?;
            self.own_shared_claims(&request, &pod).await?;
            self.wait_running(&id, &request.spec, changes).await
        }
        .await;
        match made {
            Ok(record) => Ok(record),
            Err(e) => {
                self.roll_back(&id, &secret_names, &made_claims).await;
                if let Some(name) = maybe_made_claim {
                    self.roll_back_claim_if_made_for(&id, &name).await;
                }
                Err(e)
            }
        }
    }

    async fn get(&self, id: &SandboxId) -> Result<SandboxRecord, RuntimeError> {
        self.wait_synced().await?;
        self.read(|t| t.get(id.as_str()).map(|e| e.record.clone()))
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_string() })
    }

    async fn list(&self) -> Result<Vec<SandboxRecord>, RuntimeError> {
        self.wait_synced().await?;
        Ok(self.read(|t| t.records().cloned().collect()))
    }

    async fn list_page(&self, selection: &ListSelection) -> Result<ListedPage, RuntimeError> {
        self.wait_synced().await?;
        Ok(self.read(|t| t.page(selection)))
    }

    async fn delete(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.wait_synced().await?;
        let grace = i64::try_from(self.config.delete_grace_period.as_secs()).unwrap_or(i64::MAX);
        let params = DeleteParams {
            grace_period_seconds: Some(u32::try_from(grace).unwrap_or(u32::MAX)),
            ..DeleteParams::default()
        };
        match self.pods.delete(&pod_name(id), &params).await {
            // The Pod goes gracefully; GET answers Stopping (read-your-writes) until the watch
            // reports it gone.
            Ok(either) => {
                if let either::Either::Left(pod) = either {
                    self.apply_own_write(&pod);
                }
                Ok(())
            }
            Err(e) if is_status(&e, 404) => Err(RuntimeError::NotFound { id: id.to_string() }),
            Err(e) => Err(api_error("deleting the Pod")(e)),
        }
    }

    /// Reads the Pod fresh, and deletes it with that read's `resourceVersion` as precondition:
    /// a renewal that lands in between (from any replica) makes the delete fail, and the
    /// sandbox stays.
    async fn delete_if_expired(
        &self,
        id: &SandboxId,
        now: DateTime<Utc>,
    ) -> Result<bool, RuntimeError> {
        let name = pod_name(id);
        let pod = self
            .pods
            .get_opt(&name)
            .await
            .map_err(api_error("reading the Pod"))?
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_string() })?;
        let expired = PodState::from_annotations(pod.metadata.annotations.as_ref())
            .ok()
            .and_then(|s| s.expires_at)
            .is_some_and(|at| at <= now);
        if !expired || pod.metadata.deletion_timestamp.is_some() {
            return Ok(false);
        }
        let params = DeleteParams {
            grace_period_seconds: Some(
                u32::try_from(self.config.delete_grace_period.as_secs()).unwrap_or(u32::MAX),
            ),
            preconditions: Some(kube::api::Preconditions {
                resource_version: pod.metadata.resource_version.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        match self.pods.delete(&name, &params).await {
            Ok(either) => {
                if let either::Either::Left(pod) = either {
                    self.apply_own_write(&pod);
                }
                Ok(true)
            }
            // Changed since the read (a renewal): not ours to reap now.
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) if is_status(&e, 404) => Err(RuntimeError::NotFound { id: id.to_string() }),
            Err(e) => Err(api_error("deleting the Pod")(e)),
        }
    }

    /// Only the holder of the reaper's Lease reaps; a hold that ran out (this replica could not
    /// renew it) counts as not leading.
    async fn expiries_changed(&self) {
        self.expiries_changed.notified().await;
    }

    async fn shutdown(&self) {
        self.lease.abort();
        self.sweeps.abort();
        let held = self
            .leads_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .is_some_and(|until| until > Utc::now());
        if !held {
            return;
        }
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.pods.clone().into_client(), &self.config.namespace);
        let given_up = match leases.get_opt(LEASE_NAME).await {
            Ok(Some(current)) => crate::leadership::released(&current, &self.config.lease_identity),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "shutdown: reading the reaper's Lease failed; it runs out instead");
                None
            }
        };
        if let Some(lease) = given_up {
            match leases
                .replace(LEASE_NAME, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => {
                    tracing::info!(identity = %self.config.lease_identity, "shutdown: gave up the reaper's Lease")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "shutdown: giving up the reaper's Lease failed; it runs out instead")
                }
            }
        }
    }

    async fn leads_reaping(&self) -> bool {
        self.leads_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|until| until > Utc::now())
    }

    async fn pause(&self, _: &SandboxId) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported {
            runtime: "kubernetes".into(),
            action: "pause (a plain Pod cannot be paused)",
        })
    }

    async fn resume(&self, _: &SandboxId) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported {
            runtime: "kubernetes".into(),
            action: "resume (a plain Pod cannot be paused)",
        })
    }

    async fn renew(
        &self,
        id: &SandboxId,
        expires_at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, RuntimeError> {
        self.patch_state(id, |state| {
            state.expires_at = Some(expires_at);
            Ok(())
        })
        .await?;
        Ok(expires_at)
    }

    async fn patch_metadata(
        &self,
        id: &SandboxId,
        patch: &MetadataPatch,
    ) -> Result<SandboxRecord, RuntimeError> {
        let pod = self
            .patch_state(id, |state| {
                let mut metadata = state.typed_metadata();
                patch
                    .apply_checked(&mut metadata)
                    .map_err(RuntimeError::Rejected)?;
                state.set_metadata(&metadata);
                Ok(())
            })
            .await?;
        // The table's record also shows a start warning the Pod alone does not.
        if let Some(record) = self.read(|t| {
            t.get(id.as_str())
                .filter(|e| e.resource_version == pod.metadata.resource_version)
                .map(|e| e.record.clone())
        }) {
            return Ok(record);
        }
        crate::sandbox_table::entry_of(&pod)
            .map(|e| e.record)
            .map_err(|e| RuntimeError::Internal {
                context: "reading the patched Pod".into(),
                detail: e.to_string(),
            })
    }

    async fn endpoint(&self, id: &SandboxId, port: u16) -> Result<wire::Endpoint, RuntimeError> {
        self.wait_synced().await?;
        let (ip, state) = self
            .read(|t| {
                t.get(id.as_str())
                    .map(|e| (e.pod_ip.clone(), e.record.status.state))
            })
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_string() })?;
        // A Pod being deleted (or ended) may keep its IP a while: nothing to reach there.
        if state != berth_core::model::SandboxState::Running {
            return Err(RuntimeError::EndpointNotAvailable {
                id: id.clone(),
                port,
                detail: format!("the sandbox is not running ({state:?})"),
            });
        }
        match ip {
            Some(ip) => Ok(wire::Endpoint {
                endpoint: format!("{ip}:{port}"),
                headers: None,
            }),
            None => Err(RuntimeError::PodIpNotAvailable { id: id.clone() }),
        }
    }

    async fn render(&self, request: &CreateSandbox) -> Result<RenderedSandbox, RuntimeError> {
        let plan = PodPlan {
            claims_to_create: self.plan_claims(request).await?,
            create_deadline: None,
            recursive_read_only: self.recursive_read_only,
        };
        let objects = render(&self.config, request, &plan).map_err(RuntimeError::Rejected)?;
        let volumes = objects
            .state
            .reported_volumes()
            .map_err(|e| RuntimeError::Internal {
                context: "rendering".into(),
                detail: e.to_string(),
            })?;
        Ok(RenderedSandbox {
            sandbox: SandboxRecord {
                id: request.id.clone(),
                image: request.spec.image.uri.clone(),
                platform: request.spec.platform,
                entrypoint: request.spec.entrypoint.argv().to_vec(),
                metadata: request.spec.metadata.clone(),
                status: berth_core::model::SandboxStatus::new(
                    berth_core::model::SandboxState::Pending,
                    request.created_at,
                ),
                created_at: request.created_at,
                expires_at: request.expires_at(),
                volumes,
            },
            runtime_object: objects.redacted_json(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conflict_backoff_stays_in_its_doubling_window() {
        for attempt in 1..=super::CONFLICT_RETRIES {
            let window = 10u64 << (attempt - 1).min(6);
            for _ in 0..50 {
                let pause = super::conflict_backoff(attempt).as_millis();
                assert!(
                    (1..=u128::from(window)).contains(&pause),
                    "{attempt}: {pause}"
                );
            }
        }
    }

    use super::*;
    use berth_core::model::{ReadOnlyMode, VolumeBackendKind};

    #[test]
    fn an_old_server_gets_non_recursive_read_only_without_being_asked() {
        for (major, minor) in [("1", "20"), ("1", "29"), ("1", "29+"), ("", ""), ("x", "y")] {
            assert!(
                !may_know_recursive_read_only(major, minor),
                "{major}.{minor}"
            );
            let decided = recursive_read_only_decision(major, minor, None);
            assert!(!decided.enabled, "{major}.{minor}");
            assert!(decided.why.starts_with("non-recursive"), "{decided:?}");
        }
        let decided = recursive_read_only_decision("1", "20", None);
        assert!(decided.why.contains("(1.20)"), "{decided:?}");
        // Even an answer that it kept the field does not count on a server that cannot have it.
        assert!(!recursive_read_only_decision("1", "20", Some(Ok(true))).enabled);
        let offered = capabilities("v1.20.2", &decided, &KubernetesConfig::new("ns"));
        for kind in [VolumeBackendKind::Host, VolumeBackendKind::Pvc] {
            let support = offered.volume_backends[&kind];
            assert_eq!(
                (support.read_only, support.read_only_sub_path),
                (ReadOnlyMode::NonRecursive, ReadOnlyMode::NonRecursive)
            );
        }
    }

    #[test]
    fn a_new_server_that_keeps_the_field_gets_recursive_read_only() {
        for (major, minor) in [("1", "30"), ("1", "31+"), ("1", "33"), ("2", "0")] {
            assert!(
                may_know_recursive_read_only(major, minor),
                "{major}.{minor}"
            );
            let decided = recursive_read_only_decision(major, minor, Some(Ok(true)));
            assert!(decided.enabled, "{decided:?}");
            let offered = capabilities("v1.33.0", &decided, &KubernetesConfig::new("ns"));
            let support = offered.volume_backends[&VolumeBackendKind::Pvc];
            assert_eq!(
                (support.read_only, support.read_only_sub_path),
                (ReadOnlyMode::Recursive, ReadOnlyMode::Recursive)
            );
        }
        // The feature gate off (the field dropped), the dry run refused, or not asked: not sent.
        for probe in [Some(Ok(false)), Some(Err("forbidden".to_owned())), None] {
            let decided = recursive_read_only_decision("1", "31", probe.clone());
            assert!(!decided.enabled, "{probe:?}: {decided:?}");
        }
        assert!(
            recursive_read_only_decision("1", "31", Some(Err("forbidden".into())))
                .why
                .contains("forbidden")
        );
    }
}
