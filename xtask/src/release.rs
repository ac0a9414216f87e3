//! `cargo xtask release [--version X.Y.Z] [--skip-tests] [--verify]`: the release archive.
//!
//! Refuses a tree with uncommitted changes, a `--version` other than the workspace's, and a
//! version without its `CHANGELOG.md` entry; runs the whole suite (`cargo xtask ci`) unless
//! `--skip-tests` (which it says); builds `berth-server` and `berth` with the `dist` profile
//! (`--locked`, LTO, stripped) and writes `dist/berth-<version>-<target>.tar.gz` and
//! `dist/SHA256SUMS`.
//!
//! The archive is reproducible: the same commit gives the same bytes. The build remaps every
//! machine path (checkout, cargo home, toolchain, target directory) and is told the commit
//! (`BERTH_COMMIT`) and its time (`SOURCE_DATE_EPOCH`); the archive's entries are sorted, owned by
//! 0:0 with fixed modes and the commit's time, and gzip records no time or name. `--verify`
//! builds twice, in two fresh target directories, and fails unless both archives are identical.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;

/// The two commands, as the archive's `bin/` holds them.
const COMMANDS: [(&str, &str); 2] = [("berth-api", "berth-server"), ("berth-cli", "berth")];

pub(crate) fn main(args: &[String]) -> Result<(), String> {
    let mut version = None;
    let (mut skip_tests, mut verify) = (false, false);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--version" => version = Some(args.next().ok_or("--version needs X.Y.Z")?.clone()),
            "--skip-tests" => skip_tests = true,
            "--verify" => verify = true,
            other => {
                return Err(format!(
                    "release: unknown argument {other:?}; usage: cargo xtask release [--version X.Y.Z] [--skip-tests] [--verify]"
                ));
            }
        }
    }
    let root = crate::workspace_root();
    let source = Source::checked(&root, version.as_deref())?;
    if skip_tests {
        eprintln!("xtask: release: --skip-tests: the suite is NOT run for this archive");
    } else {
        crate::ci()?;
    }
    let target_root = crate::target_dir(&root)?.join("xtask-release");
    // What is built is the commit, exported, not the checkout: a file edited while the build
    // runs (or ignored by git) cannot reach the archive.
    crate::create_dir(&target_root)?;
    let source = source.exported_to(&target_root.join("source"))?;
    let archive = if verify {
        let first = build_and_pack(&source, &target_root.join("verify-a"), true)?;
        let second = build_and_pack(&source, &target_root.join("verify-b"), true)?;
        if first != second {
            return Err(format!(
                "release --verify: the two builds differ ({} and {} bytes); entries that differ: {}",
                first.len(),
                second.len(),
                differing_entries(&first, &second)?.join(", ")
            ));
        }
        eprintln!(
            "xtask: release --verify: two builds in fresh target directories gave the same archive, sha256 {}",
            hex_sha256(&first)
        );
        first
    } else {
        build_and_pack(&source, &target_root.join("build"), false)?
    };
    let dist = root.join("dist");
    crate::create_dir(&dist)?;
    let name = format!("{}.tar.gz", source.archive_stem());
    write(&dist.join(&name), &archive)?;
    write_checksums(&dist)?;
    eprintln!(
        "xtask: wrote {} ({} bytes, sha256 {}) and {}",
        dist.join(&name).display(),
        archive.len(),
        hex_sha256(&archive),
        dist.join("SHA256SUMS").display()
    );
    Ok(())
}

/// The commit checked out, built as a release builds it (exported, `dist` profile, paths
/// remapped) into the release's build directory: the directory holding both commands, and the
/// version and commit they were built from. `cargo xtask image` packs the server from it.
pub(crate) fn build_commit() -> Result<(PathBuf, String, String), String> {
    let root = crate::workspace_root();
    let source = Source::checked(&root, None)?;
    let target_root = crate::target_dir(&root)?.join("xtask-release");
    crate::create_dir(&target_root)?;
    let source = source.exported_to(&target_root.join("source"))?;
    let target_dir = target_root.join("build");
    build(&source, &target_dir)?;
    Ok((target_dir.join("dist"), source.version, source.commit))
}

