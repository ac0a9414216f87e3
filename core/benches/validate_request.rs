//! Validating a create request with 16 volumes of mixed backends: the model conversion alone,
//! and JSON bytes to validated spec (what the server does per create).
//!
//! `cargo bench -p berth-core` prints the time per request; requests/s = 1 / median.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.
#![allow(missing_docs)] // A benchmark harness, not an API.

use berth_core::model::{HostPath, SandboxSpec};
use berth_core::validate::StoragePolicy;
use berth_core::wire::CreateSandboxRequest;
use divan::Bencher;
use serde_json::{Value, json};

fn main() {
    divan::main();
}

fn policy() -> StoragePolicy {
    StoragePolicy {
        allowed_host_roots: vec![
            HostPath::new("/data/opensandbox").unwrap(),
            HostPath::new("/srv/shared").unwrap(),
        ],
        max_timeout_seconds: Some(86_400),
    }
}

/// 16 volumes: 6 pvc (with subPaths and hints), 5 host, 3 ossfs, 2 nfs.
fn request_json() -> Value {
    let mut volumes = Vec::new();
    for i in 0..16 {
        let backend = match i % 8 {
            0 | 3 | 6 => {
                json!({"pvc": {"claimName": format!("sessions-{i}"), "createIfNotExists": true,
                                        "deleteOnSandboxTermination": false, "storage": "10Gi",
                                        "accessModes": ["ReadWriteOnce"]}})
            }
            1 | 4 => json!({"host": {"path": format!("/data/opensandbox/skills/set-{i}")}}),
            2 | 7 => {
                json!({"ossfs": {"bucket": format!("models-{i}"), "endpoint": "oss-cn-hangzhou.aliyuncs.com",
                                      "version": "2.0", "options": ["kernel_cache", "umask=022"],
                                      "accessKeyId": "AKIDEXAMPLE", "accessKeySecret": "examplesecret"}})
            }
            _ => {
                json!({"nfs": {"server": "nas.example.org", "path": format!("/exports/share-{i}"), "options": ["vers=4.1", "hard"]}})
            }
        };
        let mut volume = json!({"name": format!("vol-{i}"), "mountPath": format!("/mnt/volumes/v{i}"),
                                "subPath": format!("uid-{i}/session-{i}"), "readOnly": i % 2 == 0});
        volume
            .as_object_mut()
            .unwrap()
            .extend(backend.as_object().unwrap().clone());
        volumes.push(volume);
    }
    json!({
        "image": {"uri": "team/agent-python:3.12"},
        "entrypoint": ["python", "-m", "agent"],
        "timeout": 3600,
        "resourceLimits": {"cpu": "1500m", "memory": "2Gi"},
        "env": {"SESSION": "uid-1-session-1", "LOG_LEVEL": "debug"},
        "metadata": {"user": "uid-1", "example.org/session": "session-1"},
        "secureAccess": false,
        "volumes": volumes
    })
}

#[divan::bench]
fn validate_16_volumes(bencher: Bencher<'_, '_>) {
    let request: CreateSandboxRequest = serde_json::from_value(request_json()).unwrap();
    let policy = policy();
    assert!(SandboxSpec::from_request(request.clone(), &policy).is_ok());
    bencher
        .with_inputs(|| request.clone())
        .bench_values(|r| SandboxSpec::from_request(r, &policy));
}

#[divan::bench]
fn parse_and_validate_16_volumes(bencher: Bencher<'_, '_>) {
    let bytes = serde_json::to_vec(&request_json()).unwrap();
    let policy = policy();
    bencher.bench(|| {
        let request: CreateSandboxRequest =
            serde_json::from_slice(divan::black_box(&bytes)).unwrap();
        SandboxSpec::from_request(request, &policy)
    });
}

/// What dropping the consumed request costs; `validate_16_volumes` includes it.
#[divan::bench]
fn baseline_drop_input(bencher: Bencher<'_, '_>) {
    let request: CreateSandboxRequest = serde_json::from_value(request_json()).unwrap();
    bencher.with_inputs(|| request.clone()).bench_values(drop);
}
