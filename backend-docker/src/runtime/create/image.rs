//! Making sure the sandbox's image is present: inspected, and pulled when missing. The pull
//! as a whole is bounded by `docker.image_pull_timeout_seconds`.

use berth_core::model::SandboxSpec;
use berth_core::runtime::RuntimeError;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;

use crate::engine::timed_out;
use crate::runtime::{DockerRuntime, docker_error, is_connection_error, is_not_found};

const PULL_TIMEOUT_KEY: &str = "docker.image_pull_timeout_seconds";

impl DockerRuntime {
    pub(super) async fn ensure_image(&self, spec: &SandboxSpec) -> Result<(), RuntimeError> {
        self.ensure_image_present(&spec.image.uri, spec.image.auth.as_ref())
            .await
    }

    /// Inspects `uri`, and pulls it (with `auth`) when it is missing; a pull that fails is
    /// `ImageNotFound`.
    pub(in crate::runtime) async fn ensure_image_present(
        &self,
        uri: &str,
        auth: Option<&berth_core::model::RegistryAuth>,
    ) -> Result<(), RuntimeError> {
        match self
            .engine
            .bounded("inspecting image", self.engine.docker.inspect_image(uri))
            .await?
        {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(docker_error("inspecting image")(e)),
        }
        let credentials = auth.map(|a| bollard::auth::DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            ..Default::default()
        });
        let options = CreateImageOptions {
            from_image: Some(uri.to_owned()),
            ..Default::default()
        };
        let limit = self.config.image_pull_timeout;
        // The engine answers the pull's head only once the registry answered, so the client's
        // head timeout is the pull's, not one ordinary call's; the whole stream is bounded below.
        let client = self.engine.client_waiting(limit);
        let pull = async {
            let mut pull = client.create_image(Some(options), None, credentials);
            while let Some(progress) = pull.next().await {
                if let Err(e) = progress {
                    let detail = match e {
                        bollard::errors::Error::RequestTimeoutError => {
                            return Err(timed_out("pulling image", PULL_TIMEOUT_KEY, limit));
                        }
                        bollard::errors::Error::DockerResponseServerError { message, .. } => {
                            message
                        }
                        bollard::errors::Error::DockerStreamError { error } => error,
                        other if is_connection_error(&other) => {
                            return Err(docker_error("pulling image")(other));
                        }
                        other => other.to_string(),
                    };
                    return Err(RuntimeError::ImageNotFound {
                        image: uri.to_owned(),
                        detail,
                    });
                }
            }
            Ok(())
        };
        tokio::time::timeout(limit, pull)
            .await
            .unwrap_or_else(|_| Err(timed_out("pulling image", PULL_TIMEOUT_KEY, limit)))
    }
}
