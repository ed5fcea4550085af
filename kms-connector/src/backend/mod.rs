//! The `KeyBackend` seam: what an instance kind does with key material. One trait, one
//! implementation per kind (software, hardware, external), one shared conformance suite.
//! Differences are declared in [`Capabilities`], not special-cased in handlers.
//!
//! The API layer owns metadata (the store) and the state × operation matrix; a backend only
//! makes material for a new key version and runs crypto with it. Payloads returned by
//! `encrypt` go after the version id in the ciphertext blob (`crate::blob`).
//!
//! Operation families: symmetric encrypt/decrypt (every backend), versions and rotation,
//! sign/verify, asymmetric encrypt/decrypt, public key. A backend declares the families it
//! offers in [`Capabilities::families`]; the trait's default for every optional family is the
//! refusal [`BackendError::Unsupported`], which the conformance suite checks on every backend
//! that does not declare it.

use schemas::kms::{AsymmetricAlgorithm, KeySpec, ProtectionLevel, SigningAlgorithm};
use schemas::xki::ExternalKeyId;
use zeroize::Zeroizing;

use crate::ids::{KeyId, KeyVersionId};
use crate::store::{ConnectionState, InstanceKind};

pub mod conformance;
pub mod external;
pub mod software;

/// Operation families beyond symmetric encrypt/decrypt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Families {
    /// AsymmetricSign / AsymmetricVerify.
    pub sign: bool,
    /// AsymmetricEncrypt / AsymmetricDecrypt.
    pub asymmetric_encrypt: bool,
    /// GetPublicKey.
    pub public_key: bool,
}

/// What a backend can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Families beyond symmetric encrypt/decrypt.
    pub families: Families,
    /// Key specs it can create.
    pub key_specs: &'static [KeySpec],
    /// `ProtectionLevel` of its keys.
    pub protection_level: ProtectionLevel,
    /// Whether keys can gain versions (rotation, CreateKeyVersion).
    pub rotation: bool,
    /// Whether KMS manages (and shows) the versions of its keys; the versions of external
    /// keys live in the external key manager, so the version APIs refuse them (seed 000).
    pub versions: bool,
    /// Whether key material can be imported (`Origin=EXTERNAL`).
    pub import: bool,
    /// Whether CreateKey needs an `ExternalKeyId` (external instances).
    pub needs_external_key_id: bool,
}

/// Connection state of an instance, with the reason when it is `Error`. Software and hardware
/// instances are `Connected` while they work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceStatus {
    /// `Uninitialized`, `Connecting`, `Connected`, `Disconnected` or `Error`.
    pub state: ConnectionState,
    /// Set when `state` is `Error`.
    pub error: Option<ConnectionError>,
}

impl InstanceStatus {
    /// A working instance.
    pub const CONNECTED: Self = Self {
        state: ConnectionState::Connected,
        error: None,
    };
}

/// Why an external instance is in `Error` (XKS connection error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionError {
    /// SigV4 refused (`AuthenticationFailedException`).
    InvalidCredentials,
    /// The proxy's authorization refused us.
    AccessDenied,
    /// Wrong path (`InvalidUriPathException`).
    InvalidConfiguration,
    /// The proxy's answer cannot be understood.
    InvalidResponse,
    /// TLS failed: untrusted or mismatched certificate, fingerprint mismatch, no TLS 1.2+.
    InvalidTlsConfiguration,
    /// No TCP connection, or every HSM of the fleet is UNAVAILABLE.
    NotReachable,
    /// The proxy did not answer in time.
    TimedOut,
    /// Anything else.
    InternalError,
}

impl ConnectionError {
    /// Whether waiting can cure it (the proxy or its HSMs are down or slow), as opposed to a
    /// configuration an operator must fix. Crypto on an instance in a transient `Error` answers
    /// the retryable `ServiceUnavailableTemporary`.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::NotReachable | Self::TimedOut | Self::InternalError
        )
    }

    /// The code shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::AccessDenied => "XKS_PROXY_ACCESS_DENIED",
            Self::InvalidConfiguration => "XKS_PROXY_INVALID_CONFIGURATION",
            Self::InvalidResponse => "XKS_PROXY_INVALID_RESPONSE",
            Self::InvalidTlsConfiguration => "XKS_PROXY_INVALID_TLS_CONFIGURATION",
            Self::NotReachable => "XKS_PROXY_NOT_REACHABLE",
            Self::TimedOut => "XKS_PROXY_TIMED_OUT",
            Self::InternalError => "INTERNAL_ERROR",
        }
    }
}

/// Material of one key version as the store keeps it: sealed bytes (software) or a reference
/// (hardware object label, external key id). Never clear material.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct VersionMaterial {
    /// Material sealed under the root key (software keys only).
    pub sealed: Option<Vec<u8>>,
    /// Backend reference (HSM object label, …).
    pub backend_ref: Option<String>,
}

impl std::fmt::Debug for VersionMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionMaterial")
            .field("sealed_len", &self.sealed.as_ref().map(Vec::len))
            .field("backend_ref", &self.backend_ref)
            .finish()
    }
}

