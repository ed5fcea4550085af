//! The key backends: the one conformance suite (`kms_connector::backend::conformance`) on the
//! software backend and on the external backend, the latter against a real `xki-proxy` over TLS
//! in front of a real PKCS#11 key manager on SoftHSM; then what only one of them does (root key
//! sealing; connection states, trust, credentials, key states at the XKI side).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/xki.rs"]
mod xki;

use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use ekm::KeyManager as _;
use kms_connector::backend::external::{ExternalBackend, ExternalInstanceConfig};
use kms_connector::backend::software::{RootKey, SoftwareBackend};
use kms_connector::backend::{
    BackendError, ConnectionError, InstanceStatus, KeyBackend, KeyContext, NewVersion,
    VersionMaterial, conformance,
};
use kms_connector::ids::{KeyId, KeyVersionId};
use kms_connector::store::ConnectionState;
use schemas::xki::ExternalKeyId;
use xki::{BOTH, ENCRYPT_ONLY, REGION, TestProxy, create_key, ctx, ekm, poll};

const PRINCIPAL: &str = "acs:ram::1540355698848:user/backends-test";

/// A key version and what a backend needs to use it.
struct Bound {
    key_id: KeyId,
    version_id: KeyVersionId,
    material: VersionMaterial,
    external_key_id: Option<ExternalKeyId>,
}

impl Bound {
    fn ctx(&self) -> KeyContext<'_> {
        KeyContext {
            key_id: &self.key_id,
            key_arn: "acs:kms:cn-hangzhou:1540355698848:key/backends-test",
            version_id: &self.version_id,
            material: &self.material,
            external_key_id: self.external_key_id.as_ref(),
            principal: PRINCIPAL,
            operation: "Encrypt",
            request_id: "backends-test",
        }
    }
}

async fn new_version(
    backend: &dyn KeyBackend,
    external_key_id: Option<&ExternalKeyId>,
) -> Result<Bound, BackendError> {
    let key_id = KeyId::generate(REGION);
    let version_id = KeyVersionId::generate();
    let material = backend
        .new_version(NewVersion {
            key_id: &key_id,
            version_id: &version_id,
            key_spec: schemas::kms::KeySpec::Aes256,
            external_key_id,
            principal: PRINCIPAL,
            request_id: "backends-test",
        })
        .await?;
    Ok(Bound {
        key_id,
        version_id,
        material,
        external_key_id: external_key_id.cloned(),
    })
}

fn error_status(code: ConnectionError) -> InstanceStatus {
    InstanceStatus {
        state: ConnectionState::Error,
        error: Some(code),
    }
}

