//! The order and the metadata postings a list page is read from, kept up to date by the store
//! on every write: a page costs what its candidates cost, never a scan and sort of the whole
//! store. With one metadata filter (or none) and no state filter — the usual SDK call — the
//! total comes from the posting's size and the page from its first entries, so the cost does
//! not grow with the number of sandboxes at all.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use berth_core::model::SandboxState;
use berth_core::runtime::ListSelection;
use chrono::{DateTime, Utc};

/// Where a sandbox sorts: newest first, ties by id (so pages are stable).
type Position = (Reverse<DateTime<Utc>>, String);

/// What a listed sandbox is indexed by.
#[derive(Debug, Clone, Copy)]
pub struct Listed<'a> {
    /// Its id.
    pub id: &'a str,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its metadata.
    pub metadata: &'a BTreeMap<String, String>,
}

/// All sandboxes in list order, and the same order per metadata pair.
#[derive(Debug, Default)]
pub struct ListIndex {
    all: BTreeSet<Position>,
    by_metadata: HashMap<(String, String), BTreeSet<Position>>,
}

impl ListIndex {
    /// Adds a sandbox (after [`ListIndex::remove`] of its previous version, if any).
    pub fn insert(&mut self, sandbox: Listed<'_>) {
        let position = (Reverse(sandbox.created_at), sandbox.id.to_owned());
        for (k, v) in sandbox.metadata {
            self.by_metadata
                .entry((k.clone(), v.clone()))
                .or_default()
                .insert(position.clone());
        }
        self.all.insert(position);
    }

    /// Removes a sandbox as it was indexed.
    pub fn remove(&mut self, sandbox: Listed<'_>) {
        let position = (Reverse(sandbox.created_at), sandbox.id.to_owned());
        for (k, v) in sandbox.metadata {
            let key = (k.clone(), v.clone());
            if let Some(posting) = self.by_metadata.get_mut(&key) {
                posting.remove(&position);
                if posting.is_empty() {
                    self.by_metadata.remove(&key);
                }
            }
        }
        self.all.remove(&position);
    }

