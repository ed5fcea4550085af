//! The XKI protocol: KMS (kms-connector) ↔ XKI proxy, wire-compatible with the public
//! XKS Proxy API v1 (`../shared/spec/xki-protocol.md` §1).
//!
//! Wire types ([`wire`]) mirror the JSON exactly and ignore unknown fields; [`validate`] turns a
//! request into checked, decoded values, or into the [`ErrorName`] the spec prescribes.

pub mod aad;
mod error;
mod id;
pub mod validate;
pub mod wire;

pub use error::{ErrorBody, ErrorName, sanitize_error_message};
pub use id::{ExternalKeyId, InvalidExternalKeyId};
pub use validate::{Limits, RequestError, ValidDecrypt, ValidEncrypt};
pub use wire::*;

/// The path segment every XKI route lives under: `[/<prefix>]/kms/xks/v1`.
pub const API_BASE: &str = "/kms/xks/v1";
/// The SigV4 service name of the protocol.
pub const SIGV4_SERVICE: &str = "kms-xks-proxy";

/// Plaintext/ciphertext size every proxy must accept (spec §1.4).
pub const SPEC_MIN_DATA_BYTES: usize = 4300;
/// AAD size every proxy must accept (spec §1.4).
pub const SPEC_MIN_AAD_BYTES: usize = 8192;
/// Largest AAD the u16 length prefix of the AAD construction can carry.
pub const MAX_AAD_BYTES: usize = u16::MAX as usize;
/// `ciphertextMetadata` limit: KMS rejects anything larger (spec §1.4).
pub const MAX_CIPHERTEXT_METADATA_BYTES: usize = 20;
/// Accepted IV lengths in bytes.
pub const IV_LENGTHS: [usize; 2] = [12, 16];
/// The GCM tag length in bytes.
pub const TAG_BYTES: usize = 16;
/// Longest ARN the metadata may carry (spec §1.1).
pub const MAX_ARN_CHARS: usize = 2048;
/// The only encryption algorithm of the protocol.
pub const ENCRYPTION_ALGORITHM: &str = "AES_GCM";
/// The only integrity-value algorithm of the protocol.
pub const CDIV_ALGORITHM: &str = "SHA_256";
