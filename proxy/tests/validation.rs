//! Input validation, size limits and routing (spec §1.1, §1.2, §1.4, §1.5, §4.1): each refusal
//! with its status and error name, and the ones decided before authentication checked with
//! unsigned requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::client::{
    Encrypted, decrypt_body, encrypt_body, health_body, metadata_body, request_metadata,
};
use common::raw::{Conn, TlsOptions, client_config};
use common::{HOST, Proxy, Setup, Store};
use ekm::KeyManager as _;
use reqwest::Method;
use schemas::b64;
use serde_json::{Value, json};

/// Applies `edit` to a copy of `body`.
fn edited(body: &Value, edit: impl FnOnce(&mut Value)) -> Value {
    let mut body = body.clone();
    edit(&mut body);
    body
}

#[actix_web::test]
async fn encrypt_field_errors_are_validation_exceptions() {
    let proxy = Proxy::default().await;
    let client = proxy.client("");
    let key = proxy.key("validate-enc").await;
    // [0xfb, 0xff] is "+/8=" in standard Base64 and "-_8=" in the URL-safe alphabet.
    let good = encrypt_body(&[0xfb, 0xff], Some(b"aad"), false);
    client.encrypt(&key, &good).await.ok();
    let set = |field: &'static str, value: Value| move |b: &mut Value| b[field] = value;
    let meta = |field: &'static str| {
        move |b: &mut Value| {
            b["requestMetadata"].as_object_mut().unwrap().remove(field);
        }
    };
    let cases: Vec<(&str, Value)> = vec![
        (
            "URL-safe Base64",
            edited(&good, set("plaintext", json!("-_8="))),
        ),
        (
            "missing padding",
            edited(&good, set("plaintext", json!("+/8"))),
        ),
        (
            "non-canonical trailing bits",
            edited(&good, set("plaintext", json!("+/9="))),
        ),
        (
            "inner whitespace",
            edited(&good, set("plaintext", json!("+/8= "))),
        ),
        (
            "line break",
            edited(&good, set("plaintext", json!("YWJj\nZGVm"))),
        ),
        (
            "empty plaintext",
            edited(&good, set("plaintext", json!(""))),
        ),
        (
            "AAD not Base64",
            edited(&good, set("additionalAuthenticatedData", json!("a b="))),
        ),
        (
            "AES_CBC",
            edited(&good, set("encryptionAlgorithm", json!("AES_CBC"))),
        ),
        (
            "lower-case algorithm",
            edited(&good, set("encryptionAlgorithm", json!("aes_gcm"))),
        ),
        (
            "CDIV algorithm MD5",
            edited(
                &good,
                set("ciphertextDataIntegrityValueAlgorithm", json!("MD5")),
            ),
        ),
        ("no awsPrincipalArn", edited(&good, meta("awsPrincipalArn"))),
        ("no kmsKeyArn", edited(&good, meta("kmsKeyArn"))),
        ("no kmsOperation", edited(&good, meta("kmsOperation"))),
        (
            "ARN over 2048 characters",
            edited(&good, |b| {
                b["requestMetadata"]["kmsKeyArn"] = json!("a".repeat(2049))
            }),
        ),
        (
            "no plaintext",
            edited(&good, |b| {
                drop(b.as_object_mut().unwrap().remove("plaintext"))
            }),
        ),
        (
            "plaintext not a string",
            edited(&good, set("plaintext", json!(42))),
        ),
    ];
    for (what, body) in &cases {
        let reply = client.encrypt(&key, body).await;
        assert_eq!(
            (reply.status, reply.error_name().as_deref()),
            (400, Some("ValidationException")),
            "{what}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.error(400, "ValidationException");
    }
    // ARNs up to 2048 characters are legal.
    let long = edited(&good, |b| {
        b["requestMetadata"]["awsPrincipalArn"] = json!(format!("arn:{}", "p".repeat(2044)));
    });
    client.encrypt(&key, &long).await.ok();
    assert_eq!(
        proxy.backend.crypto_calls(),
        2,
        "refused requests never reach the HSM"
    );
}

