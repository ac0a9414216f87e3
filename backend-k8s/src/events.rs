//! Why a sandbox Pod does not start, from the namespace's Warning events: the scheduler's
//! `FailedScheduling`, the kubelet's `FailedMount`, the attach-detach controller's
//! `FailedAttachVolume` and their like say what no Pod status field does (a volume that will
//! not mount leaves the container only `ContainerCreating`). The runtime watches them
//! (`involvedObject.kind=Pod,type=Warning`) and keeps, per sandbox, the latest such warning of
//! its current Pod in the sandbox table; a starting sandbox's status carries it, and so does a
//! create's error at its deadline. Pure.

use berth_core::model::{SandboxState, SandboxStatus};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

use crate::pod_status::to_chrono;

/// The field selector of the event watch: warnings about Pods only.
pub const WATCHED_EVENTS: &str = "involvedObject.kind=Pod,type=Warning";

/// Warning reasons that explain a Pod that does not start (Kubernetes 1.20 and later): the
/// scheduler's, the volume managers', and the kubelet's before the container exists. Later
/// failures (image pulls, a refused container, an ended process) show in the Pod's status.
pub const START_WARNINGS: [&str; 7] = [
    "FailedScheduling",
    "FailedAttachVolume",
    "FailedMount",
    "FailedMapVolume",
    "FailedCreatePodSandBox",
    "FailedCreatePodContainer",
    "NetworkNotReady",
];

/// Longest message kept (a mount failure can quote a long mount command); longer ones are cut.
const MAX_MESSAGE: usize = 1024;

/// The latest start warning of one Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodWarning {
    /// The Pod it is about (a Pod recreated under the same name is another Pod).
    pub pod_uid: String,
    /// The event's reason (`FailedMount`, ...).
    pub reason: String,
    /// What it says.
    pub message: String,
    /// How often it was reported.
    pub count: i32,
    /// When it was last reported, if the event says.
    pub at: Option<DateTime<Utc>>,
}

impl PodWarning {
    /// Whether `self` replaces `kept` as the latest: not older than it.
    pub fn supersedes(&self, kept: &Self) -> bool {
        self.pod_uid != kept.pod_uid || self.at >= kept.at
    }

    /// Whether it is about placing the Pod (then it holds only until the Pod is bound to a
    /// node); the others come from the node, after.
    fn about_scheduling(&self) -> bool {
        self.reason == "FailedScheduling"
    }

    /// `Reason: message`, with how often if more than once.
    fn cause(&self) -> String {
        let times = if self.count > 1 {
            format!(" (reported {} times)", self.count)
        } else {
            String::new()
        };
        format!("{}: {}{times}", self.reason, self.message)
    }
}

fn micro_to_chrono(time: &MicroTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(
        time.0.as_second(),
        u32::try_from(time.0.subsec_nanosecond()).unwrap_or(0),
    )
}

/// The Pod name and the warning an event carries, if it is a start warning about a Pod.
pub fn start_warning(event: &Event) -> Option<(String, PodWarning)> {
    let object = &event.involved_object;
    if object.kind.as_deref() != Some("Pod") || event.type_.as_deref() != Some("Warning") {
        return None;
    }
    let reason = event.reason.as_deref()?;
    if !START_WARNINGS.contains(&reason) {
        return None;
    }
    let mut message = event.message.as_deref().unwrap_or("").trim().to_owned();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    // Events recorded through events.k8s.io carry a series instead of a count and last time.
    let series = event.series.as_ref();
    let at = [
        event.last_timestamp.as_ref().and_then(to_chrono),
        series
            .and_then(|s| s.last_observed_time.as_ref())
            .and_then(micro_to_chrono),
        event.event_time.as_ref().and_then(micro_to_chrono),
        event.first_timestamp.as_ref().and_then(to_chrono),
        event
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(to_chrono),
    ]
    .into_iter()
    .flatten()
    .max();
    Some((
        object.name.clone()?,
        PodWarning {
            pod_uid: object.uid.clone()?,
            reason: reason.to_owned(),
            message,
            count: series
                .and_then(|s| s.count)
                .or(event.count)
                .unwrap_or(1)
                .max(1),
            at,
        },
    ))
}

