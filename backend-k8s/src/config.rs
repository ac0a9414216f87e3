//! What the Kubernetes runtime is configured with (`[kubernetes]` and `[storage]`; see
//! ARCHITECTURE.md, "Configuration").

use std::collections::BTreeMap;
use std::time::Duration;

use berth_core::model::HostPath;
use k8s_openapi::api::core::v1::Pod;

/// Kubernetes runtime settings.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    /// Namespace of every sandbox Pod, claim and Secret (`kubernetes.namespace`).
    pub namespace: String,
    /// The kubeconfig file (`kubernetes.kubeconfig`); without one, the in-cluster
    /// configuration or the usual `KUBECONFIG` lookup.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The operator's Pod template (`kubernetes.pod_template_file`): its values hold unless the
    /// request sets them; Berth's volumes and mounts are appended to its own.
    pub pod_template: Option<Pod>,
    /// `imagePullPolicy` of the sandbox container (`kubernetes.image_pull_policy`).
    pub image_pull_policy: Option<String>,
    /// `runtimeClassName` (`kubernetes.runtime_class_name`), unless the template sets one.
    pub runtime_class_name: Option<String>,
    /// `serviceAccountName` (`kubernetes.service_account_name`), unless the template sets one;
    /// never Berth's own: without either, the Pod names none and mounts no token.
    pub service_account_name: Option<String>,
    /// The CSI driver of ossfs volumes (`kubernetes.ossfs_csi_driver`).
    pub ossfs_csi_driver: String,
    /// How long a create waits for Running (`kubernetes.start_timeout_seconds`).
    pub start_timeout: Duration,
    /// Longest wait for the answer to one API server call, watches aside
    /// (`kubernetes.api_timeout_seconds`).
    pub api_timeout: Duration,
    /// Grace period of a sandbox Pod's deletion (`kubernetes.delete_grace_period_seconds`).
    pub delete_grace_period: Duration,
    /// Roots under which host volumes may be mounted (`storage.allowed_host_paths`).
    pub allowed_host_paths: Vec<HostPath>,
    /// Capabilities dropped from every sandbox container (the same list as on Docker).
    pub drop_capabilities: Vec<String>,
    /// Labels added to every object Berth creates (tests use `berth.test=1`).
    pub extra_labels: BTreeMap<String, String>,
    /// This replica's name in the reaper's Lease (default: host name and process id).
    pub lease_identity: String,
    /// The image of the init container that prepares subPaths the way Docker does
    /// (`kubernetes.subpath_init_image`): every segment checked, links refused, missing
    /// directories created with their parent's owner, group and mode. It must have `sh`,
    /// `mkdir`, `chmod`, `chown` and `stat` on its `PATH` (busybox does). Unset: the kubelet
    /// alone resolves subPaths (see docs/kubernetes.md, "subPath").
    pub subpath_init_image: Option<String>,
    /// The image whose `/execd` and `/bootstrap.sh` every sandbox gets (`runtime.execd_image`):
    /// an init container of it copies both into an `emptyDir` at `/opt/opensandbox` with `cp`,
    /// which it must have on its `PATH` (see docs/kubernetes.md, "The execd agent"). Unset:
    /// sandboxes run their entrypoint alone.
    pub execd_image: Option<String>,
}

impl KubernetesConfig {
    /// Defaults for `namespace`.
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            kubeconfig: None,
            pod_template: None,
            image_pull_policy: None,
            runtime_class_name: None,
            service_account_name: None,
            ossfs_csi_driver: "ossplugin.csi.alibabacloud.com".to_owned(),
            start_timeout: Duration::from_secs(120),
            api_timeout: Duration::from_secs(30),
            delete_grace_period: Duration::from_secs(10),
            allowed_host_paths: Vec::new(),
            drop_capabilities: berth_core::runtime::DROPPED_CAPABILITIES
                .map(str::to_owned)
                .to_vec(),
            extra_labels: BTreeMap::new(),
            lease_identity: default_identity(),
            subpath_init_image: None,
            execd_image: None,
        }
    }
}

/// `<host name>-<process id>`: unique per replica (a Pod's host name is its name).
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "berth".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Reads the operator's Pod template (`kubernetes.pod_template_file`), YAML or JSON; unknown
/// fields are refused, so a typo in the template is an error at start, not a silent no-op.
pub fn read_pod_template(path: &std::path::Path) -> Result<Pod, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading it: {e}"))?;
    let value: serde_json::Value =
        serde_saphyr::from_str(&text).map_err(|e| format!("not YAML: {e}"))?;
    let pod: Pod = serde_json::from_value(value.clone()).map_err(|e| format!("not a Pod: {e}"))?;
    // k8s-openapi ignores unknown fields; compare what it kept with what was written.
    let kept = serde_json::to_value(&pod).map_err(|e| e.to_string())?;
    if let Some(lost) = first_unknown_field(&value, &kept, "") {
        return Err(format!("unknown field {lost}"));
    }
    Ok(pod)
}

/// The first field of `written` that `kept` does not have (a path such as `spec.contaners`).
fn first_unknown_field(
    written: &serde_json::Value,
    kept: &serde_json::Value,
    at: &str,
) -> Option<String> {
    use serde_json::Value;
    match (written, kept) {
        (Value::Object(w), Value::Object(k)) => w.iter().find_map(|(key, value)| {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            match k.get(key) {
                None if !value.is_null() => Some(path),
                None => None,
                Some(kept) => first_unknown_field(value, kept, &path),
            }
        }),
        (Value::Array(w), Value::Array(k)) => w
            .iter()
            .zip(k)
            .enumerate()
            .find_map(|(i, (w, k))| first_unknown_field(w, k, &format!("{at}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_read_and_typos_refused() {
        let dir = std::env::temp_dir().join(format!("berth-k8s-template-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("template.yaml");
        std::fs::write(
            &file,
            "metadata:\n  labels: {tier: sandbox}\nspec:\n  runtimeClassName: gvisor\n  containers:\n  - name: main\n",
        )
        .unwrap();
        let pod = read_pod_template(&file).unwrap();
        assert_eq!(
            pod.spec.unwrap().runtime_class_name.as_deref(),
            Some("gvisor")
        );
        std::fs::write(&file, "spec:\n  contaners: []\n").unwrap();
        let error = read_pod_template(&file).unwrap_err();
        assert!(error.contains("spec.contaners"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
