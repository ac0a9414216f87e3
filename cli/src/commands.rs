//! What each subcommand does: read the command line (`args`), talk to the server through
//! [`Client`], print with `output`. Everything a command prints for a script goes to standard
//! output; progress, questions and errors go to standard error.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_core::model::{HostPath, SandboxSpec};
use berth_core::validate::StoragePolicy;
use berth_core::wire;
use clap::CommandFactory;

use crate::args::{
    Cli, Command, ConfigCommand, ConfigKey, Connection, CreateArgs, EndpointArgs, LsArgs, Output,
    RenewArgs, RmArgs, Timeout, ValidateArgs, exit,
};
use crate::client::{Client, ClientError, EndpointOptions, ErrorClass, ListQuery};
use crate::output::{self, OutputError};
use crate::settings::{self, Settings, SettingsError};
use crate::volume_spec::{self, ProcessSecrets, VolumeSpecError};

/// The longest one request may take when nothing says otherwise.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest a create may take when nothing says otherwise: longer than a Berth server's own
/// bound (`server.request_deadline_seconds`, 600 s by default), so that the server answers (a 504
/// naming its bound) rather than the client hanging up, which has the server roll the create back.
const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(660);

/// Every way a command fails, each with its exit status.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A call to the server failed.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The configuration file could not be read or written.
    #[error("{0}")]
    Settings(#[from] SettingsError),
    /// A `--volume` could not be turned into the API's form.
    #[error("--volume: {0}")]
    Volume(#[from] VolumeSpecError),
    /// The answer could not be printed.
    #[error("{0}")]
    Output(#[from] OutputError),
    /// The command line or an input file asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// Some of several operations failed (each was reported already).
    #[error("{failed} of {total} failed")]
    Partly {
        /// How many failed.
        failed: usize,
        /// How many were tried.
        total: usize,
        /// The exit status of the worst failure.
        status: u8,
    },
}

impl CommandError {
    /// The exit status for this failure.
    pub fn exit_status(&self) -> u8 {
        match self {
            Self::Client(e) => client_status(e),
            Self::Settings(_) | Self::Usage(_) | Self::Volume(_) => exit::USAGE,
            Self::Output(_) => exit::UNAVAILABLE,
            Self::Partly { status, .. } => *status,
        }
    }
}

fn client_status(error: &ClientError) -> u8 {
    match error.class() {
        ErrorClass::Usage => exit::USAGE,
        ErrorClass::Client4xx => exit::REFUSED,
        ErrorClass::ServerOrUnreachable => exit::UNAVAILABLE,
    }
}

/// Runs the parsed command line; the result's status is the process's exit status.
pub async fn run(cli: Cli) -> Result<(), CommandError> {
    let Cli {
        command,
        connection,
    } = cli;
    match command {
        Command::Validate(args) => validate(&args),
        Command::Config(command) => configure(&connection, command),
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a write error (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "berth", &mut script);
            write_out(&String::from_utf8_lossy(&script));
            Ok(())
        }
        Command::Man { dir: None } => {
            let mut page = Vec::new();
            // As `--dir` renders it: no `help` subcommand, which has no page of its own.
            let mut command = Cli::command().disable_help_subcommand(true);
            command.build();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|e| CommandError::Usage(format!("cannot render the man page: {e}")))?;
            write_out(&String::from_utf8_lossy(&page));
            Ok(())
        }
        Command::Man { dir: Some(dir) } => {
            clap_mangen::generate_to(Cli::command(), &dir).map_err(|e| {
                CommandError::Usage(format!(
                    "cannot write the man pages into {}: {e}",
                    dir.display()
                ))
            })?;
            eprintln!("wrote the man pages into {}", dir.display());
            Ok(())
        }
        command => {
            let client = connect(&connection)?;
            remote(&client, command).await
        }
    }
}

