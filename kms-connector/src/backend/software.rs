//! The software instance: `Aliyun_AES_256` keys and asymmetric keys (RSA_2048/3072/4096,
//! EC_P256, EC_P256K) whose material is sealed under the connector's root key and kept, sealed,
//! in the store.
//!
//! ```text
//! sealed material = 0x01 ‖ root_key_id[4] ‖ nonce[12]
//!                   ‖ AES-256-GCM(root key, data key[32], AAD = header[5] ‖ key_id ‖ 0x00 ‖ version_id) ‖ tag[16]
//!                 | 0x02 ‖ root_key_id[4] ‖ nonce[12]
//!                   ‖ AES-256-GCM(root key, private key PKCS#8 DER[n], same AAD) ‖ tag[16]
//! payload         = IV[12] ‖ AES-256-GCM(data key, plaintext, AAD = caller's AAD) ‖ tag[16]
//! ```
//!
//! The sealing AAD binds the material to its key and version: a sealed row copied to another key
//! or version does not unseal. The header (format byte and a 4-byte id of the root key, the first
//! bytes of a domain-separated SHA-256 of it) names what sealed the row, so a later root-key
//! rotation can tell old rows from new ones; it is authenticated too. A clear data key exists only inside `Zeroizing` buffers and the
//! AES key schedule (the `aes` crate's `zeroize` feature wipes it on drop), for one operation.
//! Asymmetric crypto is aws-lc-rs (constant-time, maintained; no hand-written RSA or ECDSA): a
//! clear PKCS#8 exists only in `Zeroizing` buffers and in aws-lc's own key objects, which
//! aws-lc wipes when it frees them. Format-1 rows (data keys) are still written and read as
//! before; format 2 carries material of any length.

use schemas::kms::{AsymmetricAlgorithm, KeySpec, ProtectionLevel, SigningAlgorithm};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ekm::hsm::Hsm;

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::TryRngCore as _;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use super::{
    BackendError, Capabilities, Families, KeyBackend, KeyContext, NewVersion, VersionMaterial,
};
use crate::ids::{KeyId, KeyVersionId};
use crate::store::InstanceKind;

mod asymmetric;

/// The symmetric key spec this backend makes.
pub const AES_256: KeySpec = KeySpec::Aes256;
/// Every key spec this backend makes.
pub const KEY_SPECS: &[KeySpec] = &[
    AES_256,
    KeySpec::Rsa2048,
    KeySpec::Rsa3072,
    KeySpec::Rsa4096,
    KeySpec::EcP256,
    KeySpec::EcP256K,
];
const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// Format byte of the sealed-material layout of a 32-byte data key.
const SEALED_FORMAT: u8 = 1;
/// Format byte of the sealed-material layout of material of any length (private keys).
const SEALED_FORMAT_VARIABLE: u8 = 2;
/// Format byte + root key id.
const HEADER_BYTES: usize = 5;
/// Length of sealed material: header ‖ nonce ‖ sealed key ‖ tag.
pub const SEALED_BYTES: usize = HEADER_BYTES + NONCE_BYTES + KEY_BYTES + TAG_BYTES;
/// Shortest format-2 row: header ‖ nonce ‖ one byte ‖ tag.
const MIN_VARIABLE_SEALED_BYTES: usize = HEADER_BYTES + NONCE_BYTES + 1 + TAG_BYTES;

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

/// The 256-bit key that seals every software key's material: bytes held in memory (from a
/// file or an environment variable; wiped on drop), or an AES-256 key object inside a PKCS#11
/// token that seals and unseals there (the root key never leaves the token). `Debug` is
/// redacted.
pub struct RootKey(RootKeyMaterial);

enum RootKeyMaterial {
    Memory(Zeroizing<[u8; KEY_BYTES]>),
    Token(TokenRootKey),
}

/// A root key kept in a PKCS#11 token.
struct TokenRootKey {
    hsm: Arc<Hsm>,
    label: String,
    timeout: Duration,
}

