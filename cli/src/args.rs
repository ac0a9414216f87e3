//! The command line of `berth`, as clap reads it. In the library so that completions and the
//! man page are generated from the very definitions the binary parses.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit statuses, the same for every subcommand.
pub mod exit {
    /// The command did what was asked.
    pub const OK: u8 = 0;
    /// The server refused the request (a 4xx), or `validate` found violations.
    pub const REFUSED: u8 = 1;
    /// The command line was wrong (clap's own status for usage errors).
    pub const USAGE: u8 = 2;
    /// The server failed (a 5xx), could not be reached, or did not answer in time.
    pub const UNAVAILABLE: u8 = 3;
}

const AFTER_HELP: &str = "\
Connection: --server (or OPEN_SANDBOX_DOMAIN, or `berth config set server`), default
127.0.0.1:8080; the API key from OPEN_SANDBOX_API_KEY or `berth config set api-key` (which
reads it from standard input), better than --api-key, which other users can see.

Exit status: 0 done; 1 refused by the server (4xx) or invalid request; 2 usage error;
3 server error (5xx), unreachable or timed out.";

/// `berth`: drive a Berth (or any OpenSandbox Lifecycle API v1) server from a terminal.
#[derive(Debug, Parser)]
#[command(name = "berth", version = berth_core::version::VERSION_LINE.as_str(), after_help = AFTER_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// How to reach the server.
    #[command(flatten)]
    pub connection: Connection,
}

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Server address: host:port or an http(s) URL.
    #[arg(long, global = true, env = "OPEN_SANDBOX_DOMAIN", value_name = "URL")]
    pub server: Option<String>,
    /// API key (prefer OPEN_SANDBOX_API_KEY or `berth config set api-key`).
    #[arg(
        long,
        global = true,
        env = "OPEN_SANDBOX_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// Longest wait for one request to the server, e.g. 30s or 2m.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    pub request_timeout: Option<std::time::Duration>,
    /// Configuration file (default: $XDG_CONFIG_HOME/berth/config.toml or
    /// ~/.config/berth/config.toml).
    #[arg(long, global = true, env = "BERTH_CLI_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// How read commands print what they got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Columns for people.
    #[default]
    Table,
    /// The API's JSON.
    Json,
    /// The API's JSON, as YAML.
    Yaml,
}

