//! The error a validating constructor returns: which rule broke and why, without a field path
//! (the caller knows where the value came from and adds it, see [`crate::validate::Violation`]).

use std::fmt;

use crate::error_code::ErrorCode;

/// A value that one of the model's constructors refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue {
    /// The stable code of the broken rule.
    pub code: ErrorCode,
    /// What is wrong, phrased so a user can act on it.
    pub reason: String,
}

impl InvalidValue {
    /// Builds an `InvalidValue`.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason, self.code)
    }
}

impl std::error::Error for InvalidValue {}

/// Declares a string newtype whose only constructors apply the type's `check` rule, with the
/// accessors every such type needs. Keeping the inner field private is what makes invalid values
/// unrepresentable. `from_string` validates an owned string without copying it, so converting a
/// request moves its strings instead of duplicating them.
macro_rules! validated_string {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates a string.
            pub fn new(s: &str) -> Result<Self, $crate::model::InvalidValue> {
                Self::check(s)?;
                Ok(Self(s.to_owned()))
            }

            /// Validates an owned string without copying it; on failure hands it back.
            pub fn from_string(s: String) -> Result<Self, ($crate::model::InvalidValue, String)> {
                match Self::check(&s) {
                    Ok(()) => Ok(Self(s)),
                    Err(e) => Err((e, s)),
                }
            }

            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Gives the validated string back.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::model::InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
    };
}

pub(crate) use validated_string;

/// Quotes user input for a message: shown with Rust escapes, so NUL, newlines and other control
/// characters are visible instead of breaking the message, and long values are cut.
pub(crate) fn quoted(s: &str) -> String {
    const MAX: usize = 80;
    let mut shown: String = s.chars().take(MAX).collect();
    if shown.len() < s.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}
