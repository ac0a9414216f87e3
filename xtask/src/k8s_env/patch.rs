//! The project's one change to the kubelet: dockershim clamps a negative `oom_score_adj` to 0
//! when the kubelet lacks CAP_SYS_RESOURCE (why: `xtask/k8s/oom_clamp.go`). Its identity (a hash
//! of everything below) is part of the cache key, so changing the patch rebuilds the binaries.

use std::fs;
use std::path::Path;

/// The new Go file, added to dockershim.
const CLAMP_SOURCE: &str = include_str!("../../k8s/oom_clamp.go");
const CLAMP_DESTINATION: &str = "pkg/kubelet/dockershim/oom_clamp.go";

/// Line edits that route dockershim's two negative values through the clamp:
/// (file, upstream line, patched line). Each upstream line must occur exactly once.
const EDITS: &[(&str, &str, &str)] = &[
    (
        "pkg/kubelet/dockershim/docker_sandbox.go",
        "\thc.OomScoreAdj = defaultSandboxOOMAdj\n",
        "\thc.OomScoreAdj = oomScoreAdjForDocker(defaultSandboxOOMAdj)\n",
    ),
    (
        "pkg/kubelet/dockershim/helpers_linux.go",
        "\tcreateConfig.HostConfig.OomScoreAdj = int(rOpts.OomScoreAdj)\n",
        "\tcreateConfig.HostConfig.OomScoreAdj = oomScoreAdjForDocker(int(rOpts.OomScoreAdj))\n",
    ),
];

/// A short name for this exact patch: `oomclamp-` and 8 hex digits of an FNV-1a hash.
pub(crate) fn id() -> String {
    let mut hash = Fnv1a::new();
    hash.write(CLAMP_DESTINATION.as_bytes());
    hash.write(CLAMP_SOURCE.as_bytes());
    for (file, from, to) in EDITS {
        hash.write(file.as_bytes());
        hash.write(from.as_bytes());
        hash.write(to.as_bytes());
    }
    format!("oomclamp-{:08x}", hash.finish() as u32)
}

/// Applies the patch to a freshly unpacked tree; fails if an upstream line is not found once.
pub(crate) fn apply(tree: &Path) -> Result<(), String> {
    for (file, from, to) in EDITS {
        let path = tree.join(file);
        let text = fs::read_to_string(&path)
            .map_err(|e| format!("patching kubelet: reading {}: {e}", path.display()))?;
        let found = text.matches(from).count();
        if found != 1 {
            return Err(format!(
                "patching kubelet: expected the line {:?} once in {}, found it {found} times",
                from.trim(),
                path.display()
            ));
        }
        fs::write(&path, text.replacen(from, to, 1))
            .map_err(|e| format!("patching kubelet: writing {}: {e}", path.display()))?;
    }
    let destination = tree.join(CLAMP_DESTINATION);
    fs::write(&destination, CLAMP_SOURCE)
        .map_err(|e| format!("patching kubelet: writing {}: {e}", destination.display()))
}

/// 64-bit FNV-1a: a stable, dependency-free fingerprint (not a security measure).
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_stable_and_names_the_patch() {
        assert_eq!(id(), id());
        assert!(id().starts_with("oomclamp-"));
        assert_eq!(id().len(), "oomclamp-".len() + 8);
    }

    #[test]
    fn apply_edits_both_lines_and_adds_the_clamp() {
        let tree = std::env::temp_dir().join(format!("berth-patch-test-{}", std::process::id()));
        for (file, from, _) in EDITS {
            let path = tree.join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, format!("package dockershim\n{from}")).unwrap();
        }
        let result = apply(&tree);
        let patched: Vec<String> = EDITS
            .iter()
            .map(|(file, _, _)| fs::read_to_string(tree.join(file)).unwrap())
            .collect();
        let clamp = fs::read_to_string(tree.join(CLAMP_DESTINATION));
        fs::remove_dir_all(&tree).unwrap();
        result.unwrap();
        for ((_, _, to), text) in EDITS.iter().zip(&patched) {
            assert!(text.contains(to), "{text}");
        }
        assert_eq!(clamp.unwrap(), CLAMP_SOURCE);
    }

    #[test]
    fn apply_refuses_a_tree_without_the_upstream_line() {
        let tree = std::env::temp_dir().join(format!("berth-patch-miss-{}", std::process::id()));
        let (file, _, _) = EDITS[0];
        let path = tree.join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "package dockershim\n").unwrap();
        let result = apply(&tree);
        fs::remove_dir_all(&tree).unwrap();
        assert!(result.unwrap_err().contains("found it 0 times"));
    }
}
