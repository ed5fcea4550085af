//! AWS Signature Version 4 for the XKI protocol (service `kms-xks-proxy`), spec §1.8.
//!
//! - [`Verifier`]: checks a received request (generic over `SignedHeaders`, which must include
//!   `host` and `x-amz-date`), with a caller-supplied credential lookup and an injected clock.
//! - [`Signer`]: signs a request the way KMS or curl would; the kms-connector's XKI client uses it.
//!
//! Written directly on `hmac` + `sha2`; the canonicalisation lives in `sigv4/canonical.rs`.

mod canonical;
mod sign;
mod verify;

pub use crate::http::{Credential, CredentialLookup, RequestParts, Secret};
pub use sign::{SignatureHeaders, Signer};
pub use verify::{Verified, Verifier};

/// The canonical request, for the fuzz targets (feature `fuzzing`); not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use super::{RequestParts, SigV4Error};

    /// The SigV4 canonical request of `request` over `signed_headers` (lower-case, sorted,
    /// unique), exactly as the signer and the verifier build it.
    pub fn canonical_request(
        request: &RequestParts<'_>,
        signed_headers: &[String],
    ) -> Result<String, SigV4Error> {
        super::canonical::canonical_request(request, signed_headers)
    }
}

/// The only algorithm SigV4 defines: `AWS4-HMAC-SHA256`.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The service name of the XKI protocol, the verifier's default.
pub const DEFAULT_SERVICE: &str = "kms-xks-proxy";
/// The replay window the spec recommends: ±5 minutes.
pub const DEFAULT_MAX_CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// Why a request's SigV4 signature was refused (or, for the signer, could not be made).
///
/// Messages are short printable ASCII. They never contain a secret, a signing key or the expected
/// signature; the only request values they repeat have been checked to be printable tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigV4Error {
    /// No `Authorization` header.
    #[error("missing Authorization header")]
    MissingAuthorization,
    /// The `Authorization` header does not have the SigV4 shape; the reason names the part.
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(&'static str),
    /// The `Authorization` header names an algorithm other than `AWS4-HMAC-SHA256`.
    #[error("unsupported signature algorithm (only AWS4-HMAC-SHA256)")]
    UnsupportedAlgorithm,
    /// `SignedHeaders` leaves out a header that must be signed (`host` or `x-amz-date`).
    #[error("header {0} must be signed")]
    RequiredHeaderNotSigned(&'static str),
    /// A header listed in `SignedHeaders` is absent from the request.
    #[error("signed header {0} is missing from the request")]
    MissingSignedHeader(String),
    /// No `x-amz-date` header.
    #[error("missing x-amz-date header")]
    MissingDate,
    /// `x-amz-date` is repeated or not `YYYYMMDDTHHMMSSZ`.
    #[error("x-amz-date is not a single YYYYMMDDTHHMMSSZ value")]
    MalformedDate,
    /// The credential scope's date is not the date of `x-amz-date`.
    #[error("credential scope date does not match x-amz-date")]
    CredentialScopeMismatch,
    /// The credential scope names another service.
    #[error("credential scope names service {0}, expected another")]
    WrongService(String),
    /// The credential scope's region is not one this verifier accepts.
    #[error("region {0} is not allowed")]
    RegionNotAllowed(String),
    /// The credential lookup does not know this access key id.
    #[error("unknown access key id {0}")]
    UnknownAccessKey(String),
    /// `x-amz-date` is further from the verifier's clock than the allowed skew.
    #[error("request time is {skew_seconds} s away from the server clock")]
    ClockSkew {
        /// Request time minus server time, in seconds (positive: request from the future).
        skew_seconds: i64,
    },
    /// Everything parsed, but the signature is not the one the secret produces.
    #[error("signature does not match")]
    SignatureMismatch,
    /// Signer only: the request or scope cannot be signed; the reason names the part.
    #[error("cannot sign request: {0}")]
    InvalidSigningRequest(&'static str),
}
