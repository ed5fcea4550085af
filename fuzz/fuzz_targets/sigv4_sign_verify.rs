//! SigV4 sign → verify → tamper (`schemas::sigv4`): a fuzzer-chosen request is signed with a
//! fixed secret over `host`, `x-amz-date` and a fuzzer-chosen set of its headers.
//!
//! - The verifier accepts what the signer signed, and reports the signed scope and headers.
//! - A second request (the first with one fuzzer-chosen byte flipped anywhere, or an unrelated
//!   request carrying the first one's signature) is accepted only if it *means* the same as the
//!   first: same method, decoded path, decoded query pairs, signed header values (as HTTP
//!   compares them) and body (`hyok_fuzz::Meaning`, computed independently of `schemas`).
//! - Equal canonical requests imply equal meanings (the direct form of the same property, which
//!   libFuzzer's comparison tracing can steer towards).
#![no_main]

use hyok_fuzz::{Control, Meaning, QueryRule, RawRequest, ValueRule, flip_byte};
use libfuzzer_sys::fuzz_target;
use schemas::sigv4::fuzzing::canonical_request;
use schemas::sigv4::{Credential, Signer, Verifier};
use time::macros::datetime;

const ACCESS_KEY_ID: &str = "AKIAXKIVECTORS2345672ABC";
const SECRET: &str = "XkiVectorSecretOfLength43To64CharactersPad+/=";

fuzz_target!(|data: &[u8]| {
    let mut control = Control::new(data);
    let mode = control.byte();
    let position = usize::from(control.u16());
    let mask = control.byte();
    let header_mask = control.byte();
    let rest = control.rest();
    let (first, second) = match rest.iter().position(|b| *b == 0) {
        Some(at) if mode & 1 == 1 => (&rest[..at], Some(&rest[at + 1..])),
        _ => (rest, None),
    };
    let Some(mut request) = RawRequest::parse(first) else {
        return;
    };
    request.remove_header("authorization");
    let mut extra: Vec<String> = Vec::new();
    for (i, (name, _)) in request.headers.iter().enumerate() {
        let lower = name.to_ascii_lowercase();
        if header_mask & (1 << (i % 8)) != 0 && lower != "x-amz-date" {
            extra.push(lower);
        }
    }
    let extra_refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let now = datetime!(2026-11-23 14:59:00 UTC);
    let signer = Signer::new(
        Credential::new(ACCESS_KEY_ID, SECRET),
        "us-east-1",
        "kms-xks-proxy",
    );
    let Ok(signed) = signer.sign(&request.parts(), &extra_refs, now) else {
        // Only a request without a header it must sign is unsignable here.
        assert!(
            extra_refs
                .iter()
                .chain(&["host"])
                .any(|h| request.values(h).next().is_none()),
            "the signer refused a signable request"
        );
        return;
    };
    request.remove_header("x-amz-date");
    request
        .headers
        .push(("X-Amz-Date".into(), signed.x_amz_date.clone()));
    request
        .headers
        .push(("Authorization".into(), signed.authorization.clone()));

    let verifier = Verifier::new(["us-east-1"]).with_cache_capacity(4);
    let lookup = |ak: &str| (ak == ACCESS_KEY_ID).then(|| SECRET.into());
    let verified = verifier
        .verify(&request.parts(), lookup, now)
        .expect("the verifier refuses what the signer signed");
    assert_eq!(verified.request_time, now);
    assert_eq!(verified.access_key_id, ACCESS_KEY_ID);
    let mut expected_signed: Vec<String> = extra.clone();
    expected_signed.extend(["host".to_owned(), "x-amz-date".to_owned()]);
    expected_signed.sort();
    expected_signed.dedup();
    assert_eq!(verified.signed_headers, expected_signed);
    let signed_headers = verified.signed_headers;
    let meaning = |r: &RawRequest| {
        Meaning::of(
            r,
            &signed_headers,
            ValueRule::CollapseSpaces,
            QueryRule::Percent,
        )
    };
    let original = meaning(&request).expect("percent decoding never fails");
    let canonical = canonical_request(&request.parts(), &signed_headers).unwrap();

    let tampered = match second {
        None => flip_byte(&request, position, mask),
        Some(bytes) => RawRequest::parse(bytes).map(|mut other| {
            // The first request's signature on another request.
            other.remove_header("authorization");
            other.remove_header("x-amz-date");
            other
                .headers
                .push(("X-Amz-Date".into(), signed.x_amz_date.clone()));
            other
                .headers
                .push(("Authorization".into(), signed.authorization.clone()));
            other
        }),
    };
    let Some(tampered) = tampered else {
        return;
    };
    if canonical_request(&tampered.parts(), &signed_headers).as_ref() == Ok(&canonical) {
        assert_eq!(
            meaning(&tampered).as_ref(),
            Some(&original),
            "equal canonical requests, different meanings"
        );
    }
    if verifier.verify(&tampered.parts(), lookup, now).is_ok() {
        assert_eq!(
            meaning(&tampered).as_ref(),
            Some(&original),
            "the signature verifies for a request that means something else"
        );
    }
});