/// The client the connection options, environment and configuration file describe.
fn connect(connection: &Connection) -> Result<Client, CommandError> {
    let path = config_path(connection)?;
    let stored = Settings::load(&path)?;
    let server = connection
        .server
        .clone()
        .or(stored.server)
        .unwrap_or_else(|| settings::DEFAULT_SERVER.to_owned());
    let api_key = connection.api_key.clone().or(stored.api_key);
    let given = match (connection.request_timeout, stored.request_timeout) {
        (Some(t), _) => Some(t),
        (None, Some(text)) => Some(crate::args::parse_duration(&text).map_err(|e| {
            CommandError::Usage(format!("{}: request-timeout: {e}", path.display()))
        })?),
        (None, None) => None,
    };
    // A timeout given (flag or file) bounds every request; the defaults give a create longer.
    let (timeout, create_timeout) = given
        .map_or((DEFAULT_REQUEST_TIMEOUT, DEFAULT_CREATE_TIMEOUT), |t| {
            (t, t)
        });
    Ok(Client::new(&server, api_key, timeout)?.with_create_timeout(create_timeout))
}

fn config_path(connection: &Connection) -> Result<PathBuf, CommandError> {
    match &connection.config {
        Some(path) => Ok(path.clone()),
        None => Ok(settings::default_path()?),
    }
}

async fn remote(client: &Client, command: Command) -> Result<(), CommandError> {
    let now = chrono::Utc::now;
    match command {
        Command::Create(args) => create(client, *args).await,
        Command::Ls(args) => list(client, args).await,
        Command::Get { id, output } => {
            let sandbox = client.get(&id).await?;
            print(&sandbox, output.output, || {
                output::sandbox_details(&sandbox, now())
            })
        }
        Command::Rm(args) => remove(client, args).await,
        Command::Pause { id } => {
            client.pause(&id).await?;
            write_out(&format!("{id}\n"));
            Ok(())
        }
        Command::Resume { id } => {
            client.resume(&id).await?;
            write_out(&format!("{id}\n"));
            Ok(())
        }
        Command::Renew(args) => renew(client, args).await,
        Command::Label {
            id,
            changes,
            output,
        } => {
            let patch = label_patch(&changes)?;
            let sandbox = client.patch_metadata(&id, &patch).await?;
            print(&sandbox, output.output, || {
                sandbox
                    .metadata
                    .iter()
                    .map(|(k, v)| format!("{k}={v}\n"))
                    .collect()
            })
        }
        Command::Endpoint(args) => endpoint(client, args).await,
        Command::Health { output } => {
            let health = client.health().await?;
            print(&health, output.output, || {
                format!(
                    "{} is {} (runtime {})\n",
                    client.server(),
                    health.status,
                    health.runtime
                )
            })
        }
        Command::Validate(_)
        | Command::Config(_)
        | Command::Completions { .. }
        | Command::Man { .. } => {
            unreachable!("answered without a server")
        }
    }
}

/// Prints `value` as the API's JSON or YAML, or `table()` for people.
fn print<T: serde::Serialize>(
    value: &T,
    format: Output,
    table: impl FnOnce() -> String,
) -> Result<(), CommandError> {
    match output::structured(value, format)? {
        Some(text) => write_out(&text),
        None => write_out(&table()),
    }
    Ok(())
}

fn write_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`berth ls | head`) is not an error worth a message.
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// Reads a request file (`-`: standard input) as JSON, or YAML when it is not JSON.
fn read_request(path: &Path) -> Result<wire::CreateSandboxRequest, CommandError> {
    let text = read_input(path)?;
    parse_request(&text).map_err(|e| CommandError::Usage(format!("{}: {e}", path.display())))
}

fn read_input(path: &Path) -> Result<String, CommandError> {
    let read = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map(|_| text)
    } else {
        std::fs::read_to_string(path)
    };
    read.map_err(|e| CommandError::Usage(format!("reading {}: {e}", path.display())))
}

/// JSON first (what the API takes); YAML otherwise. The error is JSON's when the text looks
/// like JSON, YAML's otherwise, so it points at the real mistake.
fn parse_request(text: &str) -> Result<wire::CreateSandboxRequest, String> {
    parse_request_at(text).map_err(|(field, message)| match field {
        Some(field) => format!("{field}: {message}"),
        None => message,
    })
}

