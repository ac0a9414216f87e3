//! The OpenAPI document, generated from the Rust types (utoipa), served at `/openapi.json` and
//! committed as `api/openapi.yaml` (a test fails when they drift; `cargo xtask openapi`
//! rewrites the file).

use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::handlers;
use berth_core::wire;

/// The API key scheme of the spec, and the answers every operation can give that no handler
/// states: 401 without the key (where it is needed), 413 and 415 for a request body.
struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKeyAuth",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("OPEN-SANDBOX-API-KEY"))),
        );
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorResponse")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
                &mut item.put,
            ]
            .into_iter()
            .flatten()
            {
                let open = operation.security.as_ref().is_some_and(|s| {
                    s.iter()
                        .all(|r| r == &utoipa::openapi::security::SecurityRequirement::default())
                });
                let responses = &mut operation.responses.responses;
                if !open {
                    responses
                        .entry("401".into())
                        .or_insert_with(|| error("Missing or wrong API key").into());
                }
                if operation.request_body.is_some() {
                    responses
                        .entry("413".into())
                        .or_insert_with(|| error("Body larger than 1 MiB").into());
                    responses
                        .entry("415".into())
                        .or_insert_with(|| error("Body not sent as application/json").into());
                }
            }
        }
    }
}

/// Berth's API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Berth — OpenSandbox Lifecycle API", version = "1", description = "Sandbox lifecycle, wire-compatible with the OpenSandbox Lifecycle API v1, plus Berth's `volumes` report and dry runs."),
    paths(
        handlers::create_sandbox, handlers::list_sandboxes, handlers::get_sandbox, handlers::delete_sandbox,
        handlers::pause_sandbox, handlers::resume_sandbox, handlers::renew_sandbox, handlers::patch_metadata,
        handlers::get_endpoint, handlers::health,
    ),
    components(schemas(wire::ErrorResponse, wire::SandboxState, wire::VolumeBackendKind, wire::ReadOnlyMode)),
    modifiers(&ApiKeyAuth),
    security(("apiKeyAuth" = [])),
    tags((name = "Sandboxes", description = "Sandbox lifecycle"), (name = "Server", description = "Server health"))
)]
pub struct ApiDoc;

/// The document as YAML (what `api/openapi.yaml` holds).
pub fn yaml() -> String {
    ApiDoc::openapi()
        .to_yaml()
        .unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

/// `GET /openapi.json`.
pub async fn serve() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
