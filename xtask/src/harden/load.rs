//! `harden load`: the `harden_load` benchmark of `berth-api` (`api/benches/harden_load.rs` says
//! what it does and checks), on the real engine. `--seconds` bounds its phase of mixed reads;
//! the full run has 500 sandboxes and is built optimised (its figures are the server's),
//! `--small` (CI) 60 sandboxes on the test build, which is already there and whose server is
//! slower and larger: what passes there passes optimised.

use std::process::Command;

/// The bound CI gives the phase of mixed reads.
pub(crate) const SMALL_SECONDS: u64 = 10;
/// Without a bound: the minute the figures are for.
pub(crate) const FULL_SECONDS: u64 = 60;
const SANDBOXES: u64 = 500;
const SMALL_SANDBOXES: u64 = 60;

pub(crate) fn run(bound: super::Bound) -> Result<(), String> {
    crate::test_image::ensure()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    if bound.small {
        command.arg("test").args(crate::WHOLE_WORKSPACE);
    } else {
        command.args(["bench", "-p", "berth-api", "--features", "docker"]);
    }
    command
        .args(["--bench", "harden_load"])
        .env("HARDEN_LOAD_SECONDS", bound.seconds.to_string())
        .env(
            "HARDEN_LOAD_SANDBOXES",
            if bound.small {
                SMALL_SANDBOXES
            } else {
                SANDBOXES
            }
            .to_string(),
        );
    // The benchmark removes what its server made, also when it fails.
    crate::run(&mut command)
}
