//! XKI request bodies (`schemas::xki`): JSON → wire type → JSON → wire type is the identity;
//! validation accepts exactly the requests within the spec's limits (and this proxy's) and
//! otherwise answers with an error name the spec prescribes for one of the request's faults
//! (an independent model of spec §1 and §4.1 below); parse errors never echo the body. Also the
//! `externalKeyId` path segment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schemas::b64;
use schemas::xki::validate::{Operation, check_metadata, parse_json};
use schemas::xki::{
    DecryptRequest, EncryptRequest, ErrorName, ExternalKeyId, HealthRequest, Limits,
    MetadataRequest, RequestError, RequestMetadata,
};
use serde::{Serialize, de::DeserializeOwned};

const V: ErrorName = ErrorName::ValidationException;
const U: ErrorName = ErrorName::UnsupportedOperationException;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let limits = if selector & 0x80 == 0 {
        Limits::default()
    } else {
        Limits {
            max_data_bytes: 6144,
            max_aad_bytes: 65535,
        }
    };
    match (selector & 0x7f) % 5 {
        0 => {
            if let Some(request) = round_trip::<HealthRequest>(body) {
                let faults = metadata_faults(&request.request_metadata, Operation::Health);
                check_verdict(
                    check_metadata(&request.request_metadata, Operation::Health),
                    &faults,
                );
            }
        }
        1 => {
            if let Some(request) = round_trip::<MetadataRequest>(body) {
                let faults = metadata_faults(&request.request_metadata, Operation::Metadata);
                let verdict = check_metadata(&request.request_metadata, Operation::Metadata);
                check_verdict(verdict, &faults);
            }
        }
        2 => {
            if let Some(request) = round_trip::<EncryptRequest>(body) {
                let faults = encrypt_faults(&request, &limits);
                match request.validate(&limits) {
                    Ok(valid) => {
                        check_verdict(Ok(()), &faults);
                        assert_eq!(*valid.plaintext, b64::decode(&request.plaintext).unwrap());
                        let aad = request.additional_authenticated_data.as_deref();
                        assert_eq!(
                            valid.aad,
                            aad.map_or(Vec::new(), |a| b64::decode(a).unwrap())
                        );
                        assert_eq!(
                            valid.want_cdiv,
                            request.ciphertext_data_integrity_value_algorithm.is_some()
                        );
                    }
                    Err(e) => check_verdict(Err(e), &faults),
                }
            }
        }
        3 => {
            if let Some(request) = round_trip::<DecryptRequest>(body) {
                let faults = decrypt_faults(&request, &limits);
                match request.validate(&limits) {
                    Ok(valid) => {
                        check_verdict(Ok(()), &faults);
                        assert_eq!(valid.ciphertext, b64::decode(&request.ciphertext).unwrap());
                        assert_eq!(
                            valid.iv,
                            b64::decode(&request.initialization_vector).unwrap()
                        );
                        assert_eq!(valid.tag, b64::decode(&request.authentication_tag).unwrap());
                        let ctm = request.ciphertext_metadata.as_deref();
                        assert_eq!(
                            valid.ciphertext_metadata,
                            ctm.map_or(Vec::new(), |c| b64::decode(c).unwrap())
                        );
                    }
                    Err(e) => check_verdict(Err(e), &faults),
                }
            }
        }
        _ => {
            let Ok(text) = std::str::from_utf8(body) else {
                return;
            };
            let expected = !text.is_empty()
                && text.len() <= 128
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                && text != "."
                && text != "..";
            match ExternalKeyId::parse(text) {
                Ok(id) => {
                    assert!(expected, "accepted external key id {text:?}");
                    assert_eq!(id.as_str(), text);
                    assert_eq!(id.path_segment().to_string(), text);
                    let json = serde_json::to_string(&id).unwrap();
                    assert_eq!(serde_json::from_str::<ExternalKeyId>(&json).unwrap(), id);
                }
                Err(_) => {
                    assert!(!expected, "refused external key id {text:?}");
                    let json = serde_json::to_string(text).unwrap();
                    assert!(serde_json::from_str::<ExternalKeyId>(&json).is_err());
                }
            }
        }
    }
});

