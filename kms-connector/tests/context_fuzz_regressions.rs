//! Inputs the `encryption_context` fuzz target (`fuzz/`, feature `context-aad-injective`)
//! found: two different encryption contexts that get the same AAD, so a ciphertext made under
//! one decrypts under the other. `EncryptionContext::aad` hashes `k1=v1&k2=v2…` without escaping
//! `=` or `&`. Ignored until the canonical encoding of issue 10 lands; then drop the `ignore`
//! and build the fuzz target with the feature by default.
#![allow(clippy::expect_used)]

use kms_connector::context::EncryptionContext;

fn aad(text: &str) -> Vec<u8> {
    EncryptionContext::parse("EncryptionContext", Some(text))
        .expect("a JSON object of strings")
        .aad()
}

#[test]
#[ignore = "AAD ambiguity of the k=v&k=v canonical form: fixed by issue 10's canonical encoding"]
fn fuzz_context_aad_separates_keys_from_values() {
    assert_ne!(aad(r#"{"a=b":"c"}"#), aad(r#"{"a":"b=c"}"#));
    assert_ne!(aad(r#"{"a":"1&b=2"}"#), aad(r#"{"a":"1","b":"2"}"#));
}
