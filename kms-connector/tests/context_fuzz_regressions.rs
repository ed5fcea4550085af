//! Inputs the `encryption_context` fuzz target (`fuzz/`) found in the first `EncryptionContext`,
//! fixed by the format-2 binding and the duplicate-key refusal:
//!
//! - two different contexts got the same AAD (`k1=v1&k2=v2…` without escaping `=` or `&`), so a
//!   ciphertext made under one decrypted under the other; the legacy binding, kept for format-1
//!   blobs only, still has that property by design;
//! - a repeated key was read last-wins, so an object whose value for a key is not a string was
//!   accepted when the key came again with a string.
#![allow(clippy::expect_used)]

use kms_connector::context::EncryptionContext;

fn aad(text: &str) -> Vec<u8> {
    EncryptionContext::parse("EncryptionContext", Some(text))
        .expect("a JSON object of strings")
        .aad()
}

#[test]
fn fuzz_context_aad_separates_keys_from_values() {
    assert_ne!(aad(r#"{"a=b":"c"}"#), aad(r#"{"a":"b=c"}"#));
    assert_ne!(aad(r#"{"a":"1&b=2"}"#), aad(r#"{"a":"1","b":"2"}"#));
    let legacy = |text| {
        EncryptionContext::parse("EncryptionContext", Some(text))
            .expect("a JSON object of strings")
            .legacy_aad()
    };
    assert_eq!(
        legacy(r#"{"a=b":"c"}"#),
        legacy(r#"{"a":"b=c"}"#),
        "legacy stays as it was"
    );
}

#[test]
fn fuzz_context_refuses_repeated_keys() {
    for text in [r#"{"a":{"b":"c"},"a":"d"}"#, r#"{"k":"1","k":"2"}"#] {
        assert!(
            EncryptionContext::parse("EncryptionContext", Some(text)).is_err(),
            "{text}"
        );
    }
}
