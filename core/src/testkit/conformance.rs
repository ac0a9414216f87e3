//! The conformance suite: the behaviour every `Runtime` must show, run against a live runtime.
//!
//! Each check creates what it needs, asserts, and deletes what it created whatever the outcome.
//! Sandboxes carry the metadata `berth-conformance=<run id>` so a harness can sweep leftovers,
//! and claims are named `conf-<run id>-...`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{TimeDelta, Utc};

use crate::error_code::ErrorCode;
use crate::model::{
    ClaimName, HostPath, MetadataPatch, ReadOnlyMode, SandboxId, SandboxRecord, SandboxSpec,
    SandboxState, VolumeBackendKind,
};
use crate::runtime::{CreateSandbox, ListSelection, Runtime, RuntimeError};
use crate::validate::StoragePolicy;
use crate::wire;

/// The metadata key that marks sandboxes made by the suite.
pub const RUN_LABEL: &str = "berth-conformance";

/// What the suite runs against.
pub struct ConformanceTarget {
    /// The runtime under test.
    pub runtime: Arc<dyn Runtime>,
    /// An image present on the runtime whose `entrypoint` keeps running.
    pub image: String,
    /// An entrypoint that keeps running until the sandbox is deleted.
    pub entrypoint: Vec<String>,
    /// An image that is neither present nor pullable.
    pub missing_image: String,
    /// A host directory the suite may mount (the host backend is checked only when given).
    pub host_root: Option<HostPath>,
    /// A port for the endpoint check.
    pub endpoint_port: u16,
    /// A short DNS-label-safe id for this run (at most 20 characters).
    pub run_id: String,
    /// What a delete may look like from outside; strict (gone at once) by default.
    pub after_delete: AfterDelete,
}

/// Waits for a while: the suite has no timer of its own (core has no async runtime), so a
/// target that needs to poll brings one, e.g. `Arc::new(|d| Box::pin(tokio::time::sleep(d)))`.
pub type Sleep = Arc<
    dyn Fn(std::time::Duration) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// What `get` may answer right after a `delete` returned.
#[derive(Clone, Default)]
pub enum AfterDelete {
    /// 404 at once, and a second delete is 404 (Docker, the in-memory runtime).
    #[default]
    Gone,
    /// The sandbox may still be reported in state `Stopping` (and nothing else) for up to
    /// `within`, then 404; a delete meanwhile succeeds or is 404. A cluster whose kubelet takes
    /// seconds to finish a graceful Pod deletion needs this.
    StoppingThenGone {
        /// The bound.
        within: std::time::Duration,
        /// How to wait between polls.
        sleep: Sleep,
    },
}

impl std::fmt::Debug for AfterDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gone => f.write_str("Gone"),
            Self::StoppingThenGone { within, .. } => f
                .debug_struct("StoppingThenGone")
                .field("within", within)
                .finish_non_exhaustive(),
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It held.
    Passed,
    /// It does not apply to this runtime (reason given).
    Skipped(String),
    /// It did not hold (what went wrong).
    Failed(String),
}

/// The outcome of every check.
#[derive(Debug, Clone)]
pub struct ConformanceReport {
    /// Check name and outcome, in run order.
    pub results: Vec<(&'static str, Outcome)>,
}

impl ConformanceReport {
    /// Panics with every failure if any check failed; prints the outcomes either way.
    pub fn assert_passed(&self) {
        let mut failures = Vec::new();
        for (name, outcome) in &self.results {
            println!("conformance {name}: {outcome:?}");
            if let Outcome::Failed(why) = outcome {
                failures.push(format!("{name}: {why}"));
            }
        }
        assert!(
            failures.is_empty(),
            "conformance failures:\n{}",
            failures.join("\n")
        );
    }

