//! Server configuration (ARCHITECTURE.md, "Configuration"): one TOML file (`--config` or
//! `BERTH_CONFIG`), every key overridable from the environment as `BERTH_<SECTION>__<KEY>`
//! (`BERTH_SERVER__PORT=9090`), the environment's text typed by the field it sets. Defaults start
//! on a laptop with Docker on 127.0.0.1:8080. Unknown keys are errors, and every error names the
//! key, so a typo never silently changes nothing.

mod layers;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use self::layers::Layer;

/// The whole configuration. It serializes (as the file spells it) so that the tests can hold the
/// example file and `docs/configuration.md` to it; it holds the API key, so it is never logged.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
    /// `[docker]`.
    pub docker: DockerSection,
    /// `[storage]`.
    pub storage: StorageSection,
    /// `[kubernetes]`.
    pub kubernetes: KubernetesSection,
    /// `[proxy]`.
    pub proxy: ProxySection,
}

/// `[proxy]`: the server proxy to sandboxes' ports (`/v1/sandboxes/{id}/proxy/{port}/...`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    /// Longest wait for a connection to a sandbox's port (then 504).
    pub connect_timeout_seconds: u64,
    /// How long a pooled connection to a sandbox may stay unused before it is closed.
    pub idle_timeout_seconds: u64,
    /// Most proxied requests and WebSockets open at once to one sandbox (then 429).
    pub max_connections_per_sandbox: u64,
}

impl Default for ProxySection {
    fn default() -> Self {
        Self {
            connect_timeout_seconds: 5,
            idle_timeout_seconds: 90,
            max_connections_per_sandbox: 256,
        }
    }
}

/// `[kubernetes]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesSection {
    /// Namespace of sandbox Pods, claims and Secrets.
    pub namespace: String,
    /// Kubeconfig file; without one, the in-cluster configuration (or `KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// The operator's Pod template (YAML or JSON).
    pub pod_template_file: Option<PathBuf>,
    /// How long a create waits for its Pod to run.
    pub start_timeout_seconds: u64,
    /// Longest wait for the answer to one API server call (watches aside).
    pub api_timeout_seconds: u64,
    /// `Always`, `IfNotPresent` or `Never`; unset: the cluster's default.
    pub image_pull_policy: Option<String>,
    /// `runtimeClassName` of sandbox Pods (unless the template sets one).
    pub runtime_class_name: Option<String>,
    /// `serviceAccountName` of sandbox Pods (unless the template sets one).
    pub service_account_name: Option<String>,
    /// CSI driver of ossfs volumes.
    pub ossfs_csi_driver: String,
    /// Grace period of a sandbox Pod's deletion.
    pub delete_grace_period_seconds: u64,
    /// Image of the init container that prepares subPaths as Docker does (links refused,
    /// missing directories made with their parent's owner, group and mode); it must have `sh`,
    /// `mkdir`, `chmod`, `chown` and `stat`. Unset: the kubelet alone resolves subPaths.
    pub subpath_init_image: Option<String>,
    /// Labels added to every Pod, Secret and claim Berth makes (e.g. for a cost report or a
    /// network policy); Berth's own label keys may not be set here.
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Default for KubernetesSection {
    fn default() -> Self {
        Self {
            namespace: "default".into(),
            kubeconfig: None,
            pod_template_file: None,
            start_timeout_seconds: 120,
            api_timeout_seconds: 30,
            image_pull_policy: None,
            runtime_class_name: None,
            service_account_name: None,
            ossfs_csi_driver: "ossplugin.csi.alibabacloud.com".into(),
            delete_grace_period_seconds: 10,
            subpath_init_image: None,
            labels: std::collections::BTreeMap::new(),
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub host: IpAddr,
    /// Port to listen on.
    pub port: u16,
    /// The `OPEN-SANDBOX-API-KEY` value clients must send; without one the server only binds loopback.
    pub api_key: Option<String>,
    /// Serve `/metrics` without the key.
    pub metrics_public: bool,
    /// Longest `timeout` a create may ask for.
    pub max_sandbox_timeout_seconds: Option<u64>,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `berth_api=debug`.
    pub log_level: String,
    /// Longest a mutating call may take, image pulls included.
    pub request_deadline_seconds: u64,
    /// Longest shutdown waits for open connections and calls in flight.
    pub shutdown_timeout_seconds: u64,
    /// Longest a client may take to send a request's headers, from the connection's start.
    pub header_read_timeout_seconds: u64,
    /// Most client connections open at once; past it new ones are closed at once. Each costs
    /// about 15 KiB of memory (measured by `cargo xtask harden load`) and a file descriptor.
    pub max_connections: usize,
    /// The server's address as clients reach it (`https://berth.example.com`, optionally with a
    /// path prefix), for the proxy endpoints `endpoints` returns; unset: the request's `Host`.
    pub public_url: Option<String>,
    /// Keys that sign endpoint routes (`?expires=`): the first signs, any verifies (rotation).
    /// Empty: one key generated on first use and kept in `<state_dir>/route-signing.key`.
    pub route_signing_keys: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8080,
            api_key: None,
            metrics_public: false,
            max_sandbox_timeout_seconds: Some(86_400),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            request_deadline_seconds: 600,
            shutdown_timeout_seconds: 30,
            header_read_timeout_seconds: 30,
            max_connections: 10_000,
            public_url: None,
            route_signing_keys: Vec::new(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[runtime]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Which runtime runs sandboxes.
    #[serde(rename = "type")]
    pub kind: RuntimeKind,
    /// Image whose `/execd` and `/bootstrap.sh` every sandbox gets (upstream's key): the
    /// entrypoint is started through the launcher, which starts the agent first. Unset: none.
    pub execd_image: Option<String>,
}

/// The runtimes a server can be configured with (the in-memory test runtime is not one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Docker Engine.
    #[default]
    Docker,
    /// Kubernetes: a Pod per sandbox.
    Kubernetes,
}

impl RuntimeKind {
    /// The value of `runtime.type`, which is also the name of the cargo feature that builds it in.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Kubernetes => "kubernetes",
        }
    }
}

