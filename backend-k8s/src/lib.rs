//! Berth's Kubernetes runtime (ARCHITECTURE.md, "Lifecycle"): one plain Pod per sandbox, all of
//! Berth's state in the Pod's labels and annotations. Built so far: its configuration, the pure
//! rendering of a create into Pod, Secrets and claims (`render`), the versioned state kept
//! on the Pod (`pod_state`), what a Pod's status means (`pod_status`), and the table of sandboxes
//! read from watched Pods that reads will be answered from (`sandbox_table`), and the Lease decision of which replica
//! reaps (`leadership`). The runtime itself (watch-backed cache, create, delete, leadership)
//! is not implemented yet.

pub mod config;
pub mod leadership;
pub mod pod_state;
pub mod pod_status;
pub mod render;
pub mod runtime;
pub mod sandbox_table;
pub mod sweep;

pub use berth_core::runtime::Runtime;
