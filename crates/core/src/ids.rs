//! Identifiers parsed once at the boundary: a `MeterId` cannot be mixed up with a
//! `DistrictId`, and once built it is known to be valid.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} characters long; at most 64 are allowed")]
    TooLong { what: &'static str, len: usize },
    #[error("{what} contains {ch:?}; only A-Z a-z 0-9 . _ - are allowed")]
    BadChar { what: &'static str, ch: char },
}

fn check(what: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { what });
    }
    if s.len() > 64 {
        return Err(IdError::TooLong {
            what,
            len: s.chars().count(),
        });
    }
    if let Some(ch) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(IdError::BadChar { what, ch });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates: 1..64 characters of `[A-Za-z0-9._-]`.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check($what, &s)?;
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A meter's identifier (for Italian meters, typically the PDR code).
    MeterId,
    "meter id"
);
id_type!(
    /// A district: the part of the network fed by one or more station meters.
    DistrictId,
    "district id"
);
id_type!(
    /// A field crew.
    CrewId,
    "crew id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        assert!(MeterId::parse("PDR00012345678").is_ok());
        assert!(MeterId::parse("a.b_c-D9").is_ok());
        assert!(MeterId::parse("x".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_bad_characters() {
        assert_eq!(MeterId::parse(""), Err(IdError::Empty { what: "meter id" }));
        assert!(matches!(
            MeterId::parse("x".repeat(65)),
            Err(IdError::TooLong { len: 65, .. })
        ));
        assert!(matches!(
            DistrictId::parse("a/b"),
            Err(IdError::BadChar { ch: '/', .. })
        ));
        assert!(matches!(
            CrewId::parse("a b"),
            Err(IdError::BadChar { ch: ' ', .. })
        ));
        assert!(MeterId::parse("+").is_err());
        assert!(MeterId::parse("#").is_err());
    }

    #[test]
    fn deserialization_validates() {
        let ok: MeterId = serde_json::from_str("\"M1\"").unwrap();
        assert_eq!(ok.as_str(), "M1");
        assert!(serde_json::from_str::<MeterId>("\"M 1\"").is_err());
    }
}
