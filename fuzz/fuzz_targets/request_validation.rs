//! `POST /v1/sandboxes`'s body: any bytes through `serde_json` into `CreateSandboxRequest`, then
//! `SandboxSpec::from_request` under a policy with allowed host roots and under one with none.
//! Validation must never panic; a refusal must name at least one violation; an accepted spec must
//! hold every promise the model makes (normal absolute mount paths, none reserved or repeated,
//! contained sub-paths, host paths under an allowed root, allowlisted options), and its canonical
//! request must validate back to the same spec.
#![no_main]

use std::collections::BTreeSet;

use berth_core::model::{HostPath, SandboxSpec, VolumeSource};
use berth_core::validate::{MAX_VOLUMES, MIN_TIMEOUT_SECONDS, StoragePolicy};
use berth_core::wire::CreateSandboxRequest;
use berth_fuzz::{
    assert_at_or_below, assert_sub_path_contained, is_valid_host_path, is_valid_mount_path,
};
use libfuzzer_sys::fuzz_target;

/// The longest timeout the fuzzed server accepts.
const MAX_TIMEOUT_SECONDS: u64 = 86_400;
/// The host roots the fuzzed server allows.
const ALLOWED_HOST_ROOTS: [&str; 2] = ["/data/opensandbox", "/srv/shared"];

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<CreateSandboxRequest>(data) else {
        return;
    };
    let with_roots = StoragePolicy {
        allowed_host_roots: ALLOWED_HOST_ROOTS
            .iter()
            .map(|r| HostPath::new(r).expect("a valid root"))
            .collect(),
        max_timeout_seconds: Some(MAX_TIMEOUT_SECONDS),
    };
    let without_roots = StoragePolicy::default();

    for policy in [&with_roots, &without_roots] {
        match SandboxSpec::from_request(request.clone(), policy) {
            Ok(spec) => {
                check_spec(&spec, policy);
                // The canonical request of a spec is itself valid and means the same spec.
                let canonical = CreateSandboxRequest::from(&spec);
                let again = SandboxSpec::from_request(canonical.clone(), policy);
                assert_eq!(
                    again.as_ref(),
                    Ok(&spec),
                    "the canonical request {canonical:?} does not validate back"
                );
            }
            Err(violations) => {
                assert!(!violations.as_slice().is_empty());
                let response = violations.to_error_response();
                assert_eq!(response.code, violations.code().as_str());
                assert!(!response.message.is_empty());
            }
        }
    }
});

fn check_spec(spec: &SandboxSpec, policy: &StoragePolicy) {
    assert!(!spec.entrypoint.argv().is_empty());
    assert!(!spec.entrypoint.argv()[0].trim().is_empty());
    assert!(spec.entrypoint.argv().iter().all(|a| !a.contains('\0')));
    assert!(!spec.image.uri.trim().is_empty());
    if let Some(t) = spec.timeout_seconds {
        assert!(t >= MIN_TIMEOUT_SECONDS.unsigned_abs(), "timeout {t}");
        assert!(
            policy.max_timeout_seconds.is_none_or(|max| t <= max),
            "timeout {t}"
        );
    }
    if let Some(cpu) = &spec.resources.cpu {
        assert!(cpu.millicores() > 0);
    }
    if let Some(memory) = &spec.resources.memory {
        assert!(memory.bytes() > 0);
    }
    assert!(spec.env.values().all(|v| !v.contains('\0')));
    assert!(spec.volumes.len() <= MAX_VOLUMES);

    let mut names = BTreeSet::new();
    let mut mount_paths = BTreeSet::new();
    for volume in &spec.volumes {
        assert!(
            names.insert(volume.name.as_str()),
            "{:?} twice",
            volume.name
        );
        let mount_path = volume.mount_path.as_str();
        assert!(is_valid_mount_path(mount_path), "mount path {mount_path:?}");
        assert!(mount_paths.insert(mount_path), "{mount_path:?} twice");
        assert_eq!(
            volume.mount_path.reserved_reason(),
            None,
            "reserved {mount_path:?} accepted"
        );
        if let Some(sub_path) = &volume.sub_path {
            assert_sub_path_contained(sub_path);
        }
        match &volume.source {
            VolumeSource::Host { path } => {
                assert!(is_valid_host_path(path.as_str()), "host path {path:?}");
                let root = policy
                    .allowed_host_roots
                    .iter()
                    .find(|root| path.is_within(root))
                    .unwrap_or_else(|| panic!("{path:?} is under no allowed root"));
                assert_at_or_below(path.as_str(), root.as_str());
                let segments = path.segments_below(root).expect("within its root");
                assert!(segments.iter().all(|s| !matches!(*s, "" | "." | "..")));
            }
            VolumeSource::Pvc(pvc) => {
                let modes: BTreeSet<_> = pvc.access_modes.iter().collect();
                assert_eq!(modes.len(), pvc.access_modes.len(), "repeated access modes");
                if let Some(storage) = &pvc.storage {
                    assert!(storage.bytes() > 0);
                }
            }
            VolumeSource::Ossfs(oss) => {
                assert!(oss.options.iter().all(|o| is_plain_option(&o.to_string())));
                assert!(!oss.credentials.access_key_id().is_empty());
            }
            VolumeSource::Nfs(nfs) => {
                assert!(nfs.options.iter().all(|o| is_plain_option(&o.to_string())));
                assert!(
                    is_valid_host_path(nfs.path.as_str()),
                    "export {:?}",
                    nfs.path
                );
                // Goes into `server:path` and mount options: no separators, blanks or controls.
                let server = nfs.server.as_str();
                assert!(
                    !server.is_empty()
                        && !server
                            .chars()
                            .any(|c| c.is_whitespace() || c.is_control() || ",/=\"'".contains(c)),
                    "server {server:?}"
                );
            }
        }
    }
}

/// An allowlisted mount option never carries a separator or anything a shell or a mount helper
/// would read: only `name` or `name=value` of letters, digits, `_` and `.`.
fn is_plain_option(option: &str) -> bool {
    let (name, value) = option.split_once('=').unwrap_or((option, ""));
    !name.is_empty()
        && name.bytes().all(|c| c.is_ascii_lowercase() || c == b'_')
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.')
}
