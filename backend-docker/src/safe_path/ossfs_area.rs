//! The host side of ossfs mounts: mountpoints `<storage.ossfs_mount_root>/<key>` and the
//! short-lived credentials files the helper reads, under `<state_dir>/ossfs-credentials` (0700).
//!
//! Every name below the two directories is an [`OssfsKey`] (hex) or a name this module makes,
//! resolved from pinned fds; a request's bucket or prefix never becomes a path here (upstream
//! joined the bucket into the mount root, so `bucket = "../.."` bound the host's `/`).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxAttributes, StatxFlags};
use rustix::io::Errno;
use rustix::mount::UnmountFlags;

use super::{SafePathError, TrustedRoot};
use crate::ossfs::OssfsKey;

/// What sits at a key's mountpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountpointState {
    /// Nothing: no directory.
    Absent,
    /// An empty directory, not mounted (a mount that failed, or one gone after a reboot).
    Unmounted,
    /// A live mount.
    Mounted,
    /// A mount whose helper died (`ENOTCONN`): it must be detached before mounting again.
    Disconnected,
}

/// The ossfs mount root and the credentials directory, pinned.
#[derive(Debug)]
pub struct OssfsArea {
    root: TrustedRoot,
    credentials: OwnedFd,
    credentials_path: PathBuf,
}

/// A credentials file that exists only while the helper runs: removed on drop.
#[derive(Debug)]
pub struct CredentialsFile<'a> {
    area: &'a OssfsArea,
    name: String,
    path: PathBuf,
}

impl CredentialsFile<'_> {
    /// Where the helper reads it.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CredentialsFile<'_> {
    fn drop(&mut self) {
        if let Err(e) = rustix::fs::unlinkat(&self.area.credentials, &self.name, AtFlags::empty())
            && e != Errno::NOENT
        {
            tracing::error!(file = %self.path.display(), error = %e, "removing an ossfs credentials file failed");
        }
    }
}

/// Makes `path` if it is missing (one level: its parent must exist), with `mode`.
fn make_directory(path: &Path, mode: u32, context: &'static str) -> Result<(), SafePathError> {
    match rustix::fs::mkdir(path, Mode::from_bits_truncate(mode)) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(SafePathError::io(context, path.display().to_string(), e)),
    }
}

const STRICT: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

impl OssfsArea {
    /// Opens (creating them if missing) the mount root (0755) and the credentials directory
    /// (0700). Both paths come from configuration.
    pub fn open(mount_root: &Path, credentials_dir: &Path) -> Result<Self, SafePathError> {
        make_directory(mount_root, 0o755, "creating the ossfs mount root")?;
        make_directory(credentials_dir, 0o700, "creating the credentials directory")?;
        let root = TrustedRoot::open_configured(mount_root)?;
        let credentials = TrustedRoot::open_configured(credentials_dir)?;
        let credentials = rustix::fs::openat2(
            credentials.fd(),
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            STRICT,
        )
        .map_err(|e| {
            SafePathError::io(
                "opening the credentials directory",
                credentials_dir.display().to_string(),
                e,
            )
        })?;
        // The directory must stay private even if it existed before (on the fd: no re-resolving).
        rustix::fs::fchmod(&credentials, Mode::from_bits_truncate(0o700)).map_err(|e| {
            SafePathError::io(
                "restricting the credentials directory",
                credentials_dir.display().to_string(),
                e,
            )
        })?;
        Ok(Self {
            root,
            credentials,
            credentials_path: credentials_dir.to_owned(),
        })
    }

    /// The mount root, to resolve (and stage) a mounted key from.
    pub fn root(&self) -> &TrustedRoot {
        &self.root
    }

    /// Where `key` is mounted (the helper's mountpoint argument).
    pub fn mountpoint(&self, key: &OssfsKey) -> PathBuf {
        self.root.path().join(key.as_str())
    }

