//! Berth's Docker runtime (DESIGN §4–§5). This crate holds the safe host-path module that all
//! host filesystem access goes through; the runtime over the Docker Engine API builds on it.

pub mod safe_path;

pub use berth_core::runtime::Runtime;
