//! Oracles the fuzz targets share: what an accepted path must look like, checked by code written
//! apart from Berth's own (`berth_core::model` paths), so that a bug there is not mirrored here.

/// Longest path, as the model documents it (Linux `PATH_MAX`).
const MAX_PATH_BYTES: usize = 4096;
/// Longest segment, as the model documents it (Linux `NAME_MAX`).
const MAX_SEGMENT_BYTES: usize = 255;

/// Whether every `/`-separated segment of `segments` is non-empty, not `.` or `..`, and at most
/// [`MAX_SEGMENT_BYTES`] long.
fn segments_are_normal(segments: &str) -> bool {
    segments
        .split('/')
        .all(|s| !matches!(s, "" | "." | "..") && s.len() <= MAX_SEGMENT_BYTES)
}

/// The characters every path kind refuses: NUL and the other control characters (C0, DEL, C1).
fn has_forbidden_character(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Whether `s` is a path the model documents as a mount path: absolute, normal, at most
/// [`MAX_PATH_BYTES`], no control characters, `:` or `,`.
pub fn is_valid_mount_path(s: &str) -> bool {
    is_absolute_normal(s) && !s.contains([':', ','])
}

/// Whether `s` is a path the model documents as a host path: absolute, normal, at most
/// [`MAX_PATH_BYTES`], no control characters.
pub fn is_valid_host_path(s: &str) -> bool {
    is_absolute_normal(s)
}

/// Whether `s` is a path the model documents as a sub-path: relative, normal, at most
/// [`MAX_PATH_BYTES`], no control characters or `\`.
pub fn is_valid_sub_path(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PATH_BYTES
        && !has_forbidden_character(s)
        && !s.contains('\\')
        && !s.starts_with('/')
        && segments_are_normal(s)
}

/// `/`, or `/` followed by normal segments; at most [`MAX_PATH_BYTES`], no control characters.
fn is_absolute_normal(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('/') else {
        return false;
    };
    s.len() <= MAX_PATH_BYTES
        && !has_forbidden_character(s)
        && (rest.is_empty() || segments_are_normal(rest))
}

/// Resolves `relative` against the absolute `base` lexically (`.` and empty segments skipped,
/// `..` removing one segment), and panics if that ever climbs above `base`: the escape every
/// accepted sub-path must make impossible. Returns the resolved path's segments.
pub fn resolve_within<'a>(base: &'a str, relative: &'a str) -> Vec<&'a str> {
    let mut segments: Vec<&str> = base.split('/').filter(|s| !s.is_empty()).collect();
    let floor = segments.len();
    for segment in relative.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                assert!(segments.len() > floor, "{relative:?} climbs above {base:?}");
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    segments
}

/// Panics unless `path` is `root` or lies below it, by whole segments.
pub fn assert_at_or_below(path: &str, root: &str) {
    let root_segments: Vec<&str> = root.split('/').filter(|s| !s.is_empty()).collect();
    let path_segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    assert!(
        path_segments.starts_with(&root_segments),
        "{path:?} is not at or below {root:?}"
    );
}

/// Panics unless `sub_path` (accepted as a `SubPath`) joined to each of a few bases stays under
/// the base, both as the model joins it and as an independent lexical resolution sees it.
pub fn assert_sub_path_contained(sub_path: &berth_core::model::SubPath) {
    for base in ["/", "/data", "/data/", "/var/lib/berth/volumes/v1/_data"] {
        let joined = sub_path.join_to(base);
        let resolved = resolve_within(base, sub_path.as_str());
        assert_at_or_below(&joined, base);
        let trimmed = base.trim_end_matches('/');
        assert_eq!(
            joined,
            format!("{trimmed}/{sub_path}"),
            "join_to({base:?}) of {sub_path:?}"
        );
        // Lexically normal already: resolving changes nothing.
        let resolved_path = format!("/{}", resolved.join("/"));
        assert_eq!(
            resolved_path, joined,
            "{sub_path:?} below {base:?} is not lexically normal"
        );
    }
    for segment in sub_path.segments() {
        assert!(
            !matches!(segment, "" | "." | ".."),
            "segment {segment:?} of {sub_path:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oracles_refuse_what_escapes() {
        assert!(!is_valid_sub_path("a/../b"));
        assert!(!is_valid_sub_path("./a"));
        assert!(!is_valid_sub_path("a//b"));
        assert!(!is_valid_sub_path("a\0b"));
        assert!(!is_valid_sub_path("/a"));
        assert!(is_valid_sub_path("a/b"));
        assert!(is_valid_mount_path("/"));
        assert!(!is_valid_mount_path("/a:b"));
        assert!(!is_valid_host_path("/a/"));
        assert!(std::panic::catch_unwind(|| resolve_within("/data", "a/../../x")).is_err());
        assert_eq!(resolve_within("/data", "a/./b"), ["data", "a", "b"]);
    }
}