/// [`parse_request`], its error split into the field path (where the text parsed far enough to
/// have one, as the server names it) and the message.
fn parse_request_at(text: &str) -> Result<wire::CreateSandboxRequest, (Option<String>, String)> {
    let mut json = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize(&mut json) {
        Ok(request) => Ok(request),
        Err(e) if text.trim_start().starts_with('{') => {
            let path = e.path().to_string();
            Err(((path != ".").then_some(path), e.into_inner().to_string()))
        }
        Err(_) => serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(text))
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                // YAML's messages name the field themselves.
                let message = message
                    .strip_prefix(&format!("{path}: "))
                    .map_or(message.clone(), str::to_owned);
                ((path != ".").then_some(path), message)
            }),
    }
}

/// The request `berth create` sends: the file's, with the flags applied over it.
pub fn create_request(args: &CreateArgs) -> Result<wire::CreateSandboxRequest, CommandError> {
    let mut request = match &args.file {
        Some(path) => read_request(path)?,
        None => wire::CreateSandboxRequest::default(),
    };
    if let Some(image) = &args.image {
        request.image = Some(wire::ImageSpec {
            uri: image.clone(),
            auth: None,
        });
    }
    match args.timeout {
        Some(Timeout::After(duration)) => {
            request.timeout = Some(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX));
        }
        Some(Timeout::Never) => request.timeout = None,
        None => {}
    }
    let limits = request.resource_limits.get_or_insert_with(BTreeMap::new);
    if let Some(cpu) = &args.cpu {
        limits.insert("cpu".into(), cpu.clone());
    }
    if let Some(memory) = &args.memory {
        limits.insert("memory".into(), memory.clone());
    }
    if !args.env.is_empty() {
        request
            .env
            .get_or_insert_with(BTreeMap::new)
            .extend(args.env.iter().cloned());
    }
    if !args.labels.is_empty() {
        request
            .metadata
            .get_or_insert_with(BTreeMap::new)
            .extend(args.labels.iter().cloned());
    }
    if !args.entrypoint.is_empty() {
        request.entrypoint = Some(args.entrypoint.clone());
    }
    if !args.volumes.is_empty() {
        let mut specs = args.volumes.clone();
        let volumes = request.volumes.get_or_insert_with(Vec::new);
        // A derived name never takes one the file's volumes have.
        volume_spec::assign_names_beside(&mut specs, volumes.iter().map(|v| v.name.clone()));
        for spec in &specs {
            volumes.push(spec.to_wire(&ProcessSecrets)?);
        }
    }
    Ok(request)
}

async fn create(client: &Client, args: CreateArgs) -> Result<(), CommandError> {
    let request = create_request(&args)?;
    let format = args.output.output;
    if args.dry_run {
        let rendered = client.dry_run(&request).await?;
        return print(&rendered, format, || {
            let runtime = serde_norway::to_string(&rendered.runtime).unwrap_or_default();
            format!(
                "{}\nWould send to the runtime:\n{runtime}",
                output::sandbox_details(&rendered.sandbox, chrono::Utc::now())
            )
        });
    }
    // A Berth server answers a create once the sandbox runs (image pull included): on a
    // terminal, a spinner shows the wait.
    let creating = Progress::start("creating the sandbox and waiting for it to run".to_owned());
    let created = client.create(&request).await;
    creating.finish();
    let created = created?;
    if args.wait && created.status.state != wire::SandboxState::Running {
        let progress = Progress::start(format!("waiting for {} to run", created.id));
        let waited = client
            .wait_until_running(&created.id, args.wait_timeout, |s| progress.show(s))
            .await;
        progress.finish();
        // What is printed is the sandbox as it runs now, not the create's earlier answer.
        let running = waited?;
        return print(&running, format, || format!("{}\n", running.id));
    }
    print(&created, format, || format!("{}\n", created.id))
}

/// Shows a create's wait: a spinner on a terminal, a line per state change otherwise.
struct Progress {
    spinner: Option<indicatif::ProgressBar>,
    last: std::cell::Cell<Option<wire::SandboxState>>,
}

