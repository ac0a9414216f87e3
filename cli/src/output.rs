//! How `berth` prints what the server answered: tables for people (comfy-table), or the API's
//! JSON as it is (or as YAML). Pure: strings in, strings out, with the clock passed in so ages
//! and expiries print the same in tests.

use chrono::{DateTime, Utc};
use comfy_table::presets::NOTHING;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

use berth_core::wire;

use crate::args::Output;

/// A problem turning an answer into text (only serialization can fail).
#[derive(Debug, thiserror::Error)]
#[error("cannot print the answer as {format}: {message}")]
pub struct OutputError {
    format: &'static str,
    message: String,
}

/// `value` as JSON (pretty, as the API's JSON) or YAML; `None` for [`Output::Table`].
pub fn structured<T: Serialize>(value: &T, output: Output) -> Result<Option<String>, OutputError> {
    match output {
        Output::Table => Ok(None),
        Output::Json => serde_json::to_string_pretty(value)
            .map(|text| Some(text + "\n"))
            .map_err(|e| OutputError {
                format: "JSON",
                message: e.to_string(),
            }),
        Output::Yaml => serde_norway::to_string(value)
            .map(Some)
            .map_err(|e| OutputError {
                format: "YAML",
                message: e.to_string(),
            }),
    }
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(|h| h.to_owned()));
    table
}

/// Columns flush left, two spaces apart, as `docker ps` prints them.
fn compact(table: &mut Table) {
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
}

/// Trailing spaces of the borderless preset's last column dropped, so output compares cleanly.
fn finish(table: &mut Table) -> String {
    compact(table);
    let mut text: String = table
        .lines()
        .map(|line| line.trim_end().to_owned() + "\n")
        .collect();
    if text.is_empty() {
        text.push('\n');
    }
    text
}

