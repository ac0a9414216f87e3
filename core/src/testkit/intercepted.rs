//! A runtime for tests that passes every call to an inner runtime, with a hook before and after
//! each: a test holds a call at a gate, changes the world between two calls, counts calls, or
//! panics, without writing the whole `Runtime` delegation again.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::model::{MetadataPatch, SandboxId, SandboxRecord, SandboxState};
use crate::runtime::{
    Capabilities, CreateSandbox, ListSelection, ListedPage, RenderedSandbox, Runtime, RuntimeError,
};
use crate::wire;

/// Which call a hook sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `ping`.
    Ping,
    /// `create` (the hook gets the new id).
    Create,
    /// `get`.
    Get,
    /// `list`.
    List,
    /// `list_page`.
    ListPage,
    /// `delete`.
    Delete,
    /// `delete_if_expired`.
    DeleteIfExpired,
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// `renew`.
    Renew,
    /// `patch_metadata`.
    PatchMetadata,
    /// `endpoint`.
    Endpoint,
    /// `render`.
    Render,
    /// `next_expiry`.
    NextExpiry,
    /// `due`.
    Due,
    /// `count_by_state`.
    CountByState,
}

/// What a hook returns: a future the call waits for.
pub type HookFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
/// A hook: told the call and the sandbox it is about (if any).
pub type Hook = Arc<dyn Fn(Call, Option<&SandboxId>) -> HookFuture + Send + Sync>;

/// A hook that does nothing.
pub fn no_hook() -> Hook {
    Arc::new(|_, _| Box::pin(async {}))
}

/// The inner runtime, with `before` run before each call and `after` after it.
pub struct Intercepted {
    /// Where calls go.
    pub inner: Arc<dyn Runtime>,
    /// Runs before each call.
    pub before: Hook,
    /// Runs after each call (before its result is returned).
    pub after: Hook,
}

impl Intercepted {
    /// `inner` with no hooks yet.
    pub fn new(inner: Arc<dyn Runtime>) -> Self {
        Self {
            inner,
            before: no_hook(),
            after: no_hook(),
        }
    }

    async fn around<T>(
        &self,
        call: Call,
        id: Option<&SandboxId>,
        run: impl Future<Output = T>,
    ) -> T {
        (self.before)(call, id).await;
        let result = run.await;
        (self.after)(call, id).await;
        result
    }
}

#[async_trait]
impl Runtime for Intercepted {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.around(Call::Ping, None, self.inner.ping()).await
    }
    async fn create(&self, request: CreateSandbox) -> Result<SandboxRecord, RuntimeError> {
        let id = request.id.clone();
        self.around(Call::Create, Some(&id), self.inner.create(request))
            .await
    }
    async fn get(&self, id: &SandboxId) -> Result<SandboxRecord, RuntimeError> {
        self.around(Call::Get, Some(id), self.inner.get(id)).await
    }
    async fn list(&self) -> Result<Vec<SandboxRecord>, RuntimeError> {
        self.around(Call::List, None, self.inner.list()).await
    }
    async fn list_page(&self, selection: &ListSelection) -> Result<ListedPage, RuntimeError> {
        self.around(Call::ListPage, None, self.inner.list_page(selection))
            .await
    }
    async fn delete(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.around(Call::Delete, Some(id), self.inner.delete(id))
            .await
    }
    async fn delete_if_expired(
        &self,
        id: &SandboxId,
        now: DateTime<Utc>,
    ) -> Result<bool, RuntimeError> {
        self.around(
            Call::DeleteIfExpired,
            Some(id),
            self.inner.delete_if_expired(id, now),
        )
        .await
    }
    async fn leads_reaping(&self) -> bool {
        self.inner.leads_reaping().await
    }
    async fn next_expiry(&self) -> Result<Option<DateTime<Utc>>, RuntimeError> {
        self.around(Call::NextExpiry, None, self.inner.next_expiry())
            .await
    }
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<SandboxId>, RuntimeError> {
        self.around(Call::Due, None, self.inner.due(now, limit))
            .await
    }
    async fn count_by_state(&self) -> Result<BTreeMap<SandboxState, usize>, RuntimeError> {
        self.around(Call::CountByState, None, self.inner.count_by_state())
            .await
    }
    async fn pause(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.around(Call::Pause, Some(id), self.inner.pause(id))
            .await
    }
    async fn resume(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        self.around(Call::Resume, Some(id), self.inner.resume(id))
            .await
    }
    async fn renew(
        &self,
        id: &SandboxId,
        expires_at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, RuntimeError> {
        self.around(Call::Renew, Some(id), self.inner.renew(id, expires_at))
            .await
    }
    async fn patch_metadata(
        &self,
        id: &SandboxId,
        patch: &MetadataPatch,
    ) -> Result<SandboxRecord, RuntimeError> {
        self.around(
            Call::PatchMetadata,
            Some(id),
            self.inner.patch_metadata(id, patch),
        )
        .await
    }
    async fn endpoint(&self, id: &SandboxId, port: u16) -> Result<wire::Endpoint, RuntimeError> {
        self.around(Call::Endpoint, Some(id), self.inner.endpoint(id, port))
            .await
    }

    async fn proxy_endpoint(
        &self,
        id: &SandboxId,
        port: u16,
    ) -> Result<wire::Endpoint, RuntimeError> {
        self.around(
            Call::Endpoint,
            Some(id),
            self.inner.proxy_endpoint(id, port),
        )
        .await
    }
    async fn render(&self, request: &CreateSandbox) -> Result<RenderedSandbox, RuntimeError> {
        self.around(Call::Render, Some(&request.id), self.inner.render(request))
            .await
    }
}
