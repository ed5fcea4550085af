//! Certificate fingerprints, as the kms-connector pins the proxy's server certificate.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

use crate::Error;

/// SHA-256 of the certificate's DER encoding, lower-case hex without separators.
///
/// `cert_pem` may hold a chain: the first `CERTIFICATE` block (the leaf) is the one hashed.
/// Same value as `openssl x509 -in cert.pem -outform DER | sha256sum`.
pub fn sha256_fingerprint(cert_pem: &str) -> Result<String, Error> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|err| Error::Pem {
        what: "certificate".to_owned(),
        reason: err.to_string(),
    })?;
    Ok(sha256_fingerprint_der(&der))
}

/// SHA-256 of a DER certificate, lower-case hex without separators.
pub fn sha256_fingerprint_der(cert_der: &[u8]) -> String {
    let digest = Sha256::digest(cert_der);
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest.iter() {
        hex.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_for_empty_input() {
        assert_eq!(
            sha256_fingerprint_der(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn text_without_a_certificate_is_an_error() {
        assert!(matches!(
            sha256_fingerprint("hello"),
            Err(Error::Pem { .. })
        ));
        let key_only = format!(
            "{}\nAAAA\n-----END {}-----\n",
            crate::PKCS8_PEM_HEADER,
            "PRIVATE KEY"
        );
        assert!(matches!(
            sha256_fingerprint(&key_only),
            Err(Error::Pem { .. })
        ));
    }
}
