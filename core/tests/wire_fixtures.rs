//! The wire types against the project's own fixtures (shaped like the spec's examples and like
//! what the official SDK sends): they deserialize, round-trip, validate as expected, and unknown
//! fields are refused at every level. Responses are checked for the spec's field names.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_core::ErrorCode;
use berth_core::model::{MountedVolume, SandboxId, SandboxRecord, SandboxState, SandboxStatus};
use berth_core::wire;
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/requests")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Every fixture and what validation must make of it.
const FIXTURES: &[(&str, Option<(&str, ErrorCode)>)] = &[
    (
        "egress-allowlist.json",
        Some(("networkPolicy", ErrorCode::SandboxUnsupportedFeature)),
    ),
    (
        "egress-denylist.json",
        Some(("networkPolicy", ErrorCode::SandboxUnsupportedFeature)),
    ),
    ("manual-cleanup.json", None),
    (
        "secure-access.json",
        Some(("secureAccess", ErrorCode::SandboxUnsupportedFeature)),
    ),
    (
        "restore-snapshot.json",
        Some(("snapshotId", ErrorCode::SandboxUnsupportedFeature)),
    ),
    (
        "restore-snapshot-with-entrypoint.json",
        Some(("snapshotId", ErrorCode::SandboxUnsupportedFeature)),
    ),
    ("session-volumes.json", None),
    ("sdk-create.json", None),
    ("kubernetes-volumes.json", None),
    ("kubernetes-volumes-berth-form.json", None),
];

#[test]
fn every_fixture_is_listed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/requests");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|(n, _)| (*n).to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn fixtures_deserialize_round_trip_and_validate_as_expected() {
    for (name, expected) in FIXTURES {
        let json = fixture(name);
        let request: wire::CreateSandboxRequest =
            serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = serde_json::to_value(&request).unwrap();
        let again: wire::CreateSandboxRequest = serde_json::from_value(back.clone()).unwrap();
        assert_eq!(again, request, "{name}: struct round trip");
        // Serialising drops only `readOnly: false` (the default, at every level); everything
        // else survives as sent.
        let mut sent = json.clone();
        strip_false_read_only(&mut sent);
        assert_eq!(back, sent, "{name}: JSON round trip");
        match (common::validate(json, &common::policy()), expected) {
            (Ok(_), None) => {}
            (Err(v), Some((field, code))) => {
                assert_eq!(
                    (v.as_slice()[0].field.as_str(), v.code()),
                    (*field, *code),
                    "{name}: {v}"
                );
            }
            (got, expected) => panic!("{name}: got {got:?}, expected {expected:?}"),
        }
    }
}

fn strip_false_read_only(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("readOnly") == Some(&json!(false)) {
                map.remove("readOnly");
            }
            map.values_mut().for_each(strip_false_read_only);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_false_read_only),
        _ => {}
    }
}

/// The request a Kubernetes user writes and Berth's own spelling of it are one sandbox: both
/// fixtures validate to the same spec, and that spec's canonical request is Berth's form.
#[test]
fn the_kubernetes_form_validates_to_the_same_spec_as_berths_form() {
    let kubernetes =
        common::validate(fixture("kubernetes-volumes.json"), &common::policy()).unwrap();
    let berth = common::validate(
        fixture("kubernetes-volumes-berth-form.json"),
        &common::policy(),
    )
    .unwrap();
    assert_eq!(kubernetes, berth);
    assert_eq!(kubernetes.volumes.len(), 5, "one volume per mount");
    let canonical = serde_json::to_value(wire::CreateSandboxRequest::from(&kubernetes)).unwrap();
    assert!(canonical.get("mounts").is_none(), "{canonical}");
    let mut berth_json = fixture("kubernetes-volumes-berth-form.json");
    strip_false_read_only(&mut berth_json);
    assert_eq!(canonical["volumes"], berth_json["volumes"]);
}

