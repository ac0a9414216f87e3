//! Rendering a validated spec into Docker objects: the container create body and the
//! per-sandbox NFS volumes. Pure functions: the same input gives the same JSON, which is what a
//! dry run returns and what the snapshot tests pin. Only fields the negotiated API version
//! knows are ever set.

use std::collections::HashMap;
use std::path::PathBuf;

use berth_core::model::{NfsSource, SandboxId, SandboxSpec, Volume, VolumeSource};
use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountBindOptions, MountType, PortBinding,
    VolumeCreateRequest,
};
use chrono::{DateTime, Utc};

use crate::config::DockerConfig;
use crate::engine::ApiVersion;

/// Label holding the sandbox id on every container (the upstream name, so tools keep working).
pub const LABEL_ID: &str = "opensandbox.io/id";
/// Label with the expiry at creation time, for humans reading `docker ps` (renewals are in the store).
pub const LABEL_EXPIRES_AT: &str = "opensandbox.io/expires-at";
/// Label marking objects Berth manages.
pub const LABEL_MANAGED_BY: &str = "berth.managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "berth";
/// Label with the per-create nonce on volumes Berth creates: only a volume carrying the nonce
/// recorded in the store was created by Berth (creating an existing volume succeeds silently).
pub const LABEL_NONCE: &str = "berth.nonce";
/// Label naming the server instance (see `DockerConfig::instance_id`).
pub const LABEL_INSTANCE: &str = "berth.instance";
/// Label naming the sandbox a volume was created for.
pub const LABEL_SANDBOX: &str = "berth.sandbox";

/// The container name of a sandbox.
pub fn container_name(id: &SandboxId) -> String {
    format!("sandbox-{id}")
}

/// The per-sandbox Docker volume of an NFS volume.
pub fn nfs_volume_name(id: &SandboxId, volume: &Volume) -> String {
    format!("berth-nfs-{id}-{}", volume.name)
}

/// Where one volume comes from, as Docker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A bind of a host path: a staging mount, or (with `allow_unstaged_paths`) a verified path.
    Bind(PathBuf),
    /// A Docker named volume, mounted whole.
    NamedVolume(String),
}

/// One volume ready to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMount {
    /// Where it appears in the sandbox.
    pub target: String,
    /// What Docker mounts there.
    pub source: MountSource,
    /// Read-only.
    pub read_only: bool,
}

/// How a volume is mounted when the runtime stages `host` and `pvc`+`subPath` volumes under
/// `staging_root`. NFS volumes are per-sandbox named volumes; pvc volumes without subPath are
/// mounted whole; ossfs volumes are their shared mount, staged per sandbox.
pub fn plan_mount(id: &SandboxId, volume: &Volume, staging_root: &std::path::Path) -> PlannedMount {
    let staged = || {
        MountSource::Bind(crate::safe_path::staging::staged_path(
            staging_root,
            id.as_str(),
            volume.name.as_str(),
        ))
    };
    let source = match &volume.source {
        VolumeSource::Host { .. } | VolumeSource::Ossfs(_) => staged(),
        VolumeSource::Pvc(_) if volume.sub_path.is_some() => staged(),
        VolumeSource::Pvc(pvc) => MountSource::NamedVolume(pvc.claim_name.to_string()),
        VolumeSource::Nfs(_) => MountSource::NamedVolume(nfs_volume_name(id, volume)),
    };
    PlannedMount {
        target: volume.mount_path.to_string(),
        source,
        read_only: volume.read_only,
    }
}

/// Labels on everything Berth creates for a sandbox.
pub fn base_labels(config: &DockerConfig) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = config
        .extra_labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels.insert(LABEL_INSTANCE.into(), config.instance_id());
    labels
}

/// The label filter selecting this instance's containers.
pub fn instance_filter(config: &DockerConfig) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{LABEL_MANAGED_BY}={MANAGED_BY}"),
            format!("{LABEL_INSTANCE}={}", config.instance_id()),
        ],
    )])
}