/// What a release is made from: a clean checkout at a commit, its version and target.
struct Source {
    root: PathBuf,
    version: String,
    commit: String,
    /// The commit's time, seconds since the epoch: every entry's time, and `SOURCE_DATE_EPOCH`.
    epoch: u64,
    target: String,
}

impl Source {
    fn checked(root: &Path, asked: Option<&str>) -> Result<Self, String> {
        let changes = git(root, &["status", "--porcelain"])?;
        if !changes.trim().is_empty() {
            let first: Vec<&str> = changes.lines().take(5).collect();
            return Err(format!(
                "release: the tree has uncommitted changes (commit or stash them; a release is made from a commit):\n{}",
                first.join("\n")
            ));
        }
        let version = workspace_version(
            &std::fs::read_to_string(root.join("Cargo.toml"))
                .map_err(|e| format!("reading Cargo.toml: {e}"))?,
        )?;
        if let Some(asked) = asked
            && asked != version
        {
            return Err(format!(
                "release: --version {asked} is not the workspace version {version} (Cargo.toml, [workspace.package])"
            ));
        }
        let changelog = std::fs::read_to_string(root.join("CHANGELOG.md"))
            .map_err(|e| format!("release: reading CHANGELOG.md: {e}"))?;
        if !has_changelog_entry(&changelog, &version) {
            return Err(format!(
                "release: CHANGELOG.md has no entry for {version} (a heading `## {version} — YYYY-MM-DD`)"
            ));
        }
        let commit = git(root, &["rev-parse", "HEAD"])?.trim().to_owned();
        let epoch = git(root, &["log", "-1", "--format=%ct"])?
            .trim()
            .parse()
            .map_err(|e| format!("release: the commit's time: {e}"))?;
        let rustc = output(Command::new("rustc").arg("-vV"))?;
        let target = rustc
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .ok_or("release: `rustc -vV` names no host")?
            .to_owned();
        Ok(Self {
            root: root.to_owned(),
            version,
            commit,
            epoch,
            target,
        })
    }

    /// The commit's tree, written fresh into `dir` (`git archive`); the source built from.
    fn exported_to(self, dir: &Path) -> Result<Self, String> {
        remove_dir(dir)?;
        crate::create_dir(dir)?;
        let tree = output_bytes(Command::new("git").arg("-C").arg(&self.root).args([
            "archive",
            "--format=tar",
            &self.commit,
        ]))?;
        tar::Archive::new(tree.as_slice())
            .unpack(dir)
            .map_err(|e| format!("unpacking the commit into {}: {e}", dir.display()))?;
        Ok(Self {
            root: dir.to_owned(),
            ..self
        })
    }

    fn archive_stem(&self) -> String {
        format!("berth-{}-{}", self.version, self.target)
    }
}

/// The `version` of `[workspace.package]`.
fn workspace_version(manifest: &str) -> Result<String, String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if let Some(value) = line.strip_prefix("version").filter(|_| in_package)
            && let Some(value) = value.trim_start().strip_prefix('=')
        {
            return Ok(value.trim().trim_matches('"').to_owned());
        }
    }
    Err("release: Cargo.toml has no [workspace.package] version".to_owned())
}

/// Whether `changelog` has a `## <version>` heading (`## [0.1.0]` counts too).
fn has_changelog_entry(changelog: &str, version: &str) -> bool {
    changelog.lines().any(|line| {
        line.strip_prefix("## ")
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|word| word.trim_matches(['[', ']']) == version)
    })
}

/// Builds both commands into `target_dir` (emptied first when `fresh`) and packs the archive.
fn build_and_pack(source: &Source, target_dir: &Path, fresh: bool) -> Result<Vec<u8>, String> {
    if fresh {
        remove_dir(target_dir)?;
    }
    build(source, target_dir)?;
    let bin = target_dir.join("dist");
    let entries = entries(source, &bin)?;
    pack(&source.archive_stem(), entries, source.epoch)
}

