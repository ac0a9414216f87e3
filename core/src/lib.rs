//! Berth's core: everything a sandbox request can be and every rule it must follow, with no I/O.
//!
//! - [`wire`]: the OpenSandbox Lifecycle API v1 bodies as JSON spells them.
//! - [`model`]: the validated sandbox and volume model; invalid values are unrepresentable.
//! - [`validate`]: `wire` → `model`, reporting every violation with its field path and code.
//! - [`error_code`]: every stable error code.
//! - [`runtime`]: the `Runtime` trait backends implement, and their `Capabilities`.
//! - [`list_index`]: the ordered index with postings a runtime answers list pages from.
//! - [`version`]: the version and commit the commands print.
//! - `testkit` (feature): an in-memory runtime for API tests and the conformance suite.

pub mod error_code;
pub mod list_index;
pub mod model;
pub mod runtime;
pub mod validate;
pub mod version;
pub mod wire;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use error_code::ErrorCode;
