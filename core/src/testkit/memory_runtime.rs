//! A runtime that keeps sandboxes in memory and simulates images and claims, so API-layer tests
//! run without an engine. It follows the `Runtime` contract exactly (it passes the conformance
//! suite), and lets tests force failures: an unreachable engine, an exited or OOM-killed sandbox,
//! deletes that finish later (`Stopping` for a while), no pause (when its capabilities say so).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error_code::ErrorCode;
use crate::model::{
    ClaimName, MetadataPatch, MountedVolume, ReadOnlyMode, SandboxId, SandboxRecord, SandboxState,
    SandboxStatus, VolumeBackendKind, VolumeSource,
};
use crate::runtime::{
    BackendSupport, Capabilities, CreateSandbox, RenderedSandbox, Runtime, RuntimeError,
};
use crate::validate::{Violation, Violations};
use crate::wire;

/// An in-memory runtime for tests.
#[derive(Debug)]
pub struct InMemoryRuntime {
    state: Mutex<State>,
    capabilities: Capabilities,
    /// What `leads_reaping` answers (a test plays a replica that is not the leader).
    leads_reaping: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    sandboxes: HashMap<SandboxId, Entry>,
    /// Deleted sandboxes still reported `Stopping`, with how many more reads show them.
    stopping: HashMap<SandboxId, (SandboxRecord, u32)>,
    /// How many reads a deleted sandbox stays `Stopping` for (0: gone at once).
    linger_reads: u32,
    images: BTreeSet<String>,
    claims: BTreeMap<ClaimName, Claim>,
    unavailable: bool,
}

#[derive(Debug)]
struct Entry {
    record: SandboxRecord,
    claims_used: BTreeSet<ClaimName>,
}

#[derive(Debug, Default)]
struct Claim {
    /// Remove once no sandbox uses it: set when its creator, created with
    /// `deleteOnSandboxTermination`, is deleted.
    delete_when_unused: bool,
    /// The sandbox that created it and asked for its deletion.
    delete_with: Option<SandboxId>,
}

