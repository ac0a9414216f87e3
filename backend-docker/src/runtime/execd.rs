//! The engine side of the injected agent (`crate::execd`): its two files are read out of
//! `runtime.execd_image` once per platform — a container of the image is created, never
//! started, each file read with `GET /containers/{id}/archive`, the container removed — and
//! kept as the one archive every create then uploads with a single
//! `PUT /containers/{id}/archive` before it starts its container. Failures have codes of their
//! own (`EXECD::*`) and leave nothing behind; a failed read is not cached, so loading the image
//! and retrying works without a restart.

use std::collections::HashMap;

use berth_core::ErrorCode;
use berth_core::model::{PlatformArch, PlatformOs, PlatformSpec};
use berth_core::runtime::RuntimeError;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptions, ListContainersOptions,
    RemoveContainerOptions, UploadToContainerOptions,
};
use bytes::Bytes;
use futures_util::StreamExt;

use super::{DockerRuntime, docker_error, is_connection_error, is_not_found};
use crate::execd::{
    IMAGE_FILES, ImageFile, LABEL_EXECD_SOURCE, MAX_FILE_ARCHIVE, agent_archive, file_from_archive,
};
use crate::render::{base_labels, instance_filter};

/// The platform an archive was read for (`None`: the engine's own).
type PlatformKey = Option<(PlatformOs, PlatformArch)>;

/// The agent archives read so far, by platform; the lock is held while one is read, so
/// concurrent first creates read the image once.
#[derive(Debug, Default)]
pub(super) struct ExecdArchives(tokio::sync::Mutex<HashMap<PlatformKey, Bytes>>);

const SETTING: &str = "runtime.execd_image";

fn execd_error(code: ErrorCode, message: String) -> RuntimeError {
    RuntimeError::Rejected(berth_core::validate::Violations::one(
        berth_core::validate::Violation::new(SETTING, code, message),
    ))
}

fn platform_name(platform: PlatformSpec) -> String {
    format!("{}/{}", platform.os.as_str(), platform.arch.as_str())
}

impl DockerRuntime {
    /// The archive to upload into a sandbox of `platform`, when an agent is injected: cached,
    /// or read from the image now.
    pub(super) async fn execd_archive(
        &self,
        platform: Option<PlatformSpec>,
    ) -> Result<Option<Bytes>, RuntimeError> {
        let Some(image) = &self.config.execd_image else {
            return Ok(None);
        };
        let key = platform.map(|p| (p.os, p.arch));
        let mut archives = self.execd.0.lock().await;
        if let Some(archive) = archives.get(&key) {
            return Ok(Some(archive.clone()));
        }
        let archive = self.read_execd_image(image, platform).await?;
        tracing::info!(image = %image, platform = ?key, bytes = archive.len(), "read the agent from runtime.execd_image");
        archives.insert(key, archive.clone());
        Ok(Some(archive))
    }

