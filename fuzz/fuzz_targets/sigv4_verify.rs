//! SigV4 verification of arbitrary requests (`schemas::sigv4::Verifier`), seeded with the
//! requests curl signed (`shared/vectors/xki-sigv4.json`), with the vectors' credential and a
//! clock that reads the request's own `x-amz-date`. The `Authorization` parser sees every byte.
//!
//! - Nothing panics; refusals are short printable messages that never hold the secret.
//! - Acceptance implies that the signer, given the same request, credential, scope and signed
//!   headers, produces exactly the signature the request carries, and that the verified scope is
//!   one the verifier allows, with `host` and `x-amz-date` signed.
#![no_main]

use hyok_fuzz::RawRequest;
use libfuzzer_sys::fuzz_target;
use schemas::sigv4::{Credential, SigV4Error, Signer, Verifier};
use time::macros::datetime;

const ACCESS_KEY_ID: &str = "AKIAXKIVECTORS2345672ABC";
const SECRET: &str = "XkiVectorSecretOfLength43To64CharactersPad+/=";

fuzz_target!(|data: &[u8]| {
    let Some(request) = RawRequest::parse(data) else {
        return;
    };
    let now = request
        .values("x-amz-date")
        .next()
        .and_then(|d| {
            let format =
                time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
            time::PrimitiveDateTime::parse(d, format).ok()
        })
        .map_or(datetime!(2026-11-23 14:59:00 UTC), |t| t.assume_utc());
    let verifier = Verifier::new(["us-east-1", "cn-hangzhou"]).with_cache_capacity(8);
    let lookup = |ak: &str| (ak == ACCESS_KEY_ID).then(|| SECRET.into());
    match verifier.verify(&request.parts(), lookup, now) {
        Ok(verified) => {
            assert_eq!(verified.access_key_id, ACCESS_KEY_ID);
            assert_eq!(verified.service, "kms-xks-proxy");
            assert!(["us-east-1", "cn-hangzhou"].contains(&verified.region.as_str()));
            for required in ["host", "x-amz-date"] {
                assert!(verified.signed_headers.iter().any(|h| h == required));
            }
            let extra: Vec<&str> = verified
                .signed_headers
                .iter()
                .map(String::as_str)
                .filter(|h| !matches!(*h, "host" | "x-amz-date"))
                .collect();
            let signer = Signer::new(
                Credential::new(ACCESS_KEY_ID, SECRET),
                verified.region.clone(),
                verified.service.clone(),
            );
            let signed = signer
                .sign(&request.parts(), &extra, verified.request_time)
                .expect("the signer refuses a request the verifier accepted");
            let authorization = request.values("authorization").next().unwrap();
            let signature = |value: &str| {
                // The parameters come in any order; the signature ends at the next comma.
                value
                    .split("Signature=")
                    .nth(1)
                    .and_then(|s| s.split(',').next())
                    .map(|s| s.trim().to_owned())
            };
            assert_eq!(
                signature(&signed.authorization),
                signature(authorization),
                "accepted a signature the signer does not make"
            );
            assert!(signed.authorization.contains(&format!(
                "SignedHeaders={},",
                verified.signed_headers.join(";")
            )));
        }
        Err(error) => {
            let text = error.to_string();
            assert!(!text.contains(SECRET));
            assert!(text.len() <= 256, "{text}");
            if !matches!(
                error,
                SigV4Error::MissingSignedHeader(_)
                    | SigV4Error::WrongService(_)
                    | SigV4Error::RegionNotAllowed(_)
                    | SigV4Error::UnknownAccessKey(_)
            ) {
                assert!(
                    text.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
                    "{text}"
                );
            }
        }
    }
});
