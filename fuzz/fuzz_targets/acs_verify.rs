//! Alibaba OpenAPI signature verification of arbitrary requests (`schemas::acs::Verifier`),
//! seeded with what Alibaba's own SDKs sent (`shared/vectors/kms-openapi-signatures.json`), with
//! the vectors' AccessKey and a clock that reads the request's own timestamp. `detect`, the
//! ACS3 `Authorization` parser, the parameter decoder and both verifiers see every byte.
//!
//! - Nothing panics; refusals never hold the secret.
//! - An accepted ACS3 request signed `host` and every `x-acs-*` and `content-type` header it
//!   carries, and the verified action, version and nonce are those headers' values.
//! - An accepted RPC request's parameters decode, and the RPC signer, given those parameters,
//!   produces exactly the signature the request carries.
#![no_main]

use std::collections::BTreeMap;

use hyok_fuzz::RawRequest;
use libfuzzer_sys::fuzz_target;
use schemas::acs::{Algorithm, Credential, RpcRequest, Verifier, api_parameters, sign_rpc};
use time::macros::{datetime, format_description};

const ACCESS_KEY_ID: &str = "LTAI5tVectorAccessKey01";
const SECRET: &str = "VectorSecretKeyForSignatureTests0123456789";

fuzz_target!(|data: &[u8]| {
    let Some(request) = RawRequest::parse(data) else {
        return;
    };
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    let parameters = api_parameters(&request.parts());
    let stamp = request
        .values("x-acs-date")
        .next()
        .map(str::to_owned)
        .or_else(|| {
            parameters
                .as_ref()
                .ok()
                .and_then(|p| p.get("Timestamp").cloned())
        });
    let now = stamp
        .and_then(|s| time::PrimitiveDateTime::parse(s.trim(), format).ok())
        .map_or(datetime!(2026-11-23 14:58:52 UTC), |t| t.assume_utc());
    let lookup = |ak: &str| (ak == ACCESS_KEY_ID).then(|| SECRET.into());
    match Verifier::new().verify(&request.parts(), lookup, now) {
        Ok(verified) => {
            assert_eq!(verified.access_key_id, ACCESS_KEY_ID);
            match verified.algorithm {
                Algorithm::Acs3HmacSha256 => check_acs3(&request, &verified),
                Algorithm::RpcHmacSha1 => check_rpc(&request, &verified, parameters.unwrap()),
                _ => unreachable!(),
            }
        }
        Err(error) => {
            let text = error.to_string();
            assert!(!text.contains(SECRET));
            assert!(text.len() <= 256, "{text}");
            assert!(
                text.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
                "{text}"
            );
        }
    }
});

fn check_acs3(request: &RawRequest, verified: &schemas::acs::Verified) {
    let authorization = request.values("authorization").next().unwrap();
    let signed: Vec<&str> = authorization
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split([',', ' ']).next())
        .unwrap()
        .split(';')
        .collect();
    assert!(signed.contains(&"host"));
    for (name, _) in &request.headers {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("x-acs-") || lower == "content-type" {
            assert!(signed.contains(&lower.as_str()), "{lower} was not signed");
        }
    }
    let header = |name: &str| request.values(name).next().map(|v| v.trim().to_owned());
    assert_eq!(verified.action, header("x-acs-action"));
    assert_eq!(verified.version, header("x-acs-version"));
    assert_eq!(
        Some(verified.nonce.clone()),
        header("x-acs-signature-nonce")
    );
}

fn check_rpc(
    request: &RawRequest,
    verified: &schemas::acs::Verified,
    parameters: BTreeMap<String, String>,
) {
    let get = |name: &str| parameters.get(name).filter(|v| !v.is_empty()).cloned();
    assert_eq!(verified.action, get("Action"));
    assert_eq!(verified.version, get("Version"));
    assert_eq!(Some(verified.nonce.clone()), get("SignatureNonce"));
    let (Some(action), Some(version)) = (get("Action"), get("Version")) else {
        return;
    };
    let common = [
        "Action",
        "Version",
        "AccessKeyId",
        "Timestamp",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
    ];
    let own: Vec<(&str, &str)> = parameters
        .iter()
        .filter(|(k, _)| !common.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let rpc = RpcRequest {
        method: &request.method,
        action: &action,
        version: &version,
        params: &own,
        nonce: &verified.nonce,
    };
    let pairs = sign_rpc(
        &Credential::new(ACCESS_KEY_ID, SECRET),
        &rpc,
        verified.timestamp,
    )
    .expect("the RPC signer refuses a request the verifier accepted");
    let signature = pairs
        .iter()
        .find(|(k, _)| k == "Signature")
        .map(|(_, v)| v.clone());
    assert_eq!(
        signature,
        get("Signature"),
        "accepted a signature the signer does not make"
    );
}
