//! `berth`: the command-line client of a Berth server (and offline validation of requests).
//! The commands live in the library (`berth_cli::commands`); this is only the process around
//! them: parse, run, print the error, exit with its status.

use std::process::ExitCode;

use clap::Parser;

use berth_cli::args::Cli;
use berth_cli::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("berth: cannot start: {e}");
            return ExitCode::from(berth_cli::args::exit::UNAVAILABLE);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `validate` and `rm` have printed each failure already.
            if !matches!(error, commands::CommandError::Partly { .. }) {
                eprintln!("berth: {error}");
            }
            ExitCode::from(error.exit_status())
        }
    }
}
