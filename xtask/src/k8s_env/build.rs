//! Builds the Kubernetes binaries once into the cache: kube-apiserver, kube-controller-manager,
//! kube-scheduler and kubelet (with the project's patch, see [`super::patch`]) from Debian's
//! `kubernetes` source package with Debian's Go, plus the `pause` infra program. Only what is
//! missing is built; apt packages are installed only when missing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Cache, KUBERNETES_BINARIES, patch};
use crate::run;

/// Debian packages the build and the running cluster need.
const PACKAGES: &[&str] = &[
    "golang-1.19-go",
    // Kubernetes 1.20 vendors reflect2 1.0.1, which crashes on Go >= 1.18; Debian's 1.0.2 source
    // replaces it (see `replace_vendored_reflect2`).
    "golang-github-modern-go-reflect2-dev",
    "etcd-server",
    "dpkg-dev",
    "rsync",
    "make",
    "gcc",
    "libc6-dev",
    "openssl",
    "curl",
];
const GO_BIN: &str = "/usr/lib/go-1.19/bin";
const DEBIAN_REFLECT2: &str = "/usr/share/gocode/src/github.com/modern-go/reflect2";
const VENDORED_REFLECT2: &str = "vendor/github.com/modern-go/reflect2";
/// A temporary deb-src list for the machine's own Debian archive, removed after the download.
const SOURCE_LIST: &str = "/etc/apt/sources.list.d/berth-k8s-src.sources";
const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
/// Written once the source tree is unpacked and patched (holding the patch id), so a half-made
/// or differently patched tree is redone.
const TREE_READY: &str = ".berth-tree-ready";

/// Makes sure every binary is in the cache, building what is missing.
pub(crate) fn ensure(cache: &Cache) -> Result<(), String> {
    ensure_packages()?;
    let missing: Vec<&str> = KUBERNETES_BINARIES
        .iter()
        .copied()
        .chain(["pause"])
        .filter(|name| !cache.bin(name).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask: building {} into {} (a cold build takes 12-22 min on 2 cores)",
        missing.join(", "),
        cache.bin_dir().display()
    );
    fs::create_dir_all(cache.bin_dir())
        .map_err(|e| format!("creating {}: {e}", cache.bin_dir().display()))?;
    let tree = ensure_source_tree(cache)?;
    for name in missing {
        let started = std::time::Instant::now();
        if name == "pause" {
            build_pause(&tree, cache)?;
        } else {
            build_with_make(&tree, cache, name)?;
        }
        eprintln!("xtask: built {name} in {} s", started.elapsed().as_secs());
    }
    Ok(())
}

fn ensure_packages() -> Result<(), String> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn package_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// The unpacked source tree with the current patch (kept in the cache for fast rebuilds; a tree
/// with another patch is unpacked afresh).
fn ensure_source_tree(cache: &Cache) -> Result<PathBuf, String> {
    let work = cache.build_dir();
    let tree = work.join("src");
    let patched_with = fs::read_to_string(tree.join(TREE_READY)).unwrap_or_default();
    if patched_with == patch::id() {
        return Ok(tree);
    }
    if tree.exists() {
        fs::remove_dir_all(&tree).map_err(|e| format!("removing {}: {e}", tree.display()))?;
    }
    fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
    let dsc = download_source_package(&work)?;
    run(Command::new("dpkg-source")
        .arg("-x")
        .arg(&dsc)
        .arg(&tree)
        .current_dir(&work))?;
    replace_vendored_reflect2(&tree)?;
    patch::apply(&tree)?;
    let marker = tree.join(TREE_READY);
    fs::write(&marker, patch::id()).map_err(|e| format!("writing {}: {e}", marker.display()))?;
    Ok(tree)
}

/// Downloads `kubernetes`'s source package into `work` through a temporary deb-src list.
fn download_source_package(work: &Path) -> Result<PathBuf, String> {
    if let Some(dsc) = find_dsc(work)? {
        return Ok(dsc);
    }
    {
        let _list = TemporarySourceList::create()?;
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .args(["source", "--download-only", "kubernetes"])
            .current_dir(work))?;
    }
    // Drop the deb-src indexes again so apt's state is as before.
    run(Command::new("apt-get").args(["update", "-q"]))?;
    find_dsc(work)?.ok_or_else(|| {
        format!(
            "no kubernetes_*.dsc in {} after apt-get source",
            work.display()
        )
    })
}