/// The runtimes this `berth-server` was built with: one cargo feature each.
pub const COMPILED_RUNTIMES: &[RuntimeKind] = &[
    #[cfg(feature = "docker")]
    RuntimeKind::Docker,
    #[cfg(feature = "kubernetes")]
    RuntimeKind::Kubernetes,
];

/// `[docker]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerSection {
    /// Engine address; default `DOCKER_HOST` or the local socket.
    pub host: Option<String>,
    /// Network of sandboxes.
    pub network_mode: String,
    /// Address published ports bind to.
    pub publish_host: String,
    /// Container ports to publish.
    pub published_ports: Vec<u16>,
    /// The server proxy connects to published ports, not to containers' addresses.
    pub proxy_via_published_ports: bool,
    /// Capabilities dropped from sandboxes.
    pub drop_capabilities: Option<Vec<String>>,
    /// Process limit per sandbox.
    pub pids_limit: i64,
    /// Labels added to every container and volume Berth creates.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Longest wait for one Engine API call.
    pub engine_timeout_seconds: u64,
    /// Longest an image pull may take as a whole.
    pub image_pull_timeout_seconds: u64,
}

impl Default for DockerSection {
    fn default() -> Self {
        Self {
            host: None,
            network_mode: "bridge".into(),
            publish_host: "127.0.0.1".into(),
            published_ports: Vec::new(),
            proxy_via_published_ports: false,
            drop_capabilities: None,
            pids_limit: 4096,
            labels: std::collections::BTreeMap::new(),
            engine_timeout_seconds: 60,
            image_pull_timeout_seconds: 300,
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// Roots host volumes may be under; empty disables host volumes.
    pub allowed_host_paths: Vec<PathBuf>,
    /// Server state: store and staging mounts.
    pub state_dir: PathBuf,
    /// Hand verified but unstaged paths to the engine when the server cannot mount.
    pub allow_unstaged_paths: bool,
    /// Where shared ossfs mounts live, one directory per mount (default `<state_dir>/ossfs`).
    pub ossfs_mount_root: Option<PathBuf>,
    /// The ossfs 1.x helper: a path, or a name looked up in `PATH`.
    pub ossfs_command: PathBuf,
    /// The ossfs 2.x helper: a path, or a name looked up in `PATH`.
    pub ossfs2_command: PathBuf,
    /// How long one ossfs mount may take.
    pub ossfs_mount_timeout_seconds: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        let state_dir = if running_as_root() {
            PathBuf::from("/var/lib/berth")
        } else {
            std::env::var_os("HOME").map_or_else(
                || PathBuf::from(".berth"),
                |h| PathBuf::from(h).join(".local/state/berth"),
            )
        };
        Self {
            allowed_host_paths: Vec::new(),
            state_dir,
            allow_unstaged_paths: false,
            ossfs_mount_root: None,
            ossfs_command: PathBuf::from("ossfs"),
            ossfs2_command: PathBuf::from("ossfs2"),
            ossfs_mount_timeout_seconds: 30,
        }
    }
}

/// Whether `BERTH_<rest>=<value>` has the shape of the variables the kubelet sets for a Service
/// named `berth` (`BERTH_SERVICE_HOST`, `BERTH_SERVICE_PORT[_<NAME>]`, `BERTH_PORT=tcp://…`,
/// `BERTH_PORT_<n>_<PROTO>[_…]`), so the error can say where it comes from.
fn is_service_link(rest: &str, value: &str) -> bool {
    rest == "SERVICE_HOST"
        || rest.starts_with("SERVICE_PORT")
        || (rest == "PORT"
            && ["tcp://", "udp://", "sctp://"]
                .iter()
                .any(|p| value.starts_with(p)))
        || rest
            .strip_prefix("PORT_")
            .is_some_and(|p| p.starts_with(|c: char| c.is_ascii_digit()))
}

/// `key`'s value must lie in `range`.
fn in_range(
    key: &str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "{key} = {value}: must be {} to {}",
            range.start(),
            range.end()
        )))
    }
}

