//! XKS Proxy API v1 conformance of the real proxy on SoftHSM: GetHealthStatus, GetKeyMetadata,
//! Encrypt and Decrypt (spec §1.3–§1.6, §4.4), over HTTP/1.1 with keep-alive and over HTTP/2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::client::{
    Alpn, Encrypted, decrypt_body, encrypt_body, health_body, http_client, metadata_body,
};
use common::raw::{Conn, TlsOptions, client_config, http1_request};
use common::{Proxy, Setup, Store, curl};
use ekm::{KeyManager as _, KeyUsage};
use reqwest::Version;
use schemas::b64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The CDIV as the spec defines it, computed here without the proxy's helpers:
/// SHA-256(AAD || ciphertextMetadata || IV || ciphertext || tag), raw bytes, absent = empty.
fn expected_cdiv(aad: &[u8], e: &Encrypted) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(aad);
    h.update(e.ciphertext_metadata.as_deref().unwrap_or_default());
    h.update(&e.iv);
    h.update(&e.ciphertext);
    h.update(&e.tag);
    h.finalize().to_vec()
}

fn check_shape(e: &Encrypted, plaintext_len: usize) {
    assert_eq!(e.iv.len(), 12, "IV length");
    assert_eq!(e.tag.len(), 16, "tag length");
    assert_eq!(e.ciphertext.len(), plaintext_len, "ciphertext length");
    let ctm = e.ciphertext_metadata.as_deref().unwrap_or_default();
    assert!(ctm.len() <= 20, "ciphertextMetadata is {} bytes", ctm.len());
}

#[test]
fn cdiv_definition_matches_the_spec_appendix_c_example() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/vectors/xki-cdiv.json"
    ))
    .expect("vector file");
    let v: Value = serde_json::from_str(&text).unwrap();
    let field = |name: &str| b64::decode(v[name].as_str().unwrap()).unwrap();
    let e = Encrypted {
        ciphertext: field("ciphertext"),
        iv: field("initializationVector"),
        tag: field("authenticationTag"),
        ciphertext_metadata: Some(field("ciphertextMetadata")),
        cdiv: None,
    };
    let cdiv = b64::encode(expected_cdiv(&field("additionalAuthenticatedData"), &e));
    assert_eq!(cdiv, "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=");
    assert_eq!(cdiv, v["ciphertextDataIntegrityValue"].as_str().unwrap());
}

#[actix_web::test]
async fn health_reports_every_required_field() {
    let proxy = Proxy::default().await;
    for prefix in ["", "/tenant-a"] {
        let client = proxy.client(prefix);
        for operation in [
            "CreateCustomKeyStore",
            "ConnectCustomKeyStore",
            "UpdateCustomKeyStore",
            "KmsHealthCheck",
            "SomeOperationKmsAddsLater",
        ] {
            let json = client.post("/health", &health_body(operation)).await.ok();
            assert!(json["xksProxyFleetSize"].as_u64().unwrap() >= 1, "{json}");
            for field in ["xksProxyVendor", "xksProxyModel", "ekmVendor"] {
                assert!(!json[field].as_str().unwrap().is_empty(), "{field}: {json}");
            }
            let fleet = json["ekmFleetDetails"].as_array().unwrap();
            assert!((1..=10).contains(&fleet.len()), "{json}");
            for entry in fleet {
                // The real token, not a hard-coded entry (reference defect §2 item 4).
                assert_eq!(entry["id"], common::hsm::TOKEN_LABEL, "{entry}");
                assert!(entry["model"].is_string(), "{entry}");
                assert_eq!(entry["healthStatus"], "ACTIVE", "SoftHSM works: {entry}");
            }
        }
    }
}

