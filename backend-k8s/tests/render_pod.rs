//! The rendered Pod, Secrets and claims, pinned per backend and option (insta snapshots), and the
//! refusals rendering can meet: clashes with the operator's template, options a Pod cannot carry.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeSet;

use berth_core::model::{HostPath, SandboxId, SandboxSpec};
use berth_core::runtime::CreateSandbox;
use berth_core::validate::StoragePolicy;
use berth_k8s::config::KubernetesConfig;
use berth_k8s::pod_state::PodState;
use berth_k8s::render::{
    EXECD_BOOTSTRAP, EXECD_DIR, EXECD_INIT_CONTAINER, EXECD_PATH, EXECD_VOLUME, PodPlan,
    SUBPATH_EXIT_FAILED, SUBPATH_EXIT_MISSING, SUBPATH_EXIT_NOT_DIRECTORY, SUBPATH_EXIT_SYMLINK,
    SUBPATH_EXIT_UNSUPPORTED_TYPE, SUBPATH_INIT_CONTAINER, SUBPATH_SCRIPT, render,
};
use chrono::DateTime;
use serde_json::{Value, json};

fn config() -> KubernetesConfig {
    let mut config = KubernetesConfig::new("sandboxes");
    config.allowed_host_paths = vec![HostPath::new("/data/skills").unwrap()];
    config
}

fn create(request: Value) -> CreateSandbox {
    let policy = StoragePolicy {
        allowed_host_roots: vec![HostPath::new("/data/skills").unwrap()],
        max_timeout_seconds: None,
    };
    let mut body = json!({
        "image": {"uri": "registry.example:5000/team/agent:1"},
        "entrypoint": ["sleep", "600"],
        "resourceLimits": {"cpu": "500m", "memory": "256Mi"},
        "timeout": 3600,
    });
    body.as_object_mut()
        .unwrap()
        .extend(request.as_object().unwrap().clone());
    CreateSandbox {
        id: SandboxId::new("0b9c8d7e-1111-4222-8333-444455556666").unwrap(),
        spec: SandboxSpec::from_request(serde_json::from_value(body).unwrap(), &policy).unwrap(),
        created_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    }
}

fn plan(claims: &[&str], recursive: bool) -> PodPlan {
    PodPlan {
        claims_to_create: claims
            .iter()
            .map(|c| (*c).to_owned())
            .collect::<BTreeSet<_>>(),
        create_deadline: DateTime::from_timestamp(1_700_000_120, 0),
        recursive_read_only: recursive,
    }
}

#[test]
fn every_backend_with_subpaths_and_read_only() {
    let request = create(json!({
        "env": {"SESSION": "7"},
        "metadata": {"team": "ml"},
        "volumes": [
            {"name": "work", "pvc": {"claimName": "sessions", "storage": "5Gi", "storageClass": "fast"},
             "mountPath": "/workspace", "subPath": "uid-1/session-7"},
            {"name": "history", "pvc": {"claimName": "sessions"}, "mountPath": "/history",
             "subPath": "uid-1", "readOnly": true},
            {"name": "skills", "host": {"path": "/data/skills/python"}, "mountPath": "/skills",
             "subPath": "v2", "readOnly": true},
            {"name": "archive", "nfs": {"server": "nas.invalid", "path": "/exports/archive"},
             "mountPath": "/archive", "readOnly": true},
            {"name": "models", "ossfs": {"bucket": "models", "endpoint": "oss-cn-hangzhou.aliyuncs.com",
             "accessKeyId": "AKIDEXAMPLE", "accessKeySecret": "TOPSECRET", "version": "1.0",
             "options": ["max_stat_cache_size=1000"]}, "mountPath": "/models", "subPath": "llama"},
        ],
    }));
    let rendered = render(&config(), &request, &plan(&["sessions"], false)).unwrap();
    let shown = rendered.redacted_json();
    assert!(!shown.to_string().contains("TOPSECRET"), "{shown}");
    insta::assert_json_snapshot!("every_backend", shown);
    // The state on the Pod reads back as rendered, and reports non-recursive read-only.
    let back = PodState::from_annotations(rendered.pod.metadata.annotations.as_ref()).unwrap();
    assert_eq!(back, rendered.state);
    let modes: Vec<_> = back
        .volumes
        .iter()
        .map(|v| (v.name.as_str(), v.read_only_mode.as_str()))
        .collect();
    assert_eq!(
        modes,
        [
            ("work", "none"),
            ("history", "non-recursive"),
            ("skills", "non-recursive"),
            ("archive", "non-recursive"),
            ("models", "none"),
        ]
    );
    // Two volumes on one claim share one pod volume.
    let pod_volumes = rendered
        .pod
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .as_ref()
        .unwrap();
    assert_eq!(
        pod_volumes
            .iter()
            .filter(|v| v.persistent_volume_claim.is_some())
            .count(),
        1
    );
}

