//! What a Pod's status means for its sandbox: the reported state (from phase, conditions and
//! container states, with the cause in `message`), and how a create waiting for Running is
//! doing — still starting (scheduling, pulling, mounting: shown, waited for), running, or
//! failed for a reason that waiting will not fix (a missing image, a configuration the kubelet
//! refuses, an entry process that already ended, a subPath Berth's init container refused).
//! Pure.

use berth_core::ErrorCode;
use berth_core::model::{SandboxSpec, SandboxState, SandboxStatus};
use berth_core::runtime::RuntimeError;
use berth_core::validate::{Violation, Violations};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::render::{
    SANDBOX_CONTAINER, SUBPATH_EXIT_MISSING, SUBPATH_EXIT_NOT_DIRECTORY, SUBPATH_EXIT_SYMLINK,
    SUBPATH_EXIT_UNSUPPORTED_TYPE, SUBPATH_INIT_CONTAINER, sub_path_field,
};

/// Waiting reasons of the sandbox container that mean the image cannot be had.
const IMAGE_FAILURES: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
];

/// How a starting sandbox is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartProgress {
    /// Not running yet; `message` says what it waits for (shown in the status, and the create's
    /// error at its deadline).
    Starting {
        /// Why it is not running yet, if the cluster said.
        message: Option<String>,
    },
    /// The sandbox container runs.
    Running,
    /// It will not start.
    Failed(StartFailure),
}

/// Why a sandbox will not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFailure {
    /// The image cannot be pulled (or must not be, and is absent).
    Image {
        /// The kubelet's reason and message.
        detail: String,
    },
    /// The kubelet refuses the container's configuration (e.g. a subPath it will not mount).
    ContainerConfig {
        /// The kubelet's message.
        detail: String,
    },
    /// The entry process already ended.
    Ended {
        /// How.
        detail: String,
    },
    /// Berth's init container refused a subPath, or could not run.
    SubPath(SubPathFailure),
    /// The agent's init container (`runtime.execd_image`) could not run or copy the agent: the
    /// operator's setting, answered with the codes Docker uses for it.
    Agent {
        /// `EXECD::IMAGE_NOT_FOUND` or `EXECD::FILES_MISSING`.
        code: ErrorCode,
        /// The kubelet's reason, or `cp`'s message.
        detail: String,
    },
}

/// What Berth's init container (`kubernetes.subpath_init_image`) reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubPathFailure {
    /// The script's exit status (see [`crate::render::SUBPATH_SCRIPT`]); `None` when it never
    /// ran (its image cannot be had, or the kubelet refused the container).
    pub exit_code: Option<i32>,
    /// The request volume its message names.
    pub volume: Option<String>,
    /// Its message (the script's last line), or the kubelet's.
    pub detail: String,
}

