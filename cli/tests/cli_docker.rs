//! The `berth` command end to end: the real binary against a real `berth-server` on the real
//! Docker engine. Each test asserts what a user sees (standard output, standard error, exit
//! status) and what really happened (containers, volumes, files, HTTP answers), and starts a
//! server of its own (so listings hold only its sandboxes); the harness (`common`) removes
//! everything the run made, also when a test fails.
//!
//! Needs the Docker engine, `berth-test/busybox:latest` (`cargo xtask test-image`) and a built
//! server (`cargo build -p berth-api --bin berth-server`). Snapshots are in `snapshots/`
//! (`INSTA_UPDATE=always cargo test -p berth-cli --test cli_docker` rewrites them).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Value, json};

use common::{
    TEST_IMAGE, TestServer, berth, berth_bare, berth_with_config, dead_address, docker, http,
    require_docker, scratch_dir, unique_name,
};

/// The suite name in this file's labels and temporary directories.
const SUITE: &str = "cli-docker";

/// Every subcommand, as completions and the man page must name them.
const SUBCOMMANDS: [&str; 14] = [
    "create",
    "ls",
    "get",
    "rm",
    "pause",
    "resume",
    "renew",
    "label",
    "endpoint",
    "health",
    "validate",
    "config",
    "completions",
    "man",
];

// ---------------------------------------------------------------------------------------------
// Helpers

