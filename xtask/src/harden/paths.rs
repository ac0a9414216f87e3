//! `harden paths`: the symlink-exchange race (`renameat2(RENAME_EXCHANGE)` of a session directory
//! and a link to `/`, without pause) at the safe-path level and through full creates on the real
//! engine — the two tests the suite runs with 10 000 resolutions and 40 creates, here with
//! 100 000 and 200 (`--small`: the suite's). Zero escapes; resolutions, refusals and swaps
//! counted. Bounded by its counts, not by `--seconds`.

use std::process::Command;

pub(crate) fn run(bound: super::Bound) -> Result<(), String> {
    crate::test_image::ensure()?;
    let (resolutions, creates) = if bound.small {
        (10_000, 40)
    } else {
        (100_000, 200)
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    crate::run(
        Command::new(cargo)
            .arg("test")
            .args(crate::WHOLE_WORKSPACE)
            .args(["--test", "safe_path_attacks", "--test", "docker_attacks"])
            .args(["exchange_race", "--", "--nocapture"])
            .env("HARDEN_RACE_ITERATIONS", resolutions.to_string())
            .env("HARDEN_RACE_CREATES", creates.to_string()),
    )
}
