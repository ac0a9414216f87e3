//! `harden fuzz`: the libFuzzer targets of `fuzz/` (its own crate, outside the workspace), each
//! replayed on its kept inputs and then fuzzed for the bound.
//!
//! # How, on the stable toolchain
//!
//! libFuzzer needs only SanitizerCoverage instrumentation, and rustc's stable codegen options
//! give it (`-Cpasses=sancov-module` and `-Cllvm-args=-sanitizer-coverage-*`); the sanitizers
//! themselves (`-Zsanitizer`) are what needs nightly, and Berth's targets are safe Rust whose bugs
//! are panics, hangs and wrong answers, not memory errors. So this command builds the targets
//! itself with those flags (the ones `cargo fuzz build -s none` passes, plus debug assertions and
//! overflow checks) and runs the binaries with libFuzzer's own options. That needs no tool beyond
//! cargo: nothing to install, so nothing to reinstall, and no second tool's version to keep in
//! step with the toolchain. The crate keeps cargo-fuzz's layout (`fuzz_targets/`, the
//! `cargo-fuzz` metadata key) for whoever prefers `cargo fuzz run -s none <target>`; this command
//! does not use it.
//!
//! # What a run does, per target
//!
//! 1. Replays every kept input — the hand-written seeds in `fuzz/seeds/<target>/` and the inputs
//!    found earlier in `fuzz/corpus/<target>/` — one by one: each must still pass.
//! 2. Fuzzes for the bound (`-max_total_time`) from those inputs, with a per-input timeout (a
//!    hang), an RSS limit (an OOM, and the only sign of a leak: without a sanitizer runtime
//!    libFuzzer cannot detect leaks), and a cap on input length.
//! 3. Merges what it found into `fuzz/corpus/<target>/` (`-merge=1 -use_counters=0`): only
//!    inputs that reach edges the corpus and the seeds do not join it, never a copy of a seed,
//!    so the committed corpus grows slowly and does not churn. Past [`MAX_CORPUS_FILES`] or
//!    [`MAX_CORPUS_BYTES`] it is minimized instead (`-set_cover_merge=1` from scratch).
//!
//! A crash, hang or OOM fails the command with the artifact's path (`fuzz/artifacts/<target>/`)
//! and the command that reproduces it; every target is still run, and all failures are listed.
//! `BERTH_FUZZ_TARGETS=paths,quantities` narrows a run to some targets.
//!
//! Builds go to `$CARGO_TARGET_DIR/fuzz` (default `target/fuzz`), apart from the normal builds,
//! whose flags differ; libFuzzer's logs and scratch inputs to `fuzz-work/` beside it.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::Bound;

/// The bound CI gives each target.
pub(crate) const SMALL_SECONDS: u64 = 20;

/// A fuzz target of `fuzz/`: a `[[bin]]` of its crate.
struct Target {
    name: &'static str,
    /// Longest input libFuzzer makes (`-max_len`): a little past the longest a parser refuses
    /// for length alone, so that limit is exercised and no more time is spent on longer ones.
    max_len: usize,
}

const TARGETS: &[Target] = &[
    Target {
        name: "request_validation",
        max_len: 16_384,
    },
    Target {
        name: "paths",
        max_len: 4_200,
    },
    Target {
        name: "quantities",
        max_len: 256,
    },
    Target {
        name: "list_query",
        max_len: 1_024,
    },
    Target {
        name: "metadata_patch",
        max_len: 8_192,
    },
    Target {
        name: "volume_spec",
        max_len: 1_024,
    },
];

/// The instrumentation of `cargo fuzz build --sanitizer none`, with every debug assertion and
/// overflow check of the code under test turned on.
const RUSTFLAGS: &[&str] = &[
    "--cfg",
    "fuzzing",
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cllvm-args=-sanitizer-coverage-stack-depth",
    "-Cdebug-assertions",
    "-Coverflow-checks",
];

/// Seconds one input may take before it counts as a hang.
const HANG_SECONDS: u64 = 10;
/// Resident memory a target may use before it counts as out of memory.
const RSS_LIMIT_MB: u64 = 2048;
/// Past this many files, a target's corpus is minimized rather than only added to.
const MAX_CORPUS_FILES: usize = 1000;
/// Past this many bytes, a target's corpus is minimized rather than only added to.
const MAX_CORPUS_BYTES: u64 = 1 << 20;
/// Kept inputs passed to one replaying process.
const REPLAY_BATCH: usize = 200;

