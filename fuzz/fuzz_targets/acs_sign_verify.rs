//! Alibaba OpenAPI sign → verify → tamper (`schemas::acs`), for ACS3-HMAC-SHA256 and the
//! HMAC-SHA1 RPC signature. The call to sign (method, path, query parameters, action, version,
//! nonce, content type, body) is read from a fuzzer-chosen request, signed with a fixed secret.
//!
//! - The verifier accepts what the signer signed, and reports the signed action, version, nonce
//!   and time; `api_parameters` decodes the signed query to the parameters that were signed.
//! - A second request (the first with one fuzzer-chosen byte flipped anywhere, or an unrelated
//!   request carrying the first one's signature) is accepted only if it means the same: ACS3:
//!   method, decoded path, decoded query pairs, signed header values, body; RPC: method and the
//!   decoded parameters (`hyok_fuzz::Meaning`, computed independently of `schemas`).
//! - Equal ACS3 canonical requests (or RPC canonical queries) imply equal meanings.
#![no_main]

use std::collections::BTreeMap;

use hyok_fuzz::{Control, Meaning, QueryRule, RawRequest, ValueRule, flip_byte, form_decode};
use libfuzzer_sys::fuzz_target;
use schemas::acs::fuzzing::{acs3_canonical_request, rpc_canonical_query};
use schemas::acs::{
    Acs3Request, Credential, RpcRequest, Verifier, api_parameters, encode_parameters, sign_acs3,
    sign_rpc,
};
use sha2::{Digest, Sha256};
use time::macros::datetime;

const ACCESS_KEY_ID: &str = "LTAI5tVectorAccessKey01";
const SECRET: &str = "VectorSecretKeyForSignatureTests0123456789";