fn build(source: &Source, target_dir: &Path) -> Result<(), String> {
    let cargo_home =
        std::env::var_os("CARGO_HOME").map_or_else(|| home().join(".cargo"), PathBuf::from);
    let sysroot = output(Command::new("rustc").args(["--print", "sysroot"]))?;
    // Every path that could reach the binaries (panic locations, generated code) is remapped,
    // so two checkouts or target directories build the same bytes.
    let remaps = [
        (target_dir.to_owned(), "/target"),
        (source.root.clone(), "/berth"),
        (cargo_home, "/cargo"),
        (PathBuf::from(sysroot.trim()), "/rustc"),
    ];
    let rustflags: Vec<String> = remaps
        .iter()
        .map(|(from, to)| format!("--remap-path-prefix={}={to}", from.display()))
        .collect();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(&source.root)
        .args(["build", "--locked", "--profile", "dist"]);
    for (package, bin) in COMMANDS {
        command.args(["-p", package, "--bin", bin]);
    }
    crate::run(
        command
            .env("CARGO_TARGET_DIR", target_dir)
            .env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\u{1f}"))
            .env_remove("RUSTFLAGS")
            .env("BERTH_COMMIT", &source.commit)
            .env("SOURCE_DATE_EPOCH", source.epoch.to_string()),
    )
}

/// One file of the archive, its path below the archive's top directory.
pub(crate) struct Entry {
    pub(crate) path: String,
    pub(crate) contents: Vec<u8>,
    pub(crate) executable: bool,
}

/// The archive's files: the commands from `bin`, what they generate (completions, man page,
/// OpenAPI document), and the repository's documents, example configuration and manifests.
fn entries(source: &Source, bin: &Path) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for (_, name) in COMMANDS {
        entries.push(Entry {
            path: format!("bin/{name}"),
            contents: crate::read(&bin.join(name))?,
            executable: true,
        });
    }
    let berth = bin.join("berth");
    let generated = [
        (
            "completions/berth.bash",
            &berth,
            &["completions", "bash"][..],
        ),
        ("completions/_berth", &berth, &["completions", "zsh"]),
        ("completions/berth.fish", &berth, &["completions", "fish"]),
        (
            "openapi.yaml",
            &bin.join("berth-server"),
            &["--print-openapi"],
        ),
    ];
    // Generated with an empty environment: nothing of the builder's (an OPEN_SANDBOX_DOMAIN, a
    // locale) can reach the archive.
    for (path, command, args) in generated {
        entries.push(Entry {
            path: path.to_owned(),
            contents: output(Command::new(command).args(args).env_clear())?.into_bytes(),
            executable: false,
        });
    }
    // The man pages: berth(1) and one per subcommand.
    let pages = bin.join("man-pages");
    remove_dir(&pages)?;
    crate::create_dir(&pages)?;
    output(
        Command::new(&berth)
            .arg("man")
            .arg("--dir")
            .arg(&pages)
            .env_clear(),
    )?;
    for page in files_below(&pages)? {
        let name = page
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        entries.push(Entry {
            path: format!("man/man1/{name}"),
            contents: crate::read(&page)?,
            executable: false,
        });
    }
    for file in [
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "ARCHITECTURE.md",
        "deploy/berth.example.toml",
    ] {
        entries.push(Entry {
            path: file.rsplit('/').next().unwrap_or(file).to_owned(),
            contents: crate::read(&source.root.join(file))?,
            executable: false,
        });
    }
    for (dir, top) in [
        ("docs", "docs"),
        ("deploy/kubernetes", "kubernetes"),
        ("deploy/grafana", "grafana"),
    ] {
        let base = source.root.join(dir);
        for path in files_below(&base)? {
            let relative = path.strip_prefix(&base).map_err(|e| e.to_string())?;
            entries.push(Entry {
                path: format!("{top}/{}", relative.display()),
                contents: crate::read(&path)?,
                executable: false,
            });
        }
    }
    Ok(entries)
}