impl Default for InMemoryRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryRuntime {
    /// A runtime with no images and no claims, offering every backend.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            capabilities: Capabilities {
                runtime: "in-memory".to_owned(),
                engine_version: None,
                volume_backends: VolumeBackendKind::ALL
                    .into_iter()
                    .map(|kind| (kind, BackendSupport::uniform(ReadOnlyMode::Recursive)))
                    .collect(),
                pause: true,
                pvc_provisioning_hints: true,
                platform: None,
                reserved_mount_paths: Vec::new(),
                details: BTreeMap::new(),
            },
            leads_reaping: AtomicBool::new(true),
        }
    }

    /// Makes this runtime answer `leads_reaping` with `leads` (a replica that is, or is not,
    /// the leader).
    pub fn set_leads_reaping(&self, leads: bool) {
        self.leads_reaping.store(leads, Ordering::Relaxed);
    }

    /// Replaces the capabilities reported (to test the API's capability checks).
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes an image "present".
    pub fn add_image(&self, image: &str) {
        self.lock().images.insert(image.to_owned());
    }

    /// Creates a claim outside Berth (so Berth never deletes it).
    pub fn add_claim(&self, name: &ClaimName) {
        self.lock().claims.entry(name.clone()).or_default();
    }

    /// Whether a claim exists.
    pub fn has_claim(&self, name: &ClaimName) -> bool {
        self.lock().claims.contains_key(name)
    }

    /// Simulates a runtime whose deletes finish later (a graceful Pod deletion): after each
    /// `delete`, the sandbox is reported `Stopping` for `reads` more reads of it, then is gone.
    pub fn simulate_slow_delete(&self, reads: u32) {
        self.lock().linger_reads = reads;
    }

    /// Simulates an unreachable engine: every call fails with [`RuntimeError::Unavailable`].
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
    }

    /// Simulates the entry process ending: exit 0 → `Terminated`, otherwise or on OOM → `Failed`.
    pub fn simulate_exit(
        &self,
        id: &SandboxId,
        exit_code: i64,
        oom_killed: bool,
    ) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        let entry = state.sandboxes.get_mut(id).ok_or_else(|| not_found(id))?;
        let (sandbox_state, reason) = match (exit_code, oom_killed) {
            (_, true) => (SandboxState::Failed, "oom_killed"),
            (0, false) => (SandboxState::Terminated, "exited"),
            _ => (SandboxState::Failed, "exited_with_error"),
        };
        entry.record.status = SandboxStatus {
            state: sandbox_state,
            reason: Some(reason.to_owned()),
            message: Some(format!("entry process exited with code {exit_code}")),
            last_transition_at: Some(Utc::now()),
        };
        Ok(())
    }

    /// Checks a create against images and claims; returns the claims it would create.
    fn plan(
        &self,
        state: &State,
        request: &CreateSandbox,
    ) -> Result<(SandboxRecord, Vec<ClaimName>), RuntimeError> {
        if state.sandboxes.contains_key(&request.id) {
            return Err(RuntimeError::Internal {
                context: "creating sandbox".to_owned(),
                detail: format!("id {} is already in use", request.id),
            });
        }
        let spec = &request.spec;
        // Like a real runtime, it refuses what its capabilities do not offer even when a
        // caller bypasses the API's check.
        self.capabilities
            .check(spec)
            .map_err(RuntimeError::Rejected)?;
        if !state.images.contains(&spec.image.uri) {
            return Err(RuntimeError::ImageNotFound {
                image: spec.image.uri.clone(),
                detail: "not in the in-memory image set".to_owned(),
            });
        }
        let mut violations = Vec::new();
        let mut to_create = Vec::new();
        for (i, volume) in spec.volumes.iter().enumerate() {
            if let VolumeSource::Pvc(pvc) = &volume.source
                && !state.claims.contains_key(&pvc.claim_name)
                && !to_create.contains(&pvc.claim_name)
            {
                if pvc.create_if_not_exists {
                    to_create.push(pvc.claim_name.clone());
                } else {
                    violations.push(Violation::new(
                        format!("volumes[{i}].pvc.claimName"),
                        ErrorCode::VolumePvcNotFound,
                        format!(
                            "volume {} does not exist and createIfNotExists is false",
                            pvc.claim_name
                        ),
                    ));
                }
            }
        }
        if let Some(v) = Violations::from_vec(violations) {
            return Err(RuntimeError::Rejected(v));
        }
        let record = SandboxRecord {
            id: request.id.clone(),
            image: spec.image.uri.clone(),
            platform: spec.platform,
            entrypoint: spec.entrypoint.argv().to_vec(),
            metadata: spec.metadata.clone(),
            status: SandboxStatus::new(SandboxState::Running, request.created_at),
            created_at: request.created_at,
            expires_at: request.expires_at(),
            volumes: spec
                .volumes
                .iter()
                .map(|v| {
                    // `check` above refused backends that are not offered.
                    let mode = self
                        .capabilities
                        .read_only_mode(v)
                        .unwrap_or(ReadOnlyMode::NonRecursive);
                    MountedVolume::of(v, mode)
                })
                .collect(),
        };
        Ok((record, to_create))
    }

    fn available(state: &State) -> Result<(), RuntimeError> {
        if state.unavailable {
            Err(RuntimeError::Unavailable {
                detail: "the in-memory engine is switched off".to_owned(),
            })
        } else {
            Ok(())
        }
    }

    /// Removes a sandbox and releases the claims it was the last user of.
    fn remove(state: &mut State, id: &SandboxId) {
        state.sandboxes.remove(id);
        for claim in state.claims.values_mut() {
            if claim.delete_with.as_ref() == Some(id) {
                claim.delete_when_unused = true;
            }
        }
        // A claim is removed only when no live sandbox uses it, whoever created it.
        let in_use: BTreeSet<ClaimName> = state
            .sandboxes
            .values()
            .flat_map(|e| e.claims_used.iter().cloned())
            .collect();
        state
            .claims
            .retain(|name, claim| !claim.delete_when_unused || in_use.contains(name));
    }

    /// Pause and resume exist only where the capabilities say so.
    fn pause_supported(&self, action: &'static str) -> Result<(), RuntimeError> {
        if self.capabilities.pause {
            Ok(())
        } else {
            Err(RuntimeError::Unsupported {
                runtime: self.capabilities.runtime.clone(),
                action,
            })
        }
    }

    /// Runs `f` on an existing sandbox, after the availability check.
    fn with_entry<T>(
        &self,
        id: &SandboxId,
        f: impl FnOnce(&mut Entry) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let mut state = self.lock();
        Self::available(&state)?;
        let entry = state.sandboxes.get_mut(id).ok_or_else(|| not_found(id))?;
        f(entry)
    }
}

fn not_found(id: &SandboxId) -> RuntimeError {
    RuntimeError::NotFound { id: id.to_string() }
}

fn transition(
    entry: &mut Entry,
    from: SandboxState,
    to: SandboxState,
    action: &'static str,
) -> Result<(), RuntimeError> {
    let state = entry.record.status.state;
    if state != from {
        return Err(RuntimeError::InvalidState {
            id: entry.record.id.clone(),
            state,
            action,
        });
    }
    entry.record.status = SandboxStatus::new(to, Utc::now());
    Ok(())
}