fn find_dsc(work: &Path) -> Result<Option<PathBuf>, String> {
    let entries = fs::read_dir(work).map_err(|e| format!("reading {}: {e}", work.display()))?;
    Ok(entries.filter_map(Result::ok).map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("kubernetes_") && n.ends_with(".dsc"))
    }))
}

/// The deb-src twin of the machine's Debian archive stanzas; removed on drop, even on error.
struct TemporarySourceList;

impl TemporarySourceList {
    fn create() -> Result<Self, String> {
        let sources = fs::read_to_string(DEBIAN_SOURCES)
            .map_err(|e| format!("reading {DEBIAN_SOURCES}: {e}"))?;
        let deb_src = sources
            .lines()
            .map(|line| {
                if line.trim() == "Types: deb" {
                    "Types: deb-src"
                } else {
                    line
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(SOURCE_LIST, deb_src + "\n")
            .map_err(|e| format!("writing {SOURCE_LIST}: {e}"))?;
        Ok(Self)
    }
}

impl Drop for TemporarySourceList {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(SOURCE_LIST) {
            eprintln!("xtask: warning: removing {SOURCE_LIST}: {e}");
        }
    }
}

fn replace_vendored_reflect2(tree: &Path) -> Result<(), String> {
    let vendored = tree.join(VENDORED_REFLECT2);
    let read = |dir: &Path| -> Result<Vec<PathBuf>, String> {
        Ok(fs::read_dir(dir)
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                (name.ends_with(".go") && !name.ends_with("_test.go")) || name.ends_with(".s")
            })
            .collect())
    };
    for old in read(&vendored)? {
        fs::remove_file(&old).map_err(|e| format!("removing {}: {e}", old.display()))?;
    }
    for new in read(Path::new(DEBIAN_REFLECT2))? {
        let to = vendored.join(new.file_name().unwrap_or_default());
        fs::copy(&new, &to)
            .map_err(|e| format!("copying {} to {}: {e}", new.display(), to.display()))?;
    }
    Ok(())
}

/// `make WHAT=cmd/<name>` runs the code generators once (the first build is the slow one),
/// then `go build`. A plain `go build` fails on a fresh tree (generated files missing).
fn build_with_make(tree: &Path, cache: &Cache, name: &str) -> Result<(), String> {
    let log = cache.build_dir().join(format!("make-{name}.log"));
    let log_file =
        fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let path = format!("{GO_BIN}:{}", std::env::var("PATH").unwrap_or_default());
    eprintln!("xtask: make WHAT=cmd/{name} (log: {})", log.display());
    let status = Command::new("nice")
        .args(["-n", "19", "make"])
        .arg(format!("WHAT=cmd/{name}"))
        .current_dir(tree)
        .env("PATH", path)
        .env("CGO_ENABLED", "0")
        .stdout(log_file)
        .stderr(log_err)
        .status()
        .map_err(|e| format!("running make for {name} in {}: {e}", tree.display()))?;
    if !status.success() {
        return Err(format!(
            "make WHAT=cmd/{name} failed ({status}); see {}",
            log.display()
        ));
    }
    install_binary(&tree.join("_output/bin").join(name), &cache.bin(name))
}

/// The genuine infra-container program from the same tree, as a static C binary.
fn build_pause(tree: &Path, cache: &Cache) -> Result<(), String> {
    let source = tree.join("build/pause/linux/pause.c");
    let built = cache.build_dir().join("pause");
    run(Command::new("nice")
        .args([
            "-n",
            "19",
            "gcc",
            "-Os",
            "-static",
            "-DVERSION=v3.4.1-berth",
            "-o",
        ])
        .arg(&built)
        .arg(&source))?;
    run(Command::new("strip").arg(&built))?;
    install_binary(&built, &cache.bin("pause"))
}

/// Copies through a temporary name and renames, so a present binary is always a whole one.
fn install_binary(from: &Path, to: &Path) -> Result<(), String> {
    let partial = to.with_extension("partial");
    fs::copy(from, &partial)
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), partial.display()))?;
    fs::rename(&partial, to)
        .map_err(|e| format!("renaming {} to {}: {e}", partial.display(), to.display()))
}
