//! What the Docker runtime is configured with: `[docker]` and `[storage]` (see ARCHITECTURE.md,
//! "Configuration").

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Docker runtime settings.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Engine address: a `unix://` socket or `tcp://`/`http://` URL; `None` uses `DOCKER_HOST`
    /// or the default socket.
    pub host: Option<String>,
    /// Network mode of sandboxes (`docker.network_mode`, default `bridge`).
    pub network_mode: String,
    /// Host address published ports bind to (`docker.publish_host`, default 127.0.0.1).
    pub publish_host: String,
    /// Container ports published on `publish_host` (`docker.published_ports`).
    pub published_ports: Vec<u16>,
    /// The server proxy connects to published ports rather than to containers' own addresses
    /// (`docker.proxy_via_published_ports`): for a server that cannot route to the sandboxes'
    /// network.
    pub proxy_via_published_ports: bool,
    /// Capabilities dropped from every sandbox (`docker.drop_capabilities`).
    pub drop_capabilities: Vec<String>,
    /// Process limit per sandbox (`docker.pids_limit`).
    pub pids_limit: i64,
    /// Server state: the store and the staging mounts (`storage.state_dir`).
    pub state_dir: PathBuf,
    /// Roots under which host volumes may be mounted (`storage.allowed_host_paths`).
    pub allowed_host_paths: Vec<PathBuf>,
    /// Hand verified but unstaged paths to Docker when the server cannot mount
    /// (`storage.allow_unstaged_paths`); leaves a documented residual race.
    pub allow_unstaged_paths: bool,
    /// Labels added to every container and volume Berth creates (tests use `berth.test=1`).
    pub extra_labels: BTreeMap<String, String>,
    /// How OSS buckets are mounted.
    pub ossfs: OssfsConfig,
    /// Longest wait for one Engine API call (`docker.engine_timeout_seconds`); past it the call
    /// counts as the engine not answering.
    pub engine_timeout: Duration,
    /// Longest an image pull may take as a whole (`docker.image_pull_timeout_seconds`).
    pub image_pull_timeout: Duration,
    /// How often the container index is rebuilt from a full list, behind the events stream
    /// (not a server setting; tests lengthen it to show what the stream alone does).
    pub index_resync: Duration,
    /// The image whose `/execd` and `/bootstrap.sh` every sandbox gets (`runtime.execd_image`;
    /// see `crate::execd`). `None`: sandboxes run their entrypoint alone.
    pub execd_image: Option<String>,
}

/// ossfs settings (`storage.ossfs_*`). The backend is offered when the server can stage mounts
/// and at least one helper program is found.
#[derive(Debug, Clone)]
pub struct OssfsConfig {
    /// Where shared mounts live, one directory per mount key (`storage.ossfs_mount_root`).
    pub mount_root: PathBuf,
    /// The ossfs 1.x program, a path or a name looked up in `PATH` (`storage.ossfs_command`).
    pub command_v1: PathBuf,
    /// The ossfs 2.x program (`storage.ossfs2_command`).
    pub command_v2: PathBuf,
    /// How long a mount may take before the helper is killed and the create refused
    /// (`storage.ossfs_mount_timeout_seconds`).
    pub mount_timeout: Duration,
}

impl DockerConfig {
    /// A stable id of this server instance (FNV-1a of its state directory), put on everything it
    /// creates so that several servers — or test runs — sharing one engine never touch each
    /// other's containers.
    pub fn instance_id(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.state_dir.as_os_str().as_encoded_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{hash:016x}")
    }

    /// Defaults that run on a laptop: the local engine, bridge network, state under `state_dir`.
    pub fn with_state_dir(state_dir: PathBuf) -> Self {
        Self {
            host: None,
            network_mode: "bridge".to_owned(),
            publish_host: "127.0.0.1".to_owned(),
            published_ports: Vec::new(),
            proxy_via_published_ports: false,
            drop_capabilities: berth_core::runtime::DROPPED_CAPABILITIES
                .map(str::to_owned)
                .to_vec(),
            pids_limit: 4096,
            ossfs: OssfsConfig {
                mount_root: state_dir.join("ossfs"),
                command_v1: PathBuf::from("ossfs"),
                command_v2: PathBuf::from("ossfs2"),
                mount_timeout: Duration::from_secs(30),
            },
            state_dir,
            allowed_host_paths: Vec::new(),
            allow_unstaged_paths: false,
            extra_labels: BTreeMap::new(),
            engine_timeout: Duration::from_secs(60),
            image_pull_timeout: Duration::from_secs(300),
            index_resync: Duration::from_secs(60),
            execd_image: None,
        }
    }
}
