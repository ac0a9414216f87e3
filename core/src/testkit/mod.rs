//! Test support (feature `testkit`): an in-memory runtime for API-layer tests, a wrapper that
//! hooks into any runtime's calls, and the conformance suite every runtime must pass.
//!
//! The in-memory runtime is a test double: no server configuration can select it.

pub mod conformance;
pub mod intercepted;
mod memory_runtime;

pub use memory_runtime::InMemoryRuntime;