#[test]
fn recursive_read_only_where_the_server_has_it() {
    let request = create(json!({"volumes": [
        {"name": "skills", "host": {"path": "/data/skills"}, "mountPath": "/skills", "readOnly": true},
    ]}));
    let rendered = render(&config(), &request, &plan(&[], true)).unwrap();
    let mount = &rendered.pod.spec.as_ref().unwrap().containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (
            mount.recursive_read_only.as_deref(),
            mount.sub_path.as_deref()
        ),
        (Some("Enabled"), None)
    );
    assert_eq!(rendered.state.volumes[0].read_only_mode, "recursive");
}

#[test]
fn registry_credentials_become_an_owned_pull_secret() {
    let request = create(
        json!({"image": {"uri": "registry.example:5000/team/agent:1",
        "auth": {"username": "bot", "password": "hunter2"}}}),
    );
    let rendered = render(&config(), &request, &plan(&[], false)).unwrap();
    let secret = &rendered.secrets[0];
    let config_json = &secret.string_data.as_ref().unwrap()[".dockerconfigjson"];
    let parsed: Value = serde_json::from_str(config_json).unwrap();
    assert_eq!(
        parsed["auths"]["registry.example:5000"]["password"],
        "hunter2"
    );
    assert!(!rendered.redacted_json().to_string().contains("hunter2"));
    insta::assert_json_snapshot!("registry_secret", rendered.redacted_json());
}

fn template(yaml_like: Value) -> KubernetesConfig {
    let mut config = config();
    config.pod_template = Some(serde_json::from_value(yaml_like).unwrap());
    config.service_account_name = Some("from-config".into());
    config
}

