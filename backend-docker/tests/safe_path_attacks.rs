//! The safe-path module against the attacks of ARCHITECTURE.md "Path safety": planted
//! symlinks of every shape, FIFOs and sockets on the path, files in the middle, and the
//! ownership and mode of directories it creates. Needs root (chown); fails, never skips, without.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use berth_core::ErrorCode;
use berth_docker::safe_path::{Missing, ResolvedKind, SafePathError, TrustedRoot};
use exchange_swapper::ExchangeSwapper;

#[allow(unreachable_pub)] // Shared with the tests that reach it through `common`.
#[path = "common/exchange_swapper.rs"]
mod exchange_swapper;

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests need root (chown, mounts); run them as root"
    );
}

fn root(dir: &Path) -> TrustedRoot {
    TrustedRoot::open_configured(dir).unwrap()
}

fn resolve(
    dir: &Path,
    segments: &[&str],
    missing: Missing,
) -> Result<berth_docker::safe_path::Resolved, SafePathError> {
    root(dir).resolve(segments, missing, "root")
}

fn code(result: Result<berth_docker::safe_path::Resolved, SafePathError>) -> ErrorCode {
    match result {
        Ok(r) => panic!("accepted: {r:?}"),
        Err(e) => e.code(),
    }
}

#[test]
fn an_existing_directory_resolves_to_its_inode() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("a")).unwrap();
    fs::create_dir(tmp.path().join("a/b")).unwrap();
    let r = resolve(tmp.path(), &["a", "b"], Missing::Refuse).unwrap();
    let meta = fs::metadata(tmp.path().join("a/b")).unwrap();
    assert_eq!(
        (r.kind, r.dev, r.ino),
        (ResolvedKind::Directory, meta.dev(), meta.ino())
    );
    let whole = resolve(tmp.path(), &[], Missing::Refuse).unwrap();
    assert_eq!(whole.ino, fs::metadata(tmp.path()).unwrap().ino());
}

#[test]
fn missing_directories_take_the_parents_owner_group_and_mode() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("volume");
    fs::create_dir(&parent).unwrap();
    std::os::unix::fs::chown(&parent, Some(1000), Some(1001)).unwrap();
    fs::set_permissions(&parent, fs::Permissions::from_mode(0o2770)).unwrap();
    let r = resolve(&parent, &["uid-1", "session-1"], Missing::Create).unwrap();
    for created in ["uid-1", "uid-1/session-1"] {
        let meta = fs::metadata(parent.join(created)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 1001), "{created}");
        assert_eq!(
            meta.mode() & 0o7777,
            0o2770,
            "{created}: mode {:o}",
            meta.mode()
        );
    }
    assert_eq!(
        r.ino,
        fs::metadata(parent.join("uid-1/session-1")).unwrap().ino()
    );
    // Resolving again finds what was created.
    assert_eq!(
        resolve(&parent, &["uid-1", "session-1"], Missing::Refuse)
            .unwrap()
            .ino,
        r.ino
    );
}

#[test]
fn missing_paths_are_reported_when_not_to_be_created() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        resolve(tmp.path(), &["nope"], Missing::Refuse),
        Err(SafePathError::Missing { .. })
    ));
    assert!(!tmp.path().join("nope").exists());
}

