//! The order and the postings a list page is read from, pure and shared by the runtimes: each
//! keeps one up to date with its records and their states (the Docker runtime on every record
//! write and container status change): a page costs what the page costs, never a scan and sort
//! of the whole store. For no metadata filter or one (the SDK's
//! usual call), with or without state filters, the total is a sum of posting sizes and the page
//! a merge of the postings' first entries — independent of the number of sandboxes. Several
//! metadata filters scan the smallest posting.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::SandboxState;
use crate::runtime::ListSelection;
use chrono::{DateTime, Utc};

/// Where a sandbox sorts: newest first, ties by id (so pages are stable).
type Position = (Reverse<DateTime<Utc>>, String);

/// Sandboxes in list order, in all and per state.
#[derive(Debug, Default)]
struct Postings {
    all: BTreeSet<Position>,
    by_state: BTreeMap<SandboxState, BTreeSet<Position>>,
}

impl Postings {
    fn insert(&mut self, position: &Position, state: SandboxState) {
        self.all.insert(position.clone());
        self.by_state
            .entry(state)
            .or_default()
            .insert(position.clone());
    }

    fn remove(&mut self, position: &Position, state: SandboxState) {
        self.all.remove(position);
        if let Some(set) = self.by_state.get_mut(&state) {
            set.remove(position);
            if set.is_empty() {
                self.by_state.remove(&state);
            }
        }
    }

    /// The disjoint sets holding the sandboxes in any of `states` (all when empty).
    fn sets(&self, states: &BTreeSet<SandboxState>) -> Vec<&BTreeSet<Position>> {
        if states.is_empty() {
            vec![&self.all]
        } else {
            states.iter().filter_map(|s| self.by_state.get(s)).collect()
        }
    }
}

/// What the index remembers of one sandbox, to unindex it.
#[derive(Debug)]
struct Entry {
    position: Position,
    metadata: Vec<(String, String)>,
    state: SandboxState,
}

/// All sandboxes in list order, and the same order per state, per metadata pair, and per
/// metadata pair and state.
#[derive(Debug, Default)]
pub struct ListIndex {
    entries: HashMap<String, Entry>,
    everything: Postings,
    by_metadata: HashMap<String, HashMap<String, Postings>>,
}

impl ListIndex {
    /// Indexes a sandbox (replacing what was indexed under its id).
    pub fn upsert(
        &mut self,
        id: &str,
        created_at: DateTime<Utc>,
        metadata: &BTreeMap<String, String>,
        state: SandboxState,
    ) {
        self.remove(id);
        let position = (Reverse(created_at), id.to_owned());
        self.everything.insert(&position, state);
        for (k, v) in metadata {
            self.by_metadata
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .insert(&position, state);
        }
        self.entries.insert(
            id.to_owned(),
            Entry {
                position,
                metadata: metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                state,
            },
        );
    }

    /// The state a sandbox is indexed with.
    pub fn state(&self, id: &str) -> Option<SandboxState> {
        self.entries.get(id).map(|e| e.state)
    }

