//! Selecting a list page from the store's list index as the number of sandboxes grows (500,
//! 5 000, 50 000): the SDK's usual call (one metadata filter matching half of them, 20 per
//! page), the same with a state filter, and a late page. No engine needed.
//!
//! `cargo bench -p berth-docker --bench list_page`; a flat median across sizes is the goal.

#![allow(clippy::unwrap_used)] // A benchmark harness, not an API.
#![allow(missing_docs)] // A benchmark harness, not an API.

use std::collections::BTreeMap;

use berth_core::model::SandboxState;
use berth_core::runtime::ListSelection;
use berth_docker::list_index::{ListIndex, Listed};
use chrono::{DateTime, Utc};
use divan::Bencher;

fn main() {
    divan::main();
}

struct Sandboxes {
    ids: Vec<String>,
    created: Vec<DateTime<Utc>>,
    metadata: Vec<BTreeMap<String, String>>,
    index: ListIndex,
}

fn sandboxes(n: usize) -> Sandboxes {
    let base = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let ids: Vec<String> = (0..n).map(|i| format!("sandbox-{i:06}")).collect();
    let created = (0..n)
        .map(|i| base + chrono::Duration::milliseconds(i as i64))
        .collect::<Vec<_>>();
    let metadata = (0..n)
        .map(|i| {
            BTreeMap::from([
                (
                    "team".to_owned(),
                    if i % 2 == 0 { "a" } else { "b" }.to_owned(),
                ),
                ("user".to_owned(), format!("u{}", i % 97)),
            ])
        })
        .collect::<Vec<_>>();
    let mut index = ListIndex::default();
    for i in 0..n {
        index.insert(Listed {
            id: &ids[i],
            created_at: created[i],
            metadata: &metadata[i],
        });
    }
    Sandboxes {
        ids,
        created,
        metadata,
        index,
    }
}

fn select(bencher: Bencher, n: usize, selection: ListSelection) {
    let s = sandboxes(n);
    let position: std::collections::HashMap<&str, usize> = s
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    assert_eq!(s.created.len(), n);
    bencher.bench_local(|| {
        s.index.select(
            divan::black_box(&selection),
            |id| position.get(id).map(|&i| &s.metadata[i]),
            |id| {
                if position[id] % 3 == 0 {
                    SandboxState::Paused
                } else {
                    SandboxState::Running
                }
            },
        )
    });
}

fn team_a(states: Vec<SandboxState>, offset: usize) -> ListSelection {
    ListSelection {
        states,
        metadata: vec![("team".into(), "a".into())],
        offset,
        limit: 20,
    }
}

#[divan::bench(args = [500, 5_000, 50_000])]
fn one_metadata_filter(bencher: Bencher, n: usize) {
    select(bencher, n, team_a(vec![], 0));
}

#[divan::bench(args = [500, 5_000, 50_000])]
fn one_metadata_filter_page_10(bencher: Bencher, n: usize) {
    select(bencher, n, team_a(vec![], 180));
}

#[divan::bench(args = [500, 5_000, 50_000])]
fn metadata_and_state_filter(bencher: Bencher, n: usize) {
    select(bencher, n, team_a(vec![SandboxState::Running], 0));
}
