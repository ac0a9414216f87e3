//! The sandboxes as the Pod watch last showed them: each Pod of Berth's, read into a sandbox
//! record (state from its annotation, status from the Pod's and from the latest start warning
//! the event watch reported for it), with the list order and the expiry order over them. Reads (get, list pages, the reaper's next expiry, counts per state)
//! are answered from here without a request to the API server. Pure: the runtime's watch tasks
//! feed it Pods and events. A warning is kept only for a Pod in the table, one per sandbox, and
//! goes with its Pod.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use berth_core::list_index::ListIndex;
use berth_core::model::{SandboxId, SandboxRecord, SandboxState};
use berth_core::runtime::{ListSelection, ListedPage};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;

use crate::events::{PodWarning, with_warning};
use crate::pod_state::{PodState, PodStateError};
use crate::pod_status::{StartProgress, sandbox_status, start_progress};
use crate::render::LABEL_ID;

/// One sandbox as the table holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The sandbox as reported.
    pub record: SandboxRecord,
    /// Berth's state as stored on the Pod.
    pub state: PodState,
    /// The Pod's `resourceVersion`: writes carry it as their precondition.
    pub resource_version: Option<String>,
    /// The Pod's IP, once it has one.
    pub pod_ip: Option<String>,
    /// How its start is going (what a create waiting for it acts on).
    pub start: StartProgress,
    /// The Pod's uid (owner references of the Secrets and claims made for it).
    pub pod_uid: Option<String>,
    /// The status as the Pod alone says (`record.status` adds the warning's cause).
    pub pod_status: berth_core::model::SandboxStatus,
    /// Whether the Pod is bound to a node.
    pub scheduled: bool,
    /// The latest start warning reported for this Pod (see `events`).
    pub warning: Option<PodWarning>,
}

impl Entry {
    fn show_warning(&mut self) {
        self.record.status = with_warning(
            self.pod_status.clone(),
            self.scheduled,
            self.warning.as_ref(),
        );
    }
}

/// Why a Pod could not be read into a sandbox (the Pod is then left out, and logged).
#[derive(Debug, thiserror::Error)]
pub enum UnreadablePod {
    /// The Pod has no sandbox id label, or an invalid one.
    #[error("pod {pod}: no valid {LABEL_ID} label")]
    NoId {
        /// The Pod's name.
        pod: String,
    },
    /// Its state annotation cannot be read.
    #[error("pod {pod}: {source}")]
    State {
        /// The Pod's name.
        pod: String,
        /// Why.
        source: PodStateError,
    },
}

/// Reads a Pod into a sandbox.
pub fn entry_of(pod: &Pod) -> Result<Entry, UnreadablePod> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let id = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_ID))
        .and_then(|id| SandboxId::new(id).ok())
        .ok_or_else(|| UnreadablePod::NoId { pod: name.clone() })?;
    let unreadable = |source| UnreadablePod::State {
        pod: name.clone(),
        source,
    };
    let state =
        PodState::from_annotations(pod.metadata.annotations.as_ref()).map_err(unreadable)?;
    let volumes = state.reported_volumes().map_err(unreadable)?;
    let container = pod.spec.as_ref().and_then(|s| s.containers.first());
    let pod_status = sandbox_status(pod, state.created_at);
    let record = SandboxRecord {
        id,
        image: container.and_then(|c| c.image.clone()).unwrap_or_default(),
        platform: None,
        entrypoint: state.entrypoint.clone(),
        metadata: state.typed_metadata(),
        status: pod_status.clone(),
        created_at: state.created_at,
        expires_at: state.expires_at,
        volumes,
    };
    Ok(Entry {
        record,
        state,
        resource_version: pod.metadata.resource_version.clone(),
        pod_ip: pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty()),
        start: start_progress(pod),
        pod_uid: pod.metadata.uid.clone(),
        pod_status,
        scheduled: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty()),
        warning: None,
    })
}

/// Every sandbox, in list order and expiry order.
#[derive(Debug, Default)]
pub struct SandboxTable {
    entries: HashMap<String, Entry>,
    listing: ListIndex,
    expiries: BTreeSet<(DateTime<Utc>, String)>,
}

impl SandboxTable {
    /// Takes a Pod the watch reported as added or changed; `Err` if it cannot be read (it is
    /// then dropped from the table, so a hand-damaged Pod is not served stale).
    pub fn apply(&mut self, pod: &Pod) -> Result<(), UnreadablePod> {
        match entry_of(pod) {
            Ok(mut entry) => {
                // The same Pod keeps its warning; a new Pod of the same sandbox starts afresh.
                if let Some(old) = self.entries.get(entry.record.id.as_str())
                    && old.pod_uid == entry.pod_uid
                {
                    entry.warning.clone_from(&old.warning);
                    entry.show_warning();
                }
                self.insert(entry);
                Ok(())
            }
            Err(e) => {
                if let Some(id) = pod.metadata.labels.as_ref().and_then(|l| l.get(LABEL_ID)) {
                    self.remove(id);
                }
                Err(e)
            }
        }
    }

