//! Selecting a list page from the list index as the number of sandboxes grows (500,
//! 5 000, 50 000): one metadata filter matching half of them (20 per page), the same with a
//! state filter (the HTTP benchmark's query), a late page, and two metadata filters (the one
//! case that scans). No engine needed.
//!
//! `cargo bench -p berth-core --bench list_page`; a flat median across sizes is the goal.

#![allow(clippy::unwrap_used)] // A benchmark harness, not an API.
#![allow(missing_docs)] // A benchmark harness, not an API.

use std::collections::BTreeMap;

use berth_core::list_index::ListIndex;
use berth_core::model::SandboxState;
use berth_core::runtime::ListSelection;
use chrono::DateTime;
use divan::Bencher;

fn main() {
    divan::main();
}

/// `n` sandboxes: half in team a, a third paused, the rest running.
fn index_of(n: usize) -> ListIndex {
    let base = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let mut index = ListIndex::default();
    for i in 0..n {
        let metadata = BTreeMap::from([
            (
                "team".to_owned(),
                if i.is_multiple_of(2) { "a" } else { "b" }.to_owned(),
            ),
            ("user".to_owned(), format!("u{}", i % 97)),
        ]);
        let state = if i.is_multiple_of(3) {
            SandboxState::Paused
        } else {
            SandboxState::Running
        };
        let created = base + chrono::Duration::milliseconds(i64::try_from(i).unwrap());
        index.upsert(&format!("sandbox-{i:06}"), created, &metadata, state);
    }
    index
}

fn select(bencher: Bencher, n: usize, selection: ListSelection) {
    let index = index_of(n);
    bencher.bench_local(|| index.select(divan::black_box(&selection)));
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

#[divan::bench(args = [500, 5_000, 50_000])]
fn two_metadata_filters_scan(bencher: Bencher, n: usize) {
    let mut selection = team_a(vec![], 0);
    selection.metadata.push(("user".into(), "u1".into()));
    select(bencher, n, selection);
}
