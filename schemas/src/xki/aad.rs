//! The AAD fed to AES-GCM and the ciphertext data integrity value (XKS Proxy API v1 §Encrypt,
//! Appendix C).

use sha2::{Digest, Sha256};

/// The spec's AAD construction for the key manager:
/// `u16be(len(aad)) || aad || u8(len(ciphertext_metadata)) || ciphertext_metadata`.
///
/// The length prefixes stop a swap of bytes between the caller's AAD and the metadata. Callers
/// validate the lengths first ([`super::MAX_AAD_BYTES`], [`super::MAX_CIPHERTEXT_METADATA_BYTES`]);
/// lengths past the prefix range are a programming error and are refused here too.
pub fn xks_aad(aad: &[u8], ciphertext_metadata: &[u8]) -> Result<Vec<u8>, AadTooLong> {
    let aad_len = u16::try_from(aad.len()).map_err(|_| AadTooLong)?;
    let ctm_len = u8::try_from(ciphertext_metadata.len()).map_err(|_| AadTooLong)?;
    let mut out = Vec::with_capacity(2 + aad.len() + 1 + ciphertext_metadata.len());
    out.extend_from_slice(&aad_len.to_be_bytes());
    out.extend_from_slice(aad);
    out.push(ctm_len);
    out.extend_from_slice(ciphertext_metadata);
    Ok(out)
}

/// The reference proxy's variant: `u16be(32) || SHA-256(aad) || u8(len(ctm)) || ctm`, for
/// ciphertexts migrated from aws-kms-xks-proxy and for HSMs with small AAD limits.
pub fn hashed_aad(aad: &[u8], ciphertext_metadata: &[u8]) -> Result<Vec<u8>, AadTooLong> {
    let digest = Sha256::digest(aad);
    xks_aad(&digest, ciphertext_metadata)
}

/// An AAD or metadata length that the length prefixes cannot express.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("AAD longer than 65535 bytes or ciphertext metadata longer than 255 bytes")]
pub struct AadTooLong;

/// Ciphertext data integrity value: `SHA-256(aad || ciphertext_metadata || iv || ciphertext || tag)`
/// over raw bytes, no length prefixes, a missing field being empty. Returned raw; Base64 it for
/// the wire.
pub fn cdiv(
    aad: &[u8],
    ciphertext_metadata: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(aad);
    h.update(ciphertext_metadata);
    h.update(iv);
    h.update(ciphertext);
    h.update(tag);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_layout() {
        assert_eq!(xks_aad(b"", b"").unwrap(), vec![0, 0, 0]);
        assert_eq!(
            xks_aad(b"ab", b"c").unwrap(),
            vec![0, 2, b'a', b'b', 1, b'c']
        );
        // Moving a byte from AAD to metadata changes the result.
        assert_ne!(xks_aad(b"ab", b"c").unwrap(), xks_aad(b"a", b"bc").unwrap());
        assert_eq!(xks_aad(&vec![0; 65536], b""), Err(AadTooLong));
        assert_eq!(xks_aad(b"", &[0; 256]), Err(AadTooLong));
        assert_eq!(hashed_aad(b"x", b"").unwrap().len(), 2 + 32 + 1);
    }
}
