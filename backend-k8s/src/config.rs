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
    /// Grace period of a sandbox Pod's deletion (`kubernetes.delete_grace_period_seconds`).
    pub delete_grace_period: Duration,
    /// Roots under which host volumes may be mounted (`storage.allowed_host_paths`).
    pub allowed_host_paths: Vec<HostPath>,
    /// Capabilities dropped from every sandbox container (the same list as on Docker).
    pub drop_capabilities: Vec<String>,
    /// Labels added to every object Berth creates (tests use `berth.test=1`).
    pub extra_labels: BTreeMap<String, String>,
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
            delete_grace_period: Duration::from_secs(10),
            allowed_host_paths: Vec::new(),
            drop_capabilities: [
                "AUDIT_WRITE",
                "MKNOD",
                "NET_ADMIN",
                "NET_RAW",
                "SYS_ADMIN",
                "SYS_MODULE",
                "SYS_PTRACE",
                "SYS_TIME",
                "SYS_TTY_CONFIG",
            ]
            .map(str::to_owned)
            .to_vec(),
            extra_labels: BTreeMap::new(),
        }
    }
}
