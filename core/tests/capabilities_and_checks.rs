//! The checks outside request validation: a spec against a runtime's capabilities, renewal
//! times, endpoint ports, metadata patches, runtime error bodies (with `SANDBOX::CONFLICT`).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use berth_core::ErrorCode;
use berth_core::model::{
    MetadataKey, MetadataPatch, MetadataValue, MountPath, PlatformArch, PlatformOs, PlatformSpec,
    ReadOnlyMode, SandboxId, SandboxState, VolumeBackendKind,
};
use berth_core::runtime::{BackendSupport, Capabilities, RuntimeError};
use berth_core::validate::{MAX_METADATA_ENTRIES, StoragePolicy, check_port, check_renewal};
use berth_core::wire::PatchSandboxMetadataRequest;
use chrono::{TimeDelta, TimeZone, Utc};
use common::{policy, request, validate, volume, with_volumes};
use serde_json::json;
use std::collections::BTreeMap;

fn docker_like() -> Capabilities {
    Capabilities {
        runtime: "docker".into(),
        engine_version: Some("1.41".into()),
        volume_backends: [
            (
                VolumeBackendKind::Host,
                BackendSupport::uniform(ReadOnlyMode::Recursive),
            ),
            (
                VolumeBackendKind::Pvc,
                BackendSupport {
                    sub_path: true,
                    read_only: ReadOnlyMode::NonRecursive,
                    read_only_sub_path: ReadOnlyMode::Recursive,
                },
            ),
        ]
        .into_iter()
        .collect(),
        pause: true,
        pvc_provisioning_hints: false,
        platform: Some(PlatformSpec {
            os: PlatformOs::Linux,
            arch: PlatformArch::Amd64,
        }),
        reserved_mount_paths: vec![MountPath::new("/var/run/berth").unwrap()],
        details: BTreeMap::new(),
    }
}

fn codes(caps: &Capabilities, request: serde_json::Value) -> Vec<(String, ErrorCode)> {
    let spec = validate(request, &policy()).expect("the request itself is valid");
    match caps.check(&spec) {
        Ok(()) => vec![],
        Err(v) => v
            .as_slice()
            .iter()
            .map(|v| (v.field.clone(), v.code))
            .collect(),
    }
}

#[test]
fn unsupported_backend_is_refused_uniformly() {
    let nfs = volume(json!({"pvc": null, "nfs": {"server": "10.0.0.1", "path": "/e"}}));
    assert_eq!(
        codes(
            &docker_like(),
            with_volumes(vec![volume(json!({})), nfs.clone().tap_name("n", "/n")])
        ),
        [(
            "volumes[1].nfs".to_owned(),
            ErrorCode::VolumeUnsupportedBackend
        )]
    );
    let spec = validate(with_volumes(vec![nfs]), &policy()).unwrap();
    let msg = docker_like().check(&spec).unwrap_err().to_string();
    assert!(msg.contains("offers: host, pvc"), "{msg}");
}

#[test]
fn sub_path_is_refused_per_backend_that_cannot_mount_one() {
    let mut caps = docker_like();
    caps.volume_backends.insert(
        VolumeBackendKind::Pvc,
        BackendSupport {
            sub_path: false,
            read_only: ReadOnlyMode::NonRecursive,
            read_only_sub_path: ReadOnlyMode::NonRecursive,
        },
    );
    let host = volume(
        json!({"name": "h", "pvc": null, "host": {"path": "/srv/shared"}, "mountPath": "/h", "subPath": "s1"}),
    );
    assert_eq!(
        codes(
            &caps,
            with_volumes(vec![volume(json!({"subPath": "s1"})), host.clone()])
        ),
        [(
            "volumes[0].subPath".to_owned(),
            ErrorCode::VolumeStagingUnavailable
        )],
        "the pvc subPath is refused, the host one (its backend supports it) is not"
    );
    let spec = validate(
        with_volumes(vec![volume(json!({"subPath": "s1"}))]),
        &policy(),
    )
    .unwrap();
    let msg = caps.check(&spec).unwrap_err().to_string();
    assert!(msg.contains("subPath of a pvc volume"), "{msg}");
    assert!(codes(&caps, with_volumes(vec![volume(json!({}))])).is_empty());
}

