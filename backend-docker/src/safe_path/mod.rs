//! The one place where user input becomes a host path (ARCHITECTURE.md, "Path safety"; invariant "Only safe_path builds host paths").
//!
//! A path below a trusted root — an allowed host root from configuration, or a named volume's
//! mountpoint from the engine — is resolved from a pinned fd of that root, one segment at a time,
//! with `openat2(O_PATH, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`. Every
//! symlink is refused, not followed and not "contained": a link that stays inside a shared volume
//! would still show another session's data. Missing directories are created one by one with
//! `mkdirat` and re-opened the same way, taking their parent's owner, group and mode. The result
//! is an fd of the verified inode, which [`staging`] bind-mounts onto a server-owned directory,
//! so the path handed to the engine cannot be swapped afterwards.
//!
//! Nothing else in the crate may turn user input into a host path; `clippy.toml` bans the
//! std functions that would.

pub mod ossfs_area;
pub mod staging;
mod syscalls;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_core::ErrorCode;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Why a path could not be resolved safely.
#[derive(Debug, thiserror::Error)]
pub enum SafePathError {
    /// A symlink sits at `path` (or a resolution tried to leave the root through one).
    #[error("{path} is a symbolic link; links below a trusted root are refused, not followed")]
    Symlink {
        /// The path shown to the user (root-relative for volumes).
        path: String,
    },
    /// Something other than a directory sits where a directory is needed.
    #[error("{path} is a {kind}, not a directory")]
    NotDirectory {
        /// Where.
        path: String,
        /// What is there.
        kind: &'static str,
    },
    /// The final object is neither a directory nor a regular file.
    #[error("{path} is a {kind}; only directories and regular files can be mounted")]
    UnsupportedFileType {
        /// Where.
        path: String,
        /// What is there.
        kind: &'static str,
    },
    /// The path does not exist and was not to be created.
    #[error("{path} does not exist")]
    Missing {
        /// Where.
        path: String,
    },
    /// A system call failed.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// On which path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

impl SafePathError {
    /// The stable code a client sees.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Symlink { .. } => ErrorCode::VolumeSubPathSymlink,
            Self::NotDirectory { .. } | Self::UnsupportedFileType { .. } => {
                ErrorCode::VolumeUnsupportedFileType
            }
            Self::Missing { .. } => ErrorCode::VolumeInvalidSubPath,
            Self::Io { .. } => ErrorCode::GeneralInternalError,
        }
    }

    fn io(context: &'static str, path: impl Into<String>, errno: Errno) -> Self {
        Self::Io {
            context,
            path: path.into(),
            source: errno.into(),
        }
    }
}

/// What a resolved path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedKind {
    /// A directory.
    Directory,
    /// A regular file (host volumes may mount files).
    RegularFile,
}

/// A verified object below a trusted root: an `O_PATH` fd of it, and its identity.
#[derive(Debug)]
pub struct Resolved {
    fd: OwnedFd,
    /// Directory or regular file.
    pub kind: ResolvedKind,
    /// Device of the inode (to check what the sandbox sees later).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

impl Resolved {
    /// The `O_PATH` fd of the verified object.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Whether missing directories are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Create them, with their parent's owner, group and mode.
    Create,
    /// Report them.
    Refuse,
}

/// A directory Berth trusts, pinned by an fd so that renaming or replacing its path later does
/// not change what is resolved below it.
#[derive(Debug)]
pub struct TrustedRoot {
    fd: OwnedFd,
    path: PathBuf,
}

const RESOLVE_STRICT: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

fn kind_name(file_type: FileType) -> &'static str {
    match file_type {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "file of unknown type",
    }
}

