//! What the kubelet changes on the host outside its directory, and how `down` undoes it: kernel
//! settings (recorded before the kubelet starts, restored after), dockerd/containerd's
//! `oom_score_adj`, host-global paths it creates, its mounts and the `kubepods` cgroups.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::pids_of;

/// Kernel settings the kubelet sets (`vm.overcommit_memory=1`, `kernel.panic=10`,
/// `kernel.panic_on_oops=1`, ...) with no way to turn that off except failing instead.
const SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
];
/// Paths hard-coded in the kubelet, outside its `--root-dir`; deepest last.
const KUBELET_GLOBAL_PATHS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/lib/kubelet/device-plugins",
    "/var/log/pods",
    "/var/log/containers",
];
/// The kubelet's own files in the device-plugin directory (which may have existed before).
const DEVICE_PLUGIN_FILES: &[&str] = &[
    "/var/lib/kubelet/device-plugins/kubelet.sock",
    "/var/lib/kubelet/device-plugins/DEPRECATION",
];
const DAEMONS_WITH_OOM_SCORE: &[&str] = &["dockerd", "containerd"];
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The host as it was before the kubelet first ran, kept in `DIR/host-state` until `down`.
pub(crate) struct HostState {
    file: PathBuf,
}

impl HostState {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            file: dir.join("host-state"),
        }
    }

    /// Records the current values once; a second `up` keeps the first record (by then the
    /// kubelet may already have changed them).
    pub(crate) fn record_once(&self) -> Result<(), String> {
        if self.file.exists() {
            return Ok(());
        }
        let mut lines = Vec::new();
        for name in SYSCTLS {
            if let Ok(value) = fs::read_to_string(Path::new("/proc/sys").join(name)) {
                lines.push(format!("sysctl {name} {}", value.trim()));
            }
        }
        for daemon in DAEMONS_WITH_OOM_SCORE {
            for pid in pids_of(daemon) {
                if let Ok(value) = fs::read_to_string(format!("/proc/{pid}/oom_score_adj")) {
                    lines.push(format!("oom {pid} {}", value.trim()));
                }
            }
        }
        for path in KUBELET_GLOBAL_PATHS {
            if Path::new(path).exists() {
                lines.push(format!("existed {path}"));
            }
        }
        let partial = self.file.with_extension("partial");
        fs::write(&partial, lines.join("\n") + "\n")
            .map_err(|e| format!("writing {}: {e}", partial.display()))?;
        fs::rename(&partial, &self.file).map_err(|e| {
            format!(
                "renaming {} to {}: {e}",
                partial.display(),
                self.file.display()
            )
        })
    }

    /// Puts back the recorded kernel settings and oom scores, removes the kubelet's host-global
    /// paths that did not exist before (and our pods' logs from those that did), then forgets
    /// the record. Does nothing when there is no record.
    pub(crate) fn restore(&self, pod_uids: &[String]) -> Result<(), String> {
        let Ok(record) = fs::read_to_string(&self.file) else {
            return Ok(());
        };
        let mut existed = Vec::new();
        for line in record.lines() {
            let mut fields = line.splitn(3, ' ');
            match (fields.next(), fields.next(), fields.next()) {
                (Some("sysctl"), Some(name), Some(value)) => restore_sysctl(name, value)?,
                (Some("oom"), Some(pid), Some(value)) => restore_oom_score(pid, value),
                (Some("existed"), Some(path), None) => existed.push(path),
                _ => {}
            }
        }
        remove_pod_logs(pod_uids, &existed)?;
        for file in DEVICE_PLUGIN_FILES {
            remove_file_if_present(Path::new(file))?;
        }
        for path in KUBELET_GLOBAL_PATHS.iter().rev() {
            if !existed.contains(path) {
                remove_created_path(Path::new(path))?;
            }
        }
        fs::remove_file(&self.file).map_err(|e| format!("removing {}: {e}", self.file.display()))
    }
}

fn restore_sysctl(name: &str, value: &str) -> Result<(), String> {
    let path = Path::new("/proc/sys").join(name);
    let current = fs::read_to_string(&path).unwrap_or_default();
    if current.trim() == value {
        return Ok(());
    }
    fs::write(&path, value).map_err(|e| format!("restoring {} to {value}: {e}", path.display()))
}

/// Best effort: the daemon may have restarted since (then its score is its own again).
fn restore_oom_score(pid: &str, value: &str) {
    let path = format!("/proc/{pid}/oom_score_adj");
    let current = fs::read_to_string(&path).unwrap_or_default();
    if !current.is_empty() && current.trim() != value {
        let _ = fs::write(&path, value);
    }
}

