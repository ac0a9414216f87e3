//! The runtime's in-memory state with one owner and one lock: the sandbox records as the store
//! committed them, the container views as the engine last reported them, and the list order
//! over both (see ARCHITECTURE.md, "One owner of runtime state"). One lock means there is no
//! lock order to keep; it is taken only through closures, which cannot `.await`, so it is never
//! held across a suspension point, and nothing in here calls the engine or the disk.
//!
//! Writers: the store, after its commit (memory never shows what the disk does not hold), and
//! the container index. Readers (get, list) answer from here alone ("Reads never call the
//! engine").

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::RwLock;

use berth_core::list_index::ListIndex;
use berth_core::model::SandboxState;
use chrono::{DateTime, Utc};

use crate::index::{ContainerStatus, ContainerView};
use crate::ossfs::OssfsKey;
use crate::store::{Phase, StoredSandbox};

/// Records, container views and the list index over them.
#[derive(Debug, Default)]
pub struct RuntimeState {
    records: HashMap<String, StoredSandbox>,
    views: HashMap<String, ContainerView>,
    /// Every record, under the state its phase and container give it.
    listing: ListIndex,
    /// Sandboxes the reaper found expired and is deleting: a renewal no longer applies to them.
    reaping: HashSet<String>,
    /// Every record with an expiry, earliest first: the reaper's next wake-up and what is due,
    /// without a scan.
    expiries: BTreeSet<(DateTime<Utc>, String)>,
}

/// What [`RuntimeState::claim_expired`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryClaim {
    /// No such record (or the reaper already has it).
    Missing,
    /// It has not expired (or has no expiry): leave it.
    NotExpired,
    /// Expired, and now the reaper's to delete: renewals find it gone.
    Claimed(Box<StoredSandbox>),
}

/// The state a sandbox is in, from its create progress and its container's status.
pub fn sandbox_state(phase: Phase, container: Option<ContainerStatus>) -> SandboxState {
    match (phase, container) {
        (Phase::Deleting, _) => SandboxState::Stopping,
        (Phase::Creating, _) | (_, Some(ContainerStatus::Created)) => SandboxState::Pending,
        (_, Some(ContainerStatus::Running)) => SandboxState::Running,
        (_, Some(ContainerStatus::Paused)) => SandboxState::Paused,
        (
            _,
            Some(ContainerStatus::Exited {
                code: 0,
                oom_killed: false,
            }),
        ) => SandboxState::Terminated,
        (_, Some(ContainerStatus::Exited { .. } | ContainerStatus::Gone) | None) => {
            SandboxState::Failed
        }
    }
}

impl RuntimeState {
    /// One sandbox's record.
    pub fn record(&self, id: &str) -> Option<&StoredSandbox> {
        self.records.get(id)
    }

    /// Every record, in no order.
    pub fn records(&self) -> impl Iterator<Item = &StoredSandbox> {
        self.records.values()
    }

    /// The view of one sandbox's container.
    pub fn view(&self, id: &str) -> Option<&ContainerView> {
        self.views.get(id)
    }

    /// The list order and postings.
    pub fn listing(&self) -> &ListIndex {
        &self.listing
    }

    /// Whether any record uses the ossfs mount `key` (its reference count is the records).
    pub fn ossfs_key_in_use(&self, key: &OssfsKey) -> bool {
        self.records
            .values()
            .any(|s| s.volumes.iter().any(|v| v.ossfs_key.as_ref() == Some(key)))
    }

    /// Inserts or replaces a record (the store calls this after its commit).
    pub(crate) fn put_record(&mut self, sandbox: StoredSandbox) {
        let state = sandbox_state(sandbox.phase, self.status(&sandbox.id));
        self.listing
            .upsert(&sandbox.id, sandbox.created_at, &sandbox.metadata, state);
        if let Some(old) = self.records.get(&sandbox.id).and_then(|r| r.expires_at) {
            self.expiries.remove(&(old, sandbox.id.clone()));
        }
        if let Some(expires_at) = sandbox.expires_at {
            self.expiries.insert((expires_at, sandbox.id.clone()));
        }
        self.records.insert(sandbox.id.clone(), sandbox);
    }

    /// Forgets a record (the store calls this after its commit).
    pub(crate) fn remove_record(&mut self, id: &str) {
        if let Some(record) = self.records.remove(id)
            && let Some(expires_at) = record.expires_at
        {
            self.expiries.remove(&(expires_at, record.id));
        }
        self.listing.remove(id);
        self.reaping.remove(id);
    }

