//! Which engine answers during a create are the request's fault (or a conflict on the host)
//! rather than Berth's: classified here, in one place, from the engine's status and message,
//! so each becomes a 4xx with a stable code, the field, and the engine's reason. Anything not
//! recognised stays an internal error. The message texts are Docker Engine 20.10's (API 1.41);
//! newer engines word these the same.

use berth_core::ErrorCode;
use berth_core::model::{SandboxId, SandboxSpec, VolumeSource};
use berth_core::runtime::RuntimeError;
use berth_core::validate::{Violation, Violations};

use crate::render::nfs_volume_name;

/// The engine call that answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// `POST /containers/create`: the body is checked (limits, image).
    CreateContainer,
    /// `POST /containers/{id}/start`: mounts, ports and the entry process are set up.
    StartContainer,
}

/// What an engine error answer means for the request `spec` of sandbox `id`: `Some` when the
/// request (or the host's state) is at fault, `None` when it is an internal error.
pub(super) fn classify(
    step: Step,
    status: u16,
    message: &str,
    id: &SandboxId,
    spec: &SandboxSpec,
) -> Option<RuntimeError> {
    let rejected = |field: String, code: ErrorCode, text: String| {
        Some(RuntimeError::Rejected(Violations::one(Violation::new(
            field, code, text,
        ))))
    };
    match (step, status) {
        (Step::CreateContainer, 404) => Some(RuntimeError::ImageNotFound {
            image: spec.image.uri.clone(),
            detail: message.to_owned(),
        }),
        // "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"
        (Step::CreateContainer, 400) if message.contains("Range of CPUs") => rejected(
            "resourceLimits.cpu".into(),
            ErrorCode::SandboxUnsatisfiableResourceLimits,
            format!("the engine refused the CPU limit: {message}"),
        ),
        // "Minimum memory limit allowed is 6MB"
        (Step::CreateContainer, 400) if message.contains("Minimum memory limit") => rejected(
            "resourceLimits.memory".into(),
            ErrorCode::SandboxUnsatisfiableResourceLimits,
            format!("the engine refused the memory limit: {message}"),
        ),
        // Below 10m the CFS quota is under the kernel's 1 ms minimum; the engine passes it and
        // runc fails at start (500): "... error setting cgroup config for procHooks process:
        // failed to write \"500\": write /sys/fs/cgroup/cpu/docker/<id>/cpu.cfs_quota_us:
        // invalid argument: unknown" (cgroup v1; `cpu.max` on v2).
        (Step::StartContainer, _)
            if (message.contains("cpu.cfs_quota_us") || message.contains("cpu.max"))
                && message.contains("invalid argument") =>
        {
            let reason = message
                .find("failed to write")
                .map_or(message, |at| &message[at..]);
            rejected(
                "resourceLimits.cpu".into(),
                ErrorCode::SandboxUnsatisfiableResourceLimits,
                format!(
                    "the kernel refused the CPU limit (the smallest it accepts is 10m): {reason}"
                ),
            )
        }
        // "error while mounting volume '/var/lib/docker/volumes/<name>/_data': <reason>" (500)
        (Step::StartContainer, _) if message.starts_with("error while mounting volume") => {
            let (i, volume) = spec.volumes.iter().enumerate().find(|(_, v)| {
                matches!(v.source, VolumeSource::Nfs(_))
                    && message.contains(&format!("/{}/_data'", nfs_volume_name(id, v)))
            })?;
            let VolumeSource::Nfs(nfs) = &volume.source else {
                return None;
            };
            let reason = message.split_once("': ").map_or(message, |(_, r)| r);
            rejected(
                format!("volumes[{i}].nfs"),
                ErrorCode::VolumeNfsMountFailed,
                format!(
                    "the engine could not mount NFS export {}:{}: {reason}",
                    nfs.server.as_str(),
                    nfs.path.as_str()
                ),
            )
        }
        // "driver failed programming external connectivity on endpoint <name> (<id>): Bind for
        // 127.0.0.1:45999 failed: port is already allocated" (500), or the userland proxy's
        // "listen tcp4 127.0.0.1:45999: bind: address already in use".
        (Step::StartContainer, _)
            if message.contains("port is already allocated")
                || message.contains("bind: address already in use") =>
        {
            let what = message
                .find("Bind for ")
                .or_else(|| message.find("listen "))
                .map_or(message, |at| &message[at..]);
            rejected(
                "docker.published_ports".into(),
                ErrorCode::SandboxPortAlreadyAllocated,
                format!(
                    "a port this server publishes for every sandbox could not be bound on the engine's host ({what}); retry, or have the operator free the port"
                ),
            )
        }
        // The engine could not run the entry process (no such program, not executable).
        (Step::StartContainer, 400) => rejected(
            "entrypoint".into(),
            ErrorCode::SandboxInvalidParameter,
            format!("the engine could not start the entry process: {message}"),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::validate::StoragePolicy;

    fn spec() -> SandboxSpec {
        let request = serde_json::json!({
            "image": {"uri": "team/agent:1"}, "entrypoint": ["sh"], "resourceLimits": {},
            "volumes": [
                {"name": "work", "pvc": {"claimName": "sessions"}, "mountPath": "/w"},
                {"name": "archive", "nfs": {"server": "nas.invalid", "path": "/exports/a"}, "mountPath": "/a"}
            ]
        });
        SandboxSpec::from_request(
            serde_json::from_value(request).unwrap(),
            &StoragePolicy::default(),
        )
        .unwrap()
    }

    fn violation(error: Option<RuntimeError>) -> Violation {
        match error {
            Some(RuntimeError::Rejected(v)) => v.as_slice()[0].clone(),
            other => panic!("not a rejection: {other:?}"),
        }
    }

    fn id() -> SandboxId {
        SandboxId::new("abc").unwrap()
    }

    #[test]
    fn limits_the_host_cannot_grant() {
        let v = violation(classify(
            Step::CreateContainer,
            400,
            "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available",
            &id(),
            &spec(),
        ));
        assert_eq!(
            (v.field.as_str(), v.code),
            (
                "resourceLimits.cpu",
                ErrorCode::SandboxUnsatisfiableResourceLimits
            )
        );
        assert!(v.message.contains("only 2 CPUs available"), "{v}");
        let v = violation(classify(
            Step::CreateContainer,
            400,
            "Minimum memory limit allowed is 6MB",
            &id(),
            &spec(),
        ));
        assert_eq!(v.field, "resourceLimits.memory");
        assert!(v.message.contains("6MB"), "{v}");
        let v = violation(classify(
            Step::StartContainer,
            500,
            "failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: error setting cgroup config for procHooks process: failed to write \"500\": write /sys/fs/cgroup/cpu/docker/5950197ca355/cpu.cfs_quota_us: invalid argument: unknown",
            &id(),
            &spec(),
        ));
        assert_eq!(
            (v.field.as_str(), v.code),
            (
                "resourceLimits.cpu",
                ErrorCode::SandboxUnsatisfiableResourceLimits
            )
        );
        assert!(
            v.message.contains("cpu.cfs_quota_us: invalid argument"),
            "{v}"
        );
    }

    #[test]
    fn an_nfs_mount_failure_names_its_volume() {
        let message = "error while mounting volume '/var/lib/docker/volumes/berth-nfs-abc-archive/_data': error resolving passed in network volume address: lookup nas.invalid on 10.255.255.53:53: no such host";
        let v = violation(classify(Step::StartContainer, 500, message, &id(), &spec()));
        assert_eq!(
            (v.field.as_str(), v.code),
            ("volumes[1].nfs", ErrorCode::VolumeNfsMountFailed)
        );
        assert_eq!(
            v.message,
            "the engine could not mount NFS export nas.invalid:/exports/a: error resolving passed in network volume address: lookup nas.invalid on 10.255.255.53:53: no such host"
        );
        // A named volume that is not one of this sandbox's NFS volumes: not classified.
        let other = "error while mounting volume '/var/lib/docker/volumes/sessions/_data': failed to mount local volume: no such device";
        assert_eq!(
            classify(Step::StartContainer, 500, other, &id(), &spec()),
            None
        );
    }

    #[test]
    fn a_taken_port_is_a_conflict() {
        for message in [
            "driver failed programming external connectivity on endpoint sandbox-abc (bec5126f0447): Bind for 127.0.0.1:45999 failed: port is already allocated",
            "driver failed programming external connectivity on endpoint sandbox-abc (bec5126f0447): Error starting userland proxy: listen tcp4 127.0.0.1:45999: bind: address already in use",
        ] {
            let error = classify(Step::StartContainer, 500, message, &id(), &spec());
            assert_eq!(
                error
                    .as_ref()
                    .map(RuntimeError::code)
                    .map(|c| c.http_status()),
                Some(409)
            );
            let v = violation(error);
            assert_eq!(v.code, ErrorCode::SandboxPortAlreadyAllocated);
            assert!(v.message.contains("127.0.0.1:45999"), "{v}");
        }
    }

    #[test]
    fn other_answers_stay_internal() {
        assert_eq!(
            classify(
                Step::CreateContainer,
                500,
                "Conflict. The container name is already in use",
                &id(),
                &spec()
            ),
            None
        );
        assert_eq!(
            classify(
                Step::CreateContainer,
                400,
                "invalid mount config for type \"bind\"",
                &id(),
                &spec()
            ),
            None
        );
        assert_eq!(
            classify(
                Step::StartContainer,
                500,
                "cgroups: cannot find cgroup mount destination",
                &id(),
                &spec()
            ),
            None
        );
    }

    #[test]
    fn the_old_start_and_image_answers_keep_their_codes() {
        let v = violation(classify(
            Step::StartContainer,
            400,
            "failed to create shim: OCI runtime create failed: exec: \"/no/such\": stat /no/such: no such file or directory: unknown",
            &id(),
            &spec(),
        ));
        assert_eq!(
            (v.field.as_str(), v.code),
            ("entrypoint", ErrorCode::SandboxInvalidParameter)
        );
        assert!(matches!(
            classify(
                Step::CreateContainer,
                404,
                "No such image: team/agent:1",
                &id(),
                &spec()
            ),
            Some(RuntimeError::ImageNotFound { .. })
        ));
    }
}
