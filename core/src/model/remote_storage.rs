//! Values of the network backends: OSS buckets mounted through ossfs, and NFS exports. Mount
//! options come from allowlists, so a request can never pass a credential file, a helper program
//! or an option that overrides what the server sets itself.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::invalid::{InvalidValue, quoted, validated_string};
use super::names::is_dns_label;
use super::paths::HostPath;
use crate::error_code::ErrorCode;

/// Whether `s` is a host name: dot-separated labels of letters, digits and `-` (any case),
/// at most 253 characters.
fn is_host_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.')
            .all(|label| is_dns_label(&label.to_ascii_lowercase()))
}

validated_string! {
    /// An OSS bucket name: 3..=63 of `[a-z0-9-]`, starting and ending with a letter or digit.
    OssBucket
}

impl OssBucket {
    /// The rule; `new` and `from_string` apply it.
    fn check(s: &str) -> Result<(), InvalidValue> {
        if (3..=63).contains(&s.len()) && is_dns_label(s) {
            Ok(())
        } else {
            Err(InvalidValue::new(
                ErrorCode::VolumeInvalidOssfsBucket,
                format!(
                    "bucket {} must be 3 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
                    quoted(s)
                ),
            ))
        }
    }
}

validated_string! {
    /// An OSS endpoint: a plain host name, without scheme, port or path.
    OssEndpoint
}

impl OssEndpoint {
    /// The rule; `new` and `from_string` apply it.
    fn check(s: &str) -> Result<(), InvalidValue> {
        if is_host_name(s) {
            return Ok(());
        }
        let hint = if s.contains("://") {
            " (give the host name without a scheme)"
        } else {
            ""
        };
        Err(InvalidValue::new(
            ErrorCode::VolumeInvalidOssfsEndpoint,
            format!(
                "endpoint {} is not a host name such as \"oss-cn-hangzhou.aliyuncs.com\"{hint}",
                quoted(s)
            ),
        ))
    }
}

/// The ossfs major version, which decides how options are passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum OssfsVersion {
    /// ossfs 1.x: `ossfs bucket mountpoint -o option`.
    V1,
    /// ossfs 2.x: `ossfs2 mount` with a config file of `--option` lines (the default).
    #[default]
    V2,
}

impl OssfsVersion {
    /// Parses `1.0` or `2.0`.
    pub fn new(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "1.0" => Ok(Self::V1),
            "2.0" => Ok(Self::V2),
            _ => Err(InvalidValue::new(
                ErrorCode::VolumeInvalidOssfsVersion,
                format!("version {} must be \"1.0\" or \"2.0\"", quoted(s)),
            )),
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "1.0",
            Self::V2 => "2.0",
        }
    }
}

/// What an allowlisted option takes after `=`.
#[derive(Debug, Clone, Copy)]
enum OptionValue {
    /// No value.
    Flag,
    /// A decimal number.
    Unsigned,
    /// An octal mode such as `022`.
    Octal,
    /// One of these words.
    OneOf(&'static [&'static str]),
}

impl OptionValue {
    fn accepts(self, value: Option<&str>) -> bool {
        match (self, value) {
            (Self::Flag, None) => true,
            (Self::Unsigned, Some(v)) => {
                !v.is_empty() && v.len() <= 12 && v.bytes().all(|c| c.is_ascii_digit())
            }
            (Self::Octal, Some(v)) => {
                !v.is_empty() && v.len() <= 4 && v.bytes().all(|c| (b'0'..=b'7').contains(&c))
            }
            (Self::OneOf(words), Some(v)) => words.contains(&v),
            _ => false,
        }
    }

    fn describe(self) -> String {
        match self {
            Self::Flag => "takes no value".to_owned(),
            Self::Unsigned => "takes a decimal number".to_owned(),
            Self::Octal => "takes an octal mode such as 022".to_owned(),
            Self::OneOf(words) => format!("takes one of {}", words.join(", ")),
        }
    }
}

