//! Berth's HTTP API server. Implemented by issue 4 (DESIGN §2, §5–§6); for now the crate only
//! establishes its place in the workspace and its dependency on `berth-core`.

pub use berth_core::runtime::Runtime;
