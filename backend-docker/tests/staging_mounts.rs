//! Staging mounts on the real kernel: what the engine would receive is the verified inode,
//! read-only is recursive, cleanup unmounts and removes only the empty mountpoint, and a path
//! component swapped for a symlink in a tight loop never redirects a staged mount. Needs root;
//! fails, never skips, without.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};

use berth_core::ErrorCode;
use berth_core::model::ReadOnlyMode;
use berth_docker::safe_path::staging::StagingArea;
use berth_docker::safe_path::{Missing, TrustedRoot};
use common::mounts_below;

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests need root (mounts); run them as root"
    );
}

/// Mount points below `dir` according to the kernel.
fn is_read_only_error(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EROFS)
}

#[test]
fn a_staged_directory_is_the_verified_inode_and_cleanup_leaves_data_alone() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("volume");
    fs::create_dir(&volume).unwrap();
    let area = StagingArea::open(&tmp.path().join("mounts")).unwrap();
    let resolved = TrustedRoot::open_configured(&volume)
        .unwrap()
        .resolve(&["uid-1", "session-1"], Missing::Create, "volume")
        .unwrap();
    let staged = area.stage("sbx-1", "work", &resolved, false).unwrap();
    assert_eq!(staged.read_only_mode, ReadOnlyMode::None);
    let meta = fs::metadata(&staged.path).unwrap();
    assert_eq!((meta.dev(), meta.ino()), (resolved.dev, resolved.ino));
    fs::write(staged.path.join("notes.txt"), b"kept").unwrap();
    assert_eq!(
        fs::read(volume.join("uid-1/session-1/notes.txt")).unwrap(),
        b"kept"
    );
    assert_eq!(mounts_below(tmp.path()).len(), 1);

    area.release_sandbox("sbx-1").unwrap();
    assert!(
        mounts_below(tmp.path()).is_empty(),
        "staging mount left behind"
    );
    assert!(
        !tmp.path().join("mounts/sbx-1").exists(),
        "staging directory left behind"
    );
    assert_eq!(
        fs::read(volume.join("uid-1/session-1/notes.txt")).unwrap(),
        b"kept",
        "cleanup touched the data"
    );
    // Releasing again is fine.
    area.release_sandbox("sbx-1").unwrap();
    area.release("sbx-1", "work").unwrap();
}

#[test]
fn read_only_is_recursive() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let other = tmp.path().join("other");
    fs::create_dir(&source).unwrap();
    fs::create_dir(source.join("sub")).unwrap();
    fs::create_dir(&other).unwrap();
    // A mount inside the source, as another volume or the operator might have made.
    rustix::mount::mount_bind(&other, source.join("sub")).unwrap();
    fs::write(source.join("sub/marker"), b"inner").unwrap();

    let area = StagingArea::open(&tmp.path().join("mounts")).unwrap();
    let resolved = TrustedRoot::open_configured(&source)
        .unwrap()
        .resolve(&[], Missing::Refuse, "source")
        .unwrap();
    let staged = area.stage("sbx-ro", "shared", &resolved, true).unwrap();
    assert_eq!(staged.read_only_mode, ReadOnlyMode::Recursive);
    // The inner mount is visible through the staging mount...
    assert_eq!(fs::read(staged.path.join("sub/marker")).unwrap(), b"inner");
    // ...and neither level can be written.
    assert!(is_read_only_error(
        &fs::write(staged.path.join("top"), b"x").unwrap_err()
    ));
    assert!(is_read_only_error(
        &fs::write(staged.path.join("sub/inner"), b"x").unwrap_err()
    ));
    // The source itself stays writable.
    fs::write(source.join("sub/still-writable"), b"x").unwrap();

    area.release_sandbox("sbx-ro").unwrap();
    rustix::mount::unmount(source.join("sub"), rustix::mount::UnmountFlags::DETACH).unwrap();
    assert!(mounts_below(tmp.path()).is_empty());
}

#[test]
fn a_regular_file_is_staged_as_a_file() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("boot.iso"), b"iso").unwrap();
    let area = StagingArea::open(&tmp.path().join("mounts")).unwrap();
    let resolved = TrustedRoot::open_configured(&root)
        .unwrap()
        .resolve(&["boot.iso"], Missing::Refuse, "root")
        .unwrap();
    let staged = area.stage("sbx-file", "iso", &resolved, true).unwrap();
    assert_eq!(fs::read(&staged.path).unwrap(), b"iso");
    assert!(is_read_only_error(
        &fs::write(&staged.path, b"x").unwrap_err()
    ));
    area.release_sandbox("sbx-file").unwrap();
    assert!(mounts_below(tmp.path()).is_empty());
    assert_eq!(fs::read(root.join("boot.iso")).unwrap(), b"iso");
}

#[test]
fn staging_names_must_be_dns_labels() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let area = StagingArea::open(&tmp.path().join("mounts")).unwrap();
    let resolved = TrustedRoot::open_configured(tmp.path())
        .unwrap()
        .resolve(&[], Missing::Refuse, "t")
        .unwrap();
    for (sandbox, volume) in [("../x", "v"), ("s", "../../etc"), ("s", "a/b"), ("", "v")] {
        assert!(
            area.stage(sandbox, volume, &resolved, false).is_err(),
            "{sandbox}/{volume}"
        );
    }
    assert!(mounts_below(tmp.path()).is_empty());
}

/// A thread keeps exchanging a path component with a symlink to `/` (renameat2
/// RENAME_EXCHANGE) while the main thread resolves and stages that path. Every staged mount must
/// show the intended directory (its marker file); every refusal must be SUB_PATH_SYMLINK.
#[test]
fn an_exchange_race_never_redirects_a_staged_mount() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("volume");
    fs::create_dir(&volume).unwrap();
    fs::create_dir(volume.join("session")).unwrap();
    fs::write(volume.join("session/marker"), b"intended").unwrap();
    symlink("/", volume.join("decoy")).unwrap();
    let area = StagingArea::open(&tmp.path().join("mounts")).unwrap();
    let root = TrustedRoot::open_configured(&volume).unwrap();

    let swapper = common::exchange_swapper::ExchangeSwapper::start(&volume);
    let (mut staged_ok, mut refused) = (0u32, 0u32);
    for i in 0..2000 {
        match root.resolve(&["session"], Missing::Refuse, "volume") {
            Ok(resolved) => {
                let staged = area
                    .stage("race", &format!("v{i}"), &resolved, true)
                    .unwrap();
                assert_eq!(
                    fs::read(staged.path.join("marker")).unwrap(),
                    b"intended",
                    "a staged mount shows the wrong directory"
                );
                assert!(!staged.path.join("etc").exists(), "a staged mount shows /");
                area.release("race", &format!("v{i}")).unwrap();
                staged_ok += 1;
            }
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::VolumeSubPathSymlink, "{e}");
                refused += 1;
            }
        }
    }
    let swaps = swapper.stop();
    area.release_sandbox("race").unwrap();
    println!(
        "exchange race: {staged_ok} staged (all showed the intended directory), {refused} refused as symlinks, {swaps} swaps"
    );
    assert!(
        swaps > 1000 && staged_ok > 0 && refused > 0,
        "the race did not really happen: {staged_ok} staged, {refused} refused, {swaps} swaps"
    );
    assert!(mounts_below(tmp.path()).is_empty());
}