fn running_as_root() -> bool {
    // Without a libc call: root owns /proc/self.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A configuration problem; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Reads the file (if any) and applies `env` overrides (`BERTH_<SECTION>__<KEY>`), for a
    /// server built with [`COMPILED_RUNTIMES`].
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::load_for(file, env, COMPILED_RUNTIMES)
    }

    /// [`Config::load`] for a server built with `compiled` runtimes.
    fn load_for(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
        compiled: &[RuntimeKind],
    ) -> Result<Self, ConfigError> {
        let file_table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("reading {}: {e}", path.display())))?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        let mut layers = Layer::from_file(file_table);
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("BERTH_") else {
                continue;
            };
            // The file's name, and the `berth` command's own variables (BERTH_CLI_CONFIG), which
            // a shell that runs both may well have set.
            if rest == "CONFIG" || rest.starts_with("CLI_") {
                continue;
            }
            let Some((section, key)) = rest.split_once("__") else {
                return Err(ConfigError(if is_service_link(rest, &value) {
                    format!(
                        "environment variable {name}: a Kubernetes service link (a Service named `berth` in the Pod's namespace), not a setting; set `enableServiceLinks: false` in the Pod spec, as deploy/kubernetes does"
                    )
                } else {
                    format!(
                        "environment variable {name}: use BERTH_<SECTION>__<KEY>, e.g. BERTH_SERVER__PORT"
                    )
                }));
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            // The text stays text here: the field it lands in decides its type.
            layers
                .set_env(section, key, name.clone(), value)
                .map_err(|e| ConfigError(format!("environment variable {name}: {e}")))?;
        }
        let config: Config = serde_path_to_error::deserialize(layers)
            .map_err(|e| ConfigError(format!("key {}: {}", e.path(), e.inner())))?;
        config.check(compiled)?;
        Ok(config)
    }

    /// Cross-key rules; `compiled` are the runtimes this server was built with.
    fn check(&self, compiled: &[RuntimeKind]) -> Result<(), ConfigError> {
        if self.server.api_key.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError(
                "server.api_key: must not be empty (omit it to run without a key)".into(),
            ));
        }
        if self.server.api_key.is_none() && !self.server.host.is_loopback() {
            return Err(ConfigError(format!(
                "server.host = {}: without server.api_key the server only listens on a loopback address",
                self.server.host
            )));
        }
        if let Some(max) = self.server.max_sandbox_timeout_seconds
            && max < 60
        {
            return Err(ConfigError(
                "server.max_sandbox_timeout_seconds: must be at least 60".into(),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.server.log_level) {
            return Err(ConfigError(format!(
                "server.log_level = {:?}: not a log filter ({e}); e.g. \"info\" or \"info,berth_api=debug\"",
                self.server.log_level
            )));
        }
        in_range(
            "server.request_deadline_seconds",
            self.server.request_deadline_seconds,
            1..=86_400,
        )?;
        in_range(
            "server.shutdown_timeout_seconds",
            self.server.shutdown_timeout_seconds,
            1..=3600,
        )?;
        in_range(
            "server.header_read_timeout_seconds",
            self.server.header_read_timeout_seconds,
            1..=3600,
        )?;
        in_range(
            "server.max_connections",
            self.server.max_connections as u64,
            1..=1_000_000,
        )?;
        in_range(
            "docker.engine_timeout_seconds",
            self.docker.engine_timeout_seconds,
            1..=3600,
        )?;
        in_range(
            "docker.image_pull_timeout_seconds",
            self.docker.image_pull_timeout_seconds,
            1..=86_400,
        )?;
        self.check_proxy()?;
        if self
            .runtime
            .execd_image
            .as_ref()
            .is_some_and(|i| i.trim().is_empty())
        {
            return Err(ConfigError(
                "runtime.execd_image: empty; leave it unset to inject no agent".into(),
            ));
        }
        let kind = self.runtime.kind;
        if !compiled.contains(&kind) {
            let name = kind.name();
            return Err(ConfigError(format!(
                "runtime.type = \"{name}\": this berth-server was built without the \"{name}\" feature; rebuild with --features {name}"
            )));
        }
        self.check_kubernetes()?;
        // A create's own bounds (pull, then engine calls) must end before its request's deadline,
        // so the runtime, not the deadline, reports what went wrong.
        let create_bound =
            self.docker.image_pull_timeout_seconds + self.docker.engine_timeout_seconds;
        if kind == RuntimeKind::Docker && self.server.request_deadline_seconds <= create_bound {
            return Err(ConfigError(format!(
                "server.request_deadline_seconds = {}: must exceed docker.image_pull_timeout_seconds + docker.engine_timeout_seconds ({create_bound})",
                self.server.request_deadline_seconds
            )));
        }
        if let Some(root) = &self.storage.ossfs_mount_root
            && root
                .to_str()
                .is_none_or(|p| berth_core::model::HostPath::new(p).is_err())
        {
            return Err(ConfigError(format!(
                "storage.ossfs_mount_root = {}: must be an absolute, normalised path",
                root.display()
            )));
        }
        if !(1..=600).contains(&self.storage.ossfs_mount_timeout_seconds) {
            return Err(ConfigError(
                "storage.ossfs_mount_timeout_seconds: must be 1 to 600".into(),
            ));
        }
        for (i, path) in self.storage.allowed_host_paths.iter().enumerate() {
            let ok = path
                .to_str()
                .is_some_and(|p| berth_core::model::HostPath::new(p).is_ok());
            if !ok {
                return Err(ConfigError(format!(
                    "storage.allowed_host_paths[{i}] = {}: must be an absolute, normalised path",
                    path.display()
                )));
            }
        }
        if !self.storage.state_dir.is_absolute() {
            return Err(ConfigError(format!(
                "storage.state_dir = {}: must be absolute",
                self.storage.state_dir.display()
            )));
        }
        Ok(())
    }

    /// The rules of `[proxy]`, `server.public_url` and `server.route_signing_keys`.
    fn check_proxy(&self) -> Result<(), ConfigError> {
        in_range(
            "proxy.connect_timeout_seconds",
            self.proxy.connect_timeout_seconds,
            1..=300,
        )?;
        in_range(
            "proxy.idle_timeout_seconds",
            self.proxy.idle_timeout_seconds,
            1..=3600,
        )?;
        in_range(
            "proxy.max_connections_per_sandbox",
            self.proxy.max_connections_per_sandbox,
            1..=100_000,
        )?;
        if let Some(url) = &self.server.public_url
            && let Err(why) = crate::proxy::public_base(url)
        {
            return Err(ConfigError(format!("server.public_url = {url:?}: {why}")));
        }
        for (i, key) in self.server.route_signing_keys.iter().enumerate() {
            if key.len() < crate::route_signing::MIN_KEY_LEN {
                return Err(ConfigError(format!(
                    "server.route_signing_keys[{i}]: must be at least {} characters (e.g. `openssl rand -hex 32`)",
                    crate::route_signing::MIN_KEY_LEN
                )));
            }
        }
        Ok(())
    }

    /// The server proxy's settings, and how endpoint routes are signed.
    pub fn proxy_options(&self) -> crate::proxy::ProxyOptions {
        let keys = if self.server.route_signing_keys.is_empty() {
            crate::route_signing::KeySource::File(
                self.storage
                    .state_dir
                    .join(crate::route_signing::KEY_FILE_NAME),
            )
        } else {
            crate::route_signing::KeySource::Configured(self.server.route_signing_keys.clone())
        };
        crate::proxy::ProxyOptions {
            connect_timeout: Duration::from_secs(self.proxy.connect_timeout_seconds),
            idle_timeout: Duration::from_secs(self.proxy.idle_timeout_seconds),
            max_connections_per_sandbox: usize::try_from(self.proxy.max_connections_per_sandbox)
                .unwrap_or(usize::MAX),
            public_url: self
                .server
                .public_url
                .as_deref()
                .and_then(|u| crate::proxy::public_base(u).ok()),
            route_keys: keys,
        }
    }

    /// The `[kubernetes]` rules.
    fn check_kubernetes(&self) -> Result<(), ConfigError> {
        let k = &self.kubernetes;
        if !berth_core::model::is_dns_label(&k.namespace) {
            return Err(ConfigError(format!(
                "kubernetes.namespace = {:?}: must be a DNS label (lowercase letters, digits, '-', at most 63)",
                k.namespace
            )));
        }
        in_range(
            "kubernetes.start_timeout_seconds",
            k.start_timeout_seconds,
            1..=3600,
        )?;
        in_range(
            "kubernetes.api_timeout_seconds",
            k.api_timeout_seconds,
            1..=3600,
        )?;
        in_range(
            "kubernetes.delete_grace_period_seconds",
            k.delete_grace_period_seconds,
            0..=3600,
        )?;
        if let Some(policy) = &k.image_pull_policy
            && !["Always", "IfNotPresent", "Never"].contains(&policy.as_str())
        {
            return Err(ConfigError(format!(
                "kubernetes.image_pull_policy = {policy:?}: must be Always, IfNotPresent or Never"
            )));
        }
        for (key, value) in &k.labels {
            if let Err(why) = kubernetes_label(key, value) {
                return Err(ConfigError(format!(
                    "kubernetes.labels.{key} = {value:?}: {why}"
                )));
            }
        }
        if let Some(image) = &k.subpath_init_image
            && (image.is_empty() || image.contains(char::is_whitespace))
        {
            return Err(ConfigError(format!(
                "kubernetes.subpath_init_image = {image:?}: must be an image reference (no spaces), e.g. \"busybox:1.36\""
            )));
        }
        if self.runtime.kind == RuntimeKind::Kubernetes
            && self.server.request_deadline_seconds <= k.start_timeout_seconds
        {
            return Err(ConfigError(format!(
                "server.request_deadline_seconds = {}: must exceed kubernetes.start_timeout_seconds ({})",
                self.server.request_deadline_seconds, k.start_timeout_seconds
            )));
        }
        Ok(())
    }

    /// The Kubernetes runtime's settings; reads the Pod template file.
    #[cfg(feature = "kubernetes")]
    pub fn kubernetes_config(&self) -> Result<berth_k8s::config::KubernetesConfig, ConfigError> {
        let k = &self.kubernetes;
        let mut config = berth_k8s::config::KubernetesConfig::new(&k.namespace);
        config.kubeconfig.clone_from(&k.kubeconfig);
        if let Some(path) = &k.pod_template_file {
            config.pod_template =
                Some(berth_k8s::config::read_pod_template(path).map_err(|e| {
                    ConfigError(format!(
                        "kubernetes.pod_template_file = {}: {e}",
                        path.display()
                    ))
                })?);
        }
        config.image_pull_policy.clone_from(&k.image_pull_policy);
        config.runtime_class_name.clone_from(&k.runtime_class_name);
        config
            .service_account_name
            .clone_from(&k.service_account_name);
        config.ossfs_csi_driver.clone_from(&k.ossfs_csi_driver);
        config.start_timeout = Duration::from_secs(k.start_timeout_seconds);
        config.api_timeout = Duration::from_secs(k.api_timeout_seconds);
        config.delete_grace_period = Duration::from_secs(k.delete_grace_period_seconds);
        config.allowed_host_paths = self.policy().allowed_host_roots;
        config.subpath_init_image.clone_from(&k.subpath_init_image);
        config.execd_image.clone_from(&self.runtime.execd_image);
        config.extra_labels.extend(k.labels.clone());
        if config.subpath_init_image.is_some()
            && let Some(path) = &k.pod_template_file
            && config
                .pod_template
                .as_ref()
                .and_then(|p| p.spec.as_ref())
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.name == berth_k8s::render::SUBPATH_INIT_CONTAINER)
                })
        {
            return Err(ConfigError(format!(
                "kubernetes.pod_template_file = {}: its init container \"{}\" has the name of the one Berth adds for kubernetes.subpath_init_image; rename it",
                path.display(),
                berth_k8s::render::SUBPATH_INIT_CONTAINER
            )));
        }
        Ok(config)
    }

    /// `server.request_deadline_seconds`.
    pub const fn request_deadline(&self) -> Duration {
        Duration::from_secs(self.server.request_deadline_seconds)
    }

    /// `server.shutdown_timeout_seconds`.
    pub const fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.server.shutdown_timeout_seconds)
    }

    /// The bounds on client connections (`server.header_read_timeout_seconds`,
    /// `server.max_connections`).
    pub const fn serve_options(&self) -> crate::serve::ServeOptions {
        crate::serve::ServeOptions {
            header_read_timeout: Duration::from_secs(self.server.header_read_timeout_seconds),
            max_connections: self.server.max_connections,
        }
    }

    /// The Docker runtime's settings.
    #[cfg(feature = "docker")]
    pub fn docker_config(&self) -> berth_docker::config::DockerConfig {
        let mut docker =
            berth_docker::config::DockerConfig::with_state_dir(self.storage.state_dir.clone());
        docker.host = self.docker.host.clone();
        docker.network_mode = self.docker.network_mode.clone();
        docker.publish_host = self.docker.publish_host.clone();
        docker.published_ports = self.docker.published_ports.clone();
        docker.proxy_via_published_ports = self.docker.proxy_via_published_ports;
        if let Some(caps) = &self.docker.drop_capabilities {
            docker.drop_capabilities = caps.clone();
        }
        docker.pids_limit = self.docker.pids_limit;
        docker.extra_labels = self.docker.labels.clone();
        docker.allowed_host_paths = self.storage.allowed_host_paths.clone();
        docker.allow_unstaged_paths = self.storage.allow_unstaged_paths;
        if let Some(root) = &self.storage.ossfs_mount_root {
            docker.ossfs.mount_root = root.clone();
        }
        docker.ossfs.command_v1 = self.storage.ossfs_command.clone();
        docker.ossfs.command_v2 = self.storage.ossfs2_command.clone();
        docker.ossfs.mount_timeout = Duration::from_secs(self.storage.ossfs_mount_timeout_seconds);
        docker.engine_timeout = Duration::from_secs(self.docker.engine_timeout_seconds);
        docker.image_pull_timeout = Duration::from_secs(self.docker.image_pull_timeout_seconds);
        docker.execd_image.clone_from(&self.runtime.execd_image);
        docker
    }

    /// The validation policy.
    pub fn policy(&self) -> berth_core::validate::StoragePolicy {
        berth_core::validate::StoragePolicy {
            allowed_host_roots: self
                .storage
                .allowed_host_paths
                .iter()
                .filter_map(|p| berth_core::model::HostPath::new(p.to_str()?).ok())
                .collect(),
            max_timeout_seconds: self.server.max_sandbox_timeout_seconds,
        }
    }
}

