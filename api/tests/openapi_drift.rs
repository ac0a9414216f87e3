//! `api/openapi.yaml` is the committed contract: it must equal what the Rust types generate.
//! This test never rewrites it; `cargo xtask openapi` does. It also checks the document keeps
//! the reference spec's paths and field names.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::path::Path;

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = berth_api::openapi::yaml();
    assert!(
        committed == generated,
        "api/openapi.yaml is out of date with the Rust types; run `cargo xtask openapi` and commit the result"
    );
}

#[test]
fn the_document_keeps_the_reference_names() {
    let doc = berth_api::openapi::yaml();
    for path in [
        "/v1/sandboxes:",
        "/v1/sandboxes/{sandboxId}:",
        "/v1/sandboxes/{sandboxId}/pause:",
        "/v1/sandboxes/{sandboxId}/resume:",
        "/v1/sandboxes/{sandboxId}/renew-expiration:",
        "/v1/sandboxes/{sandboxId}/metadata:",
        "/v1/sandboxes/{sandboxId}/endpoints/{port}:",
    ] {
        assert!(doc.contains(path), "missing path {path}");
    }
    for schema in [
        "CreateSandboxRequest:",
        "CreateSandboxResponse:",
        "Sandbox:",
        "SandboxStatus:",
        "ListSandboxesResponse:",
        "PaginationInfo:",
        "ErrorResponse:",
        "Endpoint:",
        "RenewSandboxExpirationRequest:",
        "Volume:",
        "PvcBackend:",
    ] {
        assert!(doc.contains(schema), "missing schema {schema}");
    }
    for field in [
        "resourceLimits",
        "mountPath",
        "subPath",
        "claimName",
        "createIfNotExists",
        "deleteOnSandboxTermination",
        "expiresAt",
        "hasNextPage",
        "readOnlyMode",
        "OPEN-SANDBOX-API-KEY",
    ] {
        assert!(doc.contains(field), "missing field {field}");
    }
}
