//! Asymmetric software keys over the OpenAPI (issue 12): CreateKey of RSA and EC specs,
//! AsymmetricSign / AsymmetricVerify / AsymmetricEncrypt / AsymmetricDecrypt / GetPublicKey,
//! interop with Debian's `openssl` CLI both ways it can go without importing keys (our
//! signatures verify there with GetPublicKey's PEM; its OAEP ciphertexts decrypt here), the
//! refusals of the spec, authorization and audit, and no private key in the database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/api.rs"]
mod harness;

use std::path::Path;
use std::process::Command;

use harness::{Client, TestApp, Who};
use serde_json::Value;
use sha2::Digest as _;

fn b64(bytes: &[u8]) -> String {
    schemas::b64::encode(bytes)
}

fn unb64(text: &Value) -> Vec<u8> {
    schemas::b64::decode(text.as_str().unwrap()).unwrap()
}

/// A new key of `spec` (and `usage`, when given): its id and its one version.
async fn asymmetric_key(c: &Client, spec: &str, usage: Option<&str>) -> (String, String) {
    let mut params = vec![("KeySpec", spec)];
    if let Some(usage) = usage {
        params.push(("KeyUsage", usage));
    }
    let meta = c.ok("CreateKey", &params).await["KeyMetadata"].clone();
    assert_eq!(meta["KeySpec"], spec);
    assert_eq!(meta["ProtectionLevel"], "SOFTWARE");
    assert!(
        meta.get("PrimaryKeyVersion").is_none(),
        "asymmetric keys show no primary version: {meta}"
    );
    let key = meta["KeyId"].as_str().unwrap().to_owned();
    let versions = c.ok("ListKeyVersions", &[("KeyId", &key)]).await;
    assert_eq!(versions["TotalCount"], 1, "{versions}");
    let version = versions["KeyVersions"]["KeyVersion"][0]["KeyVersionId"]
        .as_str()
        .unwrap()
        .to_owned();
    (key, version)
}

async fn public_pem(c: &Client, key: &str, version: &str) -> String {
    let reply = c
        .ok("GetPublicKey", &[("KeyId", key), ("KeyVersionId", version)])
        .await;
    assert_eq!(reply["KeyId"], key);
    assert_eq!(reply["KeyVersionId"], version);
    let pem = reply["PublicKey"].as_str().unwrap().to_owned();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
    assert!(
        pem.trim_end().ends_with("-----END PUBLIC KEY-----"),
        "{pem}"
    );
    pem
}

fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("Debian's openssl CLI")
}

const PSS: &[&str] = &[
    "-pkeyopt",
    "rsa_padding_mode:pss",
    "-pkeyopt",
    "rsa_pss_saltlen:32",
    "-pkeyopt",
    "rsa_mgf1_md:sha256",
];
const PKCS1: &[&str] = &["-pkeyopt", "rsa_padding_mode:pkcs1"];

