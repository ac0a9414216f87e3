//! Helpers shared by core's integration tests: a valid base request and JSON merge-patching.

#![allow(dead_code, unreachable_pub)]

use berth_core::model::{HostPath, SandboxSpec};
use berth_core::validate::{StoragePolicy, Violations};
use berth_core::wire;
use serde_json::{Value, json};

/// RFC 7396 merge of `patch` into `target`.
pub fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge(t.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p,
    }
}

/// A valid request, with `patch` merged in.
pub fn request(patch: Value) -> Value {
    let mut base = json!({
        "image": {"uri": "python:3.11"},
        "entrypoint": ["python", "/app/main.py"],
        "resourceLimits": {"cpu": "500m", "memory": "512Mi"}
    });
    merge(&mut base, patch);
    base
}

/// A valid pvc volume named `work` at `/workspace`, with `patch` merged in.
pub fn volume(patch: Value) -> Value {
    let mut base =
        json!({"name": "work", "pvc": {"claimName": "sessions"}, "mountPath": "/workspace"});
    merge(&mut base, patch);
    base
}

/// A valid request carrying `volumes`.
pub fn with_volumes(volumes: Vec<Value>) -> Value {
    request(json!({ "volumes": volumes }))
}

/// The policy the tables use: two allowed roots, a one-day maximum timeout.
pub fn policy() -> StoragePolicy {
    StoragePolicy {
        allowed_host_roots: vec![
            HostPath::new("/data/opensandbox").unwrap(),
            HostPath::new("/srv/shared").unwrap(),
        ],
        max_timeout_seconds: Some(86_400),
    }
}

/// Deserializes (panicking on a malformed fixture) and validates.
pub fn validate(request: Value, policy: &StoragePolicy) -> Result<SandboxSpec, Violations> {
    let wire: wire::CreateSandboxRequest = serde_json::from_value(request.clone())
        .unwrap_or_else(|e| panic!("fixture {request} does not deserialize: {e}"));
    SandboxSpec::from_request(wire, policy)
}
