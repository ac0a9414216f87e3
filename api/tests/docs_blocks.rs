//! Every shell block of `docs/` fenced as ```` ```sh tested ```` runs as written, in order, in a
//! scratch directory, against a real server on the real engine (the README's own walkthrough is
//! `readme_walkthrough`): a command that no longer works fails the build.

#![cfg(feature = "docker")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::path::Path;

const IMAGE: &str = "berth-test/busybox:latest";
const KEY: &str = "docs-blocks-key";

/// The documents under `docs/` with at least one tested block.
fn documents_with_blocks() -> Vec<String> {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let mut found: Vec<String> = std::fs::read_dir(&docs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .filter(|name| {
            let text = std::fs::read_to_string(docs.join(name)).unwrap();
            !common::tested_blocks(&text).is_empty()
        })
        .map(|name| format!("docs/{name}"))
        .collect();
    found.sort();
    found
}

#[test]
fn every_tested_block_in_the_docs_runs() {
    common::require_docker(&[IMAGE]);
    let documents = documents_with_blocks();
    assert!(
        documents.contains(&"docs/configuration.md".to_owned()),
        "{documents:?}"
    );
    let dir = common::tempfile_dir();
    let run = format!("docs-{}", std::process::id());
    let server = common::Server::start(
        &run,
        &dir.join("state"),
        &[("BERTH_SERVER__API_KEY", KEY.to_owned())],
    );
    for doc in &documents {
        let work = dir.join(doc.replace('/', "-"));
        std::fs::create_dir(&work).unwrap();
        common::run_tested_blocks(doc, &server.address, KEY, IMAGE, &work);
    }
    // The blocks clean up after themselves.
    assert_eq!(common::run_containers(&run), Vec::<String>::new());
}