/// Where everything is.
struct Layout {
    /// `fuzz/` of the repository.
    crate_dir: PathBuf,
    /// The cargo target directory of the instrumented builds.
    target_dir: PathBuf,
    /// The built binaries.
    bin_dir: PathBuf,
    /// Logs and scratch inputs.
    work_dir: PathBuf,
}

/// What one target's fuzzing did.
struct Report {
    name: &'static str,
    runs: u64,
    execs_per_second: u64,
    new_inputs: u64,
    corpus_files: usize,
    corpus_bytes: u64,
    seconds: f64,
}

pub(crate) fn run(bound: Bound) -> Result<(), String> {
    let targets = chosen_targets()?;
    let layout = layout()?;
    build(&layout)?;
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for target in targets {
        match run_target(&layout, target, bound) {
            Ok(report) => reports.push(report),
            Err(e) => {
                eprintln!("xtask: fuzz {}: {e}", target.name);
                failures.push(format!("{}: {e}", target.name));
            }
        }
    }
    print_reports(&reports);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "harden fuzz: {} target(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        ))
    }
}

/// Every target, or those `BERTH_FUZZ_TARGETS` names.
fn chosen_targets() -> Result<Vec<&'static Target>, String> {
    let Ok(names) = std::env::var("BERTH_FUZZ_TARGETS") else {
        return Ok(TARGETS.iter().collect());
    };
    names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|name| {
            TARGETS.iter().find(|t| t.name == name).ok_or_else(|| {
                let known: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
                format!(
                    "BERTH_FUZZ_TARGETS: no target {name:?}; the targets are {}",
                    known.join(", ")
                )
            })
        })
        .collect()
}

fn layout() -> Result<Layout, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("xtask has no parent directory")?
        .to_path_buf();
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        })
        .unwrap_or_else(|| root.join("target"));
    let target_dir = base.join("fuzz");
    let bin_dir = target_dir.join(host_triple()?).join("release");
    Ok(Layout {
        crate_dir: root.join("fuzz"),
        target_dir,
        bin_dir,
        work_dir: base.join("fuzz-work"),
    })
}

/// The host's target triple, given to cargo so that the instrumentation flags apply to the
/// targets only, not to build scripts and proc macros.
fn host_triple() -> Result<String, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("running {rustc} -vV: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| format!("{rustc} -vV names no host"))
}

/// Builds every target, instrumented, in release mode.
fn build(layout: &Layout) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let triple = host_triple()?;
    let mut command = Command::new(cargo);
    command
        .current_dir(&layout.crate_dir)
        .args(["build", "--release", "--bins", "--target", &triple])
        .arg("--target-dir")
        .arg(&layout.target_dir)
        // Takes precedence over every other source of flags, so none of the caller's leak in.
        .env("CARGO_ENCODED_RUSTFLAGS", RUSTFLAGS.join("\u{1f}"))
        .env_remove("RUSTFLAGS");
    crate::run(&mut command)
}

fn run_target(layout: &Layout, target: &Target, bound: Bound) -> Result<Report, String> {
    let binary = layout.bin_dir.join(target.name);
    let seeds = layout.crate_dir.join("seeds").join(target.name);
    let corpus = layout.crate_dir.join("corpus").join(target.name);
    let artifacts = layout.crate_dir.join("artifacts").join(target.name);
    let work = layout.work_dir.join(target.name);
    if work.exists() {
        fs::remove_dir_all(&work).map_err(|e| format!("clearing {}: {e}", work.display()))?;
    }
    let found = work.join("found");
    let merged = work.join("merged");
    for dir in [&corpus, &artifacts, &found, &merged] {
        make_dir(dir)?;
    }

    let kept: Vec<PathBuf> = files_in(&seeds)?
        .into_iter()
        .chain(files_in(&corpus)?)
        .collect();
    eprintln!(
        "xtask: fuzz {}: replaying {} kept input(s)",
        target.name,
        kept.len()
    );
    replay(&binary, &kept, &work)?;

    eprintln!(
        "xtask: fuzz {}: fuzzing for {} s",
        target.name, bound.seconds
    );
    let log = work.join("fuzz.log");
    let before = files_in(&artifacts)?;
    let started = Instant::now();
    let mut command = Command::new(&binary);
    command
        .args(limits(target))
        .arg(format!("-max_total_time={}", bound.seconds))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        // New inputs go to the first directory; the others are read only.
        .args(
            [&found, &corpus, &seeds]
                .into_iter()
                .filter(|dir| dir.exists()),
        );
    let status = run_logged(&mut command, &log)?;
    let seconds = started.elapsed().as_secs_f64();
    let stats = fs::read_to_string(&log).map_err(|e| format!("reading {}: {e}", log.display()))?;
    if !status {
        let new: Vec<PathBuf> = files_in(&artifacts)?
            .into_iter()
            .filter(|a| !before.contains(a))
            .collect();
        return Err(finding(&binary, &new, &log, &stats));
    }

    // Only what adds coverage joins the corpus, so kept inputs do not churn from run to run.
    merge(
        target,
        &binary,
        &corpus,
        &[&seeds, &found],
        Merge::Add,
        &work,
    )?;
    let mut size = keep_only_new(&corpus, &corpus, &seeds)?;
    if size.0 > MAX_CORPUS_FILES || size.1 > MAX_CORPUS_BYTES {
        eprintln!(
            "xtask: fuzz {}: corpus of {} files, {} bytes: minimizing",
            target.name, size.0, size.1
        );
        merge(
            target,
            &binary,
            &merged,
            &[&corpus, &seeds],
            Merge::Minimize,
            &work,
        )?;
        size = keep_only_new(&corpus, &merged, &seeds)?;
    }
    let (corpus_files, corpus_bytes) = size;
    Ok(Report {
        name: target.name,
        runs: stat(&stats, "stat::number_of_executed_units"),
        execs_per_second: stat(&stats, "stat::average_exec_per_sec"),
        new_inputs: stat(&stats, "stat::new_units_added"),
        corpus_files,
        corpus_bytes,
        seconds,
    })
}

