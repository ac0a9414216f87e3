//! Which replica reaps: the holder of a `coordination.k8s.io/v1` Lease (kube-rs has no leader
//! election of its own). This module is the decision, pure: given the Lease as last read, who
//! this replica is and the time, whether it holds the lease, should take it, or follows another
//! holder — and the Lease to write when it takes or renews it. Every write carries the
//! `resourceVersion` it was decided on, so two replicas deciding at once cannot both win: the
//! loser's write is refused (409) and it reads again.

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

use crate::pod_status::to_chrono;

/// What this replica should do about the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// It holds the lease: renew it before it runs out, and reap.
    Renew,
    /// Nobody holds it, or the holder let it run out: take it (then reap).
    Take,
    /// Another replica holds it: do not reap; look again later.
    Follow {
        /// The holder's identity.
        holder: String,
        /// When its hold runs out unless renewed.
        until: DateTime<Utc>,
    },
}

/// When a lease held as `lease` runs out, if it is held at all.
fn held_until(spec: &LeaseSpec) -> Option<DateTime<Utc>> {
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?;
    let seconds = i64::from(spec.lease_duration_seconds?);
    microtime_to_chrono(renewed)?.checked_add_signed(chrono::TimeDelta::try_seconds(seconds)?)
}

fn microtime_to_chrono(time: &MicroTime) -> Option<DateTime<Utc>> {
    to_chrono(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        time.0,
    ))
}

fn microtime(at: DateTime<Utc>) -> Option<MicroTime> {
    let timestamp = k8s_openapi::jiff::Timestamp::new(
        at.timestamp(),
        i32::try_from(at.timestamp_subsec_nanos()).ok()?,
    )
    .ok()?;
    Some(MicroTime(timestamp))
}

/// Decides what replica `me` does about `lease` (None: it does not exist yet) at `now`.
pub fn decide(lease: Option<&Lease>, me: &str, now: DateTime<Utc>) -> LeaseDecision {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return LeaseDecision::Take;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    match held_until(spec) {
        _ if holder.is_empty() => LeaseDecision::Take,
        _ if holder == me => LeaseDecision::Renew,
        Some(until) if until > now => LeaseDecision::Follow {
            holder: holder.to_owned(),
            until,
        },
        _ => LeaseDecision::Take,
    }
}

/// The Lease to write when `me` takes or renews `current` (None: create it as `name` in
/// `namespace`). It keeps `current`'s `resourceVersion` as the write's precondition.
pub fn claimed(
    current: Option<&Lease>,
    name: &str,
    namespace: &str,
    me: &str,
    now: DateTime<Utc>,
    duration_seconds: i32,
) -> Lease {
    let previous = current.and_then(|l| l.spec.clone()).unwrap_or_default();
    let renewing = previous.holder_identity.as_deref() == Some(me);
    let transitions = previous.lease_transitions.unwrap_or(0);
    Lease {
        metadata: current.map_or_else(
            || ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            |l| l.metadata.clone(),
        ),
        spec: Some(LeaseSpec {
            holder_identity: Some(me.to_owned()),
            lease_duration_seconds: Some(duration_seconds),
            acquire_time: if renewing {
                previous.acquire_time
            } else {
                microtime(now)
            },
            renew_time: microtime(now),
            lease_transitions: Some(if renewing || current.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..LeaseSpec::default()
        }),
    }
}

/// The Lease to write when `me`, stopping, gives up `current`: no holder, so the next replica
/// to look takes it at once instead of waiting for it to run out. `None` when `me` does not hold
/// it (nothing to give up). The write carries `current`'s `resourceVersion`: a replica that took
/// the Lease meanwhile keeps it.
pub fn released(current: &Lease, me: &str) -> Option<Lease> {
    let spec = current.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(me) {
        return None;
    }
    Some(Lease {
        metadata: current.metadata.clone(),
        spec: Some(LeaseSpec {
            holder_identity: None,
            ..spec.clone()
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    fn held_by(holder: &str, renewed: i64) -> Lease {
        let mut lease = claimed(None, "berth-reaper", "ns", holder, at(renewed), 15);
        lease.metadata.resource_version = Some("42".into());
        lease
    }

    #[test]
    fn a_released_lease_is_taken_at_once_by_another() {
        let mine = held_by("a", 100);
        assert_eq!(released(&mine, "b"), None, "only the holder gives it up");
        let given_up = released(&mine, "a").unwrap();
        assert_eq!(given_up.metadata.resource_version.as_deref(), Some("42"));
        // Still within its duration, and yet free.
        assert_eq!(decide(Some(&given_up), "b", at(101)), LeaseDecision::Take);
    }

    #[test]
    fn a_missing_or_empty_lease_is_taken() {
        assert_eq!(decide(None, "a", at(0)), LeaseDecision::Take);
        let mut empty = held_by("b", 0);
        empty.spec.as_mut().unwrap().holder_identity = None;
        assert_eq!(decide(Some(&empty), "a", at(1)), LeaseDecision::Take);
    }

    #[test]
    fn a_fresh_hold_is_followed_and_an_expired_one_taken() {
        let lease = held_by("b", 100);
        assert_eq!(
            decide(Some(&lease), "a", at(110)),
            LeaseDecision::Follow {
                holder: "b".into(),
                until: at(115)
            }
        );
        assert_eq!(decide(Some(&lease), "a", at(115)), LeaseDecision::Take);
        assert_eq!(decide(Some(&lease), "b", at(200)), LeaseDecision::Renew);
    }

    #[test]
    fn writes_keep_the_precondition_and_count_transitions() {
        let lease = held_by("b", 100);
        let taken = claimed(Some(&lease), "berth-reaper", "ns", "a", at(120), 15);
        assert_eq!(taken.metadata.resource_version.as_deref(), Some("42"));
        let spec = taken.spec.as_ref().unwrap();
        assert_eq!(
            (spec.holder_identity.as_deref(), spec.lease_transitions),
            (Some("a"), Some(1))
        );
        let renewed = claimed(Some(&taken), "berth-reaper", "ns", "a", at(125), 15);
        let spec = renewed.spec.as_ref().unwrap();
        assert_eq!(spec.lease_transitions, Some(1));
        assert_eq!(spec.acquire_time, taken.spec.as_ref().unwrap().acquire_time);
        assert_eq!(held_until(spec), Some(at(140)));
    }
}
