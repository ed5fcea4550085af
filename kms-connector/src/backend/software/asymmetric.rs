//! Asymmetric crypto of software keys on a clear PKCS#8 private key, with aws-lc-rs: key
//! generation, signatures over a SHA-256 digest, RSAES-OAEP, and the public key. The PKCS#8
//! is self-describing (RSA, or EC on P-256 / secp256k1), so these functions need no key spec;
//! the API layer has already matched the algorithm against the key's spec and usage.
//!
//! aws-lc-rs wipes the key documents it returns (`Document`, `Pkcs8V1Der`) and the keys it
//! parses when they are dropped; the caller keeps the PKCS#8 it passes in a `Zeroizing` buffer.

use aws_lc_rs::digest::{Digest, SHA256};
use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPrivateDecryptingKey,
    OaepPublicEncryptingKey, PrivateDecryptingKey,
};
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, EcdsaSigningAlgorithm, EcdsaVerificationAlgorithm, KeyPair as _,
    RsaKeyPair, UnparsedPublicKey,
};
use schemas::kms::{AsymmetricAlgorithm, KeySpec, SigningAlgorithm};
use zeroize::Zeroizing;

use crate::backend::BackendError;

/// The two curves, as aws-lc-rs names them for signing (DER signatures) and verifying.
const CURVES: [(&EcdsaSigningAlgorithm, &EcdsaVerificationAlgorithm); 2] = [
    (
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &signature::ECDSA_P256_SHA256_ASN1,
    ),
    (
        &signature::ECDSA_P256K1_SHA256_ASN1_SIGNING,
        &signature::ECDSA_P256K1_SHA256_ASN1,
    ),
];

fn internal(what: &str) -> BackendError {
    BackendError::Internal(format!("{what} failed"))
}

/// A new private key of `spec`, PKCS#8 DER; `None` for a spec that is not asymmetric here.
/// Blocking (RSA key generation takes up to seconds).
pub fn generate(spec: KeySpec) -> Result<Option<Zeroizing<Vec<u8>>>, BackendError> {
    let rsa = |size| -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let pair = RsaKeyPair::generate(size).map_err(|_| internal("RSA key generation"))?;
        let der: Pkcs8V1Der<'static> = pair
            .as_der()
            .map_err(|_| internal("RSA key serialisation"))?;
        Ok(Zeroizing::new(der.as_ref().to_vec()))
    };
    let ec = |curve| -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let document = EcdsaKeyPair::generate_pkcs8(curve, &SystemRandom::new())
            .map_err(|_| internal("EC key generation"))?;
        Ok(Zeroizing::new(document.as_ref().to_vec()))
    };
    Ok(Some(match spec {
        KeySpec::Rsa2048 => rsa(KeySize::Rsa2048)?,
        KeySpec::Rsa3072 => rsa(KeySize::Rsa3072)?,
        KeySpec::Rsa4096 => rsa(KeySize::Rsa4096)?,
        KeySpec::EcP256 => ec(CURVES[0].0)?,
        KeySpec::EcP256K => ec(CURVES[1].0)?,
        _ => return Ok(None),
    }))
}

/// A parsed private key.
enum Private {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static EcdsaVerificationAlgorithm),
}

impl Private {
    fn parse(pkcs8: &[u8]) -> Result<Self, BackendError> {
        if let Ok(pair) = RsaKeyPair::from_pkcs8(pkcs8) {
            return Ok(Self::Rsa(pair));
        }
        CURVES
            .iter()
            .find_map(|(signing, verifying)| {
                EcdsaKeyPair::from_pkcs8(signing, pkcs8)
                    .ok()
                    .map(|pair| Self::Ec(pair, verifying))
            })
            .ok_or_else(|| internal("parsing the private key"))
    }
}

fn sha256(digest: &[u8]) -> Result<Digest, BackendError> {
    Digest::import_less_safe(digest, &SHA256).map_err(|_| {
        BackendError::InvalidParameter("Digest must be a SHA-256 digest (32 bytes)".into())
    })
}

fn wrong_key(algorithm: SigningAlgorithm) -> BackendError {
    BackendError::InvalidParameter(format!("{algorithm} does not fit this key"))
}