/// The labels the Kubernetes runtime sets itself (`backend-k8s/src/render.rs`; a test keeps the
/// two lists equal). Spelled out here because the check runs in servers built without it too.
const BERTH_K8S_LABELS: [&str; 4] = [
    "opensandbox.io/id",
    "berth.managed-by",
    "berth.made-for",
    "berth.delete-with-sandboxes",
];

/// Whether `key: value` is a label the API server accepts and not one of Berth's own (which
/// say what a Pod is; an operator's value there would mislabel every sandbox).
fn kubernetes_label(key: &str, value: &str) -> Result<(), String> {
    let name_part = |part: &str| {
        !part.is_empty()
            && part.len() <= 63
            && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            && part.ends_with(|c: char| c.is_ascii_alphanumeric())
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let (prefix, name) = key
        .rsplit_once('/')
        .map_or((None, key), |(p, n)| (Some(p), n));
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    if !prefix_ok || !name_part(name) {
        return Err("not a valid label key ([prefix/]name: a DNS subdomain, then up to 63 letters, digits, '-', '_', '.')".into());
    }
    if !(value.is_empty() || name_part(value)) {
        return Err("not a valid label value (up to 63 letters, digits, '-', '_', '.', alphanumeric at both ends)".into());
    }
    if BERTH_K8S_LABELS.contains(&key) {
        return Err("one of Berth's own labels".into());
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_run_on_loopback_8080_with_docker() {
        let c = load(env(&[])).unwrap();
        assert_eq!(
            (c.server.host.to_string(), c.server.port),
            ("127.0.0.1".to_owned(), 8080)
        );
        assert_eq!(c.runtime.kind, RuntimeKind::Docker);
        assert!(c.storage.allowed_host_paths.is_empty());
    }

    #[test]
    fn environment_overrides_name_section_and_key() {
        let c = load(env(&[
            ("BERTH_SERVER__PORT", "9090"),
            ("BERTH_SERVER__API_KEY", "s3cret"),
            ("BERTH_SERVER__HOST", "0.0.0.0"),
            ("BERTH_STORAGE__ALLOWED_HOST_PATHS", "[\"/data\"]"),
            ("PATH", "/bin"),
            // The file's name and the `berth` command's variables are not keys.
            ("BERTH_CONFIG", "/etc/berth.toml"),
            ("BERTH_CLI_CONFIG", "/root/.config/berth/config.toml"),
        ]))
        .unwrap();
        assert_eq!(c.server.port, 9090);
        assert_eq!(c.server.api_key.as_deref(), Some("s3cret"));
        assert_eq!(c.storage.allowed_host_paths, vec![PathBuf::from("/data")]);
    }

    #[test]
    fn errors_name_the_key() {
        let msg = |pairs: &[(&str, &str)]| load(env(pairs)).unwrap_err().to_string();
        assert!(msg(&[("BERTH_SERVER__PORT", "eighty")]).contains("server.port"));
        assert!(msg(&[("BERTH_SERVER__PORTT", "80")]).contains("portt"));
        assert!(msg(&[("BERTH_SERVER__HOST", "0.0.0.0")]).contains("server.api_key"));
        assert!(msg(&[("BERTH_RUNTIME__TYPE", "podman")]).contains("runtime.type"));
        assert!(
            msg(&[("BERTH_STORAGE__ALLOWED_HOST_PATHS", "[\"/data/../etc\"]")])
                .contains("storage.allowed_host_paths[0]")
        );
        assert!(
            msg(&[("BERTH_SERVER__MAX_SANDBOX_TIMEOUT_SECONDS", "5")])
                .contains("max_sandbox_timeout_seconds")
        );
        assert!(msg(&[("BERTH_PORT", "1")]).contains("BERTH_<SECTION>__<KEY>"));
        // What the kubelet sets for a Service named `berth` says so, and how to stop it.
        for (name, value) in [
            ("BERTH_SERVICE_PORT_HTTP", "8080"),
            ("BERTH_SERVICE_HOST", "10.0.0.7"),
            ("BERTH_PORT", "tcp://10.0.0.7:8080"),
            ("BERTH_PORT_8080_TCP_ADDR", "10.0.0.7"),
        ] {
            let message = msg(&[(name, value)]);
            assert!(message.contains(name), "{message}");
            assert!(message.contains("enableServiceLinks: false"), "{message}");
        }
    }

    const ALL: &[RuntimeKind] = &[RuntimeKind::Docker, RuntimeKind::Kubernetes];

    /// Loads `vars` alone, as a server built with every runtime would.
    fn load(vars: Vec<(String, String)>) -> Result<Config, ConfigError> {
        Config::load_for(None, vars, ALL)
    }

    fn load_err(pairs: &[(&str, &str)]) -> String {
        load(env(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn a_numeric_api_key_from_the_environment_stays_a_string() {
        // The upstream complaint: this exited 2 with "invalid type: integer, expected a string".
        let c = load(env(&[("BERTH_SERVER__API_KEY", "123456")])).unwrap();
        assert_eq!(c.server.api_key.as_deref(), Some("123456"));
    }

    #[test]
    fn string_fields_take_the_environment_text_as_it_is() {
        let c = load(env(&[
            ("BERTH_SERVER__API_KEY", "true"),
            ("BERTH_DOCKER__NETWORK_MODE", "[x]"),
            ("BERTH_DOCKER__HOST", "1.5"),
            ("BERTH_STORAGE__OSSFS_COMMAND", "{ a = 1 }"),
        ]))
        .unwrap();
        assert_eq!(c.server.api_key.as_deref(), Some("true"));
        assert_eq!(c.docker.network_mode, "[x]");
        assert_eq!(c.docker.host.as_deref(), Some("1.5"));
        assert_eq!(c.storage.ossfs_command, PathBuf::from("{ a = 1 }"));
    }

    #[test]
    fn numbers_and_bools_from_the_environment_are_parsed_and_bad_ones_name_the_key() {
        let c = load(env(&[
            ("BERTH_SERVER__PORT", "9091"),
            ("BERTH_SERVER__METRICS_PUBLIC", "true"),
            ("BERTH_STORAGE__ALLOW_UNSTAGED_PATHS", "false"),
            ("BERTH_DOCKER__PIDS_LIMIT", "-1"),
            ("BERTH_SERVER__MAX_SANDBOX_TIMEOUT_SECONDS", "3600"),
        ]))
        .unwrap();
        assert_eq!(c.server.port, 9091);
        assert!(c.server.metrics_public);
        assert!(!c.storage.allow_unstaged_paths);
        assert_eq!(c.docker.pids_limit, -1);
        assert_eq!(c.server.max_sandbox_timeout_seconds, Some(3600));

        let bad_port = load_err(&[("BERTH_SERVER__PORT", "eighty")]);
        assert!(bad_port.contains("key server.port:"), "{bad_port}");
        assert!(bad_port.contains("BERTH_SERVER__PORT"), "{bad_port}");
        let too_big = load_err(&[("BERTH_SERVER__PORT", "70000")]);
        assert!(too_big.contains("key server.port:"), "{too_big}");
        let bad_bool = load_err(&[("BERTH_SERVER__METRICS_PUBLIC", "yes")]);
        assert!(
            bad_bool.contains("key server.metrics_public:"),
            "{bad_bool}"
        );
        let bad_option = load_err(&[("BERTH_SERVER__MAX_SANDBOX_TIMEOUT_SECONDS", "soon")]);
        assert!(
            bad_option.contains("key server.max_sandbox_timeout_seconds:"),
            "{bad_option}"
        );
    }

    #[test]
    fn lists_and_tables_from_the_environment_are_toml_inline_values() {
        let c = load(env(&[
            ("BERTH_STORAGE__ALLOWED_HOST_PATHS", "[\"/data\", \"/srv\"]"),
            ("BERTH_DOCKER__PUBLISHED_PORTS", "[8080, 9000]"),
            ("BERTH_DOCKER__LABELS", "{ a = \"b\", \"c.d\" = \"e\" }"),
            ("BERTH_DOCKER__DROP_CAPABILITIES", "[\"NET_RAW\"]"),
        ]))
        .unwrap();
        assert_eq!(
            c.storage.allowed_host_paths,
            vec![PathBuf::from("/data"), PathBuf::from("/srv")]
        );
        assert_eq!(c.docker.published_ports, vec![8080, 9000]);
        assert_eq!(
            c.docker.labels.iter().collect::<Vec<_>>(),
            vec![
                (&"a".to_owned(), &"b".to_owned()),
                (&"c.d".to_owned(), &"e".to_owned())
            ]
        );
        assert_eq!(c.docker.drop_capabilities, Some(vec!["NET_RAW".to_owned()]));

        let not_inline = load_err(&[("BERTH_STORAGE__ALLOWED_HOST_PATHS", "/data")]);
        assert!(
            not_inline.contains("key storage.allowed_host_paths:"),
            "{not_inline}"
        );
        let two_lines = load_err(&[("BERTH_DOCKER__PUBLISHED_PORTS", "[80]\nextra = 1")]);
        assert!(
            two_lines.contains("key docker.published_ports"),
            "{two_lines}"
        );
        let wrong_element = load_err(&[("BERTH_DOCKER__PUBLISHED_PORTS", "[\"http\"]")]);
        assert!(
            wrong_element.contains("key docker.published_ports"),
            "{wrong_element}"
        );
    }

    #[test]
    fn enums_from_the_environment_name_their_variant() {
        let c = load(env(&[("BERTH_SERVER__LOG_FORMAT", "json")])).unwrap();
        assert_eq!(c.server.log_format, LogFormat::Json);
        let bad = load_err(&[("BERTH_SERVER__LOG_FORMAT", "xml")]);
        assert!(bad.contains("key server.log_format:"), "{bad}");
    }

    #[test]
    fn environment_keys_outside_the_struct_are_refused() {
        assert!(load_err(&[("BERTH_DOCKER__LABLES", "{}")]).contains("lables"));
        assert!(load_err(&[("BERTH_SERVERS__PORT", "1")]).contains("servers"));
    }

    #[test]
    fn a_bad_log_level_is_a_config_error() {
        let bad = load_err(&[("BERTH_SERVER__LOG_LEVEL", "berth_api=loud")]);
        assert!(bad.contains("server.log_level"), "{bad}");
        let c = load(env(&[(
            "BERTH_SERVER__LOG_LEVEL",
            "info,berth_api::access=off",
        )]))
        .unwrap();
        assert_eq!(c.server.log_level, "info,berth_api::access=off");
    }

    #[test]
    fn deadlines_and_timeouts_have_defaults_and_ranges() {
        let c = load(env(&[])).unwrap();
        assert_eq!(c.request_deadline(), Duration::from_secs(600));
        assert_eq!(c.shutdown_timeout(), Duration::from_secs(30));
        assert_eq!(
            (
                c.docker.engine_timeout_seconds,
                c.docker.image_pull_timeout_seconds
            ),
            (60, 300)
        );
        for (variable, value, key) in [
            (
                "BERTH_SERVER__REQUEST_DEADLINE_SECONDS",
                "0",
                "server.request_deadline_seconds",
            ),
            (
                "BERTH_SERVER__REQUEST_DEADLINE_SECONDS",
                "86401",
                "server.request_deadline_seconds",
            ),
            (
                "BERTH_SERVER__SHUTDOWN_TIMEOUT_SECONDS",
                "0",
                "server.shutdown_timeout_seconds",
            ),
            (
                "BERTH_SERVER__SHUTDOWN_TIMEOUT_SECONDS",
                "3601",
                "server.shutdown_timeout_seconds",
            ),
            (
                "BERTH_SERVER__HEADER_READ_TIMEOUT_SECONDS",
                "0",
                "server.header_read_timeout_seconds",
            ),
            (
                "BERTH_SERVER__MAX_CONNECTIONS",
                "0",
                "server.max_connections",
            ),
            (
                "BERTH_DOCKER__ENGINE_TIMEOUT_SECONDS",
                "0",
                "docker.engine_timeout_seconds",
            ),
            (
                "BERTH_DOCKER__ENGINE_TIMEOUT_SECONDS",
                "3601",
                "docker.engine_timeout_seconds",
            ),
            (
                "BERTH_DOCKER__IMAGE_PULL_TIMEOUT_SECONDS",
                "0",
                "docker.image_pull_timeout_seconds",
            ),
            (
                "BERTH_DOCKER__IMAGE_PULL_TIMEOUT_SECONDS",
                "86401",
                "docker.image_pull_timeout_seconds",
            ),
        ] {
            let message = load_err(&[(variable, value)]);
            assert!(message.contains(key), "{variable}={value}: {message}");
        }
    }

    #[cfg(feature = "docker")]
    #[test]
    fn docker_timeouts_reach_the_docker_config() {
        let c = load(env(&[
            ("BERTH_DOCKER__ENGINE_TIMEOUT_SECONDS", "7"),
            ("BERTH_DOCKER__IMAGE_PULL_TIMEOUT_SECONDS", "11"),
        ]))
        .unwrap();
        let docker = c.docker_config();
        assert_eq!(docker.engine_timeout, Duration::from_secs(7));
        assert_eq!(docker.image_pull_timeout, Duration::from_secs(11));
    }

    #[cfg(feature = "kubernetes")]
    #[test]
    fn the_subpath_init_image_reaches_the_kubernetes_config_and_may_not_clash() {
        let kubernetes = |pairs: &[(&str, &str)]| {
            let mut all = vec![("BERTH_RUNTIME__TYPE", "kubernetes")];
            all.extend_from_slice(pairs);
            load(env(&all)).unwrap().kubernetes_config()
        };
        assert_eq!(kubernetes(&[]).unwrap().subpath_init_image, None);
        let set = kubernetes(&[("BERTH_KUBERNETES__SUBPATH_INIT_IMAGE", "busybox:1.36")]).unwrap();
        assert_eq!(set.subpath_init_image.as_deref(), Some("busybox:1.36"));
        // A template init container with Berth's name: refused at start, naming both keys.
        let dir = std::env::temp_dir().join(format!("berth-config-init-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("template.yaml");
        std::fs::write(
            &file,
            "spec:\n  initContainers:\n  - name: berth-subpaths\n    image: x\n  containers: []\n",
        )
        .unwrap();
        let template = file.to_str().unwrap();
        let clash = kubernetes(&[
            ("BERTH_KUBERNETES__SUBPATH_INIT_IMAGE", "busybox:1.36"),
            ("BERTH_KUBERNETES__POD_TEMPLATE_FILE", template),
        ])
        .unwrap_err()
        .to_string();
        let alone = kubernetes(&[("BERTH_KUBERNETES__POD_TEMPLATE_FILE", template)]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            clash.contains("kubernetes.pod_template_file")
                && clash.contains("kubernetes.subpath_init_image")
                && clash.contains("\"berth-subpaths\""),
            "{clash}"
        );
        assert!(alone.is_ok(), "without the init image the name is free");
    }

    #[test]
    fn proxy_keys_have_defaults_and_ranges() {
        let c = load(env(&[])).unwrap();
        let o = c.proxy_options();
        assert_eq!(
            (
                o.connect_timeout,
                o.idle_timeout,
                o.max_connections_per_sandbox
            ),
            (Duration::from_secs(5), Duration::from_secs(90), 256)
        );
        assert_eq!(o.public_url, None);
        assert!(matches!(
            o.route_keys,
            crate::route_signing::KeySource::File(ref f) if *f == c.storage.state_dir.join("route-signing.key")
        ));
        let c = load(env(&[
            ("BERTH_PROXY__CONNECT_TIMEOUT_SECONDS", "2"),
            ("BERTH_PROXY__MAX_CONNECTIONS_PER_SANDBOX", "3"),
            ("BERTH_SERVER__PUBLIC_URL", "https://berth.example.com/"),
            (
                "BERTH_SERVER__ROUTE_SIGNING_KEYS",
                "[\"0123456789abcdef0123456789abcdef\"]",
            ),
        ]))
        .unwrap();
        let o = c.proxy_options();
        assert_eq!(o.connect_timeout, Duration::from_secs(2));
        assert_eq!(o.max_connections_per_sandbox, 3);
        assert_eq!(o.public_url.as_deref(), Some("berth.example.com"));
        assert!(matches!(
            o.route_keys,
            crate::route_signing::KeySource::Configured(ref k) if k.len() == 1
        ));
        for (variable, value, key) in [
            (
                "BERTH_PROXY__CONNECT_TIMEOUT_SECONDS",
                "0",
                "proxy.connect_timeout_seconds",
            ),
            (
                "BERTH_PROXY__CONNECT_TIMEOUT_SECONDS",
                "301",
                "proxy.connect_timeout_seconds",
            ),
            (
                "BERTH_PROXY__IDLE_TIMEOUT_SECONDS",
                "0",
                "proxy.idle_timeout_seconds",
            ),
            (
                "BERTH_PROXY__MAX_CONNECTIONS_PER_SANDBOX",
                "0",
                "proxy.max_connections_per_sandbox",
            ),
            (
                "BERTH_PROXY__MAX_CONNECTIONS_PER_SANDBOX",
                "100001",
                "proxy.max_connections_per_sandbox",
            ),
            (
                "BERTH_SERVER__PUBLIC_URL",
                "berth.example.com",
                "server.public_url",
            ),
            (
                "BERTH_SERVER__PUBLIC_URL",
                "https://h/?q",
                "server.public_url",
            ),
            (
                "BERTH_SERVER__ROUTE_SIGNING_KEYS",
                "[\"short\"]",
                "server.route_signing_keys[0]",
            ),
            ("BERTH_PROXY__TIMEOUT", "1", "timeout"),
        ] {
            let message = load_err(&[(variable, value)]);
            assert!(message.contains(key), "{variable}={value}: {message}");
        }
    }

    #[test]
    fn the_request_deadline_must_outlast_a_docker_create() {
        // 300 + 60 by default: 360 is not enough, 361 is.
        let message = load_err(&[("BERTH_SERVER__REQUEST_DEADLINE_SECONDS", "360")]);
        assert!(
            message.contains("server.request_deadline_seconds")
                && message
                    .contains("docker.image_pull_timeout_seconds + docker.engine_timeout_seconds"),
            "{message}"
        );
        let c = Config::load_for(
            None,
            env(&[("BERTH_SERVER__REQUEST_DEADLINE_SECONDS", "361")]),
            &[RuntimeKind::Docker],
        )
        .unwrap();
        assert_eq!(c.request_deadline(), Duration::from_secs(361));
        let shorter_pull = Config::load_for(
            None,
            env(&[
                ("BERTH_SERVER__REQUEST_DEADLINE_SECONDS", "120"),
                ("BERTH_DOCKER__IMAGE_PULL_TIMEOUT_SECONDS", "100"),
                ("BERTH_DOCKER__ENGINE_TIMEOUT_SECONDS", "10"),
            ]),
            &[RuntimeKind::Docker],
        );
        assert!(shorter_pull.is_ok(), "{shorter_pull:?}");
    }

    #[test]
    fn a_runtime_not_built_in_names_its_cargo_feature() {
        let message = Config::load_for(None, env(&[]), &[RuntimeKind::Kubernetes])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(
                "runtime.type = \"docker\": this berth-server was built without the \"docker\" feature; rebuild with --features docker"
            ),
            "{message}"
        );
        let message = Config::load_for(
            None,
            env(&[("BERTH_RUNTIME__TYPE", "kubernetes")]),
            &[RuntimeKind::Docker],
        )
        .unwrap_err()
        .to_string();
        assert!(message.contains("--features kubernetes"), "{message}");
        // Built in: its own keys are checked.
        let kubernetes = Config::load_for(
            None,
            env(&[
                ("BERTH_RUNTIME__TYPE", "kubernetes"),
                ("BERTH_KUBERNETES__NAMESPACE", "sandboxes"),
            ]),
            &[RuntimeKind::Docker, RuntimeKind::Kubernetes],
        )
        .unwrap();
        assert_eq!(kubernetes.kubernetes.namespace, "sandboxes");
        for (key, value, needle) in [
            (
                "BERTH_KUBERNETES__NAMESPACE",
                "Not_A_Label",
                "kubernetes.namespace",
            ),
            (
                "BERTH_KUBERNETES__IMAGE_PULL_POLICY",
                "Sometimes",
                "kubernetes.image_pull_policy",
            ),
            (
                "BERTH_KUBERNETES__START_TIMEOUT_SECONDS",
                "900",
                "kubernetes.start_timeout_seconds",
            ),
            (
                "BERTH_KUBERNETES__API_TIMEOUT_SECONDS",
                "0",
                "kubernetes.api_timeout_seconds",
            ),
            (
                "BERTH_KUBERNETES__SUBPATH_INIT_IMAGE",
                "busybox latest",
                "kubernetes.subpath_init_image",
            ),
        ] {
            let message = Config::load_for(
                None,
                env(&[("BERTH_RUNTIME__TYPE", "kubernetes"), (key, value)]),
                &[RuntimeKind::Kubernetes],
            )
            .unwrap_err()
            .to_string();
            assert!(message.contains(needle), "{key}: {message}");
        }
        assert!(Config::load_for(None, env(&[]), &[]).is_err());
    }

    #[cfg(feature = "kubernetes")]
    #[test]
    fn operator_labels_are_checked_and_reach_the_kubernetes_config() {
        use berth_k8s::render::{
            LABEL_DELETE_WITH_SANDBOXES, LABEL_ID, LABEL_MADE_FOR, LABEL_MANAGED_BY,
        };
        assert_eq!(
            super::BERTH_K8S_LABELS,
            [
                LABEL_ID,
                LABEL_MANAGED_BY,
                LABEL_MADE_FOR,
                LABEL_DELETE_WITH_SANDBOXES
            ]
        );
        let dir = std::env::temp_dir().join(format!("berth-labels-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("berth.toml");
        let load = |labels: &str| {
            std::fs::write(
                &file,
                format!("[runtime]\ntype = \"kubernetes\"\n[kubernetes.labels]\n{labels}\n"),
            )
            .unwrap();
            Config::load_for(Some(&file), env(&[]), &[RuntimeKind::Kubernetes])
        };
        let good = load("\"team.example.com/cost-centre\" = \"ml-7\"\nberth-test = \"\"")
            .unwrap()
            .kubernetes_config()
            .unwrap();
        assert_eq!(good.extra_labels["team.example.com/cost-centre"], "ml-7");
        assert_eq!(good.extra_labels["berth-test"], "");
        for (bad, why) in [
            ("\"opensandbox.io/id\" = \"x\"", "Berth's own"),
            ("\"Bad/key\" = \"x\"", "label key"),
            ("team = \"has space\"", "label value"),
            ("team = \"-leading\"", "label value"),
        ] {
            let message = load(bad).unwrap_err().to_string();
            assert!(
                message.contains("kubernetes.labels.") && message.contains(why),
                "{bad}: {message}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_are_read_and_typos_refused() {
        let dir = std::env::temp_dir().join(format!("berth-config-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("berth.toml");
        std::fs::write(
            &file,
            "[server]\nport = 7000\n[docker]\nnetwork_mode = \"host\"\n",
        )
        .unwrap();
        let c = Config::load_for(Some(&file), env(&[("BERTH_SERVER__PORT", "7001")]), ALL).unwrap();
        assert_eq!(
            (c.server.port, c.docker.network_mode.as_str()),
            (7001, "host")
        );
        std::fs::write(&file, "[sever]\nport = 1\n").unwrap();
        assert!(
            Config::load_for(Some(&file), env(&[]), ALL)
                .unwrap_err()
                .to_string()
                .contains("sever")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
