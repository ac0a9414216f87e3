//! Berth's Kubernetes runtime (ARCHITECTURE.md, "Lifecycle"). Not implemented yet; the crate establishes its place
//! in the workspace and its dependency on `berth-core`.

pub use berth_core::runtime::Runtime;