#[actix_web::test]
async fn health_is_exempt_from_secondary_authorization() {
    let deny_all = "[[key_store.rule]]\nid = \"deny-everything\"\neffect = \"deny\"\n";
    let allow_nobody = "[[key_store.rule]]\nid = \"only-ghost\"\neffect = \"allow\"\n\
                        principals = [\"arn:aws:iam::000000000000:role/ghost\"]\n";
    let proxy = Proxy::start(Setup::with_stores(vec![
        Store::new("/deny").with_rules(deny_all),
        Store::new("/allow").with_rules(allow_nobody),
    ]))
    .await;
    let key = proxy.key("authz-health").await;
    for prefix in ["/deny", "/allow"] {
        let client = proxy.client(prefix);
        client.health().await.ok();
        client
            .metadata(&key)
            .await
            .error(403, "AccessDeniedException");
    }
}

#[actix_web::test]
async fn metadata_reports_aes_256_and_exactly_the_key_usage() {
    let proxy = Proxy::default().await;
    let client = proxy.client("");
    let cases = [
        (KeyUsage::BOTH, vec!["DECRYPT", "ENCRYPT"]),
        (
            KeyUsage {
                encrypt: true,
                decrypt: false,
            },
            vec!["ENCRYPT"],
        ),
        (
            KeyUsage {
                encrypt: false,
                decrypt: true,
            },
            vec!["DECRYPT"],
        ),
    ];
    for (usage, expected) in cases {
        let key = proxy.create_key("usage", usage).await;
        let json = client.metadata(&key).await.ok();
        assert_eq!(json["keySpec"], "AES_256", "{json}");
        assert_eq!(json["keyStatus"], "ENABLED", "{json}");
        let mut got: Vec<&str> = json["keyUsage"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap())
            .collect();
        assert!(got.len() <= 10);
        got.sort_unstable();
        assert_eq!(got, expected, "{usage:?}: {json}");
    }
    // The HSM usage is enforced, too: encrypt-only cannot decrypt and vice versa.
    let enc_only = proxy
        .create_key(
            "enc-only",
            KeyUsage {
                encrypt: true,
                decrypt: false,
            },
        )
        .await;
    let dec_only = proxy
        .create_key(
            "dec-only",
            KeyUsage {
                encrypt: false,
                decrypt: true,
            },
        )
        .await;
    let encrypted = client.encrypt_ok(&enc_only, b"one way", None).await;
    client
        .decrypt(&enc_only, &decrypt_body(&encrypted, None))
        .await
        .error(400, "InvalidKeyUsageException");
    client
        .encrypt(&dec_only, &encrypt_body(b"x", None, false))
        .await
        .error(400, "InvalidKeyUsageException");
}

#[actix_web::test]
async fn disabling_through_the_admin_api_takes_effect_at_once() {
    let proxy = Proxy::default().await;
    let client = proxy.client("");
    let key = proxy.key("lifecycle").await;
    assert_eq!(client.metadata(&key).await.ok()["keyStatus"], "ENABLED");
    let before = client
        .encrypt_ok(&key, b"written before", Some(b"ctx"))
        .await;

    proxy.admin_key_action(&key, "disable").await;
    // No waiting: the admin path invalidates the metadata cache.
    let json = client.metadata(&key).await.ok();
    assert_eq!(json["keyStatus"], "DISABLED", "{json}");
    assert_eq!(json["keySpec"], "AES_256");
    client
        .encrypt(&key, &encrypt_body(b"x", None, false))
        .await
        .error(400, "InvalidStateException");
    client
        .decrypt(&key, &decrypt_body(&before, Some(b"ctx")))
        .await
        .error(400, "InvalidStateException");

    proxy.admin_key_action(&key, "enable").await;
    assert_eq!(client.metadata(&key).await.ok()["keyStatus"], "ENABLED");
    assert_eq!(
        client.decrypt_ok(&key, &before, Some(b"ctx")).await,
        b"written before"
    );
    let after = client.encrypt_ok(&key, b"written after", None).await;
    assert_eq!(
        client.decrypt_ok(&key, &after, None).await,
        b"written after"
    );
}