/// Runs `command`, expects exit 0 and answers its standard output.
fn ok(command: &mut Command) -> String {
    let output = command.assert().success().get_output().clone();
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `command`, expects exit `code` and answers (stdout, stderr).
fn fails(command: &mut Command, code: i32) -> (String, String) {
    let output = command.assert().code(code).get_output().clone();
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// `berth create --image <test image> <args>`: the new sandbox's id (the one line printed).
fn create(server: &TestServer, args: &[&str]) -> String {
    let stdout = ok(berth(server)
        .args(["create", "--image", TEST_IMAGE])
        .args(args));
    let id = stdout.strip_suffix('\n').unwrap_or(&stdout);
    assert!(is_uuid(id), "create printed {stdout:?}, not one id");
    id.to_owned()
}

/// `berth get ID -o json`.
fn get_json(server: &TestServer, id: &str) -> Value {
    parse_json(&ok(berth(server).args(["get", id, "-o", "json"])))
}

/// The ids of a listing: a page's `items`, or the array `--all` prints.
fn ids(listing: &Value) -> Vec<String> {
    listing
        .get("items")
        .unwrap_or(listing)
        .as_array()
        .unwrap_or_else(|| panic!("not a listing: {listing}"))
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

fn id_set(listing: &Value) -> BTreeSet<String> {
    ids(listing).into_iter().collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(
        value
            .as_str()
            .unwrap_or_else(|| panic!("not a time: {value}")),
    )
    .unwrap()
    .with_timezone(&Utc)
}

/// `expiresAt - createdAt` of a sandbox, in seconds.
fn lifetime(sandbox: &Value) -> i64 {
    (time(&sandbox["expiresAt"]) - time(&sandbox["createdAt"])).num_seconds()
}

/// The first two columns (id and state) of each line of a table: what does not change with
/// the clock.
fn rows(table: &str) -> Vec<(String, String)> {
    table
        .lines()
        .map(|line| {
            let mut cells = line.split_whitespace().map(str::to_owned);
            (
                cells.next().unwrap_or_default(),
                cells.next().unwrap_or_default(),
            )
        })
        .collect()
}

/// `docker inspect` of one container.
fn inspect(container: &str) -> Value {
    let out = docker(&["inspect", container]).unwrap();
    assert!(out.status.success(), "docker inspect {container} failed");
    parse_json(&String::from_utf8_lossy(&out.stdout))[0].clone()
}

/// Runs `script` with `sh -c` in the container.
fn exec(container: &str, script: &str) -> std::process::Output {
    docker(&["exec", container, "sh", "-c", script]).unwrap()
}

/// Runs `script` in the container, expects success and answers its output.
fn exec_ok(container: &str, script: &str) -> String {
    let out = exec(container, script);
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn volume_exists(name: &str) -> bool {
    docker(&["volume", "inspect", name])
        .unwrap()
        .status
        .success()
}

/// GETs `path` from `address` until it answers 200 (a server in a fresh sandbox may still be
/// starting); the last answer.
fn get_until_ok(address: &str, path: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = http(address, "GET", path, headers);
        if matches!(answer, Some((200, _))) || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Splits `host:port/path` (an endpoint as the API prints it, without scheme) in two.
fn split_endpoint(endpoint: &str) -> (&str, String) {
    match endpoint.split_once('/') {
        Some((address, path)) => (address, format!("/{path}")),
        None => (endpoint, "/".to_owned()),
    }
}

/// The filters every snapshot uses: the given ids as numbered stand-ins of the same width (so
/// tables keep their alignment), other UUIDs, times, ages, expiries and ports.
fn filters(ids: &[&str], extra: &[(String, &str)]) -> Vec<(String, String)> {
    let mut filters: Vec<(String, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                (*id).to_owned(),
                format!("sandbox{}-xxxx-xxxx-xxxx-xxxxxxxxxxxx", i + 1),
            )
        })
        .collect();
    filters.extend(extra.iter().map(|(k, v)| (k.clone(), (*v).to_owned())));
    for (regex, replacement) in [
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[UUID]",
        ),
        (
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
            "[TIME]",
        ),
        // `berth get`: "(12s ago)", "(in 59m)".
        (r"\(\d+[smhd] ago\)", "([AGE] ago)"),
        (r"\(in \d+[smhd]\)", "(in [SPAN])"),
        // `berth ls`: the AGE and EXPIRES cells with their padding, and the header above them,
        // made the same width so the columns still line up.
        (r"AGE  EXPIRES  ", "[AGE]  [EXPIRES]  "),
        (r"\b\d+[smhd] +in \d+[smhd] +", "[AGE]  [EXPIRES]  "),
        (r"\b\d+[smhd] +never +", "[AGE]  never      "),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
    ] {
        filters.push((regex.to_owned(), replacement.to_owned()));
    }
    filters
}

/// `insta::assert_snapshot!` of `text` under `name`, through `filters`.
fn snapshot(name: &str, text: &str, filters: &[(String, String)]) {
    insta::with_settings!({
        filters => filters.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

fn host_paths_env(root: &Path) -> (&'static str, String) {
    (
        "BERTH_STORAGE__ALLOWED_HOST_PATHS",
        format!("[\"{}\"]", root.display()),
    )
}

// ---------------------------------------------------------------------------------------------
// create

#[test]
fn create_takes_flags_volumes_files_and_dry_runs() {
    require_docker(&[TEST_IMAGE]);
    let host_root = scratch_dir();
    let root = host_root.path();
    std::fs::create_dir(root.join("skills")).unwrap();
    std::fs::write(root.join("skills/a.txt"), "skill A\n").unwrap();
    let files = scratch_dir();
    let server = TestServer::start(SUITE, &[host_paths_env(root)]);

    let health = ok(berth(&server).arg("health"));
    assert_eq!(
        health,
        format!("{} is healthy (runtime reachable)\n", server.url())
    );
    // JSON is the API's answer.
    let health = parse_json(&ok(berth(&server).args(["health", "-o", "json"])));
    assert_eq!(
        health,
        serde_json::json!({"status": "healthy", "runtime": "reachable"})
    );

    // Every flag, a host volume (read-only, on a subpath) and a pvc volume on a subpath.
    let claim = unique_name("cli-claim-");
    let id = create(
        &server,
        &[
            "--timeout",
            "1h",
            "--cpu",
            "500m",
            "--memory",
            "256Mi",
            "--env",
            "K=V",
            "--env",
            "MODE=dev",
            "--label",
            "team=cli",
            "--label",
            "user=u1",
            "--volume",
            &format!(
                "type=host,source={},target=/skills,subpath=skills,readonly",
                root.display()
            ),
            "--volume",
            &format!("type=pvc,claim={claim},target=/workspace,subpath=uid-1/session-1"),
            "--",
            "sleep",
            "3600",
        ],
    );
    let container = server
        .container_of(&id)
        .expect("no container for the sandbox");
    let inspected = inspect(&container);
    assert_eq!(inspected["State"]["Running"], json!(true));
    assert_eq!(inspected["Config"]["Image"], json!(TEST_IMAGE));
    assert_eq!(inspected["Config"]["Entrypoint"], json!(["sleep", "3600"]));
    let env: Vec<&str> = inspected["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"K=V") && env.contains(&"MODE=dev"), "{env:?}");
    assert_eq!(inspected["HostConfig"]["NanoCpus"], json!(500_000_000));
    assert_eq!(inspected["HostConfig"]["Memory"], json!(256 * 1024 * 1024));
    let mounts: BTreeMap<String, bool> = inspected["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["Destination"].as_str().unwrap().to_owned(),
                m["RW"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        mounts,
        BTreeMap::from([
            ("/skills".to_owned(), false),
            ("/workspace".to_owned(), true)
        ])
    );
    assert_eq!(exec_ok(&container, "cat /skills/a.txt"), "skill A\n");
    assert!(
        !exec(&container, "echo x > /skills/b.txt").status.success(),
        "the read-only host volume took a write"
    );
    assert!(!root.join("skills/b.txt").exists());
    exec_ok(&container, "echo w > /workspace/w.txt");
    assert!(volume_exists(&claim), "the claim was not created");

    let sandbox = get_json(&server, &id);
    assert_eq!(sandbox["metadata"], json!({"team": "cli", "user": "u1"}));
    assert_eq!(lifetime(&sandbox), 3600);
    assert_eq!(sandbox["status"]["state"], json!("Running"));
    let volumes = sandbox["volumes"].as_array().unwrap();
    let described: Vec<(&str, &str, &str, bool)> = volumes
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap(),
                v["backend"].as_str().unwrap(),
                v["subPath"].as_str().unwrap(),
                v["readOnly"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            ("skills", "host", "skills", true),
            ("workspace", "pvc", "uid-1/session-1", false)
        ]
    );

    // --wait with -o json: the API's answer, parsed.
    let created = parse_json(&ok(berth(&server).args([
        "create",
        "--image",
        TEST_IMAGE,
        "--wait",
        "-o",
        "json",
        "--label",
        "mode=wait",
        "--",
        "sleep",
        "3600",
    ])));
    let waited = created["id"].as_str().unwrap();
    assert!(is_uuid(waited), "{created}");
    assert_eq!(created["status"]["state"], json!("Running"));
    assert_eq!(created["metadata"], json!({"mode": "wait"}));
    assert_eq!(created["entrypoint"], json!(["sleep", "3600"]));
    time(&created["createdAt"]);
    let container = server.container_of(waited).unwrap();
    assert_eq!(inspect(&container)["State"]["Running"], json!(true));

    // --file request.json, the flags overriding and adding.
    let request_json = files.path().join("request.json");
    std::fs::write(
        &request_json,
        json!({
            "image": {"uri": TEST_IMAGE},
            "entrypoint": ["sleep", "3600"],
            "timeout": 600,
            "resourceLimits": {"cpu": "250m"},
            "env": {"FROM_FILE": "1"},
            "metadata": {"origin": "json", "over": "file"},
        })
        .to_string(),
    )
    .unwrap();
    let stdout = ok(berth(&server)
        .args(["create", "--file"])
        .arg(&request_json)
        .args([
            "--label",
            "over=flag",
            "--env",
            "FROM_FLAG=2",
            "--timeout",
            "2h",
        ]));
    let from_json = stdout.trim_end();
    assert!(is_uuid(from_json), "{stdout:?}");
    let sandbox = get_json(&server, from_json);
    assert_eq!(
        sandbox["metadata"],
        json!({"origin": "json", "over": "flag"})
    );
    assert_eq!(lifetime(&sandbox), 7200);
    let inspected = inspect(&server.container_of(from_json).unwrap());
    let env = inspected["Config"]["Env"].to_string();
    assert!(
        env.contains("FROM_FILE=1") && env.contains("FROM_FLAG=2"),
        "{env}"
    );
    assert_eq!(inspected["Config"]["Entrypoint"], json!(["sleep", "3600"]));
    assert_eq!(inspected["HostConfig"]["NanoCpus"], json!(250_000_000));

    // --file request.yaml: an image the flag replaces (the file's does not exist), the
    // entrypoint replaced by the one after `--`, the file's timeout kept.
    let request_yaml = files.path().join("request.yaml");
    std::fs::write(
        &request_yaml,
        "image:\n  uri: berth-test/absent:never\nentrypoint: [sleep, \"60\"]\ntimeout: 900\n\
         resourceLimits:\n  memory: 64Mi\nmetadata:\n  origin: yaml\n",
    )
    .unwrap();
    let stdout = ok(berth(&server)
        .args(["create", "-f"])
        .arg(&request_yaml)
        .args([
            "--image", TEST_IMAGE, "--memory", "128Mi", "--", "sleep", "1800",
        ]));
    let from_yaml = stdout.trim_end();
    assert!(is_uuid(from_yaml), "{stdout:?}");
    let sandbox = get_json(&server, from_yaml);
    assert_eq!(sandbox["metadata"], json!({"origin": "yaml"}));
    assert_eq!(sandbox["image"]["uri"], json!(TEST_IMAGE));
    assert_eq!(lifetime(&sandbox), 900);
    let inspected = inspect(&server.container_of(from_yaml).unwrap());
    assert_eq!(inspected["Config"]["Entrypoint"], json!(["sleep", "1800"]));
    assert_eq!(inspected["HostConfig"]["Memory"], json!(128 * 1024 * 1024));

    // --dry-run: the container body, and nothing made (no container, no claim, no sandbox).
    let containers = server.containers();
    assert_eq!(containers.len(), 4, "{containers:?}");
    let dry_claim = unique_name("cli-dry-");
    let dry = parse_json(&ok(berth(&server).args([
        "create",
        "--image",
        TEST_IMAGE,
        "--label",
        "dry=1",
        "--volume",
        &format!("type=pvc,claim={dry_claim},target=/data"),
        "--dry-run",
        "-o",
        "json",
        "--",
        "sleep",
        "60",
    ])));
    let body = &dry["runtime"]["container"];
    assert_eq!(body["Image"], json!(TEST_IMAGE));
    assert_eq!(body["Entrypoint"], json!(["sleep", "60"]));
    assert_eq!(body["Labels"]["berth.test-run"], json!(server.run));
    let dry_id = dry["sandbox"]["id"].as_str().unwrap();
    assert_eq!(body["Labels"]["opensandbox.io/id"], json!(dry_id));
    assert_eq!(
        dry["runtime"]["containerName"],
        json!(format!("sandbox-{dry_id}"))
    );
    assert_eq!(dry["sandbox"]["metadata"], json!({"dry": "1"}));
    assert_eq!(dry["sandbox"]["status"]["state"], json!("Pending"));
    assert!(dry["runtime"].to_string().contains(&dry_claim), "{dry}");
    let table = ok(berth(&server).args([
        "create",
        "--image",
        TEST_IMAGE,
        "--label",
        "dry=1",
        "--dry-run",
        "--",
        "sleep",
        "60",
    ]));
    assert!(table.contains("Would send to the runtime:"), "{table}");
    assert!(table.contains("State:       Pending"), "{table}");
    assert_eq!(
        server.containers(),
        containers,
        "a dry run made a container"
    );
    assert!(!volume_exists(&dry_claim), "a dry run made a claim");
    let listed = parse_json(&ok(
        berth(&server).args(["ls", "--label", "dry=1", "-o", "json"])
    ));
    assert!(ids(&listed).is_empty(), "{listed}");
    assert_eq!(get_json(&server, &id)["id"], json!(id));
}

// ---------------------------------------------------------------------------------------------
// The session walkthrough

#[test]
fn a_session_workspace_outlives_its_sandbox() {
    require_docker(&[TEST_IMAGE]);
    let server = TestServer::start(SUITE, &[]);
    let claim = unique_name("cli-session-");
    let session =
        |n: u32| format!("type=pvc,claim={claim},target=/workspace,subpath=uid-1/session-{n}");

    let first = create(&server, &["--volume", &session(1), "--", "sleep", "3600"]);
    let container = server.container_of(&first).unwrap();
    exec_ok(
        &container,
        "echo 'notes of session 1' > /workspace/notes.txt",
    );

    assert_eq!(
        ok(berth(&server).args(["rm", &first])),
        format!("{first}\n")
    );
    assert_eq!(
        server.container_of(&first),
        None,
        "the container outlived rm"
    );
    let (_, stderr) = fails(berth(&server).args(["get", &first]), 1);
    assert!(stderr.contains("SANDBOX::NOT_FOUND"), "{stderr}");
    assert!(volume_exists(&claim), "the claim went with the sandbox");
    // The file is in the claim, under the session's subpath.
    let out = docker(&[
        "run",
        "--rm",
        "--label",
        "berth.test=1",
        "--label",
        &format!("berth.test-run={}", server.run),
        "-v",
        &format!("{claim}:/claim:ro"),
        TEST_IMAGE,
        "cat",
        "/claim/uid-1/session-1/notes.txt",
    ])
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "notes of session 1\n");

    let second = create(&server, &["--volume", &session(1), "--", "sleep", "3600"]);
    assert_ne!(second, first);
    let container = server.container_of(&second).unwrap();
    assert_eq!(
        exec_ok(&container, "cat /workspace/notes.txt"),
        "notes of session 1\n"
    );

    // Another session of the same claim does not see it.
    let other = create(&server, &["--volume", &session(2), "--", "sleep", "3600"]);
    let container = server.container_of(&other).unwrap();
    assert_eq!(exec_ok(&container, "ls -A /workspace"), "");
}

// ---------------------------------------------------------------------------------------------
// ls and get

#[test]
fn ls_and_get_print_tables_json_and_yaml() {
    require_docker(&[TEST_IMAGE]);
    let server = TestServer::start(SUITE, &[]);
    // Same length every run, so the tables' columns keep their widths.
    let claim = unique_name("cli-claim-");
    let s1 = create(
        &server,
        &[
            "--timeout",
            "1h",
            "--label",
            "suite=ls",
            "--label",
            "role=worker",
            "--",
            "sleep",
            "3600",
        ],
    );
    let s2 = create(
        &server,
        &[
            "--timeout",
            "2h",
            "--label",
            "suite=ls",
            "--label",
            "role=db",
            "--volume",
            &format!("type=pvc,claim={claim},target=/data,subpath=db"),
            "--",
            "sleep",
            "3600",
        ],
    );
    let s3 = create(
        &server,
        &[
            "--timeout",
            "none",
            "--label",
            "suite=ls",
            "--label",
            "role=worker",
            "--",
            "sleep",
            "3600",
        ],
    );
    assert_eq!(ok(berth(&server).args(["pause", &s3])), format!("{s3}\n"));
    let filters = filters(&[&s1, &s2, &s3], &[(claim.clone(), "cli-claim-xxxxxxxx")]);

    // The table, newest first.
    let table = ok(berth(&server).arg("ls"));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("ID "), "{table}");
    for (line, (id, state)) in
        lines[1..]
            .iter()
            .zip([(&s3, "Paused"), (&s2, "Running"), (&s1, "Running")])
    {
        assert!(line.starts_with(id.as_str()), "{table}");
        assert!(line.contains(&format!("  {state}  ")), "{table}");
    }
    snapshot("ls_table", &table, &filters);
    assert_eq!(
        rows(&ok(berth(&server).arg("list"))),
        rows(&table),
        "the alias"
    );

    // Filters.
    let listed = |flag: &str, values: &[&str]| {
        let mut command = berth(&server);
        command.args(["ls", "-o", "json"]);
        for value in values {
            command.args([flag, value]);
        }
        id_set(&parse_json(&ok(&mut command)))
    };
    let by_state = |states: &[&str]| listed("--state", states);
    assert_eq!(by_state(&["running"]), set(&[&s1, &s2]));
    assert_eq!(by_state(&["Paused"]), set(&[&s3]));
    assert_eq!(by_state(&["running", "paused"]), set(&[&s1, &s2, &s3]));
    let by_label = |labels: &[&str]| listed("--label", labels);
    assert_eq!(by_label(&["role=worker"]), set(&[&s1, &s3]));
    assert_eq!(by_label(&["role=worker", "suite=ls"]), set(&[&s1, &s3]));
    assert_eq!(by_label(&["role=db", "suite=ls"]), set(&[&s2]));
    assert_eq!(by_label(&["role=nobody"]), set(&[]));
    let empty = ok(berth(&server).args(["ls", "--label", "role=nobody"]));
    assert_eq!(empty.lines().count(), 1, "{empty}");
    assert!(empty.starts_with("ID "), "{empty}");

    // Pages.
    let first_page = ok(berth(&server).args(["ls", "--page-size", "2"]));
    let lines: Vec<&str> = first_page.lines().collect();
    assert_eq!(lines.len(), 4, "{first_page}");
    assert!(
        lines[1].starts_with(&s3) && lines[2].starts_with(&s2),
        "{first_page}"
    );
    assert_eq!(
        lines[3],
        "(page 1 of 2, 3 sandboxes; --page 2 for more, --all for every page)"
    );
    let second_page = ok(berth(&server).args(["ls", "--page", "2", "--page-size", "2"]));
    let lines: Vec<&str> = second_page.lines().collect();
    assert_eq!(lines.len(), 2, "{second_page}");
    assert!(lines[1].starts_with(&s1), "{second_page}");
    let page = parse_json(&ok(berth(&server).args([
        "ls",
        "--page",
        "2",
        "--page-size",
        "2",
        "-o",
        "json",
    ])));
    assert_eq!(ids(&page), std::slice::from_ref(&s1));
    assert_eq!(
        page["pagination"],
        json!({"page": 2, "pageSize": 2, "totalItems": 3, "totalPages": 2, "hasNextPage": false})
    );
    let all = parse_json(&ok(berth(&server).args([
        "ls",
        "--all",
        "--page-size",
        "1",
        "-o",
        "json",
    ])));
    // One listing of every page, in the same shape as a page.
    assert!(all["items"].is_array(), "{all}");
    assert_eq!(all["pagination"]["totalItems"], 3, "{all}");
    assert_eq!(all["pagination"]["hasNextPage"], false, "{all}");
    assert_eq!(ids(&all), [s3.clone(), s2.clone(), s1.clone()]);
    let all_table = ok(berth(&server).args(["ls", "--all", "--page-size", "1"]));
    assert_eq!(rows(&all_table), rows(&table));
    let (_, stderr) = fails(berth(&server).args(["ls", "--all", "--page", "2"]), 2);
    assert!(stderr.contains("cannot be used with"), "{stderr}");

    // JSON and YAML say the same.
    let json_listing = parse_json(&ok(berth(&server).args(["ls", "-o", "json"])));
    assert_eq!(ids(&json_listing), [s3.clone(), s2.clone(), s1.clone()]);
    let yaml_listing: Value =
        serde_norway::from_str(&ok(berth(&server).args(["ls", "-o", "yaml"]))).unwrap();
    assert_eq!(yaml_listing, json_listing);

    // get.
    let details = ok(berth(&server).args(["get", &s2]));
    assert!(
        details.starts_with(&format!("ID:          {s2}\n")),
        "{details}"
    );
    snapshot("get_table", &details, &filters);
    let yaml = ok(berth(&server).args(["get", &s2, "-o", "yaml"]));
    snapshot("get_yaml", &yaml, &filters);
    let from_yaml: Value = serde_norway::from_str(&yaml).unwrap();
    let from_json = get_json(&server, &s2);
    assert_eq!(from_yaml, from_json);
    assert_eq!(from_json["metadata"], json!({"role": "db", "suite": "ls"}));
    assert_eq!(lifetime(&from_json), 7200);
    let paused = ok(berth(&server).args(["get", &s3]));
    assert!(paused.contains("\nState:       Paused\n"), "{paused}");
    assert!(paused.contains("\nExpires:     never\n"), "{paused}");
    assert_eq!(get_json(&server, &s3).get("expiresAt"), None);
}

// ---------------------------------------------------------------------------------------------
// label, renew, pause, resume, endpoint

#[test]
fn label_renew_pause_resume_and_endpoints() {
    require_docker(&[TEST_IMAGE]);
    let server = TestServer::start(
        SUITE,
        &[("BERTH_DOCKER__PUBLISHED_PORTS", "[80]".to_owned())],
    );
    let marker = unique_name("served-by-sandbox-");
    let script =
        format!("mkdir -p /www && echo {marker} > /www/index.html && exec httpd -f -p 80 -h /www");
    let id = create(
        &server,
        &[
            "--timeout",
            "1h",
            "--label",
            "owner=ana",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let container = server.container_of(&id).unwrap();

    // label: K=V sets, K- removes; the labels after the change are printed.
    assert_eq!(
        ok(berth(&server).args(["label", &id, "stage=review", "other=x"])),
        "other=x\nowner=ana\nstage=review\n"
    );
    assert_eq!(
        ok(berth(&server).args(["label", &id, "other-", "owner=bob"])),
        "owner=bob\nstage=review\n"
    );
    assert_eq!(
        get_json(&server, &id)["metadata"],
        json!({"owner": "bob", "stage": "review"})
    );
    let labelled = parse_json(&ok(
        berth(&server).args(["label", &id, "tier=1", "-o", "json"])
    ));
    assert_eq!(
        labelled["metadata"],
        json!({"owner": "bob", "stage": "review", "tier": "1"})
    );
    for bad in [&["oops"][..], &["=v"], &["a=1", "a-"]] {
        let (_, stderr) = fails(berth(&server).args(["label", &id]).args(bad), 2);
        assert!(stderr.starts_with("berth: "), "{bad:?}: {stderr}");
    }
    assert_eq!(
        get_json(&server, &id)["metadata"],
        json!({"owner": "bob", "stage": "review", "tier": "1"}),
        "a refused change changed something"
    );

    // renew --for: the new expiry printed and kept.
    let before = Utc::now();
    let stdout = ok(berth(&server).args(["renew", &id, "--for", "2h"]));
    let after = Utc::now();
    let printed = stdout
        .strip_prefix(&format!("{id} expires at "))
        .and_then(|s| s.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{stdout:?}"));
    let expires = time(&get_json(&server, &id)["expiresAt"]);
    let two_hours = chrono::Duration::hours(2);
    assert!(
        expires >= before + two_hours - chrono::Duration::seconds(1)
            && expires <= after + two_hours,
        "{expires} is not 2h after the renew"
    );
    assert_eq!(
        printed,
        expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    // renew --until: exactly that time.
    let until = (Utc::now() + chrono::Duration::hours(3)).trunc_subsecs(0);
    let answer = parse_json(&ok(berth(&server).args([
        "renew",
        &id,
        "--until",
        &until.to_rfc3339(),
        "-o",
        "json",
    ])));
    assert_eq!(time(&answer["expiresAt"]), until);
    assert_eq!(time(&get_json(&server, &id)["expiresAt"]), until);

    // pause and resume, seen through `get` and in the engine.
    assert_eq!(ok(berth(&server).args(["pause", &id])), format!("{id}\n"));
    assert_eq!(get_json(&server, &id)["status"]["state"], json!("Paused"));
    assert!(ok(berth(&server).args(["get", &id])).contains("\nState:       Paused\n"));
    assert_eq!(inspect(&container)["State"]["Paused"], json!(true));
    assert_eq!(ok(berth(&server).args(["resume", &id])), format!("{id}\n"));
    assert_eq!(get_json(&server, &id)["status"]["state"], json!("Running"));
    let state = inspect(&container)["State"].clone();
    assert_eq!(
        (&state["Paused"], &state["Running"]),
        (&json!(false), &json!(true))
    );

    // endpoint: the published port, and it serves.
    let direct = ok(berth(&server).args(["endpoint", &id, "80"]));
    let direct = direct.trim_end();
    let published = common::docker_lines(&["port", &container, "80/tcp"]);
    assert!(
        published.iter().any(|p| p == direct),
        "{direct} not in {published:?}"
    );
    let (status, body) = get_until_ok(direct, "/", &[]).unwrap();
    assert_eq!((status, body.trim()), (200, marker.as_str()));
    let as_json = parse_json(&ok(
        berth(&server).args(["endpoint", &id, "80", "-o", "json"])
    ));
    assert_eq!(as_json["endpoint"], json!(direct));

    // --server-proxy: the server's route, which needs the key.
    let proxied = ok(berth(&server).args(["endpoint", &id, "80", "--server-proxy"]));
    let proxied = proxied.trim_end();
    assert_eq!(
        proxied,
        format!("{}/v1/sandboxes/{id}/proxy/80", server.address)
    );
    let (address, path) = split_endpoint(proxied);
    let key = [("OPEN-SANDBOX-API-KEY", server.api_key.as_str())];
    let (status, body) = get_until_ok(address, &format!("{path}/"), &key).unwrap();
    assert_eq!((status, body.trim()), (200, marker.as_str()));
    let (status, _) = http(address, "GET", &format!("{path}/"), &[]).unwrap();
    assert_eq!(status, 401, "the proxy route served without the key");

    // --expires: a signed route, usable without the key, valid for about an hour.
    let signed = ok(berth(&server).args(["endpoint", &id, "80", "--expires", "1h"]));
    let signed = signed.trim_end();
    let prefix = format!("{}/v1/sandboxes/{id}/signed/", server.address);
    let token = signed
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix("/proxy/80"))
        .unwrap_or_else(|| panic!("{signed}"));
    let expires: i64 = token.split('.').next().unwrap().parse().unwrap();
    let in_an_hour = Utc::now().timestamp() + 3600;
    assert!((expires - in_an_hour).abs() < 120, "{signed}");
    let (address, path) = split_endpoint(signed);
    let (status, body) = get_until_ok(address, &format!("{path}/"), &[]).unwrap();
    assert_eq!((status, body.trim()), (200, marker.as_str()));
    let (_, stderr) = fails(
        berth(&server).args(["endpoint", &id, "80", "--server-proxy", "--expires", "1h"]),
        2,
    );
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// rm

#[test]
fn rm_deletes_by_id_and_by_label_only_when_confirmed() {
    require_docker(&[TEST_IMAGE]);
    let server = TestServer::start(SUITE, &[]);
    let sleeper = |batch: &str| create(&server, &["--label", batch, "--", "sleep", "3600"]);
    let a = sleeper("batch=one");
    let b = sleeper("batch=one");
    let c = sleeper("batch=two");
    let d = sleeper("batch=two");
    assert_eq!(server.containers().len(), 4);

    assert_eq!(
        ok(berth(&server).args(["rm", &a, &b])),
        format!("{a}\n{b}\n")
    );
    assert_eq!(server.container_of(&a), None);
    assert_eq!(server.container_of(&b), None);
    let left = parse_json(&ok(berth(&server).args(["ls", "-o", "json"])));
    assert_eq!(id_set(&left), set(&[&c, &d]));

    // By label without --yes, off a terminal: refused, nothing deleted.
    let (stdout, stderr) = fails(berth(&server).args(["rm", "--label", "batch=two"]), 2);
    assert_eq!(stdout, "");
    assert!(stderr.contains("2 sandboxes match"), "{stderr}");
    assert!(stderr.contains("--yes"), "{stderr}");
    assert!(server.container_of(&c).is_some() && server.container_of(&d).is_some());
    let left = parse_json(&ok(berth(&server).args(["ls", "-o", "json"])));
    assert_eq!(id_set(&left), set(&[&c, &d]));

    // On a terminal (a pty, through script(1)) it asks: "n" deletes nothing.
    let (code, shown) = on_terminal(&server, "rm --label batch=two", "n\n");
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains("Delete 2 sandboxes? [y/N]"), "{shown}");
    assert!(shown.contains("nothing deleted"), "{shown}");
    assert!(server.container_of(&c).is_some() && server.container_of(&d).is_some());

    // A create on a terminal shows a spinner while the server creates and starts the sandbox.
    let (code, shown) = on_terminal(
        &server,
        &format!("create --image {TEST_IMAGE} --label batch=tty -- sleep 600"),
        "",
    );
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains("creating the sandbox and waiting for it to run"),
        "{shown}"
    );
    ok(berth(&server).args(["rm", "--label", "batch=tty", "--yes"]));

    // With --yes: each deleted id printed.
    let stdout = ok(berth(&server).args(["delete", "--label", "batch=two", "--yes"]));
    assert_eq!(
        stdout.lines().map(str::to_owned).collect::<BTreeSet<_>>(),
        set(&[&c, &d])
    );
    assert!(server.containers().is_empty(), "{:?}", server.containers());
    let left = parse_json(&ok(berth(&server).args(["ls", "-o", "json"])));
    assert!(ids(&left).is_empty(), "{left}");

    let (stdout, stderr) = fails(berth(&server).args(["rm", "--label", "batch=two", "-y"]), 0);
    assert_eq!(stdout, "");
    assert!(stderr.contains("no sandbox has those labels"), "{stderr}");
    // One unknown among several: the known one goes, the status is the failure's.
    let e = sleeper("batch=three");
    let (stdout, stderr) = fails(berth(&server).args(["rm", &a, &e]), 1);
    assert_eq!(stdout, format!("{e}\n"));
    assert!(
        stderr.contains(&format!("{a}: SANDBOX::NOT_FOUND")),
        "{stderr}"
    );
    assert_eq!(server.container_of(&e), None);
    let (_, stderr) = fails(berth(&server).arg("rm"), 2);
    assert!(stderr.contains("required"), "{stderr}");
    let (_, stderr) = fails(berth(&server).args(["rm", &a, "--label", "x=y"]), 2);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

/// Runs `berth <args>` against `server` on a terminal (a pty made by script(1)), typing `input`;
/// its exit status and everything the terminal showed.
fn on_terminal(server: &TestServer, args: &str, input: &str) -> (Option<i32>, String) {
    let command = format!(
        "'{}' {args}",
        assert_cmd::cargo::cargo_bin("berth").display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("OPEN_SANDBOX_DOMAIN", &server.address)
        .env("OPEN_SANDBOX_API_KEY", &server.api_key)
        .env("BERTH_CLI_CONFIG", server.config_file())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) is needed (util-linux)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Failures

#[test]
fn failures_exit_with_their_status_and_say_why() {
    require_docker(&[TEST_IMAGE]);
    let host_root = scratch_dir();
    let outside = scratch_dir();
    let server = TestServer::start(SUITE, &[host_paths_env(host_root.path())]);
    let filters = filters(
        &[],
        &[
            (host_root.path().display().to_string(), "[ALLOWED_ROOT]"),
            (outside.path().display().to_string(), "[OUTSIDE]"),
        ],
    );

    // An unknown id, for every command that takes one: the server's code, exit 1.
    let unknown = "00000000-0000-4000-8000-000000000000";
    for args in [
        &["get", unknown][..],
        &["pause", unknown],
        &["resume", unknown],
        &["rm", unknown],
        &["renew", unknown, "--for", "1h"],
        &["label", unknown, "a=b"],
        &["endpoint", unknown, "80"],
    ] {
        let (stdout, stderr) = fails(berth(&server).args(args), 1);
        assert_eq!(stdout, "", "{args:?}");
        assert!(stderr.contains("SANDBOX::NOT_FOUND"), "{args:?}: {stderr}");
    }
    let (_, stderr) = fails(berth(&server).args(["get", unknown]), 1);
    assert!(
        stderr.starts_with(&format!(
            "berth: SANDBOX::NOT_FOUND: sandbox {unknown} not found"
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    snapshot("error_unknown_id", &stderr, &filters);

    // The wrong key, or none: the server's code, exit 1; the key is never echoed.
    let (stdout, stderr) = fails(
        berth(&server).args(["--api-key", "not-the-key-1234", "ls"]),
        1,
    );
    assert_eq!(stdout, "");
    assert!(stderr.contains("INVALID_API_KEY"), "{stderr}");
    assert!(!stderr.contains("not-the-key-1234") && !stderr.contains(&server.api_key));
    snapshot("error_wrong_api_key", &stderr, &filters);
    let (_, stderr) = fails(
        berth(&server).env_remove("OPEN_SANDBOX_API_KEY").arg("ls"),
        1,
    );
    assert!(stderr.contains("MISSING_API_KEY"), "{stderr}");

    // Nothing listening: exit 3.
    let dead = dead_address();
    for args in [&["health"][..], &["ls"], &["get", unknown]] {
        let (_, stderr) = fails(
            berth(&server).env("OPEN_SANDBOX_DOMAIN", &dead).args(args),
            3,
        );
        assert!(
            stderr.contains(&format!("cannot reach http://{dead}: connection refused")),
            "{stderr}"
        );
    }
    let (_, stderr) = fails(berth(&server).args(["--server", &dead, "health"]), 3);
    snapshot("error_unreachable", &stderr, &filters);
    // Listening but never answering: exit 3 after --request-timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_address = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let (_, stderr) = fails(
        berth(&server).args(["--server", &silent_address, "--request-timeout", "1s", "ls"]),
        3,
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        stderr.contains(&format!("no answer from http://{silent_address} within 1s")),
        "{stderr}"
    );
    assert!(stderr.contains("--request-timeout"), "{stderr}");
    drop(silent);

    // A bad --volume: a usage error naming the key, exit 2, nothing sent.
    let (_, stderr) = fails(
        berth(&server).args([
            "create",
            "--image",
            TEST_IMAGE,
            "--volume",
            "type=host,sorce=/x,target=/y",
            "--",
            "sleep",
            "60",
        ]),
        2,
    );
    assert!(stderr.contains("did you mean \"source\"?"), "{stderr}");
    snapshot("error_bad_volume_key", &stderr, &filters);
    for (spec, named) in [
        ("type=pvc,target=/data", "claim"),
        ("type=host,source=/x,target=/y,target=/z", "target"),
        ("type=nfs,server=n,path=/e,target=/m,source=/x", "source"),
        (
            "type=ossfs,bucket=b,endpoint=e,target=/m,access-key-id=a,access-key-secret=s",
            "access-key-secret",
        ),
    ] {
        let (_, stderr) = fails(
            berth(&server).args([
                "create", "--image", TEST_IMAGE, "--volume", spec, "--", "sleep", "60",
            ]),
            2,
        );
        assert!(stderr.contains("--volume"), "{spec}: {stderr}");
        assert!(stderr.contains(named), "{spec}: {stderr}");
    }

    // A host path outside the allowed roots: the server's code naming the field, exit 1.
    let (stdout, stderr) = fails(
        berth(&server).args([
            "create",
            "--image",
            TEST_IMAGE,
            "--volume",
            &format!("type=host,source={},target=/data", outside.path().display()),
            "--",
            "sleep",
            "60",
        ]),
        1,
    );
    assert_eq!(stdout, "");
    assert!(
        stderr.starts_with("berth: VOLUME::HOST_PATH_NOT_ALLOWED: volumes[0].host.path: "),
        "{stderr}"
    );
    snapshot("error_host_path_not_allowed", &stderr, &filters);
    // Past the server's longest timeout: refused by the server, exit 1.
    let (_, stderr) = fails(
        berth(&server).args([
            "create",
            "--image",
            TEST_IMAGE,
            "--timeout",
            "48h",
            "--",
            "sleep",
            "60",
        ]),
        1,
    );
    assert!(
        stderr.contains("SANDBOX::INVALID_PARAMETER") && stderr.contains("timeout"),
        "{stderr}"
    );

    // A request file that is missing, or not JSON nor YAML of a request: exit 2, naming it.
    let missing = server.dir().join("no-such-request.json");
    let (_, stderr) = fails(berth(&server).args(["create", "--file"]).arg(&missing), 2);
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(stderr.contains("No such file"), "{stderr}");
    let broken = server.dir().join("broken.json");
    std::fs::write(&broken, "{\"image\": ").unwrap();
    let (_, stderr) = fails(berth(&server).args(["create", "--file"]).arg(&broken), 2);
    assert!(stderr.contains(&broken.display().to_string()), "{stderr}");

    // Usage errors of clap: exit 2.
    let (_, stderr) = fails(berth(&server).args(["renew", unknown]), 2);
    assert!(
        stderr.contains("required arguments were not provided")
            && stderr.contains("--for")
            && stderr.contains("--until"),
        "{stderr}"
    );
    let (_, stderr) = fails(
        berth(&server).args([
            "renew",
            unknown,
            "--for",
            "1h",
            "--until",
            "2030-01-01T00:00:00Z",
        ]),
        2,
    );
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    for bad in ["5", "0s", "soon", "-1h"] {
        let (_, stderr) = fails(
            berth(&server)
                .args(["create", "--image", TEST_IMAGE])
                .arg(format!("--timeout={bad}"))
                .args(["--", "sleep", "60"]),
            2,
        );
        assert!(stderr.contains("--timeout"), "{bad}: {stderr}");
    }
    let (_, stderr) = fails(berth(&server).args(["create", "--", "sleep", "60"]), 2);
    assert!(stderr.contains("--image"), "{stderr}");

    assert!(
        server.containers().is_empty(),
        "a failed command made a container: {:?}",
        server.containers()
    );
}

// ---------------------------------------------------------------------------------------------
// The configuration file

#[test]
fn the_configuration_file_and_its_precedence() {
    require_docker(&[TEST_IMAGE]);
    let server = TestServer::start(SUITE, &[]);
    let dir = scratch_dir();
    let config = dir.path().join("berth/config.toml");
    let key = server.api_key.clone();

    let (_, stderr) = fails(
        berth_with_config(&config).args(["config", "set", "server", &server.address]),
        0,
    );
    assert_eq!(stderr, format!("server set in {}\n", config.display()));
    // The key from standard input, so that it is on no command line.
    let mut set_key = berth_with_config(&config);
    set_key
        .args(["config", "set", "api-key"])
        .write_stdin(format!("{key}\n"));
    assert!(
        set_key
            .get_args()
            .all(|a| !a.to_string_lossy().contains(&key))
    );
    set_key.assert().success();
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "the file holding the key is readable by others"
    );
    let stored: BTreeMap<String, String> =
        toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(
        stored,
        BTreeMap::from([
            ("server".to_owned(), server.address.clone()),
            ("api-key".to_owned(), key.clone())
        ])
    );

    assert_eq!(
        ok(berth_with_config(&config).args(["config", "get", "server"])),
        format!("{}\n", server.address)
    );
    let masked = ok(berth_with_config(&config).args(["config", "get", "api-key"]));
    assert!(!masked.contains(&key[..key.len() - 2]), "{masked}");
    let tail = &key[key.len() - 2..];
    assert_eq!(
        masked,
        format!("********{tail} ({} characters)\n", key.chars().count())
    );
    assert_eq!(
        ok(berth_with_config(&config).args(["config", "get", "api-key", "--reveal"])),
        format!("{key}\n")
    );
    // --reveal means something only for the key: elsewhere it is refused, not ignored.
    let (_, stderr) = fails(
        berth_with_config(&config).args(["config", "get", "server", "--reveal"]),
        2,
    );
    assert!(stderr.contains("--reveal is for api-key"), "{stderr}");
    assert_eq!(
        ok(berth_with_config(&config).args(["config", "path"])),
        format!("{}\n", config.display())
    );
    // `--config` names the file as BERTH_CLI_CONFIG does.
    assert_eq!(
        ok(berth_bare()
            .arg("--config")
            .arg(&config)
            .args(["config", "get", "server"])),
        format!("{}\n", server.address)
    );

    // The file alone is enough.
    assert_eq!(
        ok(berth_with_config(&config).arg("health")),
        format!("{} is healthy (runtime reachable)\n", server.url())
    );
    let stdout =
        ok(berth_with_config(&config)
            .args(["create", "--image", TEST_IMAGE, "--", "sleep", "3600"]));
    let id = stdout.trim_end();
    assert!(server.container_of(id).is_some(), "{stdout}");
    let listed = parse_json(&ok(berth_with_config(&config).args(["ls", "-o", "json"])));
    assert_eq!(ids(&listed), [id.to_owned()]);

    // Server: the environment beats the file, the flag beats the environment.
    let dead = dead_address();
    let (_, stderr) = fails(
        berth_with_config(&config)
            .env("OPEN_SANDBOX_DOMAIN", &dead)
            .arg("ls"),
        3,
    );
    assert!(stderr.contains(&format!("http://{dead}")), "{stderr}");
    ok(berth_with_config(&config)
        .env("OPEN_SANDBOX_DOMAIN", &dead)
        .args(["--server", &server.address, "ls"]));
    // Key: the same order.
    let (_, stderr) = fails(
        berth_with_config(&config)
            .env("OPEN_SANDBOX_API_KEY", "wrong-key-from-env")
            .arg("ls"),
        1,
    );
    assert!(stderr.contains("INVALID_API_KEY"), "{stderr}");
    ok(berth_with_config(&config)
        .env("OPEN_SANDBOX_API_KEY", "wrong-key-from-env")
        .args(["--api-key", &key, "ls"]));
    berth_with_config(&config)
        .args(["config", "set", "api-key"])
        .write_stdin("wrong-key-from-file")
        .assert()
        .success();
    let (_, stderr) = fails(berth_with_config(&config).arg("ls"), 1);
    assert!(stderr.contains("INVALID_API_KEY"), "{stderr}");
    ok(berth_with_config(&config)
        .env("OPEN_SANDBOX_API_KEY", &key)
        .arg("ls"));

    // unset, and values refused before they are written.
    ok(berth_with_config(&config).args(["config", "unset", "api-key"]));
    let (_, stderr) = fails(
        berth_with_config(&config).args(["config", "get", "api-key"]),
        2,
    );
    assert!(stderr.contains("api-key is not set"), "{stderr}");
    let (_, stderr) = fails(berth_with_config(&config).arg("ls"), 1);
    assert!(stderr.contains("MISSING_API_KEY"), "{stderr}");
    let (_, stderr) = fails(
        berth_with_config(&config).args(["config", "set", "server", "ftp://berth.example"]),
        2,
    );
    assert!(stderr.contains("ftp://berth.example"), "{stderr}");
    let (_, stderr) = fails(
        berth_with_config(&config).args(["config", "set", "request-timeout", "5"]),
        2,
    );
    assert!(stderr.contains("\"5\""), "{stderr}");
    assert_eq!(
        ok(berth_with_config(&config).args(["config", "get", "server"])),
        format!("{}\n", server.address),
        "a refused value changed the file"
    );
    let (_, stderr) = fails(
        berth_with_config(&config).args(["config", "set", "api-key"]),
        2,
    );
    assert!(stderr.contains("cannot be empty"), "{stderr}");
    ok(berth_with_config(&config).args(["config", "set", "request-timeout", "30s"]));
    assert_eq!(
        ok(berth_with_config(&config).args(["config", "get", "request-timeout"])),
        "30s\n"
    );
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

// ---------------------------------------------------------------------------------------------
// Completions and the man page

/// The words of a script (runs of letters, digits, `_` and `-`).
fn words(script: &str) -> BTreeSet<&str> {
    script
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .filter(|w| !w.is_empty())
        .collect()
}

#[test]
fn completions_and_the_man_page() {
    for (shell, opening) in [
        ("bash", "_berth() {"),
        ("zsh", "#compdef berth"),
        ("fish", "complete -c berth"),
    ] {
        let script = ok(berth_bare().args(["completions", shell]));
        assert!(script.contains(opening), "{shell}: {opening:?} missing");
        let words = words(&script);
        for subcommand in SUBCOMMANDS {
            assert!(words.contains(subcommand), "{shell}: no {subcommand}");
        }
        assert!(
            words.contains("--volume") || words.contains("volume"),
            "{shell}"
        );
    }
    let (_, stderr) = fails(berth_bare().args(["completions", "tcsh"]), 2);
    assert!(stderr.contains("tcsh"), "{stderr}");

    let page = ok(berth_bare().arg("man"));
    assert!(page.contains("\n.TH berth 1 "), "no .TH line");
    assert!(page.contains("\n.SH SYNOPSIS\n"), "no synopsis");
    for subcommand in SUBCOMMANDS {
        assert!(
            page.contains(&format!("berth\\-{subcommand}(1)")),
            "no {subcommand}"
        );
    }
    assert!(page.contains("OPEN_SANDBOX_DOMAIN"));

    // Every page the top one refers to exists: `--dir` writes one per subcommand, and
    // create's holds the --volume syntax.
    let pages = scratch_dir();
    ok(berth_bare().args(["man", "--dir"]).arg(pages.path()));
    for subcommand in SUBCOMMANDS {
        let page = std::fs::read_to_string(pages.path().join(format!("berth-{subcommand}.1")))
            .unwrap_or_else(|e| panic!("no page of {subcommand}: {e}"));
        assert!(
            page.contains(&format!(".TH berth-{subcommand} 1 ")),
            "{subcommand}"
        );
    }
    let create = std::fs::read_to_string(pages.path().join("berth-create.1")).unwrap();
    assert!(create.contains("type=pvc,claim=sessions"), "{create}");
    assert!(
        create.contains("secret\\-env") || create.contains("secret-env"),
        "{create}"
    );
    assert_eq!(
        std::fs::read_to_string(pages.path().join("berth.1")).unwrap(),
        page,
        "berth.1 is not the page `berth man` prints"
    );

    // Into a closed pipe (`berth man | head -0`): quiet, exit 0.
    let (code, stderr) = closed_stdout(&["man"]);
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
}

/// Runs `berth args` with its standard output a pipe already closed; (exit code, stderr).
fn closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("berth"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn completions_into_a_closed_pipe_exit_quietly() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, stderr) = closed_stdout(&["completions", shell]);
        assert_eq!((code, stderr.as_str()), (Some(0), ""), "{shell}");
    }
}