impl SubPathFailure {
    fn of(status: &ContainerStatus) -> Option<Self> {
        let state = status.state.as_ref()?;
        if let Some(terminated) = state.terminated.as_ref().filter(|t| t.exit_code != 0) {
            let message = terminated.message.as_deref().unwrap_or_default();
            // The script's own line is the last one it wrote; anything before is a tool's.
            let line = message
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("berth-subpaths: "));
            let volume = line
                .and_then(|l| l.strip_prefix("volume \""))
                .and_then(|rest| rest.split_once('"'))
                .map(|(name, _)| name.to_owned());
            return Some(Self {
                exit_code: Some(terminated.exit_code),
                volume,
                detail: line.map_or_else(
                    || {
                        format!(
                            "the init container ended with code {}{}: {}",
                            terminated.exit_code,
                            terminated
                                .reason
                                .as_deref()
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default(),
                            message.trim()
                        )
                    },
                    str::to_owned,
                ),
            });
        }
        let waiting = state.waiting.as_ref()?;
        let reason = waiting.reason.as_deref().unwrap_or_default();
        (IMAGE_FAILURES.contains(&reason) || reason == "CreateContainerConfigError").then(|| Self {
            exit_code: None,
            volume: None,
            detail: format!(
                "the init container cannot run: {reason}: {}",
                waiting.message.as_deref().unwrap_or("")
            ),
        })
    }

    /// The error a create answers, as Docker answers the same path: a link anywhere is
    /// `VOLUME::SUB_PATH_SYMLINK`, a non-directory on the way or an unmountable file type
    /// `VOLUME::UNSUPPORTED_FILE_TYPE`, a missing part that cannot be created
    /// `VOLUME::INVALID_SUB_PATH`, each on the field of the volume named; anything else is the
    /// operator's to fix (the image, its tools), so an internal error with the details logged.
    pub fn to_error(&self, spec: &SandboxSpec) -> RuntimeError {
        let code = match self.exit_code {
            Some(SUBPATH_EXIT_SYMLINK) => ErrorCode::VolumeSubPathSymlink,
            Some(SUBPATH_EXIT_NOT_DIRECTORY | SUBPATH_EXIT_UNSUPPORTED_TYPE) => {
                ErrorCode::VolumeUnsupportedFileType
            }
            Some(SUBPATH_EXIT_MISSING) => ErrorCode::VolumeInvalidSubPath,
            _ => {
                return RuntimeError::Internal {
                    context: format!(
                        "preparing subPaths in the init container \"{SUBPATH_INIT_CONTAINER}\" (kubernetes.subpath_init_image)"
                    ),
                    detail: self.detail.clone(),
                };
            }
        };
        let field = self
            .volume
            .as_deref()
            .and_then(|name| spec.volumes.iter().position(|v| v.name.as_str() == name))
            .map_or_else(
                || "volumes".to_owned(),
                |i| format!("volumes[{i}].{}", sub_path_field(&spec.volumes[i])),
            );
        RuntimeError::Rejected(Violations::one(Violation::new(
            field,
            code,
            self.detail.clone(),
        )))
    }
}

/// A Kubernetes time as Berth reports times.
pub fn to_chrono(time: &Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(
        time.0.as_second(),
        u32::try_from(time.0.subsec_nanosecond()).unwrap_or(0),
    )
}

/// How Berth's init container failed, if it did.
fn subpath_failure(pod: &Pod) -> Option<SubPathFailure> {
    pod.status
        .as_ref()?
        .init_container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == SUBPATH_INIT_CONTAINER)
        .and_then(SubPathFailure::of)
}

/// How the agent's init container failed, if it did: its image cannot be had, or `cp` of the
/// agent's files ended in an error (the image lacks them, or `cp`).
fn agent_failure(pod: &Pod) -> Option<StartFailure> {
    let state = pod
        .status
        .as_ref()?
        .init_container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == crate::render::EXECD_INIT_CONTAINER)?
        .state
        .as_ref()?;
    if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.as_deref().unwrap_or_default();
        return IMAGE_FAILURES
            .contains(&reason)
            .then(|| StartFailure::Agent {
                code: ErrorCode::ExecdImageNotFound,
                detail: format!(
                    "the agent's image (runtime.execd_image) cannot be had: {reason}: {}",
                    waiting.message.as_deref().unwrap_or("")
                ),
            });
    }
    let ended = state.terminated.as_ref().filter(|t| t.exit_code != 0)?;
    Some(StartFailure::Agent {
        code: ErrorCode::ExecdFilesMissing,
        detail: format!(
            "copying /execd and /bootstrap.sh out of the agent's image (runtime.execd_image) failed with code {}: {}",
            ended.exit_code,
            ended.message.as_deref().unwrap_or("").trim()
        ),
    })
}

/// The sandbox container's status, if reported.
fn sandbox_container(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == SANDBOX_CONTAINER)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Why the Pod is not scheduled, if the scheduler said.
fn unschedulable(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| {
            format!(
                "not scheduled ({}): {}",
                c.reason.as_deref().unwrap_or("unknown"),
                c.message.as_deref().unwrap_or("")
            )
        })
}

fn describe_termination(t: &ContainerStateTerminated) -> String {
    format!(
        "the entry process ended with code {}{}{}",
        t.exit_code,
        t.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        t.message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    )
}

