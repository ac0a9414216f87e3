//! `harden load` and `harden load-k8s`: the `harden_load` benchmark of `berth-api`
//! (`api/benches/harden_load.rs` says what it does and checks) with the Docker runtime on the
//! real engine, and with the Kubernetes runtime on the test cluster (brought up if it is not,
//! and then taken down again). `--seconds` bounds the phase of mixed reads. The full runs —
//! 500 sandboxes on Docker, 100 Pods on the cluster (its node takes 110) — are built optimised
//! (their figures are the server's); `--small` (CI) runs 60 and 20 on the test build, which is
//! already there and whose server is slower and larger: what passes there passes optimised.

use std::process::Command;

/// The bound CI gives the phase of mixed reads.
pub(crate) const SMALL_SECONDS: u64 = 10;
/// Without a bound: the minute the figures are for.
pub(crate) const FULL_SECONDS: u64 = 60;

pub(crate) fn run(bound: super::Bound) -> Result<(), String> {
    crate::test_image::ensure()?;
    run_bench(bound, "docker", if bound.small { 60 } else { 500 })
}

pub(crate) fn run_on_cluster(bound: super::Bound) -> Result<(), String> {
    crate::test_image::ensure()?;
    crate::k8s_env::on_cluster(|| {
        run_bench(bound, "kubernetes", if bound.small { 20 } else { 100 })
    })
}

fn run_bench(bound: super::Bound, runtime: &str, sandboxes: u32) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    if bound.small {
        command.arg("test").args(crate::WHOLE_WORKSPACE);
    } else {
        command.args(["bench", "-p", "berth-api", "--all-features"]);
    }
    // The benchmark removes what its server made, also when it fails.
    crate::run(
        command
            .args(["--bench", "harden_load"])
            .env("HARDEN_LOAD_RUNTIME", runtime)
            .env("HARDEN_LOAD_SECONDS", bound.seconds.to_string())
            .env("HARDEN_LOAD_SANDBOXES", sandboxes.to_string())
            .env("XTASK_K8S_KUBECONFIG", crate::k8s_env::kubeconfig_path()),
    )
}
