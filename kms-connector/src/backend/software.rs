//! The software instance: `Aliyun_AES_256` keys whose material is sealed under the connector's
//! root key and kept, sealed, in the store.
//!
//! ```text
//! sealed material = 0x01 ‖ root_key_id[4] ‖ nonce[12]
//!                   ‖ AES-256-GCM(root key, data key[32], AAD = header[5] ‖ key_id ‖ 0x00 ‖ version_id) ‖ tag[16]
//! payload         = IV[12] ‖ AES-256-GCM(data key, plaintext, AAD = caller's AAD) ‖ tag[16]
//! ```
//!
//! The sealing AAD binds the material to its key and version: a sealed row copied to another key
//! or version does not unseal. The header (format byte and a 4-byte id of the root key, the first
//! bytes of a domain-separated SHA-256 of it) names what sealed the row, so a later root-key
//! rotation can tell old rows from new ones; it is authenticated too. A clear data key exists only inside `Zeroizing` buffers and the
//! AES key schedule (the `aes` crate's `zeroize` feature wipes it on drop), for one operation.
//! Asymmetric specs, import and rotation policy come later; `key_spec` is checked so that they
//! can be added as new arms rather than new backends.

use schemas::kms::{KeySpec, ProtectionLevel};
use std::fmt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::TryRngCore as _;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use super::{BackendError, Capabilities, KeyBackend, KeyContext, NewVersion, VersionMaterial};
use crate::ids::{KeyId, KeyVersionId};
use crate::store::InstanceKind;

/// The one key spec software instances make today.
/// The one key spec this backend makes.
pub const AES_256: KeySpec = KeySpec::Aes256;
const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// Format byte of the sealed-material layout.
const SEALED_FORMAT: u8 = 1;
/// Format byte + root key id.
const HEADER_BYTES: usize = 5;
/// Length of sealed material: header ‖ nonce ‖ sealed key ‖ tag.
pub const SEALED_BYTES: usize = HEADER_BYTES + NONCE_BYTES + KEY_BYTES + TAG_BYTES;

/// Why a root key could not be loaded. Never contains key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootKeyError {
    /// The file cannot be read.
    #[error("cannot read root key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The environment variable is not set (or not UTF-8).
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    /// Neither 32 raw bytes nor the standard Base64 of 32 bytes.
    #[error("{0}: a root key is 32 raw bytes or the standard Base64 of 32 bytes")]
    Invalid(String),
    /// The operating system's random generator failed.
    #[error("the operating system's random generator failed")]
    Random,
}

/// The 256-bit key that seals every software key's material. `Debug` is redacted; the bytes are
/// wiped on drop.
pub struct RootKey(Zeroizing<[u8; KEY_BYTES]>);

impl RootKey {
    /// A root key from its bytes.
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A fresh random root key (first start, tests).
    pub fn generate() -> Result<Self, RootKeyError> {
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        OsRng
            .try_fill_bytes(bytes.as_mut())
            .map_err(|_| RootKeyError::Random)?;
        Ok(Self(bytes))
    }

