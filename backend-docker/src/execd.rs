//! The agent injected into every sandbox when `runtime.execd_image` is set, as upstream
//! OpenSandbox does: the image's `/execd` and `/bootstrap.sh` are copied to
//! [`EXECD_DIR`] in the created, not yet started container, the entrypoint becomes
//! `[BOOTSTRAP_PATH, ...entrypoint]` with `EXECD=` [`EXECD_PATH`] in the environment, and the
//! launcher starts the agent beside the sandbox's own program. Pure: what the container body
//! gets, and the one archive both files travel in; the engine calls are the runtime's
//! (`runtime::execd`).

use std::collections::HashMap;
use std::io::Read;

use bollard::models::{ContainerCreateBody, PortBinding};
use bytes::Bytes;

use crate::config::DockerConfig;

/// Where the agent and its launcher live in a sandbox (a reserved mount path: ARCHITECTURE.md,
/// "Volume rules").
pub const EXECD_DIR: &str = "/opt/opensandbox";
/// The agent in a sandbox.
pub const EXECD_PATH: &str = "/opt/opensandbox/execd";
/// The launcher in a sandbox: the entrypoint every injected sandbox starts with.
pub const BOOTSTRAP_PATH: &str = "/opt/opensandbox/bootstrap.sh";
/// The variable naming the agent for the launcher.
pub const EXECD_ENV: &str = "EXECD";
/// The agent's port, which SDKs ask the endpoint of (published with the sandbox where ports
/// are published at all).
pub const EXECD_PORT: u16 = 44772;
/// The files read from the image, at its root, in the order they are stored.
pub const IMAGE_FILES: [&str; 2] = ["/execd", "/bootstrap.sh"];
/// Label (value: the image) on the short-lived container the files are read from; startup
/// removes any a crash left behind.
pub const LABEL_EXECD_SOURCE: &str = "berth.execd-source";
/// Largest archive of one file read from the image: the agent is tens of MiB; anything far
/// larger is not an agent, and is not held in memory.
pub const MAX_FILE_ARCHIVE: usize = 256 * 1024 * 1024;

/// Makes a rendered sandbox start through the launcher: `[BOOTSTRAP_PATH, ...entrypoint]`,
/// `EXECD` set (over any the request gave: the launcher must find the injected agent), and the
/// agent's port published like `docker.published_ports` wherever the network mode publishes
/// ports, so `endpoints` answers it as it answers those.
pub fn wrap(body: &mut ContainerCreateBody, config: &DockerConfig) {
    let mut entrypoint = vec![BOOTSTRAP_PATH.to_owned()];
    entrypoint.extend(body.entrypoint.take().unwrap_or_default());
    body.entrypoint = Some(entrypoint);
    let env = body.env.get_or_insert_with(Vec::new);
    let prefix = format!("{EXECD_ENV}=");
    env.retain(|e| !e.starts_with(&prefix));
    env.push(format!("{prefix}{EXECD_PATH}"));
    if !publishes_ports(&config.network_mode) {
        return;
    }
    let port = format!("{EXECD_PORT}/tcp");
    let exposed = body.exposed_ports.get_or_insert_with(Vec::new);
    if !exposed.contains(&port) {
        exposed.push(port.clone());
    }
    let host_config = body.host_config.get_or_insert_with(Default::default);
    host_config
        .port_bindings
        .get_or_insert_with(HashMap::new)
        .entry(port)
        .or_insert_with(|| {
            Some(vec![PortBinding {
                host_ip: Some(config.publish_host.clone()),
                host_port: Some(String::new()),
            }])
        });
}

/// Whether containers on `network_mode` can publish ports: not on the host's network (the
/// agent's port is the host's), nor without a network, nor in another container's.
fn publishes_ports(network_mode: &str) -> bool {
    !matches!(network_mode, "host" | "none") && !network_mode.starts_with("container:")
}

/// One file read from the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Modification time, kept.
    pub mtime: u64,
    /// Contents.
    pub data: Vec<u8>,
}

