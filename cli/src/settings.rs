//! The configuration file (`$XDG_CONFIG_HOME/berth/config.toml`, else
//! `~/.config/berth/config.toml`): where the server is and its API key, so neither has to be on
//! a command line. Written with mode 0600, since it may hold the key. Precedence: command-line
//! flag, then environment variable, then this file, then the default.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The server used when nothing names one (the server's own default address).
pub const DEFAULT_SERVER: &str = "127.0.0.1:8080";

/// What the file holds. Unknown keys are refused, so a typo is not silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Server address (`host:port` or URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// API key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Longest wait for one request, e.g. `30s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<String>,
}

/// A problem with the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Neither `XDG_CONFIG_HOME` nor `HOME` is set.
    #[error("cannot tell where the configuration file is: set HOME, XDG_CONFIG_HOME or --config")]
    NoHome,
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected keys.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (TOML's message, naming the key).
        message: String,
    },
}

/// The default location of the file, from the environment.
pub fn default_path() -> Result<PathBuf, SettingsError> {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(dir).join("berth").join("config.toml"));
    }
    let home = non_empty("HOME").ok_or(SettingsError::NoHome)?;
    Ok(PathBuf::from(home)
        .join(".config")
        .join("berth")
        .join("config.toml"))
}

impl Settings {
    /// Reads `path`; a missing file is empty settings.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(SettingsError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|e| SettingsError::Invalid {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
    }

    /// Writes the settings to `path` with mode 0600 (also when the file existed with a wider
    /// mode), making its directory (0700) if needed. The file is replaced whole, through a
    /// temporary file in the same directory, so a failed write leaves the old one.
    pub fn save(&self, path: &Path) -> Result<(), SettingsError> {
        let io = |source| SettingsError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        make_private_dirs(dir).map_err(io)?;
        let text = toml::to_string(self).map_err(|e| SettingsError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let temporary = dir.join(format!(".config.toml.{}", std::process::id()));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        })();
        // The rename puts the new 0600 inode in place, whatever mode the old file had.
        written.map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            io(e)
        })
    }
}

/// Makes `dir` and missing parents, each new one 0700.
fn make_private_dirs(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_private_dirs(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn saved_settings_are_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/config.toml");
        let settings = Settings {
            server: Some("https://berth.example".into()),
            api_key: Some("secret".into()),
            request_timeout: None,
        };
        settings.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(Settings::load(&path).unwrap(), settings);
    }

    #[test]
    fn a_wider_existing_file_is_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "server = \"x:1\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut settings = Settings::load(&path).unwrap();
        settings.api_key = Some("k".into());
        settings.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "sever = \"x:1\"\n").unwrap();
        let error = Settings::load(&path).unwrap_err().to_string();
        assert!(error.contains("sever"), "{error}");
    }

    #[test]
    fn a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Settings::load(&dir.path().join("none.toml")).unwrap(),
            Settings::default()
        );
    }
}