    /// Loads the key from a file holding exactly 32 raw bytes, or their standard Base64 (surrounding
    /// whitespace ignored). Warns when the file is readable by group or others.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, RootKeyError> {
        let path = path.as_ref();
        let io = |source| RootKeyError::Io {
            path: path.to_owned(),
            source,
        };
        let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
        warn_if_shared(path);
        if let Ok(raw) = <[u8; KEY_BYTES]>::try_from(bytes.as_slice()) {
            return Ok(Self::from_bytes(raw));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| RootKeyError::Invalid(path.display().to_string()))?;
        Self::from_base64(text.trim())
            .ok_or_else(|| RootKeyError::Invalid(path.display().to_string()))
    }

    /// Loads the key from an environment variable holding its standard Base64.
    pub fn from_env(name: &str) -> Result<Self, RootKeyError> {
        let text = Zeroizing::new(
            std::env::var(name).map_err(|_| RootKeyError::MissingEnv(name.to_owned()))?,
        );
        Self::from_base64(text.trim())
            .ok_or_else(|| RootKeyError::Invalid(format!("environment variable {name}")))
    }

    fn from_base64(text: &str) -> Option<Self> {
        let decoded = Zeroizing::new(schemas::b64::decode(text).ok()?);
        let raw = <[u8; KEY_BYTES]>::try_from(decoded.as_slice()).ok()?;
        Some(Self::from_bytes(raw))
    }
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootKey([redacted])")
    }
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let shared = std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0);
    if shared {
        tracing::warn!(target: "kms_connector::software", path = %path.display(), "the root key file is readable by group or others; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}

/// One root key, expanded once (its key schedule is wiped on drop), and the header (format
/// byte and root key id) it writes first in every sealed row.
struct Sealer {
    cipher: Aes256Gcm,
    header: [u8; HEADER_BYTES],
}

impl Sealer {
    fn new(root_key: &RootKey) -> Self {
        use sha2::Digest as _;
        let digest = sha2::Sha256::new()
            .chain_update(b"hyok software root key id\0")
            .chain_update(*root_key.0)
            .finalize();
        let mut header = [SEALED_FORMAT, 0, 0, 0, 0];
        header[1..].copy_from_slice(&digest[..4]);
        Self {
            cipher: Aes256Gcm::new((&*root_key.0).into()),
            header,
        }
    }
}

/// The software instance's backend: seals under the current root key, unseals under it or any
/// previous one still configured (during a root key rotation).
pub struct SoftwareBackend {
    current: Sealer,
    previous: Vec<Sealer>,
}

/// What [`SoftwareBackend::reseal`] did with one sealed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resealed {
    /// Already sealed under the current root key.
    Current,
    /// Sealed anew under the current root key (the same data key).
    Sealed(Vec<u8>),
}

/// The root key id of a sealed row (hex of the 4 id bytes of its header), if it has the layout.
pub fn sealed_root_key_id(sealed: &[u8]) -> Option<String> {
    (sealed.len() == SEALED_BYTES && sealed[0] == SEALED_FORMAT)
        .then(|| hex::encode(&sealed[1..HEADER_BYTES]))
}

impl fmt::Debug for SoftwareBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftwareBackend")
            .field("root_key_id", &self.root_key_id())
            .field("previous_root_keys", &self.previous.len())
            .finish()
    }
}

impl SoftwareBackend {
    /// A backend sealing under `root_key`.
    pub fn new(root_key: RootKey) -> Self {
        Self::with_previous(root_key, Vec::new())
    }

    /// A backend sealing under `root_key` that still unseals rows sealed under `previous`
    /// (while `kms-connector root-key rotate` re-seals them).
    pub fn with_previous(root_key: RootKey, previous: Vec<RootKey>) -> Self {
        Self {
            current: Sealer::new(&root_key),
            previous: previous.iter().map(Sealer::new).collect(),
        }
    }

    /// The current root key's id (hex), as sealed rows name it.
    pub fn root_key_id(&self) -> String {
        hex::encode(&self.current.header[1..])
    }

