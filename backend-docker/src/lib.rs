//! Berth's Docker runtime. Implemented by issue 3 (DESIGN §4–§5); for now the crate only
//! establishes its place in the workspace and its dependency on `berth-core`.

pub use berth_core::runtime::Runtime;
