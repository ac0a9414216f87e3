//! Project automation, in plain Rust: `cargo xtask <task>`.
//!
//! - `ci`: everything CI checks — formatting, clippy with warnings denied, the server built with
//!   each runtime feature on its own and with none, the whole test suite.
//! - `test`: the whole test suite (every crate, every feature).
//! - `bench`: the benchmarks that need only Docker; `bench k8s`: the Kubernetes runtime's, on
//!   the test cluster (brought up if it is not, and left up).
//! - `test-image`: builds the image the Docker tests run (`berth-test/busybox:latest`).
//! - `openapi`: rewrites `api/openapi.yaml` from the Rust types.
//! - `k8s-env`: a real single-node Kubernetes for the Kubernetes runtime's tests (`k8s_env`).
//! - `test-k8s`: brings that cluster up (and leaves it up) and runs the Kubernetes runtime's
//!   cluster tests; `test` runs them too, on a cluster it takes down afterwards.
//! - `harden <name>`: fuzzing and the other proofs under hostile input (`harden`).
//! - `release`: the reproducible release archive and its checksums (`release`).
//! - `image`: the server's container image, without a base image (`image`).

mod harden;
mod image;
mod k8s_env;
mod release;
mod test_image;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("test-image") => test_image::ensure(),
        Some("openapi") => openapi(),
        Some("k8s-env") => k8s_env::main(&args[1..]),
        Some("test-k8s") => test_k8s(),
        Some("harden") => harden::main(&args[1..]),
        Some("release") => release::main(&args[1..]),
        Some("image") => image::main(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | test [cargo test args] | bench [k8s] | test-image | openapi | k8s-env | test-k8s | harden | release | image>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `bench`: `cargo bench --workspace` (the Docker benchmarks; the Kubernetes one is
/// `bench = false`, as it needs the cluster). `bench k8s`: that one, on the test cluster, which is
/// brought up if it is not and left up (`cargo xtask k8s-env down` stops it).
fn bench(args: &[String]) -> Result<(), String> {
    let on_cluster = match args {
        [] => false,
        [which] if which == "k8s" => true,
        _ => {
            return Err(format!(
                "bench {}: usage: cargo xtask bench [k8s]",
                args.join(" ")
            ));
        }
    };
    test_image::ensure()?;
    if !on_cluster {
        return cargo(&["bench", "--workspace"]);
    }
    k8s_env::main(&["up".to_owned()])?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(Command::new(cargo)
        .args([
            "bench",
            "-p",
            "berth-api",
            "--features",
            "kubernetes",
            "--bench",
            "k8s_load",
        ])
        .env("XTASK_K8S_KUBECONFIG", k8s_env::kubeconfig_path()))
}

/// Regenerates `api/openapi.yaml` (the drift test compares against it and never writes it).
fn openapi() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "-p",
            "berth-api",
            "--bin",
            "berth-server",
            "--",
            "--print-openapi",
        ])
        .output()
        .map_err(|e| format!("running berth-server --print-openapi: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "berth-server --print-openapi failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/openapi.yaml");
    std::fs::write(&path, &out.stdout).map_err(|e| format!("writing {}: {e}", path.display()))?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

pub(crate) fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])?;
    runtime_features()?;
    cluster_tests_lint()?;
    test(&[])?;
    // Last, when the cluster is down again: the fuzzers replay their corpora and fuzz briefly,
    // schemathesis runs every phase once against a real server.
    harden::main(&["all".to_owned(), "--small".to_owned()])
}

/// `--all-targets` leaves out `test = false` and `bench = false` targets: the cluster tests and
/// the benchmarks only xtask runs are linted by name, with the workspace's flags so the check
/// build is shared.
fn cluster_tests_lint() -> Result<(), String> {
    let mut args = vec!["clippy", "--workspace", "--all-features"];
    for test in CLUSTER_TESTS {
        args.extend_from_slice(&["--test", test]);
    }
    for bench in ["k8s_load", "harden_load"] {
        args.extend_from_slice(&["--bench", bench]);
    }
    args.extend_from_slice(&["--", "-D", "warnings"]);
    cargo(&args)
}

/// Each runtime is a cargo feature of the server: it must build (warnings denied) with each
/// alone and with none, not only with all of them. Check-only, so it reuses the clippy build.
fn runtime_features() -> Result<(), String> {
    for features in [
        &["--features", "docker"][..],
        &["--features", "kubernetes"],
        &[],
    ] {
        let mut args = vec![
            "clippy",
            "-p",
            "berth-api",
            "--all-targets",
            "--no-default-features",
        ];
        args.extend_from_slice(features);
        args.extend_from_slice(&["--", "-D", "warnings"]);
        cargo(&args)?;
    }
    Ok(())
}

