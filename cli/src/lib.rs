//! The library behind the `berth` command: a typed async client of the Berth API
//! ([`client::Client`]), the compact `--volume` syntax ([`volume_spec`]), the command line
//! ([`args`], from which completions and the man page are generated too), and the commands
//! themselves ([`commands`]).

pub mod args;
pub mod client;
pub mod commands;
pub mod output;
pub mod settings;
pub mod volume_spec;