/// The output option every read command takes.
#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArg {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a sandbox (and wait until it runs).
    #[command(after_help = CREATE_EXAMPLES)]
    Create(Box<CreateArgs>),
    /// List sandboxes, newest first.
    #[command(visible_alias = "list", after_help = LS_EXAMPLES)]
    Ls(LsArgs),
    /// Show one sandbox.
    #[command(after_help = "Example:\n  berth get 3f0c2a4e-...  -o yaml")]
    Get {
        /// Sandbox id.
        id: String,
        /// How to print the answer.
        #[command(flatten)]
        output: OutputArg,
    },
    /// Delete sandboxes, by id or by label.
    #[command(visible_alias = "delete", after_help = RM_EXAMPLES)]
    Rm(RmArgs),
    /// Pause a sandbox (Docker only: a Pod cannot pause).
    #[command(after_help = "Example:\n  berth pause 3f0c2a4e-...")]
    Pause {
        /// Sandbox id.
        id: String,
    },
    /// Resume a paused sandbox.
    #[command(after_help = "Example:\n  berth resume 3f0c2a4e-...")]
    Resume {
        /// Sandbox id.
        id: String,
    },
    /// Move a sandbox's expiry.
    #[command(after_help = RENEW_EXAMPLES)]
    Renew(RenewArgs),
    /// Set or remove labels (metadata) of a sandbox: K=V sets, K- removes.
    #[command(after_help = LABEL_EXAMPLES)]
    Label {
        /// Sandbox id.
        id: String,
        /// K=V to set, K- to remove.
        #[arg(required = true, value_name = "K=V|K-")]
        changes: Vec<String>,
        /// How to print the answer.
        #[command(flatten)]
        output: OutputArg,
    },
    /// Where a port of a sandbox can be reached.
    #[command(after_help = ENDPOINT_EXAMPLES)]
    Endpoint(EndpointArgs),
    /// Check that the server answers and its runtime is reachable.
    #[command(
        after_help = "Examples:\n  berth health --server berth.example:8080\n  berth health -o json"
    )]
    Health {
        /// How to print the answer.
        #[command(flatten)]
        output: OutputArg,
    },
    /// Validate a create request offline, with the server's own rules and codes.
    #[command(after_help = VALIDATE_EXAMPLES)]
    Validate(ValidateArgs),
    /// Read or write the configuration file.
    #[command(
        subcommand,
        after_help = "Examples:\n  berth config set server https://berth.example\n  berth config get server"
    )]
    Config(ConfigCommand),
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  berth completions bash > /etc/bash_completion.d/berth")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write every page (one per subcommand) into a directory.
    #[command(
        after_help = "Examples:\n  berth man > /usr/local/share/man/man1/berth.1\n  berth man --dir /usr/local/share/man/man1"
    )]
    Man {
        /// Write berth.1 and a page per subcommand (berth-create.1, …) into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

const CREATE_EXAMPLES: &str = "\
Examples:
  berth create --image python:3.12 --timeout 1h -- sleep infinity
  berth create --image python:3.12 --cpu 500m --memory 512Mi --env MODE=dev --label user=u1 \\
      --volume type=pvc,claim=sessions,target=/workspace,subpath=uid-1/session-7 \\
      -- python -m http.server
  berth create --image busybox --volume type=host,source=/data/skills,target=/skills,readonly \\
      -- sleep infinity
  OSS_SECRET=... berth create --image busybox \\
      --volume type=ossfs,bucket=my-bucket,endpoint=oss.example,target=/mnt/oss,access-key-id=AK,secret-env=OSS_SECRET \\
      -- sleep infinity
  berth create --file request.yaml --dry-run -o yaml

--volume takes comma-separated key=value pairs, as Docker's --mount (quote a value holding a
comma: \"path=\"\"/a,b\"\"\"). Keys: type (pvc|host|nfs|ossfs), name, target, subpath, readonly;
pvc: claim, create, delete-on-termination, storage-class, size, access-mode; host: source;
nfs: server, path, nfs-opt; ossfs: bucket, endpoint, version, ossfs-opt, access-key-id or
access-key-id-env, secret-env or secret-file (without them: OSS_ACCESS_KEY_ID and
OSS_ACCESS_KEY_SECRET from the environment; a secret is never taken on the command line).";

const LS_EXAMPLES: &str = "\
Examples:
  berth ls
  berth ls --state running --label user=u1
  berth ls --all -o json";

const RM_EXAMPLES: &str = "\
Examples:
  berth rm 3f0c2a4e-... 7d1b9c20-...
  berth rm --label session=s-7          # asks before deleting (--yes to skip)";

const RENEW_EXAMPLES: &str = "\
Examples:
  berth renew 3f0c2a4e-... --for 2h
  berth renew 3f0c2a4e-... --until 2026-12-01T18:00:00Z";

const LABEL_EXAMPLES: &str = "\
Examples:
  berth label 3f0c2a4e-... owner=ana stage=review
  berth label 3f0c2a4e-... stage-";

const ENDPOINT_EXAMPLES: &str = "\
Examples:
  berth endpoint 3f0c2a4e-... 8080
  berth endpoint 3f0c2a4e-... 44772 --server-proxy
  berth endpoint 3f0c2a4e-... 8080 --expires 1h     # a signed route, usable without the key";

const VALIDATE_EXAMPLES: &str = "\
Examples:
  berth validate request.json
  berth validate request.yaml --allowed-host-path /data --max-timeout 86400
  cat request.json | berth validate -";

/// `berth create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Container image.
    #[arg(long, required_unless_present = "file", value_name = "IMAGE")]
    pub image: Option<String>,
    /// The whole request as JSON or YAML (`-`: standard input); flags given beside it override
    /// or add to it.
    #[arg(long, short, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Lifetime, e.g. 30m, 1h, 2h30m; `none` for no expiry.
    #[arg(long, value_name = "DURATION|none", value_parser = parse_timeout)]
    pub timeout: Option<Timeout>,
    /// CPU limit, e.g. 500m or 2.
    #[arg(long, value_name = "QUANTITY")]
    pub cpu: Option<String>,
    /// Memory limit, e.g. 512Mi.
    #[arg(long, value_name = "QUANTITY")]
    pub memory: Option<String>,
    /// Environment variable of the sandbox (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_pair)]
    pub env: Vec<(String, String)>,
    /// Label (metadata) of the sandbox (repeatable).
    #[arg(long = "label", short = 'l', value_name = "K=V", value_parser = parse_pair)]
    pub labels: Vec<(String, String)>,
    /// A volume, Docker `--mount` style (repeatable; see below).
    #[arg(long = "volume", short = 'v', value_name = "SPEC")]
    pub volumes: Vec<crate::volume_spec::VolumeSpec>,
    /// Show what the server would make (the container body or Pod) and create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// After the create, wait until the sandbox runs (a Berth server answers once it runs; other
    /// servers may answer while it is Pending), then print it as it is.
    #[arg(long, conflicts_with = "dry_run")]
    pub wait: bool,
    /// Longest wait with --wait.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m", requires = "wait")]
    pub wait_timeout: std::time::Duration,
    /// How to print the answer.
    #[command(flatten)]
    pub output: OutputArg,
    /// The sandbox's entrypoint, after `--`.
    #[arg(last = true, value_name = "ENTRYPOINT")]
    pub entrypoint: Vec<String>,
}

