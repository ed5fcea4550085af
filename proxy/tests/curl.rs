//! The README's troubleshooting recipe: curl's own SigV4 signer (`--aws-sigv4`, which signs
//! `content-type;host;x-amz-date`) against the real proxy over real TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{HOST, Proxy, REGION};
use serde_json::{Value, json};

fn curl(proxy: &Proxy, ca: &std::path::Path, path: &str, body: &Value) -> Value {
    let store = proxy.setup.store("");
    let credential = &store.credentials[0];
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--fail-with-body", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{HOST}:{}:127.0.0.1", proxy.port)])
        .args(["--aws-sigv4", &format!("aws:amz:{REGION}:kms-xks-proxy")])
        .args([
            "--user",
            &format!(
                "{}:{}",
                credential.access_key_id,
                credential.secret.expose()
            ),
        ])
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
        ])
        .arg(format!("https://{HOST}:{}/kms/xks/v1{path}", proxy.port))
        .output()
        .expect("curl is installed (scripts/deps.sh)");
    assert!(
        output.status.success(),
        "curl {path} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[actix_web::test]
async fn curl_aws_sigv4_works_as_the_readme_shows() {
    let proxy = Proxy::default().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, proxy.ca.cert_pem()).unwrap();
    let key = proxy.key("curl").await;

    let health = curl(
        &proxy,
        &ca,
        "/health",
        &json!({"requestMetadata": {"kmsRequestId": "1", "kmsOperation": "KmsHealthCheck"}}),
    );
    assert_eq!(health["ekmFleetDetails"][0]["healthStatus"], "ACTIVE");

    let meta = json!({
        "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
        "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/curl",
        "kmsOperation": "Encrypt",
        "kmsRequestId": "curl-1",
    });
    let metadata = curl(
        &proxy,
        &ca,
        &format!("/keys/{key}/metadata"),
        &json!({"requestMetadata": meta}),
    );
    assert_eq!(
        metadata,
        json!({"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": "ENABLED"})
    );

    let plaintext = schemas::b64::encode(b"hello from curl");
    let encrypted = curl(
        &proxy,
        &ca,
        &format!("/keys/{key}/encrypt"),
        &json!({"requestMetadata": meta, "plaintext": plaintext, "encryptionAlgorithm": "AES_GCM"}),
    );
    let decrypted = curl(
        &proxy,
        &ca,
        &format!("/keys/{key}/decrypt"),
        &json!({
            "requestMetadata": meta,
            "ciphertext": encrypted["ciphertext"],
            "ciphertextMetadata": encrypted["ciphertextMetadata"],
            "initializationVector": encrypted["initializationVector"],
            "authenticationTag": encrypted["authenticationTag"],
            "encryptionAlgorithm": "AES_GCM",
        }),
    );
    assert_eq!(decrypted["plaintext"], plaintext);
}
