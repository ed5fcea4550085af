//! The one error enum of the `KeyManager` seam.
//!
//! Every variant is a documented, structured outcome; the EKM API maps them onto its error codes
//! in one `match` (`server/error.rs`). Messages never hold key material, plaintext, AAD or PINs:
//! PKCS#11 failures are reduced to the function and the `CKR_*` name.

use schemas::xki::ExternalKeyId;

/// The cryptographic operation a usage check refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// AES-GCM encryption.
    Encrypt,
    /// AES-GCM decryption.
    Decrypt,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
        })
    }
}

/// Everything a [`crate::KeyManager`] operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No managed key has this id.
    #[error("key {0} not found")]
    KeyNotFound(ExternalKeyId),
    /// The id (or the HSM object to adopt) is already managed.
    #[error("key {0} already exists")]
    KeyAlreadyExists(String),
    /// The key is disabled: no cryptographic operation.
    #[error("key {0} is disabled")]
    KeyDisabled(ExternalKeyId),
    /// The key is scheduled for deletion: no cryptographic operation, no rotation.
    #[error("key {0} is pending deletion")]
    KeyPendingDeletion(ExternalKeyId),
    /// The lifecycle change is not allowed from the key's current state.
    #[error("key {key}: {reason}")]
    InvalidKeyState {
        /// The key.
        key: ExternalKeyId,
        /// Why, in a few words.
        reason: &'static str,
    },
    /// The key's usage does not include the operation.
    #[error("key {key} does not permit {operation}")]
    KeyUsageNotPermitted {
        /// The key.
        key: ExternalKeyId,
        /// The refused operation.
        operation: Operation,
    },
    /// Ciphertext, IV, tag, AAD or ciphertext metadata do not authenticate (or the metadata is
    /// not ours). Deliberately says nothing more.
    #[error("ciphertext does not authenticate")]
    InvalidCiphertext,
    /// Malformed input: sizes, lengths, ids, labels, windows.
    #[error("invalid input: {0}")]
    Validation(String),
    /// The HSM queue is full; the request was not queued.
    #[error("HSM queue full, retry later")]
    Throttled,
    /// The request's deadline passed before the HSM served it.
    #[error("deadline exceeded before the HSM answered")]
    DeadlineExceeded,
    /// The HSM (or its PKCS#11 library) fails or cannot be reached.
    #[error("HSM unavailable: {0}")]
    HsmUnavailable(String),
    /// No token matches the configured label or serial.
    #[error("token not found: {0}")]
    TokenNotFound(String),
    /// The token refused the user PIN.
    #[error("the token rejected the PIN (CKR_PIN_INCORRECT)")]
    PinIncorrect,
    /// The token's user PIN is locked after too many failures.
    #[error("the token's user PIN is locked (CKR_PIN_LOCKED)")]
    PinLocked,
    /// Bad configuration detected at start.
    #[error("configuration: {0}")]
    Config(String),
    /// Anything else (a bug, an inconsistent HSM state).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result of every `KeyManager` operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
