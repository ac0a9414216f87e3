//! What `berth --version` and `berth-server --version` print: the workspace version and the
//! commit the binary was built from.

use std::sync::LazyLock;

/// The commit, as `cargo xtask release` and `cargo xtask image` pass it (`BERTH_COMMIT`) to the
/// build; a plain `cargo build` is not told, and says so.
pub const COMMIT: &str = match option_env!("BERTH_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// `0.1.0 (commit 5c326cb…)`.
pub static VERSION_LINE: LazyLock<String> =
    LazyLock::new(|| format!("{} (commit {COMMIT})", env!("CARGO_PKG_VERSION")));