#[test]
fn the_operator_template_is_the_base_and_volumes_are_appended() {
    let config = template(json!({
        "metadata": {"labels": {"tier": "sandbox"}, "annotations": {"team": "platform"}},
        "spec": {
            "serviceAccountName": "sandbox-runner",
            "runtimeClassName": "gvisor",
            "tolerations": [{"key": "sandboxes", "operator": "Exists"}],
            "volumes": [{"name": "cache", "emptyDir": {}}],
            "containers": [{
                "name": "main",
                "image": "ignored",
                "env": [{"name": "SESSION", "value": "template"}, {"name": "KEEP", "value": "1"}],
                "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                "securityContext": {"runAsUser": 1000, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }));
    let request = create(json!({
        "env": {"SESSION": "7"},
        "volumes": [{"name": "work", "pvc": {"claimName": "sessions"}, "mountPath": "/workspace"}],
    }));
    let rendered = render(&config, &request, &plan(&[], false)).unwrap();
    insta::assert_json_snapshot!("template_merge", rendered.redacted_json());
    let spec = rendered.pod.spec.as_ref().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("sandbox-runner"));
    assert_eq!(spec.automount_service_account_token, Some(false));
    let names: Vec<&str> = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(names, ["cache", "work"]);
}

#[test]
fn clashes_with_the_template_and_unexpressible_options_are_refused() {
    let config = template(json!({"spec": {
        "volumes": [{"name": "cache", "emptyDir": {}}],
        "containers": [{"name": "main", "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}],
    }}));
    let request = create(json!({"volumes": [
        {"name": "cache", "pvc": {"claimName": "sessions"}, "mountPath": "/workspace"},
        {"name": "other", "pvc": {"claimName": "sessions"}, "mountPath": "/cache"},
        {"name": "archive", "nfs": {"server": "nas.invalid", "path": "/exports/archive", "options": ["vers=4.1"]},
         "mountPath": "/archive"},
    ]}));
    let violations = render(&config, &request, &plan(&[], false)).unwrap_err();
    let body = violations.to_error_response();
    assert_eq!(body.code, "VOLUME::DUPLICATE_NAME");
    for needle in [
        "volumes[0].name",
        "kubernetes.pod_template_file",
        "volumes[1].mountPath",
        "\"cache\"",
        "volumes[2].nfs.options",
    ] {
        assert!(body.message.contains(needle), "{needle}: {}", body.message);
    }
}

fn with_init_image(mut config: KubernetesConfig) -> KubernetesConfig {
    config.subpath_init_image = Some("registry.example:5000/tools/busybox:1.36".into());
    config
}

/// Every volume with a mount subPath (host: the part below the allowed root and its own; pvc;
/// nfs) is prepared by one init container, first among the init containers, with each pod
/// volume mounted whole; ossfs (whose subPath is a bucket prefix) and volumes without a subPath
/// are left out.
#[test]
fn subpaths_are_prepared_by_an_init_container_when_configured() {
    let config = with_init_image(template(json!({"spec": {
        "initContainers": [{"name": "warm-cache", "image": "tools:1"}],
        "containers": [{"name": "main"}],
    }})));
    let request = create(json!({"volumes": [
        {"name": "work", "pvc": {"claimName": "sessions"}, "mountPath": "/workspace",
         "subPath": "uid-1/session-7"},
        {"name": "history", "pvc": {"claimName": "sessions"}, "mountPath": "/history",
         "subPath": "uid-1", "readOnly": true},
        {"name": "whole", "pvc": {"claimName": "other"}, "mountPath": "/whole"},
        {"name": "skills", "host": {"path": "/data/skills/python"}, "mountPath": "/skills",
         "subPath": "v2", "readOnly": true},
        {"name": "archive", "nfs": {"server": "nas.invalid", "path": "/exports/archive"},
         "mountPath": "/archive", "subPath": "2024", "readOnly": true},
        {"name": "models", "ossfs": {"bucket": "models", "endpoint": "oss-cn-hangzhou.aliyuncs.com",
         "accessKeyId": "AKIDEXAMPLE", "accessKeySecret": "TOPSECRET", "version": "1.0"},
         "mountPath": "/models", "subPath": "llama"},
    ]}));
    let rendered = render(&config, &request, &plan(&[], false)).unwrap();
    insta::assert_json_snapshot!("subpath_init_container", rendered.redacted_json());
    let spec = rendered.pod.spec.as_ref().unwrap();
    let init = spec.init_containers.as_ref().unwrap();
    let names: Vec<&str> = init.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [SUBPATH_INIT_CONTAINER, "warm-cache"]);
    let ours = &init[0];
    let args: Vec<&str> = ours
        .args
        .as_ref()
        .unwrap()
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(
        args,
        [
            "work",
            "/berth/volumes/work",
            "uid-1/session-7",
            "create",
            "history",
            "/berth/volumes/work",
            "uid-1",
            "create",
            "skills",
            "/berth/volumes/skills",
            "python/v2",
            "create",
            "archive",
            "/berth/volumes/archive",
            "2024",
            "check",
        ]
    );
    // The script is fixed: the subPaths are only ever arguments.
    let command = ours.command.as_ref().unwrap();
    assert_eq!(command[..2], ["sh", "-c"]);
    assert_eq!(command[2], SUBPATH_SCRIPT);
    assert!(!SUBPATH_SCRIPT.contains("session-7"));
    // Every exit status the runtime maps is one the script uses.
    for status in [
        SUBPATH_EXIT_SYMLINK,
        SUBPATH_EXIT_NOT_DIRECTORY,
        SUBPATH_EXIT_UNSUPPORTED_TYPE,
        SUBPATH_EXIT_MISSING,
        SUBPATH_EXIT_FAILED,
    ] {
        assert!(
            SUBPATH_SCRIPT.contains(&format!("fail {status} \"")),
            "{status}"
        );
    }
    let mounts: Vec<(&str, &str, Option<bool>, Option<&str>)> = ours
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.mount_path.as_str(),
                m.read_only,
                m.sub_path.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        mounts,
        [
            ("archive", "/berth/volumes/archive", Some(true), None),
            ("skills", "/berth/volumes/skills", None, None),
            ("work", "/berth/volumes/work", None, None),
        ]
    );
    let context = ours.security_context.as_ref().unwrap();
    let capabilities = context.capabilities.as_ref().unwrap();
    assert_eq!(
        (
            context.run_as_user,
            context.allow_privilege_escalation,
            context.read_only_root_filesystem,
            capabilities.drop.as_deref(),
            capabilities.add.as_deref(),
        ),
        (
            Some(0),
            Some(false),
            Some(true),
            Some(&["ALL".to_owned()][..]),
            Some(
                &[
                    "CHOWN".to_owned(),
                    "DAC_OVERRIDE".to_owned(),
                    "FSETID".to_owned()
                ][..]
            ),
        )
    );
    let resources = ours.resources.as_ref().unwrap();
    assert_eq!(resources.requests, resources.limits);
    assert_eq!(
        ours.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
}

#[test]
fn no_init_container_without_the_image_or_without_a_subpath() {
    let with_sub_path = create(json!({"volumes": [
        {"name": "work", "pvc": {"claimName": "sessions"}, "mountPath": "/workspace", "subPath": "a"},
    ]}));
    let rendered = render(&config(), &with_sub_path, &plan(&[], false)).unwrap();
    assert!(rendered.pod.spec.unwrap().init_containers.is_none());
    let without = create(json!({"volumes": [
        {"name": "work", "pvc": {"claimName": "sessions"}, "mountPath": "/workspace"},
        {"name": "skills", "host": {"path": "/data/skills"}, "mountPath": "/skills"},
        {"name": "models", "ossfs": {"bucket": "models", "endpoint": "oss-cn-hangzhou.aliyuncs.com",
         "accessKeyId": "AKIDEXAMPLE", "accessKeySecret": "TOPSECRET", "version": "1.0"},
         "mountPath": "/models", "subPath": "llama"},
    ]}));
    let rendered = render(&with_init_image(config()), &without, &plan(&[], false)).unwrap();
    assert!(rendered.pod.spec.unwrap().init_containers.is_none());
}

#[test]
fn a_template_init_container_with_berths_name_is_refused_naming_both() {
    let config = with_init_image(template(json!({"spec": {
        "initContainers": [{"name": "berth-subpaths", "image": "tools:1"}],
        "containers": [{"name": "main"}],
    }})));
    let request = create(json!({"volumes": [
        {"name": "skills", "host": {"path": "/data/skills/python"}, "mountPath": "/skills"},
    ]}));
    let body = render(&config, &request, &plan(&[], false))
        .unwrap_err()
        .to_error_response();
    assert_eq!(body.code, "SANDBOX::UNSUPPORTED_FEATURE");
    for needle in [
        "volumes[0].host.path",
        "kubernetes.pod_template_file",
        "kubernetes.subpath_init_image",
        "\"berth-subpaths\"",
    ] {
        assert!(body.message.contains(needle), "{needle}: {}", body.message);
    }
}

/// The rendered init container's command run by this machine's `sh` on a scratch directory
/// standing in for the volume: the rules themselves, without a cluster.
#[test]
fn the_init_script_follows_dockers_rules() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = std::env::temp_dir().join(format!("berth-subpath-script-{}", std::process::id()));
    let volume = dir.join("volume");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(&volume).unwrap();
    std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o2750)).unwrap();
    if std::fs::metadata(&volume).unwrap().uid() == 0 {
        // As root, hand the volume to someone else: the created directories must follow it.
        std::os::unix::fs::chown(&volume, Some(1000), Some(1000)).unwrap();
    }
    std::fs::create_dir(volume.join("target")).unwrap();
    std::os::unix::fs::symlink("target", volume.join("link")).unwrap();
    std::fs::write(volume.join("file"), "x").unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(volume.join("fifo"))
        .status()
        .unwrap();
    assert!(fifo.success());

    let run = |sub_path: &str, create_missing: bool| {
        let request = create(json!({"volumes": [
            {"name": "work", "nfs": {"server": "nas.invalid", "path": "/e"}, "mountPath": "/w",
             "subPath": sub_path, "readOnly": !create_missing},
        ]}));
        let rendered = render(&with_init_image(config()), &request, &plan(&[], false)).unwrap();
        let init = &rendered.pod.spec.unwrap().init_containers.unwrap()[0];
        let mut args = init.args.clone().unwrap();
        args[1] = volume.to_str().unwrap().to_owned();
        let command = init.command.as_ref().unwrap();
        let out = std::process::Command::new(&command[0])
            .args(&command[1..])
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, message) = run("uid-1/session-7", true);
    assert_eq!(code, 0, "{message}");
    let parent = std::fs::metadata(&volume).unwrap();
    for made in ["uid-1", "uid-1/session-7"] {
        let meta = std::fs::metadata(volume.join(made)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (parent.uid(), parent.gid(), 0o2750),
            "{made}"
        );
    }
    for (sub_path, create_missing, expected, needle) in [
        (
            "link",
            true,
            SUBPATH_EXIT_SYMLINK,
            "link is a symbolic link",
        ),
        (
            "link/deeper",
            true,
            SUBPATH_EXIT_SYMLINK,
            "link is a symbolic link",
        ),
        (
            "file/x",
            true,
            SUBPATH_EXIT_NOT_DIRECTORY,
            "file is not a directory",
        ),
        (
            "fifo",
            true,
            SUBPATH_EXIT_UNSUPPORTED_TYPE,
            "fifo is neither",
        ),
        (
            "absent",
            false,
            SUBPATH_EXIT_MISSING,
            "absent does not exist",
        ),
        ("file", true, 0, ""),
        ("-/x", true, 0, ""),
    ] {
        let (code, message) = run(sub_path, create_missing);
        assert_eq!(code, expected, "{sub_path}: {message}");
        if !needle.is_empty() {
            let last = message.lines().last().unwrap_or_default();
            assert!(
                last.starts_with("berth-subpaths: volume \"work\": ") && last.contains(needle),
                "{sub_path}: {message}"
            );
        }
    }
    assert!(
        !volume.join("target/deeper").exists(),
        "nothing made through the link"
    );
    assert!(volume.join("-/x").is_dir());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn with_execd(mut config: KubernetesConfig) -> KubernetesConfig {
    config.execd_image = Some("registry.example:5000/opensandbox/execd:v1".into());
    config
}

/// With `runtime.execd_image`: an init container of that image copies the agent and its launcher
/// into an emptyDir with `cp` alone, after Berth's subPath container and before the template's;
/// the sandbox runs its entrypoint through the launcher, with `EXECD` set over the template's and
/// the request's; the state keeps the entrypoint the client asked for.
#[test]
fn the_execd_agent_is_copied_in_by_an_init_container() {
    let config = with_execd(with_init_image(template(json!({"spec": {
        "initContainers": [{"name": "warm-cache", "image": "tools:1"}],
        "containers": [{"name": "main", "env": [{"name": "EXECD", "value": "/template/execd"}]}],
    }}))));
    let request = create(json!({
        "env": {"EXECD": "/request/execd", "SESSION": "7"},
        "volumes": [{"name": "work", "pvc": {"claimName": "sessions"}, "mountPath": "/workspace",
                     "subPath": "uid-1"}],
    }));
    let rendered = render(&config, &request, &plan(&[], false)).unwrap();
    insta::assert_json_snapshot!("execd_agent", rendered.redacted_json());
    let spec = rendered.pod.spec.as_ref().unwrap();
    let init = spec.init_containers.as_ref().unwrap();
    let names: Vec<&str> = init.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [SUBPATH_INIT_CONTAINER, EXECD_INIT_CONTAINER, "warm-cache"]
    );
    let copier = &init[1];
    assert_eq!(
        copier.image.as_deref(),
        Some("registry.example:5000/opensandbox/execd:v1")
    );
    assert_eq!(
        copier.command.as_deref().unwrap(),
        ["cp", "/execd", "/bootstrap.sh", EXECD_DIR]
    );
    let copier_mounts: Vec<(&str, &str, Option<bool>)> = copier
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
        .collect();
    assert_eq!(copier_mounts, [(EXECD_VOLUME, EXECD_DIR, None)]);
    let volume = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == EXECD_VOLUME)
        .unwrap();
    assert!(volume.empty_dir.is_some(), "{volume:?}");
    let sandbox = &spec.containers[0];
    assert_eq!(
        sandbox.command.as_deref().unwrap(),
        [EXECD_BOOTSTRAP, "sleep", "600"]
    );
    assert_eq!(sandbox.args, None);
    let env: Vec<(&str, Option<&str>)> = sandbox
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(env, [("SESSION", Some("7")), ("EXECD", Some(EXECD_PATH))]);
    let sandbox_mounts: Vec<(&str, &str)> = sandbox
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    assert_eq!(
        sandbox_mounts,
        [("work", "/workspace"), (EXECD_VOLUME, EXECD_DIR)]
    );
    assert_eq!(rendered.state.entrypoint, ["sleep", "600"]);
    // Without the setting, none of it.
    let plain = render(&config_without_execd(), &request, &plan(&[], false)).unwrap();
    let plain = plain.pod.spec.unwrap();
    assert_eq!(
        plain.containers[0].command.as_deref().unwrap(),
        ["sleep", "600"]
    );
    assert!(plain.init_containers.is_none());
    assert!(
        plain
            .volumes
            .iter()
            .flatten()
            .all(|v| v.name != EXECD_VOLUME)
    );
}

fn config_without_execd() -> KubernetesConfig {
    let config = config();
    assert!(config.execd_image.is_none());
    config
}

#[test]
fn names_and_paths_the_agent_needs_are_not_shared() {
    let config = with_execd(template(json!({"spec": {
        "volumes": [{"name": "berth-execd", "emptyDir": {}}, {"name": "tools", "emptyDir": {}}],
        "initContainers": [{"name": "berth-execd", "image": "tools:1"}],
        "containers": [{"name": "main", "volumeMounts": [{"name": "tools", "mountPath": "/opt/opensandbox"}]}],
    }})));
    let request = create(json!({"volumes": [
        {"name": "berth-execd", "pvc": {"claimName": "sessions"}, "mountPath": "/workspace"},
    ]}));
    let body = render(&config, &request, &plan(&[], false))
        .unwrap_err()
        .to_error_response();
    assert_eq!(body.code, "VOLUME::DUPLICATE_NAME");
    for needle in [
        "volumes[0].name: \"berth-execd\" is the name of the volume that holds the execd agent",
        "runtime.execd_image: this server cannot inject the execd agent: the operator's pod template (kubernetes.pod_template_file) has a volume named \"berth-execd\"",
        "mounts its volume \"tools\" at /opt/opensandbox",
        "has an init container named \"berth-execd\"",
    ] {
        assert!(body.message.contains(needle), "{needle}: {}", body.message);
    }
}
