//! Server configuration (DESIGN §6): one TOML file (`--config` or `BERTH_CONFIG`), every key
//! overridable from the environment as `BERTH_<SECTION>__<KEY>` (`BERTH_SERVER__PORT=9090`).
//! Defaults start on a laptop with Docker on 127.0.0.1:8080. Unknown keys are errors, and every
//! error names the key, so a typo never silently changes nothing.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
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
    /// `[kubernetes]` (the Kubernetes runtime is not implemented yet).
    pub kubernetes: Option<toml::Table>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
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
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[runtime]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Which runtime runs sandboxes.
    #[serde(rename = "type")]
    pub kind: RuntimeKind,
}

/// The runtimes a server can be configured with (the in-memory test runtime is not one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Docker Engine.
    #[default]
    Docker,
    /// Kubernetes (not implemented yet).
    Kubernetes,
}

/// `[docker]`.
#[derive(Debug, Clone, Deserialize)]
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
    /// Capabilities dropped from sandboxes.
    pub drop_capabilities: Option<Vec<String>>,
    /// Process limit per sandbox.
    pub pids_limit: i64,
    /// Labels added to every container and volume Berth creates.
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Default for DockerSection {
    fn default() -> Self {
        Self {
            host: None,
            network_mode: "bridge".into(),
            publish_host: "127.0.0.1".into(),
            published_ports: Vec::new(),
            drop_capabilities: None,
            pids_limit: 4096,
            labels: std::collections::BTreeMap::new(),
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
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
    /// Reads the file (if any) and applies `env` overrides (`BERTH_<SECTION>__<KEY>`).
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("reading {}: {e}", path.display())))?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("BERTH_") else {
                continue;
            };
            if rest == "CONFIG" {
                continue;
            }
            let Some((section, key)) = rest.split_once("__") else {
                return Err(ConfigError(format!(
                    "environment variable {name}: use BERTH_<SECTION>__<KEY>, e.g. BERTH_SERVER__PORT"
                )));
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            // A value that parses as TOML (number, bool, array) is taken as such; anything else is a string.
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value));
            let section_table = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| {
                    ConfigError(format!(
                        "environment variable {name}: [{section}] is not a section"
                    ))
                })?;
            section_table.insert(key, parsed);
        }
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError(format!("key {}: {}", e.path(), e.inner())))?;
        config.check()?;
        Ok(config)
    }

    /// Cross-key rules.
    fn check(&self) -> Result<(), ConfigError> {
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
        if self.runtime.kind == RuntimeKind::Kubernetes || self.kubernetes.is_some() {
            return Err(ConfigError("runtime.type = \"kubernetes\": the Kubernetes runtime is not implemented yet; use \"docker\"".into()));
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

    /// The Docker runtime's settings.
    pub fn docker_config(&self) -> berth_docker::config::DockerConfig {
        let mut docker =
            berth_docker::config::DockerConfig::with_state_dir(self.storage.state_dir.clone());
        docker.host = self.docker.host.clone();
        docker.network_mode = self.docker.network_mode.clone();
        docker.publish_host = self.docker.publish_host.clone();
        docker.published_ports = self.docker.published_ports.clone();
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
        docker.ossfs.mount_timeout =
            std::time::Duration::from_secs(self.storage.ossfs_mount_timeout_seconds);
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
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(
            (c.server.host.to_string(), c.server.port),
            ("127.0.0.1".to_owned(), 8080)
        );
        assert_eq!(c.runtime.kind, RuntimeKind::Docker);
        assert!(c.storage.allowed_host_paths.is_empty());
    }

    #[test]
    fn environment_overrides_name_section_and_key() {
        let c = Config::load(
            None,
            env(&[
                ("BERTH_SERVER__PORT", "9090"),
                ("BERTH_SERVER__API_KEY", "s3cret"),
                ("BERTH_SERVER__HOST", "0.0.0.0"),
                ("BERTH_STORAGE__ALLOWED_HOST_PATHS", "[\"/data\"]"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.port, 9090);
        assert_eq!(c.server.api_key.as_deref(), Some("s3cret"));
        assert_eq!(c.storage.allowed_host_paths, vec![PathBuf::from("/data")]);
    }

    #[test]
    fn errors_name_the_key() {
        let msg = |pairs: &[(&str, &str)]| Config::load(None, env(pairs)).unwrap_err().to_string();
        assert!(msg(&[("BERTH_SERVER__PORT", "eighty")]).contains("server.port"));
        assert!(msg(&[("BERTH_SERVER__PORTT", "80")]).contains("portt"));
        assert!(msg(&[("BERTH_SERVER__HOST", "0.0.0.0")]).contains("server.api_key"));
        assert!(msg(&[("BERTH_RUNTIME__TYPE", "kubernetes")]).contains("runtime.type"));
        assert!(
            msg(&[("BERTH_STORAGE__ALLOWED_HOST_PATHS", "[\"/data/../etc\"]")])
                .contains("storage.allowed_host_paths[0]")
        );
        assert!(
            msg(&[("BERTH_SERVER__MAX_SANDBOX_TIMEOUT_SECONDS", "5")])
                .contains("max_sandbox_timeout_seconds")
        );
        assert!(msg(&[("BERTH_PORT", "1")]).contains("BERTH_<SECTION>__<KEY>"));
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
        let c = Config::load(Some(&file), env(&[("BERTH_SERVER__PORT", "7001")])).unwrap();
        assert_eq!(
            (c.server.port, c.docker.network_mode.as_str()),
            (7001, "host")
        );
        std::fs::write(&file, "[sever]\nport = 1\n").unwrap();
        assert!(
            Config::load(Some(&file), env(&[]))
                .unwrap_err()
                .to_string()
                .contains("sever")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