/// A sandbox lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Expires this long after the create.
    After(std::time::Duration),
    /// Never expires.
    Never,
}

/// `berth ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only sandboxes in this state (repeatable, any of them): pending, running, paused, ...
    #[arg(long = "state", short = 's', value_name = "STATE")]
    pub states: Vec<String>,
    /// Only sandboxes with this label (repeatable, all of them).
    #[arg(long = "label", short = 'l', value_name = "K=V", value_parser = parse_pair)]
    pub labels: Vec<(String, String)>,
    /// Page number, from 1.
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub page: Option<u32>,
    /// Sandboxes per page (1..=200).
    #[arg(long, value_name = "N")]
    pub page_size: Option<u32>,
    /// Every page.
    #[arg(long)]
    pub all: bool,
    /// How to print the answer.
    #[command(flatten)]
    pub output: OutputArg,
}

/// `berth rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Sandbox ids.
    #[arg(
        value_name = "ID",
        required_unless_present = "labels",
        conflicts_with = "labels"
    )]
    pub ids: Vec<String>,
    /// Delete every sandbox with these labels (all of them).
    #[arg(long = "label", short = 'l', value_name = "K=V", value_parser = parse_pair)]
    pub labels: Vec<(String, String)>,
    /// Do not ask before deleting by label.
    #[arg(long, short)]
    pub yes: bool,
}

/// `berth renew`.
#[derive(Debug, Args)]
#[group(id = "when", required = true, multiple = false)]
pub struct RenewArgs {
    /// Sandbox id.
    pub id: String,
    /// New expiry this long from now, e.g. 1h.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration, group = "when")]
    pub for_: Option<std::time::Duration>,
    /// New expiry at this time (RFC 3339, e.g. 2026-12-01T18:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time, group = "when")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// How to print the answer.
    #[command(flatten)]
    pub output: OutputArg,
}

/// `berth endpoint`.
#[derive(Debug, Args)]
pub struct EndpointArgs {
    /// Sandbox id.
    pub id: String,
    /// Port in the sandbox.
    pub port: u16,
    /// Through the server proxy (reachable wherever the server is).
    #[arg(long, conflicts_with = "expires")]
    pub server_proxy: bool,
    /// A signed route valid this long (e.g. 1h) or until this time (RFC 3339), usable without
    /// the API key.
    #[arg(long, value_name = "DURATION|TIME", value_parser = parse_expiry)]
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
    /// How to print the answer.
    #[command(flatten)]
    pub output: OutputArg,
}