/// Parses `body`; when it parses, serialising and parsing again gives the same value, and a
/// refusal is a ValidationException whose message repeats nothing of the body.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    body: &[u8],
) -> Option<T> {
    match parse_json::<T>(body) {
        Ok(value) => {
            let json = serde_json::to_vec(&value).unwrap();
            let again: T = parse_json(&json).unwrap();
            assert_eq!(again, value, "JSON round trip changed the request");
            Some(value)
        }
        Err(e) => {
            assert_eq!(e.name, V);
            let safe = e.message.starts_with("malformed JSON body at line ")
                || e.message.starts_with("missing field");
            assert!(
                safe && e.message.len() <= 80,
                "unsafe message {:?}",
                e.message
            );
            assert!(e.message.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
            None
        }
    }
}

/// Accepted iff there is no fault; refused with the name of one of the faults.
fn check_verdict(verdict: Result<(), RequestError>, faults: &[ErrorName]) {
    match verdict {
        Ok(()) => assert!(
            faults.is_empty(),
            "accepted a request with faults {faults:?}"
        ),
        Err(e) => assert!(
            faults.contains(&e.name),
            "refused with {:?} ({}), the faults are {faults:?}",
            e.name,
            e.message
        ),
    }
}

fn metadata_faults(meta: &RequestMetadata, op: Operation) -> Vec<ErrorName> {
    let arn_bad = |arn: &Option<String>, required: bool| match arn {
        None => required,
        Some(arn) => arn.chars().count() > 2048,
    };
    let mut faults = Vec::new();
    if meta.kms_operation.is_none() || meta.kms_request_id.is_none() {
        faults.push(V);
    }
    if op != Operation::Health {
        let key_arn_required = matches!(op, Operation::Encrypt | Operation::Decrypt);
        if arn_bad(&meta.aws_principal_arn, true) || arn_bad(&meta.kms_key_arn, key_arn_required) {
            faults.push(V);
        }
    }
    faults
}

/// Faults of a Base64 field holding at most `max` bytes (`non_empty`: at least one).
fn field_faults(
    text: &str,
    max: usize,
    over: ErrorName,
    non_empty: bool,
    faults: &mut Vec<ErrorName>,
) {
    match b64::decode(text) {
        Ok(bytes) => {
            if bytes.len() > max {
                faults.push(over);
            }
            if non_empty && bytes.is_empty() {
                faults.push(V);
            }
        }
        Err(_) => {
            faults.push(V);
            // Judged by its length before decoding: too long for the limit is over the limit.
            if text.len() / 4 * 3 > max + 2 {
                faults.push(over);
            }
        }
    }
}

fn encrypt_faults(request: &EncryptRequest, limits: &Limits) -> Vec<ErrorName> {
    let mut faults = metadata_faults(&request.request_metadata, Operation::Encrypt);
    if request.encryption_algorithm != "AES_GCM" {
        faults.push(V);
    }
    if request
        .ciphertext_data_integrity_value_algorithm
        .as_deref()
        .is_some_and(|a| a != "SHA_256")
    {
        faults.push(V);
    }
    if let Some(aad) = &request.additional_authenticated_data {
        field_faults(aad, limits.max_aad_bytes, U, false, &mut faults);
    }
    field_faults(
        &request.plaintext,
        limits.max_data_bytes,
        U,
        true,
        &mut faults,
    );
    faults
}

fn decrypt_faults(request: &DecryptRequest, limits: &Limits) -> Vec<ErrorName> {
    let mut faults = metadata_faults(&request.request_metadata, Operation::Decrypt);
    if request.encryption_algorithm != "AES_GCM" {
        faults.push(V);
    }
    field_faults(
        &request.ciphertext,
        limits.max_data_bytes,
        U,
        true,
        &mut faults,
    );
    if let Some(aad) = &request.additional_authenticated_data {
        field_faults(aad, limits.max_aad_bytes, U, false, &mut faults);
    }
    if let Some(ctm) = &request.ciphertext_metadata {
        field_faults(ctm, 20, V, false, &mut faults);
    }
    match b64::decode(&request.initialization_vector) {
        Ok(iv) if iv.len() == 12 || iv.len() == 16 => {}
        _ => faults.push(V),
    }
    match b64::decode(&request.authentication_tag) {
        Ok(tag) if tag.len() == 16 => {}
        _ => faults.push(V),
    }
    faults
}
