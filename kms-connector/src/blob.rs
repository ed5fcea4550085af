//! The ciphertext blob of Encrypt / GenerateDataKey*, documented in the README:
//!
//! ```text
//! format 2:  CiphertextBlob = Base64( KeyVersionId[36 ASCII] ‖ 0x02 ‖ payload )
//! format 1:  CiphertextBlob = Base64( KeyVersionId[36 ASCII] ‖ payload )      (read only)
//! software:  payload = IV[12] ‖ AES-256-GCM ciphertext ‖ tag[16]          (Alibaba's layout)
//! external:  payload = 0x01 ‖ u8 len(IV) ‖ IV ‖ u8 len(ctm) ‖ ctm ‖ tag[16] ‖ ciphertext
//! ```
//!
//! Decrypt takes no KeyId: the version id routes to the key, and the payload carries exactly what
//! the backend needs (for an external key, what the XKI proxy returned). The format says how the
//! `EncryptionContext` was bound ([`ContextBinding`]): every new blob is format 2; format 1 is
//! what the connector wrote before, and stays readable.
//!
//! A format-1 software payload starts with a random IV, so one in 256 begins with the format-2
//! byte by chance: such a blob is read as format 2 first and, if that does not authenticate, as
//! format 1 ([`Blob::readings`]). Neither reading can authenticate a blob of the other: they
//! differ in IV and AAD, and forging either is forging AES-GCM.

use crate::ids::KeyVersionId;

/// Why a blob cannot be used. Deliberately vague towards the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("The specified parameter CiphertextBlob is not valid.")]
pub struct InvalidBlob;

/// The format byte of format-2 blobs.
pub const FORMAT_2: u8 = 0x02;

/// How a blob's `EncryptionContext` was bound into its AAD (`crate::context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextBinding {
    /// Format 2: length-prefixed sorted pairs (`EncryptionContext::aad`).
    Canonical,
    /// Format 1: `k=v&…` (`EncryptionContext::legacy_aad`).
    Legacy,
}

/// A decoded blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The key version that encrypted.
    pub version: KeyVersionId,
    /// Everything after the version id: the format byte (format 2) and the backend's payload.
    pub body: Vec<u8>,
}

impl Blob {
    /// A new (format 2) blob: Base64 of `version ‖ 0x02 ‖ payload`.
    pub fn encode(version: &KeyVersionId, payload: &[u8]) -> String {
        let mut bytes = Vec::with_capacity(KeyVersionId::LEN + 1 + payload.len());
        bytes.extend_from_slice(version.as_str().as_bytes());
        bytes.push(FORMAT_2);
        bytes.extend_from_slice(payload);
        schemas::b64::encode(bytes)
    }

    /// The blob's text again (`decode` then `to_text` gives back the input).
    pub fn to_text(&self) -> String {
        let mut bytes = Vec::with_capacity(KeyVersionId::LEN + self.body.len());
        bytes.extend_from_slice(self.version.as_str().as_bytes());
        bytes.extend_from_slice(&self.body);
        schemas::b64::encode(bytes)
    }

    /// The (payload, binding) readings to try, in order. `unmarked_may_look_marked`: whether
    /// format-1 payloads of the key's backend may begin with [`FORMAT_2`] (software payloads
    /// begin with a random IV; external ones with their own format byte 0x01).
    pub fn readings(&self, unmarked_may_look_marked: bool) -> Vec<(&[u8], ContextBinding)> {
        match self.body.split_first() {
            Some((&FORMAT_2, payload)) if unmarked_may_look_marked => vec![
                (payload, ContextBinding::Canonical),
                (&self.body, ContextBinding::Legacy),
            ],
            Some((&FORMAT_2, payload)) => vec![(payload, ContextBinding::Canonical)],
            _ => vec![(&self.body, ContextBinding::Legacy)],
        }
    }

    /// Decodes a `CiphertextBlob` parameter.
    pub fn decode(text: &str) -> Result<Self, InvalidBlob> {
        let bytes = schemas::b64::decode(text).map_err(|_| InvalidBlob)?;
        if bytes.len() <= KeyVersionId::LEN {
            return Err(InvalidBlob);
        }
        let (version, payload) = bytes.split_at(KeyVersionId::LEN);
        let version = std::str::from_utf8(version).map_err(|_| InvalidBlob)?;
        let version = KeyVersionId::parse(version).map_err(|_| InvalidBlob)?;
        Ok(Self {
            version,
            body: payload.to_vec(),
        })
    }
}

