//! `k8s-env down [--purge]`: stops the cluster and undoes what the kubelet did to the host. The
//! kubelet goes first (so it restarts nothing), then its pods' containers (by the kubelet's
//! labels, never by name), every mount under its root, the `kubepods` cgroups and the recorded
//! host state; then the control plane. Nothing is deleted while anything below it is mounted
//! (a recursive delete through a subPath bind mount would delete the host's files). Idempotent.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::Cache;
use super::cluster::Layout;
use super::host::{HostState, mounts_under, remove_kubepods_cgroups, unmount_all_under};
use super::up::{PAUSE_IMAGE, pause_image_present};

/// Files and directories of the node (not the control plane's), removed by every `down`.
const NODE_STATE: &[&str] = &[
    "kubelet",
    "dockershim",
    "dockershim.sock",
    "volume-plugins",
    "kcm-volume-plugins",
];

pub(crate) fn down(cache: &Cache, dir: &Path, purge: bool) -> Result<(), String> {
    let started = Instant::now();
    if !dir.exists() {
        eprintln!("xtask: nothing to stop: {} does not exist", dir.display());
        return if purge { remove_pause_image() } else { Ok(()) };
    }
    let layout = Layout::new(dir);
    let mut daemons = layout.daemons(cache);
    let kubelet = daemons.pop().expect("the kubelet is the last daemon");
    kubelet.stop()?;

    // Keep going after a failed step, so one problem does not leave everything else behind.
    let mut problems = Vec::new();
    let pod_uids = pod_uids(&layout);
    note(&mut problems, remove_pod_containers(&layout, &pod_uids));
    note(&mut problems, unmount_all_under(&layout.kubelet_root()));
    note(&mut problems, remove_kubepods_cgroups());
    note(&mut problems, HostState::new(dir).restore(&pod_uids));
    for daemon in daemons.iter().rev() {
        note(&mut problems, daemon.stop());
    }
    note(&mut problems, remove_node_state(&layout));
    if purge {
        note(&mut problems, remove_unless_mounted(dir));
        note(&mut problems, remove_pause_image());
    }
    if problems.is_empty() {
        eprintln!(
            "xtask: stopped the cluster in {} in {:.1} s",
            dir.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    } else {
        Err(format!(
            "stopping the cluster in {}:\n  {}",
            dir.display(),
            problems.join("\n  ")
        ))
    }
}

fn note(problems: &mut Vec<String>, result: Result<(), String>) {
    if let Err(e) = result {
        problems.push(e);
    }
}

/// The pods this kubelet ran: one directory per pod UID under its root.
fn pod_uids(layout: &Layout) -> Vec<String> {
    file_names(&layout.kubelet_root().join("pods"))
}

fn file_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The pods' containers: those labelled with one of our pod UIDs, plus the sandboxes
/// dockershim checkpointed (and anything labelled with their sandbox id).
fn remove_pod_containers(layout: &Layout, pod_uids: &[String]) -> Result<(), String> {
    let mut filters: Vec<String> = pod_uids
        .iter()
        .map(|uid| format!("label=io.kubernetes.pod.uid={uid}"))
        .collect();
    for sandbox in file_names(&layout.dockershim_root().join("sandbox")) {
        filters.push(format!("id={sandbox}"));
        filters.push(format!("label=io.kubernetes.sandbox.id={sandbox}"));
    }
    let mut ids = Vec::new();
    for filter in filters {
        ids.extend(docker_lines(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &filter,
        ])?);
    }
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: removing {} pod container(s)", ids.len());
    let output = Command::new("docker")
        .args(["rm", "-f", "-v"])
        .args(&ids)
        .output()
        .map_err(|e| format!("running docker rm: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "removing pod containers {}: {}",
            ids.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn docker_lines(args: &[&str]) -> Result<Vec<String>, String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("running docker {}: {e}", args.join(" ")))?;
    if !output.status.success() {
        return Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The kubelet's and dockershim's state; the control plane's (etcd data, keys, token) stays so
/// the next `up` finds the same cluster.
fn remove_node_state(layout: &Layout) -> Result<(), String> {
    for name in NODE_STATE {
        remove_unless_mounted(&layout.dir.join(name))?;
    }
    Ok(())
}

/// Deletes a file or a directory tree, refusing while anything below it is mounted.
fn remove_unless_mounted(path: &Path) -> Result<(), String> {
    let mounted = mounts_under(path);
    if !mounted.is_empty() {
        return Err(format!(
            "not deleting {}: still mounted below it: {}",
            path.display(),
            mounted.join(", ")
        ));
    }
    let result = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    result.map_err(|e| format!("deleting {}: {e}", path.display()))
}

fn remove_pause_image() -> Result<(), String> {
    if pause_image_present() {
        docker_lines(&["rmi", PAUSE_IMAGE])?;
    }
    Ok(())
}