#[actix_web::test]
async fn decrypt_field_errors_are_validation_exceptions() {
    let proxy = Proxy::default().await;
    let client = proxy.client("");
    let key = proxy.key("validate-dec").await;
    let e = client.encrypt_ok(&key, b"data", None).await;
    let good = decrypt_body(&e, None);
    let set = |field: &'static str, value: Value| move |b: &mut Value| b[field] = value;
    let cases = vec![
        (
            "IV of 13 bytes",
            edited(
                &good,
                set("initializationVector", json!(b64::encode([7u8; 13]))),
            ),
        ),
        (
            "IV of 8 bytes",
            edited(
                &good,
                set("initializationVector", json!(b64::encode([7u8; 8]))),
            ),
        ),
        (
            "tag of 12 bytes",
            edited(
                &good,
                set("authenticationTag", json!(b64::encode([7u8; 12]))),
            ),
        ),
        (
            "tag of 17 bytes",
            edited(
                &good,
                set("authenticationTag", json!(b64::encode([7u8; 17]))),
            ),
        ),
        (
            "ciphertextMetadata of 21 bytes",
            edited(
                &good,
                set("ciphertextMetadata", json!(b64::encode([7u8; 21]))),
            ),
        ),
        (
            "ciphertext URL-safe",
            edited(&good, set("ciphertext", json!("-_8="))),
        ),
        (
            "AES_CBC",
            edited(&good, set("encryptionAlgorithm", json!("AES_CBC"))),
        ),
        (
            "no kmsKeyArn",
            edited(&good, |b| {
                b["requestMetadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("kmsKeyArn");
            }),
        ),
        (
            "no awsPrincipalArn",
            edited(&good, |b| {
                b["requestMetadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("awsPrincipalArn");
            }),
        ),
        (
            "no IV",
            edited(&good, |b| {
                drop(b.as_object_mut().unwrap().remove("initializationVector"))
            }),
        ),
    ];
    for (what, body) in &cases {
        let reply = client.decrypt(&key, body).await;
        assert_eq!(
            reply.error_name().as_deref(),
            Some("ValidationException"),
            "{what}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.error(400, "ValidationException");
    }
    assert_eq!(client.decrypt_ok(&key, &e, None).await, b"data");
}

#[actix_web::test]
async fn sizes_over_the_limits_are_unsupported_operations() {
    let proxy = Proxy::default().await;
    let client = proxy.client("");
    let key = proxy.key("limits").await;
    client
        .encrypt(&key, &encrypt_body(&[1u8; 4301], None, false))
        .await
        .error(501, "UnsupportedOperationException");
    client
        .encrypt(&key, &encrypt_body(b"x", Some(&[1u8; 8193]), false))
        .await
        .error(501, "UnsupportedOperationException");
    let oversized = Encrypted {
        ciphertext: vec![1; 4301],
        iv: vec![0; 12],
        tag: vec![0; 16],
        ciphertext_metadata: None,
        cdiv: None,
    };
    client
        .decrypt(&key, &decrypt_body(&oversized, None))
        .await
        .error(501, "UnsupportedOperationException");
    assert_eq!(proxy.backend.crypto_calls(), 0);
}

/// A declared body over the cap is refused before authentication (spec §4.1); a body without
/// `Content-Length` is read only after the checks that need no body, so an unsigned one is
/// refused unread, and a signed one over the cap while reading.
#[actix_web::test]
async fn bodies_over_the_cap_are_refused_before_authentication() {
    let proxy = Proxy::default().await;
    let key = proxy.key("cap").await;
    let huge = encrypt_body(&vec![7u8; 48 * 1024], None, false);
    for client in [proxy.unsigned(""), proxy.client("")] {
        let reply = client.encrypt(&key, &huge).await;
        reply.error(413, "ValidationException");
    }
    // Without Content-Length (chunked), the cap applies while reading.
    let chunked = |headers: &[(String, String)]| {
        let mut request = format!(
            "POST /kms/xks/v1/keys/{key}/encrypt HTTP/1.1\r\nHost: {HOST}:{}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
            proxy.port
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        let mut request = format!("{request}\r\n").into_bytes();
        for _ in 0..40 {
            request.extend_from_slice(format!("400\r\n{}\r\n", "A".repeat(0x400)).as_bytes());
        }
        request.extend_from_slice(b"0\r\n\r\n");
        request
    };
    let target = format!("/kms/xks/v1/keys/{key}/encrypt");
    let signed = proxy
        .client("")
        .sign("POST", &target, "A".repeat(40 * 0x400).as_bytes());
    for (headers, status) in [(Vec::new(), 401), (signed, 413)] {
        let mut conn = Conn::connect(
            proxy.port,
            client_config(proxy.ca.cert_pem(), None, &TlsOptions::default()),
        )
        .await
        .unwrap();
        let response = conn.exchange(&chunked(&headers)).await.unwrap();
        assert_eq!(response.status, status, "{headers:?}");
    }
    assert_eq!(proxy.backend.crypto_calls(), 0);
}

#[actix_web::test]
async fn unknown_fields_operations_and_empty_request_ids_are_accepted() {
    let proxy = Proxy::default().await;
    let client = proxy.client("");
    let key = proxy.key("lenient").await;
    let extend = |body: &mut Value| {
        body["someFutureField"] = json!({"nested": [1, 2, 3]});
        body["requestMetadata"]["sourceIdentity"] = json!("future");
        body["requestMetadata"]["kmsOperation"] = json!("BulkEncrypt");
        body["requestMetadata"]["kmsRequestId"] = json!("");
        body["requestMetadata"]["kmsViaService"] = json!("ebs");
        body["requestMetadata"]["awsSourceVpc"] = json!("vpc-0123");
        body["requestMetadata"]["awsSourceVpce"] = json!("vpce-0123");
    };
    let health = edited(&health_body("KmsHealthCheck"), extend);
    client.post("/health", &health).await.ok();
    let metadata = edited(&metadata_body(), extend);
    client
        .post(&format!("/keys/{key}/metadata"), &metadata)
        .await
        .ok();
    let enc = edited(&encrypt_body(b"lenient", None, false), extend);
    let e = Encrypted::from_json(&client.encrypt(&key, &enc).await.ok());
    let dec = edited(&decrypt_body(&e, None), extend);
    let plaintext = client.decrypt(&key, &dec).await.ok();
    assert_eq!(plaintext["plaintext"], b64::encode(b"lenient"));
    // Principals may be service principals or the literal "AWS Internal".
    for principal in ["ec2.amazonaws.com", "AWS Internal"] {
        let mut body = encrypt_body(b"x", None, false);
        body["requestMetadata"] = request_metadata("GenerateDataKey", principal);
        client.encrypt(&key, &body).await.ok();
    }
}

#[actix_web::test]
async fn malformed_json_is_a_validation_exception_that_does_not_echo_the_body() {
    let proxy = Proxy::default().await;
    let client = proxy.client("");
    let key = proxy.key("json").await;
    let secret = b64::encode(b"top secret plaintext bytes");
    let target = client.path(&format!("/keys/{key}/encrypt"));
    let bodies = [
        format!(
            r#"{{"requestMetadata":{{}},"plaintext":"{secret}","encryptionAlgorithm":AES_GCM}}"#
        ),
        format!(r#"{{"requestMetadata":{{}},"plaintext":{{"x":"{secret}"}}}}"#),
        format!(r#"{{"plaintext":"{secret}""#),
        String::new(),
        "[]".to_owned(),
    ];
    for body in bodies {
        let reply = client
            .send(Method::POST, &target, body.clone().into_bytes())
            .await;
        let message = reply.error(400, "ValidationException");
        assert!(
            !message.contains(&secret),
            "{body}: message echoes data: {message}"
        );
        assert!(!message.contains("secret"), "{message}");
    }
}

#[actix_web::test]
async fn get_and_head_on_api_routes_are_405() {
    let proxy = Proxy::default().await;
    let key = proxy.key("methods").await;
    for client in [proxy.client("/tenant-a"), proxy.unsigned("/tenant-a")] {
        for api in [
            "/health".to_owned(),
            format!("/keys/{key}/metadata"),
            format!("/keys/{key}/encrypt"),
            format!("/keys/{key}/decrypt"),
        ] {
            for method in [Method::GET, Method::HEAD] {
                let reply = client
                    .send(method.clone(), &client.path(&api), Vec::new())
                    .await;
                assert_eq!(reply.status, 405, "{method} {api}");
            }
        }
    }
}

#[actix_web::test]
async fn unknown_paths_are_invalid_uri_path_before_authentication() {
    let proxy = Proxy::default().await;
    let key = proxy.key("paths").await;
    let body = serde_json::to_vec(&metadata_body()).unwrap();
    let targets = [
        "/".to_owned(),
        "/kms/xks/v1".to_owned(),
        "/kms/xks/v1/healthz".to_owned(),
        "/kms/xks/v2/health".to_owned(),
        format!("/kms/xks/v1/keys/{key}/sign"),
        format!("/kms/xks/v1/keys/{key}"),
        format!("/kms/xks/v1/keys/{key}/metadata/extra"),
        // A prefix this proxy does not serve, signed correctly for that path.
        "/tenant-z/kms/xks/v1/health".to_owned(),
        format!("/tenant-z/kms/xks/v1/keys/{key}/encrypt"),
        format!("/tenant-a/sub/kms/xks/v1/keys/{key}/metadata"),
    ];
    for client in [proxy.client(""), proxy.unsigned("")] {
        for target in &targets {
            let reply = client.send(Method::POST, target, body.clone()).await;
            assert_eq!(
                reply.error_name().as_deref(),
                Some("InvalidUriPathException"),
                "{target}: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
            reply.error(404, "InvalidUriPathException");
        }
    }
}

#[actix_web::test]
async fn key_ids_are_checked_and_unknown_keys_are_not_found() {
    let mut restricted = Store::new("/restricted");
    let allowed = common::unique_key_id("allowed");
    restricted.keys = vec![allowed.as_str().to_owned()];
    let proxy = Proxy::start(Setup::with_stores(vec![Store::new(""), restricted])).await;
    let client = proxy.client("");
    let key = proxy.key("exists").await;
    client
        .metadata("no-such-key")
        .await
        .error(404, "KeyNotFoundException");
    client
        .encrypt("no-such-key", &encrypt_body(b"x", None, false))
        .await
        .error(404, "KeyNotFoundException");
    for bad in ["bad$id", "bad~id", &"k".repeat(129)] {
        client.metadata(bad).await.error(400, "ValidationException");
    }
    client
        .metadata(&"k".repeat(128))
        .await
        .error(404, "KeyNotFoundException");
    client
        .metadata("a.B-9_z")
        .await
        .error(404, "KeyNotFoundException");
    // The restricted store sees only its allow-listed key, and cannot tell other keys exist.
    let restricted = proxy.client("/restricted");
    restricted
        .metadata(&key)
        .await
        .error(404, "KeyNotFoundException");
    restricted
        .encrypt(&key, &encrypt_body(b"x", None, false))
        .await
        .error(404, "KeyNotFoundException");
    proxy
        .backend
        .create_key(
            &common::ctx(),
            ekm::CreateKey {
                id: Some(allowed.clone()),
                usage: ekm::KeyUsage::BOTH,
                description: None,
            },
        )
        .await
        .unwrap();
    restricted.metadata(allowed.as_str()).await.ok();
    client.metadata(&key).await.ok();
}
