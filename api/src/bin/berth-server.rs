//! `berth-server`: the Berth HTTP server.
//!
//! ```text
//! berth-server [--config FILE]      serve (config also from BERTH_CONFIG and BERTH_* variables)
//! berth-server --print-openapi      print the OpenAPI document (YAML)
//! berth-server --version            version and commit
//! ```
//!
//! Exit codes: 0 after a shutdown (SIGTERM/SIGINT; a warning says when it was cut short by
//! `server.shutdown_timeout_seconds`), 1 when the runtime cannot start, 2 for a configuration
//! error (the message names the key). Each runtime is a cargo feature (`docker`, `kubernetes`);
//! see ARCHITECTURE.md, "Configuration".

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use berth_api::config::{Config, LogFormat};
use berth_api::{AppState, reaper, router};
use berth_core::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// Berth's HTTP server: the OpenSandbox Lifecycle API v1 over Docker or Kubernetes.
#[derive(clap::Parser)]
#[command(
    name = "berth-server",
    version = berth_core::version::VERSION_LINE.as_str(),
    after_help = "Every configuration key can be set from the environment as BERTH_<SECTION>__<KEY> \
(docs/configuration.md). Exit status: 0 after a shutdown, 1 when the runtime cannot start, 2 for a \
usage or configuration error."
)]
struct Args {
    /// The configuration file (TOML).
    #[arg(long, env = "BERTH_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Print the OpenAPI document (YAML) and exit.
    #[arg(long)]
    print_openapi: bool,
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    if args.print_openapi {
        print!("{}", berth_api::openapi::yaml());
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(args.config.as_deref(), std::env::vars()) {
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
    // `Config::load` refused a filter that does not parse.
    let filter = tracing_subscriber::EnvFilter::try_new(&config.server.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.server.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: Config) -> ExitCode {
    let runtime = match start_runtime(&config).await {
        Ok(r) => r,
        Err(code) => return code,
    };
    let capabilities = runtime.capabilities();
    tracing::info!(
        runtime = %capabilities.runtime,
        engine = capabilities.engine_version.as_deref().unwrap_or("unknown"),
        backends = ?capabilities.volume_backends,
        pause = capabilities.pause,
        details = ?capabilities.details,
        "runtime capabilities"
    );
    let state = AppState::new(runtime, config.policy())
        .with_api_key(config.server.api_key.clone(), config.server.metrics_public)
        .with_request_deadline(config.request_deadline())
        .with_proxy(config.proxy_options());
    let reaper = tokio::spawn(reaper::run(state.clone(), state.clock.clone()));
    let address = std::net::SocketAddr::new(config.server.host, config.server.port);
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth-server: cannot listen on {address} (server.host, server.port): {e}");
            return ExitCode::from(2);
        }
    };
    let options = config.serve_options();
    // Room for the connections and what the server itself keeps open (store, engine, logs).
    let needed = options.max_connections as u64 + 256;
    if let Some(limit) = berth_api::serve::raise_open_file_limit()
        && limit < needed
    {
        tracing::warn!(
            open_file_limit = limit,
            max_connections = options.max_connections,
            "the open-file limit is below server.max_connections plus 256: past it, new connections fail to be accepted; raise the hard limit (LimitNOFILE=, ulimit -Hn) or lower server.max_connections"
        );
    }
    tracing::info!(%address, auth = config.server.api_key.is_some(), "berth-server listening");
    // SIGTERM/SIGINT cancels `stopping`; the shutdown bound counts from then and covers both
    // waits below: axum's for open connections, then the detached calls'.
    let bound = config.shutdown_timeout();
    let stopping = CancellationToken::new();
    let signalled_at = Arc::new(OnceLock::new());
    tokio::spawn({
        let (stopping, signalled_at) = (stopping.clone(), Arc::clone(&signalled_at));
        async move {
            shutdown_signal().await;
            let _ = signalled_at.set(Instant::now());
            stopping.cancel();
        }
    });
    let server =
        berth_api::serve::serve(listener, router(state.clone()), options, stopping.clone());
    // A connection that never finishes must not hold the shutdown past the bound.
    tokio::select! {
        () = server => {}
        () = async { stopping.cancelled().await; tokio::time::sleep(bound).await } => {
            tracing::warn!(
                shutdown_timeout_seconds = bound.as_secs(),
                "shutdown: connections still open at server.shutdown_timeout_seconds; closing them"
            );
        }
    }
    reaper.abort();
    // Mutating calls run detached from their connections: they get what is left of the bound.
    let left = bound.saturating_sub(signalled_at.get().map_or(Duration::ZERO, Instant::elapsed));
    let finished = state.finish_in_flight(left).await;
    // What this replica holds for others (a cluster's reaper Lease) is given up last, briefly:
    // if that fails, it runs out on its own.
    if tokio::time::timeout(Duration::from_secs(5), state.runtime.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: the runtime did not stop within 5 s");
    }
    if finished {
        tracing::info!("berth-server stopped: every call in flight finished");
    } else {
        tracing::warn!(
            shutdown_timeout_seconds = bound.as_secs(),
            "berth-server stopped with calls still running at server.shutdown_timeout_seconds; a create cut off is rolled back at the next start"
        );
    }
    ExitCode::SUCCESS
}

/// Starts the configured runtime; the exit code when it cannot start.
async fn start_runtime(config: &Config) -> Result<Arc<dyn Runtime>, ExitCode> {
    match config.runtime.kind {
        #[cfg(feature = "docker")]
        berth_api::config::RuntimeKind::Docker => start_docker(config).await,
        #[cfg(feature = "kubernetes")]
        berth_api::config::RuntimeKind::Kubernetes => start_kubernetes(config).await,
        // `Config::load` refuses a runtime this build cannot run.
        #[allow(
            unreachable_patterns,
            reason = "reached only in builds without a runtime"
        )]
        kind => {
            eprintln!(
                "berth-server: runtime.type = \"{}\" cannot run in this build",
                kind.name()
            );
            Err(ExitCode::from(2))
        }
    }
}

#[cfg(feature = "kubernetes")]
async fn start_kubernetes(config: &Config) -> Result<Arc<dyn Runtime>, ExitCode> {
    let settings = config.kubernetes_config().map_err(|e| {
        eprintln!("berth-server: {e}");
        ExitCode::from(2)
    })?;
    match berth_k8s::runtime::KubernetesRuntime::connect(settings).await {
        Ok(runtime) => Ok(Arc::new(runtime)),
        Err(e) => {
            eprintln!("berth-server: {e}");
            Err(match e {
                berth_k8s::runtime::StartupError::Kubeconfig { .. } => ExitCode::from(2),
                berth_k8s::runtime::StartupError::Unreachable(_) => ExitCode::FAILURE,
            })
        }
    }
}

#[cfg(feature = "docker")]
async fn start_docker(config: &Config) -> Result<Arc<dyn Runtime>, ExitCode> {
    use berth_docker::{DockerRuntime, StartupError};
    match DockerRuntime::start(config.docker_config()).await {
        Ok(docker) => Ok(Arc::new(docker)),
        Err(e) => {
            eprintln!("berth-server: {e}");
            let config_problem = matches!(
                e,
                StartupError::AllowedRoot { .. }
                    | StartupError::Ossfs { .. }
                    | StartupError::Network { .. }
                    | StartupError::StateDir { .. }
            );
            Err(if config_problem {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            })
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
