//! `EncryptionContext`: a JSON object of string → string, at most 8192 characters, bound into
//! the AES-GCM AAD. Equivalence is map equality (key order does not matter); a key given twice
//! is refused, never silently last-wins.
//!
//! Two bindings exist, chosen by the ciphertext blob's format (`crate::blob`):
//! - [`EncryptionContext::aad`] (format 2, every new ciphertext): SHA-256 of a domain label and
//!   the pairs sorted by key, each key and value prefixed by its UTF-8 length (u32, big-endian).
//!   No two different contexts give the same bytes.
//! - [`EncryptionContext::legacy_aad`] (format 1, ciphertexts made before format 2, read only):
//!   SHA-256 of `k1=v1&k2=v2…`, as Alibaba's instance SDKs do. It is ambiguous
//!   (`{"a":"b&c=d"}` and `{"a":"b","c":"d"}` give the same bytes), which is why nothing is
//!   encrypted with it any more.
//!
//! An absent or empty context gives an empty AAD in both.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use sha2::{Digest, Sha256};

/// Longest accepted context text.
pub const MAX_CHARS: usize = 8192;

/// Domain label of the format-2 binding.
const AAD_LABEL: &[u8] = b"kms-connector EncryptionContext v2\0";

/// A parsed encryption context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptionContext(BTreeMap<String, String>);

/// Why a context was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("The specified parameter {0} is not valid: {1}")]
pub struct InvalidContext(pub &'static str, pub &'static str);

/// The JSON object, with duplicate keys and non-string values refused.
struct Pairs(BTreeMap<String, String>);

/// What the visitor refuses, distinguishably (serde errors carry text only).
const DUPLICATE: &str = "duplicate key";
const NOT_STRING: &str = "non-string value";

impl<'de> serde::Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor;
        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Pairs, A::Error> {
                let mut map = BTreeMap::new();
                while let Some(key) = access.next_key::<String>()? {
                    let value = access
                        .next_value::<serde_json::Value>()
                        .and_then(|v| match v {
                            serde_json::Value::String(s) => Ok(s),
                            _ => Err(de::Error::custom(NOT_STRING)),
                        })?;
                    if map.insert(key, value).is_some() {
                        return Err(de::Error::custom(DUPLICATE));
                    }
                }
                Ok(Pairs(map))
            }
        }
        deserializer.deserialize_map(PairsVisitor)
    }
}

impl EncryptionContext {
    /// Parses the parameter `name` (`EncryptionContext`, `SourceEncryptionContext`, …).
    pub fn parse(name: &'static str, text: Option<&str>) -> Result<Self, InvalidContext> {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Ok(Self::default());
        };
        if text.chars().count() > MAX_CHARS {
            return Err(InvalidContext(name, "longer than 8192 characters"));
        }
        match serde_json::from_str::<Pairs>(text) {
            Ok(Pairs(map)) => Ok(Self(map)),
            Err(e) if e.to_string().starts_with(DUPLICATE) => {
                Err(InvalidContext(name, "a key appears more than once"))
            }
            Err(e) if e.to_string().starts_with(NOT_STRING) => {
                Err(InvalidContext(name, "every value must be a string"))
            }
            Err(_) => Err(InvalidContext(name, "not a JSON object")),
        }
    }

    /// The AAD of new ciphertexts (blob format 2): empty for no context, else SHA-256 of the
    /// label and the length-prefixed sorted pairs.
    pub fn aad(&self) -> Vec<u8> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let mut hash = Sha256::new();
        hash.update(AAD_LABEL);
        hash.update(len32(self.0.len()));
        for (k, v) in &self.0 {
            hash.update(len32(k.len()));
            hash.update(k.as_bytes());
            hash.update(len32(v.len()));
            hash.update(v.as_bytes());
        }
        hash.finalize().to_vec()
    }

    /// The AAD of format-1 ciphertexts (decryption only): SHA-256 of `k1=v1&k2=v2…`.
    pub fn legacy_aad(&self) -> Vec<u8> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let canonical = self
            .0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        Sha256::digest(canonical.as_bytes()).to_vec()
    }

    /// True when there is no pair.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A length as the 4 big-endian bytes of the encoding (contexts are ≤ 8192 characters, so
/// every length fits).
fn len32(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(text: &str) -> EncryptionContext {
        EncryptionContext::parse("EncryptionContext", Some(text)).unwrap()
    }

    #[test]
    fn order_insensitive_and_distinct() {
        let a = ctx(r#"{"a":"1","b":"2"}"#);
        let b = ctx(r#"{"b":"2","a":"1"}"#);
        let c = ctx(r#"{"a":"1","b":"3"}"#);
        assert_eq!(a.aad(), b.aad());
        assert_ne!(a.aad(), c.aad());
        assert_eq!(a.aad().len(), 32);
        assert_ne!(a.aad(), a.legacy_aad(), "the two bindings never coincide");
        for empty in [None, Some(""), Some("{}")] {
            let e = EncryptionContext::parse("EncryptionContext", empty).unwrap();
            assert!(e.aad().is_empty() && e.legacy_aad().is_empty());
        }
    }

    #[test]
    fn the_canonical_encoding_has_no_collisions() {
        // Pairs whose legacy k=v&… text is the same.
        for (one, other) in [
            (r#"{"a":"b&c=d"}"#, r#"{"a":"b","c":"d"}"#),
            (r#"{"a=b":"c"}"#, r#"{"a":"b=c"}"#),
            (r#"{"a":"=b"}"#, r#"{"a=":"b"}"#),
            (r#"{"a":"","b":""}"#, r#"{"a":"&b="}"#),
        ] {
            assert_eq!(ctx(one).legacy_aad(), ctx(other).legacy_aad(), "{one}");
            assert_ne!(ctx(one).aad(), ctx(other).aad(), "{one} vs {other}");
        }
        // Boundaries between key and value, and between pairs, are fixed by the lengths.
        assert_ne!(ctx(r#"{"ab":"c"}"#).aad(), ctx(r#"{"a":"bc"}"#).aad());
    }

    #[test]
    fn legacy_binding_is_unchanged() {
        // SHA-256("a=1&b=2"), the format-1 binding of the fixture in tests/fixtures.
        assert_eq!(
            hex::encode(ctx(r#"{"b":"2","a":"1"}"#).legacy_aad()),
            hex::encode(Sha256::digest(b"a=1&b=2"))
        );
    }

    #[test]
    fn refuses_duplicates_and_non_string_maps() {
        let refused = |text: &str| EncryptionContext::parse("EncryptionContext", Some(text));
        assert_eq!(
            refused(r#"{"a":"1","a":"2"}"#).unwrap_err().1,
            "a key appears more than once"
        );
        assert_eq!(
            refused(r#"{"a":1}"#).unwrap_err().1,
            "every value must be a string"
        );
        for bad in [
            r#"["a"]"#,
            r#"{"a":{"b":"c"}}"#,
            "not json",
            r#""s""#,
            r#"{"a":"1"} x"#,
        ] {
            assert!(refused(bad).is_err(), "{bad}");
        }
        let long = format!(r#"{{"a":"{}"}}"#, "x".repeat(8200));
        assert!(refused(&long).is_err());
    }
}