#[test]
fn the_read_only_mode_stated_per_backend_and_kind_of_mount() {
    let caps = docker_like();
    let spec = validate(
        with_volumes(vec![
            volume(json!({"readOnly": true})),
            volume(json!({"name": "s", "mountPath": "/s", "subPath": "a", "readOnly": true})),
            volume(json!({"name": "w", "mountPath": "/w"})),
            volume(json!({"name": "h", "pvc": null, "host": {"path": "/srv/shared"}, "mountPath": "/h", "readOnly": true})),
        ]),
        &policy(),
    )
    .unwrap();
    let modes: Vec<Option<ReadOnlyMode>> = spec
        .volumes
        .iter()
        .map(|v| caps.read_only_mode(v))
        .collect();
    assert_eq!(
        modes,
        [
            Some(ReadOnlyMode::NonRecursive),
            Some(ReadOnlyMode::Recursive),
            Some(ReadOnlyMode::None),
            Some(ReadOnlyMode::Recursive),
        ]
    );
    let mut without_host = docker_like();
    without_host
        .volume_backends
        .remove(&VolumeBackendKind::Host);
    assert_eq!(without_host.read_only_mode(&spec.volumes[3]), None);
    assert!(!without_host.offers(VolumeBackendKind::Host));
}

#[test]
fn provisioning_hints_the_runtime_would_ignore_are_refused() {
    let hinted = with_volumes(vec![volume(json!({"pvc": {"storage": "1Gi"}}))]);
    assert_eq!(
        codes(&docker_like(), hinted.clone()),
        [(
            "volumes[0].pvc".to_owned(),
            ErrorCode::SandboxUnsupportedFeature
        )]
    );
    let k8s = Capabilities {
        pvc_provisioning_hints: true,
        ..docker_like()
    };
    assert!(codes(&k8s, hinted).is_empty());
}

#[test]
fn platform_and_runtime_reserved_paths() {
    let arm = request(json!({"platform": {"os": "linux", "arch": "arm64"}}));
    assert_eq!(
        codes(&docker_like(), arm),
        [("platform".to_owned(), ErrorCode::SandboxUnsupportedFeature)]
    );
    let same = request(json!({"platform": {"os": "linux", "arch": "amd64"}}));
    assert!(codes(&docker_like(), same).is_empty());
    let reserved = with_volumes(vec![volume(json!({"mountPath": "/var/run/berth/x"}))]);
    assert_eq!(
        codes(&docker_like(), reserved),
        [(
            "volumes[0].mountPath".to_owned(),
            ErrorCode::VolumeReservedMountPath
        )]
    );
}

#[test]
fn renewal_must_be_in_the_future_and_within_the_maximum() {
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let p = policy();
    let code = |t| check_renewal(t, now, &p).map_err(|v| v.code());
    assert_eq!(code(now), Err(ErrorCode::SandboxInvalidExpiration));
    assert_eq!(
        code(now - TimeDelta::seconds(1)),
        Err(ErrorCode::SandboxInvalidExpiration)
    );
    assert_eq!(code(now + TimeDelta::seconds(1)), Ok(()));
    assert_eq!(code(now + TimeDelta::seconds(86_400)), Ok(()));
    assert_eq!(
        code(now + TimeDelta::seconds(86_401)),
        Err(ErrorCode::SandboxInvalidExpiration)
    );
    let unlimited = StoragePolicy {
        max_timeout_seconds: None,
        ..policy()
    };
    assert!(check_renewal(now + TimeDelta::days(3650), now, &unlimited).is_ok());
}