impl Progress {
    fn start(message: String) -> Self {
        let spinner = std::io::stderr().is_terminal().then(|| {
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.enable_steady_tick(Duration::from_millis(100));
            spinner.set_message(message);
            spinner
        });
        Self {
            spinner,
            last: std::cell::Cell::new(None),
        }
    }

    fn show(&self, sandbox: &wire::Sandbox) {
        let state = sandbox.status.state;
        if self.last.replace(Some(state)) == Some(state) {
            return;
        }
        let reason = sandbox.status.reason.as_deref().unwrap_or("");
        match &self.spinner {
            Some(spinner) => spinner.set_message(format!("{}: {state:?} {reason}", sandbox.id)),
            None => eprintln!("{}: {state:?} {reason}", sandbox.id),
        }
    }

    fn finish(self) {
        if let Some(spinner) = self.spinner {
            spinner.finish_and_clear();
        }
    }
}

async fn list(client: &Client, args: LsArgs) -> Result<(), CommandError> {
    let query = ListQuery {
        states: args.states.clone(),
        metadata: args.labels.clone(),
        page: args.page,
        page_size: args.page_size,
    };
    let now = chrono::Utc::now();
    if args.all {
        // Every page as one listing, so scripts read one shape whether or not --all is given.
        // Its pagination is that of one page holding them all (a size of at least 1, as the
        // API's page sizes are).
        let items = client.list_all(&query).await?;
        let count = items.len();
        let listing = wire::ListSandboxesResponse {
            items,
            pagination: wire::PaginationInfo {
                page: 1,
                page_size: u32::try_from(count.max(1)).unwrap_or(u32::MAX),
                total_items: count as u64,
                total_pages: 1,
                has_next_page: false,
            },
        };
        return print(&listing, args.output.output, || {
            output::sandbox_table(&listing.items, now)
        });
    }
    let page = client.list(&query).await?;
    print(&page, args.output.output, || {
        let mut text = output::sandbox_table(&page.items, now);
        let p = &page.pagination;
        if p.has_next_page {
            text.push_str(&format!(
                "(page {} of {}, {} sandboxes; --page {} for more, --all for every page)\n",
                p.page,
                p.total_pages,
                p.total_items,
                p.page + 1
            ));
        }
        text
    })
}

async fn remove(client: &Client, args: RmArgs) -> Result<(), CommandError> {
    let ids = if args.labels.is_empty() {
        args.ids
    } else {
        let query = ListQuery {
            metadata: args.labels.clone(),
            ..ListQuery::default()
        };
        let chosen = client.list_all(&query).await?;
        if chosen.is_empty() {
            eprintln!("no sandbox has those labels");
            return Ok(());
        }
        if !args.yes {
            confirm(&chosen)?;
        }
        chosen.into_iter().map(|s| s.id).collect()
    };
    let total = ids.len();
    let mut failed = 0;
    let mut worst = exit::OK;
    for id in ids {
        match client.delete(&id).await {
            Ok(()) => write_out(&format!("{id}\n")),
            Err(e) => {
                failed += 1;
                worst = worst.max(client_status(&e));
                eprintln!("berth: {id}: {e}");
            }
        }
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(CommandError::Partly {
            failed,
            total,
            status: worst,
        })
    }
}