/// The pieces of an XKI encryption, packed into an external payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XkiPayload {
    /// IV (12 or 16 bytes).
    pub iv: Vec<u8>,
    /// `ciphertextMetadata` (≤ 20 bytes, possibly empty).
    pub ciphertext_metadata: Vec<u8>,
    /// Tag (16 bytes).
    pub tag: Vec<u8>,
    /// Ciphertext.
    pub ciphertext: Vec<u8>,
}

const XKI_FORMAT: u8 = 1;

impl XkiPayload {
    /// Packs the payload.
    pub fn pack(&self) -> Result<Vec<u8>, InvalidBlob> {
        let iv_len = u8::try_from(self.iv.len()).map_err(|_| InvalidBlob)?;
        let ctm_len = u8::try_from(self.ciphertext_metadata.len()).map_err(|_| InvalidBlob)?;
        if self.tag.len() != 16 {
            return Err(InvalidBlob);
        }
        let mut out = Vec::with_capacity(
            3 + self.iv.len() + self.ciphertext_metadata.len() + 16 + self.ciphertext.len(),
        );
        out.push(XKI_FORMAT);
        out.push(iv_len);
        out.extend_from_slice(&self.iv);
        out.push(ctm_len);
        out.extend_from_slice(&self.ciphertext_metadata);
        out.extend_from_slice(&self.tag);
        out.extend_from_slice(&self.ciphertext);
        Ok(out)
    }

    /// Unpacks a payload.
    pub fn unpack(bytes: &[u8]) -> Result<Self, InvalidBlob> {
        let (&format, rest) = bytes.split_first().ok_or(InvalidBlob)?;
        if format != XKI_FORMAT {
            return Err(InvalidBlob);
        }
        let (iv, rest) = take_prefixed(rest)?;
        let (ciphertext_metadata, rest) = take_prefixed(rest)?;
        if rest.len() < 16 + 1 {
            return Err(InvalidBlob);
        }
        let (tag, ciphertext) = rest.split_at(16);
        Ok(Self {
            iv: iv.to_vec(),
            ciphertext_metadata: ciphertext_metadata.to_vec(),
            tag: tag.to_vec(),
            ciphertext: ciphertext.to_vec(),
        })
    }
}

fn take_prefixed(bytes: &[u8]) -> Result<(&[u8], &[u8]), InvalidBlob> {
    let (&len, rest) = bytes.split_first().ok_or(InvalidBlob)?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err(InvalidBlob);
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_round_trip_and_refusals() {
        let v = KeyVersionId::generate();
        let text = Blob::encode(&v, b"payload");
        let blob = Blob::decode(&text).unwrap();
        assert_eq!(blob.version, v);
        assert_eq!(blob.body, b"\x02payload");
        assert_eq!(blob.to_text(), text);
        assert_eq!(
            blob.readings(false),
            [(&b"payload"[..], ContextBinding::Canonical)]
        );
        assert_eq!(
            blob.readings(true),
            [
                (&b"payload"[..], ContextBinding::Canonical),
                (&b"\x02payload"[..], ContextBinding::Legacy)
            ]
        );
        let mut legacy = v.as_str().as_bytes().to_vec();
        legacy.extend_from_slice(b"\x01xki");
        let legacy = Blob::decode(&schemas::b64::encode(&legacy)).unwrap();
        assert_eq!(
            legacy.readings(true),
            [(&b"\x01xki"[..], ContextBinding::Legacy)]
        );
        let mut bare = v.as_str().as_bytes().to_vec();
        bare.push(0);
        assert!(Blob::decode(&schemas::b64::encode(&bare)).is_ok());
        assert!(Blob::decode(&schemas::b64::encode(v.as_str().as_bytes())).is_err());
        assert!(Blob::decode("not base64!").is_err());
        let unpadded = text.trim_end_matches('=');
        if unpadded != text {
            assert!(Blob::decode(unpadded).is_err(), "unpadded Base64");
        }
        assert!(Blob::decode(&schemas::b64::encode([b'x'; 48])).is_err());
    }

    #[test]
    fn xki_payload_round_trip_and_truncation() {
        let p = XkiPayload {
            iv: vec![1; 12],
            ciphertext_metadata: vec![1, 0, 0, 0, 1],
            tag: vec![2; 16],
            ciphertext: vec![3; 44],
        };
        let packed = p.pack().unwrap();
        assert_eq!(XkiPayload::unpack(&packed).unwrap(), p);
        for cut in 0..packed.len() - 44 {
            assert!(XkiPayload::unpack(&packed[..cut]).is_err(), "cut at {cut}");
        }
        let mut other = packed.clone();
        other[0] = 9;
        assert!(XkiPayload::unpack(&other).is_err());
    }
}
