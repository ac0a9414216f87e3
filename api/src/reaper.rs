//! The expiry reaper (ARCHITECTURE.md, "Lifecycle"): deletes each sandbox within a second of its
//! `expiresAt`. It asks the runtime what is due and when the next expiry comes (so it survives
//! restarts: expiries live in the runtime's state; and it never lists every sandbox: the runtime
//! answers from an index), sleeps until then (at most 30 s) or until woken by a create or renewal, and
//! treats a sandbox that is already gone as done. Only a replica the runtime says leads reaps,
//! and each delete is conditional on the expiry still having passed (`delete_if_expired`), so a
//! stale leader cannot reap a sandbox that was just renewed. Deleting goes through the runtime,
//! which releases exactly what `deleteOnSandboxTermination` says.

use std::sync::Arc;
use std::time::Duration;

use berth_core::model::SandboxId;
use berth_core::runtime::RuntimeError;
use chrono::{DateTime, Utc};

use crate::AppState;
use crate::metrics::ReaperResult;

/// Longest sleep between looks, so expiries set outside this process are still found.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Wall-clock time, replaceable in tests.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// How many due sandboxes one pass takes; a full batch is followed by another pass at once.
const BATCH: usize = 64;

/// Pause before retrying when something already due is still there (its delete failed).
const RETRY_DUE: Duration = Duration::from_secs(1);

/// How long to sleep until `next` (at most [`MAX_SLEEP`]; [`RETRY_DUE`] when it has passed).
pub fn sleep_until(next: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Duration {
    match next {
        None => MAX_SLEEP,
        Some(next) if next <= now => RETRY_DUE,
        Some(next) => (next - now)
            .to_std()
            .map_or(MAX_SLEEP, |d| d.min(MAX_SLEEP)),
    }
}

/// How often a replica that does not lead asks again whether it does.
const FOLLOWER_POLL: Duration = Duration::from_secs(5);

/// Runs forever: reap what is due, sleep until the next expiry or a wake-up. A replica that
/// does not lead (the runtime says so) reaps nothing and asks again every [`FOLLOWER_POLL`].
pub async fn run(state: AppState, clock: Arc<dyn Clock>) {
    loop {
        if !state.runtime.leads_reaping().await {
            tokio::select! {
                () = tokio::time::sleep(FOLLOWER_POLL) => {}
                () = state.reaper_wakeup.notified() => {}
            }
            continue;
        }
        // The runtime answers from its expiry index: no pass lists every sandbox.
        let due = match state.runtime.due(clock.now(), BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "reaper: cannot ask for due sandboxes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let full_batch = due.len() == BATCH;
        for id in due {
            // Detached and tracked like a client's call: stopping the reaper (shutdown) never
            // cuts a delete half-way.
            let task_state = state.clone();
            let task_clock = clock.clone();
            let reaped = state
                .in_flight
                .spawn(async move { reap(&task_state, &id, task_clock.as_ref()).await });
            if let Err(e) = reaped.await {
                tracing::error!(error = %e, "reaper: a delete task failed");
            }
        }
        if full_batch {
            continue;
        }
        let next = match state.runtime.next_expiry().await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "reaper: cannot ask for the next expiry");
                None
            }
        };
        let sleep = sleep_until(next, clock.now());
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = state.reaper_wakeup.notified() => {}
            // An earlier expiry set through another replica.
            () = state.runtime.expiries_changed() => {}
        }
    }
}

/// Deletes one sandbox if it is still expired. The runtime decides that together with the
/// delete (`delete_if_expired`), so a renewal that lands after the sandbox was found due — from
/// a client of this server, or of another replica — wins.
async fn reap(state: &AppState, id: &SandboxId, clock: &dyn Clock) {
    // Serialised with this server's own calls on the sandbox.
    let _guard = state.locks.lock(id).await;
    match state.runtime.delete_if_expired(id, clock.now()).await {
        Ok(true) => {
            tracing::info!(sandbox = %id, "reaper: deleted expired sandbox");
            state.metrics.record_reaper(ReaperResult::Deleted);
        }
        Ok(false) => {
            tracing::debug!(sandbox = %id, "reaper: renewed before it was deleted");
        }
        Err(RuntimeError::NotFound { .. }) => {
            state.metrics.record_reaper(ReaperResult::AlreadyGone);
        }
        Err(e) => {
            tracing::error!(sandbox = %id, error = %e, "reaper: deleting expired sandbox failed");
            state.metrics.record_reaper(ReaperResult::Failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_until_the_next_expiry_within_bounds() {
        let now = DateTime::from_timestamp(1000, 0).unwrap();
        let at = |s| DateTime::from_timestamp(s, 0);
        assert_eq!(sleep_until(at(1005), now), Duration::from_secs(5));
        assert_eq!(sleep_until(None, now), MAX_SLEEP);
        assert_eq!(sleep_until(at(5000), now), MAX_SLEEP);
        // Still there after its expiry: a failed delete, retried shortly.
        assert_eq!(sleep_until(at(999), now), RETRY_DUE);
        assert_eq!(sleep_until(at(1000), now), RETRY_DUE);
    }
}