// ---------------------------------------------------------------------------------------------
// Software backend
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn software_conformance() {
    let backend = SoftwareBackend::new(RootKey::generate().unwrap());
    let report = conformance::run(&backend, None).await;
    assert!(
        report.checks.contains(&"second version of the same key"),
        "{report:?}"
    );
    assert!(report.checks.len() >= 10, "{report:?}");
    // Every asymmetric spec: 3 RSA sizes × 2 signing algorithms, 2 curves × ECDSA.
    let count = |name| report.checks.iter().filter(|c| **c == name).count();
    assert_eq!(
        count("signatures verify; changed digests and signatures do not"),
        8,
        "{report:?}"
    );
    assert_eq!(
        count("RSAES-OAEP round trip, tampering and oversized plaintexts refused"),
        3
    );
    assert_eq!(count("EC keys do not encrypt"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardware_conformance() {
    xki::isolated_env();
    let backend = xki::hardware_backend();
    let report = conformance::run(&backend, None).await;
    assert!(
        report.checks.contains(&"second version of the same key"),
        "{report:?}"
    );
    assert!(report.checks.contains(&"undeclared families refused"));
    assert!(report.checks.len() >= 10, "{report:?}");
}

/// Hardware keys of every AES size, and the token's objects: sensitive, never extractable,
/// gone once the version is destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardware_key_sizes_and_objects() {
    xki::isolated_env();
    let backend = xki::hardware_backend();
    for spec in [
        schemas::kms::KeySpec::Aes128,
        schemas::kms::KeySpec::Aes192,
        schemas::kms::KeySpec::Aes256,
    ] {
        let key_id = KeyId::generate(REGION);
        let version_id = KeyVersionId::generate();
        let material = backend
            .new_version(NewVersion {
                key_id: &key_id,
                version_id: &version_id,
                key_spec: spec,
                external_key_id: None,
                principal: PRINCIPAL,
                request_id: "hardware",
            })
            .await
            .unwrap();
        assert_eq!(material.sealed, None, "no material leaves the token");
        let bound = Bound {
            key_id,
            version_id,
            material,
            external_key_id: None,
        };
        let payload = backend
            .encrypt(bound.ctx(), b"in the token", b"aad")
            .await
            .unwrap();
        assert_eq!(payload.len(), 12 + 12 + 16);
        assert_eq!(
            &*backend
                .decrypt(bound.ctx(), &payload, b"aad")
                .await
                .unwrap(),
            b"in the token"
        );
        backend.destroy_version(&bound.material).await.unwrap();
        assert!(matches!(
            backend.encrypt(bound.ctx(), b"gone", b"").await,
            Err(BackendError::Internal(_))
        ));
    }
    match backend
        .new_version(NewVersion {
            key_id: &KeyId::generate(REGION),
            version_id: &KeyVersionId::generate(),
            key_spec: schemas::kms::KeySpec::Rsa2048,
            external_key_id: None,
            principal: PRINCIPAL,
            request_id: "hardware",
        })
        .await
    {
        Err(BackendError::Unsupported(_)) => {}
        other => panic!("RSA on a symmetric hardware backend: {other:?}"),
    }
}

/// The sealed row is `0x01 ‖ root id[4] ‖ nonce ‖ AES-GCM(root, data key, header ‖ key_id ‖ 0 ‖
/// version_id) ‖ tag`, the key
/// it seals is the one that encrypts, and the clear key appears nowhere in it.
#[tokio::test]
async fn software_sealed_material_hides_the_data_key() {
    let root = [0x3c; 32];
    let backend = SoftwareBackend::new(RootKey::from_bytes(root));
    let version = new_version(&backend, None).await.unwrap();
    let sealed = version.material.sealed.clone().unwrap();
    assert_eq!(sealed.len(), 5 + 12 + 32 + 16);
    assert_eq!(sealed[0], 1, "format byte");
    let (header, sealed) = sealed.split_at(5);

    let mut aad = header.to_vec();
    aad.extend_from_slice(version.key_id.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(version.version_id.as_str().as_bytes());
    let data_key = Aes256Gcm::new((&root).into())
        .decrypt(
            Nonce::from_slice(&sealed[..12]),
            Payload {
                msg: &sealed[12..],
                aad: &aad,
            },
        )
        .expect("the row unseals under the root key with the documented AAD");
    assert_eq!(data_key.len(), 32);
    assert!(
        !sealed
            .windows(8)
            .any(|w| data_key.windows(8).any(|k| k == w)),
        "clear key bytes in the row"
    );

    let payload = backend
        .encrypt(version.ctx(), b"under the data key", b"ctx")
        .await
        .unwrap();
    let clear = Aes256Gcm::new_from_slice(&data_key)
        .unwrap()
        .decrypt(
            Nonce::from_slice(&payload[..12]),
            Payload {
                msg: &payload[12..],
                aad: b"ctx",
            },
        )
        .unwrap();
    assert_eq!(clear, b"under the data key");
}

/// A sealed row moved to another key or version, or read under another root key, does not unseal.
#[tokio::test]
async fn software_unsealing_is_bound_to_key_version_and_root() {
    let backend = SoftwareBackend::new(RootKey::generate().unwrap());
    let version = new_version(&backend, None).await.unwrap();
    let payload = backend
        .encrypt(version.ctx(), b"secret", b"")
        .await
        .unwrap();
    let moved_key = Bound {
        key_id: KeyId::generate(REGION),
        version_id: version.version_id.clone(),
        material: version.material.clone(),
        external_key_id: None,
    };
    let moved_version = Bound {
        key_id: version.key_id.clone(),
        version_id: KeyVersionId::generate(),
        material: version.material.clone(),
        external_key_id: None,
    };
    for moved in [&moved_key, &moved_version] {
        assert!(matches!(
            backend.encrypt(moved.ctx(), b"x", b"").await,
            Err(BackendError::Internal(_))
        ));
        assert!(matches!(
            backend.decrypt(moved.ctx(), &payload, b"").await,
            Err(BackendError::Internal(_))
        ));
    }
    let other_root = SoftwareBackend::new(RootKey::generate().unwrap());
    assert!(matches!(
        other_root.decrypt(version.ctx(), &payload, b"").await,
        Err(BackendError::Internal(_))
    ));
    assert_eq!(
        &*backend.decrypt(version.ctx(), &payload, b"").await.unwrap(),
        b"secret"
    );
}

/// The three ways to load a root key give the same key.
#[tokio::test]
async fn software_root_key_from_env_file_and_bytes_agree() {
    xki::isolated_env();
    let from_env = SoftwareBackend::new(RootKey::from_env(xki::ROOT_KEY_VAR).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("root.key");
    std::fs::write(&file, xki::ROOT_KEY).unwrap();
    let from_file = SoftwareBackend::new(RootKey::from_file(&file).unwrap());
    let from_bytes = SoftwareBackend::new(RootKey::from_bytes(xki::ROOT_KEY));
    let version = new_version(&from_env, None).await.unwrap();
    let payload = from_file
        .encrypt(version.ctx(), b"same root", b"")
        .await
        .unwrap();
    assert_eq!(
        &*from_bytes
            .decrypt(version.ctx(), &payload, b"")
            .await
            .unwrap(),
        b"same root"
    );
}

// ---------------------------------------------------------------------------------------------
// External backend, against the real proxy
// ---------------------------------------------------------------------------------------------

fn external(proxy: &TestProxy, config: &ExternalInstanceConfig) -> ExternalBackend {
    ExternalBackend::from_config(config, REGION, proxy.dir()).unwrap()
}

async fn connected(proxy: &TestProxy) -> ExternalBackend {
    let backend = external(proxy, &proxy.instance_config());
    assert_eq!(backend.status().state, ConnectionState::Uninitialized);
    assert_eq!(backend.connect().await, InstanceStatus::CONNECTED);
    backend
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_conformance() {
    let proxy = TestProxy::start().await;
    let backend = connected(&proxy).await;
    let key = create_key("conformance", BOTH).await;
    let report = conformance::run(&backend, Some(&key)).await;
    assert!(
        report.checks.contains(&"rotation not declared"),
        "{report:?}"
    );
    assert!(
        report.checks.contains(&"external key id required"),
        "{report:?}"
    );
    assert!(report.checks.len() >= 10, "{report:?}");
    assert_eq!(backend.status(), InstanceStatus::CONNECTED);
}

/// CreateKey's checks at the proxy: disabled, ENCRYPT-only, DECRYPT-only and unknown keys are
/// refused; several KMS keys may share one usable external key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_metadata_refusals() {
    let proxy = TestProxy::start().await;
    let backend = connected(&proxy).await;

    let disabled = create_key("disabled", BOTH).await;
    ekm().disable_key(&ctx(), &disabled).await.unwrap();
    match new_version(&backend, Some(&disabled)).await {
        Err(BackendError::ExternalKeyUnusable(reason)) => {
            assert!(reason.contains("ENABLED"), "{reason}")
        }
        other => panic!("disabled key: {:?}", other.map(|b| b.material)),
    }
    let encrypt_only = create_key("encrypt-only", ENCRYPT_ONLY).await;
    let decrypt_only = create_key(
        "decrypt-only",
        ekm::KeyUsage {
            encrypt: false,
            decrypt: true,
        },
    )
    .await;
    for key in [&encrypt_only, &decrypt_only] {
        match new_version(&backend, Some(key)).await {
            Err(BackendError::ExternalKeyUnusable(reason)) => {
                assert!(reason.contains("ENCRYPT or DECRYPT"), "{reason}")
            }
            other => panic!("{key}: {:?}", other.map(|b| b.material)),
        }
    }
    let unknown = ExternalKeyId::parse("no-such-external-key").unwrap();
    assert!(matches!(
        new_version(&backend, Some(&unknown)).await,
        Err(BackendError::ExternalKeyNotFound)
    ));

    let shared = create_key("shared", BOTH).await;
    let first = new_version(&backend, Some(&shared)).await.unwrap();
    let second = new_version(&backend, Some(&shared)).await.unwrap();
    assert_eq!(
        first.material,
        VersionMaterial {
            sealed: None,
            backend_ref: Some(shared.to_string())
        }
    );
    assert_eq!(second.material, first.material);
    // Shared external key, separate KMS keys: payloads do not cross.
    let payload = backend
        .encrypt(first.ctx(), b"for the first KMS key", b"")
        .await
        .unwrap();
    assert!(matches!(
        backend.decrypt(second.ctx(), &payload, b"").await,
        Err(BackendError::InvalidCiphertext)
    ));
    assert_eq!(
        &*backend.decrypt(first.ctx(), &payload, b"").await.unwrap(),
        b"for the first KMS key"
    );
    assert_eq!(
        backend.status(),
        InstanceStatus::CONNECTED,
        "key refusals are not connection failures"
    );
}

/// A key disabled at the XKI side after CreateKey: crypto refused as ExternalKeyDisabled; enabled
/// again: crypto works, old ciphertexts included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_key_disabled_after_binding_then_enabled() {
    let proxy = TestProxy::start().await;
    let backend = connected(&proxy).await;
    let key = create_key("toggled", BOTH).await;
    let version = new_version(&backend, Some(&key)).await.unwrap();
    let before = backend
        .encrypt(version.ctx(), b"written while enabled", b"")
        .await
        .unwrap();

    ekm().disable_key(&ctx(), &key).await.unwrap();
    // The EKM serves key state from memory for up to its state TTL; the proxy and this test
    // share one manager, so the change is immediate, but poll to stay honest about the bound.
    let refused = poll(Duration::from_secs(10), async || {
        match backend.encrypt(version.ctx(), b"x", b"").await {
            Err(BackendError::ExternalKeyDisabled) => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(
        refused.is_some(),
        "encrypt still works on a disabled external key"
    );
    assert!(matches!(
        backend.decrypt(version.ctx(), &before, b"").await,
        Err(BackendError::ExternalKeyDisabled)
    ));
    assert_eq!(backend.status(), InstanceStatus::CONNECTED);

    ekm().enable_key(&ctx(), &key).await.unwrap();
    let after = poll(Duration::from_secs(10), async || {
        backend
            .encrypt(version.ctx(), b"enabled again", b"")
            .await
            .ok()
    })
    .await;
    let after = after.expect("encrypt refused after the key was enabled");
    assert_eq!(
        &*backend.decrypt(version.ctx(), &after, b"").await.unwrap(),
        b"enabled again"
    );
    assert_eq!(
        &*backend.decrypt(version.ctx(), &before, b"").await.unwrap(),
        b"written while enabled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_wrong_secret_is_invalid_credentials() {
    let proxy = TestProxy::start().await;
    proxy.write("wrong-secret", &"A".repeat(44));
    let mut config = proxy.instance_config();
    config.secret = Some(kms_connector::backend::external::SecretRef {
        env: None,
        file: Some("wrong-secret".into()),
    });
    let backend = external(&proxy, &config);
    assert_eq!(
        backend.connect().await,
        error_status(ConnectionError::InvalidCredentials)
    );
    let key = ExternalKeyId::parse("any").unwrap();
    assert!(matches!(
        new_version(&backend, Some(&key)).await,
        Err(BackendError::Unavailable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_wrong_path_is_invalid_configuration() {
    let proxy = TestProxy::start().await;
    let mut config = proxy.instance_config();
    config.path = Some("/not-the-prefix/kms/xks/v1".into());
    assert_eq!(
        external(&proxy, &config).connect().await,
        error_status(ConnectionError::InvalidConfiguration)
    );
    config.path = Some("/kms/xks/v1".into());
    assert_eq!(
        external(&proxy, &config).connect().await,
        error_status(ConnectionError::InvalidConfiguration)
    );
}

/// A pin that does not match fails the handshake even with a CA that trusts the certificate; a
/// CA that does not trust it fails too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_untrusted_certificate_is_invalid_tls_configuration() {
    let proxy = TestProxy::start().await;
    let mut config = proxy.instance_config();
    config.certificate_sha256 = Some("00".repeat(32));
    assert_eq!(
        external(&proxy, &config).connect().await,
        error_status(ConnectionError::InvalidTlsConfiguration)
    );

    let stranger = certs::Authority::new("a CA the proxy never used").unwrap();
    proxy.write("stranger-ca.pem", stranger.cert_pem());
    let config = ExternalInstanceConfig {
        ca_file: Some("stranger-ca.pem".into()),
        certificate_sha256: None,
        ..proxy.instance_config()
    };
    assert_eq!(
        external(&proxy, &config).connect().await,
        error_status(ConnectionError::InvalidTlsConfiguration)
    );
}

/// The console model: fingerprint only, no CA; connection and crypto work. The pin may be given
/// upper-case with colons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_pin_without_ca_connects() {
    let proxy = TestProxy::start().await;
    let colons: Vec<String> = proxy
        .fingerprint
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8(c.to_vec()).unwrap().to_ascii_uppercase())
        .collect();
    let config = ExternalInstanceConfig {
        ca_file: None,
        certificate_sha256: Some(colons.join(":")),
        ..proxy.instance_config()
    };
    let backend = external(&proxy, &config);
    assert_eq!(backend.connect().await, InstanceStatus::CONNECTED);
    let key = create_key("pinned", BOTH).await;
    let version = new_version(&backend, Some(&key)).await.unwrap();
    let payload = backend
        .encrypt(version.ctx(), b"pinned", b"")
        .await
        .unwrap();
    assert_eq!(
        &*backend.decrypt(version.ctx(), &payload, b"").await.unwrap(),
        b"pinned"
    );
}

/// The JSON `xki-proxy credentials new` prints is a complete instance configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_settings_file_connects() {
    let proxy = TestProxy::start().await;
    let secret = std::fs::read_to_string(proxy.dir().join("xki-secret")).unwrap();
    let settings = xki_proxy::credentials::ConnectionSettings {
        xks_proxy_uri_endpoint: format!("https://{}:{}", xki::HOST, proxy.port),
        xks_proxy_uri_path: format!("{}/kms/xks/v1", xki::PREFIX),
        xks_proxy_authentication_credential: xki_proxy::credentials::AuthenticationCredential {
            access_key_id: proxy.access_key_id.clone(),
            raw_secret_access_key: secret,
        },
        server_certificate_sha256: proxy.fingerprint.clone(),
        connectivity: "private-link".into(),
    };
    proxy.write(
        "connection.json",
        &serde_json::to_string_pretty(&settings).unwrap(),
    );
    let config = ExternalInstanceConfig {
        settings_file: Some("connection.json".into()),
        ca_file: Some("ca.pem".into()),
        timeout_ms: Some(5000),
        ..ExternalInstanceConfig::default()
    };
    let backend = external(&proxy, &config);
    assert_eq!(backend.connect().await, InstanceStatus::CONNECTED);
}

/// Mutual TLS: with the client certificate the proxy expects, connected; without one, the
/// handshake is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_mutual_tls() {
    let client_ca = certs::Authority::new("kms-connector client CA").unwrap();
    let name = "kms-connector.test";
    let proxy = TestProxy::start_with(Some(xki::Mtls {
        ca_pem: client_ca.cert_pem().to_owned(),
        allowed_name: name.into(),
    }))
    .await;
    let identity = client_ca.issue_client(name, &[name]).unwrap();
    proxy.write("client.pem", &identity.cert_pem);
    proxy.write("client.key", &identity.key_pem);
    let with_identity = ExternalInstanceConfig {
        client_cert_file: Some("client.pem".into()),
        client_key_file: Some("client.key".into()),
        ..proxy.instance_config()
    };
    assert_eq!(
        external(&proxy, &with_identity).connect().await,
        InstanceStatus::CONNECTED
    );
    assert_eq!(
        external(&proxy, &proxy.instance_config()).connect().await,
        error_status(ConnectionError::InvalidTlsConfiguration)
    );
}

/// No TCP → NOT_REACHABLE; a peer that never answers → TIMED_OUT within the call budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_unreachable_and_silent_endpoints() {
    let proxy = TestProxy::start().await;
    let config = ExternalInstanceConfig {
        endpoint: Some(format!("https://{}:{}", xki::HOST, xki::closed_port())),
        ..proxy.instance_config()
    };
    assert_eq!(
        external(&proxy, &config).connect().await,
        error_status(ConnectionError::NotReachable)
    );

    let (port, _silent) = xki::silent_server().await;
    let config = ExternalInstanceConfig {
        endpoint: Some(format!("https://{}:{port}", xki::HOST)),
        timeout_ms: Some(300),
        ..proxy.instance_config()
    };
    let started = Instant::now();
    assert_eq!(
        external(&proxy, &config).connect().await,
        error_status(ConnectionError::TimedOut)
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

/// The proxy stops: the health checks take the instance out of Connected within one interval
/// plus one call budget, and crypto is refused; the proxy comes back on the same port: the
/// instance is Connected again on its own. Every change is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_proxy_down_and_back() {
    let mut proxy = TestProxy::start().await;
    let config = ExternalInstanceConfig {
        health_interval_secs: Some(1),
        timeout_ms: Some(1000),
        ..proxy.instance_config()
    };
    let backend = external(&proxy, &config);
    let mut changes = backend.subscribe();
    let _checks = backend.start();
    assert_eq!(backend.connect().await, InstanceStatus::CONNECTED);
    let key = create_key("down-and-back", BOTH).await;
    let version = new_version(&backend, Some(&key)).await.unwrap();
    let before = backend
        .encrypt(version.ctx(), b"before the outage", b"")
        .await
        .unwrap();
    let bound = backend.detection_bound();
    assert_eq!(bound, Duration::from_secs(2));
    changes.borrow_and_update();

    proxy.stop().await;
    let stopped = Instant::now();
    let left = poll(bound + Duration::from_secs(3), async || {
        (backend.status().state != ConnectionState::Connected).then(|| stopped.elapsed())
    })
    .await
    .expect("still Connected long after the proxy stopped");
    eprintln!("left Connected {left:?} after the proxy stopped (bound {bound:?})");
    assert!(
        left <= bound + Duration::from_millis(500),
        "{left:?} > {bound:?}"
    );
    assert_eq!(
        backend.status(),
        error_status(ConnectionError::NotReachable)
    );
    assert!(changes.has_changed().unwrap());
    assert_eq!(
        *changes.borrow_and_update(),
        error_status(ConnectionError::NotReachable)
    );
    // A proxy that is down is a transient failure: callers may retry.
    assert!(matches!(
        backend.encrypt(version.ctx(), b"x", b"").await,
        Err(BackendError::TemporarilyUnavailable(_))
    ));
    assert!(matches!(
        backend.decrypt(version.ctx(), &before, b"").await,
        Err(BackendError::TemporarilyUnavailable(_))
    ));

    proxy.restart().await;
    let restarted = Instant::now();
    let back = poll(bound + Duration::from_secs(3), async || {
        (backend.status() == InstanceStatus::CONNECTED).then(|| restarted.elapsed())
    })
    .await
    .expect("not Connected again after the proxy came back");
    eprintln!("Connected again {back:?} after the proxy restarted");
    assert_eq!(*changes.borrow_and_update(), InstanceStatus::CONNECTED);
    assert_eq!(
        &*backend.decrypt(version.ctx(), &before, b"").await.unwrap(),
        b"before the outage"
    );
}

/// Without waiting for a health check: the first cryptographic call that cannot reach the proxy
/// takes the instance to Error, and the next is refused without a network call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_crypto_failure_marks_the_instance() {
    let mut proxy = TestProxy::start().await;
    let backend = connected(&proxy).await;
    let key = create_key("crypto-failure", BOTH).await;
    let version = new_version(&backend, Some(&key)).await.unwrap();
    proxy.stop().await;
    match backend.encrypt(version.ctx(), b"x", b"").await {
        Err(BackendError::TemporarilyUnavailable(_)) => {}
        other => panic!("encrypt with the proxy stopped: {other:?}"),
    }
    assert_eq!(
        backend.status(),
        error_status(ConnectionError::NotReachable)
    );
    proxy.restart().await;
    assert!(
        matches!(
            backend.encrypt(version.ctx(), b"x", b"").await,
            Err(BackendError::TemporarilyUnavailable(_))
        ),
        "still Error until a check passes"
    );
    assert_eq!(backend.check_health().await, InstanceStatus::CONNECTED);
    backend.encrypt(version.ctx(), b"x", b"").await.unwrap();
}

/// Disconnected stays Disconnected (health checks leave it alone) until connect().
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_disconnected_stays_disconnected() {
    let proxy = TestProxy::start().await;
    let config = ExternalInstanceConfig {
        health_interval_secs: Some(1),
        timeout_ms: Some(1000),
        ..proxy.instance_config()
    };
    let backend = external(&proxy, &config);
    let _checks = backend.start();
    assert_eq!(backend.connect().await, InstanceStatus::CONNECTED);
    let key = create_key("disconnected", BOTH).await;
    let version = new_version(&backend, Some(&key)).await.unwrap();
    let disconnected = InstanceStatus {
        state: ConnectionState::Disconnected,
        error: None,
    };
    assert_eq!(backend.disconnect(), disconnected);
    let mut changes = backend.subscribe();
    // Not waiting for a server: watching that nothing happens over three check intervals.
    let quiet = tokio::time::timeout(3 * backend.health_interval(), changes.changed()).await;
    assert!(
        quiet.is_err(),
        "state changed while disconnected: {:?}",
        backend.status()
    );
    assert_eq!(backend.status(), disconnected);
    assert_eq!(backend.check_health().await, disconnected);
    assert!(matches!(
        backend.encrypt(version.ctx(), b"x", b"").await,
        Err(BackendError::Unavailable(_))
    ));
    assert_eq!(backend.connect().await, InstanceStatus::CONNECTED);
    backend.encrypt(version.ctx(), b"x", b"").await.unwrap();
}
