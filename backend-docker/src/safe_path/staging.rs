//! Staging mounts: the verified fd of a resolved path is bind-mounted (`open_tree` +
//! `move_mount`) onto a server-owned directory `<state_dir>/mounts/<sandbox>/<volume>`, and that
//! path is what the engine receives. A mount cannot be swapped for a symlink, so the race between
//! checking a path and the engine mounting it is closed. Read-only staging mounts are made
//! read-only recursively (`mount_setattr` with `AT_RECURSIVE`), so read-only holds for every
//! mount inside the source too, on any engine version.
//!
//! Cleanup is `umount2(MNT_DETACH | UMOUNT_NOFOLLOW)` then `rmdir`/`unlink` of the empty
//! mountpoint — never a recursive delete of a staging path.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_core::model::ReadOnlyMode;
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{MoveMountFlags, OpenTreeFlags, UnmountFlags};

use super::{Resolved, ResolvedKind, SafePathError, syscalls};

/// The server-owned directory under which staging mounts live.
#[derive(Debug)]
pub struct StagingArea {
    fd: OwnedFd,
    path: PathBuf,
}

/// A staging mount, ready to hand to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedMount {
    /// The path to give the engine as bind source.
    pub path: PathBuf,
    /// How read-only is enforced (`None` when writable).
    pub read_only_mode: ReadOnlyMode,
}

/// Where `volume` of `sandbox` is staged below the staging directory `root` — the path a dry
/// run reports and a create binds. Both names are DNS labels (validated ids and volume names).
pub fn staged_path(root: &Path, sandbox: &str, volume: &str) -> PathBuf {
    root.join(sandbox).join(volume)
}

/// Names of staging entries come from validated ids and volume names (DNS labels); this refuses
/// anything else, so a bug elsewhere cannot make a staging path leave the area.
fn check_entry_name(name: &str) -> Result<(), SafePathError> {
    if berth_core::model::is_dns_label(name) {
        Ok(())
    } else {
        Err(SafePathError::io(
            "naming staging entry",
            name,
            Errno::INVAL,
        ))
    }
}

const STRICT: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

impl StagingArea {
    /// Opens (creating it, mode 0700) the staging directory. Its path comes from configuration
    /// (`storage.state_dir`), which the operator controls.
    pub fn open(path: &Path) -> Result<Self, SafePathError> {
        let shown = path.display().to_string();
        match rustix::fs::mkdir(path, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(SafePathError::io("creating staging area", shown, e)),
        }
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| SafePathError::io("opening staging area", shown, e))?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// The staging directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where `volume` of `sandbox` is staged.
    pub fn mount_path(&self, sandbox: &str, volume: &str) -> PathBuf {
        staged_path(&self.path, sandbox, volume)
    }

    fn sandbox_dir(&self, sandbox: &str, create: bool) -> Result<OwnedFd, SafePathError> {
        check_entry_name(sandbox)?;
        if create {
            match rustix::fs::mkdirat(&self.fd, sandbox, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(SafePathError::io("creating staging directory", sandbox, e)),
            }
        }
        rustix::fs::openat2(
            &self.fd,
            sandbox,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            STRICT,
        )
        .map_err(|e| SafePathError::io("opening staging directory", sandbox, e))
    }

    /// Bind-mounts the verified object onto `<area>/<sandbox>/<volume>`; with `read_only`, the
    /// whole mount tree is read-only. On failure nothing is left mounted or created.
    pub fn stage(
        &self,
        sandbox: &str,
        volume: &str,
        source: &Resolved,
        read_only: bool,
    ) -> Result<StagedMount, SafePathError> {
        check_entry_name(volume)?;
        let dir = self.sandbox_dir(sandbox, true)?;
        let shown = format!("{sandbox}/{volume}");
        match source.kind {
            ResolvedKind::Directory => {
                rustix::fs::mkdirat(&dir, volume, Mode::from_bits_truncate(0o700))
                    .map_err(|e| SafePathError::io("creating mountpoint", &shown, e))?
            }
            ResolvedKind::RegularFile => {
                rustix::fs::openat(
                    &dir,
                    volume,
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| SafePathError::io("creating mountpoint", &shown, e))?;
            }
        }
        let result = self.attach(&dir, volume, source, read_only, &shown);
        if result.is_err() {
            self.remove_mountpoint(&dir, volume, source.kind);
        }
        result.map(|()| StagedMount {
            path: self.mount_path(sandbox, volume),
            read_only_mode: if read_only {
                ReadOnlyMode::Recursive
            } else {
                ReadOnlyMode::None
            },
        })
    }