/// In log directories that existed before, removes only what our pods left there.
fn remove_pod_logs(pod_uids: &[String], existed: &[&str]) -> Result<(), String> {
    if existed.contains(&"/var/log/pods") {
        for entry in read_dir_paths(Path::new("/var/log/pods")) {
            let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if pod_uids
                .iter()
                .any(|uid| name.ends_with(&format!("_{uid}")))
            {
                fs::remove_dir_all(&entry)
                    .map_err(|e| format!("removing {}: {e}", entry.display()))?;
            }
        }
    }
    if existed.contains(&"/var/log/containers") {
        // Links into the pod log directories just removed now dangle.
        for link in read_dir_paths(Path::new("/var/log/containers")) {
            if link.is_symlink() && !link.exists() {
                fs::remove_file(&link).map_err(|e| format!("removing {}: {e}", link.display()))?;
            }
        }
    }
    Ok(())
}

/// Removes a path the kubelet created; refuses when anything is still mounted below it.
fn remove_created_path(path: &Path) -> Result<(), String> {
    if !path.exists() {
        return Ok(());
    }
    let mounted = mounts_under(path);
    if !mounted.is_empty() {
        return Err(format!(
            "not removing {}: still mounted below it: {}",
            path.display(),
            mounted.join(", ")
        ));
    }
    fs::remove_dir_all(path).map_err(|e| format!("removing {}: {e}", path.display()))
}

fn remove_file_if_present(path: &Path) -> Result<(), String> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("removing {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

fn read_dir_paths(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Mount points at or below `root`, deepest first, from `/proc/self/mountinfo` (which names
/// them by their real path, so `root`'s symlinks are resolved first).
pub(crate) fn mounts_under(root: &Path) -> Vec<String> {
    let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts = mount_points_under(&mountinfo, &root.to_string_lossy());
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts
}

/// Mount points (field 5, octal escapes decoded) equal to `root` or inside it.
fn mount_points_under(mountinfo: &str, root: &str) -> Vec<String> {
    let inside = format!("{}/", root.trim_end_matches('/'));
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(decode_mountinfo_escapes)
        .filter(|point| point == root || point.starts_with(&inside))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn decode_mountinfo_escapes(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything at or below `root`, deepest first, a few passes (a stacked mount
/// reappears after the top one goes); a busy mount is detached lazily. Fails if any remain.
pub(crate) fn unmount_all_under(root: &Path) -> Result<(), String> {
    for _pass in 0..4 {
        let mounts = mounts_under(root);
        if mounts.is_empty() {
            return Ok(());
        }
        for mount in mounts {
            let unmounted = Command::new("umount").arg(&mount).output();
            if !unmounted.is_ok_and(|o| o.status.success()) {
                let _ = Command::new("umount").arg("-l").arg(&mount).output();
            }
        }
    }
    let left = mounts_under(root);
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "could not unmount under {}: {}",
            root.display(),
            left.join(", ")
        ))
    }
}

/// Removes the `kubepods` cgroup tree (cgroupsPerQOS) in every cgroup v1 hierarchy, deepest
/// first. Only empty cgroups can be removed, so this never touches a running process.
pub(crate) fn remove_kubepods_cgroups() -> Result<(), String> {
    let mut left = Vec::new();
    for hierarchy in read_dir_paths(Path::new(CGROUP_ROOT)) {
        let kubepods = hierarchy.join("kubepods");
        if kubepods.is_dir() && !kubepods.is_symlink() {
            remove_cgroup_tree(&kubepods, &mut left);
        }
    }
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("could not remove cgroups: {}", left.join("; ")))
    }
}

fn remove_cgroup_tree(cgroup: &Path, left: &mut Vec<String>) {
    for child in read_dir_paths(cgroup) {
        if child.is_dir() && !child.is_symlink() {
            remove_cgroup_tree(&child, left);
        }
    }
    if let Err(e) = fs::remove_dir(cgroup) {
        left.push(format!("{}: {e}", cgroup.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_under_matches_the_root_and_below_only() {
        let mountinfo = "\
36 25 0:32 / /tmp/k rw shared:1 - ext4 /dev/vda rw
37 36 0:32 /x /tmp/k/pods/a\\040b rw - ext4 /dev/vda rw
38 25 0:33 / /tmp/kk rw - tmpfs tmpfs rw
39 25 0:34 / /tmp rw - tmpfs tmpfs rw";
        assert_eq!(
            mount_points_under(mountinfo, "/tmp/k"),
            vec!["/tmp/k".to_owned(), "/tmp/k/pods/a b".to_owned()]
        );
    }

    #[test]
    fn decode_mountinfo_escapes_decodes_octal_and_keeps_the_rest() {
        assert_eq!(decode_mountinfo_escapes("/a\\040b\\134c\\"), "/a b\\c\\");
    }
}
