//! Paths, checked lexically: where a volume is mounted in the sandbox (`MountPath`), which host
//! directory it comes from (`HostPath`), and which part of a backend it shows (`SubPath`).
//!
//! Accepted values are already normal — no `.`/`..`/empty segments, no trailing `/` — so
//! normalising is the identity, joining a `SubPath` to any base stays under that base, and two
//! spellings of one path cannot both be accepted. Nothing here touches a filesystem: symlinks and
//! file types are the backends' business (ARCHITECTURE.md, "Path safety").

use std::borrow::Cow;

use super::invalid::{InvalidValue, quoted, validated_string};
use crate::error_code::ErrorCode;

/// Longest path accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest path segment accepted, in bytes (Linux `NAME_MAX`).
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Mount paths no volume may use, with everything below them.
const RESERVED_MOUNT_PATHS: &[(&str, &str)] = &[
    ("/proc", "the kernel's process filesystem"),
    ("/sys", "the kernel's sysfs"),
    ("/dev", "device nodes"),
    ("/etc/hosts", "managed by the runtime"),
    ("/etc/hostname", "managed by the runtime"),
    ("/etc/resolv.conf", "managed by the runtime"),
    ("/opt/opensandbox", "kept for the in-sandbox agent"),
];

/// Whether `s` holds a control character (C0, DEL or C1), checked on bytes: C1 characters are
/// the only ones whose UTF-8 form starts with 0xC2 followed by 0x80..=0x9F.
fn has_control(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        c < 0x20
            || c == 0x7f
            || (c == 0xc2 && b.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
    })
}