/// Asks before a delete by label; off a terminal there is nobody to ask, so `--yes` is needed.
fn confirm(chosen: &[wire::Sandbox]) -> Result<(), CommandError> {
    if !std::io::stdin().is_terminal() {
        return Err(CommandError::Usage(format!(
            "{} match; not on a terminal, so nobody can confirm: add --yes",
            sandboxes(chosen.len())
        )));
    }
    eprint!(
        "{}Delete {}? [y/N] ",
        output::sandbox_table(chosen, chrono::Utc::now()),
        sandboxes(chosen.len())
    );
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| CommandError::Usage(format!("reading the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CommandError::Usage("nothing deleted".into()))
    }
}

fn sandboxes(count: usize) -> String {
    match count {
        1 => "1 sandbox".to_owned(),
        n => format!("{n} sandboxes"),
    }
}

async fn renew(client: &Client, args: RenewArgs) -> Result<(), CommandError> {
    let until = match (args.for_, args.until) {
        (Some(duration), _) => {
            let duration = chrono::Duration::from_std(duration)
                .map_err(|e| CommandError::Usage(format!("--for: {e}")))?;
            chrono::Utc::now() + duration
        }
        (None, Some(until)) => until,
        (None, None) => unreachable!("clap requires --for or --until"),
    };
    let renewed = client.renew(&args.id, until).await?;
    print(&renewed, args.output.output, || {
        format!(
            "{} expires at {}\n",
            args.id,
            renewed
                .expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    })
}

/// `K=V` sets, `K-` removes: the merge patch `berth label` sends.
pub fn label_patch(changes: &[String]) -> Result<BTreeMap<String, Option<String>>, CommandError> {
    let mut patch = BTreeMap::new();
    for change in changes {
        let (key, value) = match change.split_once('=') {
            Some((key, value)) => (key, Some(value.to_owned())),
            None => match change.strip_suffix('-') {
                Some(key) => (key, None),
                None => {
                    return Err(CommandError::Usage(format!(
                        "{change:?}: write KEY=VALUE to set a label or KEY- to remove it"
                    )));
                }
            },
        };
        if key.is_empty() {
            return Err(CommandError::Usage(format!("{change:?}: the key is empty")));
        }
        if patch.insert(key.to_owned(), value).is_some() {
            return Err(CommandError::Usage(format!(
                "label {key:?} is changed twice"
            )));
        }
    }
    Ok(patch)
}

async fn endpoint(client: &Client, args: EndpointArgs) -> Result<(), CommandError> {
    let options = EndpointOptions {
        use_server_proxy: args.server_proxy,
        expires: args.expires,
    };
    let answer = client.endpoint(&args.id, args.port, options).await?;
    print(&answer, args.output.output, || output::endpoint(&answer))
}

fn validate(args: &ValidateArgs) -> Result<(), CommandError> {
    let mut policy = StoragePolicy::default();
    for root in &args.allowed_host_paths {
        let root = HostPath::new(root).map_err(|e| {
            CommandError::Usage(format!("--allowed-host-path {root}: {}", e.reason))
        })?;
        policy.allowed_host_roots.push(root);
    }
    policy.max_timeout_seconds = args.max_timeout;
    let text = read_input(&args.file)?;
    let request = match parse_request_at(&text) {
        Ok(request) => request,
        Err((field, message)) => {
            // As a violation is printed: code, field ("-" when the text has no shape yet), message.
            let field = field.as_deref().unwrap_or("-");
            write_out(&format!("GENERAL::INVALID_BODY\t{field}\t{message}\n"));
            return Err(CommandError::Partly {
                failed: 1,
                total: 1,
                status: exit::REFUSED,
            });
        }
    };
    match SandboxSpec::from_request(request, &policy) {
        Ok(spec) => {
            let mut text = format!("valid: {} volume(s)\n", spec.volumes.len());
            for v in spec.volumes_in_mount_order() {
                let sub = v
                    .sub_path
                    .as_ref()
                    .map_or(String::new(), |s| format!(" subPath={s}"));
                let ro = if v.read_only { " read-only" } else { "" };
                text.push_str(&format!(
                    "  {} {} {} -> {}{sub}{ro}\n",
                    v.name,
                    v.source.kind(),
                    v.source.describe(),
                    v.mount_path
                ));
            }
            write_out(&text);
            Ok(())
        }
        Err(violations) => {
            let text: String = violations
                .as_slice()
                .iter()
                .map(|v| format!("{}\t{}\t{}\n", v.code, v.field, v.message))
                .collect();
            write_out(&text);
            Err(CommandError::Partly {
                failed: violations.as_slice().len(),
                total: violations.as_slice().len(),
                status: exit::REFUSED,
            })
        }
    }
}

fn configure(connection: &Connection, command: ConfigCommand) -> Result<(), CommandError> {
    let path = config_path(connection)?;
    match command {
        ConfigCommand::Path => {
            write_out(&format!("{}\n", path.display()));
            Ok(())
        }
        ConfigCommand::Get { key, reveal } => {
            if reveal && key != ConfigKey::ApiKey {
                return Err(CommandError::Usage(format!(
                    "--reveal is for api-key; {} is never masked",
                    key_name(key)
                )));
            }
            let settings = Settings::load(&path)?;
            let value = match key {
                ConfigKey::Server => settings.server,
                ConfigKey::RequestTimeout => settings.request_timeout,
                ConfigKey::ApiKey if reveal => settings.api_key,
                ConfigKey::ApiKey => settings.api_key.map(|k| mask(&k)),
            };
            match value {
                Some(value) => {
                    write_out(&format!("{value}\n"));
                    Ok(())
                }
                None => Err(CommandError::Usage(format!(
                    "{}: {} is not set",
                    path.display(),
                    key_name(key)
                ))),
            }
        }
        ConfigCommand::Set { key, value } => {
            let value = match (key, value) {
                (_, Some(value)) => value,
                (ConfigKey::ApiKey, None) => {
                    let mut key = String::new();
                    std::io::stdin()
                        .read_to_string(&mut key)
                        .map_err(|e| CommandError::Usage(format!("reading the key: {e}")))?;
                    key.trim().to_owned()
                }
                (key, None) => {
                    return Err(CommandError::Usage(format!(
                        "give the value of {}",
                        key_name(key)
                    )));
                }
            };
            if value.is_empty() {
                return Err(CommandError::Usage(format!(
                    "{} cannot be empty (`berth config unset {0}` removes it)",
                    key_name(key)
                )));
            }
            match key {
                ConfigKey::Server => {
                    // Checked now, not at the next command.
                    Client::new(&value, None, DEFAULT_REQUEST_TIMEOUT)?;
                }
                ConfigKey::RequestTimeout => {
                    crate::args::parse_duration(&value).map_err(CommandError::Usage)?;
                }
                ConfigKey::ApiKey => {}
            }
            let mut settings = Settings::load(&path)?;
            *slot(&mut settings, key) = Some(value);
            settings.save(&path)?;
            eprintln!("{} set in {}", key_name(key), path.display());
            Ok(())
        }
        ConfigCommand::Unset { key } => {
            let mut settings = Settings::load(&path)?;
            *slot(&mut settings, key) = None;
            settings.save(&path)?;
            Ok(())
        }
    }
}

fn slot(settings: &mut Settings, key: ConfigKey) -> &mut Option<String> {
    match key {
        ConfigKey::Server => &mut settings.server,
        ConfigKey::ApiKey => &mut settings.api_key,
        ConfigKey::RequestTimeout => &mut settings.request_timeout,
    }
}

fn key_name(key: ConfigKey) -> &'static str {
    match key {
        ConfigKey::Server => "server",
        ConfigKey::ApiKey => "api-key",
        ConfigKey::RequestTimeout => "request-timeout",
    }
}

/// A key shown without giving it away: its length and last two characters.
fn mask(key: &str) -> String {
    let tail: String = key
        .chars()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if key.chars().count() <= 8 {
        "********".to_owned()
    } else {
        format!("********{tail} ({} characters)", key.chars().count())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    fn create_args(args: &[&str]) -> CreateArgs {
        let cli =
            Cli::try_parse_from(std::iter::once("berth").chain(args.iter().copied())).unwrap();
        match cli.command {
            Command::Create(args) => *args,
            other => panic!("not a create: {other:?}"),
        }
    }

    #[test]
    fn flags_build_the_request_and_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("request.yaml");
        std::fs::write(
            &file,
            "image: {uri: from-file}\nentrypoint: [sleep, '1']\ntimeout: 600\n\
             resourceLimits: {cpu: '1'}\nmetadata: {team: a}\n\
             volumes:\n- {name: old, host: {path: /data/old}, mountPath: /old}\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let request = create_request(&create_args(&[
            "create",
            "--file",
            file,
            "--image",
            "flag-image",
            "--timeout",
            "none",
            "--memory",
            "1Gi",
            "--label",
            "user=u1",
            "-e",
            "A=b=c",
            "-v",
            "type=pvc,claim=sessions,target=/workspace,subpath=uid-1/s-7",
            "--",
            "sh",
            "-c",
            "true",
        ]))
        .unwrap();
        assert_eq!(request.image.unwrap().uri, "flag-image");
        assert_eq!(request.timeout, None);
        let limits = request.resource_limits.unwrap();
        assert_eq!(limits["cpu"], "1");
        assert_eq!(limits["memory"], "1Gi");
        let metadata = request.metadata.unwrap();
        assert_eq!(
            (metadata["team"].as_str(), metadata["user"].as_str()),
            ("a", "u1")
        );
        assert_eq!(request.env.unwrap()["A"], "b=c");
        assert_eq!(request.entrypoint.unwrap(), ["sh", "-c", "true"]);
        let volumes = request.volumes.unwrap();
        assert_eq!(volumes.len(), 2);
        assert_eq!(volumes[0].name, "old");
        assert_eq!(volumes[1].name, "workspace");
        assert_eq!(volumes[1].pvc.as_ref().unwrap().claim_name, "sessions");
        assert_eq!(volumes[1].sub_path.as_deref(), Some("uid-1/s-7"));
    }

    #[test]
    fn a_derived_name_never_takes_one_of_the_files_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("request.json");
        std::fs::write(
            &file,
            r#"{"image": {"uri": "i"}, "volumes": [{"name": "workspace", "host": {"path": "/data"}, "mountPath": "/data"}]}"#,
        )
        .unwrap();
        let request = create_request(&create_args(&[
            "create",
            "--file",
            file.to_str().unwrap(),
            "-v",
            "type=pvc,claim=sessions,target=/workspace",
        ]))
        .unwrap();
        let names: Vec<String> = request
            .volumes
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["workspace", "workspace-2"]);
    }

    #[test]
    fn a_timeout_is_sent_in_seconds_and_limits_are_always_present() {
        let request = create_request(&create_args(&[
            "create",
            "--image",
            "i",
            "--timeout",
            "1h30m",
        ]))
        .unwrap();
        assert_eq!(request.timeout, Some(5400));
        assert_eq!(request.resource_limits, Some(BTreeMap::new()));
    }

    #[test]
    fn json_errors_point_into_json_and_yaml_is_accepted() {
        let error = parse_request("{\"image\": {\"uri\": 1}}").unwrap_err();
        assert!(error.contains("line 1"), "{error}");
        let request = parse_request("image:\n  uri: busybox\n").unwrap();
        assert_eq!(request.image.unwrap().uri, "busybox");
        let error = parse_request("image: {uri: a}\nbogus: 1\n").unwrap_err();
        assert!(error.contains("bogus"), "{error}");
    }

    #[test]
    fn label_changes_are_a_merge_patch() {
        let patch = label_patch(&["a=1".into(), "b-".into(), "c=x=y".into(), "d=".into()]).unwrap();
        assert_eq!(patch["a"].as_deref(), Some("1"));
        assert_eq!(patch["b"], None);
        assert_eq!(patch["c"].as_deref(), Some("x=y"));
        assert_eq!(patch["d"].as_deref(), Some(""));
        for bad in [&["a"][..], &["=1"], &["-"], &["a=1", "a-"]] {
            let changes: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            let error = label_patch(&changes).unwrap_err();
            assert_eq!(error.exit_status(), exit::USAGE, "{bad:?}");
        }
    }

    #[test]
    fn masked_keys_keep_only_their_tail() {
        assert_eq!(mask("short"), "********");
        let masked = mask("0123456789abcdef");
        assert_eq!(masked, "********ef (16 characters)");
        assert!(!masked.contains("0123"));
    }

    #[test]
    fn secrets_are_refused_on_the_command_line() {
        let parsed = Cli::try_parse_from([
            "berth",
            "create",
            "--image",
            "i",
            "--volume",
            "type=ossfs,bucket=b,endpoint=e,target=/o,access-key-id=a,access-key-secret=s",
        ]);
        let error = parsed.unwrap_err().to_string();
        assert!(error.contains("secret-env"), "{error}");
    }
}
