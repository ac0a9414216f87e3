//! Names checked against DNS grammars: volume names, claim names, storage classes, sandbox ids.

use super::invalid::{InvalidValue, quoted, validated_string};
use crate::error_code::ErrorCode;

/// Whether `s` is an RFC 1123 DNS label as Kubernetes uses it: 1..=63 of `[a-z0-9-]`,
/// starting and ending with an alphanumeric.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is a DNS-1123 subdomain: at most 253 characters of dot-separated DNS labels.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

validated_string! {
    /// A volume name: a DNS label, at most 63 characters.
    VolumeName
}

impl VolumeName {
    /// The rule; `new` and `from_string` apply it.
    fn check(s: &str) -> Result<(), InvalidValue> {
        if is_dns_label(s) {
            Ok(())
        } else {
            Err(InvalidValue::new(
                ErrorCode::VolumeInvalidName,
                format!(
                    "{} is not a DNS label: use 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
                    quoted(s)
                ),
            ))
        }
    }
}

validated_string! {
    /// A named-volume / PersistentVolumeClaim name: a DNS-1123 subdomain of 2..=253 characters
    /// (Docker needs at least two).
    ClaimName
}

impl ClaimName {
    /// The rule; `new` and `from_string` apply it.
    fn check(s: &str) -> Result<(), InvalidValue> {
        if s.len() >= 2 && is_dns_subdomain(s) {
            Ok(())
        } else {
            Err(InvalidValue::new(
                ErrorCode::VolumeInvalidPvcName,
                format!(
                    "{} is not a valid claim name: use 2 to 253 characters of dot-separated DNS labels (lowercase letters, digits, '-')",
                    quoted(s)
                ),
            ))
        }
    }
}

validated_string! {
    /// A Kubernetes StorageClass name: a DNS-1123 subdomain.
    StorageClassName
}

impl StorageClassName {
    /// The rule; `new` and `from_string` apply it.
    fn check(s: &str) -> Result<(), InvalidValue> {
        if is_dns_subdomain(s) {
            Ok(())
        } else {
            Err(InvalidValue::new(
                ErrorCode::VolumeInvalidPvcStorageClass,
                format!(
                    "{} is not a valid StorageClass name (a DNS-1123 subdomain)",
                    quoted(s)
                ),
            ))
        }
    }
}

validated_string! {
    /// A sandbox id: a DNS label, so that it fits container and pod names.
    SandboxId
}

impl SandboxId {
    /// The rule (`new` and `from_string` apply it). Ids come from Berth itself, so an id a
    /// client sends that fails it names no sandbox: `SANDBOX::NOT_FOUND`.
    fn check(s: &str) -> Result<(), InvalidValue> {
        if is_dns_label(s) {
            Ok(())
        } else {
            Err(InvalidValue::new(
                ErrorCode::SandboxNotFound,
                format!("{} is not a sandbox id", quoted(s)),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_label_edges() {
        for ok in ["a", "a1", "a-b", "0", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64), "é"] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn dns_subdomain_edges() {
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(!is_dns_subdomain(".a"));
        assert!(!is_dns_subdomain("a."));
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(long.len(), 255);
        assert!(!is_dns_subdomain(&long));
    }
}