/// Every planted link is refused with VOLUME::SUB_PATH_SYMLINK, and nothing is created through it.
#[test]
fn planted_symlinks_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    let target_outside = outside.path().join("created-through-link");
    type Plant = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Plant, Vec<&str>)> = vec![
        (
            "x -> /",
            Box::new(|d: &Path| symlink("/", d.join("x")).unwrap()),
            vec!["x"],
        ),
        (
            "x -> / then deeper",
            Box::new(|d: &Path| symlink("/", d.join("x")).unwrap()),
            vec!["x", "etc"],
        ),
        (
            "x -> ../..",
            Box::new(|d: &Path| symlink("../..", d.join("x")).unwrap()),
            vec!["x"],
        ),
        (
            "chained a -> b -> /",
            Box::new(|d: &Path| {
                symlink("b", d.join("a")).unwrap();
                symlink("/", d.join("b")).unwrap();
            }),
            vec!["a"],
        ),
        (
            "looping x -> x",
            Box::new(|d: &Path| symlink("x", d.join("x")).unwrap()),
            vec!["x", "y"],
        ),
        (
            "link inside the root",
            Box::new(|d: &Path| {
                fs::create_dir(d.join("real")).unwrap();
                symlink("real", d.join("alias")).unwrap();
            }),
            vec!["alias"],
        ),
        (
            "link in the middle",
            Box::new(|d: &Path| {
                fs::create_dir_all_for_test(&d.join("real/inner"));
                symlink("real", d.join("mid")).unwrap();
            }),
            vec!["mid", "inner"],
        ),
        (
            "absolute link in the middle",
            Box::new(|d: &Path| {
                fs::create_dir(d.join("a")).unwrap();
                symlink("/etc", d.join("a/b")).unwrap();
            }),
            vec!["a", "b", "passwd"],
        ),
    ];
    for (what, plant, segments) in cases {
        let tmp = tempfile::tempdir().unwrap();
        plant(tmp.path());
        for missing in [Missing::Refuse, Missing::Create] {
            assert_eq!(
                code(resolve(tmp.path(), &segments, missing)),
                ErrorCode::VolumeSubPathSymlink,
                "{what} ({missing:?})"
            );
        }
    }
    // A dangling link: creating through it would create outside the root.
    let tmp = tempfile::tempdir().unwrap();
    symlink(&target_outside, tmp.path().join("dangling")).unwrap();
    assert_eq!(
        code(resolve(
            tmp.path(),
            &["dangling", "deeper"],
            Missing::Create
        )),
        ErrorCode::VolumeSubPathSymlink
    );
    assert_eq!(
        code(resolve(tmp.path(), &["dangling"], Missing::Create)),
        ErrorCode::VolumeSubPathSymlink
    );
    assert!(
        !target_outside.exists(),
        "a directory was created through a dangling link"
    );
}

/// `fs::create_dir_all` is banned in the workspace (clippy.toml); tests build trees step by step.
mod fs {
    pub(crate) use std::fs::*;
    pub(crate) fn create_dir_all_for_test(path: &std::path::Path) {
        let mut built = std::path::PathBuf::new();
        for part in path.components() {
            built.push(part);
            if !built.exists() {
                std::fs::create_dir(&built).unwrap();
            }
        }
    }
}

/// Runs `f` on another thread and fails if it takes more than five seconds (a FIFO opened for
/// reading would block forever).
fn within_five_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(5))
        .expect("resolution hung")
}

#[test]
fn fifos_sockets_and_files_on_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(dir.join("socket")).unwrap();
    fs::write(dir.join("file"), b"x").unwrap();

    let d = dir.clone();
    let fifo = within_five_seconds(move || {
        resolve(&d, &["fifo"], Missing::Create)
            .map(|_| ())
            .map_err(|e| e.code())
    });
    assert_eq!(fifo, Err(ErrorCode::VolumeUnsupportedFileType));
    let d = dir.clone();
    let fifo_mid = within_five_seconds(move || {
        resolve(&d, &["fifo", "x"], Missing::Create)
            .map(|_| ())
            .map_err(|e| e.code())
    });
    assert_eq!(fifo_mid, Err(ErrorCode::VolumeUnsupportedFileType));
    assert_eq!(
        code(resolve(&dir, &["socket"], Missing::Refuse)),
        ErrorCode::VolumeUnsupportedFileType
    );
    assert_eq!(
        code(resolve(&dir, &["file", "below"], Missing::Create)),
        ErrorCode::VolumeUnsupportedFileType
    );
    assert_eq!(
        resolve(&dir, &["file"], Missing::Refuse).unwrap().kind,
        ResolvedKind::RegularFile
    );
    assert_eq!(
        code(resolve(Path::new("/dev"), &["null"], Missing::Refuse)),
        ErrorCode::VolumeUnsupportedFileType
    );
}