/// How a create waiting on `pod` is doing.
pub fn start_progress(pod: &Pod) -> StartProgress {
    let container = sandbox_container(pod);
    let state = container.and_then(|c| c.state.as_ref());
    if state.is_some_and(|s| s.running.is_some()) {
        return StartProgress::Running;
    }
    if let Some(failure) = subpath_failure(pod) {
        return StartProgress::Failed(StartFailure::SubPath(failure));
    }
    if let Some(failure) = agent_failure(pod) {
        return StartProgress::Failed(failure);
    }
    if let Some(terminated) = state.and_then(|s| s.terminated.as_ref()) {
        return StartProgress::Failed(StartFailure::Ended {
            detail: describe_termination(terminated),
        });
    }
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = waiting.reason.as_deref().unwrap_or_default();
        let detail = format!("{reason}: {}", waiting.message.as_deref().unwrap_or(""));
        if IMAGE_FAILURES.contains(&reason) {
            return StartProgress::Failed(StartFailure::Image { detail });
        }
        if reason == "CreateContainerConfigError" {
            return StartProgress::Failed(StartFailure::ContainerConfig {
                detail: waiting.message.clone().unwrap_or_default(),
            });
        }
        return StartProgress::Starting {
            message: Some(detail),
        };
    }
    if matches!(phase(pod), "Failed" | "Succeeded") {
        return StartProgress::Failed(StartFailure::Ended {
            detail: pod
                .status
                .as_ref()
                .and_then(|s| s.message.clone())
                .unwrap_or_else(|| format!("the Pod is {}", phase(pod))),
        });
    }
    StartProgress::Starting {
        message: unschedulable(pod),
    }
}