#[test]
fn pvc_defaults_follow_the_spec() {
    let v: wire::Volume =
        serde_json::from_value(json!({"name": "w", "pvc": {"claimName": "c"}, "mountPath": "/w"}))
            .unwrap();
    let pvc = v.pvc.unwrap();
    assert!(
        pvc.create_if_not_exists,
        "createIfNotExists defaults to true"
    );
    assert!(
        !pvc.delete_on_sandbox_termination,
        "deleteOnSandboxTermination defaults to false"
    );
    assert!(!v.read_only);
    let spec = common::validate(
        common::with_volumes(vec![
            json!({"name": "m", "ossfs": {"bucket": "abc", "endpoint": "e.example.org",
            "accessKeyId": "a", "accessKeySecret": "b"}, "mountPath": "/m"}),
        ]),
        &common::policy(),
    )
    .unwrap();
    match &spec.volumes[0].source {
        berth_core::model::VolumeSource::Ossfs(o) => {
            assert_eq!(o.version.as_str(), "2.0", "ossfs version defaults to 2.0")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_fields_are_refused_at_every_level() {
    let base = fixture("session-volumes.json");
    let places: &[&[&str]] = &[
        &[],
        &["image"],
        &["image", "auth"],
        &["volumes", "0"],
        &["volumes", "0", "pvc"],
        &["volumes", "1", "host"],
        &["volumes", "2", "ossfs"],
        &["volumes", "3", "nfs"],
    ];
    let kubernetes = fixture("kubernetes-volumes.json");
    let kubernetes_places: &[&[&str]] = &[
        &["volumes", "0", "persistentVolumeClaim"],
        &["volumes", "1", "nfs"],
        &["volumes", "2", "hostPath"],
        &["mounts", "0"],
    ];
    let cases = places
        .iter()
        .map(|p| (&base, p))
        .chain(kubernetes_places.iter().map(|p| (&kubernetes, p)));
    for (base, place) in cases {
        let mut json = base.clone();
        let mut target = &mut json;
        for key in *place {
            target = match key.parse::<usize>() {
                Ok(i) => &mut target[i],
                Err(_) => &mut target[*key],
            };
        }
        target
            .as_object_mut()
            .unwrap()
            .insert("bogusField".into(), json!(1));
        let err = serde_json::from_value::<wire::CreateSandboxRequest>(json)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field `bogusField`"),
            "at {place:?}: {err}"
        );
    }
    for (json, what) in [
        (
            json!({"networkPolicy": {"defaultAction": "deny", "bogus": 1}}),
            "networkPolicy",
        ),
        (
            json!({"networkPolicy": {"egress": [{"action": "allow", "target": "x", "bogus": 1}]}}),
            "egress rule",
        ),
        (
            json!({"credentialProxy": {"enabled": false, "bogus": 1}}),
            "credentialProxy",
        ),
        (
            json!({"platform": {"os": "linux", "arch": "amd64", "bogus": 1}}),
            "platform",
        ),
        (
            json!({"platform": {"os": "plan9", "arch": "amd64"}}),
            "platform enum",
        ),
    ] {
        assert!(
            serde_json::from_value::<wire::CreateSandboxRequest>(json).is_err(),
            "{what}"
        );
    }
    assert!(
        serde_json::from_value::<wire::RenewSandboxExpirationRequest>(
            json!({"expiresAt": "2030-01-01T00:00:00Z", "x": 1})
        )
        .is_err()
    );
    assert!(
        serde_json::from_value::<wire::ErrorResponse>(json!({"code": "c", "message": "m", "x": 1}))
            .is_err()
    );
}

/// serde's derived code also builds a struct from an array of its field values in order; the
/// request types take objects only. Every object of every fixture, turned into the array of its
/// values, is refused, both from text (as the server reads a body) and from a `Value`.
#[test]
fn objects_given_as_arrays_are_refused_at_every_level() {
    fn object_places(value: &Value, at: &mut Vec<String>, found: &mut Vec<Vec<String>>) {
        match value {
            Value::Object(map) => {
                found.push(at.clone());
                for (key, child) in map {
                    at.push(key.clone());
                    object_places(child, at, found);
                    at.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    at.push(i.to_string());
                    object_places(child, at, found);
                    at.pop();
                }
            }
            _ => {}
        }
    }
    let mut checked = 0;
    for (name, _) in FIXTURES {
        let base = fixture(name);
        let mut places = Vec::new();
        object_places(&base, &mut Vec::new(), &mut places);
        for place in places {
            let mut json = base.clone();
            let target = place
                .iter()
                .fold(&mut json, |v, key| match key.parse::<usize>() {
                    Ok(i) => &mut v[i],
                    Err(_) => &mut v[key.as_str()],
                });
            let values: Vec<Value> = target.as_object().unwrap().values().cloned().collect();
            *target = Value::Array(values);
            let from_text = serde_json::from_str::<wire::CreateSandboxRequest>(&json.to_string());
            let from_value = serde_json::from_value::<wire::CreateSandboxRequest>(json);
            for result in [from_text, from_value] {
                let err = result.expect_err(&format!("{name} at {place:?} was accepted"));
                assert!(err.to_string().contains("invalid type: sequence"), "{err}");
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} places");
    let renew =
        serde_json::from_str::<wire::RenewSandboxExpirationRequest>(r#"["2030-01-01T00:00:00Z"]"#);
    assert!(renew.is_err());
    let image: wire::ImageSpec = serde_json::from_str(r#"{"uri": "busybox"}"#).unwrap();
    assert_eq!(image.uri, "busybox");
}

#[test]
fn wrong_types_are_refused_by_serde_with_the_field_name() {
    for (json, field) in [
        (json!({"timeout": "60"}), "timeout"),
        (json!({"timeout": 60.5}), "timeout"),
        (json!({"entrypoint": "python"}), "entrypoint"),
        (
            json!({"volumes": [{"name": "a", "mountPath": "/a", "readOnly": "yes"}]}),
            "readOnly",
        ),
    ] {
        let err = serde_json::from_value::<wire::CreateSandboxRequest>(common::request(json))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid type") || err.contains("invalid value"),
            "{field}: {err}"
        );
    }
}

#[test]
fn metadata_patch_body_keeps_nulls_apart_from_values() {
    let patch: wire::PatchSandboxMetadataRequest =
        serde_json::from_value(json!({"team": "ml", "old": null})).unwrap();
    assert_eq!(
        patch.0,
        BTreeMap::from([
            ("team".to_owned(), Some("ml".to_owned())),
            ("old".to_owned(), None)
        ])
    );
    assert!(serde_json::from_value::<wire::PatchSandboxMetadataRequest>(json!({"n": 1})).is_err());
    assert!(serde_json::from_value::<wire::PatchSandboxMetadataRequest>(json!(["x"])).is_err());
}

#[test]
fn sandbox_responses_use_the_spec_names_and_omit_nulls() {
    let created = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
    let record = SandboxRecord {
        id: SandboxId::new("abc-123").unwrap(),
        image: "team/agent:1".into(),
        platform: None,
        entrypoint: vec!["sleep".into()],
        metadata: Default::default(),
        status: SandboxStatus::new(SandboxState::Running, created),
        created_at: created,
        expires_at: None,
        volumes: vec![MountedVolume {
            name: "work".into(),
            backend: wire::VolumeBackendKind::Pvc,
            source: "sessions".into(),
            mount_path: "/workspace".into(),
            sub_path: Some("uid-1".into()),
            read_only: true,
            read_only_mode: wire::ReadOnlyMode::NonRecursive,
        }],
    };
    let sandbox = serde_json::to_value(wire::Sandbox::from(&record)).unwrap();
    assert_eq!(
        sandbox,
        json!({
            "id": "abc-123",
            "image": {"uri": "team/agent:1"},
            "status": {"state": "Running", "lastTransitionAt": "2026-11-28T12:00:00Z"},
            "metadata": {},
            "entrypoint": ["sleep"],
            "createdAt": "2026-11-28T12:00:00Z",
            "volumes": [{"name": "work", "backend": "pvc", "source": "sessions", "mountPath": "/workspace",
                         "subPath": "uid-1", "readOnly": true, "readOnlyMode": "non-recursive"}]
        })
    );
    let created_body = serde_json::to_value(wire::CreateSandboxResponse::from(&record)).unwrap();
    assert!(
        created_body.get("image").is_none(),
        "create responses carry no image"
    );
    assert_eq!(created_body["status"]["state"], "Running");

    let list = wire::ListSandboxesResponse {
        items: vec![],
        pagination: wire::PaginationInfo {
            page: 1,
            page_size: 20,
            total_items: 0,
            total_pages: 0,
            has_next_page: false,
        },
    };
    assert_eq!(
        serde_json::to_value(list).unwrap(),
        json!({"items": [], "pagination": {"page": 1, "pageSize": 20, "totalItems": 0, "totalPages": 0, "hasNextPage": false}})
    );
    let error = wire::ErrorResponse {
        code: "SANDBOX::NOT_FOUND".into(),
        message: "m".into(),
    };
    assert_eq!(
        serde_json::to_value(error).unwrap(),
        json!({"code": "SANDBOX::NOT_FOUND", "message": "m"})
    );
}

#[test]
fn credentials_never_leave_through_debug() {
    let request: wire::CreateSandboxRequest =
        serde_json::from_value(fixture("session-volumes.json")).unwrap();
    let debug = format!("{request:?}");
    assert!(
        !debug.contains("hunter2")
            && !debug.contains("examplesecret")
            && !debug.contains("AKIDEXAMPLE"),
        "{debug}"
    );
    let spec = common::validate(fixture("session-volumes.json"), &common::policy()).unwrap();
    let debug = format!("{spec:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("examplesecret"),
        "{debug}"
    );
}

#[test]
fn states_parse_case_insensitively() {
    assert_eq!(
        wire::SandboxState::parse_case_insensitive("running"),
        Some(SandboxState::Running)
    );
    assert_eq!(
        wire::SandboxState::parse_case_insensitive("PAUSED"),
        Some(SandboxState::Paused)
    );
    assert_eq!(wire::SandboxState::parse_case_insensitive("Unknown"), None);
    for state in wire::SandboxState::ALL {
        assert_eq!(serde_json::to_value(state).unwrap(), json!(state.as_str()));
    }
}