/// `berth validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The request, JSON or YAML (`-`: standard input).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// A root under which host volumes are allowed, as the server's
    /// `storage.allowed_host_paths` (repeatable).
    #[arg(long = "allowed-host-path", value_name = "PATH")]
    pub allowed_host_paths: Vec<String>,
    /// Longest timeout accepted, in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub max_timeout: Option<u64>,
}

/// `berth config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Set a key: `server` or `api-key` (read from standard input when no value is given, so it
    /// stays off the command line).
    #[command(
        after_help = "Examples:\n  berth config set server https://berth.example\n  berth config set api-key < key.txt"
    )]
    Set {
        /// `server`, `api-key` or `request-timeout`.
        key: ConfigKey,
        /// The value (for api-key: leave it out and pipe the key in).
        value: Option<String>,
    },
    /// Print a key (the API key is printed masked unless --reveal).
    #[command(after_help = "Example:\n  berth config get server")]
    Get {
        /// `server`, `api-key` or `request-timeout`.
        key: ConfigKey,
        /// Print the API key itself.
        #[arg(long)]
        reveal: bool,
    },
    /// Remove a key.
    #[command(after_help = "Example:\n  berth config unset api-key")]
    Unset {
        /// `server`, `api-key` or `request-timeout`.
        key: ConfigKey,
    },
    /// Print where the configuration file is.
    #[command(after_help = "Example:\n  berth config path")]
    Path,
}

/// Keys of the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigKey {
    /// The server address.
    Server,
    /// The API key.
    ApiKey,
    /// Longest wait for one request.
    RequestTimeout,
}

/// `1h`, `30m`, `2h30m`, `90s`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration such as 30s, 5m or 1h30m ({e})"))?;
    if duration.is_zero() {
        return Err(format!("{text:?}: a duration must be longer than zero"));
    }
    Ok(duration)
}

fn parse_timeout(text: &str) -> Result<Timeout, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Timeout::Never);
    }
    let duration = parse_duration(text)?;
    // The API counts a sandbox's timeout in whole seconds: a fraction would be cut silently.
    if duration.subsec_nanos() != 0 {
        return Err(format!(
            "{text:?}: a sandbox timeout is whole seconds (e.g. 90s, 10m, 1h)"
        ));
    }
    Ok(Timeout::After(duration))
}

/// An RFC 3339 time, e.g. `2026-12-01T18:00:00Z`.
pub fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-12-01T18:00:00Z ({e})"))
}

fn parse_expiry(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(duration) = parse_duration(text) {
        let duration = chrono::Duration::from_std(duration).map_err(|e| e.to_string())?;
        return Ok(chrono::Utc::now() + duration);
    }
    parse_time(text)
        .map_err(|_| format!("{text:?} is neither a duration (1h) nor an RFC 3339 time"))
}

/// `K=V`, with a non-empty key.
pub fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every subcommand, at any depth, shows at least one example in its `--help`.
    #[test]
    fn every_subcommand_has_examples() {
        fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in command.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                let help = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                if !help.contains("Example") {
                    missing.push(path.clone());
                }
                check(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        check(&Cli::command(), "berth", &mut missing);
        assert!(missing.is_empty(), "no examples: {missing:?}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_times_and_pairs_parse_with_clear_errors() {
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("longer than zero")
        );
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("30s, 5m or 1h30m")
        );
        assert_eq!(parse_timeout("NONE").unwrap(), Timeout::Never);
        assert_eq!(
            parse_timeout("1m30s").unwrap(),
            Timeout::After(std::time::Duration::from_secs(90))
        );
        assert!(
            parse_timeout("500ms")
                .unwrap_err()
                .contains("whole seconds")
        );
        assert!(parse_timeout("90.5s").is_err());
        assert_eq!(
            parse_time("2026-12-01T19:00:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-12-01T18:00:00+00:00"
        );
        assert!(parse_time("tomorrow").unwrap_err().contains("RFC 3339"));
        let in_an_hour = parse_expiry("1h").unwrap() - chrono::Utc::now();
        assert!((3590..=3600).contains(&in_an_hour.num_seconds()));
        assert_eq!(parse_pair("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_pair("=b").is_err() && parse_pair("ab").is_err());
    }
}