/// The sandbox's status as reported, from its Pod (`changed_at`: when the state last changed,
/// if known; else the creation time).
pub fn sandbox_status(pod: &Pod, created_at: DateTime<Utc>) -> SandboxStatus {
    if pod.metadata.deletion_timestamp.is_some() {
        return SandboxStatus {
            state: SandboxState::Stopping,
            reason: Some("deleting".into()),
            message: Some("the sandbox is being deleted".into()),
            last_transition_at: pod.metadata.deletion_timestamp.as_ref().and_then(to_chrono),
        };
    }
    let container = sandbox_container(pod);
    let state = container.and_then(|c| c.state.as_ref());
    if let Some(terminated) = state.and_then(|s| s.terminated.as_ref()) {
        let ok = terminated.exit_code == 0;
        return SandboxStatus {
            state: if ok {
                SandboxState::Terminated
            } else {
                SandboxState::Failed
            },
            reason: Some(
                terminated
                    .reason
                    .clone()
                    .unwrap_or_else(|| if ok { "exited" } else { "exited_with_error" }.into()),
            ),
            message: Some(describe_termination(terminated)),
            last_transition_at: terminated.finished_at.as_ref().and_then(to_chrono),
        };
    }
    if let Some(running) = state.and_then(|s| s.running.as_ref()) {
        return SandboxStatus {
            state: SandboxState::Running,
            reason: None,
            message: None,
            last_transition_at: running
                .started_at
                .as_ref()
                .and_then(to_chrono)
                .or(Some(created_at)),
        };
    }
    match start_progress(pod) {
        StartProgress::Failed(failure) => SandboxStatus {
            state: SandboxState::Failed,
            reason: Some(
                match failure {
                    StartFailure::Image { .. } => "image_pull_failed",
                    StartFailure::ContainerConfig { .. } => "container_config_error",
                    StartFailure::Ended { .. } => "ended",
                    StartFailure::SubPath(_) => "sub_path_refused",
                    StartFailure::Agent { .. } => "agent_failed",
                }
                .into(),
            ),
            message: Some(match failure {
                StartFailure::Image { detail }
                | StartFailure::ContainerConfig { detail }
                | StartFailure::Ended { detail }
                | StartFailure::SubPath(SubPathFailure { detail, .. })
                | StartFailure::Agent { detail, .. } => detail,
            }),
            last_transition_at: Some(created_at),
        },
        StartProgress::Starting { message } => SandboxStatus {
            state: SandboxState::Pending,
            reason: message.as_ref().map(|_| "starting".into()),
            message,
            last_transition_at: Some(created_at),
        },
        StartProgress::Running => SandboxStatus::new(SandboxState::Running, created_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sandbox-a"},
            "status": status,
        }))
        .unwrap()
    }

    fn waiting(reason: &str, message: &str) -> Pod {
        pod(
            serde_json::json!({"phase": "Pending", "containerStatuses": [{
            "name": "sandbox", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}}}]}),
        )
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn image_failures_fail_the_start_at_once() {
        for reason in IMAGE_FAILURES {
            let p = waiting(reason, "no such image");
            assert_eq!(
                start_progress(&p),
                StartProgress::Failed(StartFailure::Image {
                    detail: format!("{reason}: no such image")
                })
            );
            assert_eq!(sandbox_status(&p, at()).state, SandboxState::Failed);
        }
    }

    #[test]
    fn a_refused_container_config_fails_the_start() {
        let p = waiting(
            "CreateContainerConfigError",
            "failed to prepare subPath for volumeMount \"work\"",
        );
        assert!(matches!(
            start_progress(&p),
            StartProgress::Failed(StartFailure::ContainerConfig { .. })
        ));
    }

    #[test]
    fn scheduling_and_creating_are_waited_for_with_their_reason() {
        let p = waiting("ContainerCreating", "");
        assert!(matches!(start_progress(&p), StartProgress::Starting { .. }));
        let p = pod(serde_json::json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient cpu."}]}));
        let status = sandbox_status(&p, at());
        assert_eq!(status.state, SandboxState::Pending);
        assert!(
            status
                .message
                .as_deref()
                .unwrap()
                .contains("Insufficient cpu"),
            "{status:?}"
        );
    }

    fn init_failed(state: serde_json::Value) -> Pod {
        pod(serde_json::json!({"phase": "Failed",
            "initContainerStatuses": [{"name": "berth-subpaths", "image": "b", "imageID": "",
                "ready": false, "restartCount": 0, "state": state}],
            "containerStatuses": [{"name": "sandbox", "image": "i", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}))
    }

    fn agent_failed(state: serde_json::Value) -> Pod {
        pod(serde_json::json!({"phase": "Pending",
            "initContainerStatuses": [{"name": "berth-execd", "image": "e", "imageID": "",
                "ready": false, "restartCount": 0, "state": state}],
            "containerStatuses": [{"name": "sandbox", "image": "i", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}))
    }

    #[test]
    fn the_agents_init_container_failing_has_the_codes_docker_uses() {
        let missing = agent_failed(serde_json::json!({"waiting": {
            "reason": "ErrImageNeverPull", "message": "Container image \"e\" is not present"}}));
        let StartProgress::Failed(StartFailure::Agent { code, detail }) = start_progress(&missing)
        else {
            panic!("{:?}", start_progress(&missing));
        };
        assert_eq!(code, ErrorCode::ExecdImageNotFound);
        assert!(detail.contains("ErrImageNeverPull"), "{detail}");
        assert_eq!(
            sandbox_status(&missing, at()).reason.as_deref(),
            Some("agent_failed")
        );
        let no_files = agent_failed(serde_json::json!({"terminated": {"exitCode": 1,
            "reason": "Error", "message": "cp: can't stat '/execd': No such file or directory\n"}}));
        let StartProgress::Failed(StartFailure::Agent { code, detail }) = start_progress(&no_files)
        else {
            panic!("{:?}", start_progress(&no_files));
        };
        assert_eq!(code, ErrorCode::ExecdFilesMissing);
        assert!(detail.contains("can't stat '/execd'"), "{detail}");
        // Still pulling, or copied: not a failure.
        for fine in [
            serde_json::json!({"waiting": {"reason": "ContainerCreating"}}),
            serde_json::json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
        ] {
            assert!(
                !matches!(
                    start_progress(&agent_failed(fine)),
                    StartProgress::Failed(_)
                ),
                "a fine agent container is not a failure"
            );
        }
    }

    fn spec() -> SandboxSpec {
        let root = berth_core::model::HostPath::new("/data").unwrap();
        let request = serde_json::from_value(serde_json::json!({
            "image": {"uri": "i"}, "entrypoint": ["sh"], "resourceLimits": {},
            "volumes": [
                {"name": "work", "pvc": {"claimName": "claim"}, "mountPath": "/w", "subPath": "a/b"},
                {"name": "skills", "host": {"path": "/data/python"}, "mountPath": "/s"},
            ],
        }))
        .unwrap();
        let policy = berth_core::validate::StoragePolicy {
            allowed_host_roots: vec![root],
            max_timeout_seconds: None,
        };
        SandboxSpec::from_request(request, &policy).unwrap()
    }

    fn refusal(exit_code: i32, volume: &str) -> (String, String) {
        let message = format!(
            "mkdir: can't create directory './x': File exists\nberth-subpaths: volume \"{volume}\": a/b is a symbolic link\n"
        );
        let p = init_failed(serde_json::json!({"terminated": {
            "exitCode": exit_code, "reason": "Error", "message": message}}));
        let StartProgress::Failed(StartFailure::SubPath(failure)) = start_progress(&p) else {
            panic!("not a subPath failure: {:?}", start_progress(&p));
        };
        assert_eq!(
            sandbox_status(&p, at()).reason.as_deref(),
            Some("sub_path_refused")
        );
        let body = failure.to_error(&spec()).to_error_response();
        (body.code, body.message)
    }

    #[test]
    fn a_refusal_of_the_init_container_is_answered_as_docker_answers_it() {
        let (code, message) = refusal(SUBPATH_EXIT_SYMLINK, "work");
        assert_eq!(code, "VOLUME::SUB_PATH_SYMLINK");
        assert!(message.contains("volumes[0].subPath"), "{message}");
        assert!(message.contains("a/b is a symbolic link"), "{message}");
        assert!(
            !message.contains("mkdir"),
            "only the script's line: {message}"
        );
        // A host volume without a subPath: the part of its path below the root.
        let (code, message) = refusal(SUBPATH_EXIT_SYMLINK, "skills");
        assert_eq!(code, "VOLUME::SUB_PATH_SYMLINK");
        assert!(message.contains("volumes[1].host.path"), "{message}");
        for (exit_code, expected) in [
            (SUBPATH_EXIT_NOT_DIRECTORY, "VOLUME::UNSUPPORTED_FILE_TYPE"),
            (
                SUBPATH_EXIT_UNSUPPORTED_TYPE,
                "VOLUME::UNSUPPORTED_FILE_TYPE",
            ),
            (SUBPATH_EXIT_MISSING, "VOLUME::INVALID_SUB_PATH"),
            (
                crate::render::SUBPATH_EXIT_FAILED,
                "GENERAL::INTERNAL_ERROR",
            ),
            (127, "GENERAL::INTERNAL_ERROR"),
        ] {
            assert_eq!(refusal(exit_code, "work").0, expected, "exit {exit_code}");
        }
    }

    #[test]
    fn an_init_image_that_cannot_be_had_fails_the_start_as_the_operators_problem() {
        let p = init_failed(serde_json::json!({"waiting": {
            "reason": "ErrImageNeverPull", "message": "image \"busybox\" is not present"}}));
        let StartProgress::Failed(StartFailure::SubPath(failure)) = start_progress(&p) else {
            panic!("not a subPath failure: {:?}", start_progress(&p));
        };
        assert_eq!(failure.exit_code, None);
        let error = failure.to_error(&spec());
        assert!(matches!(error, RuntimeError::Internal { .. }), "{error}");
        assert!(error.to_string().contains("ErrImageNeverPull"), "{error}");
        // Still initialising, or done: no failure.
        let p = init_failed(serde_json::json!({"running": {}}));
        assert!(matches!(start_progress(&p), StartProgress::Starting { .. }));
        let p = init_failed(serde_json::json!({"terminated": {"exitCode": 0}}));
        assert!(matches!(start_progress(&p), StartProgress::Starting { .. }));
    }

    #[test]
    fn running_terminated_oom_and_deleting() {
        let p = pod(
            serde_json::json!({"phase": "Running", "containerStatuses": [{
            "name": "sandbox", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {"startedAt": "2023-11-14T22:13:21Z"}}}]}),
        );
        assert_eq!(start_progress(&p), StartProgress::Running);
        assert_eq!(sandbox_status(&p, at()).state, SandboxState::Running);
        let p = pod(
            serde_json::json!({"phase": "Failed", "containerStatuses": [{
            "name": "sandbox", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        let status = sandbox_status(&p, at());
        assert_eq!(
            (status.state, status.reason.as_deref()),
            (SandboxState::Failed, Some("OOMKilled"))
        );
        let p = pod(
            serde_json::json!({"phase": "Succeeded", "containerStatuses": [{
            "name": "sandbox", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        assert_eq!(sandbox_status(&p, at()).state, SandboxState::Terminated);
        let mut p = p;
        p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(sandbox_status(&p, at()).state, SandboxState::Stopping);
    }
}
