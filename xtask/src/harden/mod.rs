//! `cargo xtask harden <name> [--seconds N]`: the repeatable proofs under hostile input, each
//! bounded in time (`--seconds`, per target where a command has several). CI runs each with its
//! small bound (`harden all --small`).
//!
//! - `fuzz`: the fuzz targets in `fuzz/` (libFuzzer through libfuzzer-sys, without sanitizers,
//!   built by xtask on the stable toolchain); their corpora, kept in `fuzz/corpus/`, are replayed
//!   first.
//! - `api-fuzz`, `api-fuzz-k8s`: schemathesis against `/openapi.json` of a real server, on the
//!   real engine and with the Kubernetes runtime on the test cluster.
//! - `load`, `load-k8s`: a real server under load, slow clients and exhaustion, on the real
//!   engine and on the test cluster.
//! - `paths`: the symlink-exchange race at the safe-path level and through full creates.

mod api_fuzz;
mod fuzz;
mod load;
mod paths;

/// How long a command may run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    /// Seconds, per target where a command has several.
    pub(crate) seconds: u64,
    /// CI's bound (`--small`): a command may also size its work down.
    pub(crate) small: bool,
}

/// The commands, each with the bound CI gives it and its own (seconds).
const COMMANDS: &[(&str, u64, u64)] = &[
    ("fuzz", fuzz::SMALL_SECONDS, 600),
    ("api-fuzz", api_fuzz::SMALL_SECONDS, 600),
    ("api-fuzz-k8s", api_fuzz::SMALL_SECONDS, 600),
    ("load", load::SMALL_SECONDS, load::FULL_SECONDS),
    ("load-k8s", load::SMALL_SECONDS, load::FULL_SECONDS),
    // Bounded by its counts.
    ("paths", 0, 0),
];

pub(crate) fn main(args: &[String]) -> Result<(), String> {
    let usage = || {
        let names: Vec<&str> = COMMANDS.iter().map(|(name, ..)| *name).collect();
        format!(
            "usage: cargo xtask harden <{} | all> [--seconds N | --small]",
            names.join(" | ")
        )
    };
    let Some((name, rest)) = args.split_first() else {
        return Err(usage());
    };
    let mut seconds = None;
    let mut small = false;
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--small" => small = true,
            "--seconds" => {
                let value = it.next().ok_or_else(usage)?;
                seconds = Some(
                    value
                        .parse::<u64>()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| format!("--seconds {value}: a number of seconds above 0"))?,
                );
            }
            _ => return Err(usage()),
        }
    }
    let chosen: Vec<(&str, u64, u64)> = COMMANDS
        .iter()
        .copied()
        .filter(|(command, ..)| name == "all" || name == command)
        .collect();
    if chosen.is_empty() {
        return Err(usage());
    }
    for (command, small_seconds, full_seconds) in chosen {
        let bound = Bound {
            seconds: match (seconds, small) {
                (Some(s), _) => s,
                (None, true) => small_seconds,
                (None, false) => full_seconds,
            },
            small,
        };
        if bound.seconds == 0 {
            eprintln!("xtask: harden {command}");
        } else {
            eprintln!("xtask: harden {command} ({} s)", bound.seconds);
        }
        match command {
            "fuzz" => fuzz::run(bound)?,
            "api-fuzz" => api_fuzz::run(bound)?,
            "api-fuzz-k8s" => api_fuzz::run_on_cluster(bound)?,
            "load" => load::run(bound)?,
            "load-k8s" => load::run_on_cluster(bound)?,
            "paths" => paths::run(bound)?,
            _ => unreachable!("every command is matched"),
        }
    }
    Ok(())
}
