//! The PKCS#11 key manager against a real SoftHSM2 token: the conformance suite, persistence
//! across restarts, key material confinement, adoption, deletion, health and concurrency.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::conformance::{self, decrypt, decrypt_request, encrypt};
use common::{config, ctx, new_token, pkcs11};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use ekm::hsm::find_token;
use ekm::pkcs11::Pkcs11KeyManager;
use ekm::{AdoptKey, CreateKey, Error, HealthStatus, KeyManager, KeyOrigin, KeyState, KeyUsage};
use schemas::xki::ExternalKeyId;

fn id(text: &str) -> ExternalKeyId {
    ExternalKeyId::parse(text).unwrap()
}

async fn open(token: &common::TestToken) -> Pkcs11KeyManager {
    Pkcs11KeyManager::open(config(token)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let token = new_token("conf");
    let m = open(&token).await;
    conformance::run_all(&m, "p").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_versions_survive_restart() {
    let token = new_token("restart");
    let c = ctx();
    let (disabled, rotated, pending, old) = {
        let m = open(&token).await;
        let disabled = m
            .create_key(
                &c,
                CreateKey {
                    id: Some(id("d")),
                    usage: KeyUsage::BOTH,
                    description: None,
                },
            )
            .await
            .unwrap()
            .id;
        m.disable_key(&c, &disabled).await.unwrap();
        let rotated = m
            .create_key(
                &c,
                CreateKey {
                    id: Some(id("r")),
                    usage: KeyUsage::BOTH,
                    description: Some("rotated".into()),
                },
            )
            .await
            .unwrap()
            .id;
        let old = encrypt(&m, &rotated, b"before rotation", b"aad")
            .await
            .unwrap();
        m.rotate_key(&c, &rotated).await.unwrap();
        let pending = m
            .create_key(
                &c,
                CreateKey {
                    id: Some(id("p")),
                    usage: KeyUsage::BOTH,
                    description: None,
                },
            )
            .await
            .unwrap()
            .id;
        m.disable_key(&c, &pending).await.unwrap();
        m.schedule_key_deletion(&c, &pending, Some(10))
            .await
            .unwrap();
        (disabled, rotated, pending, old)
    }; // dropped: workers stop, sessions close, the login ends
    let m = open(&token).await;
    assert_eq!(
        m.describe_key(&c, &disabled).await.unwrap().state,
        KeyState::Disabled
    );
    assert!(matches!(
        encrypt(&m, &disabled, b"x", b"").await,
        Err(Error::KeyDisabled(_))
    ));
    let info = m.describe_key(&c, &rotated).await.unwrap();
    assert_eq!(info.current_version, 2);
    assert_eq!(info.description.as_deref(), Some("rotated"));
    assert_eq!(
        decrypt(&m, &rotated, decrypt_request(&old, b"aad"))
            .await
            .unwrap(),
        b"before rotation"
    );
    assert_eq!(
        encrypt(&m, &rotated, b"new", b"")
            .await
            .unwrap()
            .key_version,
        2
    );
    assert!(matches!(
        m.describe_key(&c, &pending).await.unwrap().state,
        KeyState::PendingDeletion { .. }
    ));
    let ids: Vec<_> = m
        .list_keys(&c)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, vec![disabled, pending, rotated]); // sorted, probe key not listed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_material_cannot_leave() {
    let token = new_token("confine");
    let m = open(&token).await;
    let c = ctx();
    for (n, usage) in [KeyUsage::BOTH, KeyUsage::default()]
        .into_iter()
        .enumerate()
    {
        let key = m
            .create_key(
                &c,
                CreateKey {
                    id: Some(id(&format!("k{n}"))),
                    usage,
                    description: None,
                },
            )
            .await
            .unwrap()
            .id;
        m.rotate_key(&c, &key).await.unwrap();
    }
    // Every secret key object on the token (managed versions and the probe key).
    let p = pkcs11();
    let slot = find_token(&p, &ekm::pkcs11::TokenSelector::Label(token.label.clone())).unwrap();
    let session = p.open_ro_session(slot).unwrap(); // shares the manager's login
    let keys = session
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
        .unwrap();
    assert_eq!(
        keys.len(),
        2 + 2 + 1,
        "two versions per key plus the probe key"
    );
    for key in keys {
        let info = session
            .get_attribute_info(key, &[AttributeType::Value])
            .unwrap();
        assert!(
            matches!(info.as_slice(), [AttributeInfo::Sensitive]),
            "C_GetAttributeValue(CKA_VALUE) must fail with CKR_ATTRIBUTE_SENSITIVE: {info:?}"
        );
        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::Value,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::KeyType,
                    AttributeType::ValueLen,
                    AttributeType::Label,
                ],
            )
            .unwrap();
        assert!(
            !attrs.iter().any(|a| matches!(a, Attribute::Value(_))),
            "value returned"
        );
        for expected in [
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
        ] {
            assert!(
                attrs.contains(&expected),
                "{expected:?} missing in {attrs:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_itself_enforces_usage() {
    // Defence in depth: even bypassing the EKM's own check, the token refuses.
    let token = new_token("hsmusage");
    let m = open(&token).await;
    let c = ctx();
    let key = m
        .create_key(
            &c,
            CreateKey {
                id: Some(id("enc-only")),
                usage: KeyUsage {
                    encrypt: true,
                    decrypt: false,
                },
                description: None,
            },
        )
        .await
        .unwrap()
        .id;
    let label = m.version_labels(&c, &key).await.unwrap().remove(0);
    let p = pkcs11();
    let slot = find_token(&p, &ekm::pkcs11::TokenSelector::Label(token.label.clone())).unwrap();
    let session = p.open_ro_session(slot).unwrap();
    let handle = session
        .find_objects(&[Attribute::Label(label.into_bytes())])
        .unwrap()[0];
    let attrs = session
        .get_attributes(handle, &[AttributeType::Encrypt, AttributeType::Decrypt])
        .unwrap();
    assert_eq!(
        attrs,
        vec![Attribute::Encrypt(true), Attribute::Decrypt(false)]
    );
    let mut iv = [0u8; 12];
    let params = cryptoki::mechanism::aead::GcmParams::new(&mut iv, b"", 128.into()).unwrap();
    let err = session
        .decrypt_init(&cryptoki::mechanism::Mechanism::AesGcm(params), handle)
        .unwrap_err();
    assert!(
        matches!(
            err,
            cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::KeyFunctionNotPermitted, _)
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_existing_hsm_key() {
    let token = new_token("adopt");
    let m = open(&token).await;
    let c = ctx();
    let p = pkcs11();
    let slot = find_token(&p, &ekm::pkcs11::TokenSelector::Label(token.label.clone())).unwrap();
    let session = p.open_rw_session(slot).unwrap();
    let make_with = |label: &str, private: bool, extractable: bool, len: u64| {
        session
            .generate_key(
                &cryptoki::mechanism::Mechanism::AesKeyGen,
                &[
                    Attribute::Token(true),
                    Attribute::Private(private),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(extractable),
                    Attribute::ValueLen(len.into()),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Wrap(true),
                    Attribute::Derive(true),
                    Attribute::Label(label.as_bytes().to_vec()),
                ],
            )
            .unwrap()
    };
    let make = |label: &str, extractable: bool, len: u64| make_with(label, true, extractable, len);
    make("legacy-good", false, 32);
    make("legacy-extractable", true, 32);
    make("legacy-short", false, 16);
    make_with("legacy-public", false, false, 32);
    make("legacy-twin", false, 32);
    make("legacy-twin", false, 32);
    let adopt = |label: &str, name: Option<&str>| AdoptKey {
        id: name.map(id),
        hsm_label: label.into(),
        usage: KeyUsage {
            encrypt: false,
            decrypt: true,
        },
        description: Some("from pkcs11-tool".into()),
    };
    let info = m
        .adopt_key(&c, adopt("legacy-good", Some("legacy")))
        .await
        .unwrap();
    assert_eq!(info.origin, KeyOrigin::Adopted);
    assert!(matches!(
        encrypt(&m, &info.id, b"x", b"").await,
        Err(Error::KeyUsageNotPermitted { .. })
    ));
    // The object's own attributes follow the requested usage.
    let handle = session
        .find_objects(&[Attribute::Label(b"legacy-good".to_vec())])
        .unwrap()[0];
    assert_eq!(
        session
            .get_attributes(
                handle,
                &[
                    AttributeType::Encrypt,
                    AttributeType::Wrap,
                    AttributeType::Derive
                ]
            )
            .unwrap(),
        vec![
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Derive(false)
        ],
        "usage as requested, nothing else"
    );
    // Adopted keys rotate like any other; rotation gives a usable version 2.
    m.enable_key(&c, &info.id).await.unwrap();
    for (label, expected) in [
        ("legacy-good", "KeyAlreadyExists"),
        ("legacy-extractable", "Validation"),
        ("legacy-short", "Validation"),
        ("legacy-public", "Validation"),
        ("legacy-twin", "Validation"),
        ("no-such-label", "Validation"),
        ("ekm-health-probe", "Validation"),
    ] {
        let err = m.adopt_key(&c, adopt(label, None)).await.unwrap_err();
        assert!(format!("{err:?}").starts_with(expected), "{label}: {err:?}");
    }
    let err = m
        .adopt_key(&c, adopt("legacy-short", Some("legacy")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KeyAlreadyExists(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_destroys_objects_only_when_window_ends() {
    let token = new_token("purge");
    let m = open(&token).await;
    let c = ctx();
    let key = m
        .create_key(
            &c,
            CreateKey {
                id: Some(id("doomed")),
                usage: KeyUsage::BOTH,
                description: None,
            },
        )
        .await
        .unwrap()
        .id;
    m.rotate_key(&c, &key).await.unwrap();
    let labels = m.version_labels(&c, &key).await.unwrap();
    m.disable_key(&c, &key).await.unwrap();
    m.schedule_key_deletion(&c, &key, Some(7)).await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    assert!(m.purge_expired(now).await.unwrap().is_empty());
    assert!(
        m.purge_expired(now + time::Duration::days(6))
            .await
            .unwrap()
            .is_empty()
    );
    let p = pkcs11();
    let slot = find_token(&p, &ekm::pkcs11::TokenSelector::Label(token.label.clone())).unwrap();
    let session = p.open_ro_session(slot).unwrap();
    let count = |label: &str| {
        session
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .unwrap()
            .len()
    };
    assert!(labels.iter().all(|l| count(l) == 1));
    let purged = m
        .purge_expired(now + time::Duration::days(8))
        .await
        .unwrap();
    assert_eq!(purged, vec![key.clone()]);
    assert!(
        labels.iter().all(|l| count(l) == 0),
        "key objects destroyed"
    );
    assert_eq!(
        m.describe_key(&c, &key).await,
        Err(Error::KeyNotFound(key.clone()))
    );
    assert!(matches!(
        encrypt(&m, &key, b"x", b"").await,
        Err(Error::KeyNotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_sees_state_within_ttl() {
    let token = new_token("replica");
    let mut cfg = config(&token);
    cfg.state_ttl = Duration::from_millis(200);
    let a = Pkcs11KeyManager::open(cfg.clone()).await.unwrap();
    let b = Pkcs11KeyManager::open(cfg).await.unwrap();
    let c = ctx();
    let key = a
        .create_key(
            &c,
            CreateKey {
                id: Some(id("shared")),
                usage: KeyUsage::BOTH,
                description: None,
            },
        )
        .await
        .unwrap()
        .id;
    encrypt(&b, &key, b"x", b"").await.unwrap(); // b caches the enabled state
    a.disable_key(&c, &key).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        match encrypt(&b, &key, b"x", b"").await {
            Ok(_) => assert!(
                started.elapsed() < Duration::from_secs(2),
                "disable not seen"
            ),
            Err(Error::KeyDisabled(_)) => break,
            Err(e) => panic!("{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pin_and_missing_token_are_clear() {
    let token = new_token("pin");
    let mut cfg = config(&token);
    cfg.pin = secrecy::SecretString::from("wrong-pin");
    assert_eq!(
        Pkcs11KeyManager::open(cfg).await.unwrap_err(),
        Error::PinIncorrect
    );
    let mut cfg = config(&token);
    cfg.token = ekm::pkcs11::TokenSelector::Label("no-such-token".into());
    let err = Pkcs11KeyManager::open(cfg).await.unwrap_err();
    assert!(matches!(err, Error::TokenNotFound(_)), "{err:?}");
    assert!(err.to_string().contains("no-such-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_health_probe() {
    let token = new_token("health");
    let m = open(&token).await;
    let h = m.health(&ctx()).await.unwrap();
    assert_eq!(h.status, HealthStatus::Active, "{h:?}");
    assert_eq!(h.hsms.len(), 1);
    assert_eq!(h.hsms[0].id, token.label);
    assert!(h.hsms[0].model.contains("SoftHSM"), "{}", h.hsms[0].model);
    let fresh = m.probe_now().await;
    assert!(fresh.checked_at >= h.checked_at);
    assert!(fresh.hsms[0].probe_latency.is_some());
}

/// The background thread keeps probing (and its first deletion-reaper pass does not stop it):
/// the cached result keeps getting newer without anyone asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_probes_keep_health_fresh() {
    let token = new_token("bg-health");
    let mut cfg = config(&token);
    cfg.health_interval = Duration::from_millis(100);
    let m = Pkcs11KeyManager::open(cfg).await.unwrap();
    let first = m.health(&ctx()).await.unwrap().checked_at;
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = m.health(&ctx()).await.unwrap();
        if now.checked_at > first {
            assert_eq!(now.status, HealthStatus::Active, "{now:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no background probe in 5 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_clients() {
    let token = new_token("concurrency");
    let mut cfg = config(&token);
    cfg.queue_capacity = 1024;
    let m: Arc<dyn KeyManager> = Arc::new(Pkcs11KeyManager::open(cfg).await.unwrap());
    let c = ctx();
    let mut keys = Vec::new();
    for n in 0..4 {
        let key = m
            .create_key(
                &c,
                CreateKey {
                    id: Some(id(&format!("c{n}"))),
                    usage: KeyUsage::BOTH,
                    description: None,
                },
            )
            .await
            .unwrap()
            .id;
        keys.push(key);
    }
    let stop = std::time::Instant::now() + Duration::from_secs(3);
    let mut clients = Vec::new();
    for client in 0..64usize {
        let m = Arc::clone(&m);
        let key = keys[client % keys.len()].clone();
        clients.push(tokio::spawn(async move {
            let mut done = 0u64;
            while std::time::Instant::now() < stop {
                let plaintext = format!("client {client} message {done}").into_bytes();
                let aad = client.to_be_bytes();
                let out = encrypt(m.as_ref(), &key, &plaintext, &aad).await.unwrap();
                let back = decrypt(m.as_ref(), &key, decrypt_request(&out, &aad))
                    .await
                    .unwrap();
                assert_eq!(back, plaintext);
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for client in clients {
        let done = tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .expect("no deadlock")
            .unwrap();
        assert!(done > 0, "every client made progress");
        total += done;
    }
    assert!(total > 1000, "{total} round trips");
}

/// Regression: SoftHSM fails object writes that overlap a search in another session. Metadata
/// reads (a search per uncached lookup) racing admin changes must never surface an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_while_metadata_is_read() {
    let token = new_token("race");
    let m = Arc::new(open(&token).await);
    let c = ctx();
    let watched = m
        .create_key(
            &c,
            CreateKey {
                id: Some(id("watched")),
                usage: KeyUsage::BOTH,
                description: None,
            },
        )
        .await
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (m, stop, key) = (m.clone(), stop.clone(), watched.id.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                m.describe_key(&ctx(), &key).await.unwrap();
                m.list_keys(&ctx()).await.unwrap();
                reads += 1;
            }
            reads
        }));
    }
    for i in 0..20 {
        let key = m
            .create_key(
                &c,
                CreateKey {
                    id: Some(id(&format!("race-{i}"))),
                    usage: KeyUsage::BOTH,
                    description: None,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("create {i} failed during concurrent reads: {e}"));
        m.disable_key(&c, &key.id)
            .await
            .unwrap_or_else(|e| panic!("disable {i}: {e}"));
        m.enable_key(&c, &key.id)
            .await
            .unwrap_or_else(|e| panic!("enable {i}: {e}"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.await.unwrap() > 0, "the readers ran");
    }
}

/// Labels of the secret key objects on `token` that belong to key `id` (`ekm:<id>:v…`).
fn key_objects(token: &common::TestToken, id: &ExternalKeyId) -> Vec<String> {
    let p = pkcs11();
    let slot = find_token(&p, &ekm::pkcs11::TokenSelector::Label(token.label.clone())).unwrap();
    let session = p.open_ro_session(slot).unwrap(); // shares the managers' login
    let prefix = format!("ekm:{id}:v");
    let _shared = ekm::pkcs11::keys::searching();
    let objects = session
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
        .unwrap();
    let mut labels = Vec::new();
    for object in objects {
        let attrs = session
            .get_attributes(object, &[AttributeType::Label])
            .unwrap();
        if let Some(Attribute::Label(label)) = attrs.into_iter().next() {
            let label = String::from_utf8(label).unwrap();
            if label.starts_with(&prefix) {
                labels.push(label);
            }
        }
    }
    labels
}

/// Two writers on one token (replicas, or the server and the admin CLI; here two managers, each
/// with its own admin lock) rotating the same key at once: no rotation is lost, no key object
/// is left orphaned, and every ciphertext decrypts on either writer at once, although each
/// caches the key's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_no_change() {
    const ROTATIONS: u32 = 8;
    let token = new_token("cas");
    let a = Arc::new(open(&token).await);
    let b = Arc::new(open(&token).await);
    let key = a
        .create_key(
            &ctx(),
            CreateKey {
                id: Some(id("contended")),
                usage: KeyUsage::BOTH,
                description: None,
            },
        )
        .await
        .unwrap()
        .id;
    let mut writers = Vec::new();
    for m in [Arc::clone(&a), Arc::clone(&b)] {
        let key = key.clone();
        writers.push(tokio::spawn(async move {
            let mut sealed = Vec::new();
            for i in 0..ROTATIONS {
                m.rotate_key(&ctx(), &key).await.unwrap();
                let message = format!("after rotation {i}");
                let out = encrypt(m.as_ref(), &key, message.as_bytes(), b"aad")
                    .await
                    .unwrap();
                sealed.push((message, out));
            }
            sealed
        }));
    }
    let mut sealed = Vec::new();
    for w in writers {
        sealed.extend(w.await.unwrap());
    }
    let info = a.describe_key(&ctx(), &key).await.unwrap();
    assert_eq!(
        info.current_version,
        1 + 2 * ROTATIONS,
        "a rotation was lost"
    );
    let mut labels = a.version_labels(&ctx(), &key).await.unwrap();
    labels.sort();
    let mut objects = key_objects(&token, &key);
    objects.sort();
    assert_eq!(labels, objects, "every version has its object, no orphan");
    for (message, out) in &sealed {
        for m in [&a, &b] {
            let plain = decrypt(m.as_ref(), &key, decrypt_request(out, b"aad"))
                .await
                .unwrap_or_else(|e| panic!("v{}: {e}", out.key_version));
            assert_eq!(plain, message.as_bytes());
        }
    }
}

/// Two writers creating the same External Key ID at once: one wins, the other is told the key
/// exists, and only the winner's key object remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_id() {
    let token = new_token("cas-create");
    let a = Arc::new(open(&token).await);
    let b = Arc::new(open(&token).await);
    for round in 0..6 {
        let key = id(&format!("twin-{round}"));
        let create = |m: Arc<Pkcs11KeyManager>, key: ExternalKeyId| {
            tokio::spawn(async move {
                m.create_key(
                    &ctx(),
                    CreateKey {
                        id: Some(key),
                        usage: KeyUsage::BOTH,
                        description: None,
                    },
                )
                .await
            })
        };
        let (x, y) = (
            create(Arc::clone(&a), key.clone()),
            create(Arc::clone(&b), key.clone()),
        );
        let results = [x.await.unwrap(), y.await.unwrap()];
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {results:?}");
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(Error::KeyAlreadyExists(_)))),
            "round {round}: {results:?}"
        );
        assert_eq!(key_objects(&token, &key).len(), 1, "round {round}");
        encrypt(b.as_ref(), &key, b"x", b"").await.unwrap();
    }
}
