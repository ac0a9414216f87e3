//! The expiry reaper (ARCHITECTURE.md, "Lifecycle"): deletes each sandbox within a second of its
//! `expiresAt`. It asks the runtime what exists (so it survives restarts: expiries live in the
//! runtime's state), sleeps until the next expiry or until woken by a create or renewal, and
//! treats a sandbox that is already gone as done. Only a replica the runtime says leads reaps,
//! and each delete is conditional on the expiry still having passed (`delete_if_expired`), so a
//! stale leader cannot reap a sandbox that was just renewed. Deleting goes through the runtime,
//! which releases exactly what `deleteOnSandboxTermination` says.

use std::sync::Arc;
use std::time::Duration;

use berth_core::model::{SandboxId, SandboxRecord};
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

/// Sandboxes whose expiry has come.
pub fn due(records: &[SandboxRecord], now: DateTime<Utc>) -> Vec<SandboxId> {
    records
        .iter()
        .filter(|r| r.expires_at.is_some_and(|e| e <= now))
        .map(|r| r.id.clone())
        .collect()
}

/// How long to sleep before the next expiry (at most [`MAX_SLEEP`]).
pub fn sleep_until_next(records: &[SandboxRecord], now: DateTime<Utc>) -> Duration {
    records
        .iter()
        .filter_map(|r| r.expires_at)
        .filter(|e| *e > now)
        .min()
        .and_then(|next| (next - now).to_std().ok())
        .map_or(MAX_SLEEP, |d| d.min(MAX_SLEEP))
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
        let records = match state.runtime.list().await {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(error = %e, "reaper: cannot list sandboxes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let now = clock.now();
        for id in due(&records, now) {
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
        let sleep = sleep_until_next(&records, clock.now());
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = state.reaper_wakeup.notified() => {}
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
    use berth_core::model::{SandboxState, SandboxStatus};

    fn record(id: &str, expires: Option<DateTime<Utc>>) -> SandboxRecord {
        let at = DateTime::from_timestamp(0, 0).unwrap();
        SandboxRecord {
            id: SandboxId::new(id).unwrap(),
            image: "i".into(),
            platform: None,
            entrypoint: vec![],
            metadata: Default::default(),
            status: SandboxStatus::new(SandboxState::Running, at),
            created_at: at,
            expires_at: expires,
            volumes: vec![],
        }
    }

    #[test]
    fn due_and_next_wakeup() {
        let now = DateTime::from_timestamp(1000, 0).unwrap();
        let at = |s| DateTime::from_timestamp(s, 0);
        let records = vec![
            record("a", at(999)),
            record("b", at(1000)),
            record("c", at(1005)),
            record("d", None),
            record("e", at(1100)),
        ];
        let due: Vec<String> = due(&records, now).iter().map(ToString::to_string).collect();
        assert_eq!(due, ["a", "b"]);
        assert_eq!(sleep_until_next(&records, now), Duration::from_secs(5));
        assert_eq!(sleep_until_next(&records[3..4], now), MAX_SLEEP);
        assert_eq!(sleep_until_next(&[record("f", at(5000))], now), MAX_SLEEP);
    }
}