    /// Reads the two files out of `image` through a container that is created and never
    /// started, removed whatever happens.
    async fn read_execd_image(
        &self,
        image: &str,
        platform: Option<PlatformSpec>,
    ) -> Result<Bytes, RuntimeError> {
        self.ensure_image_present(image, None)
            .await
            .map_err(|e| match e {
                RuntimeError::ImageNotFound { detail, .. } => execd_error(
                    ErrorCode::ExecdImageNotFound,
                    format!(
                        "the agent's image {image} is neither present on the engine nor pullable: {detail}"
                    ),
                ),
                other => other,
            })?;
        let mut labels = base_labels(&self.config);
        labels.insert(LABEL_EXECD_SOURCE.to_owned(), image.to_owned());
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            // Never run; an image without an entrypoint or command could not be created at all.
            entrypoint: Some(vec![IMAGE_FILES[0].to_owned()]),
            labels: Some(labels),
            network_disabled: Some(true),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: None,
            platform: platform.map(platform_name).unwrap_or_default(),
        };
        let created = self
            .engine
            .bounded(
                "creating the agent's source container",
                self.engine.docker.create_container(Some(options), body),
            )
            .await?
            .map_err(|e| {
                if is_not_found(&e) {
                    execd_error(
                        ErrorCode::ExecdImageNotFound,
                        format!("the agent's image {image} is not present on the engine: {e}"),
                    )
                } else {
                    docker_error("creating the agent's source container")(e)
                }
            })?;
        let read = self.read_files(&created.id, image).await;
        let removed = self
            .engine
            .bounded(
                "removing the agent's source container",
                self.engine.docker.remove_container(
                    &created.id,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        link: false,
                    }),
                ),
            )
            .await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(e)) if is_not_found(&e) => {}
            // The next start removes it (`sweep_execd_sources`).
            Ok(Err(e)) => {
                tracing::error!(container = %created.id, error = %e, "removing the agent's source container failed");
            }
            Err(e) => {
                tracing::error!(container = %created.id, error = %e, "removing the agent's source container failed");
            }
        }
        let [execd, bootstrap] = read?;
        Ok(agent_archive(&execd, &bootstrap))
    }

    /// Each of [`IMAGE_FILES`] from the source container `id`.
    async fn read_files(&self, id: &str, image: &str) -> Result<[ImageFile; 2], RuntimeError> {
        let mut files = Vec::with_capacity(IMAGE_FILES.len());
        for path in IMAGE_FILES {
            let archive = self.read_archive(id, path).await?.map_err(|why| {
                execd_error(
                    ErrorCode::ExecdFilesMissing,
                    format!("the agent's image {image} has no usable {path}: {why}"),
                )
            })?;
            let file = file_from_archive(&archive).map_err(|why| {
                execd_error(
                    ErrorCode::ExecdFilesMissing,
                    format!("{path} in the agent's image {image} is not a regular file: {why}"),
                )
            })?;
            files.push(file);
        }
        files.try_into().map_err(|_| RuntimeError::Internal {
            context: "reading the agent".into(),
            detail: "a file was not read".into(),
        })
    }

    /// The engine's archive of `path` in container `id`; `Ok(Err(why))` when the path is
    /// missing or its archive too large.
    async fn read_archive(
        &self,
        id: &str,
        path: &str,
    ) -> Result<Result<Vec<u8>, String>, RuntimeError> {
        let options = DownloadFromContainerOptions {
            path: path.to_owned(),
        };
        let read = async {
            let mut stream = self
                .engine
                .docker
                .download_from_container(id, Some(options));
            let mut archive = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                if archive.len() + chunk.len() > MAX_FILE_ARCHIVE {
                    return Ok(Err(format!(
                        "it is larger than {} MiB",
                        MAX_FILE_ARCHIVE / (1024 * 1024)
                    )));
                }
                archive.extend_from_slice(&chunk);
            }
            Ok(Ok(archive))
        };
        match self
            .engine
            .bounded("reading the agent's files", read)
            .await?
        {
            Ok(archive) => Ok(archive),
            Err(e) if is_not_found(&e) => Ok(Err("no such file".to_owned())),
            Err(e) => Err(docker_error("reading the agent's files")(e)),
        }
    }

    /// Copies the agent into the created, not yet started container `id`: one upload.
    pub(super) async fn upload_execd(&self, id: &str, archive: Bytes) -> Result<(), RuntimeError> {
        let options = UploadToContainerOptions {
            path: "/".to_owned(),
            // A file where the directory should be is an error, not replaced.
            no_overwrite_dir_non_dir: Some("true".to_owned()),
            copy_uidgid: None,
        };
        let uploaded = self
            .engine
            .bounded(
                "copying the agent into the container",
                self.engine.docker.upload_to_container(
                    id,
                    Some(options),
                    bollard::body_full(archive),
                ),
            )
            .await?;
        match uploaded {
            Ok(()) => Ok(()),
            Err(e) if is_connection_error(&e) => {
                Err(docker_error("copying the agent into the container")(e))
            }
            Err(e) => Err(execd_error(
                ErrorCode::ExecdUploadFailed,
                format!(
                    "copying the agent into the sandbox's container failed: {}",
                    engine_message(&e)
                ),
            )),
        }
    }

    /// Removes the agent's source containers a crash left behind (startup).
    pub(super) async fn sweep_execd_sources(&self) {
        let mut filters = instance_filter(&self.config);
        if let Some(labels) = filters.get_mut("label") {
            labels.push(LABEL_EXECD_SOURCE.to_owned());
        }
        let Ok(containers) = self
            .engine
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
        else {
            return;
        };
        for c in containers {
            let id = c.id.unwrap_or_default();
            tracing::warn!(container = %id, "reconcile: removing a source container of the agent");
            let options = RemoveContainerOptions {
                force: true,
                v: true,
                link: false,
            };
            let _ = self
                .engine
                .docker
                .remove_container(&id, Some(options))
                .await;
        }
    }
}

/// What the engine said, without bollard's wrapping.
fn engine_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("the engine answered {status_code}: {message}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_are_named_as_the_engine_names_them() {
        assert_eq!(
            platform_name(PlatformSpec {
                os: PlatformOs::Linux,
                arch: PlatformArch::Arm64
            }),
            "linux/arm64"
        );
        assert_eq!(
            platform_name(PlatformSpec {
                os: PlatformOs::Windows,
                arch: PlatformArch::Amd64
            }),
            "windows/amd64"
        );
    }

    #[test]
    fn failures_carry_their_codes_and_the_setting() {
        let error = execd_error(ErrorCode::ExecdFilesMissing, "no /execd".into());
        assert_eq!(error.code(), ErrorCode::ExecdFilesMissing);
        let body = error.to_error_response();
        assert_eq!(body.code, "EXECD::FILES_MISSING");
        assert_eq!(body.message, "runtime.execd_image: no /execd");
    }
}