impl TrustedRoot {
    /// Opens a root named by the operator (`storage.allowed_host_paths`): it must be an absolute
    /// path to a directory with no symlink in any component, or the server refuses to start.
    pub fn open_configured(path: &Path) -> Result<Self, SafePathError> {
        let shown = path.display().to_string();
        if !path.is_absolute() {
            return Err(SafePathError::io("opening root", shown, Errno::INVAL));
        }
        let fd = rustix::fs::openat2(
            rustix::fs::CWD,
            path,
            // No O_NOFOLLOW: RESOLVE_NO_SYMLINKS then refuses a trailing link with ELOOP.
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| match e {
            Errno::LOOP => SafePathError::Symlink {
                path: shown.clone(),
            },
            Errno::NOTDIR => SafePathError::NotDirectory {
                path: shown.clone(),
                kind: "non-directory",
            },
            Errno::NOENT => SafePathError::Missing {
                path: shown.clone(),
            },
            e => SafePathError::io("opening root", shown.clone(), e),
        })?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// Opens a root the engine reported (a named volume's mountpoint). The engine's own path is
    /// trusted as it is (its prefix may legitimately be a symlink, e.g. a relocated data root);
    /// everything below it is resolved strictly.
    pub fn open_engine_path(path: &Path) -> Result<Self, SafePathError> {
        let shown = path.display().to_string();
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SafePathError::io("opening volume mountpoint", shown, e))?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// Uses a resolved directory as a root, for resolving a second path below it.
    pub fn from_resolved(resolved: Resolved, shown: &str) -> Result<Self, SafePathError> {
        if resolved.kind != ResolvedKind::Directory {
            return Err(SafePathError::NotDirectory {
                path: shown.to_owned(),
                kind: "regular file",
            });
        }
        Ok(Self {
            fd: resolved.fd,
            path: PathBuf::from(shown),
        })
    }

    /// The path of `segments` below this root as a string, for the operator's opt-in
    /// `storage.allow_unstaged_paths` mode only: the engine resolves it again later, so a
    /// component swapped for a symlink in between is followed (the documented residual race).
    /// `segments` must have been resolved with [`TrustedRoot::resolve`] first.
    pub fn unstaged_path(&self, segments: &[&str]) -> PathBuf {
        segments
            .iter()
            .fold(self.path.clone(), |path, segment| path.join(segment))
    }

    /// The path this root was opened at (for messages and logs only).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pinned fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Resolves `segments` (already lexically validated: no `.`, `..`, `/` or empty segment)
    /// below this root, refusing every symlink, creating missing directories when `missing` says
    /// so. `shown_prefix` is how the root appears in messages (a volume name, or its path).
    pub fn resolve(
        &self,
        segments: &[&str],
        missing: Missing,
        shown_prefix: &str,
    ) -> Result<Resolved, SafePathError> {
        let mut current = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
            .map_err(|e| SafePathError::io("duplicating root fd", shown_prefix, e))?;
        let mut shown = shown_prefix.trim_end_matches('/').to_owned();
        let mut current_kind = ResolvedKind::Directory;
        for (i, segment) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            debug_assert!(
                !segment.is_empty()
                    && *segment != "."
                    && *segment != ".."
                    && !segment.contains('/')
            );
            shown.push('/');
            shown.push_str(segment);
            let next = match open_beneath(&current, segment) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if missing == Missing::Create => {
                    create_directory(&current, segment, &shown)?
                }
                Err(Errno::NOENT) => return Err(SafePathError::Missing { path: shown }),
                Err(e) => return Err(map_open_error(e, shown)),
            };
            let stat = rustix::fs::fstat(&next)
                .map_err(|e| SafePathError::io("inspecting", shown.clone(), e))?;
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => current_kind = ResolvedKind::Directory,
                FileType::Symlink => return Err(SafePathError::Symlink { path: shown }),
                FileType::RegularFile if is_last => current_kind = ResolvedKind::RegularFile,
                other if is_last => {
                    return Err(SafePathError::UnsupportedFileType {
                        path: shown,
                        kind: kind_name(other),
                    });
                }
                other => {
                    return Err(SafePathError::NotDirectory {
                        path: shown,
                        kind: kind_name(other),
                    });
                }
            }
            current = next;
        }
        let stat = rustix::fs::fstat(&current)
            .map_err(|e| SafePathError::io("inspecting", shown.clone(), e))?;
        Ok(Resolved {
            fd: current,
            kind: current_kind,
            dev: stat.st_dev,
            ino: stat.st_ino,
        })
    }
}

/// Opens one segment below `dir` as `O_PATH` (a FIFO or socket opens without blocking), never
/// following a symlink: with `O_NOFOLLOW | O_PATH` a trailing link yields an fd of the link
/// itself, which the caller's `fstat` refuses.
fn open_beneath(dir: &OwnedFd, segment: &str) -> Result<OwnedFd, Errno> {
    rustix::fs::openat2(
        dir,
        segment,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE_STRICT,
    )
}

