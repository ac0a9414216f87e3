//! The rendered Pod, Secrets and claims, pinned per backend and option (insta snapshots), and the
//! refusals rendering can meet: clashes with the operator's template, options a Pod cannot carry.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeSet;

use berth_core::model::{HostPath, SandboxId, SandboxSpec};
use berth_core::runtime::CreateSandbox;
use berth_core::validate::StoragePolicy;
use berth_k8s::config::KubernetesConfig;
use berth_k8s::pod_state::PodState;
use berth_k8s::render::{PodPlan, render};
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
