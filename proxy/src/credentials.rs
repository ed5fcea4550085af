//! SigV4 credentials for a key store: format rules (spec §1.8) and minting new ones for
//! `xki-proxy credentials new`.

use rand::RngCore;
use serde::Serialize;

/// Base32 alphabet (RFC 4648) = the characters KMS allows in an AccessKeyId.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Checks an AccessKeyId: 20 to 30 characters from `[A-Z2-7]`.
pub fn check_access_key_id(id: &str) -> Result<(), &'static str> {
    if !(20..=30).contains(&id.len()) {
        return Err("AccessKeyId must be 20 to 30 characters");
    }
    if !id.bytes().all(|b| BASE32.contains(&b)) {
        return Err("AccessKeyId may only contain A-Z and 2-7");
    }
    Ok(())
}

/// Checks a secret: 43 to 64 characters from `[A-Za-z0-9+/=]`.
pub fn check_secret(secret: &str) -> Result<(), &'static str> {
    if !(43..=64).contains(&secret.len()) {
        return Err("secret must be 43 to 64 characters");
    }
    if !secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        return Err("secret may only contain A-Z a-z 0-9 + / =");
    }
    Ok(())
}

/// A freshly minted credential: a random 26-character AccessKeyId (it reveals nothing about
/// the secret) and the Base64 of 32 random bytes as the secret.
pub struct NewCredential {
    /// AccessKeyId.
    pub access_key_id: String,
    /// Secret (Base64 of 32 random bytes).
    pub secret: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for NewCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCredential")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl NewCredential {
    /// Mints a credential from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut id_bytes = [0u8; 26];
        rng.fill_bytes(&mut id_bytes);
        let access_key_id = id_bytes
            .iter()
            .map(|b| BASE32[usize::from(b % 32)] as char)
            .collect();
        let mut secret_bytes = zeroize::Zeroizing::new([0u8; 32]);
        rng.fill_bytes(secret_bytes.as_mut());
        let secret = zeroize::Zeroizing::new(schemas::b64::encode(secret_bytes.as_ref()));
        Self {
            access_key_id,
            secret,
        }
    }
}

/// The connection settings a KMS external key instance needs, as one JSON file: the shape of the
/// XKS console file plus what the Alibaba form asks for (endpoint, fingerprint).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConnectionSettings {
    /// `https://<host>[:port]`.
    pub xks_proxy_uri_endpoint: String,
    /// `[/<prefix>]/kms/xks/v1`.
    pub xks_proxy_uri_path: String,
    /// The credential.
    pub xks_proxy_authentication_credential: AuthenticationCredential,
    /// SHA-256 of the proxy's server certificate (hex of the DER).
    pub server_certificate_sha256: String,
    /// `public` or `private-link`.
    pub connectivity: String,
}

/// `XksProxyAuthenticationCredential`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AuthenticationCredential {
    /// AccessKeyId.
    pub access_key_id: String,
    /// The secret, in clear: this file is itself a secret.
    pub raw_secret_access_key: String,
}

impl std::fmt::Debug for AuthenticationCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AuthenticationCredential {{ access_key_id: {}, .. }}",
            self.access_key_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_credentials_meet_the_rules() {
        let a = NewCredential::generate();
        let b = NewCredential::generate();
        check_access_key_id(&a.access_key_id).unwrap();
        check_secret(&a.secret).unwrap();
        assert_eq!(schemas::b64::decode(&a.secret).unwrap().len(), 32);
        assert_ne!(a.access_key_id, b.access_key_id);
        assert!(!format!("{a:?}").contains(a.secret.as_str()));
    }

    #[test]
    fn rules() {
        assert!(check_access_key_id("AKIAXKIVECTORS2345672ABC").is_ok());
        assert!(check_access_key_id("AKIA0").is_err());
        assert!(check_access_key_id("akiaxkivectors2345672abc").is_err());
        assert!(check_access_key_id(&"A".repeat(31)).is_err());
        assert!(check_secret("XkiVectorSecretOfLength43To64CharactersPad+/=").is_ok());
        assert!(check_secret("short").is_err());
        assert!(check_secret(&format!("{}!", "a".repeat(50))).is_err());
    }
}