#[actix_web::test]
async fn a_key_pending_deletion_reports_disabled_and_refuses_crypto() {
    let proxy = Proxy::default().await;
    let client = proxy.client("");
    let key = proxy.key("pending").await;
    let e = client.encrypt_ok(&key, b"soon gone", None).await;
    let id = schemas::xki::ExternalKeyId::parse(&key).unwrap();
    let ctx = common::ctx();
    proxy.backend.disable_key(&ctx, &id).await.unwrap();
    proxy
        .backend
        .schedule_key_deletion(&ctx, &id, Some(7))
        .await
        .unwrap();
    let json = client.metadata(&key).await.ok();
    assert_eq!(json["keyStatus"], "DISABLED", "{json}");
    client
        .decrypt(&key, &decrypt_body(&e, None))
        .await
        .error(400, "InvalidStateException");
    proxy.backend.cancel_key_deletion(&ctx, &id).await.unwrap();
    proxy.admin_key_action(&key, "enable").await;
    assert_eq!(client.decrypt_ok(&key, &e, None).await, b"soon gone");
}

#[actix_web::test]
async fn encrypt_decrypt_round_trip_with_and_without_aad() {
    let proxy = Proxy::default().await;
    let client = proxy.client("/tenant-a");
    let key = proxy.key("roundtrip").await;
    let plaintext = b"KMS-internal ciphertext of a data key, opaque to the proxy";
    for aad in [None, Some(&b"encryption context"[..]), Some(&b""[..])] {
        let json = client
            .encrypt(&key, &encrypt_body(plaintext, aad, false))
            .await
            .ok();
        assert!(
            json.get("ciphertextDataIntegrityValue").is_none(),
            "no CDIV unless asked: {json}"
        );
        let e = Encrypted::from_json(&json);
        check_shape(&e, plaintext.len());
        assert_ne!(e.ciphertext, plaintext.to_vec());
        assert_eq!(client.decrypt_ok(&key, &e, aad).await, plaintext);
    }
    // Fresh IV per call.
    let a = client.encrypt_ok(&key, plaintext, None).await;
    let b = client.encrypt_ok(&key, plaintext, None).await;
    assert_ne!(a.iv, b.iv);
    assert_ne!(a.ciphertext, b.ciphertext);
}

#[actix_web::test]
async fn spec_sizes_are_accepted() {
    let proxy = Proxy::default().await;
    let client = proxy.client("");
    let key = proxy.key("sizes").await;
    let plaintext: Vec<u8> = (0..4300u32).map(|i| (i % 251) as u8).collect();
    let aad: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
    let body = encrypt_body(&plaintext, Some(&aad), true);
    assert_eq!(body["plaintext"].as_str().unwrap().len(), 5736);
    assert_eq!(
        body["additionalAuthenticatedData"].as_str().unwrap().len(),
        10924
    );
    let json = client.encrypt(&key, &body).await.ok();
    let e = Encrypted::from_json(&json);
    check_shape(&e, 4300);
    assert_eq!(e.cdiv.as_deref(), Some(&expected_cdiv(&aad, &e)[..]));
    assert_eq!(client.decrypt_ok(&key, &e, Some(&aad)).await, plaintext);
}

#[actix_web::test]
async fn cdiv_is_present_when_requested_and_matches_the_recomputed_value() {
    let proxy = Proxy::default().await;
    let client = proxy.client("");
    let key = proxy.key("cdiv").await;
    for aad in [None, Some(&b"project=nile,department=marketing"[..])] {
        let json = client
            .encrypt(&key, &encrypt_body(b"hello cdiv", aad, true))
            .await
            .ok();
        let e = Encrypted::from_json(&json);
        check_shape(&e, 10);
        let cdiv = e.cdiv.clone().expect("CDIV requested, so required");
        assert_eq!(cdiv.len(), 32);
        assert_eq!(cdiv, expected_cdiv(aad.unwrap_or_default(), &e));
        // KMS treats a matching CDIV as a promise that Decrypt works.
        assert_eq!(client.decrypt_ok(&key, &e, aad).await, b"hello cdiv");
    }
}