/// Checks the segments of a path without its leading `/`: each non-empty, not `.` or `..`,
/// at most [`MAX_SEGMENT_BYTES`]. The whole-path checks (length, NUL, control characters) are done
/// before, so the first failure reported is the most basic one.
fn check_segments(
    rest: &str,
    code: ErrorCode,
    what: &str,
    original: &str,
) -> Result<(), InvalidValue> {
    let suggestion = || match suggest_normal_form(original) {
        Some(s) if s != original && !s.is_empty() => format!(" (did you mean {}?)", quoted(&s)),
        _ => String::new(),
    };
    for segment in rest.split('/') {
        match segment {
            "" => {
                return Err(InvalidValue::new(
                    code,
                    format!(
                        "{what} {} is not normalised: it has an empty segment ('//') or a trailing '/'{}",
                        quoted(original),
                        suggestion()
                    ),
                ));
            }
            "." => {
                return Err(InvalidValue::new(
                    code,
                    format!(
                        "{what} {} is not normalised: it has a '.' segment{}",
                        quoted(original),
                        suggestion()
                    ),
                ));
            }
            ".." => {
                return Err(InvalidValue::new(
                    code,
                    format!("{what} {} must not contain '..' segments", quoted(original)),
                ));
            }
            s if s.len() > MAX_SEGMENT_BYTES => {
                return Err(InvalidValue::new(
                    code,
                    format!(
                        "{what} {} has a segment of {} bytes; at most {MAX_SEGMENT_BYTES} are allowed",
                        quoted(original),
                        s.len()
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks length, NUL and control characters, shared by every path kind.
fn check_characters(s: &str, code: ErrorCode, what: &str) -> Result<(), InvalidValue> {
    if s.is_empty() {
        return Err(InvalidValue::new(code, format!("{what} must not be empty")));
    }
    if s.len() > MAX_PATH_BYTES {
        return Err(InvalidValue::new(
            code,
            format!(
                "{what} is {} bytes long; at most {MAX_PATH_BYTES} are allowed",
                s.len()
            ),
        ));
    }
    if s.contains('\0') {
        return Err(InvalidValue::new(
            code,
            format!("{what} {} must not contain NUL", quoted(s)),
        ));
    }
    if has_control(s) {
        return Err(InvalidValue::new(
            code,
            format!(
                "{what} {} must not contain control characters (newline, tab, ...)",
                quoted(s)
            ),
        ));
    }
    Ok(())
}

/// The normal form of a path when it can be found without resolving `..`: empty and `.` segments
/// dropped, no trailing `/`. `None` when the path has a `..` segment (its meaning depends on
/// symlinks, so Berth never guesses).
pub fn suggest_normal_form(s: &str) -> Option<String> {
    let absolute = s.starts_with('/');
    let mut parts = Vec::new();
    for segment in s.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    Some(if absolute {
        format!("/{joined}")
    } else {
        joined
    })
}

/// A lexical key for comparing absolute paths however they are spelled: empty and `.` segments
/// dropped, `..` removing the segment before it (never above `/`). Used only to find duplicates
/// among paths that may be invalid; never used to build a path. An already-normal absolute path
/// is its own key (borrowed).
pub fn lexical_key(s: &str) -> Cow<'_, str> {
    let normal = s == "/"
        || (s.starts_with('/') && s[1..].split('/').all(|seg| !matches!(seg, "" | "." | "..")));
    if normal {
        return Cow::Borrowed(s);
    }
    let mut parts: Vec<&str> = Vec::new();
    for segment in s.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    Cow::Owned(format!("/{}", parts.join("/")))
}

/// Whether `path` equals `ancestor` or lies below it, comparing whole segments. Both must be
/// absolute and normal.
fn is_at_or_below(path: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || path == ancestor
        || (path.starts_with(ancestor) && path.as_bytes().get(ancestor.len()) == Some(&b'/'))
}

validated_string! {
    /// Where a volume is mounted inside the sandbox: absolute and normal, without NUL, control
    /// characters, `:` or `,` (which engines' mount syntaxes give meaning to). Whether it is
    /// reserved is checked separately (see [`MountPath::reserved_reason`]), because runtimes may
    /// reserve more.
    MountPath
}

impl MountPath {
    /// The rule; `new` and `from_string` apply it.
    fn check(s: &str) -> Result<(), InvalidValue> {
        const CODE: ErrorCode = ErrorCode::VolumeInvalidMountPath;
        check_characters(s, CODE, "mountPath")?;
        let Some(rest) = s.strip_prefix('/') else {
            return Err(InvalidValue::new(
                CODE,
                format!("mountPath {} must be absolute (start with '/')", quoted(s)),
            ));
        };
        if let Some(c) = s.chars().find(|c| matches!(c, ':' | ',')) {
            return Err(InvalidValue::new(
                CODE,
                format!(
                    "mountPath {} must not contain {c:?}: container engines read it as a mount option separator",
                    quoted(s)
                ),
            ));
        }
        if !rest.is_empty() {
            check_segments(rest, CODE, "mountPath", s)?;
        }
        Ok(())
    }

    /// Why this mount path is reserved by Berth, if it is: `/` itself, or one of Berth's
    /// reserved paths or anything below them. (Runtimes reserve more through
    /// `Capabilities::reserved_mount_paths`.)
    pub fn reserved_reason(&self) -> Option<String> {
        if self.0 == "/" {
            return Some("'/' would hide the whole sandbox filesystem".to_owned());
        }
        RESERVED_MOUNT_PATHS
            .iter()
            .find(|(reserved, _)| is_at_or_below(&self.0, reserved))
            .map(|(reserved, why)| format!("{} is reserved ({reserved}: {why})", quoted(&self.0)))
    }

    /// Whether `self` is `other` or lies below it (segment-wise).
    pub fn is_at_or_below(&self, other: &MountPath) -> bool {
        is_at_or_below(&self.0, &other.0)
    }

    /// Whether `self` lies strictly below `other` (segment-wise).
    pub fn is_below(&self, other: &MountPath) -> bool {
        self != other && is_at_or_below(&self.0, &other.0)
    }

    /// Number of segments; `/` has none. Mounting in this order puts parents before children.
    pub fn depth(&self) -> usize {
        self.0.split('/').filter(|s| !s.is_empty()).count()
    }
}

validated_string! {
    /// A host directory: absolute and normal. Whether it lies under an allowed root is checked
    /// with [`HostPath::is_within`]; whether it holds symlinks, by the backend's safe-path walk.
    HostPath
}

impl HostPath {
    /// The rule; `new` and `from_string` apply it.
    fn check(s: &str) -> Result<(), InvalidValue> {
        const CODE: ErrorCode = ErrorCode::VolumeInvalidHostPath;
        check_characters(s, CODE, "host.path")?;
        let b = s.as_bytes();
        if b.len() >= 3
            && b[0].is_ascii_alphabetic()
            && b[1] == b':'
            && matches!(b[2], b'\\' | b'/')
        {
            return Err(InvalidValue::new(
                CODE,
                format!(
                    "host.path {} is a Windows path; Berth runs on Linux hosts",
                    quoted(s)
                ),
            ));
        }
        let Some(rest) = s.strip_prefix('/') else {
            return Err(InvalidValue::new(
                CODE,
                format!("host.path {} must be absolute (start with '/')", quoted(s)),
            ));
        };
        if !rest.is_empty() {
            check_segments(rest, CODE, "host.path", s)?;
        }
        Ok(())
    }

    /// Whether this path is `root` or lies below it, by whole segments: `/data/a` does not admit
    /// `/data/ab`; `/` admits everything.
    pub fn is_within(&self, root: &HostPath) -> bool {
        is_at_or_below(&self.0, &root.0)
    }

    /// The segments of this path below `root`, if it is within `root` (empty when equal).
    /// Backends walk these one by one from a pinned fd of the root.
    pub fn segments_below<'a>(&'a self, root: &HostPath) -> Option<Vec<&'a str>> {
        if !self.is_within(root) {
            return None;
        }
        let rest = &self.0[root.0.len().min(self.0.len())..];
        Some(rest.split('/').filter(|s| !s.is_empty()).collect())
    }
}

validated_string! {
    /// A part of a backend to mount instead of its root: relative and normal, no `..`, NUL, `\`
    /// or control characters, at most [`MAX_PATH_BYTES`] with segments of at most
    /// [`MAX_SEGMENT_BYTES`]. Joining it to any base lexically stays under the base.
    SubPath
}

impl SubPath {
    /// The rule; `new` and `from_string` apply it.
    fn check(s: &str) -> Result<(), InvalidValue> {
        const CODE: ErrorCode = ErrorCode::VolumeInvalidSubPath;
        check_characters(s, CODE, "subPath")?;
        if s.contains('\\') {
            return Err(InvalidValue::new(
                CODE,
                format!(
                    "subPath {} must not contain '\\' (use '/' to separate segments)",
                    quoted(s)
                ),
            ));
        }
        if s.starts_with('/') {
            return Err(InvalidValue::new(
                CODE,
                format!("subPath {} must be relative (no leading '/')", quoted(s)),
            ));
        }
        check_segments(s, CODE, "subPath", s)?;
        Ok(())
    }

    /// The segments, in order. Backends open them one by one from a pinned fd.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The lexical join of `base` and this sub-path (one `/` between them).
    pub fn join_to(&self, base: &str) -> String {
        let base = base.trim_end_matches('/');
        format!("{base}/{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest_normal_form("/a//b/"), Some("/a/b".into()));
        assert_eq!(suggest_normal_form("./a"), Some("a".into()));
        assert_eq!(suggest_normal_form("a/../b"), None);
        let err = MountPath::new("/workspace/").unwrap_err();
        assert!(
            err.reason.contains("did you mean \"/workspace\""),
            "{}",
            err.reason
        );
    }

    #[test]
    fn control_characters_match_char_is_control() {
        for c in (0u32..0x2000).filter_map(char::from_u32) {
            assert_eq!(has_control(&format!("a{c}b")), c.is_control(), "{c:?}");
        }
    }

    #[test]
    fn lexical_keys() {
        assert_eq!(lexical_key("/a//b/"), "/a/b");
        assert_eq!(lexical_key("/a/./b"), "/a/b");
        assert_eq!(lexical_key("/a/x/../b"), "/a/b");
        assert_eq!(lexical_key("/../a"), "/a");
    }

    #[test]
    fn segments_below_root() {
        let root = HostPath::new("/data").unwrap();
        let p = HostPath::new("/data/a/b").unwrap();
        assert_eq!(p.segments_below(&root), Some(vec!["a", "b"]));
        assert_eq!(root.segments_below(&root), Some(vec![]));
        let slash = HostPath::new("/").unwrap();
        assert_eq!(p.segments_below(&slash), Some(vec!["data", "a", "b"]));
        assert_eq!(HostPath::new("/dat").unwrap().segments_below(&root), None);
    }

    #[test]
    fn nesting_and_depth() {
        let a = MountPath::new("/a").unwrap();
        let ab = MountPath::new("/a/b").unwrap();
        let abc = MountPath::new("/ab").unwrap();
        assert!(ab.is_below(&a));
        assert!(!abc.is_below(&a));
        assert!(!a.is_below(&a));
        assert_eq!(ab.depth(), 2);
    }
}
