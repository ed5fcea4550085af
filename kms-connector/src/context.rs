//! `EncryptionContext`: a JSON object of string → string, at most 8192 characters, bound into
//! the AES-GCM AAD. Equivalence is map equality (key order does not matter), so the AAD is
//! derived from the sorted pairs, as Alibaba's instance SDKs do: SHA-256 of `k1=v1&k2=v2…`
//! (keys sorted ascending, UTF-8). An absent or empty context gives an empty AAD.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Longest accepted context text.
pub const MAX_CHARS: usize = 8192;

/// A parsed encryption context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptionContext(BTreeMap<String, String>);

/// Why a context was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("The specified parameter {0} is not valid: {1}")]
pub struct InvalidContext(pub &'static str, pub &'static str);

impl EncryptionContext {
    /// Parses the parameter `name` (`EncryptionContext`, `SourceEncryptionContext`, …).
    pub fn parse(name: &'static str, text: Option<&str>) -> Result<Self, InvalidContext> {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Ok(Self::default());
        };
        if text.chars().count() > MAX_CHARS {
            return Err(InvalidContext(name, "longer than 8192 characters"));
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| InvalidContext(name, "not a JSON object"))?;
        let serde_json::Value::Object(object) = value else {
            return Err(InvalidContext(name, "not a JSON object"));
        };
        let mut map = BTreeMap::new();
        for (k, v) in object {
            let serde_json::Value::String(v) = v else {
                return Err(InvalidContext(name, "every value must be a string"));
            };
            map.insert(k, v);
        }
        Ok(Self(map))
    }

    /// The AAD to authenticate: empty for no context, else SHA-256 of the canonical pairs.
    pub fn aad(&self) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_insensitive_and_distinct() {
        let a =
            EncryptionContext::parse("EncryptionContext", Some(r#"{"a":"1","b":"2"}"#)).unwrap();
        let b =
            EncryptionContext::parse("EncryptionContext", Some(r#"{"b":"2","a":"1"}"#)).unwrap();
        let c =
            EncryptionContext::parse("EncryptionContext", Some(r#"{"a":"1","b":"3"}"#)).unwrap();
        assert_eq!(a.aad(), b.aad());
        assert_ne!(a.aad(), c.aad());
        assert_eq!(a.aad().len(), 32);
        assert!(
            EncryptionContext::parse("EncryptionContext", None)
                .unwrap()
                .aad()
                .is_empty()
        );
        assert!(
            EncryptionContext::parse("EncryptionContext", Some("{}"))
                .unwrap()
                .aad()
                .is_empty()
        );
    }

    #[test]
    fn refuses_non_string_maps() {
        for bad in [
            r#"{"a":1}"#,
            r#"["a"]"#,
            r#"{"a":{"b":"c"}}"#,
            "not json",
            r#""s""#,
        ] {
            assert!(
                EncryptionContext::parse("EncryptionContext", Some(bad)).is_err(),
                "{bad}"
            );
        }
        let long = format!(r#"{{"a":"{}"}}"#, "x".repeat(8200));
        assert!(EncryptionContext::parse("EncryptionContext", Some(&long)).is_err());
    }
}