    fn attach(
        &self,
        dir: &OwnedFd,
        volume: &str,
        source: &Resolved,
        read_only: bool,
        shown: &str,
    ) -> Result<(), SafePathError> {
        let tree = rustix::mount::open_tree(
            source.fd(),
            "",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_EMPTY_PATH
                | OpenTreeFlags::AT_RECURSIVE,
        )
        .map_err(|e| SafePathError::io("cloning the mount of", shown, e))?;
        if read_only {
            syscalls::make_read_only_recursive(tree.as_fd())
                .map_err(|e| SafePathError::io("making read-only", shown, e))?;
        }
        rustix::mount::move_mount(
            tree.as_fd(),
            "",
            dir,
            volume,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| SafePathError::io("attaching the staging mount", shown, e))?;
        Ok(())
    }

    fn remove_mountpoint(&self, dir: &OwnedFd, volume: &str, kind: ResolvedKind) {
        let flags = if kind == ResolvedKind::Directory {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        let _ = rustix::fs::unlinkat(dir, volume, flags);
    }

    /// Unmounts and removes one staging mount; an already-removed one is fine.
    pub fn release(&self, sandbox: &str, volume: &str) -> Result<(), SafePathError> {
        check_entry_name(volume)?;
        let dir = match self.sandbox_dir(sandbox, false) {
            Ok(dir) => dir,
            Err(SafePathError::Io { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let path = self.mount_path(sandbox, volume);
        let shown = format!("{sandbox}/{volume}");
        match rustix::mount::unmount(&path, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
            // EINVAL: not a mountpoint (already unmounted); ENOENT: already gone.
            Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => {}
            Err(e) => return Err(SafePathError::io("unmounting", shown, e)),
        }
        match rustix::fs::unlinkat(&dir, volume, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            // A staged regular file.
            Err(Errno::NOTDIR) => rustix::fs::unlinkat(&dir, volume, AtFlags::empty())
                .map_err(|e| SafePathError::io("removing mountpoint", shown, e)),
            Err(e) => Err(SafePathError::io("removing mountpoint", shown, e)),
        }
    }

    /// Releases every staging mount of `sandbox` and removes its directory.
    pub fn release_sandbox(&self, sandbox: &str) -> Result<(), SafePathError> {
        for volume in self.volumes_of(sandbox)? {
            self.release(sandbox, &volume)?;
        }
        match rustix::fs::unlinkat(&self.fd, sandbox, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(SafePathError::io("removing staging directory", sandbox, e)),
        }
    }

    /// Sandboxes that have a staging directory (for reconciliation at startup).
    pub fn sandboxes(&self) -> Result<Vec<String>, SafePathError> {
        list_dir(&self.fd, ".")
    }

    fn volumes_of(&self, sandbox: &str) -> Result<Vec<String>, SafePathError> {
        check_entry_name(sandbox)?;
        match list_dir(&self.fd, sandbox) {
            Err(SafePathError::Io { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(Vec::new())
            }
            other => other,
        }
    }
}

/// Names in the directory `name` below `area` (dot entries skipped), sorted.
pub(super) fn list_dir(area: impl AsFd, name: &str) -> Result<Vec<String>, SafePathError> {
    let fd = rustix::fs::openat2(
        area.as_fd(),
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        STRICT,
    )
    .map_err(|e| SafePathError::io("listing", name, e))?;
    let dir = rustix::fs::Dir::read_from(&fd).map_err(|e| SafePathError::io("listing", name, e))?;
    let mut names = Vec::new();
    for entry in dir {
        let entry = entry.map_err(|e| SafePathError::io("listing", name, e))?;
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        if entry_name != "." && entry_name != ".." {
            names.push(entry_name);
        }
    }
    names.sort();
    Ok(names)
}