/// The file in an archive the engine answered `GET /containers/{id}/archive?path=<path>` with:
/// its first entry, which must be a regular file (a link, directory or device is not an agent).
/// The error says what was found instead.
pub fn file_from_archive(archive: &[u8]) -> Result<ImageFile, String> {
    let mut archive = tar::Archive::new(archive);
    let mut entries = archive
        .entries()
        .map_err(|e| format!("unreadable archive: {e}"))?;
    let mut entry = entries
        .next()
        .ok_or("the engine's archive is empty")?
        .map_err(|e| format!("unreadable archive: {e}"))?;
    let kind = entry.header().entry_type();
    if !kind.is_file() {
        let what = if kind.is_symlink() {
            "a symbolic link (the file itself must be at that path)"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(format!("it is {what}"));
    }
    let mtime = entry.header().mtime().unwrap_or_default();
    let mut data = Vec::new();
    entry
        .read_to_end(&mut data)
        .map_err(|e| format!("unreadable archive: {e}"))?;
    Ok(ImageFile { mtime, data })
}

/// The archive extracted at `/` of a created container: [`EXECD_DIR`] (0755) holding `execd`
/// and `bootstrap.sh`, both 0755 and root's, so any user a sandbox runs as can run them. Missing
/// parents are made by the engine; existing ones keep their owner and mode (no entry for them).
pub fn agent_archive(execd: &ImageFile, bootstrap: &ImageFile) -> Bytes {
    let dir = EXECD_DIR.trim_start_matches('/');
    let mut builder = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, size: usize, mtime: u64| {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_size(size as u64);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header
    };
    let mut dir_header = header(tar::EntryType::Directory, 0, execd.mtime);
    // Appending to an in-memory Vec cannot fail, and the names are short constants.
    let _ = builder.append_data(&mut dir_header, format!("{dir}/"), std::io::empty());
    for (name, file) in [("execd", execd), ("bootstrap.sh", bootstrap)] {
        let mut file_header = header(tar::EntryType::Regular, file.data.len(), file.mtime);
        let _ = builder.append_data(
            &mut file_header,
            format!("{dir}/{name}"),
            file.data.as_slice(),
        );
    }
    Bytes::from(builder.into_inner().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn config(network_mode: &str) -> DockerConfig {
        let mut config = DockerConfig::with_state_dir(PathBuf::from("/var/lib/berth"));
        config.network_mode = network_mode.to_owned();
        config.publish_host = "127.0.0.1".to_owned();
        config
    }

    fn body() -> ContainerCreateBody {
        ContainerCreateBody {
            entrypoint: Some(vec!["python".into(), "-m".into(), "agent".into()]),
            env: Some(vec!["EXECD=/elsewhere".into(), "SESSION=1".into()]),
            exposed_ports: Some(vec!["8080/tcp".into()]),
            host_config: Some(bollard::models::HostConfig {
                port_bindings: Some(HashMap::from([(
                    "8080/tcp".to_owned(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_launcher_wraps_the_entrypoint_and_the_agent_port_is_published() {
        let mut wrapped = body();
        wrap(&mut wrapped, &config("bridge"));
        assert_eq!(
            wrapped.entrypoint.as_deref(),
            Some(
                [
                    "/opt/opensandbox/bootstrap.sh".to_owned(),
                    "python".into(),
                    "-m".into(),
                    "agent".into()
                ]
                .as_slice()
            )
        );
        assert_eq!(
            wrapped.env.as_deref(),
            Some(
                [
                    "SESSION=1".to_owned(),
                    "EXECD=/opt/opensandbox/execd".into()
                ]
                .as_slice()
            )
        );
        assert_eq!(
            wrapped.exposed_ports.as_deref(),
            Some(["8080/tcp".to_owned(), "44772/tcp".into()].as_slice())
        );
        let bindings = wrapped.host_config.unwrap().port_bindings.unwrap();
        assert_eq!(bindings.len(), 2);
        assert_eq!(
            bindings["44772/tcp"],
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(String::new()),
            }])
        );
    }

    #[test]
    fn an_operator_publishing_the_agent_port_keeps_the_binding() {
        let mut published = body();
        published.exposed_ports = Some(vec!["44772/tcp".into()]);
        let binding = Some(vec![PortBinding {
            host_ip: Some("0.0.0.0".into()),
            host_port: Some(String::new()),
        }]);
        published.host_config = Some(bollard::models::HostConfig {
            port_bindings: Some(HashMap::from([("44772/tcp".to_owned(), binding.clone())])),
            ..Default::default()
        });
        wrap(&mut published, &config("bridge"));
        assert_eq!(
            published.exposed_ports.as_deref(),
            Some(["44772/tcp".to_owned()].as_slice())
        );
        assert_eq!(
            published.host_config.unwrap().port_bindings.unwrap()["44772/tcp"],
            binding
        );
    }

    #[test]
    fn nothing_is_published_where_the_network_mode_cannot() {
        for mode in ["host", "none", "container:abc"] {
            let mut bare = ContainerCreateBody {
                entrypoint: Some(vec!["sleep".into()]),
                ..Default::default()
            };
            wrap(&mut bare, &config(mode));
            assert_eq!(bare.exposed_ports, None, "{mode}");
            assert_eq!(bare.host_config, None, "{mode}");
            assert_eq!(
                bare.entrypoint.as_deref(),
                Some(["/opt/opensandbox/bootstrap.sh".to_owned(), "sleep".into()].as_slice())
            );
            assert_eq!(
                bare.env.as_deref(),
                Some(["EXECD=/opt/opensandbox/execd".to_owned()].as_slice())
            );
        }
        assert!(publishes_ports("bridge") && publishes_ports("berth-net"));
    }

    /// An archive as the engine answers a read of one path: the entry named by its base name.
    fn engine_archive(name: &str, kind: tar::EntryType, data: &[u8], mode: u32) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(1_700_000_000);
        if kind.is_symlink() {
            header.set_link_name("usr/bin/execd").unwrap();
        }
        builder.append_data(&mut header, name, data).unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn a_file_is_taken_from_the_engines_archive_and_anything_else_refused() {
        let file = file_from_archive(&engine_archive(
            "execd",
            tar::EntryType::Regular,
            b"\x7fELF...",
            0o700,
        ))
        .unwrap();
        assert_eq!(
            file,
            ImageFile {
                mtime: 1_700_000_000,
                data: b"\x7fELF...".to_vec()
            }
        );
        let link = file_from_archive(&engine_archive(
            "execd",
            tar::EntryType::Symlink,
            b"",
            0o777,
        ))
        .unwrap_err();
        assert!(link.contains("symbolic link"), "{link}");
        let dir = file_from_archive(&engine_archive(
            "execd",
            tar::EntryType::Directory,
            b"",
            0o755,
        ))
        .unwrap_err();
        assert!(dir.contains("directory"), "{dir}");
        // Two zero blocks: the end of an archive with no entry.
        let empty = file_from_archive(&[0; 1024]).unwrap_err();
        assert!(empty.contains("empty"), "{empty}");
    }

    #[test]
    fn one_archive_holds_the_directory_and_both_files_executable_by_anyone() {
        let execd = ImageFile {
            mtime: 1_700_000_000,
            data: vec![7; 70_000],
        };
        let bootstrap = ImageFile {
            mtime: 1_700_000_001,
            data: b"#!/bin/sh\nexec \"$@\"\n".to_vec(),
        };
        let archive = agent_archive(&execd, &bootstrap);
        let mut read = tar::Archive::new(archive.as_ref());
        let entries: Vec<(String, tar::EntryType, u32, u64, u64, Vec<u8>)> = read
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let header = e.header().clone();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    header.entry_type(),
                    header.mode().unwrap(),
                    header.uid().unwrap() + header.gid().unwrap(),
                    header.mtime().unwrap(),
                    data,
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                (
                    "opt/opensandbox/".to_owned(),
                    tar::EntryType::Directory,
                    0o755,
                    0,
                    1_700_000_000,
                    Vec::new()
                ),
                (
                    "opt/opensandbox/execd".to_owned(),
                    tar::EntryType::Regular,
                    0o755,
                    0,
                    1_700_000_000,
                    execd.data.clone()
                ),
                (
                    "opt/opensandbox/bootstrap.sh".to_owned(),
                    tar::EntryType::Regular,
                    0o755,
                    0,
                    1_700_000_001,
                    bootstrap.data.clone()
                ),
            ]
        );
    }
}