    /// Moves a sandbox to another state (nothing when it is not indexed).
    pub fn set_state(&mut self, id: &str, state: SandboxState) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if entry.state == state {
            return;
        }
        let old = std::mem::replace(&mut entry.state, state);
        self.everything.remove(&entry.position, old);
        self.everything.insert(&entry.position, state);
        for (k, v) in &entry.metadata {
            if let Some(postings) = self.by_metadata.get_mut(k).and_then(|m| m.get_mut(v)) {
                postings.remove(&entry.position, old);
                postings.insert(&entry.position, state);
            }
        }
    }

    /// Unindexes a sandbox.
    pub fn remove(&mut self, id: &str) {
        let Some(entry) = self.entries.remove(id) else {
            return;
        };
        self.everything.remove(&entry.position, entry.state);
        for (k, v) in &entry.metadata {
            if let Some(values) = self.by_metadata.get_mut(k) {
                if let Some(postings) = values.get_mut(v) {
                    postings.remove(&entry.position, entry.state);
                    if postings.all.is_empty() {
                        values.remove(v);
                    }
                }
                if values.is_empty() {
                    self.by_metadata.remove(k);
                }
            }
        }
    }

    /// How many sandboxes are indexed in each state (states with none are absent).
    pub fn count_by_state(&self) -> BTreeMap<SandboxState, usize> {
        self.everything
            .by_state
            .iter()
            .map(|(state, set)| (*state, set.len()))
            .collect()
    }

    fn postings(&self, key: &str, value: &str) -> Option<&Postings> {
        self.by_metadata.get(key)?.get(value)
    }

    /// The ids on the page `selection` asks for, newest first, and how many match in all.
    pub fn select(&self, selection: &ListSelection) -> (Vec<&str>, usize) {
        let states: BTreeSet<SandboxState> = selection.states.iter().copied().collect();
        let filters: BTreeSet<(&str, &str)> = selection
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let postings = match filters.len() {
            0 => &self.everything,
            1 => {
                let Some(&(k, v)) = filters.first() else {
                    return (Vec::new(), 0);
                };
                match self.postings(k, v) {
                    Some(p) => p,
                    None => return (Vec::new(), 0),
                }
            }
            _ => return self.scan(&filters, &states, selection),
        };
        let sets = postings.sets(&states);
        let total = sets.iter().map(|s| s.len()).sum();
        (merge(&sets, selection.offset, selection.limit), total)
    }

    /// Several metadata filters: the smallest posting, checked entry by entry.
    fn scan(
        &self,
        filters: &BTreeSet<(&str, &str)>,
        states: &BTreeSet<SandboxState>,
        selection: &ListSelection,
    ) -> (Vec<&str>, usize) {
        let mut smallest: Option<&BTreeSet<Position>> = None;
        for &(k, v) in filters {
            match self.postings(k, v) {
                Some(p) if smallest.is_none_or(|s| p.all.len() < s.len()) => {
                    smallest = Some(&p.all);
                }
                Some(_) => {}
                None => return (Vec::new(), 0),
            }
        }
        let mut page = Vec::new();
        let mut total = 0;
        for (_, id) in smallest.into_iter().flatten() {
            let Some(entry) = self.entries.get(id) else {
                continue;
            };
            let wanted = (states.is_empty() || states.contains(&entry.state))
                && filters
                    .iter()
                    .all(|&(k, v)| entry.metadata.iter().any(|(ek, ev)| ek == k && ev == v));
            if wanted {
                if total >= selection.offset && page.len() < selection.limit {
                    page.push(id.as_str());
                }
                total += 1;
            }
        }
        (page, total)
    }
}

/// Entries `skip..skip + take` of the union of disjoint ordered sets, in order.
fn merge<'a>(sets: &[&'a BTreeSet<Position>], skip: usize, take: usize) -> Vec<&'a str> {
    let mut iters: Vec<_> = sets.iter().map(|s| s.iter().peekable()).collect();
    let mut page = Vec::new();
    let mut seen = 0;
    while page.len() < take {
        let next = iters
            .iter_mut()
            .enumerate()
            .filter_map(|(i, it)| it.peek().map(|p| (i, *p)))
            .min_by(|a, b| a.1.cmp(b.1))
            .map(|(i, _)| i);
        let Some(i) = next else { break };
        let Some((_, id)) = iters[i].next() else {
            break;
        };
        if seen >= skip {
            page.push(id.as_str());
        }
        seen += 1;
    }
    page
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

    fn index(index: &mut ListIndex, s: &Sandbox) {
        index.upsert(&s.id, s.created_at, &s.metadata, s.state);
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
        let mut list = ListIndex::default();
        for s in &sandboxes {
            index(&mut list, s);
        }
        // Replace one (its metadata changed), move one to another state, remove another.
        let changed = Sandbox {
            id: sandboxes[7].id.clone(),
            created_at: sandboxes[7].created_at,
            metadata: BTreeMap::from([("team".to_owned(), "c".to_owned())]),
            state: sandboxes[7].state,
        };
        index(&mut list, &changed);
        list.remove(&sandboxes[8].id);
        list.set_state(&sandboxes[9].id, SandboxState::Terminated);
        let moved = Sandbox {
            id: sandboxes[9].id.clone(),
            created_at: sandboxes[9].created_at,
            metadata: sandboxes[9].metadata.clone(),
            state: SandboxState::Terminated,
        };
        let mut current: Vec<&Sandbox> = sandboxes
            .iter()
            .filter(|s| !["s07", "s08", "s09"].contains(&s.id.as_str()))
            .collect();
        current.push(&changed);
        current.push(&moved);

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
            vec![
                SandboxState::Terminated,
                SandboxState::Running,
                SandboxState::Running,
            ],
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
                    let (page, total) = list.select(&selection);
                    assert_eq!(
                        (page, total),
                        (expected_page, expected.len()),
                        "{selection:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 7 * 4 * 5);
        let mut counts = BTreeMap::new();
        for s in &current {
            *counts.entry(s.state).or_insert(0) += 1;
        }
        assert_eq!(list.count_by_state(), counts);
        // Removing everything leaves no empty posting behind.
        for s in &current {
            list.remove(&s.id);
        }
        assert!(list.entries.is_empty() && list.by_metadata.is_empty());
        assert!(list.everything.all.is_empty() && list.everything.by_state.is_empty());
    }
}