/// The status a sandbox shows: `status` as its Pod says, with `warning`'s cause while it still
/// explains the wait — a scheduling warning until the Pod is bound to a node (`scheduled`), a
/// node's warning after, either only while the sandbox is Pending. A cause the Pod's status
/// already names (the scheduler's message in the PodScheduled condition) is not repeated.
pub fn with_warning(
    status: SandboxStatus,
    scheduled: bool,
    warning: Option<&PodWarning>,
) -> SandboxStatus {
    let Some(warning) = warning else {
        return status;
    };
    if status.state != SandboxState::Pending || warning.about_scheduling() == scheduled {
        return status;
    }
    // A waiting reason without a message ("ContainerCreating: ") says nothing after its name.
    let own = status
        .message
        .as_deref()
        .map(|m| m.trim_end_matches([':', ' ']))
        .filter(|m| !m.is_empty());
    let message = match own {
        Some(own) if !warning.message.is_empty() && own.contains(&warning.message) => {
            own.to_owned()
        }
        Some(own) => format!("{own}; {}", warning.cause()),
        None => warning.cause(),
    };
    SandboxStatus {
        reason: Some(warning.reason.clone()),
        message: Some(message),
        ..status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, kind_of_event: &str, reason: &str, message: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sandbox-a.1", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "involvedObject": {"kind": kind, "name": "sandbox-a", "uid": "u1"},
            "type": kind_of_event,
            "reason": reason,
            "message": message,
            "count": 3,
            "lastTimestamp": "2024-01-01T00:00:09Z",
        }))
        .unwrap()
    }

    fn pending(message: Option<&str>) -> SandboxStatus {
        SandboxStatus {
            state: SandboxState::Pending,
            reason: message.map(|_| "starting".to_owned()),
            message: message.map(str::to_owned),
            last_transition_at: None,
        }
    }

    #[test]
    fn start_warnings_about_pods_are_read_with_their_latest_time() {
        let (pod, warning) = start_warning(&event(
            "Pod",
            "Warning",
            "FailedMount",
            "MountVolume.SetUp failed for volume \"work\" : hostPath type check failed",
        ))
        .unwrap();
        assert_eq!(pod, "sandbox-a");
        assert_eq!(
            (
                warning.pod_uid.as_str(),
                warning.reason.as_str(),
                warning.count
            ),
            ("u1", "FailedMount", 3)
        );
        assert_eq!(warning.at, DateTime::from_timestamp(1_704_067_209, 0));
        // Normal events, other reasons, other kinds: not start warnings.
        assert!(start_warning(&event("Pod", "Normal", "Scheduled", "ok")).is_none());
        assert!(start_warning(&event("Pod", "Warning", "FailedKillPod", "x")).is_none());
        assert!(
            start_warning(&event(
                "PersistentVolumeClaim",
                "Warning",
                "FailedMount",
                "x"
            ))
            .is_none()
        );
        // A message is kept bounded.
        let long = "x".repeat(5000);
        let (_, warning) =
            start_warning(&event("Pod", "Warning", "FailedScheduling", &long)).unwrap();
        assert!(warning.message.len() <= MAX_MESSAGE + '…'.len_utf8());
    }

    #[test]
    fn an_event_series_gives_the_count_and_time() {
        let mut e = event("Pod", "Warning", "FailedScheduling", "0/1 nodes");
        e.last_timestamp = None;
        e.count = None;
        e.series = Some(k8s_openapi::api::core::v1::EventSeries {
            count: Some(7),
            last_observed_time: Some(MicroTime("2024-01-01T00:01:00Z".parse().unwrap())),
        });
        let (_, warning) = start_warning(&e).unwrap();
        assert_eq!(
            (warning.count, warning.at),
            (7, DateTime::from_timestamp(1_704_067_260, 0))
        );
    }

    #[test]
    fn the_latest_warning_of_the_same_pod_wins() {
        let (_, older) = start_warning(&event("Pod", "Warning", "FailedMount", "a")).unwrap();
        let mut newer = older.clone();
        newer.at = older.at.map(|t| t + chrono::TimeDelta::seconds(1));
        assert!(newer.supersedes(&older));
        assert!(!older.supersedes(&newer));
        // Another Pod of the same name: its own warnings, whatever their time.
        let other_pod = PodWarning {
            pod_uid: "u2".into(),
            at: None,
            ..older.clone()
        };
        assert!(other_pod.supersedes(&newer));
    }

    #[test]
    fn a_waiting_sandbox_shows_the_cause() {
        let (_, mount) = start_warning(&event(
            "Pod",
            "Warning",
            "FailedMount",
            "hostPath type check failed: /nope is not a directory",
        ))
        .unwrap();
        // ContainerCreating with no message of its own: the warning is the message.
        let shown = with_warning(pending(Some("ContainerCreating: ")), true, Some(&mount));
        assert_eq!(shown.reason.as_deref(), Some("FailedMount"));
        assert_eq!(
            shown.message.as_deref(),
            Some(
                "ContainerCreating; FailedMount: hostPath type check failed: /nope is not a directory (reported 3 times)"
            )
        );
        let shown = with_warning(pending(None), true, Some(&mount));
        assert!(
            shown.message.unwrap().starts_with("FailedMount: hostPath"),
            "no message of the Pod's own"
        );
        // A node's warning before the Pod is on a node cannot be about this Pod's wait.
        assert_eq!(
            with_warning(pending(None), false, Some(&mount)),
            pending(None)
        );
    }

    #[test]
    fn a_scheduling_cause_is_shown_once_and_only_until_the_pod_is_placed() {
        let (_, scheduling) = start_warning(&event(
            "Pod",
            "Warning",
            "FailedScheduling",
            "0/1 nodes are available: 1 Insufficient cpu.",
        ))
        .unwrap();
        let condition =
            "not scheduled (Unschedulable): 0/1 nodes are available: 1 Insufficient cpu.";
        let shown = with_warning(pending(Some(condition)), false, Some(&scheduling));
        assert_eq!(shown.message.as_deref(), Some(condition));
        assert_eq!(shown.reason.as_deref(), Some("FailedScheduling"));
        // The condition not (yet) there: the event names the cause.
        let shown = with_warning(pending(None), false, Some(&scheduling));
        assert!(
            shown.message.unwrap().contains("Insufficient cpu"),
            "the event names the cause"
        );
        // Placed since: the old scheduling warning no longer explains anything.
        let waiting = pending(Some("ContainerCreating: "));
        assert_eq!(
            with_warning(waiting.clone(), true, Some(&scheduling)),
            waiting
        );
        // Running, failed, stopping sandboxes show their own status.
        let running = SandboxStatus::new(SandboxState::Running, Utc::now());
        assert_eq!(
            with_warning(running.clone(), false, Some(&scheduling)),
            running
        );
    }
}
