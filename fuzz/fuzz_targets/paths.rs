//! The path newtypes (`SubPath`, `MountPath`, `HostPath`) and the lexical helpers beside them, on
//! any string: each accepts exactly what its documentation describes (an oracle written apart
//! from it), and every accepted sub-path joined onto a root stays under that root lexically.
#![no_main]

use berth_core::model::{HostPath, MountPath, SubPath, lexical_key, suggest_normal_form};
use berth_fuzz::{
    assert_at_or_below, assert_sub_path_contained, is_valid_host_path, is_valid_mount_path,
    is_valid_sub_path,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Every path reaches the model as a JSON string or a command-line argument: UTF-8.
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    sub_path(s);
    mount_path(s);
    host_path(s);
    lexical_helpers(s);
});

fn sub_path(s: &str) {
    let accepted = SubPath::new(s);
    assert_eq!(
        accepted.is_ok(),
        is_valid_sub_path(s),
        "SubPath::new({s:?}) = {accepted:?}"
    );
    assert_eq!(
        SubPath::from_string(s.to_owned()).map_err(|(e, back)| (e, back == s)),
        accepted.clone().map_err(|e| (e, true)),
        "from_string and new disagree on {s:?}"
    );
    let Ok(sub) = accepted else {
        return;
    };
    assert_eq!(sub.as_str(), s);
    assert_eq!(sub.to_string(), s);
    assert_eq!(suggest_normal_form(s).as_deref(), Some(s));
    assert_sub_path_contained(&sub);
}

fn mount_path(s: &str) {
    let accepted = MountPath::new(s);
    assert_eq!(
        accepted.is_ok(),
        is_valid_mount_path(s),
        "MountPath::new({s:?}) = {accepted:?}"
    );
    let Ok(mount) = accepted else {
        return;
    };
    assert_eq!(mount.as_str(), s);
    assert_eq!(lexical_key(s), s, "an accepted mount path is its own key");
    assert_eq!(suggest_normal_form(s).as_deref(), Some(s));
    assert_eq!(
        mount.depth(),
        s.split('/').filter(|p| !p.is_empty()).count()
    );
    assert!(mount.is_at_or_below(&mount) && !mount.is_below(&mount));
    // Mounting over the kernel's filesystems or the whole root must always be refused.
    let kernel = ["/proc", "/sys", "/dev"].iter().any(|root| {
        s == *root
            || s.strip_prefix(root)
                .is_some_and(|rest| rest.starts_with('/'))
    });
    if s == "/" || kernel {
        assert!(mount.reserved_reason().is_some(), "{s:?} is not reserved");
    }
    for parent in ["/", "/mnt", "/mnt/data"] {
        let parent = MountPath::new(parent).expect("a valid mount path");
        let by_segments = {
            let theirs: Vec<&str> = parent
                .as_str()
                .split('/')
                .filter(|p| !p.is_empty())
                .collect();
            let ours: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
            ours.starts_with(&theirs)
        };
        assert_eq!(
            mount.is_at_or_below(&parent),
            by_segments,
            "{s:?} under {parent:?}"
        );
    }
}

fn host_path(s: &str) {
    let accepted = HostPath::new(s);
    assert_eq!(
        accepted.is_ok(),
        is_valid_host_path(s),
        "HostPath::new({s:?}) = {accepted:?}"
    );
    let Ok(path) = accepted else {
        return;
    };
    assert_eq!(lexical_key(s), s);
    for root in ["/", "/data", "/data/opensandbox"] {
        let root_path = HostPath::new(root).expect("a valid host path");
        let below = path.segments_below(&root_path);
        assert_eq!(path.is_within(&root_path), below.is_some());
        let Some(segments) = below else {
            continue;
        };
        assert_at_or_below(s, root);
        for segment in &segments {
            assert!(!matches!(*segment, "" | "." | ".."), "{segment:?} of {s:?}");
        }
        // The root's segments followed by the ones below it spell the path again.
        let rebuilt = root
            .split('/')
            .filter(|p| !p.is_empty())
            .chain(segments.iter().copied())
            .collect::<Vec<_>>()
            .join("/");
        assert_eq!(format!("/{rebuilt}"), s, "segments below {root:?}");
    }
}

fn lexical_helpers(s: &str) {
    if s.starts_with('/') {
        let key = lexical_key(s);
        assert!(key.starts_with('/'), "lexical_key({s:?}) = {key:?}");
        assert!(
            key == "/" || key[1..].split('/').all(|p| !matches!(p, "" | "." | "..")),
            "lexical_key({s:?}) = {key:?} is not normal"
        );
        assert_eq!(
            lexical_key(&key),
            key,
            "lexical_key is not idempotent on {s:?}"
        );
    }
    let has_parent = s.split('/').any(|p| p == "..");
    match suggest_normal_form(s) {
        None => assert!(has_parent, "no suggestion for {s:?}"),
        Some(normal) => {
            assert!(!has_parent, "{s:?} has '..' yet {normal:?} was suggested");
            assert_eq!(
                normal.starts_with('/'),
                s.starts_with('/'),
                "{s:?} → {normal:?}"
            );
            let rest = normal.strip_prefix('/').unwrap_or(&normal);
            assert!(
                rest.is_empty() || rest.split('/').all(|p| !matches!(p, "" | ".")),
                "{s:?} → {normal:?} is not normal"
            );
            if s.starts_with('/') {
                assert_eq!(lexical_key(s), normal, "key and suggestion of {s:?}");
            }
        }
    }
}