/// The whole suite. The Docker tests need the test image, so it is built first; they fail (never
/// skip) when the engine cannot be reached.
fn test(extra: &[String]) -> Result<(), String> {
    test_image::ensure()?;
    sweep_test_leftovers();
    build_both_commands()?;
    // The image tests run the server's container image, packed from the test build.
    image::dev()?;
    let mut args = vec!["test"];
    args.extend_from_slice(WHOLE_WORKSPACE);
    args.extend(extra.iter().map(String::as_str));
    let result = cargo(&args);
    sweep_test_leftovers();
    result?;
    // The whole suite includes the cluster tests; a narrowed run (`cargo xtask test -p x`) not.
    if extra.is_empty() {
        test_on_cluster()?;
    }
    Ok(())
}

/// The Kubernetes runtime's tests on a test cluster brought up for them (built into the cache
/// first if missing) and taken down afterwards, whatever the result. Kept apart from the other
/// tests so the cluster's daemons do not share the two cores with the Docker tests.
fn test_on_cluster() -> Result<(), String> {
    k8s_env::main(&["up".to_owned()])?;
    let result = cluster_tests();
    let down = k8s_env::main(&["down".to_owned(), "--purge".to_owned()]);
    result.and(down)
}

/// The test binaries that need the test cluster. Each is `test = false` in its manifest, so a
/// plain `cargo test --workspace` (no cluster) leaves them out.
const CLUSTER_TESTS: &[&str] = &[
    "k8s_cluster",
    "k8s_subpaths",
    "k8s_objects",
    "k8s_deploy",
    "k8s_faults",
    "k8s_servers",
];

/// Every cargo run of the suite selects the whole workspace with every feature: cargo resolves
/// dependency features per selection, and a `-p` run beside a `--workspace` one compiles every
/// dependency a second time (twice the target directory: a CI run once ran out of disk so).
pub(crate) const WHOLE_WORKSPACE: &[&str] = &["--workspace", "--all-features"];

/// The `berth` command's tests start the server and the server's tests run the command, but
/// cargo builds for a package's tests only that package's binaries: every run of the suite (a
/// narrowed one, the cluster tests alone) first builds the whole workspace's test targets, and so
/// both binaries — which the server image is then packed from.
pub(crate) fn build_both_commands() -> Result<(), String> {
    let mut args = vec!["test", "--no-run"];
    args.extend_from_slice(WHOLE_WORKSPACE);
    cargo(&args)
}

fn cluster_tests() -> Result<(), String> {
    build_both_commands()?;
    // One of them runs the server's image as a Deployment.
    image::dev()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(&cargo);
    command.arg("test").args(WHOLE_WORKSPACE);
    for test in CLUSTER_TESTS {
        command.args(["--test", test]);
    }
    run(command.env("XTASK_K8S_KUBECONFIG", k8s_env::kubeconfig_path()))
}

/// The Kubernetes runtime's tests on the test cluster, which is brought up if it is not and left
/// up (for working on the runtime; `down` stops it).
fn test_k8s() -> Result<(), String> {
    test_image::ensure()?;
    k8s_env::main(&["up".to_owned()])?;
    cluster_tests()
}

/// Removes containers and volumes of earlier test runs that could not clean up (a killed run):
/// everything labelled `berth.test=1`. Each test removes its own; this is the safety net.
fn sweep_test_leftovers() {
    let (containers, volumes) = remove_docker_objects("label=berth.test=1");
    if containers > 0 {
        eprintln!("xtask: removed {containers} leftover test container(s)");
    }
    if volumes > 0 {
        eprintln!("xtask: removed {volumes} leftover test volume(s)");
    }
}

/// Removes the containers (with their anonymous volumes) and the volumes that match the
/// `docker … --filter` `filter`; how many of each.
pub(crate) fn remove_docker_objects(filter: &str) -> (usize, usize) {
    let list = |args: &[&str]| -> Vec<String> {
        Command::new("docker")
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = list(&["ps", "-aq", "--filter", filter]);
    if !containers.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v"])
            .args(&containers)
            .output();
    }
    let volumes = list(&["volume", "ls", "-q", "--filter", filter]);
    if !volumes.is_empty() {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f"])
            .args(&volumes)
            .output();
    }
    (containers.len(), volumes.len())
}

/// The target directory cargo builds into: `CARGO_TARGET_DIR` (relative to the directory cargo
/// was started in) or the workspace's `target`.
pub(crate) fn target_dir(root: &Path) -> Result<PathBuf, String> {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                Ok(dir)
            } else {
                std::env::current_dir()
                    .map(|cwd| cwd.join(dir))
                    .map_err(|e| format!("the current directory: {e}"))
            }
        }
        None => Ok(root.join("target")),
    }
}

/// The workspace's root directory (xtask's parent).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// A file's bytes; the error names it.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// Creates `dir` unless it exists.
pub(crate) fn create_dir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(format!("creating {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Runs cargo (the one that runs this xtask) and fails on a non-zero exit.
fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(Command::new(cargo).args(args))
}

/// Runs a command, echoing it, and fails on a non-zero exit.
pub(crate) fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    eprintln!("$ {shown}");
    let status = command
        .status()
        .map_err(|e| format!("running {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}