/// The create body of a sandbox's container. `mounts` are in mount order (parents first).
pub fn render_container(
    config: &DockerConfig,
    api: ApiVersion,
    id: &SandboxId,
    spec: &SandboxSpec,
    mounts: &[PlannedMount],
    expires_at: Option<DateTime<Utc>>,
) -> ContainerCreateBody {
    let mut labels = base_labels(config);
    labels.insert(LABEL_ID.into(), id.to_string());
    if let Some(expires_at) = expires_at {
        labels.insert(LABEL_EXPIRES_AT.into(), expires_at.to_rfc3339());
    }
    let ports: Vec<String> = config
        .published_ports
        .iter()
        .map(|p| format!("{p}/tcp"))
        .collect();
    let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = ports
        .iter()
        .map(|p| {
            let binding = PortBinding {
                host_ip: Some(config.publish_host.clone()),
                host_port: Some(String::new()),
            };
            (p.clone(), Some(vec![binding]))
        })
        .collect();
    let docker_mounts: Vec<Mount> = mounts
        .iter()
        .map(|m| {
            let (typ, source) = match &m.source {
                MountSource::Bind(path) => (MountType::BIND, path.display().to_string()),
                MountSource::NamedVolume(name) => (MountType::VOLUME, name.clone()),
            };
            // API >= 1.44: have the engine refuse rather than silently fall back to a
            // non-recursive read-only bind. (Staged binds are already read-only recursively;
            // this also covers unstaged paths.) Older engines would ignore the field: never sent.
            let bind_options =
                (m.read_only && typ == MountType::BIND && api.has_read_only_force_recursive())
                    .then(|| MountBindOptions {
                        read_only_force_recursive: Some(true),
                        ..Default::default()
                    });
            Mount {
                target: Some(m.target.clone()),
                source: Some(source),
                typ: Some(typ),
                read_only: Some(m.read_only),
                bind_options,
                ..Default::default()
            }
        })
        .collect();
    let host_config = HostConfig {
        network_mode: Some(config.network_mode.clone()),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        nano_cpus: spec
            .resources
            .cpu
            .as_ref()
            .map(|c| i64::try_from(c.nano_cpus()).unwrap_or(i64::MAX)),
        memory: spec
            .resources
            .memory
            .as_ref()
            .map(|m| i64::try_from(m.bytes()).unwrap_or(i64::MAX)),
        pids_limit: Some(config.pids_limit),
        cap_drop: (!config.drop_capabilities.is_empty()).then(|| config.drop_capabilities.clone()),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        mounts: (!docker_mounts.is_empty()).then_some(docker_mounts),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.uri.clone()),
        entrypoint: Some(spec.entrypoint.argv().to_vec()),
        env: (!spec.env.is_empty())
            .then(|| spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        exposed_ports: (!ports.is_empty()).then_some(ports),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// The local-driver volume that mounts an NFS export for one sandbox.
pub fn render_nfs_volume(
    config: &DockerConfig,
    id: &SandboxId,
    volume: &Volume,
    nfs: &NfsSource,
) -> VolumeCreateRequest {
    let server = nfs
        .server
        .as_str()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let mut options = vec![format!("addr={server}")];
    options.extend(nfs.options.iter().map(ToString::to_string));
    if volume.read_only {
        options.push("ro".into());
    }
    let mut labels = base_labels(config);
    labels.insert(LABEL_SANDBOX.into(), id.to_string());
    VolumeCreateRequest {
        name: Some(nfs_volume_name(id, volume)),
        driver: Some("local".into()),
        driver_opts: Some(HashMap::from([
            ("type".to_owned(), "nfs".to_owned()),
            ("o".to_owned(), options.join(",")),
            ("device".to_owned(), format!(":{}", nfs.path.as_str())),
        ])),
        labels: Some(labels),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::model::{HostPath, SandboxSpec};
    use berth_core::validate::StoragePolicy;
    use std::path::Path;

    fn config() -> DockerConfig {
        let mut config = DockerConfig::with_state_dir(PathBuf::from("/var/lib/berth"));
        config.published_ports = vec![8080];
        config
    }

    fn spec() -> SandboxSpec {
        let request = serde_json::json!({
            "image": {"uri": "team/agent:1", "auth": {"username": "robot", "password": "hunter2"}},
            "entrypoint": ["python", "-m", "agent"],
            "resourceLimits": {"cpu": "1500m", "memory": "512Mi"},
            "env": {"SESSION": "uid-1-session-1"},
            "timeout": 3600,
            "volumes": [
                {"name": "work", "pvc": {"claimName": "sessions"}, "mountPath": "/workspace", "subPath": "uid-1/session-1"},
                {"name": "cache", "pvc": {"claimName": "pip-cache"}, "mountPath": "/root/.cache"},
                {"name": "skills", "host": {"path": "/data/opensandbox/skills"}, "mountPath": "/skills", "readOnly": true},
                {"name": "archive", "nfs": {"server": "nas.example.org", "path": "/exports/archive", "options": ["vers=4.1", "hard"]},
                 "mountPath": "/workspace/archive", "readOnly": true},
                {"name": "bucket", "ossfs": {"bucket": "team-data", "endpoint": "oss-cn-hangzhou.aliyuncs.com",
                 "accessKeyId": "AKID-hunter3", "accessKeySecret": "hunter3"}, "mountPath": "/data/bucket", "subPath": "runs/1"}
            ]
        });
        let policy = StoragePolicy {
            allowed_host_roots: vec![HostPath::new("/data/opensandbox").unwrap()],
            max_timeout_seconds: None,
        };
        SandboxSpec::from_request(serde_json::from_value(request).unwrap(), &policy).unwrap()
    }

    fn rendered(api: ApiVersion) -> serde_json::Value {
        let id = SandboxId::new("abc123").unwrap();
        let spec = spec();
        let mounts: Vec<PlannedMount> = spec
            .volumes_in_mount_order()
            .into_iter()
            .map(|v| plan_mount(&id, v, Path::new("/var/lib/berth/mounts")))
            .collect();
        let expires = chrono::DateTime::from_timestamp(1_800_000_000, 0);
        serde_json::to_value(render_container(
            &config(),
            api,
            &id,
            &spec,
            &mounts,
            expires,
        ))
        .unwrap()
    }

    #[test]
    fn container_body_on_api_1_41() {
        let body = rendered(ApiVersion {
            major: 1,
            minor: 41,
        });
        assert!(
            !body.to_string().contains("hunter2"),
            "registry credentials are not part of the body"
        );
        assert!(
            !body.to_string().contains("hunter3"),
            "OSS credentials are not part of the body"
        );
        insta::assert_json_snapshot!("container_body_api_1_41", body);
    }

    /// A newer engine gets `ReadOnlyForceRecursive` on read-only binds; 1.41 never does.
    #[test]
    fn container_body_on_api_1_44_and_newer() {
        let old = rendered(ApiVersion {
            major: 1,
            minor: 41,
        });
        assert!(!old.to_string().contains("ReadOnlyForceRecursive"));
        let new = rendered(ApiVersion {
            major: 1,
            minor: 45,
        });
        insta::assert_json_snapshot!("container_body_api_1_45", new);
        assert_eq!(
            new.to_string().matches("ReadOnlyForceRecursive").count(),
            1,
            "only the read-only bind gets it"
        );
    }

    #[test]
    fn nfs_volume_options() {
        let id = SandboxId::new("abc123").unwrap();
        let spec = spec();
        let volume = &spec.volumes[3];
        let VolumeSource::Nfs(nfs) = &volume.source else {
            panic!("not nfs")
        };
        let body = serde_json::to_value(render_nfs_volume(&config(), &id, volume, nfs)).unwrap();
        insta::assert_json_snapshot!("nfs_volume", body);
    }

    #[test]
    fn nfs_ipv6_servers_lose_their_brackets() {
        let request = serde_json::json!({"image": {"uri": "a"}, "entrypoint": ["sh"], "resourceLimits": {},
            "volumes": [{"name": "n", "nfs": {"server": "[fd00::1]", "path": "/e"}, "mountPath": "/n"}]});
        let spec = SandboxSpec::from_request(
            serde_json::from_value(request).unwrap(),
            &StoragePolicy::default(),
        )
        .unwrap();
        let VolumeSource::Nfs(nfs) = &spec.volumes[0].source else {
            panic!("not nfs")
        };
        let body = render_nfs_volume(
            &config(),
            &SandboxId::new("x").unwrap(),
            &spec.volumes[0],
            nfs,
        );
        assert_eq!(body.driver_opts.unwrap()["o"], "addr=fd00::1");
    }
}