#[async_trait]
impl Runtime for InMemoryRuntime {
    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        Self::available(&self.lock())
    }

    async fn create(&self, request: CreateSandbox) -> Result<SandboxRecord, RuntimeError> {
        let mut state = self.lock();
        Self::available(&state)?;
        let (record, to_create) = self.plan(&state, &request)?;
        let mut claims_used = BTreeSet::new();
        for volume in &request.spec.volumes {
            if let VolumeSource::Pvc(pvc) = &volume.source {
                claims_used.insert(pvc.claim_name.clone());
                if to_create.contains(&pvc.claim_name) {
                    let claim = state.claims.entry(pvc.claim_name.clone()).or_default();
                    if pvc.delete_on_sandbox_termination {
                        claim.delete_with = Some(request.id.clone());
                    }
                }
            }
        }
        state.sandboxes.insert(
            request.id.clone(),
            Entry {
                record: record.clone(),
                claims_used,
            },
        );
        Ok(record)
    }

    async fn get(&self, id: &SandboxId) -> Result<SandboxRecord, RuntimeError> {
        {
            let mut state = self.lock();
            Self::available(&state)?;
            if let Some((record, reads)) = state.stopping.get_mut(id) {
                if *reads > 0 {
                    *reads -= 1;
                    return Ok(record.clone());
                }
                state.stopping.remove(id);
                return Err(not_found(id));
            }
        }
        self.with_entry(id, |e| Ok(e.record.clone()))
    }

    async fn list(&self) -> Result<Vec<SandboxRecord>, RuntimeError> {
        let state = self.lock();
        Self::available(&state)?;
        Ok(state
            .sandboxes
            .values()
            .map(|e| &e.record)
            .chain(state.stopping.values().map(|(r, _)| r))
            .cloned()
            .collect())
    }

    async fn delete(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        Self::available(&state)?;
        if state.stopping.contains_key(id) {
            // A delete while it is still stopping succeeds.
            return Ok(());
        }
        let Some(entry) = state.sandboxes.get(id) else {
            return Err(not_found(id));
        };
        if state.linger_reads > 0 {
            let mut record = entry.record.clone();
            record.status = SandboxStatus::new(SandboxState::Stopping, Utc::now());
            let reads = state.linger_reads;
            state.stopping.insert(id.clone(), (record, reads));
        }
        Self::remove(&mut state, id);
        Ok(())
    }

    async fn delete_if_expired(
        &self,
        id: &SandboxId,
        now: DateTime<Utc>,
    ) -> Result<bool, RuntimeError> {
        let mut state = self.lock();
        Self::available(&state)?;
        let entry = state.sandboxes.get(id).ok_or_else(|| not_found(id))?;
        // Checked and deleted under the one lock: a renewal is either before (and wins) or
        // finds the sandbox gone.
        if entry.record.expires_at.is_none_or(|e| e > now) {
            return Ok(false);
        }
        Self::remove(&mut state, id);
        Ok(true)
    }

    async fn leads_reaping(&self) -> bool {
        self.leads_reaping.load(Ordering::Relaxed)
    }

    async fn pause(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.pause_supported("pause")?;
        self.with_entry(id, |e| {
            transition(e, SandboxState::Running, SandboxState::Paused, "pause")
        })
    }

    async fn resume(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.pause_supported("resume")?;
        self.with_entry(id, |e| {
            transition(e, SandboxState::Paused, SandboxState::Running, "resume")
        })
    }

    async fn renew(
        &self,
        id: &SandboxId,
        expires_at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, RuntimeError> {
        self.with_entry(id, |e| {
            e.record.expires_at = Some(expires_at);
            Ok(expires_at)
        })
    }

    async fn patch_metadata(
        &self,
        id: &SandboxId,
        patch: &MetadataPatch,
    ) -> Result<SandboxRecord, RuntimeError> {
        self.with_entry(id, |e| {
            patch
                .apply_checked(&mut e.record.metadata)
                .map_err(RuntimeError::Rejected)?;
            Ok(e.record.clone())
        })
    }

    async fn endpoint(&self, id: &SandboxId, port: u16) -> Result<wire::Endpoint, RuntimeError> {
        self.with_entry(id, |e| match e.record.status.state {
            SandboxState::Running | SandboxState::Paused => Ok(wire::Endpoint {
                endpoint: format!("127.0.0.1:{port}"),
                headers: None,
            }),
            state => Err(RuntimeError::EndpointNotAvailable {
                id: id.clone(),
                port,
                detail: format!("the sandbox is {state}"),
            }),
        })
    }

    async fn render(&self, request: &CreateSandbox) -> Result<RenderedSandbox, RuntimeError> {
        let state = self.lock();
        Self::available(&state)?;
        let (sandbox, to_create) = self.plan(&state, request)?;
        let runtime_object = serde_json::json!({
            "kind": "InMemorySandbox",
            "image": request.spec.image.uri,
            "createsClaims": to_create.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        Ok(RenderedSandbox {
            sandbox,
            runtime_object,
        })
    }
}
