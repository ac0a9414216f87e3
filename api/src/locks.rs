//! Serialises mutating calls on one sandbox (delete, pause, resume, renew, metadata), so that
//! concurrent calls on one id give one clean outcome each, never a 500 from a half-done change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_core::model::SandboxId;
use tokio::sync::OwnedMutexGuard;

/// One async lock per sandbox id, made on first use.
#[derive(Debug, Default)]
pub struct SandboxLocks {
    locks: Mutex<HashMap<SandboxId, Arc<tokio::sync::Mutex<()>>>>,
}

impl SandboxLocks {
    /// Waits for, and holds, the lock of `id`.
    pub async fn lock(&self, id: &SandboxId) -> OwnedMutexGuard<()> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(id.clone())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Forgets the lock of a deleted sandbox (holders keep their guard).
    pub fn forget(&self, id: &SandboxId) {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }
}
