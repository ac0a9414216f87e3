//! What a server that crashed mid-create leaves behind, removed by whichever replica leads: a
//! Pod whose recorded create deadline passed without it ever running (the create that would
//! have rolled it back is gone), a Secret made for a Pod that never got it (it has no owner,
//! so the garbage collector will not take it), and a claim Berth created with
//! `deleteOnSandboxTermination` that never got an owner Pod and no Pod uses. A claim created
//! without `deleteOnSandboxTermination` is the user's to keep: never swept.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Preconditions};

use crate::pod_status::{StartFailure, StartProgress, to_chrono};
use crate::render::{
    LABEL_DELETE_WITH_SANDBOXES, LABEL_MADE_FOR, LABEL_MANAGED_BY, MANAGED_BY, pod_name,
};
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
    /// Claims to be deleted with their sandboxes whose Pod never appeared.
    pub orphan_claims: Vec<String>,
}

/// Whether `claim` is one Berth created for a sandbox with `deleteOnSandboxTermination` that
/// never got an owner Pod, created more than `grace` before `now`, and not being deleted. Whether
/// a Pod still uses it is asked apart ([`orphan_claims`]).
fn unowned_claim_to_delete(
    claim: &PersistentVolumeClaim,
    now: DateTime<Utc>,
    grace: chrono::TimeDelta,
) -> bool {
    let meta = &claim.metadata;
    let label = |key: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(key))
            .map(String::as_str)
    };
    let made_by_berth_for_a_sandbox =
        label(LABEL_MANAGED_BY) == Some(MANAGED_BY) && label(LABEL_MADE_FOR).is_some();
    let deleted_with_sandboxes = label(LABEL_DELETE_WITH_SANDBOXES) == Some("true");
    let owned = meta
        .owner_references
        .as_ref()
        .is_some_and(|o| !o.is_empty());
    let old = meta
        .creation_timestamp
        .as_ref()
        .and_then(to_chrono)
        .and_then(|t| t.checked_add_signed(grace))
        .is_some_and(|t| t < now);
    made_by_berth_for_a_sandbox
        && deleted_with_sandboxes
        && !owned
        && old
        && meta.deletion_timestamp.is_none()
}

/// The claims any of `pods` mounts (Berth's or not).
fn claims_in_use<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> BTreeSet<&'a str> {
    pods.into_iter()
        .filter_map(|p| p.spec.as_ref()?.volumes.as_ref())
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
        .collect()
}

/// The claims of `claims` to sweep at `now`: created by Berth for a sandbox with
/// `deleteOnSandboxTermination`, past `grace`, with no owner Pod, and mounted by none of `pods`.
pub fn orphan_claims<'a>(
    claims: &'a [PersistentVolumeClaim],
    pods: &[Pod],
    now: DateTime<Utc>,
    grace: chrono::TimeDelta,
) -> Vec<&'a PersistentVolumeClaim> {
    let in_use = claims_in_use(pods);
    claims
        .iter()
        .filter(|c| unowned_claim_to_delete(c, now, grace))
        .filter(|c| !in_use.contains(c.metadata.name.as_deref().unwrap_or_default()))
        .collect()
}

/// The sweep's view of the cluster.
#[derive(Clone)]
pub(crate) struct Sweeper {
    pub(crate) pods: Api<Pod>,
    pub(crate) secrets: Api<Secret>,
    pub(crate) claims: Api<PersistentVolumeClaim>,
    pub(crate) table: Arc<RwLock<SandboxTable>>,
    /// Past its create deadline by this much, a Pod is no longer its creator's to roll back;
    /// a Secret or claim this old without an owner will not get one.
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
                                StartFailure::Image { .. }
                                    | StartFailure::ContainerConfig { .. }
                                    | StartFailure::Agent { .. }
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
        let claims = self.claims.list(&made).await?.items;
        // The namespace's Pods are listed only when a claim may be an orphan.
        if claims
            .iter()
            .any(|c| unowned_claim_to_delete(c, now, grace))
        {
            let pods = self.pods.list(&ListParams::default()).await?.items;
            for claim in orphan_claims(&claims, &pods, now, grace) {
                let name = claim.metadata.name.clone().unwrap_or_default();
                // As listed, or not at all: a create that took it since (an owner, a new
                // resourceVersion) keeps it.
                let as_listed = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: claim.metadata.resource_version.clone(),
                        uid: claim.metadata.uid.clone(),
                    }),
                    ..DeleteParams::default()
                };
                match self.claims.delete(&name, &as_listed).await {
                    Ok(_) => {
                        tracing::warn!(claim = %name, "sweep: removed a claim whose Pod never appeared");
                        report.orphan_claims.push(name);
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn claim(name: &str, labels: serde_json::Value, owned: bool) -> PersistentVolumeClaim {
        let owners = if owned {
            serde_json::json!([{"apiVersion": "v1", "kind": "Pod", "name": "sandbox-a", "uid": "u"}])
        } else {
            serde_json::Value::Null
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels, "ownerReferences": owners,
                "creationTimestamp": at(0).to_rfc3339()},
        }))
        .unwrap()
    }

    fn berths(delete_with_sandboxes: bool) -> serde_json::Value {
        let mut labels = serde_json::json!({LABEL_MANAGED_BY: MANAGED_BY, LABEL_MADE_FOR: "a"});
        if delete_with_sandboxes {
            labels[LABEL_DELETE_WITH_SANDBOXES] = "true".into();
        }
        labels
    }

    fn pod_mounting(claim: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "someone"},
            "spec": {"containers": [{"name": "c"}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]},
        }))
        .unwrap()
    }

    fn swept(claims: &[PersistentVolumeClaim], pods: &[Pod], now: i64) -> Vec<String> {
        orphan_claims(claims, pods, at(now), chrono::TimeDelta::seconds(60))
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect()
    }

    #[test]
    fn only_unowned_unused_old_claims_to_delete_with_sandboxes_are_swept() {
        let claims = [
            claim("orphan", berths(true), false),
            claim("owned", berths(true), true),
            claim("users-to-keep", berths(false), false),
            claim("not-berths", serde_json::json!({"app": "x"}), false),
            claim("in-use", berths(true), false),
        ];
        let pods = [pod_mounting("in-use")];
        assert_eq!(swept(&claims, &pods, 61), ["orphan"]);
        // Within the grace, its create may still be running: nothing.
        assert!(swept(&claims, &pods, 60).is_empty());
        // Unused by any Pod, still not swept unless all the rest holds.
        assert_eq!(swept(&claims, &[], 61), ["orphan", "in-use"]);
    }

    #[test]
    fn a_claim_being_deleted_or_without_a_creation_time_is_left_alone() {
        let mut deleting = claim("deleting", berths(true), false);
        deleting.metadata.deletion_timestamp = deleting.metadata.creation_timestamp.clone();
        let mut undated = claim("undated", berths(true), false);
        undated.metadata.creation_timestamp = None;
        assert!(swept(&[deleting, undated], &[], 3600).is_empty());
    }
}
