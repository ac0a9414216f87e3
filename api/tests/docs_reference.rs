//! The error tables of the documentation cannot go stale: `docs/volumes.md` lists every
//! `VOLUME::*` code and `docs/api.md` every other code, each with the status the server answers
//! it with, and neither lists a code the server does not have.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;
use std::path::Path;

use berth_core::ErrorCode;

/// The `| `CODE` | status | …` rows of a document's tables: code → status.
fn code_rows(doc: &str) -> BTreeMap<String, u16> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(doc))
        .unwrap();
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split(" | ").map(str::trim).collect();
        let Some(code) = cells
            .first()
            .and_then(|c| c.strip_prefix("| `"))
            .and_then(|c| c.strip_suffix('`'))
        else {
            continue;
        };
        let Some(status) = cells.get(1).and_then(|s| s.parse::<u16>().ok()) else {
            continue;
        };
        assert!(
            rows.insert(code.to_owned(), status).is_none(),
            "{doc} lists {code} twice"
        );
    }
    rows
}

fn check(doc: &str, codes: impl Iterator<Item = ErrorCode>) {
    let mut rows = code_rows(doc);
    for code in codes {
        let status = rows
            .remove(code.as_str())
            .unwrap_or_else(|| panic!("{doc} does not list {}", code.as_str()));
        assert_eq!(
            status,
            code.http_status(),
            "{doc}: the status of {}",
            code.as_str()
        );
    }
    assert!(
        rows.is_empty(),
        "{doc} lists codes the server does not have: {:?}",
        rows.keys().collect::<Vec<_>>()
    );
}

#[test]
fn every_volume_code_is_in_the_volumes_guide() {
    check(
        "docs/volumes.md",
        ErrorCode::ALL
            .iter()
            .copied()
            .filter(|c| c.as_str().starts_with("VOLUME::")),
    );
}

#[test]
fn every_other_code_is_in_the_api_guide() {
    check(
        "docs/api.md",
        ErrorCode::ALL
            .iter()
            .copied()
            .filter(|c| !c.as_str().starts_with("VOLUME::")),
    );
}
