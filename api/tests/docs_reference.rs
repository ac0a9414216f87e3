//! The documentation cannot go stale against the code:
//! - the annotated example configuration that ships in the release (`deploy/berth.example.toml`)
//!   and the reference (`docs/configuration.md`) name every key of the configuration with its
//!   default (and the reference its environment variable), and no key that does not exist;
//! - `docs/volumes.md` lists every `VOLUME::*` code and `docs/api.md` every other code, each with
//!   the status the server answers it with, and neither lists a code the server does not have.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;
use std::path::Path;

use berth_api::config::Config;
use berth_core::ErrorCode;
use serde_json::Value;

fn repository_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).unwrap()
}

/// The rows of `doc`'s tables whose first cell is a code span: that name, and the other cells.
fn named_rows(doc: &str) -> Vec<(String, Vec<String>)> {
    repository_file(doc)
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split(" | ").map(str::trim).collect();
            let name = cells
                .first()?
                .strip_prefix("| `")?
                .strip_suffix('`')?
                .to_owned();
            Some((name, cells[1..].iter().map(|c| (*c).to_owned()).collect()))
        })
        .collect()
}

/// Every `(section, key, default)` of the configuration, as the file spells them.
fn keys() -> Vec<(String, String, Value)> {
    let Value::Object(sections) = serde_json::to_value(Config::default()).unwrap() else {
        panic!("the configuration is not a table");
    };
    let mut keys = Vec::new();
    for (section, table) in sections {
        let Value::Object(table) = table else {
            panic!("[{section}] is not a table");
        };
        for (key, default) in table {
            keys.push((section.clone(), key, default));
        }
    }
    assert!(keys.len() > 40, "only {} keys found", keys.len());
    keys
}

/// The `key = …` lines of each `[section]` of a TOML text, commented out (`# key = …`) or not.
fn assigned_keys(text: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut found = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let line = line.strip_prefix("# ").unwrap_or(line);
        if let Some((key, _)) = line.split_once(" = ")
            && !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            found.push((section.clone(), key.to_owned()));
        }
    }
    found
}

#[test]
fn the_example_configuration_is_the_defaults_and_names_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/berth.example.toml");
    let example = Config::load(Some(&path), std::iter::empty())
        .unwrap_or_else(|e| panic!("the example does not load: {e}"));
    let (mut example, mut defaults) = (
        serde_json::to_value(example).unwrap(),
        serde_json::to_value(Config::default()).unwrap(),
    );
    // The default state directory depends on the user; the example shows root's.
    example["storage"]["state_dir"] = Value::Null;
    defaults["storage"]["state_dir"] = Value::Null;
    assert_eq!(
        example, defaults,
        "the example's values are not the defaults"
    );

    let text = repository_file("deploy/berth.example.toml");
    let assigned = assigned_keys(&text);
    for (section, key, _) in keys() {
        assert!(
            assigned.contains(&(section.clone(), key.clone())),
            "deploy/berth.example.toml does not name {section}.{key}"
        );
    }
    let known: Vec<(String, String)> = keys().into_iter().map(|(s, k, _)| (s, k)).collect();
    for (section, key) in assigned {
        assert!(
            known.contains(&(section.clone(), key.clone())),
            "deploy/berth.example.toml names {section}.{key}, which is not a key"
        );
    }
}

/// How the reference spells a default: TOML's literal, or `unset`.
fn spelled(default: &Value) -> String {
    match default {
        Value::Null => "unset".to_owned(),
        Value::String(s) => format!("`{s:?}`"),
        Value::Array(a) if a.is_empty() => "`[]`".to_owned(),
        Value::Object(o) if o.is_empty() => "`{}`".to_owned(),
        other => format!("`{other}`"),
    }
}

#[test]
fn the_configuration_reference_names_every_key_its_default_and_variable() {
    // Rows of the key tables: | `section.key` | default | `BERTH_…` | meaning |
    let mut rows = BTreeMap::new();
    for (key, cells) in named_rows("docs/configuration.md") {
        assert!(cells.len() >= 3, "a short row of {key}: {cells:?}");
        let previous = rows.insert(key.clone(), (cells[0].clone(), cells[1].clone()));
        assert!(previous.is_none(), "{key} is described twice");
    }
    for (section, key, default) in keys() {
        let name = format!("{section}.{key}");
        let (spelled_default, variable) = rows
            .remove(&name)
            .unwrap_or_else(|| panic!("docs/configuration.md does not describe {name}"));
        let expected = if name == "storage.state_dir" {
            // Depends on the user; the reference gives root's (and says what else).
            "`\"/var/lib/berth\"`".to_owned()
        } else {
            spelled(&default)
        };
        assert_eq!(spelled_default, expected, "the default of {name}");
        assert_eq!(
            variable,
            format!("`BERTH_{}__{}`", section.to_uppercase(), key.to_uppercase()),
            "the variable of {name}"
        );
    }
    assert!(
        rows.is_empty(),
        "docs/configuration.md describes keys that do not exist: {:?}",
        rows.keys().collect::<Vec<_>>()
    );
}

/// The `| `CODE` | status | …` rows of a document's tables: code → status.
fn code_rows(doc: &str) -> BTreeMap<String, u16> {
    let mut rows = BTreeMap::new();
    for (code, cells) in named_rows(doc) {
        let Some(status) = cells.first().and_then(|s| s.parse::<u16>().ok()) else {
            continue;
        };
        assert!(
            rows.insert(code.clone(), status).is_none(),
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
