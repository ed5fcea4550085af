//! The seeds' story, end to end with the real binaries: an external key minted through the
//! proxy CLI backs a KMS key of an external instance; disabling it at the proxy, and stopping
//! the proxy, make KMS refuse; enabling it and restarting the proxy bring everything back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use e2e::{Connector, Ekm, ExternalInstance, KmsClient, Pki, Proxy, field, wait_for};
use serde_json::Value;

/// The EKM (`state_ttl_ms`) and the proxy (`metadata_ttl_ms`) cache key state for a few
/// seconds; this is a deadline, not a sleep.
const STATE_CHANGE_DEADLINE: Duration = Duration::from_secs(30);
const HEALTH_INTERVAL_SECS: u64 = 1;
const TIMEOUT_MS: u64 = 1000;

async fn instance_status(kms: &KmsClient, instance: &str) -> String {
    let body = kms
        .ok("GetKmsInstance", &[("KmsInstanceId", instance)])
        .await;
    field(&body, "KmsInstance.Status")
}

async fn encrypt(kms: &KmsClient, key_id: &str, plaintext: &str, context: &str) -> (u16, Value) {
    kms.call(
        "Encrypt",
        &[
            ("KeyId", key_id),
            ("Plaintext", plaintext),
            ("EncryptionContext", context),
        ],
    )
    .await
}

