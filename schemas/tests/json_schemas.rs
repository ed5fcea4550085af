//! Every JSON Schema under `schemas/json/` is checked against serialized examples of the Rust
//! type it documents, and against hand-made bad documents that it must refuse. A schema file
//! with no test here fails `every_schema_file_is_tested`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use schemas::b64;
use schemas::xki::*;
use serde::Serialize;
use serde_json::{Value, json};

static TESTED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn json_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("json")
}

/// Validates `good` (serialized Rust values) and refuses `bad` against `schema` (path under json/).
fn check(schema: &str, good: &[Value], bad: &[Value]) {
    let path = json_dir().join(schema);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema_json: Value = serde_json::from_str(&text).unwrap();
    // Every schema file is registered under its $id, so cross-file $refs resolve offline.
    let mut files = BTreeSet::new();
    schema_files(&json_dir(), &mut files);
    let resources = files.iter().map(|f| {
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(json_dir().join(f)).unwrap()).unwrap();
        let id = doc["$id"]
            .as_str()
            .unwrap_or_else(|| panic!("{f} has no $id"))
            .to_owned();
        (id, jsonschema::Resource::from_contents(doc).unwrap())
    });
    let validator = jsonschema::options()
        .with_resources(resources)
        .build(&schema_json)
        .unwrap_or_else(|e| panic!("{schema} is not a valid JSON Schema: {e}"));
    assert!(!good.is_empty(), "{schema}: no positive example");
    for doc in good {
        let errors: Vec<String> = validator.iter_errors(doc).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{schema} refuses a serialized Rust value {}: {errors:?}",
            short(doc)
        );
    }
    for doc in bad {
        assert!(
            !validator.is_valid(doc),
            "{schema} accepts a bad document {}",
            short(doc)
        );
    }
    TESTED.lock().unwrap().insert(schema.to_owned());
}