    /// How many checks passed.
    pub fn passed(&self) -> usize {
        self.results
            .iter()
            .filter(|(_, o)| *o == Outcome::Passed)
            .count()
    }
}

type CheckResult = Result<Outcome, String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Runs every check and reports each outcome.
pub async fn run(target: &ConformanceTarget) -> ConformanceReport {
    let mut ctx = Context {
        target,
        created: Vec::new(),
        counter: 0,
    };
    let mut results = Vec::new();
    macro_rules! check {
        ($name:ident) => {{
            let outcome = match $name(&mut ctx).await {
                Ok(outcome) => outcome,
                Err(why) => Outcome::Failed(why),
            };
            if let Err(leftover) = ctx.cleanup().await {
                results.push((
                    concat!(stringify!($name), " (cleanup)"),
                    Outcome::Failed(leftover),
                ));
            }
            results.push((stringify!($name), outcome));
        }};
    }
    check!(create_get_list);
    check!(expiry_follows_timeout);
    check!(metadata_patch);
    check!(renew);
    check!(delete_if_expired);
    check!(pause_resume);
    check!(delete);
    check!(unknown_id);
    check!(volumes_reported);
    check!(image_not_found);
    check!(missing_claim_leaves_nothing);
    check!(render_has_no_side_effects);
    check!(claim_ownership);
    check!(endpoint);
    ConformanceReport { results }
}

struct Context<'a> {
    target: &'a ConformanceTarget,
    created: Vec<SandboxId>,
    counter: u32,
}