fn assert_unavailable(status: u16, body: &Value, why: &str) {
    assert_eq!(status, 409, "{why}: {body}");
    assert_eq!(field(body, "Code"), "Rejected.Unavailable", "{why}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_story() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    let pki = Pki::init(&dir.join("pki"));
    let ekm = Ekm::start(dir, &pki).await;
    let proxy = Proxy::configure(dir, &pki, ekm.port);
    let mut proxy_service = proxy.start().await;
    let connector = Connector::configure(
        dir,
        None,
        Some(&ExternalInstance {
            settings_file: proxy.settings_file.clone(),
            ca_file: pki.file("ca.pem"),
            health_interval_secs: HEALTH_INTERVAL_SECS,
            timeout_ms: TIMEOUT_MS,
        }),
    );
    let _connector_service = connector.start().await;
    let kms = connector.client();
    let external = connector
        .external_instance
        .clone()
        .expect("external instance");

    // An operator mints the external key through the proxy CLI.
    let minted = proxy.keys(&["create", "--description", "e2e seeds key"]);
    let external_key_id = minted["externalKeyId"]
        .as_str()
        .unwrap_or_else(|| panic!("no externalKeyId in {minted}"))
        .to_owned();

    kms.ok("ConnectKmsInstance", &[("KmsInstanceId", &external)])
        .await;
    wait_for(
        "the external instance to connect",
        STATE_CHANGE_DEADLINE,
        || async { (instance_status(&kms, &external).await == "Connected").then_some(()) },
    )
    .await;

    let created = kms
        .ok(
            "CreateKey",
            &[
                ("DKMSInstanceId", &external),
                ("ExternalKeyId", &external_key_id),
                ("Description", "e2e HYOK key"),
            ],
        )
        .await;
    let key_id = field(&created, "KeyMetadata.KeyId");
    assert_eq!(field(&created, "KeyMetadata.DKMSInstanceId"), external);
    // The operator's way too: a URL presigned by `kms-connector sign-url`, sent as is.
    let described: Value = reqwest::get(connector.sign_url("DescribeKey", &[("KeyId", &key_id)]))
        .await
        .expect("DescribeKey by a sign-url URL")
        .json()
        .await
        .expect("JSON answer");
    assert_eq!(
        field(&described, "KeyMetadata.ExternalKeyId"),
        external_key_id
    );

    // Encrypt / Decrypt with an EncryptionContext; the largest plaintext KMS takes passes the
    // proxy's max_data_bytes.
    let context = r#"{"app":"seeds"}"#;
    let (status, encrypted) = encrypt(&kms, &key_id, "hello, HYOK", context).await;
    assert_eq!(status, 200, "Encrypt: {encrypted}");
    let blob = field(&encrypted, "CiphertextBlob");
    let decrypted = kms
        .ok(
            "Decrypt",
            &[("CiphertextBlob", &blob), ("EncryptionContext", context)],
        )
        .await;
    assert_eq!(field(&decrypted, "Plaintext"), "hello, HYOK");
    assert_eq!(field(&decrypted, "KeyId"), key_id);
    let (status, wrong) = kms
        .call(
            "Decrypt",
            &[
                ("CiphertextBlob", &blob),
                ("EncryptionContext", r#"{"app":"other"}"#),
            ],
        )
        .await;
    assert_ne!(
        status, 200,
        "Decrypt under another context must fail: {wrong}"
    );
    let large = "x".repeat(6144);
    let (status, body) = encrypt(&kms, &key_id, &large, context).await;
    assert_eq!(status, 200, "Encrypt of 6 KB: {body}");
    let back = kms
        .ok(
            "Decrypt",
            &[
                ("CiphertextBlob", &field(&body, "CiphertextBlob")),
                ("EncryptionContext", context),
            ],
        )
        .await;
    assert_eq!(field(&back, "Plaintext"), large);

    let data_key = kms
        .ok(
            "GenerateDataKey",
            &[("KeyId", &key_id), ("NumberOfBytes", "32")],
        )
        .await;
    let data_key_blob = field(&data_key, "CiphertextBlob");
    let unwrapped = kms
        .ok("Decrypt", &[("CiphertextBlob", &data_key_blob)])
        .await;
    assert_eq!(
        field(&unwrapped, "Plaintext"),
        field(&data_key, "Plaintext")
    );

    // Disabled at the proxy: KMS refuses, naming the external key.
    proxy.keys(&["disable", &external_key_id]);
    let (status, body) = wait_for("Encrypt to be refused", STATE_CHANGE_DEADLINE, || async {
        let (status, body) = encrypt(&kms, &key_id, "while disabled", context).await;
        (status != 200).then_some((status, body))
    })
    .await;
    assert_unavailable(status, &body, "Encrypt with the external key disabled");
    let message = field(&body, "Message");
    assert!(
        message.contains("external key"),
        "the refusal should name the external key: {message}"
    );

    proxy.keys(&["enable", &external_key_id]);
    wait_for("Encrypt to work again", STATE_CHANGE_DEADLINE, || async {
        (encrypt(&kms, &key_id, "enabled again", context).await.0 == 200).then_some(())
    })
    .await;

    // The proxy goes away: the instance leaves Connected within the documented bound.
    let software_key = field(&kms.ok("CreateKey", &[]).await, "KeyMetadata.KeyId");
    proxy_service.terminate(Duration::from_secs(10));
    let stopped = Instant::now();
    let bound = Duration::from_secs(HEALTH_INTERVAL_SECS) + Duration::from_millis(TIMEOUT_MS);
    let status = wait_for("the instance to leave Connected", bound * 5, || async {
        let status = instance_status(&kms, &external).await;
        (status != "Connected").then_some(status)
    })
    .await;
    let detected = stopped.elapsed();
    eprintln!("the instance left Connected {detected:?} after the proxy stopped ({status})");
    // 500 ms over the bound: the 100 ms poll period and the GetKmsInstance round trip.
    assert!(
        detected <= bound + Duration::from_millis(500),
        "the instance left Connected after {detected:?}, bound {bound:?} (now {status})"
    );
    let (status, body) = encrypt(&kms, &key_id, "proxy down", context).await;
    // A proxy that is down is transient: the retryable 503.
    assert_eq!(status, 503, "Encrypt with the proxy down: {body}");
    assert_eq!(
        field(&body, "Code"),
        "ServiceUnavailableTemporary",
        "Encrypt with the proxy down: {body}"
    );
    // Keys of the software instance do not depend on the proxy.
    let (status, body) = encrypt(&kms, &software_key, "software", context).await;
    assert_eq!(status, 200, "software Encrypt with the proxy down: {body}");

    // Back on the same port: Connected again on its own, and old ciphertexts still decrypt.
    let _proxy_service = proxy.start().await;
    wait_for(
        "the instance to reconnect",
        STATE_CHANGE_DEADLINE,
        || async { (instance_status(&kms, &external).await == "Connected").then_some(()) },
    )
    .await;
    let (status, body) = encrypt(&kms, &key_id, "proxy back", context).await;
    assert_eq!(status, 200, "Encrypt after the proxy came back: {body}");
    let decrypted = kms
        .ok(
            "Decrypt",
            &[("CiphertextBlob", &blob), ("EncryptionContext", context)],
        )
        .await;
    assert_eq!(field(&decrypted, "Plaintext"), "hello, HYOK");
}