/// A span as people say it: `45s`, `12m`, `3h`, `2d`.
pub fn short_span(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn expiry(expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match expires_at {
        None => "never".to_owned(),
        Some(at) if at <= now => "expired".to_owned(),
        Some(at) => format!("in {}", short_span((at - now).num_seconds())),
    }
}

fn state(status: &wire::SandboxStatus) -> String {
    // The wire spelling (`Running`), which `--state` also takes.
    serde_json::to_value(status.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", status.state))
}

fn volume_cell(volume: &wire::VolumeStatus) -> String {
    let sub = volume
        .sub_path
        .as_deref()
        .map(|s| format!("[{s}]"))
        .unwrap_or_default();
    let ro = if volume.read_only { ":ro" } else { "" };
    format!(
        "{}:{}{sub}->{}{ro}",
        volume.backend, volume.source, volume.mount_path
    )
}

/// The `berth ls` table: id, state, age, expiry, image, volumes.
pub fn sandbox_table(sandboxes: &[wire::Sandbox], now: DateTime<Utc>) -> String {
    let mut table = table(&["ID", "STATE", "AGE", "EXPIRES", "IMAGE", "VOLUMES"]);
    for sandbox in sandboxes {
        table.add_row(vec![
            sandbox.id.clone(),
            state(&sandbox.status),
            short_span((now - sandbox.created_at).num_seconds()),
            expiry(sandbox.expires_at, now),
            sandbox
                .image
                .as_ref()
                .map(|i| i.uri.clone())
                .unwrap_or_else(|| "-".into()),
            if sandbox.volumes.is_empty() {
                "-".to_owned()
            } else {
                sandbox
                    .volumes
                    .iter()
                    .map(volume_cell)
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        ]);
    }
    finish(&mut table)
}

/// `berth get`: one sandbox, a field per line, then its volumes.
pub fn sandbox_details(sandbox: &wire::Sandbox, now: DateTime<Utc>) -> String {
    let mut fields = Table::new();
    fields
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    let mut status = state(&sandbox.status);
    if let Some(reason) = &sandbox.status.reason {
        status.push_str(&format!(" ({reason})"));
    }
    let mut rows = vec![("ID:", sandbox.id.clone()), ("State:", status)];
    if let Some(message) = &sandbox.status.message {
        rows.push(("Message:", message.clone()));
    }
    rows.push((
        "Image:",
        sandbox
            .image
            .as_ref()
            .map(|i| i.uri.clone())
            .unwrap_or_else(|| "-".into()),
    ));
    rows.push((
        "Entrypoint:",
        if sandbox.entrypoint.is_empty() {
            "-".into()
        } else {
            sandbox.entrypoint.join(" ")
        },
    ));
    rows.push((
        "Created:",
        format!(
            "{} ({} ago)",
            sandbox
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            short_span((now - sandbox.created_at).num_seconds())
        ),
    ));
    rows.push((
        "Expires:",
        match sandbox.expires_at {
            Some(at) => format!(
                "{} ({})",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                expiry(Some(at), now)
            ),
            None => "never".into(),
        },
    ));
    rows.push((
        "Labels:",
        if sandbox.metadata.is_empty() {
            "-".into()
        } else {
            sandbox
                .metadata
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
    ));
    for (name, value) in rows {
        fields.add_row(vec![name.to_owned(), value]);
    }
    let mut text = finish(&mut fields);
    if !sandbox.volumes.is_empty() {
        let mut volumes = table(&[
            "VOLUME",
            "BACKEND",
            "SOURCE",
            "SUBPATH",
            "MOUNT",
            "READ-ONLY",
        ]);
        for v in &sandbox.volumes {
            let read_only = match (v.read_only, v.read_only_mode) {
                (false, _) => "no".to_owned(),
                (true, wire::ReadOnlyMode::Recursive) => "yes (recursive)".to_owned(),
                (true, wire::ReadOnlyMode::NonRecursive) => "yes (top mount only)".to_owned(),
                (true, wire::ReadOnlyMode::None) => "requested, not enforced".to_owned(),
            };
            volumes.add_row(vec![
                v.name.clone(),
                v.backend.to_string(),
                v.source.clone(),
                v.sub_path.clone().unwrap_or_else(|| "-".into()),
                v.mount_path.clone(),
                read_only,
            ]);
        }
        text.push('\n');
        text.push_str(&finish(&mut volumes));
    }
    text
}

/// `berth endpoint`: the endpoint, then any headers a client must send, one per line.
pub fn endpoint(endpoint: &wire::Endpoint) -> String {
    let mut text = format!("{}\n", endpoint.endpoint);
    for (name, value) in endpoint.headers.iter().flatten() {
        text.push_str(&format!("{name}: {value}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn spans_are_short() {
        assert_eq!(short_span(-5), "0s");
        assert_eq!(short_span(59), "59s");
        assert_eq!(short_span(60), "1m");
        assert_eq!(short_span(7199), "1h");
        assert_eq!(short_span(86400 * 3 + 5), "3d");
    }

    #[test]
    fn expiries_say_never_expired_or_in() {
        let now = Utc::now();
        assert_eq!(expiry(None, now), "never");
        assert_eq!(
            expiry(Some(now - chrono::Duration::seconds(1)), now),
            "expired"
        );
        assert_eq!(
            expiry(Some(now + chrono::Duration::seconds(130)), now),
            "in 2m"
        );
    }

    #[test]
    fn an_empty_list_prints_only_the_header() {
        let text = sandbox_table(&[], Utc::now());
        assert_eq!(text, "ID  STATE  AGE  EXPIRES  IMAGE  VOLUMES\n");
    }

    #[test]
    fn structured_output_is_the_value_itself() {
        let endpoint = wire::Endpoint {
            endpoint: "h:1".into(),
            headers: None,
        };
        let json = structured(&endpoint, Output::Json).unwrap().unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).unwrap(),
            serde_json::json!({"endpoint": "h:1"})
        );
        let yaml = structured(&endpoint, Output::Yaml).unwrap().unwrap();
        assert_eq!(yaml, "endpoint: h:1\n");
        assert!(structured(&endpoint, Output::Table).unwrap().is_none());
    }
}