    /// What is at `key`'s mountpoint now.
    pub fn state(&self, key: &OssfsKey) -> Result<MountpointState, SafePathError> {
        match rustix::fs::statx(
            self.root.fd(),
            key.as_str(),
            AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
            StatxFlags::TYPE,
        ) {
            Ok(stat) => {
                if !stat
                    .stx_attributes_mask
                    .contains(StatxAttributes::MOUNT_ROOT)
                {
                    return Err(SafePathError::io(
                        "telling whether a mount is live at",
                        key.as_str(),
                        Errno::NOSYS,
                    ));
                }
                if stat.stx_attributes.contains(StatxAttributes::MOUNT_ROOT) {
                    Ok(MountpointState::Mounted)
                } else {
                    Ok(MountpointState::Unmounted)
                }
            }
            Err(Errno::NOENT) => Ok(MountpointState::Absent),
            Err(Errno::NOTCONN) => Ok(MountpointState::Disconnected),
            Err(e) => Err(SafePathError::io("inspecting", key.as_str(), e)),
        }
    }

    /// Makes `key`'s mountpoint (an existing empty directory is fine).
    pub fn create_mountpoint(&self, key: &OssfsKey) -> Result<(), SafePathError> {
        match rustix::fs::mkdirat(
            self.root.fd(),
            key.as_str(),
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(SafePathError::io("creating mountpoint", key.as_str(), e)),
        }
    }

    /// Detaches whatever is mounted at `key` and removes the mountpoint; absent is fine. The
    /// unmount is lazy (`MNT_DETACH`): a sandbox still holding the mount keeps it until it ends.
    pub fn detach(&self, key: &OssfsKey) -> Result<(), SafePathError> {
        let path = self.mountpoint(key);
        // Several layers may be stacked (a remount over a dead mount): peel them all.
        loop {
            match rustix::mount::unmount(&path, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
                Ok(()) => continue,
                Err(Errno::INVAL) | Err(Errno::NOENT) => break,
                Err(e) => return Err(SafePathError::io("unmounting", key.as_str(), e)),
            }
        }
        match rustix::fs::unlinkat(self.root.fd(), key.as_str(), AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(SafePathError::io("removing mountpoint", key.as_str(), e)),
        }
    }

    /// Keys that have a mountpoint (other names under the root are not Berth's and are left).
    pub fn keys(&self) -> Result<Vec<OssfsKey>, SafePathError> {
        Ok(super::staging::list_dir(self.root.fd(), ".")?
            .iter()
            .filter_map(|name| OssfsKey::parse(name).ok())
            .collect())
    }

    /// Writes `contents` to a new 0600 file for the helper; it is removed when the returned
    /// guard drops (right after the helper returns).
    pub fn write_credentials(
        &self,
        key: &OssfsKey,
        contents: &str,
    ) -> Result<CredentialsFile<'_>, SafePathError> {
        let mut random = [0_u8; 8];
        rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty())
            .map_err(|e| SafePathError::io("naming a credentials file", key.as_str(), e))?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("{key}.{suffix}");
        let fd = rustix::fs::openat(
            &self.credentials,
            name.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| SafePathError::io("creating a credentials file for", key.as_str(), e))?;
        let file = CredentialsFile {
            area: self,
            path: self.credentials_path.join(&name),
            name,
        };
        let mut written = 0;
        while written < contents.len() {
            match rustix::io::write(&fd, &contents.as_bytes()[written..]) {
                Ok(n) => written += n,
                Err(Errno::INTR) => {}
                // `file` drops here and removes what was written.
                Err(e) => {
                    return Err(SafePathError::io(
                        "writing credentials for",
                        key.as_str(),
                        e,
                    ));
                }
            }
        }
        Ok(file)
    }

    /// Removes credentials files a crash left behind; how many.
    pub fn sweep_credentials(&self) -> Result<usize, SafePathError> {
        let names = super::staging::list_dir(&self.credentials, ".")?;
        for name in &names {
            rustix::fs::unlinkat(&self.credentials, name.as_str(), AtFlags::empty())
                .map_err(|e| SafePathError::io("removing a stale credentials file", name, e))?;
        }
        Ok(names.len())
    }
}
