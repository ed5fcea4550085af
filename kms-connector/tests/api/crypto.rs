//! The crypto part of the instance suite (`tests/api.rs`): Encrypt / Decrypt over both
//! signatures and every transport, encryption contexts, size limits and bad blobs, data keys,
//! ReEncrypt and DryRun.

use serde_json::json;

use super::harness::{Fixture, Signing, TestApp};
use super::{encrypt, s};

pub async fn crypto(app: &TestApp, fx: &Fixture) {
    let key = fx.key(&app.root()).await;
    let plaintext = "héllo wörld 日本 + / = & % ~";
    let context = r#"{"a":"1","b":"2"}"#;
    for signing in [Signing::Acs3, Signing::RpcPost, Signing::RpcGet] {
        let c = app.root().signing(signing);
        let enc = c
            .ok(
                "Encrypt",
                &[
                    ("KeyId", &key),
                    ("Plaintext", plaintext),
                    ("EncryptionContext", context),
                ],
            )
            .await;
        assert_eq!(enc["KeyId"], json!(key));
        let blob = s(&enc["CiphertextBlob"]).to_owned();
        let raw = schemas::b64::decode(&blob).unwrap();
        assert_eq!(
            &raw[..36],
            s(&enc["KeyVersionId"]).as_bytes(),
            "the blob starts with the version id"
        );
        let dec = c
            .ok(
                "Decrypt",
                &[
                    ("CiphertextBlob", &blob),
                    ("EncryptionContext", r#"{"b":"2","a":"1"}"#),
                ],
            )
            .await;
        assert_eq!(
            (
                dec["Plaintext"].as_str(),
                &dec["KeyId"],
                &dec["KeyVersionId"]
            ),
            (Some(plaintext), &json!(key), &enc["KeyVersionId"])
        );
        for wrong in [Some(r#"{"a":"1"}"#), Some(r#"{"a":"1","b":"3"}"#), None] {
            let mut params = vec![("CiphertextBlob", blob.as_str())];
            params.extend(wrong.map(|w| ("EncryptionContext", w)));
            let reply = c.call("Decrypt", &params).await;
            reply.expect("InvalidParameter", 400);
            assert!(reply.message().contains("CiphertextBlob"), "{}", reply.body);
        }
    }
    let c = app.root();
    let max = "x".repeat(6144);
    let blob = encrypt(&c, &key, &max).await;
    let dec = c.ok("Decrypt", &[("CiphertextBlob", &blob)]).await;
    assert_eq!(dec["Plaintext"].as_str().map(str::len), Some(6144));
    c.call(
        "Encrypt",
        &[("KeyId", &key), ("Plaintext", &"x".repeat(6145))],
    )
    .await
    .expect("InvalidParameter", 400);
    c.call("Encrypt", &[("KeyId", &key)])
        .await
        .expect("MissingParameter", 400);
    c.call(
        "Encrypt",
        &[
            ("KeyId", &key),
            ("Plaintext", "p"),
            ("EncryptionContext", r#"{"a":1}"#),
        ],
    )
    .await
    .expect("InvalidParameter", 400);

    let mut tampered = schemas::b64::decode(&blob).unwrap();
    *tampered.last_mut().unwrap() ^= 1;
    let mut unknown_version = uuid::Uuid::new_v4().to_string().into_bytes();
    unknown_version.extend_from_slice(&schemas::b64::decode(&blob).unwrap()[36..]);
    // The same bytes in a form strict Base64 refuses: no padding, or non-zero trailing bits.
    let padded = blob.clone();
    let unpadded = blob.trim_end_matches('=').to_owned();
    let mut non_canonical = padded.clone().into_bytes();
    let last_data = non_canonical.iter().rposition(|&b| b != b'=').unwrap();
    // 'A' and 'B' differ in the lowest bit only, which padding leaves unused.
    non_canonical[last_data] = match non_canonical[last_data] {
        b'A' => b'B',
        other => other ^ 1,
    };
    let non_canonical = String::from_utf8(non_canonical).unwrap();
    let mut malformed = vec![
        ("not base64!".to_owned(), "InvalidParameter", 400),
        (format!(" {blob}"), "InvalidParameter", 400),
        (
            blob.replace('+', "-").replace('/', "_"),
            "InvalidParameter",
            400,
        ),
    ];
    if unpadded != blob {
        malformed.push((unpadded, "InvalidParameter", 400));
        malformed.push((non_canonical, "InvalidParameter", 400));
    }
    for (bad, code, status) in malformed {
        if bad == blob {
            continue;
        }
        c.call("Decrypt", &[("CiphertextBlob", &bad)])
            .await
            .expect(code, status);
    }
    for (bad, code, status) in [
        (schemas::b64::encode(&tampered), "InvalidParameter", 400),
        (schemas::b64::encode(b"too short"), "InvalidParameter", 400),
        (
            schemas::b64::encode(&unknown_version),
            "Forbidden.KeyNotFound",
            404,
        ),
    ] {
        c.call("Decrypt", &[("CiphertextBlob", &bad)])
            .await
            .expect(code, status);
    }
}

pub async fn data_keys(app: &TestApp, fx: &Fixture) {
    let c = app.root();
    let key = fx.key(&c).await;
    let context = r#"{"purpose":"data key"}"#;
    for (params, bytes) in [
        (vec![], 32),
        (vec![("KeySpec", "AES_256")], 32),
        (vec![("KeySpec", "AES_128")], 16),
        (vec![("NumberOfBytes", "1024")], 1024),
        (vec![("NumberOfBytes", "1")], 1),
        (vec![("KeySpec", "AES_128"), ("NumberOfBytes", "7")], 7),
    ] {
        let mut all = vec![("KeyId", key.as_str()), ("EncryptionContext", context)];
        all.extend(params.iter().copied());
        let generated = c.ok("GenerateDataKey", &all).await;
        let plaintext = s(&generated["Plaintext"]).to_owned();
        assert_eq!(
            schemas::b64::decode(&plaintext).unwrap().len(),
            bytes,
            "{params:?}"
        );
        let dec = c
            .ok(
                "Decrypt",
                &[
                    ("CiphertextBlob", s(&generated["CiphertextBlob"])),
                    ("EncryptionContext", context),
                ],
            )
            .await;
        assert_eq!(
            dec["Plaintext"],
            json!(plaintext),
            "Decrypt gives back the Base64 data key"
        );
        let without = c.ok("GenerateDataKeyWithoutPlaintext", &all).await;
        assert!(without.get("Plaintext").is_none(), "{without}");
        let dec = c
            .ok(
                "Decrypt",
                &[
                    ("CiphertextBlob", s(&without["CiphertextBlob"])),
                    ("EncryptionContext", context),
                ],
            )
            .await;
        assert_eq!(
            schemas::b64::decode(s(&dec["Plaintext"])).unwrap().len(),
            bytes
        );
    }
    let a = c.ok("GenerateDataKey", &[("KeyId", &key)]).await;
    let b = c.ok("GenerateDataKey", &[("KeyId", &key)]).await;
    assert_ne!(a["Plaintext"], b["Plaintext"]);
    for bad in [
        ("NumberOfBytes", "0"),
        ("NumberOfBytes", "1025"),
        ("NumberOfBytes", "x"),
        ("KeySpec", "AES_512"),
    ] {
        for action in ["GenerateDataKey", "GenerateDataKeyWithoutPlaintext"] {
            c.call(action, &[("KeyId", &key), bad])
                .await
                .expect("InvalidParameter", 400);
        }
    }
}

pub async fn re_encrypt(app: &TestApp, fx: &Fixture) {
    let c = app.root();
    let (a, b) = (fx.key(&c).await, fx.key(&c).await);
    let (ctx_a, ctx_b) = (r#"{"from":"a"}"#, r#"{"to":"b"}"#);
    let enc = c
        .ok(
            "Encrypt",
            &[
                ("KeyId", &a),
                ("Plaintext", "move me"),
                ("EncryptionContext", ctx_a),
            ],
        )
        .await;
    let blob = s(&enc["CiphertextBlob"]).to_owned();
    let moved = c
        .ok(
            "ReEncrypt",
            &[
                ("CiphertextBlob", &blob),
                ("DestinationKeyId", &b),
                ("SourceEncryptionContext", ctx_a),
                ("DestinationEncryptionContext", ctx_b),
            ],
        )
        .await;
    assert_eq!(moved["KeyId"], json!(b));
    let dec = c
        .ok(
            "Decrypt",
            &[
                ("CiphertextBlob", s(&moved["CiphertextBlob"])),
                ("EncryptionContext", ctx_b),
            ],
        )
        .await;
    assert_eq!(
        (dec["Plaintext"].as_str(), &dec["KeyId"]),
        (Some("move me"), &json!(b))
    );
    c.call(
        "ReEncrypt",
        &[
            ("CiphertextBlob", &blob),
            ("DestinationKeyId", &b),
            ("SourceEncryptionContext", ctx_b),
        ],
    )
    .await
    .expect("InvalidParameter", 400);
    c.call("ReEncrypt", &[("CiphertextBlob", &blob)])
        .await
        .expect("MissingParameter", 400);
    c.ok("DisableKey", &[("KeyId", &b)]).await;
    c.call(
        "ReEncrypt",
        &[
            ("CiphertextBlob", &blob),
            ("DestinationKeyId", &b),
            ("SourceEncryptionContext", ctx_a),
        ],
    )
    .await
    .expect("Rejected.Disabled", 409);
    c.ok("EnableKey", &[("KeyId", &b)]).await;
    c.ok("DisableKey", &[("KeyId", &a)]).await;
    c.call(
        "ReEncrypt",
        &[
            ("CiphertextBlob", &blob),
            ("DestinationKeyId", &b),
            ("SourceEncryptionContext", ctx_a),
        ],
    )
    .await
    .expect("Rejected.Disabled", 409);
}

pub async fn dry_run(app: &TestApp, fx: &Fixture) {
    let c = app.root();
    let key = fx.key(&c).await;
    let blob = encrypt(&c, &key, "dry").await;
    let calls: [(&str, Vec<(&str, &str)>); 5] = [
        ("Encrypt", vec![("KeyId", &key), ("Plaintext", "p")]),
        ("Decrypt", vec![("CiphertextBlob", &blob)]),
        ("GenerateDataKey", vec![("KeyId", &key)]),
        ("GenerateDataKeyWithoutPlaintext", vec![("KeyId", &key)]),
        (
            "ReEncrypt",
            vec![("CiphertextBlob", &blob), ("DestinationKeyId", &key)],
        ),
    ];
    for (action, params) in &calls {
        let mut dry = params.clone();
        dry.push(("DryRun", "true"));
        c.call(action, &dry)
            .await
            .expect("DryRunOperationError", 400);
        let mut wet = params.clone();
        wet.push(("DryRun", "false"));
        c.ok(action, &wet).await;
        let mut bad = params.clone();
        bad.push(("DryRun", "maybe"));
        c.call(action, &bad).await.expect("InvalidParameter", 400);
    }
    c.ok("DisableKey", &[("KeyId", &key)]).await;
    for (action, params) in &calls {
        let mut dry = params.clone();
        dry.push(("DryRun", "true"));
        c.call(action, &dry).await.expect("Rejected.Disabled", 409);
    }
}

/// EncryptionContext binding: contexts whose old `k=v&…` text collides are different contexts,
/// duplicate keys are refused, and a blob never decrypts under another context.
pub async fn context_binding(app: &TestApp, fx: &Fixture) {
    let c = app.root();
    let key = fx.key(&c).await;
    for (made_under, tried_under) in [
        (r#"{"a":"b&c=d"}"#, r#"{"a":"b","c":"d"}"#),
        (r#"{"a":"b","c":"d"}"#, r#"{"a":"b&c=d"}"#),
        (r#"{"a=b":"c"}"#, r#"{"a":"b=c"}"#),
        (r#"{"a":"1"}"#, r#"{}"#),
    ] {
        let enc = c
            .ok(
                "Encrypt",
                &[
                    ("KeyId", &key),
                    ("Plaintext", "bound"),
                    ("EncryptionContext", made_under),
                ],
            )
            .await;
        let blob = s(&enc["CiphertextBlob"]).to_owned();
        c.call(
            "Decrypt",
            &[
                ("CiphertextBlob", &blob),
                ("EncryptionContext", tried_under),
            ],
        )
        .await
        .expect("InvalidParameter", 400);
        let dec = c
            .ok(
                "Decrypt",
                &[("CiphertextBlob", &blob), ("EncryptionContext", made_under)],
            )
            .await;
        assert_eq!(dec["Plaintext"], "bound");
    }
    let duplicate = c
        .call(
            "Encrypt",
            &[
                ("KeyId", &key),
                ("Plaintext", "x"),
                ("EncryptionContext", r#"{"a":"1","a":"2"}"#),
            ],
        )
        .await;
    duplicate.expect("InvalidParameter", 400);
    assert!(
        duplicate.message().contains("more than once"),
        "{}",
        duplicate.body
    );
}