/// ossfs options a request may set. Credentials, endpoints, passwd files, `allow_other`, uid/gid
/// and anything that runs a helper are set by the server or not at all.
const OSSFS_OPTIONS: &[(&str, OptionValue)] = &[
    ("attr_timeout", OptionValue::Unsigned),
    ("connect_timeout", OptionValue::Unsigned),
    ("direct_read", OptionValue::Flag),
    ("enable_noobj_cache", OptionValue::Flag),
    ("entry_timeout", OptionValue::Unsigned),
    ("kernel_cache", OptionValue::Flag),
    ("list_object_max_keys", OptionValue::Unsigned),
    ("max_dirty_data", OptionValue::Unsigned),
    ("max_stat_cache_size", OptionValue::Unsigned),
    ("multipart_size", OptionValue::Unsigned),
    ("negative_timeout", OptionValue::Unsigned),
    ("noxattr", OptionValue::Flag),
    ("parallel_count", OptionValue::Unsigned),
    ("readwrite_timeout", OptionValue::Unsigned),
    ("stat_cache_expire", OptionValue::Unsigned),
    ("umask", OptionValue::Octal),
];

/// NFS options a request may set. `addr`, `ro`/`rw` and anything security-relevant beyond `sec`
/// are set by the server from other fields.
const NFS_OPTIONS: &[(&str, OptionValue)] = &[
    ("acdirmax", OptionValue::Unsigned),
    ("acdirmin", OptionValue::Unsigned),
    ("acregmax", OptionValue::Unsigned),
    ("acregmin", OptionValue::Unsigned),
    ("actimeo", OptionValue::Unsigned),
    ("hard", OptionValue::Flag),
    ("nconnect", OptionValue::Unsigned),
    ("noac", OptionValue::Flag),
    ("noatime", OptionValue::Flag),
    ("nodiratime", OptionValue::Flag),
    ("nolock", OptionValue::Flag),
    (
        "nfsvers",
        OptionValue::OneOf(&["3", "4", "4.0", "4.1", "4.2"]),
    ),
    ("port", OptionValue::Unsigned),
    ("proto", OptionValue::OneOf(&["tcp", "tcp6", "rdma"])),
    ("retrans", OptionValue::Unsigned),
    ("rsize", OptionValue::Unsigned),
    (
        "sec",
        OptionValue::OneOf(&["sys", "krb5", "krb5i", "krb5p"]),
    ),
    ("soft", OptionValue::Flag),
    ("timeo", OptionValue::Unsigned),
    ("vers", OptionValue::OneOf(&["3", "4", "4.0", "4.1", "4.2"])),
    ("wsize", OptionValue::Unsigned),
];

/// One allowlisted mount option: a name and, for options that take one, a value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MountOption {
    name: &'static str,
    value: Option<String>,
}

impl MountOption {
    fn parse(
        s: &str,
        allowlist: &[(&'static str, OptionValue)],
        code: ErrorCode,
    ) -> Result<Self, InvalidValue> {
        if s.starts_with('-') {
            return Err(InvalidValue::new(
                code,
                format!("option {} must be given without a leading '-'", quoted(s)),
            ));
        }
        let (name, value) = match s.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (s, None),
        };
        let Some((known, kind)) = allowlist.iter().find(|(known, _)| *known == name) else {
            let allowed: Vec<&str> = allowlist.iter().map(|(n, _)| *n).collect();
            return Err(InvalidValue::new(
                code,
                format!(
                    "option {} is not allowed; allowed options: {}",
                    quoted(s),
                    allowed.join(", ")
                ),
            ));
        };
        if !kind.accepts(value) {
            return Err(InvalidValue::new(
                code,
                format!("option {}: {known} {}", quoted(s), kind.describe()),
            ));
        }
        Ok(Self {
            name: known,
            value: value.map(str::to_owned),
        })
    }

    /// Validates an ossfs option.
    pub fn ossfs(s: &str) -> Result<Self, InvalidValue> {
        Self::parse(s, OSSFS_OPTIONS, ErrorCode::VolumeInvalidOssfsOption)
    }

    /// Validates an NFS option.
    pub fn nfs(s: &str) -> Result<Self, InvalidValue> {
        Self::parse(s, NFS_OPTIONS, ErrorCode::VolumeInvalidNfsOption)
    }

    /// The option's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The option's value, for options that take one.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }
}

impl fmt::Display for MountOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}", self.name),
            None => f.write_str(self.name),
        }
    }
}

/// OSS credentials. Never shown by `Debug`, never put in responses, logs, labels or the store.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OssCredentials {
    access_key_id: String,
    access_key_secret: String,
}