/// Everything a backend needs to know about the key an operation is for.
#[derive(Debug, Clone, Copy)]
pub struct KeyContext<'a> {
    /// The KMS key.
    pub key_id: &'a KeyId,
    /// Its ARN (sent to an XKI proxy as `kmsKeyArn`).
    pub key_arn: &'a str,
    /// The version used.
    pub version_id: &'a KeyVersionId,
    /// The version's stored material or reference.
    pub material: &'a VersionMaterial,
    /// The external key (external instances).
    pub external_key_id: Option<&'a ExternalKeyId>,
    /// Caller principal (sent to an XKI proxy as `awsPrincipalArn`).
    pub principal: &'a str,
    /// The KMS operation (sent as `kmsOperation`).
    pub operation: &'a str,
    /// The request id (sent as `kmsRequestId`, logged).
    pub request_id: &'a str,
}

/// A request for the material of a new key version.
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    /// The key.
    pub key_id: &'a KeyId,
    /// The new version.
    pub version_id: &'a KeyVersionId,
    /// Key spec.
    pub key_spec: KeySpec,
    /// The external key to bind (external instances; checked with the proxy).
    pub external_key_id: Option<&'a ExternalKeyId>,
    /// Caller principal.
    pub principal: &'a str,
    /// Request id.
    pub request_id: &'a str,
}

/// Everything a backend operation can fail with. The API layer maps these onto KMS error codes
/// in one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The ciphertext does not authenticate (tampered, wrong context).
    #[error("the ciphertext does not authenticate")]
    InvalidCiphertext,
    /// The backend cannot be used until an operator acts: instance disconnected, credentials
    /// or TLS refused, the proxy does not know the route.
    #[error("{0}")]
    Unavailable(String),
    /// The backend is down or failing for now (proxy or HSM unreachable, the proxy's own
    /// dependency failed); retrying later may work.
    #[error("{0}")]
    TemporarilyUnavailable(String),
    /// The external key is not ENABLED in the XKI proxy.
    #[error("the external key is disabled in the XKI proxy")]
    ExternalKeyDisabled,
    /// The external key does not exist in the XKI proxy.
    #[error("the external key was not found in the XKI proxy")]
    ExternalKeyNotFound,
    /// The external key cannot back a KMS key (spec, usage, state).
    #[error("the external key cannot be used: {0}")]
    ExternalKeyUnusable(String),
    /// The backend is overloaded.
    #[error("the key backend is busy")]
    Throttled,
    /// The backend did not answer in time.
    #[error("the key backend timed out")]
    Timeout,
    /// Not something this backend does (see its capabilities).
    #[error("{0}")]
    Unsupported(&'static str),
    /// Bad input the API layer could not catch (sizes, …).
    #[error("{0}")]
    InvalidParameter(String),
    /// A failure inside the backend (details in logs only).
    #[error("internal failure in the key backend")]
    Internal(String),
}

/// What an instance kind does with key material.
#[async_trait::async_trait]
pub trait KeyBackend: Send + Sync + 'static {
    /// The instance kind.
    fn kind(&self) -> InstanceKind;

    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// The instance's connection state (external instances change it; others are `Connected`).
    fn status(&self) -> InstanceStatus {
        InstanceStatus::CONNECTED
    }

    /// Makes (or, for external keys, checks and references) the material of a new version.
    async fn new_version(&self, request: NewVersion<'_>) -> Result<VersionMaterial, BackendError>;

    /// Encrypts `plaintext` with `aad`; returns the payload that follows the version id in the
    /// ciphertext blob.
    async fn encrypt(
        &self,
        key: KeyContext<'_>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, BackendError>;

    /// Decrypts a payload produced by `encrypt` for the same version and AAD.
    async fn decrypt(
        &self,
        key: KeyContext<'_>,
        payload: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError>;

    /// Signs a SHA-256 `digest` (AsymmetricSign). Family `sign`.
    async fn sign(
        &self,
        _key: KeyContext<'_>,
        _algorithm: SigningAlgorithm,
        _digest: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        Err(BackendError::Unsupported(
            "this instance kind does not sign",
        ))
    }

    /// Whether `signature` is valid for `digest` (AsymmetricVerify). Family `sign`.
    async fn verify(
        &self,
        _key: KeyContext<'_>,
        _algorithm: SigningAlgorithm,
        _digest: &[u8],
        _signature: &[u8],
    ) -> Result<bool, BackendError> {
        Err(BackendError::Unsupported(
            "this instance kind does not verify signatures",
        ))
    }

    /// Encrypts with the public key (AsymmetricEncrypt). Family `asymmetric_encrypt`.
    async fn asymmetric_encrypt(
        &self,
        _key: KeyContext<'_>,
        _algorithm: AsymmetricAlgorithm,
        _plaintext: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        Err(BackendError::Unsupported(
            "this instance kind has no asymmetric encryption",
        ))
    }

    /// Decrypts with the private key (AsymmetricDecrypt). Family `asymmetric_encrypt`.
    async fn asymmetric_decrypt(
        &self,
        _key: KeyContext<'_>,
        _algorithm: AsymmetricAlgorithm,
        _ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        Err(BackendError::Unsupported(
            "this instance kind has no asymmetric decryption",
        ))
    }

    /// The version's public key, DER SubjectPublicKeyInfo (GetPublicKey). Family `public_key`.
    async fn public_key(&self, _key: KeyContext<'_>) -> Result<Vec<u8>, BackendError> {
        Err(BackendError::Unsupported(
            "this instance kind has no public keys",
        ))
    }

    /// Forgets a version's material when its key is deleted (destroys HSM objects; no-op for
    /// software material, which goes with its row, and for external keys, which the proxy owns).
    async fn destroy_version(&self, _material: &VersionMaterial) -> Result<(), BackendError> {
        Ok(())
    }
}