/// Signs a SHA-256 digest: RSASSA-PSS (MGF1-SHA-256, 32-byte salt), PKCS#1 v1.5, or ECDSA with
/// a DER signature.
pub fn sign(
    pkcs8: &[u8],
    algorithm: SigningAlgorithm,
    digest: &[u8],
) -> Result<Vec<u8>, BackendError> {
    let digest = sha256(digest)?;
    match (Private::parse(pkcs8)?, algorithm) {
        (Private::Rsa(pair), SigningAlgorithm::RsaPssSha256 | SigningAlgorithm::RsaPkcs1Sha256) => {
            let padding: &'static dyn signature::RsaEncoding =
                if algorithm == SigningAlgorithm::RsaPssSha256 {
                    &signature::RSA_PSS_SHA256
                } else {
                    &signature::RSA_PKCS1_SHA256
                };
            let mut out = vec![0u8; pair.public_modulus_len()];
            pair.sign_digest(padding, &digest, &mut out)
                .map_err(|_| internal("RSA signing"))?;
            Ok(out)
        }
        (Private::Ec(pair, _), SigningAlgorithm::EcdsaSha256) => pair
            .sign_digest(&digest)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| internal("ECDSA signing")),
        _ => Err(wrong_key(algorithm)),
    }
}

/// Whether `signature` is a valid signature of the SHA-256 `digest` under the key.
pub fn verify(
    pkcs8: &[u8],
    algorithm: SigningAlgorithm,
    digest: &[u8],
    signature: &[u8],
) -> Result<bool, BackendError> {
    let digest = sha256(digest)?;
    let verified = match (Private::parse(pkcs8)?, algorithm) {
        (Private::Rsa(pair), SigningAlgorithm::RsaPssSha256) => {
            UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA256, pair.public_key())
                .verify_digest(&digest, signature)
        }
        (Private::Rsa(pair), SigningAlgorithm::RsaPkcs1Sha256) => {
            UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, pair.public_key())
                .verify_digest(&digest, signature)
        }
        (Private::Ec(pair, curve), SigningAlgorithm::EcdsaSha256) => {
            UnparsedPublicKey::new(curve, pair.public_key()).verify_digest(&digest, signature)
        }
        _ => return Err(wrong_key(algorithm)),
    };
    Ok(verified.is_ok())
}

/// The public key, DER SubjectPublicKeyInfo.
pub fn public_key(pkcs8: &[u8]) -> Result<Vec<u8>, BackendError> {
    let der = match Private::parse(pkcs8)? {
        Private::Rsa(pair) => pair.public_key().as_der().map(|d| d.as_ref().to_vec()),
        Private::Ec(pair, _) => pair.public_key().as_der().map(|d| d.as_ref().to_vec()),
    };
    der.map_err(|_| internal("public key serialisation"))
}

fn oaep(algorithm: AsymmetricAlgorithm) -> &'static OaepAlgorithm {
    match algorithm {
        AsymmetricAlgorithm::RsaesOaepSha256 => &OAEP_SHA256_MGF1SHA256,
        AsymmetricAlgorithm::RsaesOaepSha1 => &OAEP_SHA1_MGF1SHA1,
    }
}

fn decrypting_key(pkcs8: &[u8]) -> Result<PrivateDecryptingKey, BackendError> {
    PrivateDecryptingKey::from_pkcs8(pkcs8)
        .map_err(|_| BackendError::InvalidParameter("the key is not an RSA encryption key".into()))
}

/// RSAES-OAEP encryption to the key's public key (no label).
pub fn encrypt(
    pkcs8: &[u8],
    algorithm: AsymmetricAlgorithm,
    plaintext: &[u8],
) -> Result<Vec<u8>, BackendError> {
    let public = OaepPublicEncryptingKey::new(decrypting_key(pkcs8)?.public_key())
        .map_err(|_| internal("loading the public key"))?;
    let algorithm = oaep(algorithm);
    let max = public.max_plaintext_size(algorithm);
    if plaintext.len() > max {
        return Err(BackendError::InvalidParameter(format!(
            "Plaintext is longer than {max} bytes, the most this key and algorithm encrypt"
        )));
    }
    let mut out = vec![0u8; public.ciphertext_size()];
    let written = public
        .encrypt(algorithm, plaintext, &mut out, None)
        .map_err(|_| internal("RSA encryption"))?
        .len();
    out.truncate(written);
    Ok(out)
}

/// RSAES-OAEP decryption; a ciphertext that does not decrypt is `InvalidCiphertext`.
pub fn decrypt(
    pkcs8: &[u8],
    algorithm: AsymmetricAlgorithm,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, BackendError> {
    let private = OaepPrivateDecryptingKey::new(decrypting_key(pkcs8)?)
        .map_err(|_| internal("loading the private key"))?;
    let mut out = Zeroizing::new(vec![0u8; private.min_output_size()]);
    let written = private
        .decrypt(oaep(algorithm), ciphertext, &mut out, None)
        .map_err(|_| BackendError::InvalidCiphertext)?
        .len();
    out.truncate(written);
    Ok(out)
}