/// Packs `entries` below `top/` into a gzipped tar, the same bytes for the same entries whatever
/// their order or the files' times, owners and modes on this machine: entries sorted, directories
/// made explicit, owner 0:0 (`root`), modes 0755 (directories, executables) or 0644, every time
/// `epoch`, and a gzip header without time or name.
pub(crate) fn pack(top: &str, mut entries: Vec<Entry>, epoch: u64) -> Result<Vec<u8>, String> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(pair) = entries.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(format!("pack: {} twice", pair[0].path));
    }
    let mut directories = std::collections::BTreeSet::from([format!("{top}/")]);
    for entry in &entries {
        let mut path = entry.path.as_str();
        while let Some((parent, _)) = path.rsplit_once('/') {
            directories.insert(format!("{top}/{parent}/"));
            path = parent;
        }
    }
    let header = |mode: u32, size: u64, kind: tar::EntryType| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(epoch);
        header.set_uid(0);
        header.set_gid(0);
        // Names cannot fail here: both are four ASCII bytes.
        let _ = header.set_username("root");
        let _ = header.set_groupname("root");
        header
    };
    let gzip = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(Vec::new(), flate2::Compression::best());
    let mut tar = tar::Builder::new(gzip);
    let mut files = entries.iter().peekable();
    // Directories and files in one sorted order: a directory before what it holds.
    for directory in &directories {
        while let Some(file) = files.next_if(|f| format!("{top}/{}", f.path) < *directory) {
            append_file(&mut tar, top, file, &header)?;
        }
        let mut head = header(0o755, 0, tar::EntryType::Directory);
        tar.append_data(&mut head, directory, std::io::empty())
            .map_err(|e| format!("pack {directory}: {e}"))?;
    }
    for file in files {
        append_file(&mut tar, top, file, &header)?;
    }
    let gzip = tar.into_inner().map_err(|e| format!("pack: {e}"))?;
    gzip.finish().map_err(|e| format!("pack: {e}"))
}

fn append_file<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    top: &str,
    file: &Entry,
    header: &impl Fn(u32, u64, tar::EntryType) -> tar::Header,
) -> Result<(), String> {
    let mode = if file.executable { 0o755 } else { 0o644 };
    let mut head = header(mode, file.contents.len() as u64, tar::EntryType::Regular);
    let path = format!("{top}/{}", file.path);
    tar.append_data(&mut head, &path, file.contents.as_slice())
        .map_err(|e| format!("pack {path}: {e}"))
}

/// The paths of the entries whose header or contents differ between two archives.
fn differing_entries(first: &[u8], second: &[u8]) -> Result<Vec<String>, String> {
    let read = |bytes: &[u8]| -> Result<std::collections::BTreeMap<String, Vec<u8>>, String> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        let mut out = std::collections::BTreeMap::new();
        for entry in archive.entries().map_err(|e| e.to_string())? {
            let mut entry = entry.map_err(|e| e.to_string())?;
            let path = entry
                .path()
                .map_err(|e| e.to_string())?
                .display()
                .to_string();
            let mut bytes = entry.header().as_bytes().to_vec();
            std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(|e| e.to_string())?;
            out.insert(path, bytes);
        }
        Ok(out)
    };
    let (first, second) = (read(first)?, read(second)?);
    let paths: std::collections::BTreeSet<&String> = first
        .keys()
        .chain(second.keys())
        .filter(|p| first.get(*p) != second.get(*p))
        .collect();
    Ok(paths.into_iter().cloned().collect())
}

/// Writes `SHA256SUMS` over every archive in `dist` (`sha256sum -c SHA256SUMS` checks them).
fn write_checksums(dist: &Path) -> Result<(), String> {
    let mut names: Vec<String> = std::fs::read_dir(dist)
        .map_err(|e| format!("reading {}: {e}", dist.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".tar.gz"))
        .collect();
    names.sort();
    let mut sums = String::new();
    for name in names {
        sums.push_str(&format!(
            "{}  {name}\n",
            hex_sha256(&crate::read(&dist.join(&name))?)
        ));
    }
    write(&dist.join("SHA256SUMS"), sums.as_bytes())
}

pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file below `dir`, recursively.
fn files_below(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))?
        {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    Ok(files)
}

