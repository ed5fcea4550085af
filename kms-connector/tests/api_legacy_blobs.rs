//! Ciphertexts made before blob format 2 (`tests/fixtures/legacy-software-blobs.json`, written
//! by the connector at commit 2b6390a: no format byte, EncryptionContext bound as `k=v&…`)
//! still decrypt, through the OpenAPI, after the key's rows are put back into a store; a
//! ReEncrypt of one gives a format-2 blob.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/api.rs"]
pub mod harness;

use harness::{ACCOUNT, REGION, SOFTWARE, TestApp};
use kms_connector::store::{
    AutomaticRotation, KeySpec, KeyState, KeyUsage, KeyVersion, NewKey, Origin, ProtectionLevel,
    Store, UnixMillis,
};
use serde_json::Value;

fn fixture() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/legacy-software-blobs.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_1_blobs_still_decrypt() {
    let fixture = fixture();
    // The harness's root key is the fixture's.
    assert_eq!(s(&fixture["root_key"]), schemas::b64::encode([7u8; 32]));
    let app = TestApp::start().await;
    let store = Store::open(&format!(
        "sqlite://{}",
        app.dir.path().join("kms.db").display()
    ))
    .await
    .unwrap();
    let key_id = s(&fixture["key_id"]).to_owned();
    let created_at = UnixMillis(fixture["created_at_ms"].as_i64().unwrap());
    store
        .create_key(
            NewKey {
                key_id: key_id.clone(),
                account_id: ACCOUNT.into(),
                region: REGION.into(),
                instance_id: SOFTWARE.into(),
                key_spec: KeySpec::Aes256,
                key_usage: KeyUsage::EncryptDecrypt,
                origin: Origin::AliyunKms,
                protection_level: ProtectionLevel::Software,
                key_state: KeyState::Enabled,
                description: String::new(),
                creator: ACCOUNT.into(),
                created_at,
                external_key_id: None,
                automatic_rotation: AutomaticRotation::Disabled,
                rotation_interval_secs: None,
                material_expire_time: None,
            },
            KeyVersion {
                key_version_id: s(&fixture["key_version_id"]).into(),
                key_id: key_id.clone(),
                created_at,
                sealed_material: Some(
                    schemas::b64::decode(s(&fixture["sealed_material"])).unwrap(),
                ),
                backend_ref: None,
            },
            Vec::new(),
            None,
        )
        .await
        .unwrap();

    let c = app.root();
    let blobs = fixture["blobs"].as_array().unwrap();
    assert_eq!(blobs.len(), 5);
    for entry in blobs {
        let blob = s(&entry["CiphertextBlob"]);
        let mut params = vec![("CiphertextBlob", blob)];
        if let Some(context) = entry["EncryptionContext"].as_str() {
            params.push(("EncryptionContext", context));
        }
        let dec = c.ok("Decrypt", &params).await;
        assert_eq!(dec["Plaintext"], entry["Plaintext"], "{entry}");
        assert_eq!(dec["KeyId"], Value::String(key_id.clone()));

        // ReEncrypt to the same key: the answer is a format-2 blob that decrypts.
        let mut params = vec![("CiphertextBlob", blob), ("DestinationKeyId", &key_id)];
        if let Some(context) = entry["EncryptionContext"].as_str() {
            params.push(("SourceEncryptionContext", context));
            params.push(("DestinationEncryptionContext", context));
        }
        let re = c.ok("ReEncrypt", &params).await;
        let new_blob = s(&re["CiphertextBlob"]);
        assert_eq!(schemas::b64::decode(new_blob).unwrap()[36], 0x02);
        let mut params = vec![("CiphertextBlob", new_blob)];
        if let Some(context) = entry["EncryptionContext"].as_str() {
            params.push(("EncryptionContext", context));
        }
        assert_eq!(
            c.ok("Decrypt", &params).await["Plaintext"],
            entry["Plaintext"]
        );
    }
    // A format-1 blob still needs its own context.
    let other = c
        .call(
            "Decrypt",
            &[
                ("CiphertextBlob", s(&blobs[4]["CiphertextBlob"])),
                ("EncryptionContext", r#"{"tenant":"other"}"#),
            ],
        )
        .await;
    other.expect("InvalidParameter", 400);
}
