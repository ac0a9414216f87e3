//! `berth validate` end to end: the real binary, its output and exit codes.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::io::Write;
use std::process::{Command, Stdio};

fn berth(args: &[&str], stdin: &str) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn a_valid_request_lists_its_volumes_parents_first() {
    let request = r#"{"image":{"uri":"a"},"entrypoint":["sh"],"resourceLimits":{},
        "volumes":[{"name":"inner","pvc":{"claimName":"sessions"},"mountPath":"/w/inner"},
                   {"name":"outer","host":{"path":"/data/x"},"mountPath":"/w","readOnly":true}]}"#;
    let (code, out) = berth(&["validate", "-", "--allowed-host-path", "/data"], request);
    assert_eq!(code, 0, "{out}");
    let outer = out.find("outer host /data/x -> /w read-only").unwrap();
    let inner = out.find("inner pvc sessions -> /w/inner").unwrap();
    assert!(outer < inner, "{out}");
}

#[test]
fn violations_are_listed_with_code_and_field() {
    let request = r#"{"image":{"uri":"a"},"entrypoint":["sh"],"resourceLimits":{},
        "volumes":[{"name":"h","host":{"path":"/data/x"},"mountPath":"/w","subPath":"a/../b"}]}"#;
    let (code, out) = berth(&["validate", "-"], request);
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("VOLUME::INVALID_SUB_PATH\tvolumes[0].subPath\t"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("VOLUME::HOST_PATH_NOT_ALLOWED\tvolumes[0].host.path\t"),
        "{out}"
    );
    let (code, out) = berth(&["validate", "-"], r#"{"image":{"uri":"a"},"bogus":1}"#);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("GENERAL::INVALID_BODY\tbogus\tunknown field `bogus`"),
        "{out}"
    );
    // A value of the wrong type is named by its field path, in JSON and in YAML.
    let (code, out) = berth(&["validate", "-"], r#"{"image":{"uri":5}}"#);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("GENERAL::INVALID_BODY\timage.uri\tinvalid type: integer `5`"),
        "{out}"
    );
    let (code, out) = berth(&["validate", "-"], "image:\n  uri: [1]\n");
    assert_eq!(code, 1);
    assert!(
        out.starts_with("GENERAL::INVALID_BODY\timage.uri\tinvalid type: sequence"),
        "{out}"
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(berth(&[], "").0, 2);
    assert_eq!(berth(&["validate"], "").0, 2);
    assert_eq!(
        berth(&["validate", "-", "--allowed-host-path", "relative"], "").0,
        2
    );
}
