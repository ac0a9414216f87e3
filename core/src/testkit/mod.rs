//! Test support (feature `testkit`): an in-memory runtime for API-layer tests, and the
//! conformance suite every runtime must pass.
//!
//! The in-memory runtime is a test double: no server configuration can select it.

pub mod conformance;
mod memory_runtime;

pub use memory_runtime::InMemoryRuntime;
