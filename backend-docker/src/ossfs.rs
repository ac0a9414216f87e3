//! OSS buckets through ossfs (ARCHITECTURE.md, "Volume rules"), the pure part: which mount a volume shares, the
//! helper's command line, and the credentials file it reads. The host side (mountpoints,
//! credentials files, unmounting) is in `safe_path::ossfs_area`; running the helper and
//! reference counting are in the runtime.
//!
//! One host mount serves every sandbox asking for the same bucket, endpoint, prefix, version,
//! options *and credentials* (upstream shared a mount by path alone, so a second tenant used the
//! first one's keys). The mount's directory is named by a keyed hash of all of them, so no
//! request input ever becomes a path component, and the store never holds a credential.

use std::ffi::OsString;
use std::fmt;
use std::path::Path;

use berth_core::model::{OssfsSource, OssfsVersion, SubPath};
use sha2::{Digest, Sha256};

/// The identity of one shared ossfs mount: 32 lowercase hex digits (128 bits of a keyed
/// SHA-256), which is also its directory name under `storage.ossfs_mount_root`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct OssfsKey(String);

/// A string that is not an [`OssfsKey`].
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an ossfs mount key (32 lowercase hex digits)")]
pub struct NotAKey(String);

impl OssfsKey {
    /// The key of `source` mounted at bucket prefix `prefix`. `salt` is this server's secret
    /// (from the store), so a key reveals nothing about credentials outside the server.
    pub fn derive(salt: &[u8], source: &OssfsSource, prefix: Option<&SubPath>) -> Self {
        let mut options: Vec<String> = source.options.iter().map(ToString::to_string).collect();
        // Order does not change what ossfs does; duplicates neither.
        options.sort();
        options.dedup();
        let mut hash = Sha256::new();
        let mut field = |bytes: &[u8]| {
            // Length-prefixed, so no two different field lists hash the same input.
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        field(salt);
        field(source.version.as_str().as_bytes());
        field(source.endpoint.as_str().as_bytes());
        field(source.bucket.as_str().as_bytes());
        field(prefix.map_or("", SubPath::as_str).as_bytes());
        field(options.join("\n").as_bytes());
        field(source.credentials.access_key_id().as_bytes());
        field(source.credentials.access_key_secret().as_bytes());
        let digest = hash.finalize();
        Self(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Parses a key (a directory name found under the mount root, or a stored one).
    pub fn parse(s: &str) -> Result<Self, NotAKey> {
        Self::try_from(s.to_owned())
    }

    /// The key as text (its directory name).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OssfsKey {
    type Error = NotAKey;

    fn try_from(s: String) -> Result<Self, NotAKey> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s))
        } else {
            Err(NotAKey(s))
        }
    }
}

impl From<OssfsKey> for String {
    fn from(key: OssfsKey) -> Self {
        key.0
    }
}

impl fmt::Display for OssfsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The endpoint as ossfs wants it: with a scheme (validation allows only a host name).
fn endpoint_url(source: &OssfsSource) -> String {
    format!("https://{}", source.endpoint)
}

/// What the helper reads its keys (and, for 2.0, everything else) from. Validation refuses
/// whitespace in every field written here, so no line can be injected.
pub fn credentials_file(source: &OssfsSource, prefix: Option<&SubPath>) -> String {
    match source.version {
        // The passwd file of ossfs 1.x: `bucket:id:secret`.
        OssfsVersion::V1 => format!(
            "{}:{}:{}\n",
            source.bucket,
            source.credentials.access_key_id(),
            source.credentials.access_key_secret()
        ),
        // The config file of ossfs 2.x: one `--option=value` per line.
        OssfsVersion::V2 => {
            let mut lines = vec![
                format!("--oss_endpoint={}", endpoint_url(source)),
                format!("--oss_bucket={}", source.bucket),
                format!("--oss_access_key_id={}", source.credentials.access_key_id()),
                format!(
                    "--oss_access_key_secret={}",
                    source.credentials.access_key_secret()
                ),
            ];
            if let Some(prefix) = prefix {
                lines.push(format!("--oss_bucket_prefix={prefix}/"));
            }
            lines.extend(source.options.iter().map(|o| format!("--{o}")));
            let mut text = lines.join("\n");
            text.push('\n');
            text
        }
    }
}

