//! Serialises mutating calls on one sandbox (delete, pause, resume, renew, metadata), so that
//! concurrent calls on one id give one clean outcome each, never a 500 from a half-done change.
//!
//! The map holds an entry only while some call holds or waits for that id's lock: the last
//! guard to let go removes it, so ids that are never touched again (or were invented by a
//! client) cost nothing afterwards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_core::model::SandboxId;
use tokio::sync::OwnedMutexGuard;

type Entries = HashMap<SandboxId, Arc<tokio::sync::Mutex<()>>>;

/// One async lock per sandbox id, present while held or waited for.
#[derive(Debug, Default)]
pub struct SandboxLocks {
    locks: Arc<Mutex<Entries>>,
}

/// Holds one sandbox's lock; dropping it releases the lock and, if nobody else holds or waits
/// for it, the map entry.
#[derive(Debug)]
pub struct SandboxLockGuard {
    id: SandboxId,
    guard: Option<OwnedMutexGuard<()>>,
    locks: Arc<Mutex<Entries>>,
}

fn entries(locks: &Mutex<Entries>) -> std::sync::MutexGuard<'_, Entries> {
    locks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SandboxLocks {
    /// Waits for, and holds, the lock of `id`.
    pub async fn lock(&self, id: &SandboxId) -> SandboxLockGuard {
        // The clone taken here counts as a waiter: the entry is not evicted while we wait.
        let lock = entries(&self.locks).entry(id.clone()).or_default().clone();
        let guard = lock.lock_owned().await;
        SandboxLockGuard {
            id: id.clone(),
            guard: Some(guard),
            locks: Arc::clone(&self.locks),
        }
    }

    /// How many ids have an entry (held or waited for).
    pub fn len(&self) -> usize {
        entries(&self.locks).len()
    }

    /// Whether no id has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for SandboxLockGuard {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let lock = Arc::clone(OwnedMutexGuard::mutex(&guard));
        drop(guard);
        let mut map = entries(&self.locks);
        // Under the map's lock nobody can take a new clone, so the count is exact: the map's
        // entry and `lock` are the only references when nobody else holds or waits.
        if map.get(&self.id).is_some_and(|e| Arc::ptr_eq(e, &lock)) && Arc::strong_count(&lock) == 2
        {
            map.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> SandboxId {
        SandboxId::new(&format!("s-{n}")).unwrap()
    }

    #[tokio::test]
    async fn entries_live_only_while_held_or_waited_for() {
        let locks = Arc::new(SandboxLocks::default());
        for n in 0..10_000 {
            drop(locks.lock(&id(n)).await);
        }
        assert!(locks.is_empty(), "{} entries left", locks.len());

        // A waiter keeps the entry after the holder lets go, and still excludes a third caller.
        let first = locks.lock(&id(1)).await;
        let waiter = tokio::spawn({
            let locks = Arc::clone(&locks);
            async move {
                let guard = locks.lock(&id(1)).await;
                tokio::task::yield_now().await;
                drop(guard);
            }
        });
        while Arc::strong_count(&entries(&locks.locks)[&id(1)]) < 3 {
            tokio::task::yield_now().await;
        }
        drop(first);
        assert_eq!(locks.len(), 1, "the waiter's entry must stay");
        waiter.await.unwrap();
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn one_holder_at_a_time() {
        let locks = Arc::new(SandboxLocks::default());
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (locks, inside) = (Arc::clone(&locks), Arc::clone(&inside));
            tasks.push(tokio::spawn(async move {
                for _ in 0..100 {
                    let _guard = locks.lock(&id(7)).await;
                    assert_eq!(inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(locks.is_empty());
    }
}