/// `openssl pkeyutl -verify` of `signature` over `digest` with the PEM public key.
fn openssl_verifies(
    dir: &Path,
    pem: &str,
    digest: &[u8],
    signature: &[u8],
    options: &[&str],
) -> bool {
    std::fs::write(dir.join("pub.pem"), pem).unwrap();
    std::fs::write(dir.join("digest.bin"), digest).unwrap();
    std::fs::write(dir.join("sig.bin"), signature).unwrap();
    let mut args = vec![
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        "pub.pem",
        "-in",
        "digest.bin",
        "-sigfile",
        "sig.bin",
        "-pkeyopt",
        "digest:sha256",
    ];
    args.extend_from_slice(options);
    let out = openssl(&args, dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    out.status.success() && stdout.contains("Signature Verified Successfully")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_with_openssl() {
    let app = TestApp::start().await;
    let c = app.root();
    let dir = tempfile::tempdir().unwrap();
    let digest = sha2::Sha256::digest(b"a message signed by the connector").to_vec();
    let mut other = digest.clone();
    other[0] ^= 1;
    let cases: [(&str, &str, &[&str]); 6] = [
        ("RSA_2048", "RSA_PSS_SHA_256", PSS),
        ("RSA_2048", "RSA_PKCS1_SHA_256", PKCS1),
        ("RSA_3072", "RSA_PSS_SHA_256", PSS),
        ("RSA_4096", "RSA_PKCS1_SHA_256", PKCS1),
        ("EC_P256", "ECDSA_SHA_256", &[]),
        ("EC_P256K", "ECDSA_SHA_256", &[]),
    ];
    for (spec, algorithm, options) in cases {
        // The default usage of every asymmetric spec is SIGN/VERIFY.
        let (key, version) = asymmetric_key(&c, spec, None).await;
        let described = c.ok("DescribeKey", &[("KeyId", &key)]).await;
        assert_eq!(described["KeyMetadata"]["KeyUsage"], "SIGN/VERIFY");
        let pem = public_pem(&c, &key, &version).await;
        let sign = |digest: &[u8]| {
            let digest = b64(digest);
            let (c, key, version) = (c.clone(), key.clone(), version.clone());
            async move {
                c.ok(
                    "AsymmetricSign",
                    &[
                        ("KeyId", &key),
                        ("KeyVersionId", &version),
                        ("Algorithm", algorithm),
                        ("Digest", &digest),
                    ],
                )
                .await
            }
        };
        let signed = sign(&digest).await;
        assert_eq!(signed["KeyId"], key.as_str());
        assert_eq!(signed["KeyVersionId"], version.as_str());
        let signature = unb64(&signed["Value"]);
        assert!(
            openssl_verifies(dir.path(), &pem, &digest, &signature, options),
            "{spec} {algorithm}: openssl does not verify"
        );
        // Negative controls: another digest, a changed signature.
        assert!(!openssl_verifies(
            dir.path(),
            &pem,
            &other,
            &signature,
            options
        ));
        let mut bad = signature.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(!openssl_verifies(dir.path(), &pem, &digest, &bad, options));

        let verify = |digest: &[u8], signature: &[u8]| {
            let (digest, signature) = (b64(digest), b64(signature));
            let (c, key, version) = (c.clone(), key.clone(), version.clone());
            async move {
                c.ok(
                    "AsymmetricVerify",
                    &[
                        ("KeyId", &key),
                        ("KeyVersionId", &version),
                        ("Algorithm", algorithm),
                        ("Digest", &digest),
                        ("Value", &signature),
                    ],
                )
                .await["Value"]
                    .clone()
            }
        };
        assert_eq!(verify(&digest, &signature).await, Value::Bool(true));
        assert_eq!(verify(&other, &signature).await, Value::Bool(false));
        assert_eq!(verify(&digest, &bad).await, Value::Bool(false));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_oaep_ciphertexts_decrypt() {
    let app = TestApp::start().await;
    let c = app.root();
    let dir = tempfile::tempdir().unwrap();
    let (key, version) = asymmetric_key(&c, "RSA_2048", Some("ENCRYPT/DECRYPT")).await;
    let pem = public_pem(&c, &key, &version).await;
    std::fs::write(dir.path().join("pub.pem"), &pem).unwrap();
    let secret = b"thirty-two bytes of a data key!!";
    std::fs::write(dir.path().join("plain.bin"), secret).unwrap();
    for (algorithm, md) in [
        ("RSAES_OAEP_SHA_256", "sha256"),
        ("RSAES_OAEP_SHA_1", "sha1"),
    ] {
        let oaep_md = format!("rsa_oaep_md:{md}");
        let mgf1_md = format!("rsa_mgf1_md:{md}");
        let out = openssl(
            &[
                "pkeyutl",
                "-encrypt",
                "-pubin",
                "-inkey",
                "pub.pem",
                "-in",
                "plain.bin",
                "-out",
                "cipher.bin",
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                &oaep_md,
                "-pkeyopt",
                &mgf1_md,
            ],
            dir.path(),
        );
        assert!(out.status.success(), "{out:?}");
        let ciphertext = std::fs::read(dir.path().join("cipher.bin")).unwrap();
        assert_eq!(ciphertext.len(), 256);
        let decrypt = |algorithm: &'static str, ciphertext: &[u8]| {
            let ciphertext = b64(ciphertext);
            let (c, key, version) = (c.clone(), key.clone(), version.clone());
            async move {
                c.call(
                    "AsymmetricDecrypt",
                    &[
                        ("KeyId", &key),
                        ("KeyVersionId", &version),
                        ("Algorithm", algorithm),
                        ("CiphertextBlob", &ciphertext),
                    ],
                )
                .await
            }
        };
        let reply = decrypt(algorithm, &ciphertext).await.ok();
        assert_eq!(unb64(&reply["Plaintext"]), secret);
        assert_eq!(reply["KeyVersionId"], version.as_str());
        // The other OAEP hash, or a changed byte, does not decrypt.
        let other = if algorithm == "RSAES_OAEP_SHA_1" {
            "RSAES_OAEP_SHA_256"
        } else {
            "RSAES_OAEP_SHA_1"
        };
        decrypt(other, &ciphertext)
            .await
            .expect("InvalidParameter", 400);
        let mut bad = ciphertext.clone();
        bad[100] ^= 1;
        decrypt(algorithm, &bad)
            .await
            .expect("InvalidParameter", 400);

        // Ours to ours: AsymmetricEncrypt's ciphertext is raw RSA output.
        let encrypted = c
            .ok(
                "AsymmetricEncrypt",
                &[
                    ("KeyId", &key),
                    ("KeyVersionId", &version),
                    ("Algorithm", algorithm),
                    ("Plaintext", &b64(secret)),
                ],
            )
            .await;
        let ours = unb64(&encrypted["CiphertextBlob"]);
        assert_eq!(ours.len(), 256);
        let back = decrypt(algorithm, &ours).await.ok();
        assert_eq!(unb64(&back["Plaintext"]), secret);
    }
    // Size limits of RSA_2048 (spec §2.5): 190 bytes with SHA-256, 214 with SHA-1.
    for (algorithm, max) in [("RSAES_OAEP_SHA_256", 190), ("RSAES_OAEP_SHA_1", 214)] {
        for (len, ok) in [(max, true), (max + 1, false)] {
            let reply = c
                .call(
                    "AsymmetricEncrypt",
                    &[
                        ("KeyId", &key),
                        ("KeyVersionId", &version),
                        ("Algorithm", algorithm),
                        ("Plaintext", &b64(&vec![7u8; len])),
                    ],
                )
                .await;
            if ok {
                reply.ok();
            } else {
                reply.expect("InvalidParameter", 400);
            }
        }
    }
}

fn sign_params<'a>(
    key: &'a str,
    version: &'a str,
    algorithm: &'a str,
    digest: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("KeyId", key),
        ("KeyVersionId", version),
        ("Algorithm", algorithm),
        ("Digest", digest),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_the_spec() {
    let app = TestApp::start().await;
    let c = app.root();
    let digest = b64(&[0x11; 32]);
    // CreateKey: EC keys only sign; asymmetric keys do not rotate.
    c.call(
        "CreateKey",
        &[("KeySpec", "EC_P256"), ("KeyUsage", "ENCRYPT/DECRYPT")],
    )
    .await
    .expect("UnsupportedOperation", 400);
    c.call(
        "CreateKey",
        &[
            ("KeySpec", "RSA_2048"),
            ("EnableAutomaticRotation", "true"),
            ("RotationInterval", "30d"),
        ],
    )
    .await
    .expect("Rejected.UnsupportedOperation", 400);
    c.call("CreateKey", &[("KeySpec", "EC_SM2")])
        .await
        .expect("UnsupportedOperation", 400);

    let (rsa, rsa_v) = asymmetric_key(&c, "RSA_2048", None).await;
    let (rsa_enc, rsa_enc_v) = asymmetric_key(&c, "RSA_2048", Some("ENCRYPT/DECRYPT")).await;
    let (ec, ec_v) = asymmetric_key(&c, "EC_P256", Some("SIGN/VERIFY")).await;
    let aes = c.ok("CreateKey", &[]).await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let aes_v = c.ok("ListKeyVersions", &[("KeyId", &aes)]).await["KeyVersions"]["KeyVersion"]
        [0]["KeyVersionId"]
        .as_str()
        .unwrap()
        .to_owned();

    // Versions: one per asymmetric key, none added.
    c.call("CreateKeyVersion", &[("KeyId", &rsa)])
        .await
        .expect("Rejected.UnsupportedOperation", 400);
    c.call(
        "UpdateRotationPolicy",
        &[
            ("KeyId", &ec),
            ("EnableAutomaticRotation", "true"),
            ("RotationInterval", "30d"),
        ],
    )
    .await
    .expect("Rejected.UnsupportedOperation", 400);

    // KeyVersionId is required and must be the key's.
    c.call(
        "AsymmetricSign",
        &[
            ("KeyId", rsa.as_str()),
            ("Algorithm", "RSA_PSS_SHA_256"),
            ("Digest", &digest),
        ],
    )
    .await
    .expect("MissingParameter", 400);
    c.call(
        "AsymmetricSign",
        &sign_params(&rsa, &ec_v, "RSA_PSS_SHA_256", &digest),
    )
    .await
    .expect("Forbidden.KeyVersionNotFound", 404);
    c.call("GetPublicKey", &[("KeyId", &rsa)])
        .await
        .expect("MissingParameter", 400);

    // Sign/Verify: wrong algorithm, usage or digest length are InvalidParameter.
    let short = b64(&[0x11; 31]);
    for (key, version, algorithm, digest) in [
        (&ec, &ec_v, "RSA_PSS_SHA_256", &digest),
        (&rsa, &rsa_v, "ECDSA_SHA_256", &digest),
        (&rsa, &rsa_v, "RSA_PSS_SHA_384", &digest),
        (&rsa, &rsa_v, "RSA_PSS_SHA_256", &short),
        (&rsa, &rsa_v, "RSA_PSS_SHA_256", &"not base64!".to_owned()),
        (&rsa_enc, &rsa_enc_v, "RSA_PSS_SHA_256", &digest),
        (&aes, &aes_v, "RSA_PSS_SHA_256", &digest),
    ] {
        c.call(
            "AsymmetricSign",
            &sign_params(key, version, algorithm, digest),
        )
        .await
        .expect("InvalidParameter", 400);
    }
    let mut verify = sign_params(&ec, &ec_v, "ECDSA_SHA_256", &short);
    verify.push(("Value", "MEUCIQ=="));
    c.call("AsymmetricVerify", &verify)
        .await
        .expect("InvalidParameter", 400);

    // Encrypt/Decrypt: keys that do not encrypt are Rejected.UnsupportedOperation.
    let plaintext = b64(b"hello");
    for (key, version) in [(&rsa, &rsa_v), (&ec, &ec_v), (&aes, &aes_v)] {
        c.call(
            "AsymmetricEncrypt",
            &[
                ("KeyId", key.as_str()),
                ("KeyVersionId", version),
                ("Algorithm", "RSAES_OAEP_SHA_256"),
                ("Plaintext", &plaintext),
            ],
        )
        .await
        .expect("Rejected.UnsupportedOperation", 400);
    }
    c.call(
        "AsymmetricEncrypt",
        &[
            ("KeyId", rsa_enc.as_str()),
            ("KeyVersionId", &rsa_enc_v),
            ("Algorithm", "RSAES_PKCS1_V1_5"),
            ("Plaintext", &plaintext),
        ],
    )
    .await
    .expect("InvalidParameter", 400);
    c.call("GetPublicKey", &[("KeyId", &aes), ("KeyVersionId", &aes_v)])
        .await
        .expect("Rejected.UnsupportedOperation", 400);
    // Symmetric actions refuse asymmetric keys.
    c.call("Encrypt", &[("KeyId", &rsa_enc), ("Plaintext", "x")])
        .await
        .expect("InvalidParameter", 400);
    c.call("GenerateDataKey", &[("KeyId", &ec)])
        .await
        .expect("InvalidParameter", 400);

    // DryRun stops after the checks.
    let mut dry = sign_params(&rsa, &rsa_v, "RSA_PSS_SHA_256", &digest);
    dry.push(("DryRun", "true"));
    c.call("AsymmetricSign", &dry)
        .await
        .expect("DryRunOperationError", 400);

    // States, as for Encrypt.
    let sign = sign_params(&rsa, &rsa_v, "RSA_PSS_SHA_256", &digest);
    let public = [("KeyId", rsa.as_str()), ("KeyVersionId", rsa_v.as_str())];
    c.ok("DisableKey", &[("KeyId", &rsa)]).await;
    c.call("AsymmetricSign", &sign)
        .await
        .expect("Rejected.Disabled", 409);
    c.call("GetPublicKey", &public)
        .await
        .expect("Rejected.Disabled", 409);
    c.ok("EnableKey", &[("KeyId", &rsa)]).await;
    c.ok("AsymmetricSign", &sign).await;
    c.ok(
        "ScheduleKeyDeletion",
        &[("KeyId", &rsa), ("PendingWindowInDays", "7")],
    )
    .await;
    c.call("AsymmetricSign", &sign)
        .await
        .expect("Rejected.PendingDeletion", 409);
    c.call("GetPublicKey", &public)
        .await
        .expect("Rejected.PendingDeletion", 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorized_and_audited() {
    let app = TestApp::start().await;
    let root = app.root();
    let policy = serde_json::json!({"Version": "1", "Statement": [
        {"Effect": "Allow", "Principal": {"RAM": [Who::Root.principal()]}, "Action": ["kms:*"], "Resource": ["*"]},
        {"Effect": "Allow", "Principal": {"RAM": [Who::App.principal()]},
         "Action": ["kms:AsymmetricVerify", "kms:GetPublicKey"], "Resource": ["*"]},
    ]})
    .to_string();
    let meta = root
        .ok(
            "CreateKey",
            &[("KeySpec", "EC_P256K"), ("Policy", policy.as_str())],
        )
        .await;
    let key = meta["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let version = root.ok("ListKeyVersions", &[("KeyId", &key)]).await["KeyVersions"]["KeyVersion"]
        [0]["KeyVersionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let digest = b64(&[0x33; 32]);
    let params = sign_params(&key, &version, "ECDSA_SHA_256", &digest);
    let signed = root.ok("AsymmetricSign", &params).await;
    let app_user = app.client(Who::App);
    app_user
        .call("AsymmetricSign", &params)
        .await
        .expect("Forbidden.NoPermission", 403);
    let mut verify = params.clone();
    let value = signed["Value"].as_str().unwrap().to_owned();
    verify.push(("Value", &value));
    assert_eq!(
        app_user.ok("AsymmetricVerify", &verify).await["Value"],
        true
    );
    app.client(Who::Stranger)
        .call(
            "GetPublicKey",
            &[("KeyId", &key), ("KeyVersionId", &version)],
        )
        .await
        .expect("Forbidden.NoPermission", 403);

    let store = kms_connector::store::Store::open(&format!(
        "sqlite://{}",
        app.dir.path().join("kms.db").display()
    ))
    .await
    .unwrap();
    let events = store
        .query_audit(kms_connector::store::AuditQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let of = |action: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.action == action && e.key_id.as_deref() == Some(key.as_str()))
            .map(|e| e.result.clone())
            .collect()
    };
    let mut sign = of("AsymmetricSign");
    sign.sort();
    assert_eq!(sign, ["Forbidden.NoPermission", "Success"], "{events:?}");
    assert_eq!(of("AsymmetricVerify"), ["Success"]);
}

/// The private key is stored only sealed: the modulus of an RSA key (inside its PKCS#8) never
/// appears in the database files (the public key is not stored either), while a marker sent in
/// the same CreateKey does (positive control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_private_key_in_the_database() {
    use x509_parser::prelude::FromDer as _;
    let app = TestApp::start().await;
    let c = app.root();
    let marker = "positive-control-marker-9f1c2e";
    let meta = c
        .ok(
            "CreateKey",
            &[("KeySpec", "RSA_2048"), ("Description", marker)],
        )
        .await;
    let key = meta["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let version = c.ok("ListKeyVersions", &[("KeyId", &key)]).await["KeyVersions"]["KeyVersion"][0]
        ["KeyVersionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let pem = public_pem(&c, &key, &version).await;
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = schemas::b64::decode(&der).unwrap();
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der).unwrap();
    let x509_parser::public_key::PublicKey::RSA(rsa) = spki.parsed().unwrap() else {
        panic!("not RSA")
    };
    let modulus = rsa.modulus.to_vec();
    assert!(modulus.len() >= 256);
    let contains =
        |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    // Sign once so that the key has been unsealed and used.
    c.ok(
        "AsymmetricSign",
        &sign_params(&key, &version, "RSA_PKCS1_SHA_256", &b64(&[1; 32])),
    )
    .await;
    let db = app.database_bytes();
    assert!(contains(&db, marker.as_bytes()), "positive control");
    for window in modulus[modulus.len() - 256..].chunks(32) {
        assert!(!contains(&db, window), "modulus bytes in the database");
    }
}
