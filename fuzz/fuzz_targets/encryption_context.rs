//! The kms-connector's `EncryptionContext` (`kms_connector::context`), against an independent
//! model: a context parses iff it is absent, empty, or a JSON object of string values of at
//! most 8192 characters that repeats no key; a refusal names the parameter it was asked for;
//! both AADs are empty iff the context is, else 32 bytes; key order changes neither the context
//! nor its AADs; two contexts with the same (format-2) AAD are the same context. The legacy
//! (format-1) AAD is ambiguous by design: only contexts without `=` or `&` must differ there.
//!
//! Input: two texts separated by the first NUL byte; the second is also parsed on its own.
#![no_main]

use std::fmt;

use kms_connector::context::{EncryptionContext, MAX_CHARS};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// A JSON object's entries in order, duplicates kept.
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// `Some((pairs, has_duplicates))` for a JSON object of strings within the length limit.
fn model(text: &str) -> Option<(Vec<(String, String)>, bool)> {
    if text.chars().count() > MAX_CHARS {
        return None;
    }
    let Entries(entries) = serde_json::from_str(text).ok()?;
    let mut pairs = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let serde_json::Value::String(v) = v else {
            return None;
        };
        pairs.push((k, v));
    }
    let mut keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    let duplicates = keys.windows(2).any(|w| w[0] == w[1]);
    Some((pairs, duplicates))
}

fn check(text: &str) -> Option<(EncryptionContext, bool)> {
    let parsed = EncryptionContext::parse("SourceEncryptionContext", Some(text));
    if text.is_empty() {
        let context = parsed.expect("an empty context is no context");
        assert!(context.is_empty() && context.aad().is_empty());
        return Some((context, false));
    }
    match (model(text), parsed) {
        (Some((_, true)), Ok(_)) => panic!("accepted a context that repeats a key: {text:?}"),
        (Some((pairs, false)), Ok(context)) => {
            let (aad, legacy) = (context.aad(), context.legacy_aad());
            assert_eq!(context.is_empty(), pairs.is_empty());
            let expected_len = if pairs.is_empty() { 0 } else { 32 };
            assert_eq!((aad.len(), legacy.len()), (expected_len, expected_len));
            // The same pairs in the opposite order are the same context.
            let reversed: serde_json::Map<String, serde_json::Value> = pairs
                .iter()
                .rev()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            let json = serde_json::to_string(&reversed).unwrap();
            if json.chars().count() <= MAX_CHARS {
                let again = EncryptionContext::parse("EncryptionContext", Some(&json)).unwrap();
                assert_eq!(again, context);
                assert_eq!((again.aad(), again.legacy_aad()), (aad, legacy));
            }
            let plain = pairs
                .iter()
                .all(|(k, v)| !k.contains(['=', '&']) && !v.contains(['=', '&']));
            Some((context, plain))
        }
        (Some((_, duplicates)), Err(e)) => {
            assert!(duplicates, "refused a valid context {text:?}: {e}");
            assert_eq!(e.0, "SourceEncryptionContext");
            None
        }
        (None, Ok(_)) => panic!("accepted an invalid context {text:?}"),
        (None, Err(e)) => {
            assert_eq!(e.0, "SourceEncryptionContext");
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    assert!(
        EncryptionContext::parse("EncryptionContext", None)
            .unwrap()
            .is_empty()
    );
    let (a, b) = text.split_once('\0').unwrap_or((text, ""));
    let (Some((a, a_plain)), Some((b, b_plain))) = (check(a), check(b)) else {
        return;
    };
    // The format-2 AAD identifies the context; the legacy one only without its separators.
    if a.aad() == b.aad() {
        assert_eq!(a, b, "two different contexts have the same AAD");
    }
    if a_plain && b_plain && a.legacy_aad() == b.legacy_aad() {
        assert_eq!(
            a, b,
            "two different plain contexts have the same legacy AAD"
        );
    }
});