impl RootKey {
    /// A root key from its bytes.
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        Self(RootKeyMaterial::Memory(Zeroizing::new(bytes)))
    }

    /// The AES-256 key object labelled `label` in the token `hsm` opened (it must exist: see
    /// [`RootKey::create_in_token`]); every operation has `timeout`.
    pub fn in_token(hsm: Arc<Hsm>, label: &str, timeout: Duration) -> Self {
        Self(RootKeyMaterial::Token(TokenRootKey {
            hsm,
            label: label.to_owned(),
            timeout,
        }))
    }

    /// Generates the AES-256 root key object `label` in the token (sensitive, never
    /// extractable, encrypt/decrypt only). Refuses when an object with that label exists: two
    /// root keys under one label would seal rows no one could tell apart.
    pub async fn create_in_token(hsm: &Hsm, label: &str) -> Result<(), BackendError> {
        let object = label.to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let created = hsm
            .run(deadline, move |session| {
                if session.find_secret_key_opt(&object)?.is_some() {
                    return Ok(false);
                }
                let usage = ekm::hsm::aes::AesUsage {
                    encrypt: true,
                    decrypt: true,
                };
                session.generate_aes(&object, KEY_BYTES, usage)?;
                Ok(true)
            })
            .await
            .map_err(|e| BackendError::Internal(format!("root key token: {e}")))?;
        if created.value {
            Ok(())
        } else {
            Err(BackendError::InvalidParameter(format!(
                "the token already holds an object labelled {label:?}"
            )))
        }
    }

    /// A fresh random root key (first start, tests).
    pub fn generate() -> Result<Self, RootKeyError> {
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        OsRng
            .try_fill_bytes(bytes.as_mut())
            .map_err(|_| RootKeyError::Random)?;
        Ok(Self(RootKeyMaterial::Memory(bytes)))
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
        match &self.0 {
            RootKeyMaterial::Memory(_) => f.write_str("RootKey([redacted])"),
            RootKeyMaterial::Token(token) => write!(f, "RootKey(token object {:?})", token.label),
        }
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

/// One root key and the header (format byte and root key id) it writes first in every sealed
/// row. The id of a key in memory is the first bytes of a domain-separated SHA-256 of it; that
/// of a key in a token is derived from the token's and the object's labels (its bytes are not
/// readable), so a re-created object under the same label is caught by authentication.
struct Sealer {
    cipher: RootCipher,
    header: [u8; HEADER_BYTES],
}

enum RootCipher {
    /// Expanded once; its key schedule is wiped on drop.
    Memory(Box<Aes256Gcm>),
    Token(TokenRootKey),
}

impl Sealer {
    /// The header of a row of `format` sealed by this root key.
    fn header(&self, format: u8) -> [u8; HEADER_BYTES] {
        let mut header = self.header;
        header[0] = format;
        header
    }

    /// Whether a row's header names this root key (in a known format).
    fn sealed_this(&self, header: &[u8]) -> bool {
        matches!(
            header.first(),
            Some(&(SEALED_FORMAT | SEALED_FORMAT_VARIABLE))
        ) && header.get(1..HEADER_BYTES) == Some(&self.header[1..])
    }

    fn new(root_key: RootKey) -> Self {
        use sha2::Digest as _;
        let digest = match &root_key.0 {
            RootKeyMaterial::Memory(bytes) => sha2::Sha256::new()
                .chain_update(b"hyok software root key id\0")
                .chain_update(**bytes)
                .finalize(),
            RootKeyMaterial::Token(token) => sha2::Sha256::new()
                .chain_update(b"hyok software root key id, token object\0")
                .chain_update(token.hsm.token().label.as_bytes())
                .chain_update([0])
                .chain_update(token.label.as_bytes())
                .finalize(),
        };
        let mut header = [SEALED_FORMAT, 0, 0, 0, 0];
        header[1..].copy_from_slice(&digest[..4]);
        let cipher = match root_key.0 {
            RootKeyMaterial::Memory(bytes) => {
                RootCipher::Memory(Box::new(Aes256Gcm::new((&*bytes).into())))
            }
            RootKeyMaterial::Token(token) => RootCipher::Token(token),
        };
        Self { cipher, header }
    }

    /// `nonce ‖ AES-256-GCM(root key, material, aad) ‖ tag`.
    async fn seal(&self, aad: Vec<u8>, data_key: &[u8]) -> Result<Vec<u8>, BackendError> {
        match &self.cipher {
            RootCipher::Memory(cipher) => {
                let nonce = random::<NONCE_BYTES>()?;
                // Room for the tag up front: a reallocation would leave a clear copy behind.
                let mut buffer = Zeroizing::new(Vec::with_capacity(data_key.len() + TAG_BYTES));
                buffer.extend_from_slice(data_key);
                cipher
                    .encrypt_in_place(Nonce::from_slice(&nonce), &aad, &mut *buffer)
                    .map_err(|_| BackendError::Internal("sealing failed".into()))?;
                let mut out = Vec::with_capacity(NONCE_BYTES + buffer.len());
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&buffer);
                Ok(out)
            }
            RootCipher::Token(token) => {
                let (label, data_key) = (token.label.clone(), Zeroizing::new(data_key.to_vec()));
                let sealed = token
                    .run(move |session| session.encrypt(&label, &aad, &data_key))
                    .await?;
                if sealed.iv.len() != NONCE_BYTES {
                    return Err(BackendError::Internal(
                        "the root key token made an IV of another length".into(),
                    ));
                }
                let mut out = Vec::with_capacity(NONCE_BYTES + sealed.ciphertext.len() + TAG_BYTES);
                out.extend_from_slice(&sealed.iv);
                out.extend_from_slice(&sealed.ciphertext);
                out.extend_from_slice(&sealed.tag);
                Ok(out)
            }
        }
    }

    /// The data key of `nonce ‖ ciphertext ‖ tag` sealed with `aad`; `None` if it does not
    /// authenticate.
    async fn open(
        &self,
        aad: Vec<u8>,
        nonce: &[u8],
        body: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, BackendError> {
        match &self.cipher {
            RootCipher::Memory(cipher) => {
                let mut buffer = Zeroizing::new(body.to_vec());
                Ok(cipher
                    .decrypt_in_place(Nonce::from_slice(nonce), &aad, &mut *buffer)
                    .ok()
                    .map(|()| buffer))
            }
            RootCipher::Token(token) => {
                let (ciphertext, tag) = body.split_at(body.len().saturating_sub(TAG_BYTES));
                let (label, nonce, ciphertext, tag) = (
                    token.label.clone(),
                    nonce.to_vec(),
                    ciphertext.to_vec(),
                    tag.to_vec(),
                );
                match token
                    .run(move |session| session.decrypt(&label, &nonce, &aad, &ciphertext, &tag))
                    .await
                {
                    Ok(clear) => Ok(Some(clear)),
                    Err(BackendError::InvalidCiphertext) => Ok(None),
                    Err(other) => Err(other),
                }
            }
        }
    }
}

impl TokenRootKey {
    async fn run<T, F>(&self, job: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&mut ekm::hsm::HsmSession) -> Result<T, ekm::hsm::KeyOpError> + Send + 'static,
    {
        let deadline = std::time::Instant::now() + self.timeout;
        let done = self
            .hsm
            .run(deadline, move |session| Ok(job(session)))
            .await
            .map_err(super::hardware::hsm_failure)?;
        done.value.map_err(super::hardware::key_op_failure)
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

/// The root key id of a sealed row (hex of the 4 id bytes of its header), if it has a layout.
pub fn sealed_root_key_id(sealed: &[u8]) -> Option<String> {
    let laid_out = match sealed.first() {
        Some(&SEALED_FORMAT) => sealed.len() == SEALED_BYTES,
        Some(&SEALED_FORMAT_VARIABLE) => sealed.len() >= MIN_VARIABLE_SEALED_BYTES,
        _ => false,
    };
    laid_out.then(|| hex::encode(&sealed[1..HEADER_BYTES]))
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
            current: Sealer::new(root_key),
            previous: previous.into_iter().map(Sealer::new).collect(),
        }
    }

    /// Seals and unseals a throw-away key under every configured root key, so that a root key
    /// object missing from its token, or a token that refuses the PIN, is found at start and
    /// not at the first request.
    pub async fn self_test(&self) -> Result<(), BackendError> {
        let probe = Zeroizing::new([0x5a; KEY_BYTES]);
        for sealer in std::iter::once(&self.current).chain(&self.previous) {
            let aad = b"hyok software root key self-test".to_vec();
            let sealed = sealer.seal(aad.clone(), &probe[..]).await?;
            let (nonce, body) = sealed.split_at(NONCE_BYTES);
            let opened = sealer.open(aad, nonce, body).await?;
            if opened.as_deref().map(Vec::as_slice) != Some(&probe[..]) {
                return Err(BackendError::Internal(format!(
                    "root key {} does not open what it sealed",
                    hex::encode(&sealer.header[1..])
                )));
            }
        }
        Ok(())
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

    /// Re-seals a row of `key_id` / `version_id` under the current root key, keeping its
    /// material and its format. An error when no configured root key unseals it.
    pub async fn reseal(
        &self,
        key_id: &KeyId,
        version_id: &KeyVersionId,
        sealed: &[u8],
    ) -> Result<Resealed, BackendError> {
        if sealed_root_key_id(sealed).is_some() && self.current.sealed_this(&sealed[..HEADER_BYTES])
        {
            return Ok(Resealed::Current);
        }
        let (format, material) = self.unseal_row(key_id, version_id, sealed).await?;
        self.seal(format, key_id, version_id, &material)
            .await
            .map(Resealed::Sealed)
    }

    /// Seals material in `format` for `key_id` / `version_id`.
    async fn seal(
        &self,
        format: u8,
        key_id: &KeyId,
        version_id: &KeyVersionId,
        material: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        let header = self.current.header(format);
        let body = self
            .current
            .seal(sealing_aad(&header, key_id, version_id), material)
            .await?;
        let mut sealed = Vec::with_capacity(HEADER_BYTES + body.len());
        sealed.extend_from_slice(&header);
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// Unseals the data key of a version. Failure means the row was moved, corrupted, or sealed
    /// under a root key that is not configured: an internal fault, not the caller's ciphertext.
    async fn unseal(
        &self,
        key: &KeyContext<'_>,
    ) -> Result<Zeroizing<[u8; KEY_BYTES]>, BackendError> {
        let (format, clear) = self.unseal_version(key).await?;
        let data_key = <[u8; KEY_BYTES]>::try_from(clear.as_slice())
            .ok()
            .filter(|_| format == SEALED_FORMAT)
            .ok_or_else(|| {
                BackendError::InvalidParameter("the key is not a symmetric key".into())
            })?;
        Ok(Zeroizing::new(data_key))
    }

    /// The private key (PKCS#8 DER) of an asymmetric version.
    async fn unseal_private_key(
        &self,
        key: &KeyContext<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        match self.unseal_version(key).await? {
            (SEALED_FORMAT_VARIABLE, pkcs8) => Ok(pkcs8),
            _ => Err(BackendError::InvalidParameter(
                "the key is not an asymmetric key".into(),
            )),
        }
    }

    async fn unseal_version(
        &self,
        key: &KeyContext<'_>,
    ) -> Result<(u8, Zeroizing<Vec<u8>>), BackendError> {
        let sealed = key.material.sealed.as_deref().ok_or_else(|| {
            BackendError::Internal("software version without sealed material".into())
        })?;
        self.unseal_row(key.key_id, key.version_id, sealed).await
    }

    /// The format and clear material of a row.
    async fn unseal_row(
        &self,
        key_id: &KeyId,
        version_id: &KeyVersionId,
        sealed: &[u8],
    ) -> Result<(u8, Zeroizing<Vec<u8>>), BackendError> {
        if sealed_root_key_id(sealed).is_none() {
            return Err(BackendError::Internal(
                "sealed material has an unknown format or the wrong length".into(),
            ));
        }
        let (header, rest) = sealed.split_at(HEADER_BYTES);
        let Some(sealer) = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|s| s.sealed_this(header))
        else {
            tracing::error!(target: "kms_connector::software", key_id = %key_id, version_id = %version_id, root_key_id = %hex::encode(&header[1..]), "sealed material names another format or a root key that is not configured");
            return Err(BackendError::Internal(
                "sealed under a root key that is not configured".into(),
            ));
        };
        let format = header[0];
        let (nonce, body) = rest.split_at(NONCE_BYTES);
        let Some(clear) = sealer
            .open(
                sealing_aad(&sealer.header(format), key_id, version_id),
                nonce,
                body,
            )
            .await?
        else {
            tracing::error!(target: "kms_connector::software", key_id = %key_id, version_id = %version_id, "sealed material does not unseal under the root key");
            return Err(BackendError::Internal(
                "sealed material does not unseal".into(),
            ));
        };
        Ok((format, clear))
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
            families: Families {
                sign: true,
                asymmetric_encrypt: true,
                public_key: true,
            },
            key_specs: KEY_SPECS,
            protection_level: ProtectionLevel::Software,
            rotation: true,
            versions: true,
            import: false,
            needs_external_key_id: false,
        }
    }

    async fn new_version(&self, request: NewVersion<'_>) -> Result<VersionMaterial, BackendError> {
        let sealed = if request.key_spec == AES_256 {
            let mut data_key = Zeroizing::new([0u8; KEY_BYTES]);
            OsRng.try_fill_bytes(data_key.as_mut()).map_err(|_| {
                BackendError::Internal("the operating system's random generator failed".into())
            })?;
            self.seal(
                SEALED_FORMAT,
                request.key_id,
                request.version_id,
                &*data_key,
            )
            .await?
        } else {
            let spec = request.key_spec;
            // RSA key generation takes up to seconds: off the async workers.
            let private_key = tokio::task::spawn_blocking(move || asymmetric::generate(spec))
                .await
                .map_err(|_| BackendError::Internal("key generation was cancelled".into()))??
                .ok_or(BackendError::Unsupported(
                    "software instances make Aliyun_AES_256, RSA_2048, RSA_3072, RSA_4096, EC_P256 and EC_P256K keys",
                ))?;
            self.seal(
                SEALED_FORMAT_VARIABLE,
                request.key_id,
                request.version_id,
                &private_key,
            )
            .await?
        };
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
        let data_key = self.unseal(&key).await?;
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
        let data_key = self.unseal(&key).await?;
        let (iv, sealed) = payload.split_at(NONCE_BYTES);
        data_cipher(&data_key)
            .decrypt(Nonce::from_slice(iv), Payload { msg: sealed, aad })
            .map(Zeroizing::new)
            .map_err(|_| BackendError::InvalidCiphertext)
    }

    async fn sign(
        &self,
        key: KeyContext<'_>,
        algorithm: SigningAlgorithm,
        digest: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        asymmetric::sign(&self.unseal_private_key(&key).await?, algorithm, digest)
    }

    async fn verify(
        &self,
        key: KeyContext<'_>,
        algorithm: SigningAlgorithm,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool, BackendError> {
        let private_key = self.unseal_private_key(&key).await?;
        asymmetric::verify(&private_key, algorithm, digest, signature)
    }

    async fn asymmetric_encrypt(
        &self,
        key: KeyContext<'_>,
        algorithm: AsymmetricAlgorithm,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        let private_key = self.unseal_private_key(&key).await?;
        asymmetric::encrypt(&private_key, algorithm, plaintext)
    }

    async fn asymmetric_decrypt(
        &self,
        key: KeyContext<'_>,
        algorithm: AsymmetricAlgorithm,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let private_key = self.unseal_private_key(&key).await?;
        asymmetric::decrypt(&private_key, algorithm, ciphertext)
    }

    async fn public_key(&self, key: KeyContext<'_>) -> Result<Vec<u8>, BackendError> {
        asymmetric::public_key(&self.unseal_private_key(&key).await?)
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
        let Resealed::Sealed(resealed) = rotating.reseal(&k, &v, &sealed).await.unwrap() else {
            panic!("not re-sealed")
        };
        assert_eq!(sealed_root_key_id(&resealed), Some(rotating.root_key_id()));
        assert_eq!(
            rotating.reseal(&k, &v, &resealed).await.unwrap(),
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
        assert!(only_new.reseal(&k, &v, &sealed).await.is_err());
        let other = KeyVersionId::generate();
        assert!(rotating.reseal(&k, &other, &sealed).await.is_err());
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
                key_spec: KeySpec::EcSm2,
                ..version(&k1, &v1)
            })
            .await;
        assert!(matches!(refused, Err(BackendError::Unsupported(_))));
    }

    #[tokio::test]
    async fn private_keys_are_sealed_in_format_2_and_reseal_keeps_them() {
        let old = SoftwareBackend::new(RootKey::from_bytes([3; 32]));
        let (k, v) = (KeyId::generate("cn-hangzhou"), KeyVersionId::generate());
        let material = old
            .new_version(NewVersion {
                key_spec: KeySpec::EcP256,
                ..version(&k, &v)
            })
            .await
            .unwrap();
        let sealed = material.sealed.clone().unwrap();
        assert_eq!(sealed[0], SEALED_FORMAT_VARIABLE);
        assert_eq!(sealed_root_key_id(&sealed), Some(old.root_key_id()));
        let ctx = |material| KeyContext {
            key_id: &k,
            key_arn: "arn",
            version_id: &v,
            material,
            external_key_id: None,
            principal: "p",
            operation: "AsymmetricSign",
            request_id: "r",
        };
        // The row does not show the PKCS#8, nor any 8-byte window of its private scalar part.
        let pkcs8 = old.unseal_private_key(&ctx(&material)).await.unwrap();
        assert!(
            pkcs8.len() > 100
                && sealed.len() == pkcs8.len() + HEADER_BYTES + NONCE_BYTES + TAG_BYTES
        );
        assert!(!sealed.windows(8).any(|w| pkcs8.windows(8).any(|p| p == w)));
        let public = old.public_key(ctx(&material)).await.unwrap();
        let digest = [9u8; 32];
        let signature = old
            .sign(ctx(&material), SigningAlgorithm::EcdsaSha256, &digest)
            .await
            .unwrap();

        // A symmetric operation on an asymmetric row, and the reverse, are refused.
        assert!(matches!(
            old.encrypt(ctx(&material), b"x", b"").await,
            Err(BackendError::InvalidParameter(_))
        ));
        let aes = old.new_version(version(&k, &v)).await.unwrap();
        assert!(matches!(
            old.public_key(ctx(&aes)).await,
            Err(BackendError::InvalidParameter(_))
        ));

        let rotating = SoftwareBackend::with_previous(
            RootKey::from_bytes([4; 32]),
            vec![RootKey::from_bytes([3; 32])],
        );
        let Resealed::Sealed(resealed) = rotating.reseal(&k, &v, &sealed).await.unwrap() else {
            panic!("not re-sealed")
        };
        assert_eq!(resealed[0], SEALED_FORMAT_VARIABLE);
        assert_eq!(sealed_root_key_id(&resealed), Some(rotating.root_key_id()));
        assert_eq!(
            rotating.reseal(&k, &v, &resealed).await.unwrap(),
            Resealed::Current
        );
        // Format 1 rows reseal in format 1, next to format 2 rows.
        let aes_sealed = aes.sealed.clone().unwrap();
        let Resealed::Sealed(aes_resealed) = rotating.reseal(&k, &v, &aes_sealed).await.unwrap()
        else {
            panic!("not re-sealed")
        };
        assert_eq!(
            (aes_resealed[0], aes_resealed.len()),
            (SEALED_FORMAT, SEALED_BYTES)
        );
        let only_new = SoftwareBackend::new(RootKey::from_bytes([4; 32]));
        let moved = VersionMaterial {
            sealed: Some(resealed.clone()),
            backend_ref: None,
        };
        assert_eq!(only_new.public_key(ctx(&moved)).await.unwrap(), public);
        assert!(
            only_new
                .verify(
                    ctx(&moved),
                    SigningAlgorithm::EcdsaSha256,
                    &digest,
                    &signature
                )
                .await
                .unwrap()
        );
        assert!(only_new.public_key(ctx(&material)).await.is_err());
        // The format byte is authenticated: a format-2 row relabelled as format 1 does not open.
        let mut relabelled = resealed;
        relabelled[0] = SEALED_FORMAT;
        assert!(only_new.reseal(&k, &v, &relabelled).await.is_err());
        // Bound to its key and version like format 1.
        let other = KeyVersionId::generate();
        assert!(rotating.reseal(&k, &other, &sealed).await.is_err());
    }
}