    /// The ids (hex) of every root key this backend can unseal with, current first.
    pub fn known_root_key_ids(&self) -> Vec<String> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|s| hex::encode(&s.header[1..]))
            .collect()
    }

    /// Re-seals a row of `key_id` / `version_id` under the current root key, keeping its data
    /// key. An error when no configured root key unseals it.
    pub fn reseal(
        &self,
        key_id: &KeyId,
        version_id: &KeyVersionId,
        sealed: &[u8],
    ) -> Result<Resealed, BackendError> {
        if sealed.get(..HEADER_BYTES) == Some(&self.current.header[..]) {
            return Ok(Resealed::Current);
        }
        let data_key = self.unseal_row(key_id, version_id, sealed)?;
        self.seal(key_id, version_id, &data_key)
            .map(Resealed::Sealed)
    }

    /// Seals a data key for `key_id` / `version_id`.
    fn seal(
        &self,
        key_id: &KeyId,
        version_id: &KeyVersionId,
        data_key: &[u8; KEY_BYTES],
    ) -> Result<Vec<u8>, BackendError> {
        let nonce = random::<NONCE_BYTES>()?;
        // Room for the tag up front: a reallocation would leave a clear copy behind.
        let mut buffer = Zeroizing::new(Vec::with_capacity(KEY_BYTES + TAG_BYTES));
        buffer.extend_from_slice(data_key);
        let current = &self.current;
        current
            .cipher
            .encrypt_in_place(
                Nonce::from_slice(&nonce),
                &sealing_aad(&current.header, key_id, version_id),
                &mut *buffer,
            )
            .map_err(|_| BackendError::Internal("sealing failed".into()))?;
        let mut sealed = Vec::with_capacity(SEALED_BYTES);
        sealed.extend_from_slice(&current.header);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&buffer);
        Ok(sealed)
    }

    /// Unseals the data key of a version. Failure means the row was moved, corrupted, or sealed
    /// under a root key that is not configured: an internal fault, not the caller's ciphertext.
    fn unseal(&self, key: &KeyContext<'_>) -> Result<Zeroizing<[u8; KEY_BYTES]>, BackendError> {
        let sealed = key.material.sealed.as_deref().ok_or_else(|| {
            BackendError::Internal("software version without sealed material".into())
        })?;
        self.unseal_row(key.key_id, key.version_id, sealed)
    }

    fn unseal_row(
        &self,
        key_id: &KeyId,
        version_id: &KeyVersionId,
        sealed: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_BYTES]>, BackendError> {
        if sealed.len() != SEALED_BYTES {
            return Err(BackendError::Internal(
                "sealed material has the wrong length".into(),
            ));
        }
        let (header, rest) = sealed.split_at(HEADER_BYTES);
        let Some(sealer) = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|s| s.header == header)
        else {
            tracing::error!(target: "kms_connector::software", key_id = %key_id, version_id = %version_id, root_key_id = %hex::encode(&header[1..]), "sealed material names another format or a root key that is not configured");
            return Err(BackendError::Internal(
                "sealed under a root key that is not configured".into(),
            ));
        };
        let (nonce, body) = rest.split_at(NONCE_BYTES);
        let mut buffer = Zeroizing::new(body.to_vec());
        sealer
            .cipher
            .decrypt_in_place(
                Nonce::from_slice(nonce),
                &sealing_aad(&sealer.header, key_id, version_id),
                &mut *buffer,
            )
            .map_err(|_| {
                tracing::error!(target: "kms_connector::software", key_id = %key_id, version_id = %version_id, "sealed material does not unseal under the root key");
                BackendError::Internal("sealed material does not unseal".into())
            })?;
        let data_key = <[u8; KEY_BYTES]>::try_from(buffer.as_slice())
            .map_err(|_| BackendError::Internal("sealed material has the wrong length".into()))?;
        Ok(Zeroizing::new(data_key))
    }
}