    /// The earliest expiry of any record.
    pub fn next_expiry(&self) -> Option<DateTime<Utc>> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// At most `limit` records whose expiry is at or before `now`, earliest first, leaving out
    /// those the reaper is already deleting.
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Vec<&str> {
        self.expiries
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter(|(_, id)| !self.reaping.contains(id))
            .take(limit)
            .map(|(_, id)| id.as_str())
            .collect()
    }

    /// How many sandboxes are in each state (from the list index's postings).
    pub fn count_by_state(&self) -> BTreeMap<SandboxState, usize> {
        self.listing.count_by_state()
    }

    /// Whether the reaper is deleting this sandbox.
    pub fn is_being_reaped(&self, id: &str) -> bool {
        self.reaping.contains(id)
    }

    /// If the record's expiry is at or before `now`, hands it to the reaper (renewals then find
    /// it gone). The store runs this on its writer, in order with its commits, so a renewal is
    /// wholly before it (and wins) or wholly after it.
    pub(crate) fn claim_expired(
        &mut self,
        id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> ExpiryClaim {
        if self.reaping.contains(id) {
            return ExpiryClaim::Missing;
        }
        match self.records.get(id) {
            None => ExpiryClaim::Missing,
            Some(r) if r.expires_at.is_some_and(|e| e <= now) => {
                self.reaping.insert(id.to_owned());
                ExpiryClaim::Claimed(Box::new(r.clone()))
            }
            Some(_) => ExpiryClaim::NotExpired,
        }
    }

    /// Gives a claimed sandbox back (its delete failed: a later pass or a renewal may act).
    pub(crate) fn release_claim(&mut self, id: &str) {
        self.reaping.remove(id);
    }

    fn status(&self, id: &str) -> Option<ContainerStatus> {
        self.views.get(id).map(|v| v.status)
    }

    /// Re-files a sandbox in the list index after its container changed.
    fn relist(&mut self, id: &str) {
        if let Some(phase) = self.records.get(id).map(|r| r.phase) {
            let state = sandbox_state(phase, self.status(id));
            self.listing.set_state(id, state);
        }
    }

    /// Sets the view of a sandbox's container.
    pub(crate) fn set_view(&mut self, id: &str, view: ContainerView) {
        self.views.insert(id.to_owned(), view);
        self.relist(id);
    }

    /// Changes the status of a known container (nothing when there is no view).
    pub(crate) fn set_status(&mut self, id: &str, status: ContainerStatus) {
        if let Some(view) = self.views.get_mut(id) {
            view.status = status;
            view.changed_at = Some(chrono::Utc::now());
            self.relist(id);
        }
    }

    /// Forgets a sandbox's container.
    pub(crate) fn remove_view(&mut self, id: &str) {
        if self.views.remove(id).is_some() {
            self.relist(id);
        }
    }

    /// Forgets a sandbox's container only if it is `container_id` (a newer container may have
    /// taken the sandbox's name).
    pub(crate) fn remove_view_of(&mut self, id: &str, container_id: &str) {
        if self
            .views
            .get(id)
            .is_some_and(|v| v.container_id == container_id)
        {
            self.remove_view(id);
        }
    }

    /// Replaces every view with a fresh list from the engine.
    pub(crate) fn replace_views(&mut self, mut fresh: HashMap<String, ContainerView>) {
        // A list has no transition times: keep those of views that did not change.
        for (id, view) in &mut fresh {
            if let Some(known) = self.views.get(id)
                && known.container_id == view.container_id
                && known.status == view.status
            {
                view.changed_at = known.changed_at;
            }
        }
        let old = std::mem::replace(&mut self.views, fresh);
        let changed: Vec<String> = old
            .iter()
            .filter(|(id, view)| self.views.get(*id).map(|v| v.status) != Some(view.status))
            .map(|(id, _)| id.clone())
            .chain(
                self.views
                    .keys()
                    .filter(|id| !old.contains_key(*id))
                    .cloned(),
            )
            .collect();
        for id in changed {
            self.relist(&id);
        }
    }
}

/// The one lock around [`RuntimeState`]. Shared (in an `Arc`) by the store, the container
/// index and the runtime.
#[derive(Debug, Default)]
pub struct SharedState {
    inner: RwLock<RuntimeState>,
}

impl SharedState {
    /// A state holding `records` and no container views.
    pub(crate) fn with_records(records: impl IntoIterator<Item = StoredSandbox>) -> Self {
        let mut state = RuntimeState::default();
        for record in records {
            state.put_record(record);
        }
        Self {
            inner: RwLock::new(state),
        }
    }

