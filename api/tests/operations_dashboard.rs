//! The Grafana dashboard (`deploy/grafana/berth-dashboard.json`, `docs/operations.md`) shows what
//! the server really exports: every panel's expression parses as PromQL, and every series it
//! selects (metric name and label matchers) is found in a real scrape of `/metrics` from a server
//! on the real engine that has created, read, refused, proxied and deleted.

#![cfg(feature = "docker")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::{Value, json};

const IMAGE: &str = "berth-test/busybox:latest";

/// Every `expr` of every panel (rows' panels included), with its panel's title.
fn panel_expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut pending: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = pending.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            pending.extend(inner);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap().to_owned();
            found.push((title, target["expr"].as_str().unwrap().to_owned()));
        }
    }
    found
}

/// The vector selectors of an expression (those inside range selectors too).
struct Selectors(Vec<VectorSelector>);

impl ExprVisitor for Selectors {
    type Error = ();
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ()> {
        match expr {
            Expr::VectorSelector(selector) => self.0.push(selector.clone()),
            Expr::MatrixSelector(matrix) => self.0.push(matrix.vs.clone()),
            _ => {}
        }
        Ok(true)
    }
}

/// One sample line of the text exposition format: its metric name and labels.
fn sample(line: &str) -> Option<(String, BTreeMap<String, String>)> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (series, _value) = line.rsplit_once(' ')?;
    let Some((name, labels)) = series.split_once('{') else {
        return Some((series.to_owned(), BTreeMap::new()));
    };
    let labels = labels.strip_suffix('}')?;
    let mut map = BTreeMap::new();
    // Berth's label values hold no `",` (routes, methods, statuses, states, results).
    for pair in labels.split("\",").filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once("=\"")?;
        map.insert(key.to_owned(), value.trim_end_matches('"').to_owned());
    }
    Some((name.to_owned(), map))
}

fn scrape(address: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[test]
fn every_dashboard_expression_selects_series_the_server_exports() {
    common::require_docker(&[IMAGE]);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/berth-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let expressions = panel_expressions(&dashboard);
    assert!(expressions.len() >= 8, "{expressions:?}");

    // A server that has done what the panels show: created (and so a sandbox to count), read,
    // refused (404), proxied to a port where nothing listens (502), deleted.
    let dir = common::tempfile_dir();
    let run = format!("dashboard-{}", std::process::id());
    let server = common::Server::start(&run, &dir.join("state"), &[]);
    let body = json!({
        "image": {"uri": IMAGE}, "entrypoint": ["sleep", "600"],
        "resourceLimits": {"cpu": "100m", "memory": "32Mi"},
    });
    let (status, created) =
        common::call(&server.address, "POST", "/v1/sandboxes", Some(&body)).unwrap();
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let sandbox = format!("/v1/sandboxes/{id}");
    assert_eq!(
        common::call(&server.address, "GET", &sandbox, None)
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        common::call(
            &server.address,
            "GET",
            "/v1/sandboxes/no-such-sandbox",
            None
        )
        .unwrap()
        .0,
        404
    );
    let proxied = common::call(&server.address, "GET", &format!("{sandbox}/proxy/9/"), None);
    assert_eq!(proxied.unwrap().0, 502);
    let text = scrape(&server.address);
    assert_eq!(
        common::call(&server.address, "DELETE", &sandbox, None)
            .unwrap()
            .0,
        204
    );

    let samples: Vec<(String, BTreeMap<String, String>)> =
        text.lines().filter_map(sample).collect();
    assert!(samples.len() > 20, "{text}");
    for (title, expression) in expressions {
        let parsed = parser::parse(&expression)
            .unwrap_or_else(|e| panic!("panel {title:?}: {expression:?} is not PromQL: {e}"));
        let mut selectors = Selectors(Vec::new());
        walk_expr(&mut selectors, &parsed).unwrap();
        assert!(!selectors.0.is_empty(), "panel {title:?} selects nothing");
        for selector in selectors.0 {
            let name = selector.name.clone().unwrap_or_else(|| {
                selector
                    .matchers
                    .matchers
                    .iter()
                    .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
                    .map(|m| m.value.clone())
                    .unwrap_or_default()
            });
            let found = samples.iter().any(|(sample_name, labels)| {
                *sample_name == name
                    && selector.matchers.matchers.iter().all(|m| {
                        m.name == "__name__"
                            || m.is_match(labels.get(&m.name).map_or("", String::as_str))
                    })
            });
            assert!(
                found,
                "panel {title:?}: {expression:?} selects {name} with {:?}, which no series of the scrape has:\n{text}",
                selector.matchers.matchers
            );
        }
    }
}
