//! `cargo xtask k8s-env build|up|down|status`: a genuine single-node Kubernetes v1.20.2 on
//! 127.0.0.1 for the tests — etcd (Debian's), kube-apiserver, kube-controller-manager,
//! kube-scheduler and a real kubelet whose built-in dockershim runs pods on the local Docker Engine.
//!
//! The binaries are built once from Debian's `kubernetes` source package into a cache outside the
//! checkout: `~/.cache/berth/k8s/v1.20.2-<patch id>/bin`, built in `~/.cache/berth/k8s/v1.20.2-build`
//! (`$XTASK_K8S_CACHE` replaces `~/.cache/berth/k8s`). The running
//! cluster lives in one directory (`--dir`, default `/tmp/berth-k8s`): certificates, configs,
//! logs, PID files, etcd data and the kubelet's root. Needs root and a running Docker daemon; one
//! node per machine (its ports, `/var/log/pods` and the device-plugin socket are host-global).

// The safe-path rule guards paths built from API input in the server; this sets up the test
// host from fixed paths and the operator's own `--dir`, and must read `/proc/<pid>/exe`.
#![allow(
    clippy::disallowed_methods,
    reason = "host automation on fixed paths, not the server's path handling"
)]

mod build;
mod cluster;
mod down;
mod host;
mod patch;
mod process;
mod up;

use std::path::{Path, PathBuf};

/// The Kubernetes version Debian's source package really contains.
const VERSION: &str = "v1.20.2";
/// What `make WHAT=cmd/<name>` builds; kubectl is left out (the tests use the Rust client).
const KUBERNETES_BINARIES: &[&str] = &[
    "kubelet",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];
const DEFAULT_DIR: &str = "/tmp/berth-k8s";

const USAGE: &str = "usage: cargo xtask k8s-env <build | up [--dir DIR] | status [--dir DIR] | down [--dir DIR] [--purge]>";

/// The kubeconfig `up` writes in the default directory.
pub(crate) fn kubeconfig_path() -> PathBuf {
    Path::new(DEFAULT_DIR).join("kubeconfig")
}

/// Runs `work` on the test cluster in the default directory: brought up first if it is not
/// up, and then taken down (and purged) again; left as it was if it was up.
pub(crate) fn on_cluster(work: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let was_up = main(&["status".to_owned()]).is_ok();
    if was_up {
        return work();
    }
    main(&["up".to_owned()])?;
    let result = work();
    result.and(main(&["down".to_owned(), "--purge".to_owned()]))
}

/// A call on the API server of the cluster in the default directory (admin credentials).
pub(crate) fn api_call(
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    cluster::Layout::new(Path::new(DEFAULT_DIR)).api_call(method, path, body)
}

pub(crate) fn main(args: &[String]) -> Result<(), String> {
    let (command, rest) = args.split_first().ok_or(USAGE)?;
    let options = Options::parse(rest)?;
    let cache = Cache::from_env()?;
    match command.as_str() {
        "build" => {
            require_root()?;
            build::ensure(&cache)
        }
        "up" => {
            require_root()?;
            up::up(&cache, &options.dir).map_err(|e| {
                format!("{e}\n(what started is left running for a look at its logs; `cargo xtask k8s-env down` stops it)")
            })
        }
        "status" => cluster::status(&cache, &options.dir),
        "down" => {
            require_root()?;
            down::down(&cache, &options.dir, options.purge)
        }
        _ => Err(USAGE.to_owned()),
    }
}

struct Options {
    dir: PathBuf,
    purge: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Self {
            dir: resolve_dir(Path::new(DEFAULT_DIR))?,
            purge: false,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--dir" => {
                    let dir = args.next().ok_or("--dir needs a directory")?;
                    options.dir = resolve_dir(Path::new(dir))?;
                }
                "--purge" => options.purge = true,
                other => return Err(format!("unknown argument {other:?}; {USAGE}")),
            }
        }
        Ok(options)
    }
}

/// The cluster directory as the mount table names it (symlinks resolved once it exists), so
/// `down` finds every mount below it before deleting anything.
fn resolve_dir(path: &Path) -> Result<PathBuf, String> {
    if path.exists() {
        std::fs::canonicalize(path).map_err(|e| format!("resolving {}: {e}", path.display()))
    } else {
        absolute(path)
    }
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("resolving {}: {e}", path.display()))
}

fn require_root() -> Result<(), String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        });
    if uid.as_deref() == Some("0") {
        Ok(())
    } else {
        Err(
            "k8s-env build/up/down must run as root (apt, kubelet, mounts, cgroups, sysctls)"
                .to_owned(),
        )
    }
}

/// Where the built binaries live (one directory per version and patch) and where they are built
/// (one per version: a changed patch re-uses the download and replaces the 2.6 GB tree rather
/// than adding another).
pub(crate) struct Cache {
    base: PathBuf,
}

impl Cache {
    fn from_env() -> Result<Self, String> {
        let base = match std::env::var_os("XTASK_K8S_CACHE") {
            Some(dir) => absolute(Path::new(&dir))?,
            None => {
                let home =
                    std::env::var_os("HOME").ok_or("HOME is not set; set XTASK_K8S_CACHE")?;
                Path::new(&home).join(".cache/berth/k8s")
            }
        };
        Ok(Self { base })
    }

    fn bin_dir(&self) -> PathBuf {
        self.base
            .join(format!("{VERSION}-{}", patch::id()))
            .join("bin")
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir().join(name)
    }

    /// The source package, its unpacked tree and the build's objects and Go cache (in the tree's
    /// `_output`), kept so a missing binary rebuilds in minutes.
    fn build_dir(&self) -> PathBuf {
        self.base.join(format!("{VERSION}-build"))
    }
}