impl Context<'_> {
    fn runtime(&self) -> &dyn Runtime {
        self.target.runtime.as_ref()
    }

    fn next_id(&mut self) -> SandboxId {
        self.counter += 1;
        SandboxId::new(&format!("conf-{}-{}", self.target.run_id, self.counter))
            .expect("run_id must be DNS-label safe")
    }

    fn claim(&self, name: &str) -> ClaimName {
        ClaimName::new(&format!("conf-{}-{name}", self.target.run_id))
            .expect("run_id must be DNS-label safe")
    }

    /// A valid request running the target's image, with the run label.
    fn request(&self) -> wire::CreateSandboxRequest {
        wire::CreateSandboxRequest {
            image: Some(wire::ImageSpec {
                uri: self.target.image.clone(),
                auth: None,
            }),
            entrypoint: Some(self.target.entrypoint.clone()),
            resource_limits: Some(BTreeMap::new()),
            metadata: Some(BTreeMap::from([(
                RUN_LABEL.to_owned(),
                self.target.run_id.clone(),
            )])),
            ..Default::default()
        }
    }

    fn spec(&self, request: wire::CreateSandboxRequest) -> Result<SandboxSpec, String> {
        let policy = StoragePolicy {
            allowed_host_roots: self.target.host_root.iter().cloned().collect(),
            max_timeout_seconds: None,
        };
        SandboxSpec::from_request(request, &policy)
            .map_err(|v| format!("the suite built an invalid request: {v}"))
    }

    fn create_request(
        &mut self,
        request: wire::CreateSandboxRequest,
    ) -> Result<CreateSandbox, String> {
        Ok(CreateSandbox {
            id: self.next_id(),
            spec: self.spec(request)?,
            created_at: Utc::now(),
        })
    }

    async fn create(
        &mut self,
        request: wire::CreateSandboxRequest,
    ) -> Result<SandboxRecord, RuntimeError> {
        let create = self
            .create_request(request)
            .map_err(|detail| RuntimeError::Internal {
                context: "conformance".into(),
                detail,
            })?;
        let id = create.id.clone();
        // Recorded before the call: a runtime that fails yet leaves something behind is caught
        // by the cleanup, which then reports the leftover.
        self.created.push(id);
        self.runtime().create(create).await
    }

    async fn create_ok(
        &mut self,
        request: wire::CreateSandboxRequest,
    ) -> Result<SandboxRecord, String> {
        self.create(request)
            .await
            .map_err(|e| format!("create failed: {e}"))
    }

    /// After `delete` returned: waits (within the target's bound) until `get` answers 404,
    /// checking that meanwhile it answers only `Stopping`.
    async fn until_gone(&self, id: &SandboxId) -> Result<(), String> {
        let (within, sleep) = match &self.target.after_delete {
            AfterDelete::Gone => {
                return expect_code(
                    self.runtime().get(id).await,
                    ErrorCode::SandboxNotFound,
                    "get after delete",
                );
            }
            AfterDelete::StoppingThenGone { within, sleep } => (*within, sleep),
        };
        let deadline = std::time::Instant::now() + within;
        loop {
            match self.runtime().get(id).await {
                Err(e) if e.code() == ErrorCode::SandboxNotFound => return Ok(()),
                Err(e) => return Err(format!("get after delete: {e}")),
                Ok(r) if r.status.state != SandboxState::Stopping => {
                    return Err(format!(
                        "get after delete answers {} (only Stopping, then 404, is allowed)",
                        r.status.state
                    ));
                }
                Ok(_) if std::time::Instant::now() >= deadline => {
                    return Err(format!("still Stopping {within:?} after delete"));
                }
                Ok(_) => sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    }

    /// Deletes what the check created; a sandbox that should not exist but does is reported.
    async fn cleanup(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        for id in std::mem::take(&mut self.created) {
            match self.runtime().delete(&id).await {
                Ok(()) => {
                    if let Err(e) = self.until_gone(&id).await {
                        problems.push(format!("{id}: {e}"));
                    }
                }
                Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => problems.push(format!("deleting {id}: {e}")),
            }
        }
        if let Ok(all) = self.runtime().list().await {
            let leftovers: Vec<String> = all
                .iter()
                .filter(|r| {
                    r.metadata
                        .iter()
                        .any(|(k, v)| k.as_str() == RUN_LABEL && v.as_str() == self.target.run_id)
                })
                .map(|r| r.id.to_string())
                .collect();
            if !leftovers.is_empty() {
                problems.push(format!("sandboxes left behind: {}", leftovers.join(", ")));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

fn pvc_volume(
    name: &str,
    claim: &ClaimName,
    mount: &str,
    sub_path: Option<&str>,
    delete: bool,
    create: bool,
) -> wire::Volume {
    wire::Volume {
        name: name.to_owned(),
        host: None,
        pvc: Some(wire::PvcBackend {
            claim_name: claim.to_string(),
            create_if_not_exists: create,
            delete_on_sandbox_termination: delete,
            storage_class: None,
            storage: None,
            access_modes: None,
        }),
        ossfs: None,
        nfs: None,
        persistent_volume_claim: None,
        host_path: None,
        mount_path: Some(mount.to_owned()),
        read_only: false,
        sub_path: sub_path.map(str::to_owned),
    }
}

fn expect_code<T: std::fmt::Debug>(
    result: Result<T, RuntimeError>,
    code: ErrorCode,
    what: &str,
) -> Result<(), String> {
    match result {
        Err(e) if e.code() == code => Ok(()),
        Err(e) => Err(format!("{what}: expected {code}, got {} ({e})", e.code())),
        Ok(v) => Err(format!("{what}: expected {code}, got success {v:?}")),
    }
}

async fn create_get_list(ctx: &mut Context<'_>) -> CheckResult {
    let created = ctx.create_ok(ctx.request()).await?;
    ensure!(
        created.status.state == SandboxState::Running,
        "create reported {:?}, not Running",
        created.status.state
    );
    ensure!(
        created.entrypoint == ctx.target.entrypoint,
        "entrypoint {:?} not kept",
        created.entrypoint
    );
    ensure!(
        created.image == ctx.target.image,
        "image {} not kept",
        created.image
    );
    ensure!(
        created.expires_at.is_none(),
        "a sandbox without timeout has expiresAt {:?}",
        created.expires_at
    );
    ensure!(
        created
            .metadata
            .iter()
            .any(|(k, v)| k.as_str() == RUN_LABEL && v.as_str() == ctx.target.run_id),
        "metadata not kept: {:?}",
        created.metadata
    );
    let got = ctx
        .runtime()
        .get(&created.id)
        .await
        .map_err(|e| format!("get: {e}"))?;
    ensure!(
        got.id == created.id && got.status.state == SandboxState::Running,
        "get disagrees with create: {got:?}"
    );
    ensure!(
        got.metadata == created.metadata && got.entrypoint == created.entrypoint,
        "get lost fields: {got:?}"
    );
    let all = ctx
        .runtime()
        .list()
        .await
        .map_err(|e| format!("list: {e}"))?;
    ensure!(
        all.iter().any(|r| r.id == created.id),
        "list does not include {}",
        created.id
    );
    // A runtime's own list_page must agree with selecting from the full list.
    ctx.create_ok(ctx.request()).await?;
    for (offset, limit) in [(0, 1), (1, 1), (0, 10)] {
        let selection = ListSelection {
            states: vec![SandboxState::Running, SandboxState::Paused],
            metadata: vec![(RUN_LABEL.to_owned(), ctx.target.run_id.clone())],
            offset,
            limit,
        };
        let page = ctx
            .runtime()
            .list_page(&selection)
            .await
            .map_err(|e| format!("list_page: {e}"))?;
        let expected = selection.select(
            ctx.runtime()
                .list()
                .await
                .map_err(|e| format!("list: {e}"))?,
        );
        ensure!(
            page == expected,
            "list_page({offset}, {limit}) gives {page:?}, selecting from list gives {expected:?}"
        );
        ensure!(
            page.total == 2,
            "list_page counts {} sandboxes of this run, not 2",
            page.total
        );
    }
    Ok(Outcome::Passed)
}

async fn expiry_follows_timeout(ctx: &mut Context<'_>) -> CheckResult {
    let mut request = ctx.request();
    request.timeout = Some(3600);
    let created = ctx.create_ok(request).await?;
    let expires = created.expires_at.ok_or("timeout 3600 gave no expiresAt")?;
    ensure!(
        expires - created.created_at == TimeDelta::seconds(3600),
        "expiresAt {expires} is not createdAt {} + 3600 s",
        created.created_at
    );
    // The reaper's questions, however the runtime answers them, agree with the record.
    let rt = ctx.runtime();
    let next = rt
        .next_expiry()
        .await
        .map_err(|e| format!("next_expiry: {e}"))?;
    ensure!(
        next.is_some_and(|n| n <= expires),
        "next_expiry is {next:?} with a sandbox expiring at {expires}"
    );
    let due = rt
        .due(expires, usize::MAX)
        .await
        .map_err(|e| format!("due: {e}"))?;
    ensure!(due.contains(&created.id), "due at its expiry leaves it out");
    let early = rt
        .due(expires - TimeDelta::seconds(1), usize::MAX)
        .await
        .map_err(|e| format!("due: {e}"))?;
    ensure!(!early.contains(&created.id), "due a second early");
    let mut counts = rt
        .count_by_state()
        .await
        .map_err(|e| format!("count_by_state: {e}"))?;
    let mut listed = BTreeMap::new();
    for record in rt.list().await.map_err(|e| format!("list: {e}"))? {
        *listed.entry(record.status.state).or_insert(0) += 1;
    }
    counts.retain(|_, n| *n > 0);
    ensure!(
        counts == listed,
        "count_by_state says {counts:?}, list says {listed:?}"
    );
    Ok(Outcome::Passed)
}

async fn metadata_patch(ctx: &mut Context<'_>) -> CheckResult {
    let mut request = ctx.request();
    if let Some(m) = request.metadata.as_mut() {
        m.insert("team".into(), "a".into());
        m.insert("gone".into(), "x".into());
    }
    let created = ctx.create_ok(request).await?;
    let patch = MetadataPatch::from_request(&wire::PatchSandboxMetadataRequest(BTreeMap::from([
        ("team".to_owned(), Some("b".to_owned())),
        ("new".to_owned(), Some("n".to_owned())),
        ("gone".to_owned(), None),
        ("never-there".to_owned(), None),
    ])))
    .map_err(|v| v.to_string())?;
    let patched = ctx
        .runtime()
        .patch_metadata(&created.id, &patch)
        .await
        .map_err(|e| format!("patch: {e}"))?;
    let flat: BTreeMap<&str, &str> = patched
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let expected = BTreeMap::from([
        (RUN_LABEL, ctx.target.run_id.as_str()),
        ("team", "b"),
        ("new", "n"),
    ]);
    ensure!(
        flat == expected,
        "patched metadata {flat:?}, expected {expected:?}"
    );
    let got = ctx
        .runtime()
        .get(&created.id)
        .await
        .map_err(|e| format!("get: {e}"))?;
    ensure!(
        got.metadata == patched.metadata,
        "get does not show the patch: {:?}",
        got.metadata
    );
    let empty = ctx
        .runtime()
        .patch_metadata(&created.id, &MetadataPatch::default())
        .await
        .map_err(|e| format!("empty patch: {e}"))?;
    ensure!(
        empty.metadata == patched.metadata,
        "an empty patch changed metadata"
    );
    Ok(Outcome::Passed)
}

async fn renew(ctx: &mut Context<'_>) -> CheckResult {
    let mut request = ctx.request();
    request.timeout = Some(600);
    let created = ctx.create_ok(request).await?;
    // Whole seconds: runtimes may store expiry at second precision.
    let wanted = chrono::DateTime::from_timestamp(Utc::now().timestamp() + 7200, 0)
        .ok_or("clock out of range")?;
    let renewed = ctx
        .runtime()
        .renew(&created.id, wanted)
        .await
        .map_err(|e| format!("renew: {e}"))?;
    ensure!(
        renewed == wanted,
        "renew returned {renewed}, asked {wanted}"
    );
    let got = ctx
        .runtime()
        .get(&created.id)
        .await
        .map_err(|e| format!("get: {e}"))?;
    ensure!(
        got.expires_at == Some(wanted),
        "get shows expiresAt {:?} after renewing to {wanted}",
        got.expires_at
    );
    Ok(Outcome::Passed)
}

async fn delete_if_expired(ctx: &mut Context<'_>) -> CheckResult {
    let mut request = ctx.request();
    request.timeout = Some(3600);
    let created = ctx.create_ok(request).await?;
    let id = created.id.clone();
    let rt = ctx.runtime();
    let now = Utc::now();
    let reaped = rt
        .delete_if_expired(&id, now)
        .await
        .map_err(|e| format!("delete_if_expired before expiry: {e}"))?;
    ensure!(!reaped, "a sandbox an hour from its expiry was reaped");
    // Renewed into the past (as the clock passing would): now it is due.
    let past =
        chrono::DateTime::from_timestamp(now.timestamp() - 60, 0).ok_or("clock out of range")?;
    rt.renew(&id, past)
        .await
        .map_err(|e| format!("renew: {e}"))?;
    let reaped = rt
        .delete_if_expired(&id, now)
        .await
        .map_err(|e| format!("delete_if_expired after expiry: {e}"))?;
    ensure!(reaped, "an expired sandbox was not reaped");
    ctx.until_gone(&id).await?;
    expect_code(
        rt.delete_if_expired(&id, now).await,
        ErrorCode::SandboxNotFound,
        "delete_if_expired of a deleted sandbox",
    )?;
    Ok(Outcome::Passed)
}

async fn pause_resume(ctx: &mut Context<'_>) -> CheckResult {
    if !ctx.runtime().capabilities().pause {
        // Said so in the capabilities: both answer 400 UNSUPPORTED_FEATURE, and the sandbox
        // keeps running.
        let created = ctx.create_ok(ctx.request()).await?;
        let rt = ctx.runtime();
        expect_code(
            rt.pause(&created.id).await,
            ErrorCode::SandboxUnsupportedFeature,
            "pause where capabilities say no",
        )?;
        expect_code(
            rt.resume(&created.id).await,
            ErrorCode::SandboxUnsupportedFeature,
            "resume where capabilities say no",
        )?;
        let state = rt
            .get(&created.id)
            .await
            .map_err(|e| format!("get: {e}"))?
            .status
            .state;
        ensure!(
            state == SandboxState::Running,
            "after a refused pause the state is {state}"
        );
        return Ok(Outcome::Passed);
    }
    let created = ctx.create_ok(ctx.request()).await?;
    let id = created.id.clone();
    let rt = ctx.runtime();
    expect_code(
        rt.resume(&id).await,
        ErrorCode::SandboxInvalidState,
        "resume while running",
    )?;
    rt.pause(&id).await.map_err(|e| format!("pause: {e}"))?;
    let state = rt
        .get(&id)
        .await
        .map_err(|e| format!("get: {e}"))?
        .status
        .state;
    ensure!(
        state == SandboxState::Paused,
        "after pause the state is {state}"
    );
    expect_code(
        rt.pause(&id).await,
        ErrorCode::SandboxInvalidState,
        "pause while paused",
    )?;
    rt.resume(&id).await.map_err(|e| format!("resume: {e}"))?;
    let state = rt
        .get(&id)
        .await
        .map_err(|e| format!("get: {e}"))?
        .status
        .state;
    ensure!(
        state == SandboxState::Running,
        "after resume the state is {state}"
    );
    Ok(Outcome::Passed)
}

async fn delete(ctx: &mut Context<'_>) -> CheckResult {
    let created = ctx.create_ok(ctx.request()).await?;
    let rt = ctx.runtime();
    rt.delete(&created.id)
        .await
        .map_err(|e| format!("delete: {e}"))?;
    match ctx.target.after_delete {
        AfterDelete::Gone => expect_code(
            rt.delete(&created.id).await,
            ErrorCode::SandboxNotFound,
            "second delete",
        )?,
        // A delete while Stopping is fine (204), as is 404 once gone.
        AfterDelete::StoppingThenGone { .. } => match rt.delete(&created.id).await {
            Ok(()) | Err(RuntimeError::NotFound { .. }) => {}
            Err(e) => return Err(format!("second delete: {e}")),
        },
    }
    ctx.until_gone(&created.id).await?;
    expect_code(
        rt.delete(&created.id).await,
        ErrorCode::SandboxNotFound,
        "delete once gone",
    )?;
    let all = rt.list().await.map_err(|e| format!("list: {e}"))?;
    ensure!(
        !all.iter().any(|r| r.id == created.id),
        "list still shows a deleted sandbox"
    );
    Ok(Outcome::Passed)
}

async fn unknown_id(ctx: &mut Context<'_>) -> CheckResult {
    let id =
        SandboxId::new(&format!("conf-{}-never", ctx.target.run_id)).map_err(|e| e.to_string())?;
    let rt = ctx.runtime();
    let not_found = ErrorCode::SandboxNotFound;
    expect_code(rt.get(&id).await, not_found, "get")?;
    expect_code(rt.delete(&id).await, not_found, "delete")?;
    expect_code(
        rt.delete_if_expired(&id, Utc::now()).await,
        not_found,
        "delete_if_expired",
    )?;
    if rt.capabilities().pause {
        expect_code(rt.pause(&id).await, not_found, "pause")?;
        expect_code(rt.resume(&id).await, not_found, "resume")?;
    }
    expect_code(
        rt.renew(&id, Utc::now() + TimeDelta::hours(1)).await,
        not_found,
        "renew",
    )?;
    expect_code(
        rt.patch_metadata(&id, &MetadataPatch::default()).await,
        not_found,
        "patch_metadata",
    )?;
    expect_code(
        rt.endpoint(&id, ctx.target.endpoint_port).await,
        not_found,
        "endpoint",
    )?;
    Ok(Outcome::Passed)
}

async fn volumes_reported(ctx: &mut Context<'_>) -> CheckResult {
    let caps = ctx.runtime().capabilities();
    if !caps
        .volume_backends
        .get(&VolumeBackendKind::Pvc)
        .is_some_and(|pvc| pvc.sub_path)
    {
        return Ok(Outcome::Skipped(
            "the runtime offers no pvc backend with subPath".into(),
        ));
    }
    let claim = ctx.claim("reported");
    let mut request = ctx.request();
    let mut shared = pvc_volume("shared", &claim, "/mnt/shared", None, true, true);
    shared.read_only = true;
    let mut notes = pvc_volume("notes", &claim, "/mnt/notes", Some("notes"), true, true);
    notes.read_only = true;
    let mut volumes = vec![
        notes,
        pvc_volume(
            "work",
            &claim,
            "/workspace",
            Some("uid-1/session-1"),
            true,
            true,
        ),
        shared,
    ];
    if let Some(root) = &ctx.target.host_root {
        volumes.push(wire::Volume {
            name: "hostdir".into(),
            host: Some(wire::HostBackend {
                path: root.to_string(),
            }),
            pvc: None,
            ossfs: None,
            nfs: None,
            persistent_volume_claim: None,
            host_path: None,
            mount_path: Some("/workspace/host".into()),
            read_only: false,
            sub_path: None,
        });
    }
    request.volumes = Some(volumes);
    let created = ctx.create_ok(request).await?;
    let got = ctx
        .runtime()
        .get(&created.id)
        .await
        .map_err(|e| format!("get: {e}"))?;
    ensure!(
        got.volumes == created.volumes,
        "get reports other volumes than create"
    );
    let by_name = |n: &str| {
        got.volumes
            .iter()
            .find(|v| v.name == n)
            .ok_or(format!("volume {n} not reported"))
    };
    let work = by_name("work")?;
    ensure!(
        work.backend == VolumeBackendKind::Pvc
            && work.source == claim.as_str()
            && work.mount_path == "/workspace"
            && work.sub_path.as_deref() == Some("uid-1/session-1")
            && !work.read_only
            && work.read_only_mode == ReadOnlyMode::None,
        "work reported as {work:?}"
    );
    let shared = by_name("shared")?;
    ensure!(
        shared.read_only && shared.read_only_mode != ReadOnlyMode::None,
        "read-only volume reported as {shared:?}"
    );
    let notes = by_name("notes")?;
    ensure!(
        notes.read_only && notes.read_only_mode != ReadOnlyMode::None,
        "read-only subPath volume reported as {notes:?}"
    );
    // Each volume reports the mode the capabilities state for its backend and kind of mount.
    for volume in &got.volumes {
        let stated = caps
            .volume_backends
            .get(&volume.backend)
            .map(|b| b.read_only_mode(volume.read_only, volume.sub_path.is_some()));
        ensure!(
            stated == Some(volume.read_only_mode),
            "volume {} reports readOnlyMode {:?}; the capabilities state {stated:?}",
            volume.name,
            volume.read_only_mode
        );
    }
    if let Some(root) = &ctx.target.host_root {
        let host = by_name("hostdir")?;
        ensure!(
            host.backend == VolumeBackendKind::Host && host.source == root.as_str(),
            "host volume reported as {host:?}"
        );
    }
    Ok(Outcome::Passed)
}

async fn image_not_found(ctx: &mut Context<'_>) -> CheckResult {
    let mut request = ctx.request();
    request.image = Some(wire::ImageSpec {
        uri: ctx.target.missing_image.clone(),
        auth: None,
    });
    let result = ctx.create(request).await;
    expect_code(
        result,
        ErrorCode::SandboxImageNotFound,
        "create with a missing image",
    )?;
    Ok(Outcome::Passed)
}

async fn missing_claim_leaves_nothing(ctx: &mut Context<'_>) -> CheckResult {
    let before = ctx
        .runtime()
        .list()
        .await
        .map_err(|e| format!("list: {e}"))?
        .len();
    let mut request = ctx.request();
    let fresh = ctx.claim("auto");
    let missing = ctx.claim("missing");
    // The first volume would be created; the second is missing. Nothing may remain of either.
    request.volumes = Some(vec![
        pvc_volume("auto", &fresh, "/a", None, true, true),
        pvc_volume("missing", &missing, "/b", None, false, false),
    ]);
    expect_code(
        ctx.create(request).await,
        ErrorCode::VolumePvcNotFound,
        "create with a missing claim",
    )?;
    let after = ctx
        .runtime()
        .list()
        .await
        .map_err(|e| format!("list: {e}"))?
        .len();
    ensure!(
        before == after,
        "a failed create left a sandbox behind ({before} before, {after} after)"
    );
    // The would-be-created claim must not exist either.
    let mut probe = ctx.request();
    probe.volumes = Some(vec![pvc_volume("auto", &fresh, "/a", None, false, false)]);
    expect_code(
        ctx.create(probe).await,
        ErrorCode::VolumePvcNotFound,
        "claim created by a failed create",
    )?;
    Ok(Outcome::Passed)
}

async fn render_has_no_side_effects(ctx: &mut Context<'_>) -> CheckResult {
    let before = ctx
        .runtime()
        .list()
        .await
        .map_err(|e| format!("list: {e}"))?
        .len();
    let claim = ctx.claim("rendered");
    let mut request = ctx.request();
    request.volumes = Some(vec![pvc_volume(
        "work",
        &claim,
        "/workspace",
        Some("s1"),
        true,
        true,
    )]);
    let create = ctx.create_request(request)?;
    let rendered = ctx
        .runtime()
        .render(&create)
        .await
        .map_err(|e| format!("render: {e}"))?;
    ensure!(
        rendered.sandbox.id == create.id,
        "render reports id {}",
        rendered.sandbox.id
    );
    ensure!(
        rendered.sandbox.volumes.len() == 1,
        "render reports {} volumes",
        rendered.sandbox.volumes.len()
    );
    let after = ctx
        .runtime()
        .list()
        .await
        .map_err(|e| format!("list: {e}"))?
        .len();
    ensure!(before == after, "render created a sandbox");
    expect_code(
        ctx.runtime().get(&create.id).await,
        ErrorCode::SandboxNotFound,
        "get of a rendered id",
    )?;
    let mut probe = ctx.request();
    probe.volumes = Some(vec![pvc_volume(
        "work",
        &claim,
        "/workspace",
        None,
        false,
        false,
    )]);
    expect_code(
        ctx.create(probe).await,
        ErrorCode::VolumePvcNotFound,
        "claim created by render",
    )?;
    Ok(Outcome::Passed)
}

async fn claim_ownership(ctx: &mut Context<'_>) -> CheckResult {
    let claim = ctx.claim("owned");
    let uses =
        |delete: bool, create: bool| pvc_volume("data", &claim, "/data", None, delete, create);
    let mut request = ctx.request();
    request.volumes = Some(vec![uses(true, true)]);
    let creator = ctx.create_ok(request.clone()).await?;
    // Another sandbox asks for deletion too, but did not create the claim.
    let borrower = ctx.create_ok(request).await?;
    let rt = ctx.target.runtime.clone();
    rt.delete(&borrower.id)
        .await
        .map_err(|e| format!("delete borrower: {e}"))?;
    let mut probe = ctx.request();
    probe.volumes = Some(vec![uses(false, false)]);
    let user = ctx.create_ok(probe.clone()).await.map_err(|e| {
        format!("the claim vanished when a sandbox that did not create it was deleted: {e}")
    })?;
    // The creator goes while `user` still mounts the claim: it must stay.
    rt.delete(&creator.id)
        .await
        .map_err(|e| format!("delete creator: {e}"))?;
    let second_user = ctx
        .create_ok(probe.clone())
        .await
        .map_err(|e| format!("the claim was removed while a live sandbox used it: {e}"))?;
    rt.delete(&user.id)
        .await
        .map_err(|e| format!("delete user: {e}"))?;
    rt.delete(&second_user.id)
        .await
        .map_err(|e| format!("delete second user: {e}"))?;
    // On a cluster the claim goes with the garbage collector, after its last Pod: wait for the
    // sandboxes to be gone, then look through dry runs (which make nothing, so they cannot keep
    // the claim alive the way a probing sandbox would).
    if let AfterDelete::StoppingThenGone { within, sleep } = &ctx.target.after_delete {
        for id in [&creator.id, &borrower.id, &user.id, &second_user.id] {
            ctx.until_gone(id).await?;
        }
        let deadline = std::time::Instant::now() + *within;
        let looked = ctx.create_request(probe.clone())?;
        loop {
            match rt.render(&looked).await {
                Err(e) if e.code() == ErrorCode::VolumePvcNotFound => break,
                _ if std::time::Instant::now() >= deadline => {
                    return Err(format!(
                        "the claim is still there {within:?} after its creator and users were gone"
                    ));
                }
                _ => sleep(std::time::Duration::from_millis(500)).await,
            }
        }
    }
    // Now unused, and its creator asked for deletion: it must be gone.
    expect_code(
        ctx.create(probe).await,
        ErrorCode::VolumePvcNotFound,
        "claim after its creator and users are gone",
    )?;
    Ok(Outcome::Passed)
}

async fn endpoint(ctx: &mut Context<'_>) -> CheckResult {
    let created = ctx.create_ok(ctx.request()).await?;
    let endpoint = ctx
        .runtime()
        .endpoint(&created.id, ctx.target.endpoint_port)
        .await
        .map_err(|e| format!("endpoint: {e}"))?;
    ensure!(
        !endpoint.endpoint.contains("://"),
        "endpoint {} carries a scheme",
        endpoint.endpoint
    );
    ensure!(
        endpoint
            .endpoint
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
        "endpoint {} is not host:port",
        endpoint.endpoint
    );
    Ok(Outcome::Passed)
}
