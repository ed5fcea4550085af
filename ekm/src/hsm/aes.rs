//! AES on the token: key generation with the templates every key object gets (sensitive,
//! never extractable, usage enforced by the token), and AES-GCM with the session's cached
//! handles.

use cryptoki::context::Function;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use rand::RngCore as _;
use zeroize::Zeroizing;

use super::profile::IvSource;
use super::session::{HsmSession, KeyOpError};
use super::token::{hsm_error, writing};
use crate::error::{Error, Result};

/// GCM IV length the host makes, bytes.
pub const IV_BYTES: usize = 12;
/// GCM tag length, bytes.
pub const TAG_BYTES: usize = 16;
/// GCM tag length, bits.
pub const TAG_BITS: u64 = (TAG_BYTES * 8) as u64;

/// What a key object may be used for; the token enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AesUsage {
    /// `CKA_ENCRYPT`.
    pub encrypt: bool,
    /// `CKA_DECRYPT`.
    pub decrypt: bool,
}

/// The generation template of an AES key object of `bytes` (16, 24 or 32): a token object,
/// private, sensitive, never extractable, not modifiable, used only as `usage` says (no wrap,
/// unwrap, sign, verify or derive).
pub fn aes_key_template(label: &str, bytes: usize, usage: AesUsage) -> Vec<Attribute> {
    let mut id = vec![0u8; 16];
    rand::rng().fill_bytes(&mut id);
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(u64::try_from(bytes).unwrap_or(32).into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Encrypt(usage.encrypt),
        Attribute::Decrypt(usage.decrypt),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ]
}

/// Generates an AES key object of `bytes` labelled `label` (exclusive with searches and other
/// object writes, see [`writing`]).
pub fn generate_aes_key(
    session: &Session,
    label: &str,
    bytes: usize,
    usage: AesUsage,
) -> Result<ObjectHandle> {
    let _exclusive = writing();
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &aes_key_template(label, bytes, usage),
        )
        .map_err(hsm_error)
}

/// Splits GCM output into `(ciphertext, tag)`.
pub fn split_tag(mut sealed: Vec<u8>) -> Result<(Vec<u8>, Vec<u8>)> {
    let Some(cut) = sealed.len().checked_sub(TAG_BYTES) else {
        return Err(Error::Internal("GCM output shorter than its tag".into()));
    };
    let tag = sealed.split_off(cut);
    Ok((sealed, tag))
}

impl HsmSession {
    /// AES-GCM encryption with the key labelled `label` (the IV from the host or the token,
    /// as the vendor profile says).
    pub fn encrypt(
        &mut self,
        label: &str,
        gcm_aad: &[u8],
        plaintext: &[u8],
    ) -> std::result::Result<Sealed, KeyOpError> {
        let iv_source = self.token().profile.iv_source;
        let (sealed, iv) = self.with_key(label, |session, key| {
            let mut iv = [0u8; IV_BYTES];
            if iv_source == IvSource::Host {
                rand::rng().fill_bytes(&mut iv);
            }
            let params = GcmParams::new(&mut iv, gcm_aad, TAG_BITS.into())?;
            let sealed = session.encrypt(&Mechanism::AesGcm(params), key, plaintext)?;
            Ok((sealed, iv))
        })?;
        if iv_source == IvSource::Hsm && iv == [0u8; IV_BYTES] {
            return Err(KeyOpError::Other(Error::Internal(
                "the HSM did not write a GCM IV (check the vendor profile)".into(),
            )));
        }
        let (ciphertext, tag) = split_tag(sealed).map_err(KeyOpError::Other)?;
        Ok(Sealed {
            iv: iv.to_vec(),
            ciphertext,
            tag,
        })
    }

    /// AES-GCM decryption of `ciphertext ‖ tag` with the key labelled `label`.
    pub fn decrypt(
        &mut self,
        label: &str,
        iv: &[u8],
        gcm_aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
    ) -> std::result::Result<Zeroizing<Vec<u8>>, KeyOpError> {
        let mut sealed = Vec::with_capacity(ciphertext.len() + tag.len());
        sealed.extend_from_slice(ciphertext);
        sealed.extend_from_slice(tag);
        let bad_tag = self.token().profile.bad_tag_errors;
        self.with_key(label, |session, key| {
            let mut iv = iv.to_vec();
            let params = GcmParams::new(&mut iv, gcm_aad, TAG_BITS.into())?;
            session
                .decrypt(&Mechanism::AesGcm(params), key, &sealed)
                .map(Zeroizing::new)
        })
        .map_err(|e| match e {
            KeyOpError::Pkcs11(rv, Function::Decrypt) if bad_tag.contains(&rv) => {
                KeyOpError::BadTag
            }
            other => other,
        })
    }
}

/// AES-GCM output, split.
#[derive(Debug)]
pub struct Sealed {
    /// The IV used.
    pub iv: Vec<u8>,
    /// Ciphertext without the tag.
    pub ciphertext: Vec<u8>,
    /// The 16-byte tag.
    pub tag: Vec<u8>,
}