#[test]
fn configured_roots_must_be_free_of_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("real")).unwrap();
    symlink(tmp.path().join("real"), tmp.path().join("link")).unwrap();
    assert!(matches!(
        TrustedRoot::open_configured(&tmp.path().join("link")),
        Err(SafePathError::Symlink { .. })
    ));
    assert!(matches!(
        TrustedRoot::open_configured(&tmp.path().join("link/..")),
        Err(SafePathError::Symlink { .. })
    ));
    fs::write(tmp.path().join("file"), b"").unwrap();
    assert!(matches!(
        TrustedRoot::open_configured(&tmp.path().join("file")),
        Err(SafePathError::NotDirectory { .. })
    ));
    assert!(matches!(
        TrustedRoot::open_configured(&tmp.path().join("absent")),
        Err(SafePathError::Missing { .. })
    ));
    assert!(TrustedRoot::open_configured(Path::new("relative")).is_err());
}

/// The root is pinned by its fd: swapping its path for a symlink after opening changes nothing.
#[test]
fn the_root_is_pinned_by_fd() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("root");
    fs::create_dir(&path).unwrap();
    fs::create_dir(path.join("data")).unwrap();
    let pinned = root(&path);
    let before = pinned
        .resolve(&["data"], Missing::Refuse, "root")
        .unwrap()
        .ino;
    fs::rename(&path, tmp.path().join("moved")).unwrap();
    symlink("/", &path).unwrap();
    let after = pinned
        .resolve(&["data"], Missing::Refuse, "root")
        .unwrap()
        .ino;
    assert_eq!(before, after);
    assert_eq!(
        code(pinned.resolve(&["etc"], Missing::Refuse, "root")),
        ErrorCode::VolumeInvalidSubPath
    );
}

/// How many times a race is run: `HARDEN_RACE_ITERATIONS` (`cargo xtask harden paths` sets it),
/// else `default`.
fn race_iterations(default: usize) -> usize {
    std::env::var("HARDEN_RACE_ITERATIONS").map_or(default, |n| {
        n.parse()
            .unwrap_or_else(|_| panic!("HARDEN_RACE_ITERATIONS={n:?}: a number"))
    })
}

/// The exchange race at the safe-path level: `session` (a directory) and `decoy` (a symlink to
/// `/`) trade places without pause (`renameat2(RENAME_EXCHANGE)`) while `session` and
/// `session/inner` are resolved over and over. A resolution that succeeds is the session's own
/// directory, by inode; every other one is refused as a link; nothing ever lands on `/`.
#[test]
fn an_exchange_race_never_resolves_through_the_link() {
    let iterations = race_iterations(10_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::create_dir_all_for_test(&dir.join("session/inner"));
    symlink("/", dir.join("decoy")).unwrap();
    let identity = |path: &Path| {
        let m = fs::metadata(path).unwrap();
        (m.dev(), m.ino())
    };
    let session = identity(&dir.join("session"));
    let inner = identity(&dir.join("session/inner"));
    let pinned = root(dir);
    let swapper = ExchangeSwapper::start(dir);
    let (mut resolved, mut refused) = (0_usize, 0_usize);
    for i in 0..iterations {
        let (segments, expected): (&[&str], _) = if i % 2 == 0 {
            (&["session"], session)
        } else {
            (&["session", "inner"], inner)
        };
        match pinned.resolve(segments, Missing::Refuse, "root") {
            Ok(r) => {
                assert_eq!((r.dev, r.ino), expected, "{segments:?} escaped the session");
                resolved += 1;
            }
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::VolumeSubPathSymlink, "{e}");
                refused += 1;
            }
        }
    }
    let swaps = swapper.stop();
    println!(
        "exchange race at the safe-path level: {iterations} resolutions, {resolved} of the session, {refused} refused as links, 0 escapes, {swaps} swaps"
    );
    assert!(
        resolved > 0 && refused > 0 && swaps > iterations as u64 / 10,
        "the race did not really happen: {resolved} resolved, {refused} refused, {swaps} swaps"
    );
}