    /// The ids on the page `selection` asks for, newest first, and how many match in all.
    /// `metadata_of` and `state_of` answer for an indexed id (only called when a filter needs
    /// them).
    pub fn select<'a>(
        &'a self,
        selection: &ListSelection,
        metadata_of: impl Fn(&str) -> Option<&'a BTreeMap<String, String>>,
        state_of: impl Fn(&str) -> SandboxState,
    ) -> (Vec<&'a str>, usize) {
        // The smallest posting among the metadata filters holds every match.
        let mut smallest: Option<&BTreeSet<Position>> = None;
        for (k, v) in &selection.metadata {
            match self.by_metadata.get(&(k.clone(), v.clone())) {
                Some(posting) if smallest.is_none_or(|s| posting.len() < s.len()) => {
                    smallest = Some(posting);
                }
                Some(_) => {}
                None => return (Vec::new(), 0),
            }
        }
        let candidates = smallest.unwrap_or(&self.all);
        let distinct_filters = selection.metadata.iter().collect::<BTreeSet<_>>().len();
        if selection.states.is_empty() && distinct_filters <= 1 {
            let page = candidates
                .iter()
                .skip(selection.offset)
                .take(selection.limit)
                .map(|(_, id)| id.as_str())
                .collect();
            return (page, candidates.len());
        }
        let mut page = Vec::new();
        let mut total = 0;
        for (_, id) in candidates {
            let metadata_matches = || {
                metadata_of(id).is_some_and(|m| {
                    selection
                        .metadata
                        .iter()
                        .all(|(k, v)| m.get(k).is_some_and(|have| have == v))
                })
            };
            let state_matches =
                || selection.states.is_empty() || selection.states.contains(&state_of(id));
            if metadata_matches() && state_matches() {
                if total >= selection.offset && page.len() < selection.limit {
                    page.push(id.as_str());
                }
                total += 1;
            }
        }
        (page, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sandbox {
        id: String,
        created_at: DateTime<Utc>,
        metadata: BTreeMap<String, String>,
        state: SandboxState,
    }

    fn listed(s: &Sandbox) -> Listed<'_> {
        Listed {
            id: &s.id,
            created_at: s.created_at,
            metadata: &s.metadata,
        }
    }

    /// The index against the obvious scan-filter-sort, over many selections.
    #[test]
    fn agrees_with_a_full_scan() {
        let states = [
            SandboxState::Running,
            SandboxState::Paused,
            SandboxState::Failed,
        ];
        let base = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let sandboxes: Vec<Sandbox> = (0..60)
            .map(|i| Sandbox {
                id: format!("s{i:02}"),
                // Repeated timestamps: ties are ordered by id.
                created_at: base + chrono::Duration::seconds(i / 3),
                metadata: BTreeMap::from([
                    ("team".to_owned(), ["a", "b"][(i % 2) as usize].to_owned()),
                    (
                        "tier".to_owned(),
                        ["x", "y", "z"][(i % 3) as usize].to_owned(),
                    ),
                ]),
                state: states[(i % 5 % 3) as usize],
            })
            .collect();
        let mut index = ListIndex::default();
        for s in &sandboxes {
            index.insert(listed(s));
        }
        // Replace one (its metadata changed) and remove another.
        let changed = Sandbox {
            id: sandboxes[7].id.clone(),
            created_at: sandboxes[7].created_at,
            metadata: BTreeMap::from([("team".to_owned(), "c".to_owned())]),
            state: sandboxes[7].state,
        };
        index.remove(listed(&sandboxes[7]));
        index.insert(listed(&changed));
        index.remove(listed(&sandboxes[8]));
        let mut current: Vec<&Sandbox> = sandboxes
            .iter()
            .filter(|s| s.id != "s07" && s.id != "s08")
            .collect();
        current.push(&changed);
        let by_id: HashMap<&str, &Sandbox> = current.iter().map(|s| (s.id.as_str(), *s)).collect();

        let metadata_filters: Vec<Vec<(String, String)>> = vec![
            vec![],
            vec![("team".into(), "a".into())],
            vec![("team".into(), "c".into())],
            vec![("team".into(), "a".into()), ("tier".into(), "y".into())],
            vec![("team".into(), "a".into()), ("team".into(), "a".into())],
            vec![("team".into(), "a".into()), ("team".into(), "b".into())],
            vec![("nope".into(), "a".into())],
        ];
        let state_filters = [
            vec![],
            vec![SandboxState::Running],
            vec![SandboxState::Paused, SandboxState::Failed],
        ];
        let mut checked = 0;
        for metadata in &metadata_filters {
            for states in &state_filters {
                for (offset, limit) in [(0, 5), (3, 4), (0, 200), (25, 10), (100, 5)] {
                    let selection = ListSelection {
                        states: states.clone(),
                        metadata: metadata.clone(),
                        offset,
                        limit,
                    };
                    let mut expected: Vec<&Sandbox> = current
                        .iter()
                        .copied()
                        .filter(|s| {
                            selection.matches(
                                s.state,
                                s.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                            )
                        })
                        .collect();
                    expected.sort_by(|a, b| {
                        b.created_at
                            .cmp(&a.created_at)
                            .then_with(|| a.id.cmp(&b.id))
                    });
                    let expected_page: Vec<&str> = expected
                        .iter()
                        .skip(offset)
                        .take(limit)
                        .map(|s| s.id.as_str())
                        .collect();
                    let (page, total) = index.select(
                        &selection,
                        |id| by_id.get(id).map(|s| &s.metadata),
                        |id| by_id[id].state,
                    );
                    assert_eq!(
                        (page, total),
                        (expected_page, expected.len()),
                        "{selection:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 7 * 3 * 5);
    }
}