fuzz_target!(|data: &[u8]| {
    let mut control = Control::new(data);
    let mode = control.byte();
    let position = usize::from(control.u16());
    let mask = control.byte();
    let rest = control.rest();
    let (first, second) = match rest.iter().position(|b| *b == 0) {
        Some(at) if mode & 2 == 2 => (&rest[..at], Some(&rest[at + 1..])),
        _ => (rest, None),
    };
    let Some(template) = RawRequest::parse(first) else {
        return;
    };
    let (path, query) = template
        .target
        .split_once('?')
        .unwrap_or((&template.target, ""));
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (form_decode(k), form_decode(v)) else {
            return;
        };
        let (Ok(k), Ok(v)) = (String::from_utf8(k), String::from_utf8(v)) else {
            return;
        };
        pairs.push((k, v));
    }
    let header = |name: &str, default: &'static str| {
        template
            .values(name)
            .next()
            .map_or(default.to_owned(), str::to_owned)
    };
    let now = datetime!(2026-11-23 14:58:52 UTC);
    let credential = Credential::new(ACCESS_KEY_ID, SECRET);
    let lookup = |ak: &str| (ak == ACCESS_KEY_ID).then(|| SECRET.into());
    let verifier = Verifier::new();
    if mode & 1 == 0 {
        let (host, action) = (
            header("host", "kms.example.com"),
            header("x-acs-action", "Encrypt"),
        );
        let (version, nonce) = (
            header("x-acs-version", "2016-01-20"),
            header("x-acs-signature-nonce", "n"),
        );
        let content_type = template.values("content-type").next();
        let query: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let call = Acs3Request {
            method: &template.method,
            host: &host,
            path,
            action: &action,
            version: &version,
            query: &query,
            body: &template.body,
            content_type,
            nonce: &nonce,
        };
        let Ok(signed) = sign_acs3(&credential, &call, now) else {
            return;
        };
        let request = RawRequest {
            method: template.method.clone(),
            target: signed.target.clone(),
            headers: signed.headers.clone(),
            body: template.body.clone(),
        };
        let verified = verifier
            .verify(&request.parts(), lookup, now)
            .expect("the verifier refuses what sign_acs3 signed");
        assert_eq!(verified.action.as_deref(), Some(action.trim()));
        assert_eq!(verified.version.as_deref(), Some(version.trim()));
        assert_eq!(verified.nonce, nonce.trim());
        assert_eq!(verified.timestamp, now);
        if template.body.is_empty() {
            let mut expected = BTreeMap::new();
            let unique = pairs
                .iter()
                .all(|(k, v)| expected.insert(k.clone(), v.clone()).is_none());
            if unique {
                assert_eq!(api_parameters(&request.parts()).as_ref(), Ok(&expected));
            }
        }
        let signed_headers: Vec<String> = signed
            .headers
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| n != "authorization")
            .collect();
        let refs: Vec<&str> = signed_headers.iter().map(String::as_str).collect();
        let meaning =
            |r: &RawRequest| Meaning::of(r, &signed_headers, ValueRule::Trim, QueryRule::Form);
        let canonical = |r: &RawRequest| {
            acs3_canonical_request(&r.parts(), &refs, &hex::encode(Sha256::digest(&r.body))).ok()
        };
        let original = meaning(&request).expect("the signed query decodes");
        let original_canonical = canonical(&request).unwrap();
        let authorization = signed
            .headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1
            .clone();
        let tampered = match second {
            None => flip_byte(&request, position, mask),
            Some(bytes) => RawRequest::parse(bytes).map(|mut other| {
                other.remove_header("authorization");
                other
                    .headers
                    .push(("authorization".into(), authorization.clone()));
                other
            }),
        };
        let Some(tampered) = tampered else {
            return;
        };
        if canonical(&tampered).as_ref() == Some(&original_canonical) {
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
    } else {
        // RPC: the common parameters come from the signer; the template's other pairs are the API's.
        let take = |name: &str, default: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map_or(default.to_owned(), |(_, v)| v.clone())
        };
        let (action, version, nonce) = (
            take("Action", "Encrypt"),
            take("Version", "2016-01-20"),
            take("SignatureNonce", "n"),
        );
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
        let own: Vec<(&str, &str)> = pairs
            .iter()
            .filter(|(k, _)| !common.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let call = RpcRequest {
            method: &template.method,
            action: &action,
            version: &version,
            params: &own,
            nonce: &nonce,
        };
        let Ok(signed) = sign_rpc(&credential, &call, now) else {
            return;
        };
        let encoded = encode_parameters(signed.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let in_body = mode & 4 == 4;
        let request = RawRequest {
            method: template.method.clone(),
            target: if in_body {
                "/".to_owned()
            } else {
                format!("/?{encoded}")
            },
            headers: if in_body {
                vec![(
                    "Content-Type".into(),
                    "application/x-www-form-urlencoded".into(),
                )]
            } else {
                Vec::new()
            },
            body: if in_body {
                encoded.into_bytes()
            } else {
                Vec::new()
            },
        };
        let verified = verifier
            .verify(&request.parts(), lookup, now)
            .expect("the verifier refuses what sign_rpc signed");
        assert_eq!(
            verified.action.as_deref(),
            Some(action.as_str()).filter(|a| !a.is_empty())
        );
        assert_eq!(verified.nonce, nonce);
        assert_eq!(verified.timestamp, now);
        let expected: BTreeMap<String, String> = signed.iter().cloned().collect();
        let parameters = api_parameters(&request.parts()).unwrap();
        assert_eq!(
            parameters, expected,
            "api_parameters does not decode what was signed"
        );
        let meaning = |r: &RawRequest| {
            let mut p = api_parameters(&r.parts()).ok()?;
            p.remove("Signature");
            Some((r.method.clone(), p))
        };
        let original = meaning(&request).unwrap();
        let canonical = |r: &RawRequest| {
            let p = api_parameters(&r.parts()).ok()?;
            Some((
                r.method.clone(),
                rpc_canonical_query(p.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            ))
        };
        let original_canonical = canonical(&request).unwrap();
        let signature = signed
            .iter()
            .find(|(k, _)| k == "Signature")
            .unwrap()
            .1
            .clone();
        let tampered = match second {
            None => flip_byte(&request, position, mask),
            Some(bytes) => RawRequest::parse(bytes).map(|mut other| {
                // The first request's signature on another request.
                let sep = if other.target.contains('?') { "&" } else { "?" };
                other.target = format!(
                    "{}{sep}Signature={}",
                    other.target,
                    schemas::acs::percent_encode(&signature)
                );
                other
            }),
        };
        let Some(tampered) = tampered else {
            return;
        };
        if canonical(&tampered).as_ref() == Some(&original_canonical) {
            assert_eq!(
                meaning(&tampered).as_ref(),
                Some(&original),
                "equal canonical queries, different meanings"
            );
        }
        if verifier.verify(&tampered.parts(), lookup, now).is_ok() {
            assert_eq!(
                meaning(&tampered).as_ref(),
                Some(&original),
                "the signature verifies for a request that means something else"
            );
        }
    }
});
