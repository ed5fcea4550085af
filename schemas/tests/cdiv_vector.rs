//! The spec's Appendix C worked example (`../shared/vectors/xki-cdiv.json`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use schemas::b64;
use schemas::xki::aad::cdiv;

fn vector() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/vectors/xki-cdiv.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn field(v: &serde_json::Value, name: &str) -> Vec<u8> {
    b64::decode(v[name].as_str().unwrap()).unwrap()
}

fn compute(v: &serde_json::Value) -> String {
    b64::encode(cdiv(
        &field(v, "additionalAuthenticatedData"),
        &field(v, "ciphertextMetadata"),
        &field(v, "initializationVector"),
        &field(v, "ciphertext"),
        &field(v, "authenticationTag"),
    ))
}

#[test]
fn appendix_c_example() {
    let v = vector();
    assert_eq!(field(&v, "additionalAuthenticatedData").len(), 33);
    assert_eq!(field(&v, "ciphertextMetadata").len(), 13);
    assert_eq!(
        compute(&v),
        v["ciphertextDataIntegrityValue"].as_str().unwrap()
    );
    assert_eq!(compute(&v), "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=");
}

#[test]
fn every_input_changes_the_value() {
    let v = vector();
    let expected = v["ciphertextDataIntegrityValue"]
        .as_str()
        .unwrap()
        .to_owned();
    for name in [
        "additionalAuthenticatedData",
        "ciphertextMetadata",
        "initializationVector",
        "ciphertext",
        "authenticationTag",
    ] {
        let mut tampered = v.clone();
        let mut bytes = field(&v, name);
        bytes[0] ^= 1;
        tampered[name] = b64::encode(&bytes).into();
        assert_ne!(
            compute(&tampered),
            expected,
            "{name} is not covered by the CDIV"
        );
    }
}
