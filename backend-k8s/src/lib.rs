//! Berth's Kubernetes runtime (ARCHITECTURE.md, "Lifecycle"): one plain Pod per sandbox, all of
//! Berth's state in the Pod's labels and annotations. Its configuration (`config`); the pure
//! rendering of a create into Pod, Secrets and claims (`render`); the versioned state kept on
//! the Pod (`pod_state`); what a Pod's status means (`pod_status`) and what its Warning events
//! add (`events`); the table of sandboxes read from the watched Pods and events that reads are
//! answered from (`sandbox_table`); the Lease decision of which replica reaps (`leadership`);
//! the leader's sweep of what crashed creates left (`sweep`); and the runtime over all of them
//! (`runtime`).

pub mod call_timeout;
pub mod config;
pub mod events;
pub mod leadership;
pub mod pod_state;
pub mod pod_status;
pub mod render;
pub mod runtime;
pub mod sandbox_table;
pub mod sweep;

pub use berth_core::runtime::Runtime;