impl OssCredentials {
    /// Validates a key pair: 1..=256 printable ASCII characters each, no whitespace (a newline
    /// would inject lines into ossfs's credential and config files).
    pub fn new(access_key_id: &str, access_key_secret: &str) -> Result<Self, InvalidValue> {
        Self::from_strings(access_key_id.to_owned(), access_key_secret.to_owned())
    }

    /// Validates an owned key pair without copying it.
    pub fn from_strings(
        access_key_id: String,
        access_key_secret: String,
    ) -> Result<Self, InvalidValue> {
        let ok = |s: &str| (1..=256).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_graphic());
        for (field, value) in [
            ("accessKeyId", &access_key_id),
            ("accessKeySecret", &access_key_secret),
        ] {
            if !ok(value) {
                // The value itself is never echoed: it is a credential.
                return Err(InvalidValue::new(
                    ErrorCode::VolumeInvalidOssfsCredentials,
                    format!(
                        "{field} must be 1 to 256 printable ASCII characters without whitespace"
                    ),
                ));
            }
        }
        Ok(Self {
            access_key_id,
            access_key_secret,
        })
    }

    /// The access key id.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The access key secret.
    pub fn access_key_secret(&self) -> &str {
        &self.access_key_secret
    }
}

impl fmt::Debug for OssCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OssCredentials(<redacted>)")
    }
}

validated_string! {
    /// An NFS server: a host name, an IPv4 address, or an IPv6 address (bare or in brackets).
    NfsServer
}

impl NfsServer {
    /// The rule; `new` and `from_string` apply it.
    fn check(s: &str) -> Result<(), InvalidValue> {
        let bracketed = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
        let ok = s.parse::<Ipv4Addr>().is_ok()
            || s.parse::<Ipv6Addr>().is_ok()
            || bracketed.is_some_and(|b| b.parse::<Ipv6Addr>().is_ok())
            || (is_host_name(s) && !s.bytes().all(|c| c.is_ascii_digit() || c == b'.'));
        if ok {
            Ok(())
        } else {
            Err(InvalidValue::new(
                ErrorCode::VolumeInvalidNfsServer,
                format!("server {} is not a host name or IP address", quoted(s)),
            ))
        }
    }
}

/// An NFS export path: absolute and normal, with the same rules as a host path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NfsExportPath(HostPath);

impl NfsExportPath {
    /// Validates an export path.
    pub fn new(s: &str) -> Result<Self, InvalidValue> {
        Self::from_string(s.to_owned()).map_err(|(e, _)| e)
    }

    /// Validates an owned export path without copying it.
    pub fn from_string(s: String) -> Result<Self, (InvalidValue, String)> {
        HostPath::from_string(s).map(Self).map_err(|(e, s)| {
            let reason = e.reason.replacen("host.path", "nfs.path", 1);
            (
                InvalidValue::new(ErrorCode::VolumeInvalidNfsPath, reason),
                s,
            )
        })
    }

    /// The path.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ossfs_options() {
        assert!(MountOption::ossfs("kernel_cache").is_ok());
        assert_eq!(
            MountOption::ossfs("umask=022").unwrap().to_string(),
            "umask=022"
        );
        for bad in [
            "passwd_file=/etc/x",
            "url=http://x",
            "allow_other",
            "uid=0",
            "-o",
            "kernel_cache=1",
            "umask=9",
            "parallel_count=",
            "",
        ] {
            let err = MountOption::ossfs(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::VolumeInvalidOssfsOption, "{bad}");
        }
    }

    #[test]
    fn nfs_values() {
        assert!(MountOption::nfs("vers=4.1").is_ok());
        assert!(MountOption::nfs("addr=1.2.3.4").is_err());
        assert!(MountOption::nfs("vers=5").is_err());
        for ok in [
            "nfs.example.com",
            "10.0.0.1",
            "fd00::1",
            "[fd00::1]",
            "NAS-1",
        ] {
            assert!(NfsServer::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "10.0.0.256", "1.2.3", "http://x", "x:/export"] {
            assert!(NfsServer::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            NfsExportPath::new("exports").unwrap_err().code,
            ErrorCode::VolumeInvalidNfsPath
        );
    }

    #[test]
    fn credentials_are_never_shown() {
        let c = OssCredentials::new("id", "s3cr3t").unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let err = OssCredentials::new("id", "line\ninjected").unwrap_err();
        assert!(!err.reason.contains("injected"));
    }
}