/// A CDIV promises KMS that Decrypt works; a key whose usage lacks DECRYPT cannot promise it,
/// so an encrypt asking for one is refused (it used to get an unverified CDIV).
#[actix_web::test]
async fn a_cdiv_is_refused_on_a_key_that_cannot_decrypt() {
    let proxy = Proxy::default().await;
    let client = proxy.client("");
    let usage = KeyUsage {
        encrypt: true,
        decrypt: false,
    };
    let key = proxy.create_key("cdiv-enc-only", usage).await;
    for aad in [None, Some(&b"project=nile"[..])] {
        client
            .encrypt(&key, &encrypt_body(b"promise", aad, true))
            .await
            .error(400, "InvalidKeyUsageException");
        // Without the integrity value the key still encrypts.
        let json = client
            .encrypt(&key, &encrypt_body(b"no promise", aad, false))
            .await
            .ok();
        assert!(json.get("ciphertextDataIntegrityValue").is_none(), "{json}");
    }
}

#[actix_web::test]
async fn decrypt_refuses_any_tampering() {
    let proxy = Proxy::default().await;
    let client = proxy.client("");
    let key = proxy.key("tamper").await;
    let other = proxy.key("tamper-other").await;
    let aad = b"bound context".to_vec();
    let good = client
        .encrypt_ok(&key, b"sixteen bytes!!!", Some(&aad))
        .await;
    assert!(
        good.ciphertext_metadata.is_some(),
        "this EKM versions its ciphertexts"
    );
    let flip = |bytes: &mut Vec<u8>| bytes[0] ^= 0x01;
    let mut cases: Vec<(&str, Encrypted, Option<Vec<u8>>)> = Vec::new();
    let mut e = good.clone();
    flip(&mut e.ciphertext);
    cases.push(("ciphertext", e, Some(aad.clone())));
    let mut e = good.clone();
    flip(&mut e.iv);
    cases.push(("iv", e, Some(aad.clone())));
    let mut e = good.clone();
    let last = e.tag.len() - 1;
    e.tag[last] ^= 0x80;
    cases.push(("tag", e, Some(aad.clone())));
    let mut tampered_aad = aad.clone();
    flip(&mut tampered_aad);
    cases.push(("aad", good.clone(), Some(tampered_aad)));
    cases.push(("aad removed", good.clone(), None));
    let mut e = good.clone();
    let ctm = e.ciphertext_metadata.as_mut().unwrap();
    let last = ctm.len() - 1;
    ctm[last] ^= 0x01;
    cases.push(("ciphertextMetadata", e, Some(aad.clone())));
    let mut e = good.clone();
    e.ciphertext_metadata = None;
    cases.push(("ciphertextMetadata removed", e, Some(aad.clone())));
    let mut e = good.clone();
    e.iv = [good.iv.clone(), vec![0; 4]].concat();
    cases.push(("16-byte IV", e, Some(aad.clone())));
    for (what, e, aad) in &cases {
        let reply = client.decrypt(&key, &decrypt_body(e, aad.as_deref())).await;
        assert_eq!(
            reply.error_name().as_deref(),
            Some("InvalidCiphertextException"),
            "{what}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.error(400, "InvalidCiphertextException");
    }
    client
        .decrypt(&other, &decrypt_body(&good, Some(&aad)))
        .await
        .error(400, "InvalidCiphertextException");
    assert_eq!(
        client.decrypt_ok(&key, &good, Some(&aad)).await,
        b"sixteen bytes!!!"
    );
}

#[actix_web::test]
async fn http2_is_negotiated_through_alpn() {
    let proxy = Proxy::default().await;
    let h2 = http_client(proxy.ca.cert_pem(), proxy.port, Alpn::Any, None);
    let client = proxy.client("/tenant-a").with_http(h2);
    let health = client.health().await;
    assert_eq!(health.version, Version::HTTP_2);
    health.ok();
    let key = proxy.key("h2").await;
    let reply = client
        .encrypt(&key, &encrypt_body(b"over h2", None, true))
        .await;
    assert_eq!(reply.version, Version::HTTP_2);
    let e = Encrypted::from_json(&reply.ok());
    assert_eq!(client.decrypt_ok(&key, &e, None).await, b"over h2");
    client.metadata(&key).await.ok();
    // Errors look the same over HTTP/2.
    proxy
        .unsigned("/tenant-a")
        .with_http(http_client(
            proxy.ca.cert_pem(),
            proxy.port,
            Alpn::Any,
            None,
        ))
        .health()
        .await
        .error(401, "AuthenticationFailedException");
}

#[actix_web::test]
async fn http1_connection_is_kept_alive_across_requests() {
    let proxy = Proxy::default().await;
    let client = proxy.client("");
    let key = proxy.key("keepalive").await;
    for alpn in [vec![b"http/1.1".to_vec()], vec![]] {
        let options = TlsOptions {
            alpn,
            ..TlsOptions::default()
        };
        let mut conn = Conn::connect(
            proxy.port,
            client_config(proxy.ca.cert_pem(), None, &options),
        )
        .await
        .unwrap();
        let (_, _, negotiated) = conn.negotiated();
        assert_ne!(negotiated.as_deref(), Some(&b"h2"[..]));
        let bodies = [
            ("/health".to_owned(), health_body("KmsHealthCheck")),
            (format!("/keys/{key}/metadata"), metadata_body()),
            (
                format!("/keys/{key}/encrypt"),
                encrypt_body(b"ka", None, false),
            ),
            (
                "/health".to_owned(),
                json!({"requestMetadata": {"kmsRequestId": "", "kmsOperation": "KmsHealthCheck"}}),
            ),
        ];
        for (api, body) in bodies {
            let target = client.path(&api);
            let body = serde_json::to_vec(&body).unwrap();
            let mut headers = vec![
                ("Host".to_owned(), client.authority()),
                ("Content-Type".to_owned(), "application/json".to_owned()),
            ];
            headers.extend(client.sign("POST", &target, &body));
            let response = conn
                .exchange(&http1_request("POST", &target, &headers, &body))
                .await
                .expect("same connection serves the next request");
            assert_ne!(response.header("connection"), Some("close"));
            response.reply().ok();
        }
    }
}

/// Every refusal decided before the body (unknown path or prefix, wrong method, a body over the
/// cap, a request that is not signed) reaches an HTTP/2 client: curl `--http2` over TLS, bodies
/// of 100 B, 3 KB and 40 KB (past the cap), 50 tries each, no answer lost. (The proxy used to
/// answer before reading the body; actix then reset the stream and curl got no response.)
#[actix_web::test]
async fn early_refusals_reach_http2_clients() {
    let proxy = Proxy::default().await;
    let files = curl::Files::new(&proxy);
    let cap = schemas::xki::Limits::default().max_body_bytes();
    let past_cap = 40 * 1024;
    assert!(past_cap > cap);
    // (what, method, target, status and error name for a body within the cap)
    let cases: [(&str, &str, &str, u16, Option<&str>); 4] = [
        (
            "unknown path",
            "POST",
            "/kms/xks/v1/nowhere",
            404,
            Some("InvalidUriPathException"),
        ),
        (
            "unknown prefix",
            "POST",
            "/nobody/kms/xks/v1/health",
            404,
            Some("InvalidUriPathException"),
        ),
        ("wrong method", "GET", "/kms/xks/v1/health", 405, None),
        (
            "not signed",
            "POST",
            "/kms/xks/v1/health",
            401,
            Some("AuthenticationFailedException"),
        ),
    ];
    let ca = files.ca();
    let mut lost = Vec::new();
    for (what, method, target, status, name) in cases {
        for size in [100, 3 * 1024, past_cap] {
            // The cap is decided after the route, method and prefix, before authentication.
            let (status, name) = if size > cap && status == 401 {
                (413, Some("ValidationException"))
            } else {
                (status, name)
            };
            let body = vec![b'x'; size];
            let outcomes: Vec<curl::Outcome> = std::thread::scope(|scope| {
                let runs: Vec<_> = (0..5)
                    .map(|_| {
                        scope.spawn(|| {
                            (0..10)
                                .map(|_| {
                                    curl::run(
                                        proxy.port,
                                        &ca,
                                        target,
                                        &[
                                            "--http2",
                                            "-X",
                                            method,
                                            "-H",
                                            "Content-Type: application/json",
                                            "--data-binary",
                                            "@-",
                                        ],
                                        &body,
                                    )
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                runs.into_iter().flat_map(|r| r.join().unwrap()).collect()
            });
            assert_eq!(outcomes.len(), 50);
            for outcome in outcomes {
                let answered = outcome.status == Some(status)
                    && outcome.version == "2"
                    && name.is_none_or(|n| outcome.error_name().as_deref() == Some(n));
                if !answered {
                    lost.push(format!("{what}, {size} B: {outcome:?}"));
                }
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} lost answers:\n{}",
        lost.len(),
        lost.join("\n")
    );
}

/// With mTLS, a refused client certificate (expired, self-signed, from another CA) ends the
/// handshake with `handshake_failure`, and under TLS 1.3 curl, which writes its request right
/// behind its `Finished`, still reads that alert: 20 tries each, 20 alerts. (The proxy used to
/// close with the request unread; the reset destroyed the alert and curl saw a broken pipe.)
#[actix_web::test]
async fn a_refused_client_certificate_gets_its_alert_under_tls13() {
    let client_ca = certs::Authority::new("KMS client test CA").unwrap();
    let other_ca = certs::Authority::new("Some other CA").unwrap();
    let mut setup = Setup::new();
    setup.mtls = Some(common::Mtls {
        ca_pems: vec![client_ca.cert_pem().to_owned()],
        allowed_names: vec![common::KMS_CLIENT_NAME.into()],
    });
    let proxy = Proxy::start(setup).await;
    let files = curl::Files::new(&proxy);
    let leaf = certs::LeafSpec::client(common::KMS_CLIENT_NAME, &[]);
    let refused = [
        ("expired", client_ca.issue(&leaf.clone().expired()).unwrap()),
        ("self-signed", certs::self_signed(&leaf).unwrap()),
        ("another CA", other_ca.issue(&leaf).unwrap()),
    ];
    let body = serde_json::to_vec(&health_body("KmsHealthCheck")).unwrap();
    let attempt = |cert: &std::path::Path, key: &std::path::Path| {
        curl::run(
            proxy.port,
            &files.ca(),
            "/kms/xks/v1/health",
            &[
                "--tlsv1.3",
                "--tls-max",
                "1.3",
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ],
            &body,
        )
    };
    for (what, identity) in &refused {
        let (cert, key) = files.identity(what.replace(' ', "-").as_str(), identity);
        let mut without_alert = Vec::new();
        for _ in 0..20 {
            let outcome = attempt(&cert, &key);
            assert_eq!(outcome.status, None, "{what}: TLS let a request through");
            if !outcome.stderr.contains("alert handshake failure") {
                without_alert.push(outcome.stderr);
            }
        }
        assert!(
            without_alert.is_empty(),
            "{what}: {} of 20 saw no alert: {without_alert:?}",
            without_alert.len()
        );
    }
    // The allowed certificate passes TLS (and, unsigned, gets the XKI answer).
    let allowed = client_ca
        .issue_client(common::KMS_CLIENT_NAME, &[])
        .unwrap();
    let (cert, key) = files.identity("allowed", &allowed);
    let outcome = attempt(&cert, &key);
    assert_eq!(outcome.status, Some(401), "{outcome:?}");
}
