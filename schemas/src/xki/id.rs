//! `externalKeyId`: 1 to 128 characters from `[A-Za-z0-9._-]`, opaque to KMS, and never `.` or
//! `..`: the id travels as a URL path segment (`…/keys/{id}/encrypt`), where those two are dot
//! segments that HTTP clients and servers normalise away, so `..` would address another route.
//! This is the one id rule of the workspace: the EKM, the proxy and the kms-connector all parse
//! through [`ExternalKeyId::parse`], and every URL is built with [`ExternalKeyId::path_segment`].

use std::fmt;

/// An external key identifier, checked at the boundary.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ExternalKeyId(String);

/// Why a string is not an external key id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidExternalKeyId {
    /// Empty or longer than 128 characters.
    #[error("external key id must be 1 to 128 characters long")]
    Length,
    /// A character outside `[A-Za-z0-9._-]`.
    #[error("external key id may only contain A-Z a-z 0-9 . _ -")]
    Charset,
    /// `.` or `..`, which a URL path cannot carry as a segment.
    #[error("external key id must not be . or ..")]
    DotSegment,
}

/// What [`ExternalKeyId::path_segment`] escapes: everything but RFC 3986's unreserved characters.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl ExternalKeyId {
    /// Longest accepted id.
    pub const MAX_LEN: usize = 128;

    /// Parses and validates an external key id.
    pub fn parse(text: &str) -> Result<Self, InvalidExternalKeyId> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err(InvalidExternalKeyId::Length);
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(InvalidExternalKeyId::Charset);
        }
        if matches!(text, "." | "..") {
            return Err(InvalidExternalKeyId::DotSegment);
        }
        Ok(Self(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as one percent-encoded URL path segment. With today's charset nothing needs
    /// escaping; building every URL through this keeps that true if the rule ever widens.
    pub fn path_segment(&self) -> impl fmt::Display + '_ {
        percent_encoding::utf8_percent_encode(&self.0, PATH_SEGMENT)
    }
}

impl fmt::Display for ExternalKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ExternalKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExternalKeyId({})", self.0)
    }
}

impl std::str::FromStr for ExternalKeyId {
    type Err = InvalidExternalKeyId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for ExternalKeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_charset() {
        for ok in ["a", "foo", "Key-1.2_3", &"x".repeat(128), "0"] {
            assert_eq!(ExternalKeyId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_outside() {
        assert_eq!(ExternalKeyId::parse(""), Err(InvalidExternalKeyId::Length));
        assert_eq!(
            ExternalKeyId::parse(&"x".repeat(129)),
            Err(InvalidExternalKeyId::Length)
        );
        for bad in ["a/b", "a b", "ключ", "a%2F", "a+b", "a:b", "..\u{0}"] {
            assert_eq!(
                ExternalKeyId::parse(bad),
                Err(InvalidExternalKeyId::Charset),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_dot_segments() {
        for bad in [".", ".."] {
            assert_eq!(
                ExternalKeyId::parse(bad),
                Err(InvalidExternalKeyId::DotSegment),
                "{bad:?}"
            );
            assert!(serde_json::from_str::<ExternalKeyId>(&format!("\"{bad}\"")).is_err());
        }
        for ok in ["...", ".a", "a.", "._", ".-."] {
            let id = ExternalKeyId::parse(ok).unwrap();
            assert_eq!(id.path_segment().to_string(), ok);
        }
    }

    #[test]
    fn serde_validates() {
        let id: ExternalKeyId = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"abc\"");
        assert!(serde_json::from_str::<ExternalKeyId>("\"a/b\"").is_err());
    }
}