#[test]
fn ports_are_1_to_65535() {
    assert_eq!(check_port(1).unwrap(), 1);
    assert_eq!(check_port(65_535).unwrap(), 65_535);
    for bad in [0, -1, 65_536, i64::MAX] {
        assert_eq!(
            check_port(bad).unwrap_err().code(),
            ErrorCode::SandboxInvalidPort,
            "{bad}"
        );
    }
}

#[test]
fn metadata_patches_are_validated_whole_and_applied_all_or_nothing() {
    let patch = |pairs: &[(&str, Option<&str>)]| {
        PatchSandboxMetadataRequest(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
                .collect(),
        )
    };
    let err = MetadataPatch::from_request(&patch(&[
        ("ok", Some("v")),
        ("opensandbox.io/x", Some("y")),
        ("bad", Some("a b")),
    ]))
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::SandboxInvalidMetadataLabel);
    assert_eq!(err.as_slice().len(), 2);

    let mut metadata: BTreeMap<MetadataKey, MetadataValue> = (0..MAX_METADATA_ENTRIES)
        .map(|i| {
            (
                MetadataKey::new(&format!("k{i}")).unwrap(),
                MetadataValue::new("v").unwrap(),
            )
        })
        .collect();
    let before = metadata.clone();
    let grow = MetadataPatch::from_request(&patch(&[("extra", Some("v"))])).unwrap();
    assert_eq!(
        grow.apply_checked(&mut metadata).unwrap_err().code(),
        ErrorCode::SandboxInvalidParameter
    );
    assert_eq!(metadata, before, "a refused patch changed nothing");
    let swap = MetadataPatch::from_request(&patch(&[("extra", Some("v")), ("k0", None)])).unwrap();
    swap.apply_checked(&mut metadata).unwrap();
    assert_eq!(metadata.len(), MAX_METADATA_ENTRIES);
    assert!(metadata.contains_key(&MetadataKey::new("extra").unwrap()));
}

#[test]
fn runtime_errors_map_to_codes_and_hide_internals() {
    let id = SandboxId::new("abc").unwrap();
    let cases = [
        (
            RuntimeError::NotFound { id: "abc".into() },
            ErrorCode::SandboxNotFound,
        ),
        (
            RuntimeError::InvalidState {
                id: id.clone(),
                state: SandboxState::Paused,
                action: "pause",
            },
            ErrorCode::SandboxInvalidState,
        ),
        (
            RuntimeError::Unavailable {
                detail: "connection refused".into(),
            },
            ErrorCode::RuntimeUnavailable,
        ),
        (
            RuntimeError::PodIpNotAvailable { id: id.clone() },
            ErrorCode::KubernetesPodIpNotAvailable,
        ),
        (
            RuntimeError::Conflict {
                id: id.clone(),
                detail: "resourceVersion changed on 5 attempts".into(),
            },
            ErrorCode::SandboxConflict,
        ),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code);
        assert_eq!(err.to_error_response().code, code.as_str());
    }
    let conflict = RuntimeError::Conflict {
        id: id.clone(),
        detail: "resourceVersion changed on 5 attempts".into(),
    };
    assert_eq!(conflict.code().http_status(), 409);
    let body = conflict.to_error_response();
    assert_eq!(body.code, "SANDBOX::CONFLICT");
    assert!(
        body.message.contains("abc") && body.message.contains("retry"),
        "{}",
        body.message
    );
    let internal = RuntimeError::Internal {
        context: "inspecting volume".into(),
        detail: "secret path /var/lib/x".into(),
    };
    let body = internal.to_error_response();
    assert_eq!(body.code, "GENERAL::INTERNAL_ERROR");
    assert!(!body.message.contains("/var/lib/x"));
}

trait TapName {
    fn tap_name(self, name: &str, mount: &str) -> Self;
}

impl TapName for serde_json::Value {
    fn tap_name(mut self, name: &str, mount: &str) -> Self {
        common::merge(&mut self, json!({"name": name, "mountPath": mount}));
        self
    }
}
