//! Identifier types shared by every module: node, region and app ids, and
//! ISO 3166-1 alpha-2 country codes.
//!
//! Ids are cheap to clone (`Arc<str>`) because they are copied into routing
//! tables, metric labels and metadata events.

use std::fmt;
use std::sync::Arc;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a string as an id. Validation of the allowed alphabet is
            /// done by the config loader, which is the only producer of ids.
            pub fn new(id: impl Into<Arc<str>>) -> Self {
                Self(id.into())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::new(s)
            }
        }
    };
}

string_id!(
    /// A relay node's id, e.g. `eu-fra-1` (the key of `[nodes.*]`).
    NodeId
);
string_id!(
    /// A region's id, e.g. `eu` (the key of `[regions.*]`).
    RegionId
);
string_id!(
    /// A customer app's id, e.g. `acme-health` (the key of `[apps.*]`).
    AppId
);

/// An ISO 3166-1 alpha-2 country code: exactly two ASCII uppercase letters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Parses a code, accepting lowercase input (`"nl"` becomes `NL`).
    /// Returns `None` unless the input is exactly two ASCII letters.
    pub fn parse(s: &str) -> Option<Self> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    /// The code as a string slice, e.g. `"NL"`.
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_codes_are_two_letters_uppercased() {
        assert_eq!(CountryCode::parse("nl").unwrap().as_str(), "NL");
        assert!(CountryCode::parse("N").is_none());
        assert!(CountryCode::parse("NLD").is_none());
        assert!(CountryCode::parse("N1").is_none());
        assert!(CountryCode::parse("é").is_none());
    }
}