    /// Takes a Pod the watch reported as deleted.
    pub fn delete(&mut self, pod: &Pod) {
        if let Some(id) = pod.metadata.labels.as_ref().and_then(|l| l.get(LABEL_ID)) {
            self.remove(id);
        }
    }

    /// Replaces everything with a fresh listing (the watch's re-list); the Pods that cannot be
    /// read are returned.
    pub fn replace_all<'a>(
        &mut self,
        pods: impl IntoIterator<Item = &'a Pod>,
    ) -> Vec<UnreadablePod> {
        let before = std::mem::take(self);
        pods.into_iter()
            .filter_map(|pod| {
                let read = entry_of(pod).map(|mut entry| {
                    if let Some(old) = before.entries.get(entry.record.id.as_str())
                        && old.pod_uid == entry.pod_uid
                    {
                        entry.warning.clone_from(&old.warning);
                        entry.show_warning();
                    }
                    entry
                });
                match read {
                    Ok(entry) => {
                        self.insert(entry);
                        None
                    }
                    Err(e) => Some(e),
                }
            })
            .collect()
    }

    /// Takes a start warning the event watch reported about the Pod `pod_name`: kept if that Pod
    /// is a sandbox's current Pod and the warning is its latest. Returns the sandbox's id if its
    /// status changed.
    pub fn note_warning(&mut self, pod_name: &str, warning: PodWarning) -> Option<String> {
        // Pod names are `sandbox-<id>` (`render::pod_name`); the uid check below makes it exact.
        let id = pod_name.strip_prefix("sandbox-")?;
        let entry = self.entries.get_mut(id)?;
        if entry.pod_uid.as_deref() != Some(warning.pod_uid.as_str())
            || entry
                .warning
                .as_ref()
                .is_some_and(|kept| !warning.supersedes(kept))
        {
            return None;
        }
        entry.warning = Some(warning);
        let before = entry.record.status.clone();
        entry.show_warning();
        (entry.record.status != before).then(|| id.to_owned())
    }

    fn insert(&mut self, entry: Entry) {
        let id = entry.record.id.to_string();
        self.remove(&id);
        let metadata: BTreeMap<String, String> = entry.state.metadata.clone();
        self.listing.upsert(
            &id,
            entry.record.created_at,
            &metadata,
            entry.record.status.state,
        );
        if let Some(at) = entry.record.expires_at {
            self.expiries.insert((at, id.clone()));
        }
        self.entries.insert(id, entry);
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.entries.remove(id) {
            self.listing.remove(id);
            if let Some(at) = old.record.expires_at {
                self.expiries.remove(&(at, id.to_owned()));
            }
        }
    }

    /// One sandbox.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// Every entry, in no order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Every sandbox, in no order.
    pub fn records(&self) -> impl Iterator<Item = &SandboxRecord> {
        self.entries.values().map(|e| &e.record)
    }

    /// The page `selection` asks for.
    pub fn page(&self, selection: &ListSelection) -> ListedPage {
        let (ids, total) = self.listing.select(selection);
        ListedPage {
            items: ids
                .into_iter()
                .filter_map(|id| self.entries.get(id))
                .map(|e| e.record.clone())
                .collect(),
            total,
        }
    }

    /// The earliest expiry, if any sandbox has one.
    pub fn next_expiry(&self) -> Option<DateTime<Utc>> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// Sandboxes whose expiry is at or before `now`, earliest first, at most `limit`.
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Vec<SandboxId> {
        self.expiries
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter_map(|(_, id)| self.entries.get(id).map(|e| e.record.id.clone()))
            .take(limit)
            .collect()
    }

    /// How many sandboxes are in each state.
    pub fn count_by_state(&self) -> BTreeMap<SandboxState, usize> {
        let mut counts = BTreeMap::new();
        for entry in self.entries.values() {
            *counts.entry(entry.record.status.state).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_state::{STATE_ANNOTATION, STATE_VERSION};

    fn pod(id: &str, created: i64, expires: Option<i64>, team: &str, phase: &str) -> Pod {
        let state = PodState {
            v: STATE_VERSION,
            created_at: DateTime::from_timestamp(created, 0).unwrap(),
            expires_at: expires.and_then(|e| DateTime::from_timestamp(e, 0)),
            metadata: BTreeMap::from([("team".into(), team.into())]),
            entrypoint: vec!["sleep".into()],
            volumes: vec![],
            created_claims: vec![],
            create_deadline: None,
        };
        let running = serde_json::json!({"running": {}});
        let waiting = serde_json::json!({"waiting": {"reason": "ContainerCreating"}});
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("sandbox-{id}"), "resourceVersion": "7",
                "labels": {LABEL_ID: id},
                "annotations": {STATE_ANNOTATION: state.to_annotation()}},
            "spec": {"containers": [{"name": "sandbox", "image": "busybox"}]},
            "status": {"phase": phase, "podIP": "10.0.0.9", "containerStatuses": [{
                "name": "sandbox", "image": "busybox", "imageID": "", "ready": true, "restartCount": 0,
                "state": if phase == "Running" { running } else { waiting }}]},
        }))
        .unwrap()
    }

    #[test]
    fn pods_become_sandboxes_in_list_and_expiry_order() {
        let mut table = SandboxTable::default();
        table
            .apply(&pod("a", 100, Some(500), "ml", "Running"))
            .unwrap();
        table
            .apply(&pod("b", 200, Some(300), "ml", "Pending"))
            .unwrap();
        table.apply(&pod("c", 300, None, "web", "Running")).unwrap();
        let entry = table.get("a").unwrap();
        assert_eq!(
            (
                entry.record.status.state,
                entry.pod_ip.as_deref(),
                entry.resource_version.as_deref()
            ),
            (SandboxState::Running, Some("10.0.0.9"), Some("7"))
        );
        let page = table.page(&ListSelection {
            metadata: vec![("team".into(), "ml".into())],
            limit: 10,
            ..ListSelection::default()
        });
        let ids: Vec<String> = page.items.iter().map(|r| r.id.to_string()).collect();
        assert_eq!((ids, page.total), (vec!["b".to_owned(), "a".to_owned()], 2));
        assert_eq!(table.next_expiry(), DateTime::from_timestamp(300, 0));
        let due: Vec<String> = table
            .due(DateTime::from_timestamp(500, 0).unwrap(), 10)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(due, ["b", "a"]);
        assert_eq!(
            table.count_by_state(),
            BTreeMap::from([(SandboxState::Pending, 1), (SandboxState::Running, 2)])
        );
        // A renewal moves the expiry; a deletion removes every trace.
        table
            .apply(&pod("b", 200, Some(900), "ml", "Running"))
            .unwrap();
        assert_eq!(table.next_expiry(), DateTime::from_timestamp(500, 0));
        table.delete(&pod("a", 100, Some(500), "ml", "Running"));
        assert_eq!(table.next_expiry(), DateTime::from_timestamp(900, 0));
        assert!(table.get("a").is_none());
    }

    fn warning(uid: &str, at: i64, message: &str) -> PodWarning {
        PodWarning {
            pod_uid: uid.into(),
            reason: "FailedMount".into(),
            message: message.into(),
            count: 1,
            at: DateTime::from_timestamp(at, 0),
        }
    }

    #[test]
    fn a_start_warning_is_kept_per_current_pod_and_goes_with_it() {
        let mut table = SandboxTable::default();
        let mut waiting = pod("a", 100, None, "ml", "Pending");
        waiting.metadata.uid = Some("uid-1".into());
        waiting.spec.as_mut().unwrap().node_name = Some("node-1".into());
        table.apply(&waiting).unwrap();
        // Warnings about Pods that are not a sandbox's current Pod are not kept.
        assert_eq!(
            table.note_warning("sandbox-b", warning("uid-9", 1, "x")),
            None
        );
        assert_eq!(
            table.note_warning("sandbox-a", warning("uid-0", 1, "old pod")),
            None
        );
        assert_eq!(
            table.note_warning("sandbox-a", warning("uid-1", 10, "no such dir")),
            Some("a".to_owned())
        );
        let shown = |t: &SandboxTable| t.get("a").unwrap().record.status.message.clone();
        assert!(
            shown(&table).unwrap().ends_with("FailedMount: no such dir"),
            "{:?}",
            shown(&table)
        );
        // An older report does not replace a newer one.
        assert_eq!(
            table.note_warning("sandbox-a", warning("uid-1", 5, "stale")),
            None
        );
        // The Pod changes (same uid): its warning stays, also over a re-list.
        table.apply(&waiting).unwrap();
        assert!(shown(&table).unwrap().contains("no such dir"));
        assert!(table.replace_all([&waiting]).is_empty());
        assert!(shown(&table).unwrap().contains("no such dir"));
        // Running: the Pod's own status, with no leftover cause.
        let mut running = pod("a", 100, None, "ml", "Running");
        running.metadata.uid = Some("uid-1".into());
        table.apply(&running).unwrap();
        assert_eq!(shown(&table), None);
        // A new Pod of the same sandbox starts without the old one's warning.
        waiting.metadata.uid = Some("uid-2".into());
        table.apply(&waiting).unwrap();
        assert!(!shown(&table).unwrap_or_default().contains("no such dir"));
        assert!(table.get("a").unwrap().warning.is_none());
        table.delete(&waiting);
        assert_eq!(
            table.note_warning("sandbox-a", warning("uid-2", 20, "x")),
            None,
            "gone with its Pod"
        );
    }

    #[test]
    fn unreadable_pods_are_left_out_and_reported() {
        let mut table = SandboxTable::default();
        let mut damaged = pod("a", 100, None, "ml", "Running");
        table.apply(&damaged).unwrap();
        damaged
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(STATE_ANNOTATION.into(), "{not json".into());
        assert!(matches!(
            table.apply(&damaged),
            Err(UnreadablePod::State { .. })
        ));
        assert!(
            table.get("a").is_none(),
            "a damaged Pod must not be served stale"
        );
        let unlabelled: Pod =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
        let errors = table.replace_all([&pod("b", 1, None, "ml", "Running"), &unlabelled]);
        assert_eq!(errors.len(), 1);
        assert!(table.get("b").is_some());
    }
}