    /// Runs `f` on the state under the read lock.
    pub fn read<R>(&self, f: impl FnOnce(&RuntimeState) -> R) -> R {
        f(&self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Runs `f` on the state under the write lock.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut RuntimeState) -> R) -> R {
        f(&mut self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_record_being_deleted_is_stopping_whatever_its_container_does() {
        for container in [
            None,
            Some(ContainerStatus::Running),
            Some(ContainerStatus::Exited {
                code: 137,
                oom_killed: false,
            }),
        ] {
            assert_eq!(
                sandbox_state(Phase::Deleting, container),
                SandboxState::Stopping
            );
        }
    }

    use std::collections::BTreeMap;

    use berth_core::runtime::ListSelection;
    use chrono::Utc;

    use super::*;

    fn record(id: &str, phase: Phase) -> StoredSandbox {
        StoredSandbox {
            id: id.to_owned(),
            phase,
            image: "img".into(),
            platform: None,
            entrypoint: vec!["sh".into()],
            metadata: BTreeMap::new(),
            created_at: Utc::now(),
            expires_at: None,
            volumes: vec![],
            created_volumes: vec![],
            sandbox_volumes: vec![],
            ports: BTreeMap::new(),
        }
    }

    fn view(container: &str, status: ContainerStatus) -> ContainerView {
        ContainerView {
            container_id: container.into(),
            status,
            changed_at: None,
        }
    }

    fn listed(state: &RuntimeState, wanted: SandboxState) -> Vec<String> {
        let selection = ListSelection {
            states: vec![wanted],
            metadata: vec![],
            offset: 0,
            limit: 100,
        };
        let (ids, _) = state.listing().select(&selection);
        ids.into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn the_listing_follows_records_and_containers_in_any_order() {
        let mut state = RuntimeState::default();
        // A container seen before its record is written (the index may be first).
        state.set_view("a", view("c1", ContainerStatus::Running));
        state.put_record(record("a", Phase::Created));
        assert_eq!(listed(&state, SandboxState::Running), ["a"]);
        state.set_status("a", ContainerStatus::Paused);
        assert_eq!(listed(&state, SandboxState::Paused), ["a"]);
        // Another container's destroy event leaves the view alone.
        state.remove_view_of("a", "c0");
        assert_eq!(listed(&state, SandboxState::Paused), ["a"]);
        state.remove_view_of("a", "c1");
        assert_eq!(listed(&state, SandboxState::Failed), ["a"]);
        state.replace_views(HashMap::from([(
            "a".to_owned(),
            view(
                "c2",
                ContainerStatus::Exited {
                    code: 0,
                    oom_killed: false,
                },
            ),
        )]));
        assert_eq!(listed(&state, SandboxState::Terminated), ["a"]);
        state.replace_views(HashMap::new());
        assert_eq!(listed(&state, SandboxState::Failed), ["a"]);
        state.remove_record("a");
        assert!(listed(&state, SandboxState::Failed).is_empty());
    }

    #[test]
    fn the_expiry_index_follows_renewals_and_removals() {
        let at = |s| DateTime::from_timestamp(s, 0).unwrap();
        let mut state = RuntimeState::default();
        for (id, expires) in [
            ("a", Some(300)),
            ("b", Some(100)),
            ("c", None),
            ("d", Some(200)),
        ] {
            let mut r = record(id, Phase::Created);
            r.expires_at = expires.map(at);
            state.put_record(r);
        }
        assert_eq!(state.next_expiry(), Some(at(100)));
        assert_eq!(state.due(at(250), 10), ["b", "d"]);
        assert_eq!(state.due(at(250), 1), ["b"]);
        // Renewed: its old expiry is gone from the index.
        let mut renewed = record("b", Phase::Created);
        renewed.expires_at = Some(at(400));
        state.put_record(renewed);
        assert_eq!(state.next_expiry(), Some(at(200)));
        assert_eq!(state.due(at(250), 10), ["d"]);
        // Claimed by the reaper: no longer due; removed: no longer anywhere.
        assert!(matches!(
            state.claim_expired("d", at(250)),
            ExpiryClaim::Claimed(_)
        ));
        assert!(state.due(at(250), 10).is_empty());
        state.remove_record("d");
        state.remove_record("a");
        assert_eq!(state.next_expiry(), Some(at(400)));
        assert_eq!(state.expiries.len(), 1);
        assert_eq!(
            state.count_by_state(),
            BTreeMap::from([(SandboxState::Failed, 2)]),
            "b and c have no container"
        );
    }

    #[test]
    fn a_record_still_creating_is_pending_whatever_its_container() {
        let mut state = RuntimeState::default();
        state.put_record(record("b", Phase::Creating));
        state.set_view("b", view("c", ContainerStatus::Running));
        assert_eq!(listed(&state, SandboxState::Pending), ["b"]);
        state.put_record(record("b", Phase::Created));
        assert_eq!(listed(&state, SandboxState::Running), ["b"]);
    }
}