fn short(doc: &Value) -> String {
    doc.to_string().chars().take(300).collect()
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

fn full_meta() -> RequestMetadata {
    RequestMetadata {
        aws_principal_arn: Some("arn:aws:iam::123456789012:user/Alice".into()),
        aws_source_vpc: Some("vpc-0321654".into()),
        aws_source_vpce: Some("vpce-0123456".into()),
        kms_key_arn: Some("arn:aws:kms:us-east-1:123456789012:key/1234abcd".into()),
        kms_operation: Some("Encrypt".into()),
        kms_request_id: Some("4112f4d6-db54-4af4-ae30-c55a22a8dfae".into()),
        kms_via_service: Some("ebs".into()),
    }
}

fn health_meta() -> RequestMetadata {
    RequestMetadata {
        kms_operation: Some("KmsHealthCheck".into()),
        kms_request_id: Some(String::new()),
        ..Default::default()
    }
}

fn xki_health() {
    let good = [to_json(&HealthRequest {
        request_metadata: health_meta(),
    })];
    check(
        "xki/health-request.schema.json",
        &good,
        &[
            json!({}),
            json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck"}}),
        ],
    );
    let resp = HealthResponse {
        xks_proxy_fleet_size: 2,
        xks_proxy_vendor: "hyok".into(),
        xks_proxy_model: "xki-proxy 0.1.0".into(),
        ekm_vendor: "hyok ekm".into(),
        ekm_fleet_details: vec![
            EkmFleetEntry {
                id: "hsm-1".into(),
                model: "SoftHSM 2.6".into(),
                health_status: HealthStatus::Active,
            },
            EkmFleetEntry {
                id: "hsm-2".into(),
                model: "SoftHSM 2.6".into(),
                health_status: HealthStatus::Unavailable,
            },
        ],
    };
    let mut no_fleet = to_json(&resp);
    no_fleet["ekmFleetDetails"] = json!([]);
    let mut zero = to_json(&resp);
    zero["xksProxyFleetSize"] = json!(0);
    let mut bad_status = to_json(&resp);
    bad_status["ekmFleetDetails"][0]["healthStatus"] = json!("OK");
    check(
        "xki/health-response.schema.json",
        &[to_json(&resp)],
        &[no_fleet, zero, bad_status],
    );
}

fn xki_metadata() {
    let create = RequestMetadata {
        kms_key_arn: None,
        kms_operation: Some("CreateKey".into()),
        ..full_meta()
    };
    let good = [
        to_json(&MetadataRequest {
            request_metadata: create,
        }),
        to_json(&MetadataRequest {
            request_metadata: full_meta(),
        }),
    ];
    let no_principal = to_json(&MetadataRequest {
        request_metadata: health_meta(),
    });
    check("xki/metadata-request.schema.json", &good, &[no_principal]);
    let resp = MetadataResponse {
        key_spec: KeySpec::Aes256,
        key_usage: vec![KeyUsage::Encrypt, KeyUsage::Decrypt],
        key_status: KeyStatus::Enabled,
    };
    let disabled = MetadataResponse {
        key_status: KeyStatus::Disabled,
        ..resp.clone()
    };
    check(
        "xki/metadata-response.schema.json",
        &[to_json(&resp), to_json(&disabled)],
        &[
            json!({"keySpec": "AES_256", "keyUsage": ["ENCRYPT"], "keyStatus": "enabled"}),
            json!({"keySpec": "AES_256", "keyUsage": ["encrypt"], "keyStatus": "ENABLED"}),
            json!({"keyUsage": ["ENCRYPT"], "keyStatus": "ENABLED"}),
        ],
    );
}

fn xki_encrypt() {
    let req = EncryptRequest {
        request_metadata: full_meta(),
        plaintext: b64::encode([7u8; 4300]),
        encryption_algorithm: ENCRYPTION_ALGORITHM.into(),
        additional_authenticated_data: Some(b64::encode([1u8; 8192])),
        ciphertext_data_integrity_value_algorithm: Some(CDIV_ALGORITHM.into()),
    };
    let minimal = EncryptRequest {
        additional_authenticated_data: None,
        ciphertext_data_integrity_value_algorithm: None,
        plaintext: b64::encode(b"x"),
        ..req.clone()
    };
    let mut url_safe = to_json(&minimal);
    url_safe["plaintext"] = json!("-_-_");
    let mut cbc = to_json(&minimal);
    cbc["encryptionAlgorithm"] = json!("AES_CBC");
    check(
        "xki/encrypt-request.schema.json",
        &[to_json(&req), to_json(&minimal)],
        &[url_safe, cbc],
    );
    let resp = EncryptResponse {
        ciphertext: b64::encode([9u8; 32]),
        ciphertext_metadata: Some(b64::encode([1u8, 0, 1])),
        initialization_vector: b64::encode([0u8; 12]),
        authentication_tag: b64::encode([0u8; 16]),
        ciphertext_data_integrity_value: Some(b64::encode([0u8; 32])),
    };
    let sixteen = EncryptResponse {
        initialization_vector: b64::encode([0u8; 16]),
        ciphertext_metadata: None,
        ciphertext_data_integrity_value: None,
        ..resp.clone()
    };
    let mut short_tag = to_json(&resp);
    short_tag["authenticationTag"] = json!(b64::encode([0u8; 12]));
    let mut big_meta = to_json(&resp);
    big_meta["ciphertextMetadata"] = json!(b64::encode([0u8; 21]));
    check(
        "xki/encrypt-response.schema.json",
        &[to_json(&resp), to_json(&sixteen)],
        &[short_tag, big_meta],
    );
}

fn xki_decrypt() {
    let req = DecryptRequest {
        request_metadata: full_meta(),
        ciphertext: b64::encode([9u8; 4300]),
        ciphertext_metadata: Some(b64::encode([1u8; 20])),
        encryption_algorithm: ENCRYPTION_ALGORITHM.into(),
        additional_authenticated_data: Some(b64::encode(b"context")),
        initialization_vector: b64::encode([0u8; 12]),
        authentication_tag: b64::encode([0u8; 16]),
    };
    let mut no_tag = to_json(&req);
    no_tag.as_object_mut().unwrap().remove("authenticationTag");
    let mut odd_iv = to_json(&req);
    odd_iv["initializationVector"] = json!(b64::encode([0u8; 13]));
    let mut big_meta = to_json(&req);
    big_meta["ciphertextMetadata"] = json!(b64::encode([0u8; 21]));
    check(
        "xki/decrypt-request.schema.json",
        &[to_json(&req)],
        &[no_tag, odd_iv, big_meta],
    );
    let resp = DecryptResponse {
        plaintext: b64::encode(b"hello world"),
    };
    check(
        "xki/decrypt-response.schema.json",
        &[to_json(&resp)],
        &[json!({"plaintext": "aGVsbG8"}), json!({})],
    );
}

fn xki_error() {
    let good: Vec<Value> = ErrorName::ALL
        .iter()
        .map(|name| to_json(&ErrorBody::new(*name, "short message")))
        .collect();
    check(
        "xki/error.schema.json",
        &good,
        &[
            json!({"errorName": "NoSuchException"}),
            json!({"errorName": "ValidationException", "errorMessage": "tab\there"}),
        ],
    );
}

#[test]
fn xki_messages_match_their_schemas() {
    xki_health();
    xki_metadata();
    xki_encrypt();
    xki_decrypt();
    xki_error();
}

#[test]
fn ekm_messages_match_their_schemas() {
    let examples = schemas::ekm::examples();
    for (name, file) in schemas::ekm::SCHEMA_FILES {
        let good: Vec<Value> = examples
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect();
        // Every message is an object with required fields, except the bare error code.
        let bad = if name == "ErrorCode" {
            vec![json!("NoSuchCode"), json!(7)]
        } else {
            let mut wrong_types = good[0].clone();
            for value in wrong_types.as_object_mut().unwrap().values_mut() {
                *value = json!({"not": "this"});
            }
            let mut bad = vec![json!(42), wrong_types];
            // Every field of a deletion request is optional: `{}` is a valid one.
            if name != "ScheduleDeletionRequest" {
                bad.push(json!({}));
            }
            bad
        };
        check(&format!("ekm/{file}"), &good, &bad);
    }
}

fn schema_files(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            schema_files(&path, out);
        } else if path.to_string_lossy().ends_with(".schema.json") {
            out.insert(
                path.strip_prefix(json_dir())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

#[test]
fn every_schema_file_is_tested() {
    xki_messages_match_their_schemas();
    ekm_messages_match_their_schemas();
    let mut files = BTreeSet::new();
    schema_files(&json_dir(), &mut files);
    assert!(files.len() >= 9, "schema files missing: {files:?}");
    let tested = TESTED.lock().unwrap().clone();
    let untested: Vec<_> = files.difference(&tested).collect();
    assert!(
        untested.is_empty(),
        "schema files without a test: {untested:?}"
    );
}