fn map_open_error(errno: Errno, shown: String) -> SafePathError {
    match errno {
        // ELOOP: a symlink under RESOLVE_NO_SYMLINKS; EXDEV: an attempt to leave the root.
        Errno::LOOP | Errno::XDEV => SafePathError::Symlink { path: shown },
        Errno::NOTDIR => SafePathError::NotDirectory {
            path: shown,
            kind: "non-directory",
        },
        e => SafePathError::io("opening", shown, e),
    }
}

/// Creates `segment` in `parent` with the parent's owner, group and mode, and opens it. If
/// something else appears there first (a racing sandbox), it is opened under the same rules, so
/// a planted symlink is still refused.
fn create_directory(
    parent: &OwnedFd,
    segment: &str,
    shown: &str,
) -> Result<OwnedFd, SafePathError> {
    let parent_stat = rustix::fs::fstat(parent)
        .map_err(|e| SafePathError::io("inspecting parent of", shown, e))?;
    let mode = Mode::from_bits_truncate(parent_stat.st_mode & 0o7777);
    match rustix::fs::mkdirat(parent, segment, Mode::from_bits_truncate(0o700)) {
        Ok(()) => {
            // Opened for real (not O_PATH) so fchown/fchmod act on this very inode.
            let dir = rustix::fs::openat2(
                parent,
                segment,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE_STRICT,
            )
            .map_err(|e| map_open_error(e, shown.to_owned()))?;
            let owner = rustix::process::Uid::from_raw(parent_stat.st_uid);
            let group = rustix::process::Gid::from_raw(parent_stat.st_gid);
            rustix::fs::fchown(&dir, Some(owner), Some(group))
                .map_err(|e| SafePathError::io("setting the owner of", shown, e))?;
            // After chown: chown clears set-id bits, so the mode goes last.
            rustix::fs::fchmod(&dir, mode)
                .map_err(|e| SafePathError::io("setting the mode of", shown, e))?;
        }
        Err(Errno::EXIST) => {}
        Err(e) => return Err(SafePathError::io("creating", shown, e)),
    }
    open_beneath(parent, segment).map_err(|e| map_open_error(e, shown.to_owned()))
}

/// Checks that what a running container sees at `mount_path` is the inode Berth verified
/// (`dev`, `ino`). A mismatch means the engine did not see the staging mount (e.g. it runs in
/// another mount namespace) or something was swapped.
pub fn container_sees(
    pid: u32,
    mount_path: &berth_core::model::MountPath,
    dev: u64,
    ino: u64,
) -> Result<bool, SafePathError> {
    process_sees(pid, mount_path.as_str(), dev, ino)
}

/// Whether process `pid` sees the inode (`dev`, `ino`) at the absolute `path`, resolved inside
/// its root (`/proc/<pid>/root`) without following any symlink.
pub fn process_sees(pid: u32, path: &str, dev: u64, ino: u64) -> Result<bool, SafePathError> {
    let root_path = format!("/proc/{pid}/root");
    let root = rustix::fs::open(
        root_path.as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SafePathError::io("opening the root of", root_path.clone(), e))?;
    let relative = path.trim_start_matches('/');
    let target = rustix::fs::openat2(
        &root,
        if relative.is_empty() { "." } else { relative },
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| SafePathError::io("opening in the root of", path, e))?;
    let stat = rustix::fs::fstat(&target)
        .map_err(|e| SafePathError::io("inspecting in the root of", path, e))?;
    Ok(stat.st_dev == dev && stat.st_ino == ino)
}

/// The process at the other end of the Unix socket `socket` (the engine, for the probe that
/// its mount namespace shows Berth's staging mounts).
pub fn socket_peer_pid(socket: &Path) -> Result<u32, SafePathError> {
    let shown = socket.display().to_string();
    let stream =
        std::os::unix::net::UnixStream::connect(socket).map_err(|e| SafePathError::Io {
            context: "connecting to",
            path: shown.clone(),
            source: e,
        })?;
    let cred = rustix::net::sockopt::socket_peercred(&stream)
        .map_err(|e| SafePathError::io("reading the peer of", shown, e))?;
    Ok(cred.pid.as_raw_nonzero().get().unsigned_abs())
}
