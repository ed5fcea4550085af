//! The `KeyManager` conformance suite: every implementation must pass it unchanged.

use ekm::{
    CreateKey, DecryptRequest, EncryptOutput, EncryptRequest, Error, KeyManager, KeyState, KeyUsage,
};
use schemas::xki::ExternalKeyId;
use zeroize::Zeroizing;

use super::ctx;

fn id(text: &str) -> ExternalKeyId {
    ExternalKeyId::parse(text).unwrap()
}

async fn create(m: &dyn KeyManager, name: &str, usage: KeyUsage) -> ExternalKeyId {
    let info = m
        .create_key(
            &ctx(),
            CreateKey {
                id: Some(id(name)),
                usage,
                description: Some("conformance".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(info.state, KeyState::Enabled);
    assert_eq!(info.current_version, 1);
    info.id
}

pub async fn encrypt(
    m: &dyn KeyManager,
    key: &ExternalKeyId,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<EncryptOutput, Error> {
    m.encrypt(
        &ctx(),
        key,
        EncryptRequest {
            plaintext: Zeroizing::new(plaintext.to_vec()),
            aad: aad.to_vec(),
            want_cdiv: false,
        },
    )
    .await
}

pub fn decrypt_request(out: &EncryptOutput, aad: &[u8]) -> DecryptRequest {
    DecryptRequest {
        ciphertext: out.ciphertext.clone(),
        iv: out.iv.clone(),
        tag: out.tag.clone(),
        ciphertext_metadata: out.ciphertext_metadata.clone(),
        aad: aad.to_vec(),
    }
}

pub async fn decrypt(
    m: &dyn KeyManager,
    key: &ExternalKeyId,
    request: DecryptRequest,
) -> Result<Vec<u8>, Error> {
    m.decrypt(&ctx(), key, request).await.map(|p| p.to_vec())
}

pub async fn round_trips(m: &dyn KeyManager, prefix: &str) {
    let key = create(m, &format!("{prefix}-rt"), KeyUsage::BOTH).await;
    let limits = m.limits();
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"hello".to_vec(), b"context".to_vec()),
        (vec![], vec![]),
        (vec![7; 32], vec![]),
        (vec![0xab; 4300], vec![0xcd; 8192]),
        (
            vec![1; limits.max_data_bytes],
            vec![2; limits.max_aad_bytes],
        ),
    ];
    for (plaintext, aad) in cases {
        let out = encrypt(m, &key, &plaintext, &aad).await.unwrap();
        assert_eq!(out.ciphertext.len(), plaintext.len());
        assert_eq!(out.iv.len(), 12);
        assert_eq!(out.tag.len(), 16);
        assert!(out.ciphertext_metadata.len() <= 20);
        assert_eq!(out.key_version, 1);
        assert!(out.cdiv.is_none());
        if !plaintext.is_empty() {
            assert_ne!(out.ciphertext, plaintext);
        }
        let back = decrypt(m, &key, decrypt_request(&out, &aad)).await.unwrap();
        assert_eq!(back, plaintext);
    }
    // Fresh IVs: the same input never gives the same output.
    let a = encrypt(m, &key, b"same", b"").await.unwrap();
    let b = encrypt(m, &key, b"same", b"").await.unwrap();
    assert_ne!(a.iv, b.iv);
    assert_ne!(a.ciphertext, b.ciphertext);
    // CDIV: SHA-256 over aad ‖ metadata ‖ iv ‖ ciphertext ‖ tag.
    let out = m
        .encrypt(
            &ctx(),
            &key,
            EncryptRequest {
                plaintext: Zeroizing::new(b"integrity".to_vec()),
                aad: b"aad".to_vec(),
                want_cdiv: true,
            },
        )
        .await
        .unwrap();
    let expected = schemas::xki::aad::cdiv(
        b"aad",
        &out.ciphertext_metadata,
        &out.iv,
        &out.ciphertext,
        &out.tag,
    );
    assert_eq!(out.cdiv, Some(expected));
    // Oversized input is a validation error, not a crypto one.
    let too_long = encrypt(m, &key, &vec![0; limits.max_data_bytes + 1], b"").await;
    assert!(
        matches!(too_long, Err(Error::Validation(_))),
        "{too_long:?}"
    );
    let too_much_aad = encrypt(m, &key, b"x", &vec![0; limits.max_aad_bytes + 1]).await;
    assert!(matches!(too_much_aad, Err(Error::Validation(_))));
}

pub async fn tampering_is_invalid_ciphertext(m: &dyn KeyManager, prefix: &str) {
    let key = create(m, &format!("{prefix}-tamper"), KeyUsage::BOTH).await;
    let aad = b"tenant=a".to_vec();
    let out = encrypt(m, &key, b"attack at dawn", &aad).await.unwrap();
    let good = decrypt_request(&out, &aad);
    let mut variants: Vec<(&str, DecryptRequest)> = Vec::new();
    let mut r = good.clone();
    r.ciphertext[0] ^= 1;
    variants.push(("ciphertext", r));
    let mut r = good.clone();
    r.iv[11] ^= 0x80;
    variants.push(("iv", r));
    let mut r = good.clone();
    r.tag[15] ^= 1;
    variants.push(("tag", r));
    let mut r = good.clone();
    r.aad[0] ^= 1;
    variants.push(("aad", r));
    let mut r = good.clone();
    r.aad.clear();
    variants.push(("aad removed", r));
    let mut r = good.clone();
    r.aad.push(0);
    variants.push(("aad extended", r));
    let mut r = good.clone();
    r.ciphertext_metadata[0] = 2; // other AAD format: parses, but the tag fails
    variants.push(("metadata format", r));
    let mut r = good.clone();
    r.ciphertext_metadata[0] = 9; // unknown format
    variants.push(("metadata unknown format", r));
    let mut r = good.clone();
    r.ciphertext_metadata[4] = 2; // a key version that does not exist
    variants.push(("metadata version", r));
    let mut r = good.clone();
    r.ciphertext_metadata.push(0);
    variants.push(("metadata extended", r));
    let mut r = good.clone();
    r.ciphertext_metadata.clear();
    variants.push(("metadata removed", r));
    let mut r = good.clone();
    r.ciphertext.truncate(3);
    variants.push(("ciphertext truncated", r));
    for (what, request) in variants {
        let got = decrypt(m, &key, request).await;
        assert_eq!(got, Err(Error::InvalidCiphertext), "tampered {what}");
    }
    // Bad lengths are validation errors.
    let mut r = good.clone();
    r.iv.truncate(8);
    assert!(matches!(
        decrypt(m, &key, r).await,
        Err(Error::Validation(_))
    ));
    let mut r = good.clone();
    r.tag.truncate(12);
    assert!(matches!(
        decrypt(m, &key, r).await,
        Err(Error::Validation(_))
    ));
    let mut r = good.clone();
    r.ciphertext_metadata = vec![1; 21];
    assert!(matches!(
        decrypt(m, &key, r).await,
        Err(Error::Validation(_))
    ));
    // And the untouched request still works (nothing got stuck after the failures).
    assert_eq!(decrypt(m, &key, good).await.unwrap(), b"attack at dawn");
}

pub async fn key_usage_enforced(m: &dyn KeyManager, prefix: &str) {
    // A ciphertext made by a key that may do both, to feed decrypt-less keys.
    for (encrypt_ok, decrypt_ok) in [(true, true), (true, false), (false, true), (false, false)] {
        let usage = KeyUsage {
            encrypt: encrypt_ok,
            decrypt: decrypt_ok,
        };
        let name = format!("{prefix}-u{}{}", u8::from(encrypt_ok), u8::from(decrypt_ok));
        let key = create(m, &name, usage).await;
        assert_eq!(m.describe_key(&ctx(), &key).await.unwrap().usage, usage);
        let enc = encrypt(m, &key, b"data", b"a").await;
        if encrypt_ok {
            let out = enc.unwrap();
            let dec = decrypt(m, &key, decrypt_request(&out, b"a")).await;
            if decrypt_ok {
                assert_eq!(dec.unwrap(), b"data");
            } else {
                assert!(
                    matches!(dec, Err(Error::KeyUsageNotPermitted { .. })),
                    "{name}: {dec:?}"
                );
            }
        } else {
            assert!(
                matches!(enc, Err(Error::KeyUsageNotPermitted { .. })),
                "{name}: {enc:?}"
            );
            // A well-formed request for version 1: refused for usage before any crypto.
            let request = DecryptRequest {
                ciphertext: vec![0; 4],
                iv: vec![0; 12],
                tag: vec![0; 16],
                ciphertext_metadata: vec![1, 0, 0, 0, 1],
                aad: vec![],
            };
            let dec = decrypt(m, &key, request).await;
            if decrypt_ok {
                assert_eq!(dec, Err(Error::InvalidCiphertext), "{name}");
            } else {
                assert!(
                    matches!(dec, Err(Error::KeyUsageNotPermitted { .. })),
                    "{name}"
                );
            }
        }
    }
}

/// An integrity value promises KMS that Decrypt will work: a key that cannot decrypt refuses
/// to give one (with or without AAD), and still encrypts without.
pub async fn integrity_value_needs_decrypt(m: &dyn KeyManager, prefix: &str) {
    let usage = KeyUsage {
        encrypt: true,
        decrypt: false,
    };
    let key = create(m, &format!("{prefix}-cdiv-enc-only"), usage).await;
    for aad in [&b""[..], b"some aad"] {
        let request = EncryptRequest {
            plaintext: Zeroizing::new(b"promise".to_vec()),
            aad: aad.to_vec(),
            want_cdiv: true,
        };
        let refused = m.encrypt(&ctx(), &key, request).await;
        assert!(
            matches!(
                refused,
                Err(Error::KeyUsageNotPermitted {
                    operation: ekm::Operation::Decrypt,
                    ..
                })
            ),
            "AAD {aad:?}: {refused:?}"
        );
        let out = encrypt(m, &key, b"no promise", aad).await.unwrap();
        assert!(out.cdiv.is_none());
    }
}

pub async fn lifecycle(m: &dyn KeyManager, prefix: &str) {
    let c = ctx();
    let key = create(m, &format!("{prefix}-life"), KeyUsage::BOTH).await;
    let out = encrypt(m, &key, b"keep", b"").await.unwrap();
    // Duplicate id.
    let dup = m
        .create_key(
            &c,
            CreateKey {
                id: Some(key.clone()),
                usage: KeyUsage::BOTH,
                description: None,
            },
        )
        .await;
    assert!(matches!(dup, Err(Error::KeyAlreadyExists(_))), "{dup:?}");
    // Enabled keys cannot be scheduled for deletion.
    let r = m.schedule_key_deletion(&c, &key, Some(7)).await;
    assert!(matches!(r, Err(Error::InvalidKeyState { .. })), "{r:?}");
    // Disabled: no crypto, idempotent, describe says so.
    assert_eq!(
        m.disable_key(&c, &key).await.unwrap().state,
        KeyState::Disabled
    );
    assert_eq!(
        m.disable_key(&c, &key).await.unwrap().state,
        KeyState::Disabled
    );
    assert!(matches!(
        encrypt(m, &key, b"x", b"").await,
        Err(Error::KeyDisabled(_))
    ));
    let dec = decrypt(m, &key, decrypt_request(&out, b"")).await;
    assert!(matches!(dec, Err(Error::KeyDisabled(_))));
    assert!(matches!(
        m.rotate_key(&c, &key).await,
        Err(Error::KeyDisabled(_))
    ));
    // Window bounds.
    for bad in [0, 6, 31] {
        let r = m.schedule_key_deletion(&c, &key, Some(bad)).await;
        assert!(matches!(r, Err(Error::Validation(_))), "{bad}: {r:?}");
    }
    // Pending deletion: no crypto, no enable, no disable, no rotate.
    let pending = m.schedule_key_deletion(&c, &key, Some(7)).await.unwrap();
    let KeyState::PendingDeletion { delete_at } = pending.state else {
        panic!("{pending:?}");
    };
    let days = (delete_at - time::OffsetDateTime::now_utc()).whole_hours();
    assert!((7 * 24 - 1..=7 * 24).contains(&days), "{days}");
    assert!(matches!(
        encrypt(m, &key, b"x", b"").await,
        Err(Error::KeyPendingDeletion(_))
    ));
    let dec = decrypt(m, &key, decrypt_request(&out, b"")).await;
    assert!(matches!(dec, Err(Error::KeyPendingDeletion(_))));
    assert!(matches!(
        m.enable_key(&c, &key).await,
        Err(Error::InvalidKeyState { .. })
    ));
    assert!(matches!(
        m.disable_key(&c, &key).await,
        Err(Error::KeyPendingDeletion(_))
    ));
    assert!(matches!(
        m.rotate_key(&c, &key).await,
        Err(Error::KeyPendingDeletion(_))
    ));
    // Cancel → disabled → enable → the old ciphertext works again.
    assert_eq!(
        m.cancel_key_deletion(&c, &key).await.unwrap().state,
        KeyState::Disabled
    );
    let r = m.cancel_key_deletion(&c, &key).await;
    assert!(matches!(r, Err(Error::InvalidKeyState { .. })));
    assert_eq!(
        m.enable_key(&c, &key).await.unwrap().state,
        KeyState::Enabled
    );
    assert_eq!(
        decrypt(m, &key, decrypt_request(&out, b"")).await.unwrap(),
        b"keep"
    );
    // Unknown keys.
    let ghost = id(&format!("{prefix}-ghost"));
    assert_eq!(
        m.describe_key(&c, &ghost).await,
        Err(Error::KeyNotFound(ghost.clone()))
    );
    assert!(matches!(
        encrypt(m, &ghost, b"x", b"").await,
        Err(Error::KeyNotFound(_))
    ));
    assert!(matches!(
        m.enable_key(&c, &ghost).await,
        Err(Error::KeyNotFound(_))
    ));
}

pub async fn rotation_keeps_old_ciphertexts(m: &dyn KeyManager, prefix: &str) {
    let c = ctx();
    let key = create(m, &format!("{prefix}-rot"), KeyUsage::BOTH).await;
    let v1 = encrypt(m, &key, b"one", b"x").await.unwrap();
    assert_eq!(m.rotate_key(&c, &key).await.unwrap().current_version, 2);
    let v2 = encrypt(m, &key, b"two", b"x").await.unwrap();
    assert_eq!(m.rotate_key(&c, &key).await.unwrap().current_version, 3);
    let v3 = encrypt(m, &key, b"three", b"x").await.unwrap();
    assert_eq!((v1.key_version, v2.key_version, v3.key_version), (1, 2, 3));
    assert_ne!(v1.ciphertext_metadata, v2.ciphertext_metadata);
    for (out, text) in [(&v1, &b"one"[..]), (&v2, b"two"), (&v3, b"three")] {
        assert_eq!(
            decrypt(m, &key, decrypt_request(out, b"x")).await.unwrap(),
            text
        );
    }
    // Claiming another version in the metadata fails authentication.
    let mut forged = decrypt_request(&v2, b"x");
    forged.ciphertext_metadata[4] = 1;
    assert_eq!(
        decrypt(m, &key, forged).await,
        Err(Error::InvalidCiphertext)
    );
    assert_eq!(m.describe_key(&c, &key).await.unwrap().current_version, 3);
}

pub async fn generated_ids_and_listing(m: &dyn KeyManager, prefix: &str) {
    let c = ctx();
    let a = m
        .create_key(
            &c,
            CreateKey {
                id: None,
                usage: KeyUsage::BOTH,
                description: None,
            },
        )
        .await
        .unwrap();
    assert!(a.id.as_str().len() <= 128);
    assert!(
        a.id.as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    );
    let named = create(m, &format!("{prefix}-listed"), KeyUsage::default()).await;
    let listed = m.list_keys(&c).await.unwrap();
    let ids: Vec<_> = listed.iter().map(|k| k.id.clone()).collect();
    assert!(ids.contains(&a.id) && ids.contains(&named));
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    let long = m
        .create_key(
            &c,
            CreateKey {
                id: None,
                usage: KeyUsage::BOTH,
                description: Some("x".repeat(300)),
            },
        )
        .await;
    assert!(matches!(long, Err(Error::Validation(_))));
}

/// Every case, on one manager.
pub async fn run_all(m: &dyn KeyManager, prefix: &str) {
    round_trips(m, prefix).await;
    tampering_is_invalid_ciphertext(m, prefix).await;
    key_usage_enforced(m, prefix).await;
    integrity_value_needs_decrypt(m, prefix).await;
    lifecycle(m, prefix).await;
    rotation_keeps_old_ciphertexts(m, prefix).await;
    generated_ids_and_listing(m, prefix).await;
}
