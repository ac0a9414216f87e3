//! `berth`: the command-line client of Berth. For now it validates create requests offline,
//! with exactly the rules the server applies:
//!
//! ```text
//! berth validate request.json [--allowed-host-path /data] [--max-timeout 86400]
//! ```
//!
//! Exit 0 and the validated volumes on success; exit 1 and every violation (field, code,
//! message) otherwise; exit 2 on a usage error.

use std::process::ExitCode;

use berth_core::model::{HostPath, SandboxSpec};
use berth_core::validate::StoragePolicy;
use berth_core::wire::CreateSandboxRequest;

const USAGE: &str = "usage: berth validate <request.json | -> [--allowed-host-path PATH]... [--max-timeout SECONDS]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((command, rest)) if command == "validate" => match validate(rest) {
            Ok(code) => code,
            Err(usage) => {
                eprintln!("berth: {usage}\n{USAGE}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn validate(args: &[String]) -> Result<ExitCode, String> {
    let mut file = None;
    let mut policy = StoragePolicy::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--allowed-host-path" => {
                let value = it.next().ok_or("--allowed-host-path needs a path")?;
                let root = HostPath::new(value)
                    .map_err(|e| format!("--allowed-host-path: {}", e.reason))?;
                policy.allowed_host_roots.push(root);
            }
            "--max-timeout" => {
                let value = it.next().ok_or("--max-timeout needs a number of seconds")?;
                let seconds = value
                    .parse()
                    .map_err(|_| format!("--max-timeout: {value:?} is not a number of seconds"))?;
                policy.max_timeout_seconds = Some(seconds);
            }
            other if file.is_none() && (!other.starts_with('-') || other == "-") => {
                file = Some(other.to_owned())
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let file = file.ok_or("name the request file (or - for standard input)")?;
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| format!("reading standard input: {e}"))?
    } else {
        std::fs::read_to_string(&file).map_err(|e| format!("reading {file}: {e}"))?
    };
    let request: CreateSandboxRequest = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            println!("GENERAL::INVALID_BODY\t{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    match SandboxSpec::from_request(request, &policy) {
        Ok(spec) => {
            println!("valid: {} volume(s)", spec.volumes.len());
            for v in spec.volumes_in_mount_order() {
                let sub = v
                    .sub_path
                    .as_ref()
                    .map_or(String::new(), |s| format!(" subPath={s}"));
                let ro = if v.read_only { " read-only" } else { "" };
                println!(
                    "  {} {} {} -> {}{sub}{ro}",
                    v.name,
                    v.source.kind(),
                    v.source.describe(),
                    v.mount_path
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(violations) => {
            for v in violations.as_slice() {
                println!("{}\t{}\t{}", v.code, v.field, v.message);
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