/// `header ‖ key_id ‖ 0x00 ‖ version_id`: key ids never contain NUL, version ids have a fixed
/// length.
fn sealing_aad(header: &[u8; HEADER_BYTES], key_id: &KeyId, version_id: &KeyVersionId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(HEADER_BYTES + key_id.as_str().len() + 1 + KeyVersionId::LEN);
    aad.extend_from_slice(header);
    aad.extend_from_slice(key_id.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(version_id.as_str().as_bytes());
    aad
}

fn random<const N: usize>() -> Result<[u8; N], BackendError> {
    let mut bytes = [0u8; N];
    OsRng.try_fill_bytes(&mut bytes).map_err(|_| {
        BackendError::Internal("the operating system's random generator failed".into())
    })?;
    Ok(bytes)
}

fn data_cipher(data_key: &[u8; KEY_BYTES]) -> Aes256Gcm {
    Aes256Gcm::new(data_key.into())
}

#[async_trait::async_trait]
impl KeyBackend for SoftwareBackend {
    fn kind(&self) -> InstanceKind {
        InstanceKind::Software
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            families: super::Families::default(),
            key_specs: &[AES_256],
            protection_level: ProtectionLevel::Software,
            rotation: true,
            versions: true,
            import: false,
            needs_external_key_id: false,
        }
    }

    async fn new_version(&self, request: NewVersion<'_>) -> Result<VersionMaterial, BackendError> {
        if request.key_spec != AES_256 {
            return Err(BackendError::Unsupported(
                "software instances make Aliyun_AES_256 keys only",
            ));
        }
        let mut data_key = Zeroizing::new([0u8; KEY_BYTES]);
        OsRng.try_fill_bytes(data_key.as_mut()).map_err(|_| {
            BackendError::Internal("the operating system's random generator failed".into())
        })?;
        let sealed = self.seal(request.key_id, request.version_id, &data_key)?;
        Ok(VersionMaterial {
            sealed: Some(sealed),
            backend_ref: None,
        })
    }

    async fn encrypt(
        &self,
        key: KeyContext<'_>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        let data_key = self.unseal(&key)?;
        let iv = random::<NONCE_BYTES>()?;
        let sealed = data_cipher(&data_key)
            .encrypt(
                Nonce::from_slice(&iv),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| BackendError::Internal("encryption failed".into()))?;
        let mut payload = Vec::with_capacity(NONCE_BYTES + sealed.len());
        payload.extend_from_slice(&iv);
        payload.extend_from_slice(&sealed);
        Ok(payload)
    }

    async fn decrypt(
        &self,
        key: KeyContext<'_>,
        payload: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        if payload.len() < NONCE_BYTES + TAG_BYTES {
            return Err(BackendError::InvalidCiphertext);
        }
        let data_key = self.unseal(&key)?;
        let (iv, sealed) = payload.split_at(NONCE_BYTES);
        data_cipher(&data_key)
            .decrypt(Nonce::from_slice(iv), Payload { msg: sealed, aad })
            .map(Zeroizing::new)
            .map_err(|_| BackendError::InvalidCiphertext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(key_id: &KeyId, version_id: &KeyVersionId) -> NewVersion<'static> {
        // Leaked ids keep the test short; a handful of bytes per test.
        let key_id: &'static KeyId = Box::leak(Box::new(key_id.clone()));
        let version_id: &'static KeyVersionId = Box::leak(Box::new(version_id.clone()));
        NewVersion {
            key_id,
            version_id,
            key_spec: AES_256,
            external_key_id: None,
            principal: "acs:ram::1:root",
            request_id: "req",
        }
    }

    #[test]
    fn root_key_sources() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        std::fs::write(&raw, [7u8; 32]).unwrap();
        RootKey::from_file(&raw).unwrap();
        let text = dir.path().join("b64");
        std::fs::write(&text, format!("{}\n", schemas::b64::encode([7u8; 32]))).unwrap();
        RootKey::from_file(&text).unwrap();
        for bad in [&[7u8; 31][..], &[7u8; 33][..], b"not base64 at all", b""] {
            std::fs::write(&text, bad).unwrap();
            assert!(matches!(
                RootKey::from_file(&text),
                Err(RootKeyError::Invalid(_))
            ));
        }
        std::fs::write(&text, schemas::b64::encode([7u8; 16])).unwrap();
        assert!(matches!(
            RootKey::from_file(&text),
            Err(RootKeyError::Invalid(_))
        ));
        assert!(matches!(
            RootKey::from_file(dir.path().join("missing")),
            Err(RootKeyError::Io { .. })
        ));
        assert!(matches!(
            RootKey::from_env("KMS_CONNECTOR_SURELY_UNSET_ROOT_KEY_VARIABLE"),
            Err(RootKeyError::MissingEnv(_))
        ));
        let key = RootKey::from_bytes([0xab; 32]);
        assert_eq!(format!("{key:?}"), "RootKey([redacted])");
        let shown = format!("{:?}", SoftwareBackend::new(key));
        assert!(!shown.contains("abab") && !shown.contains("171"), "{shown}");
    }

    #[tokio::test]
    async fn reseal_keeps_the_data_key_under_a_new_root_key() {
        let old = SoftwareBackend::new(RootKey::from_bytes([1; 32]));
        let (k, v) = (KeyId::generate("cn-hangzhou"), KeyVersionId::generate());
        let material = old.new_version(version(&k, &v)).await.unwrap();
        let sealed = material.sealed.clone().unwrap();
        let ctx = |material| KeyContext {
            key_id: &k,
            key_arn: "arn",
            version_id: &v,
            material,
            external_key_id: None,
            principal: "p",
            operation: "Encrypt",
            request_id: "r",
        };
        let payload = old.encrypt(ctx(&material), b"kept", b"aad").await.unwrap();

        let rotating = SoftwareBackend::with_previous(
            RootKey::from_bytes([2; 32]),
            vec![RootKey::from_bytes([1; 32])],
        );
        assert_eq!(rotating.known_root_key_ids().len(), 2);
        // Still readable before the rotation, through the previous key.
        assert_eq!(
            &*rotating
                .decrypt(ctx(&material), &payload, b"aad")
                .await
                .unwrap(),
            b"kept"
        );
        let Resealed::Sealed(resealed) = rotating.reseal(&k, &v, &sealed).unwrap() else {
            panic!("not re-sealed")
        };
        assert_eq!(sealed_root_key_id(&resealed), Some(rotating.root_key_id()));
        assert_eq!(
            rotating.reseal(&k, &v, &resealed).unwrap(),
            Resealed::Current
        );
        // Same data key: the old ciphertext opens under the re-sealed row with the new key only.
        let only_new = SoftwareBackend::new(RootKey::from_bytes([2; 32]));
        let moved = VersionMaterial {
            sealed: Some(resealed),
            backend_ref: None,
        };
        assert_eq!(
            &*only_new
                .decrypt(ctx(&moved), &payload, b"aad")
                .await
                .unwrap(),
            b"kept"
        );
        // The old row does not open without its key; another key's row does not reseal.
        assert!(
            only_new
                .decrypt(ctx(&material), &payload, b"aad")
                .await
                .is_err()
        );
        assert!(only_new.reseal(&k, &v, &sealed).is_err());
        let other = KeyVersionId::generate();
        assert!(rotating.reseal(&k, &other, &sealed).is_err());
    }

    #[tokio::test]
    async fn sealing_is_bound_to_key_and_version() {
        let backend = SoftwareBackend::new(RootKey::generate().unwrap());
        let (k1, k2) = (
            KeyId::generate("cn-hangzhou"),
            KeyId::generate("cn-hangzhou"),
        );
        let (v1, v2) = (KeyVersionId::generate(), KeyVersionId::generate());
        let material = backend.new_version(version(&k1, &v1)).await.unwrap();
        assert_eq!(material.sealed.as_ref().map(Vec::len), Some(SEALED_BYTES));
        assert_eq!(material.backend_ref, None);
        let ctx = |key_id, version_id| KeyContext {
            key_id,
            key_arn: "arn",
            version_id,
            material: &material,
            external_key_id: None,
            principal: "p",
            operation: "Encrypt",
            request_id: "r",
        };
        let payload = backend.encrypt(ctx(&k1, &v1), b"hello", b"").await.unwrap();
        assert_eq!(payload.len(), NONCE_BYTES + 5 + TAG_BYTES);
        for (k, v) in [(&k2, &v1), (&k1, &v2)] {
            assert!(matches!(
                backend.encrypt(ctx(k, v), b"hello", b"").await,
                Err(BackendError::Internal(_))
            ));
        }
        let other_root = SoftwareBackend::new(RootKey::generate().unwrap());
        assert!(matches!(
            other_root.decrypt(ctx(&k1, &v1), &payload, b"").await,
            Err(BackendError::Internal(_))
        ));
        let refused = backend
            .new_version(NewVersion {
                key_spec: KeySpec::Rsa2048,
                ..version(&k1, &v1)
            })
            .await;
        assert!(matches!(refused, Err(BackendError::Unsupported(_))));
    }
}