/// The options every run of a target gets.
fn limits(target: &Target) -> [String; 3] {
    [
        format!("-timeout={HANG_SECONDS}"),
        format!("-rss_limit_mb={RSS_LIMIT_MB}"),
        format!("-max_len={}", target.max_len),
    ]
}

/// Runs each kept input once, whole (a corpus directory would be cut to `-max_len`); the first
/// that crashes, hangs or runs out of memory fails the replay, naming it.
fn replay(binary: &Path, inputs: &[PathBuf], work: &Path) -> Result<(), String> {
    let scratch = work.join("replay-artifacts");
    make_dir(&scratch)?;
    for (i, batch) in inputs.chunks(REPLAY_BATCH).enumerate() {
        let log = work.join(format!("replay-{i}.log"));
        let mut command = Command::new(binary);
        command
            .arg(format!("-timeout={HANG_SECONDS}"))
            .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
            .arg(format!("-artifact_prefix={}/", scratch.display()))
            .args(batch);
        if !run_logged(&mut command, &log)? {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let input = text
                .lines()
                .filter_map(|l| l.strip_prefix("Running: "))
                .next_back()
                .unwrap_or("(unknown input)")
                .to_owned();
            return Err(format!(
                "the kept input {input} no longer passes\n{}\n  reproduce: RUST_BACKTRACE=1 {} {input}",
                tail(&text, 30),
                binary.display()
            ));
        }
    }
    Ok(())
}

/// How a merge picks inputs.
#[derive(Clone, Copy)]
enum Merge {
    /// Each input, smallest first, that adds coverage to what is already picked (`-merge=1`).
    Add,
    /// A smaller set for the same coverage (`-set_cover_merge=1`), to shrink a corpus.
    Minimize,
}

/// Adds to `out` inputs of `sources` that give the coverage they add to `out`'s own. Coverage
/// here is the edges reached, not how often (`-use_counters=0`, unlike while fuzzing): kept
/// corpora hold one input per new edge or so, not one per new loop count.
fn merge(
    target: &Target,
    binary: &Path,
    out: &Path,
    sources: &[&Path],
    how: Merge,
    work: &Path,
) -> Result<(), String> {
    let log = work.join("merge.log");
    let mut command = Command::new(binary);
    command
        .args(limits(target))
        .arg("-use_counters=0")
        .arg(match how {
            Merge::Add => "-merge=1",
            Merge::Minimize => "-set_cover_merge=1",
        })
        .arg(format!(
            "-merge_control_file={}",
            work.join("merge.control").display()
        ))
        .arg(format!("-artifact_prefix={}/merge-", work.display()))
        .arg(out)
        .args(sources.iter().filter(|dir| dir.exists()));
    if run_logged(&mut command, &log)? {
        Ok(())
    } else {
        let text = fs::read_to_string(&log).unwrap_or_default();
        Err(format!("merging failed\n{}", tail(&text, 30)))
    }
}

