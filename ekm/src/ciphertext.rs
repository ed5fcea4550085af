//! What a ciphertext carries besides its bytes: the `ciphertextMetadata` format, the GCM AAD
//! built from it, and the input limits. Shared by every `KeyManager` implementation so that
//! their ciphertexts and their refusals are the same.
//!
//! `ciphertextMetadata` (5 bytes, well under the 20 the XKS spec allows):
//!
//! | byte | meaning |
//! | --- | --- |
//! | 0 | AAD format: `0x01` = the spec's raw construction `u16be(len aad) ‖ aad ‖ u8(len ctm) ‖ ctm`, `0x02` = the reference proxy's `SHA-256(aad)` variant |
//! | 1..5 | key version, `u32` big-endian, ≥ 1 |
//!
//! The metadata is itself bound into the GCM AAD, so changing any byte of it fails the tag.
//! Anything that does not parse is refused as `InvalidCiphertext` (not `Validation`): to a
//! caller, metadata is part of the ciphertext.

use schemas::xki::aad::{hashed_aad, xks_aad};
use schemas::xki::{IV_LENGTHS, MAX_AAD_BYTES, MAX_CIPHERTEXT_METADATA_BYTES, TAG_BYTES};

use crate::error::{Error, Result};
pub use crate::hsm::aes::{IV_BYTES, TAG_BITS, split_tag};
use crate::manager::{DecryptRequest, EncryptRequest};

/// Length of the metadata the EKM writes.
pub const METADATA_BYTES: usize = 5;
const _: () = assert!(METADATA_BYTES <= MAX_CIPHERTEXT_METADATA_BYTES);

/// How the caller's AAD enters the GCM AAD; recorded in byte 0 of the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AadFormat {
    /// `0x01`: the XKS spec's construction over the raw AAD.
    #[default]
    Raw = 1,
    /// `0x02`: the reference proxy's construction over `SHA-256(aad)` (migration, small-AAD HSMs).
    Sha256 = 2,
}

impl AadFormat {
    /// The GCM AAD for this format.
    pub fn gcm_aad(self, aad: &[u8], ciphertext_metadata: &[u8]) -> Result<Vec<u8>> {
        let built = match self {
            Self::Raw => xks_aad(aad, ciphertext_metadata),
            Self::Sha256 => hashed_aad(aad, ciphertext_metadata),
        };
        built.map_err(|_| Error::Validation("AAD longer than 65535 bytes".into()))
    }
}

/// Parsed `ciphertextMetadata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CiphertextMetadata {
    /// AAD construction.
    pub aad_format: AadFormat,
    /// Key version that encrypted.
    pub key_version: u32,
}

impl CiphertextMetadata {
    /// The bytes that travel.
    pub fn encode(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(METADATA_BYTES);
        out.push(self.aad_format as u8);
        out.extend_from_slice(&self.key_version.to_be_bytes());
        out
    }

    /// Parses metadata; anything not written by [`Self::encode`] is `InvalidCiphertext`.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let [format, v0, v1, v2, v3] = bytes else {
            return Err(Error::InvalidCiphertext);
        };
        let aad_format = match format {
            1 => AadFormat::Raw,
            2 => AadFormat::Sha256,
            _ => return Err(Error::InvalidCiphertext),
        };
        let key_version = u32::from_be_bytes([*v0, *v1, *v2, *v3]);
        if key_version == 0 {
            return Err(Error::InvalidCiphertext);
        }
        Ok(Self {
            aad_format,
            key_version,
        })
    }
}

/// Input size limits of a manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest plaintext (and ciphertext), bytes. The XKS spec needs at least 4300.
    pub max_data_bytes: usize,
    /// Largest AAD, bytes. The XKS spec needs at least 8192; at most 65535.
    pub max_aad_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_data_bytes: 6144,
            max_aad_bytes: schemas::xki::SPEC_MIN_AAD_BYTES,
        }
    }
}

impl Limits {
    /// Refuses limits the wire format cannot carry.
    pub fn check(self) -> Result<Self> {
        if self.max_aad_bytes > MAX_AAD_BYTES {
            return Err(Error::Config(format!(
                "max_aad_bytes must be at most {MAX_AAD_BYTES}"
            )));
        }
        if self.max_data_bytes == 0 {
            return Err(Error::Config("max_data_bytes must be positive".into()));
        }
        if !self.meets_xks() {
            tracing::warn!(
                max_data_bytes = self.max_data_bytes,
                max_aad_bytes = self.max_aad_bytes,
                "limits below the XKS minima ({} B data, {} B AAD): the XKI proxy will forward \
                 requests this EKM refuses",
                schemas::xki::SPEC_MIN_DATA_BYTES,
                schemas::xki::SPEC_MIN_AAD_BYTES
            );
        }
        Ok(self)
    }

    /// Whether these limits accept every request the XKS spec says must be accepted.
    pub fn meets_xks(&self) -> bool {
        self.max_data_bytes >= schemas::xki::SPEC_MIN_DATA_BYTES
            && self.max_aad_bytes >= schemas::xki::SPEC_MIN_AAD_BYTES
    }

