//! `berth-server`: the Berth HTTP server.
//!
//! ```text
//! berth-server [--config FILE]      serve (config also from BERTH_CONFIG and BERTH_* variables)
//! berth-server --print-openapi      print the OpenAPI document (YAML)
//! ```
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 1 when the runtime cannot start,
//! 2 for a configuration error (the message names the key).

use std::process::ExitCode;
use std::sync::Arc;

use berth_api::config::{Config, LogFormat};
use berth_api::{AppState, reaper, router};
use berth_docker::{DockerRuntime, StartupError};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut config_file = std::env::var_os("BERTH_CONFIG").map(std::path::PathBuf::from);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--print-openapi" => {
                print!("{}", berth_api::openapi::yaml());
                return ExitCode::SUCCESS;
            }
            "--config" => match args.next() {
                Some(path) => config_file = Some(path.into()),
                None => {
                    eprintln!("berth-server: --config needs a file");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!(
                    "berth-server: unknown argument {other:?}\nusage: berth-server [--config FILE] | --print-openapi"
                );
                return ExitCode::from(2);
            }
        }
    }
    let config = match Config::load(config_file.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth-server: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.server.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.server.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: Config) -> ExitCode {
    let docker = match DockerRuntime::start(config.docker_config()).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("berth-server: {e}");
            let config_problem = matches!(
                e,
                StartupError::AllowedRoot { .. }
                    | StartupError::Ossfs { .. }
                    | StartupError::Network { .. }
                    | StartupError::StateDir { .. }
            );
            return if config_problem {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    let capabilities = berth_core::runtime::Runtime::capabilities(&docker);
    tracing::info!(
        runtime = %capabilities.runtime,
        engine = capabilities.engine_version.as_deref().unwrap_or("unknown"),
        sub_path = ?capabilities.sub_path_mechanism,
        read_only = ?capabilities.read_only_mode,
        backends = ?capabilities.volume_backends,
        engine_sees_mounts = ?capabilities.engine_sees_mounts,
        "runtime capabilities"
    );
    let state = AppState::new(Arc::new(docker), config.policy())
        .with_api_key(config.server.api_key.clone(), config.server.metrics_public);
    let reaper = tokio::spawn(reaper::run(state.clone(), state.clock.clone()));
    let address = std::net::SocketAddr::new(config.server.host, config.server.port);
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth-server: cannot listen on {address} (server.host, server.port): {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(%address, auth = config.server.api_key.is_some(), "berth-server listening");
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    reaper.abort();
    match served {
        Ok(()) => {
            tracing::info!("berth-server stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM or SIGINT: stop accepting, let in-flight requests (creates included) finish.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