/// Makes `corpus` hold exactly the inputs of `merged` (which may be `corpus` itself) that are not
/// copies of seeds; returns its files and bytes.
fn keep_only_new(corpus: &Path, merged: &Path, seeds: &Path) -> Result<(usize, u64), String> {
    let read = |p: &Path| fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
    let seed_contents: HashSet<Vec<u8>> = files_in(seeds)?
        .iter()
        .map(|p| read(p))
        .collect::<Result<_, _>>()?;
    let inputs: Vec<(PathBuf, Vec<u8>)> = files_in(merged)?
        .into_iter()
        .map(|p| read(&p).map(|content| (p, content)))
        .collect::<Result<_, _>>()?;
    if merged != corpus {
        for old in files_in(corpus)? {
            fs::remove_file(&old).map_err(|e| format!("removing {}: {e}", old.display()))?;
        }
    }
    let (mut files, mut bytes) = (0, 0);
    for (path, content) in inputs {
        let name = path.file_name().ok_or("a merged input has no name")?;
        let to = corpus.join(name);
        if seed_contents.contains(&content) {
            if merged == corpus {
                fs::remove_file(&to).map_err(|e| format!("removing {}: {e}", to.display()))?;
            }
            continue;
        }
        if merged != corpus {
            fs::write(&to, &content).map_err(|e| format!("writing {}: {e}", to.display()))?;
        }
        files += 1;
        bytes += content.len() as u64;
    }
    Ok((files, bytes))
}

/// The failure message of a fuzzing run: the artifacts it left, how to reproduce them, and the
/// end of libFuzzer's log (the panic message and backtrace).
fn finding(binary: &Path, artifacts: &[PathBuf], log: &Path, text: &str) -> String {
    let kind = |a: &Path| {
        let name = a.file_name().map(|n| n.to_string_lossy().into_owned());
        match name.as_deref().and_then(|n| n.split('-').next()) {
            Some("crash") => "crash",
            Some("timeout") => "hang",
            Some("oom") => "out of memory",
            Some("leak") => "leak",
            _ => "failure",
        }
    };
    let mut message = String::new();
    if artifacts.is_empty() {
        message.push_str(&format!(
            "libFuzzer failed without an artifact (log: {})",
            log.display()
        ));
    }
    for artifact in artifacts {
        message.push_str(&format!(
            "{}: {}\n  reproduce: RUST_BACKTRACE=1 {} {}\n",
            kind(artifact),
            artifact.display(),
            binary.display(),
            artifact.display()
        ));
    }
    format!("{message}\n{}", tail(text, 40))
}

fn print_reports(reports: &[Report]) {
    if reports.is_empty() {
        return;
    }
    eprintln!(
        "\n{:<20} {:>12} {:>10} {:>6} {:>8} {:>10} {:>8}",
        "target", "runs", "execs/s", "new", "corpus", "bytes", "seconds"
    );
    for r in reports {
        eprintln!(
            "{:<20} {:>12} {:>10} {:>6} {:>8} {:>10} {:>8.0}",
            r.name,
            r.runs,
            r.execs_per_second,
            r.new_inputs,
            r.corpus_files,
            r.corpus_bytes,
            r.seconds
        );
    }
}

/// A number from libFuzzer's final statistics (`-print_final_stats=1`), 0 if missing.
fn stat(text: &str, name: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter_map(|rest| rest.trim_start_matches(':').trim().parse().ok())
        .next_back()
        .unwrap_or(0)
}

/// Runs a command with its output in `log`; whether it succeeded.
fn run_logged(command: &mut Command, log: &Path) -> Result<bool, String> {
    let file = fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let err = file
        .try_clone()
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let status = command
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .map_err(|e| format!("running {command:?}: {e}"))?;
    Ok(status.success())
}

/// The regular files of `dir`, sorted; none if it does not exist.
fn files_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}: {e}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        // Dot files are not inputs (`.gitkeep`, editors' files).
        if is_file && !entry.file_name().to_string_lossy().starts_with('.') {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Creates `dir` and its missing parents, one level at a time.
fn make_dir(dir: &Path) -> Result<(), String> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
    for level in missing.into_iter().rev() {
        match fs::create_dir(level) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("creating {}: {e}", level.display())),
        }
    }
    Ok(())
}

/// At most `n` lines of libFuzzer's log `text` that tell what failed: from the panic message on
/// when there is one, else the last ones.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.contains("panicked at"))
        .unwrap_or(lines.len().saturating_sub(n));
    lines[start..lines.len().min(start + n)].join("\n")
}