/// The helper's arguments (after the program) to mount `source` on `mountpoint`, reading the
/// keys from `credentials`. No shell is involved; credentials are never on the command line.
pub fn mount_arguments(
    source: &OssfsSource,
    prefix: Option<&SubPath>,
    mountpoint: &Path,
    credentials: &Path,
) -> Vec<OsString> {
    match source.version {
        OssfsVersion::V1 => {
            let target = match prefix {
                Some(prefix) => format!("{}:/{prefix}", source.bucket),
                None => source.bucket.to_string(),
            };
            let mut passwd = OsString::from("passwd_file=");
            passwd.push(credentials);
            let mut args: Vec<OsString> = vec![
                target.into(),
                mountpoint.into(),
                "-o".into(),
                format!("url={}", endpoint_url(source)).into(),
                "-o".into(),
                passwd,
                // Sandboxes may run as any user; without it only root could enter the mount.
                "-o".into(),
                "allow_other".into(),
            ];
            for option in &source.options {
                args.push("-o".into());
                args.push(option.to_string().into());
            }
            args
        }
        OssfsVersion::V2 => vec![
            "mount".into(),
            mountpoint.into(),
            "-c".into(),
            credentials.into(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use berth_core::model::{MountOption, OssBucket, OssCredentials, OssEndpoint};

    use super::*;

    fn source(version: OssfsVersion, secret: &str, options: &[&str]) -> OssfsSource {
        OssfsSource {
            bucket: OssBucket::new("team-data").unwrap(),
            endpoint: OssEndpoint::new("oss-cn-hangzhou.aliyuncs.com").unwrap(),
            version,
            options: options
                .iter()
                .map(|o| MountOption::ossfs(o).unwrap())
                .collect(),
            credentials: OssCredentials::new("AKID", secret).unwrap(),
        }
    }

    #[test]
    fn every_part_of_the_key_matters_and_option_order_does_not() {
        let salt = b"salt";
        let prefix = SubPath::new("runs/1").unwrap();
        let base = OssfsKey::derive(salt, &source(OssfsVersion::V2, "s1", &[]), None);
        let variants = [
            OssfsKey::derive(b"other", &source(OssfsVersion::V2, "s1", &[]), None),
            OssfsKey::derive(salt, &source(OssfsVersion::V1, "s1", &[]), None),
            OssfsKey::derive(salt, &source(OssfsVersion::V2, "s2", &[]), None),
            OssfsKey::derive(salt, &source(OssfsVersion::V2, "s1", &["noxattr"]), None),
            OssfsKey::derive(salt, &source(OssfsVersion::V2, "s1", &[]), Some(&prefix)),
        ];
        for v in &variants {
            assert_ne!(v, &base);
        }
        assert_eq!(
            OssfsKey::derive(
                salt,
                &source(OssfsVersion::V1, "s", &["noxattr", "umask=022"]),
                None
            ),
            OssfsKey::derive(
                salt,
                &source(OssfsVersion::V1, "s", &["umask=022", "noxattr"]),
                None
            ),
        );
        assert!(OssfsKey::parse(base.as_str()).is_ok());
        for bad in ["", "../x", "ABCDEF0123456789abcdef0123456789", "0"] {
            assert!(OssfsKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn version_1_passes_keys_in_a_passwd_file_and_options_with_dash_o() {
        let s = source(OssfsVersion::V1, "secret", &["umask=022"]);
        let prefix = SubPath::new("runs/1").unwrap();
        assert_eq!(
            credentials_file(&s, Some(&prefix)),
            "team-data:AKID:secret\n"
        );
        let args = mount_arguments(&s, Some(&prefix), Path::new("/m/k"), Path::new("/c/f"));
        assert_eq!(
            args,
            [
                "team-data:/runs/1",
                "/m/k",
                "-o",
                "url=https://oss-cn-hangzhou.aliyuncs.com",
                "-o",
                "passwd_file=/c/f",
                "-o",
                "allow_other",
                "-o",
                "umask=022"
            ]
            .map(OsString::from)
        );
    }

    #[test]
    fn version_2_reads_everything_from_its_config_file() {
        let s = source(OssfsVersion::V2, "secret", &["attr_timeout=5"]);
        let prefix = SubPath::new("runs/1").unwrap();
        assert_eq!(
            credentials_file(&s, Some(&prefix)),
            "--oss_endpoint=https://oss-cn-hangzhou.aliyuncs.com\n--oss_bucket=team-data\n--oss_access_key_id=AKID\n--oss_access_key_secret=secret\n--oss_bucket_prefix=runs/1/\n--attr_timeout=5\n"
        );
        assert_eq!(
            mount_arguments(&s, None, Path::new("/m/k"), Path::new("/c/f")),
            ["mount", "/m/k", "-c", "/c/f"].map(OsString::from)
        );
    }
}