    /// Checks an encrypt request's sizes.
    pub fn check_encrypt(&self, request: &EncryptRequest) -> Result<()> {
        self.check_data(request.plaintext.len(), "plaintext")?;
        self.check_aad(&request.aad)
    }

    /// Checks a decrypt request's sizes and parses its metadata.
    pub fn check_decrypt(&self, request: &DecryptRequest) -> Result<CiphertextMetadata> {
        self.check_data(request.ciphertext.len(), "ciphertext")?;
        self.check_aad(&request.aad)?;
        if !IV_LENGTHS.contains(&request.iv.len()) {
            return Err(Error::Validation("IV must be 12 or 16 bytes".into()));
        }
        if request.tag.len() != TAG_BYTES {
            return Err(Error::Validation(
                "authentication tag must be 16 bytes".into(),
            ));
        }
        if request.ciphertext_metadata.len() > MAX_CIPHERTEXT_METADATA_BYTES {
            return Err(Error::Validation(
                "ciphertext metadata must be at most 20 bytes".into(),
            ));
        }
        CiphertextMetadata::parse(&request.ciphertext_metadata)
    }

    fn check_data(&self, len: usize, what: &str) -> Result<()> {
        if len > self.max_data_bytes {
            return Err(Error::Validation(format!(
                "{what} longer than {} bytes",
                self.max_data_bytes
            )));
        }
        Ok(())
    }

    fn check_aad(&self, aad: &[u8]) -> Result<()> {
        if aad.len() > self.max_aad_bytes {
            return Err(Error::Validation(format!(
                "AAD longer than {} bytes",
                self.max_aad_bytes
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_meet_the_spec() {
        assert!(Limits::default().meets_xks());
        let small = Limits {
            max_data_bytes: 1024,
            max_aad_bytes: 8192,
        };
        assert!(!small.meets_xks());
        assert!(small.check().is_ok(), "allowed, with a warning");
    }

    #[test]
    fn metadata_round_trip() {
        let m = CiphertextMetadata {
            aad_format: AadFormat::Raw,
            key_version: 7,
        };
        assert_eq!(m.encode(), vec![1, 0, 0, 0, 7]);
        assert_eq!(CiphertextMetadata::parse(&m.encode()).unwrap(), m);
        let h = CiphertextMetadata {
            aad_format: AadFormat::Sha256,
            key_version: u32::MAX,
        };
        assert_eq!(CiphertextMetadata::parse(&h.encode()).unwrap(), h);
    }

    #[test]
    fn metadata_rejects_foreign_bytes() {
        for bad in [
            &[][..],
            &[1, 0, 0, 0],
            &[1, 0, 0, 0, 1, 0],
            &[0, 0, 0, 0, 1],
            &[3, 0, 0, 0, 1],
            &[1, 0, 0, 0, 0],
        ] {
            assert_eq!(
                CiphertextMetadata::parse(bad),
                Err(Error::InvalidCiphertext),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn aad_formats_differ_and_bind_metadata() {
        let raw = AadFormat::Raw.gcm_aad(b"ctx", &[1, 0, 0, 0, 1]).unwrap();
        assert_eq!(raw, [&[0, 3][..], b"ctx", &[5, 1, 0, 0, 0, 1]].concat());
        let hashed = AadFormat::Sha256.gcm_aad(b"ctx", &[2, 0, 0, 0, 1]).unwrap();
        assert_eq!(hashed.len(), 2 + 32 + 1 + 5);
    }

    #[test]
    fn limits() {
        let limits = Limits::default();
        let ok = DecryptRequest {
            ciphertext: vec![0; 10],
            iv: vec![0; 12],
            tag: vec![0; 16],
            ciphertext_metadata: vec![1, 0, 0, 0, 1],
            aad: vec![],
        };
        assert!(limits.check_decrypt(&ok).is_ok());
        let bad_iv = DecryptRequest {
            iv: vec![0; 11],
            ..ok.clone()
        };
        assert!(matches!(
            limits.check_decrypt(&bad_iv),
            Err(Error::Validation(_))
        ));
        let bad_tag = DecryptRequest {
            tag: vec![0; 15],
            ..ok.clone()
        };
        assert!(matches!(
            limits.check_decrypt(&bad_tag),
            Err(Error::Validation(_))
        ));
        let long = DecryptRequest {
            ciphertext: vec![0; 6145],
            ..ok
        };
        assert!(matches!(
            limits.check_decrypt(&long),
            Err(Error::Validation(_))
        ));
        assert!(
            Limits {
                max_aad_bytes: 70_000,
                ..Limits::default()
            }
            .check()
            .is_err()
        );
        assert_eq!(split_tag(vec![1; 20]).unwrap(), (vec![1; 4], vec![1; 16]));
        assert!(split_tag(vec![1; 3]).is_err());
    }
}
