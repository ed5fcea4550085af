//! The EKM's `ciphertextMetadata` (`ekm::ciphertext`): what parses is exactly what `encode`
//! writes (5 bytes, AAD format 1 or 2, key version ≥ 1), so parse → encode gives the input back;
//! every metadata the EKM writes parses to itself; the decrypt-size checks refuse what the spec
//! refuses and the GCM AAD carries the caller's AAD and the metadata as the spec builds it.
#![no_main]

use ekm::ciphertext::{AadFormat, CiphertextMetadata, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(meta) = CiphertextMetadata::parse(rest) {
                assert_eq!(meta.encode(), rest, "parse → encode is not the identity");
                assert!(meta.key_version >= 1);
            } else {
                let writable = rest.len() == 5
                    && matches!(rest[0], 1 | 2)
                    && rest[1..].iter().any(|b| *b != 0);
                assert!(!writable, "refused metadata the EKM writes: {rest:?}");
            }
        }
        1 => {
            let format = if rest.first().is_some_and(|b| b & 1 == 1) {
                AadFormat::Sha256
            } else {
                AadFormat::Raw
            };
            let version = rest
                .get(1..5)
                .map_or(1, |v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]).max(1));
            let meta = CiphertextMetadata {
                aad_format: format,
                key_version: version,
            };
            assert_eq!(CiphertextMetadata::parse(&meta.encode()), Ok(meta));
        }
        _ => {
            // The caller's AAD is the rest; the metadata is its first byte's worth of bytes.
            let (ctm, aad) =
                rest.split_at(usize::from(rest.first().copied().unwrap_or(0) % 24).min(rest.len()));
            match AadFormat::Raw.gcm_aad(aad, ctm) {
                Ok(built) => {
                    let mut expected = (aad.len() as u16).to_be_bytes().to_vec();
                    expected.extend_from_slice(aad);
                    expected.push(ctm.len() as u8);
                    expected.extend_from_slice(ctm);
                    assert_eq!(built, expected);
                }
                Err(_) => assert!(aad.len() > 65535 || ctm.len() > 255),
            }
            let hashed = AadFormat::Sha256.gcm_aad(aad, ctm);
            assert!(hashed.is_ok() || ctm.len() > 255);
            let limits = Limits::default();
            let request = ekm::DecryptRequest {
                ciphertext: aad.to_vec(),
                aad: Vec::new(),
                iv: vec![0; 12],
                tag: vec![0; 16],
                ciphertext_metadata: ctm.to_vec(),
            };
            let checked = limits.check_decrypt(&request);
            if checked.is_ok() {
                assert!(ctm.len() == 5 && aad.len() <= limits.max_data_bytes);
            }
        }
    }
});
