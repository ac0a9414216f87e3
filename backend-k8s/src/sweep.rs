//! What a server that crashed mid-create leaves behind, removed by whichever replica leads: a
//! Pod whose recorded create deadline passed without it ever running (the create that would
//! have rolled it back is gone), and a Secret made for a Pod that never got it (it has no owner,
//! so the garbage collector will not take it).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams};

use crate::pod_status::{StartFailure, StartProgress, to_chrono};
use crate::render::{LABEL_MADE_FOR, LABEL_MANAGED_BY, MANAGED_BY, pod_name};
use crate::sandbox_table::SandboxTable;

/// How often the leader sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// What one sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Pods of creates that never finished.
    pub stuck_pods: Vec<String>,
    /// Secrets whose Pod never appeared.
    pub orphan_secrets: Vec<String>,
}

/// The sweep's view of the cluster.
#[derive(Clone)]
pub(crate) struct Sweeper {
    pub(crate) pods: Api<Pod>,
    pub(crate) secrets: Api<Secret>,
    pub(crate) table: Arc<RwLock<SandboxTable>>,
    /// Past its create deadline by this much, a Pod is no longer its creator's to roll back;
    /// a Secret this old without an owner will not get one.
    pub(crate) grace: Duration,
}

impl Sweeper {
    /// One sweep at `now`.
    pub(crate) async fn sweep(&self, now: DateTime<Utc>) -> Result<SweepReport, kube::Error> {
        let grace = chrono::TimeDelta::from_std(self.grace).unwrap_or(chrono::TimeDelta::MAX);
        let stuck: Vec<String> = {
            let table = self
                .table
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            table
                .entries()
                .filter(|e| {
                    // Never ran: still starting, or failed before the entry process started.
                    let never_ran = matches!(
                        e.start,
                        StartProgress::Starting { .. }
                            | StartProgress::Failed(
                                StartFailure::Image { .. } | StartFailure::ContainerConfig { .. }
                            )
                    );
                    never_ran
                        && e.state
                            .create_deadline
                            .and_then(|d| d.checked_add_signed(grace))
                            .is_some_and(|d| d < now)
                })
                .map(|e| pod_name(&e.record.id))
                .collect()
        };
        let now_please = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        let mut report = SweepReport::default();
        for name in stuck {
            match self.pods.delete(&name, &now_please).await {
                Ok(_) => {
                    tracing::warn!(pod = %name, "sweep: removed the Pod of a create that never finished");
                    report.stuck_pods.push(name);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let made = ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
        for secret in self.secrets.list(&made).await?.items {
            let owned = secret
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|o| !o.is_empty());
            let old = secret
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(to_chrono)
                .and_then(|t| t.checked_add_signed(grace))
                .is_some_and(|t| t < now);
            let made_for_a_sandbox = secret
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(LABEL_MADE_FOR));
            if owned || !old || !made_for_a_sandbox {
                continue;
            }
            let name = secret.metadata.name.clone().unwrap_or_default();
            match self.secrets.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::warn!(secret = %name, "sweep: removed a Secret whose Pod never appeared");
                    report.orphan_secrets.push(name);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}
