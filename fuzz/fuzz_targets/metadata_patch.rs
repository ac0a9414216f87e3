//! `PATCH /v1/sandboxes/{id}/metadata`'s body: any bytes through `serde_json` into the merge
//! patch, then `MetadataPatch::from_request` and `apply_checked`. An accepted patch never names a
//! key of the reserved domain, and applying it does what RFC 7396 says, all or nothing, within
//! the entry limit.
#![no_main]

use berth_core::model::{Metadata, MetadataKey, MetadataPatch, MetadataValue};
use berth_core::validate::MAX_METADATA_ENTRIES;
use berth_core::wire::PatchSandboxMetadataRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<PatchSandboxMetadataRequest>(data) else {
        return;
    };
    let patch = match MetadataPatch::from_request(&request) {
        Ok(patch) => patch,
        Err(violations) => {
            assert!(!violations.as_slice().is_empty());
            return;
        }
    };
    assert_eq!(patch.0.len(), request.0.len(), "every key is kept");
    for (key, value) in &patch.0 {
        let prefix = key.as_str().split_once('/').map(|(p, _)| p);
        assert!(
            !prefix.is_some_and(|p| p == "opensandbox.io" || p.ends_with(".opensandbox.io")),
            "reserved key {key:?} accepted"
        );
        assert_eq!(
            request.0.get(key.as_str()),
            Some(&value.as_ref().map(|v| v.to_string()))
        );
    }

    // A sandbox with some metadata already, one key of which the patch may touch.
    let mut metadata = Metadata::new();
    for i in 0..MAX_METADATA_ENTRIES / 2 {
        metadata.insert(
            MetadataKey::new(&format!("k{i}")).expect("a valid key"),
            MetadataValue::new("v").expect("a valid value"),
        );
    }
    let before = metadata.clone();
    match patch.apply_checked(&mut metadata) {
        Ok(()) => {
            assert!(metadata.len() <= MAX_METADATA_ENTRIES);
            for (key, value) in &patch.0 {
                assert_eq!(metadata.get(key), value.as_ref(), "{key:?} after the patch");
            }
            for (key, value) in &before {
                if !patch.0.contains_key(key) {
                    assert_eq!(metadata.get(key), Some(value), "{key:?} untouched");
                }
            }
        }
        Err(_) => assert_eq!(metadata, before, "a refused patch changed the metadata"),
    }
});
