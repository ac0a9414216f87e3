//! Berth's Docker runtime (see ARCHITECTURE.md, "Map"). This crate holds the safe host-path
//! module that all host filesystem access goes through; the runtime over the Docker Engine API
//! builds on it.

pub mod config;
pub mod engine;
pub mod execd;
pub mod index;
pub mod ossfs;
pub mod render;
mod runtime;
pub mod safe_path;
pub mod state;
pub mod store;

pub use runtime::{DockerRuntime, StartupError};

pub use berth_core::runtime::Runtime;
