//! The kms-connector's `CiphertextBlob` and its external payload: a blob that decodes gives the
//! same text back (`to_text`); a new blob (`encode`) decodes to format 2 around its payload; the
//! readings of a blob are its format-2 payload (and, when the backend's unmarked payloads may
//! start with the format byte, also the whole body as format 1) or else the whole body as
//! format 1; an XKI payload that unpacks packs back to the same bytes; any payload the connector
//! packs unpacks to the same pieces.
#![no_main]

use kms_connector::blob::{Blob, ContextBinding, FORMAT_2, XkiPayload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        // The parameter as a client sends it.
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(blob) = Blob::decode(text) {
                assert_eq!(blob.to_text(), text, "decode → to_text is not the identity");
                assert!(!blob.body.is_empty());
                check_readings(&blob);
                let again = Blob::decode(&Blob::encode(&blob.version, &blob.body)).unwrap();
                assert_eq!(again.version, blob.version);
                assert_eq!(again.body.split_first(), Some((&FORMAT_2, &blob.body[..])));
                check_readings(&again);
                for (payload, _) in blob.readings(false) {
                    check_unpack(payload);
                }
            }
        }
        // An external payload on its own.
        1 => check_unpack(rest),
        // Pieces chosen by the fuzzer: pack → unpack is the identity.
        _ => {
            let mut at = rest;
            let mut take = |n: usize| {
                let (head, tail) = at.split_at(n.min(at.len()));
                at = tail;
                head.to_vec()
            };
            let lens = take(2);
            let iv_len = usize::from(lens.first().copied().unwrap_or(12) % 40);
            let ctm_len = usize::from(lens.get(1).copied().unwrap_or(5) % 40);
            let payload = XkiPayload {
                iv: take(iv_len),
                ciphertext_metadata: take(ctm_len),
                tag: take(16),
                ciphertext: at.to_vec(),
            };
            match payload.pack() {
                Ok(packed) => {
                    if payload.ciphertext.is_empty() {
                        // An empty ciphertext is not a payload the connector writes.
                        assert!(XkiPayload::unpack(&packed).is_err());
                    } else {
                        assert_eq!(XkiPayload::unpack(&packed).as_ref(), Ok(&payload));
                    }
                }
                Err(_) => assert_ne!(payload.tag.len(), 16, "refused a packable payload"),
            }
        }
    }
});

fn check_unpack(bytes: &[u8]) {
    if let Ok(payload) = XkiPayload::unpack(bytes) {
        assert_eq!(payload.tag.len(), 16);
        assert!(!payload.ciphertext.is_empty());
        assert_eq!(
            payload.pack().as_deref(),
            Ok(bytes),
            "unpack → pack is not the identity"
        );
    }
}

fn check_readings(blob: &Blob) {
    let marked = blob.body.first() == Some(&FORMAT_2);
    for unmarked_may_look_marked in [false, true] {
        let readings = blob.readings(unmarked_may_look_marked);
        let expected: Vec<(&[u8], ContextBinding)> = match (marked, unmarked_may_look_marked) {
            (true, false) => vec![(&blob.body[1..], ContextBinding::Canonical)],
            (true, true) => vec![
                (&blob.body[1..], ContextBinding::Canonical),
                (&blob.body[..], ContextBinding::Legacy),
            ],
            (false, _) => vec![(&blob.body[..], ContextBinding::Legacy)],
        };
        assert_eq!(readings, expected);
    }
}
