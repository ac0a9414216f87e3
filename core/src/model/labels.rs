//! Metadata keys and values (Kubernetes label syntax, `opensandbox.io/` reserved) and
//! environment variable names.

use std::collections::BTreeMap;

use super::invalid::{InvalidValue, quoted, validated_string};
use super::names::is_dns_subdomain;
use crate::error_code::ErrorCode;

/// The metadata key prefix reserved for the server (also any subdomain of it).
pub const RESERVED_METADATA_DOMAIN: &str = "opensandbox.io";

/// Longest metadata name part and value, as for Kubernetes labels.
const MAX_LABEL_NAME: usize = 63;

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` — the label name/value grammar.
fn is_label_token(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

validated_string! {
    /// A metadata key: `name` or `prefix/name`, with a DNS-subdomain prefix of at most 253
    /// characters and a name of at most 63; the `opensandbox.io` domain is reserved.
    MetadataKey
}

impl MetadataKey {
    /// The rule; `new` and `from_string` apply it.
    fn check(s: &str) -> Result<(), InvalidValue> {
        const CODE: ErrorCode = ErrorCode::SandboxInvalidMetadataLabel;
        let (prefix, name) = match s.split_once('/') {
            Some((prefix, name)) => (Some(prefix), name),
            None => (None, s),
        };
        if let Some(prefix) = prefix {
            let reserved = prefix
                .strip_suffix(RESERVED_METADATA_DOMAIN)
                .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'));
            if reserved {
                return Err(InvalidValue::new(
                    CODE,
                    format!(
                        "key {} uses the reserved prefix '{RESERVED_METADATA_DOMAIN}/'",
                        quoted(s)
                    ),
                ));
            }
            if prefix.is_empty() || !is_dns_subdomain(prefix) {
                return Err(InvalidValue::new(
                    CODE,
                    format!(
                        "key {}: the prefix before '/' must be a DNS subdomain (lowercase, at most 253 characters)",
                        quoted(s)
                    ),
                ));
            }
        }
        if name.len() > MAX_LABEL_NAME || !is_label_token(name) {
            return Err(InvalidValue::new(
                CODE,
                format!(
                    "key {}: the name must be 1 to 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
                    quoted(s)
                ),
            ));
        }
        Ok(())
    }
}

validated_string! {
    /// A metadata value: empty, or at most 63 characters of the label grammar.
    MetadataValue
}

impl MetadataValue {
    /// The rule; `new` and `from_string` apply it.
    fn check(s: &str) -> Result<(), InvalidValue> {
        if s.is_empty() || (s.len() <= MAX_LABEL_NAME && is_label_token(s)) {
            Ok(())
        } else {
            Err(InvalidValue::new(
                ErrorCode::SandboxInvalidMetadataLabel,
                format!(
                    "value {} must be empty or 1 to 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
                    quoted(s)
                ),
            ))
        }
    }
}

/// Validated user metadata.
pub type Metadata = BTreeMap<MetadataKey, MetadataValue>;

/// A validated RFC 7396 merge patch of metadata: `Some` sets a key, `None` removes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataPatch(pub BTreeMap<MetadataKey, Option<MetadataValue>>);

impl MetadataPatch {
    /// Applies the patch to `metadata` (all-or-nothing: the patch was validated as a whole).
    pub fn apply_to(&self, metadata: &mut Metadata) {
        for (key, value) in &self.0 {
            match value {
                Some(value) => {
                    metadata.insert(key.clone(), value.clone());
                }
                None => {
                    metadata.remove(key);
                }
            }
        }
    }
}

validated_string! {
    /// An environment variable name: printable ASCII without '=' (Kubernetes' relaxed rule, which
    /// Docker also accepts).
    EnvName
}

impl EnvName {
    /// The rule; `new` and `from_string` apply it.
    fn check(s: &str) -> Result<(), InvalidValue> {
        let ok = !s.is_empty()
            && s.len() <= 1024
            && s.bytes().all(|c| (0x20..0x7f).contains(&c) && c != b'=');
        if ok {
            Ok(())
        } else {
            Err(InvalidValue::new(
                ErrorCode::SandboxInvalidParameter,
                format!(
                    "environment variable name {} must be 1 to 1024 printable ASCII characters without '='",
                    quoted(s)
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for ok in ["team", "a.b_c-d", "example.com/team", "x/y", "A1"] {
            assert!(MetadataKey::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "opensandbox.io/x",
            "sub.opensandbox.io/x",
            "/x",
            "a/b/c",
            "Example.com/x",
            "-a",
            "a-",
            &"a".repeat(64),
            "a b",
        ] {
            assert!(MetadataKey::new(bad).is_err(), "{bad}");
        }
        // `notopensandbox.io` is someone else's domain.
        assert!(MetadataKey::new("notopensandbox.io/x").is_ok());
    }

    #[test]
    fn values() {
        assert!(MetadataValue::new("").is_ok());
        assert!(MetadataValue::new("Demo_1.0").is_ok());
        assert!(MetadataValue::new("Demo Test").is_err());
        assert!(MetadataValue::new(&"v".repeat(64)).is_err());
    }

    #[test]
    fn env_names() {
        assert!(EnvName::new("PATH").is_ok());
        assert!(EnvName::new("my.var-1").is_ok());
        assert!(EnvName::new("A=B").is_err());
        assert!(EnvName::new("A\nB").is_err());
        assert!(EnvName::new("").is_err());
    }
}