/// Removes `dir` and what it holds, if it exists.
fn remove_dir(dir: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("emptying {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

fn git(root: &Path, args: &[&str]) -> Result<String, String> {
    output(Command::new("git").arg("-C").arg(root).args(args))
}

/// A command's standard output, as text; its failure with its standard error.
fn output(command: &mut Command) -> Result<String, String> {
    let shown = format!("{command:?}");
    String::from_utf8(output_bytes(command)?).map_err(|e| format!("{shown}: output not UTF-8: {e}"))
}

/// A command's standard output; its failure with its standard error.
fn output_bytes(command: &mut Command) -> Result<Vec<u8>, String> {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .map_err(|e| format!("running {shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same files packed twice, given in another order, give the same bytes (an entry carries
    /// only its path, contents and whether it is executable: nothing of the file on disk); the
    /// entries are sorted, owned by 0:0 with fixed modes and the given time. The binary packed is
    /// a real one (this test's own executable).
    #[test]
    fn packing_the_same_files_twice_is_identical() {
        let exe = std::env::current_exe().unwrap();
        let files = |reverse: bool| {
            let mut entries = vec![
                Entry {
                    path: "bin/berth".into(),
                    contents: std::fs::read(&exe).unwrap(),
                    executable: true,
                },
                Entry {
                    path: "README.md".into(),
                    contents: b"# Berth\n".to_vec(),
                    executable: false,
                },
                Entry {
                    path: "kubernetes/10-rbac.yaml".into(),
                    contents: b"kind: Role\n".to_vec(),
                    executable: false,
                },
            ];
            if reverse {
                entries.reverse();
            }
            entries
        };
        let first = pack("berth-1.2.3-x", files(false), 1_700_000_000).unwrap();
        let second = pack("berth-1.2.3-x", files(true), 1_700_000_000).unwrap();
        assert!(first == second, "packing twice gave different bytes");
        assert_eq!(&first[4..8], &[0, 0, 0, 0], "gzip header records a time");

        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(first.as_slice()));
        let listed: Vec<(String, u32, u64, u64, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.mtime().unwrap(),
                )
            })
            .collect();
        let expected = [
            ("berth-1.2.3-x/", 0o755),
            ("berth-1.2.3-x/README.md", 0o644),
            ("berth-1.2.3-x/bin/", 0o755),
            ("berth-1.2.3-x/bin/berth", 0o755),
            ("berth-1.2.3-x/kubernetes/", 0o755),
            ("berth-1.2.3-x/kubernetes/10-rbac.yaml", 0o644),
        ];
        assert_eq!(listed.len(), expected.len(), "{listed:?}");
        for ((path, mode, uid, gid, mtime), (want_path, want_mode)) in listed.iter().zip(expected) {
            assert_eq!((path.as_str(), *mode), (want_path, want_mode));
            assert_eq!((*uid, *gid, *mtime), (0, 0, 1_700_000_000), "{path}");
        }
        // Another time is other bytes: the time packed is the commit's, not a constant.
        let later = pack("berth-1.2.3-x", files(false), 1_700_000_001).unwrap();
        assert!(later != first);
        assert_eq!(
            differing_entries(&first, &later).unwrap().len(),
            expected.len()
        );
    }

    #[test]
    fn a_duplicate_path_is_refused() {
        let entry = || Entry {
            path: "README.md".into(),
            contents: Vec::new(),
            executable: false,
        };
        assert!(pack("top", vec![entry(), entry()], 0).is_err());
    }

    #[test]
    fn versions_and_changelog_entries_are_read() {
        let manifest = "[workspace]\nmembers = []\n\n[workspace.package]\nversion = \"0.4.1\"\n\n[workspace.dependencies]\nversion = \"9\"\n";
        assert_eq!(workspace_version(manifest).unwrap(), "0.4.1");
        assert!(workspace_version("[package]\nversion = \"1.0.0\"\n").is_err());
        let changelog = "# Changelog\n\n## 0.2.0 — 2026-12-01\n- x\n\n## [0.1.0] - 2026-11-30\n";
        assert!(has_changelog_entry(changelog, "0.2.0"));
        assert!(has_changelog_entry(changelog, "0.1.0"));
        assert!(!has_changelog_entry(changelog, "0.1"));
        assert!(!has_changelog_entry("- 0.3.0 fixed\n", "0.3.0"));
    }
}
