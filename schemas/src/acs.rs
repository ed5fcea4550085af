//! Alibaba Cloud OpenAPI request signatures: ACS3-HMAC-SHA256 and the HMAC-SHA1 RPC signature.
//!
//! - [`Verifier`] checks either signature ([`detect`] tells which one a request carries) against
//!   a caller-supplied credential lookup and an injected clock. It returns the nonce and
//!   timestamp in [`Verified`]; nonce replay is the caller's job (it owns the store).
//! - [`sign_acs3`] and [`sign_rpc`] produce what `alibabacloud-kms20160120` (Tea) and
//!   `aliyun-python-sdk-kms` send, for our own clients and tests.
//! - [`api_parameters`] decodes the query and form body exactly as the signatures read them.

mod params;
mod rpc;
mod v3;

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{Duration, OffsetDateTime, PrimitiveDateTime, UtcOffset};

pub use crate::http::{Credential, CredentialLookup, ExpectedHosts, RequestParts, Secret};
pub use params::{api_parameters, encode_parameters, percent_encode};
pub use rpc::{RpcRequest, sign_rpc};
pub use v3::{Acs3Request, SignedRequest, sign_acs3};

/// The canonical forms of both signatures, for the fuzz targets (feature `fuzzing`); not part
/// of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use super::{AcsSignatureError, RequestParts};

    /// The ACS3 canonical request of `request` over `signed_headers` (lower-case, sorted,
    /// unique) and the hex SHA-256 of the body, exactly as the signer and the verifier build it.
    pub fn acs3_canonical_request(
        request: &RequestParts<'_>,
        signed_headers: &[&str],
        hashed_payload: &str,
    ) -> Result<String, AcsSignatureError> {
        super::v3::canonical_request(request, signed_headers, hashed_payload)
    }

    /// The canonicalized query the RPC signature signs: every pair but `Signature`, sorted and
    /// percent-encoded (the string to sign is `METHOD&%2F&` + its percent-encoding).
    pub fn rpc_canonical_query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
        super::params::canonical_query(pairs.into_iter().filter(|(name, _)| *name != "Signature"))
    }
}

/// Alibaba's default replay window: ±15 minutes.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::minutes(15);

/// The two signature algorithms of the OpenAPI gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// `Authorization: ACS3-HMAC-SHA256 …` (signature V3, the Tea SDKs).
    Acs3HmacSha256,
    /// `Signature=` parameter, `SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0` (the RPC SDKs).
    RpcHmacSha1,
}

impl Algorithm {
    /// The algorithm's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acs3HmacSha256 => v3::ALGORITHM,
            Self::RpcHmacSha1 => rpc::SIGNATURE_METHOD,
        }
    }
}

/// Which signature `request` carries: ACS3 when `Authorization` starts with `ACS3-HMAC-SHA256`,
/// RPC when the query or form body has a `Signature` parameter, else `None`.
pub fn detect(request: &RequestParts<'_>) -> Option<Algorithm> {
    if request
        .header_values("authorization")
        .any(|value| value.trim_start().starts_with(v3::ALGORITHM))
    {
        return Some(Algorithm::Acs3HmacSha256);
    }
    let names_signature = |raw: &str| {
        raw.split('&')
            .any(|pair| pair.split('=').next() == Some("Signature"))
    };
    let body_names_signature = || std::str::from_utf8(request.body).is_ok_and(names_signature);
    (names_signature(request.query()) || body_names_signature()).then_some(Algorithm::RpcHmacSha1)
}

/// What a verified request was signed with; the caller still checks the nonce for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The AccessKey id that signed the request.
    pub access_key_id: String,
    /// `x-acs-signature-nonce` (ACS3) or `SignatureNonce` (RPC).
    pub nonce: String,
    /// `x-acs-date` (ACS3) or `Timestamp` (RPC).
    pub timestamp: OffsetDateTime,
    /// The signed action: the `x-acs-action` header (ACS3) or the `Action` parameter (RPC; the
    /// RPC SDK's `x-acs-action` header is not signed and must not be trusted).
    pub action: Option<String>,
    /// The signed API version: `x-acs-version` (ACS3) or the `Version` parameter (RPC).
    pub version: Option<String>,
    /// Which signature the request carried.
    pub algorithm: Algorithm,
}

/// Why an OpenAPI request signature was refused. [`code`](Self::code) and
/// [`http_status`](Self::http_status) give the Alibaba error to answer with.
///
/// Messages are short printable ASCII; they never contain a secret or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcsSignatureError {
    /// Neither an ACS3 `Authorization` header nor a `Signature` parameter.
    #[error("request is not signed")]
    MissingSignature,
    /// Another algorithm, `SignatureMethod` or `SignatureVersion`.
    #[error("unsupported signature algorithm, method or version")]
    UnsupportedAlgorithm,
    /// The `Authorization` header or `Signature` parameter has the wrong shape.
    #[error("malformed signature: {0}")]
    MalformedSignature(&'static str),
    /// RPC: the path is not `/` (the RPC signature does not cover the path).
    #[error("RPC requests must target /")]
    UnsignedPath,
    /// A parameter or header the signature needs is absent, empty or repeated.
    #[error("missing or repeated signature field {0}")]
    MissingSignatureField(&'static str),
    /// ACS3: a header that must be signed is not in `SignedHeaders`.
    #[error("header {0} must be signed")]
    HeaderNotSigned(String),
    /// ACS3: a header listed in `SignedHeaders` is absent from the request.
    #[error("signed header {0} is missing from the request")]
    MissingSignedHeader(String),
    /// ACS3: `x-acs-content-sha256` is not the SHA-256 of the body.
    #[error("x-acs-content-sha256 does not match the body")]
    ContentHashMismatch,
    /// The query or body cannot be decoded into parameters.
    #[error("malformed parameters: {0}")]
    MalformedParameters(&'static str),
    /// A parameter name occurs more than once.
    #[error("parameter {0} is repeated")]
    DuplicateParameter(String),
    /// No `x-acs-date` / `Timestamp`.
    #[error("missing timestamp")]
    MissingTimestamp,
    /// The timestamp is repeated or not `YYYY-MM-DDThh:mm:ssZ`.
    #[error("timestamp is not a single YYYY-MM-DDThh:mm:ssZ value")]
    MalformedTimestamp,
    /// The timestamp is further from the verifier's clock than the allowed skew.
    #[error("request time is {skew_seconds} s away from the server clock")]
    ClockSkew {
        /// Request time minus server time, in seconds.
        skew_seconds: i64,
    },
    /// The credential lookup does not know this AccessKey id.
    #[error("unknown AccessKey id {0}")]
    UnknownAccessKey(String),
    /// ACS3: the request was signed for a host this server does not answer to.
    #[error("the request is signed for host {0}, which this server does not answer to")]
    UnexpectedHost(String),
    /// Everything parsed, but the signature is not the one the secret produces.
    #[error("signature does not match")]
    SignatureMismatch,
    /// The nonce was seen before. Never returned by [`Verifier`]: the caller's nonce store
    /// builds it, so that the answer has the right Alibaba code.
    #[error("signature nonce already used")]
    NonceReused,
    /// Signers only: the request cannot be signed.
    #[error("cannot sign request: {0}")]
    InvalidSigningRequest(&'static str),
}

impl AcsSignatureError {
    /// The Alibaba Cloud error code to answer with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingTimestamp | Self::MalformedTimestamp | Self::ClockSkew { .. } => {
                "IllegalTimestamp"
            }
            Self::UnknownAccessKey(_) => "InvalidAccessKeyId.NotFound",
            Self::NonceReused => "SignatureNonceUsed",
            Self::MalformedParameters(_)
            | Self::DuplicateParameter(_)
            | Self::InvalidSigningRequest(_) => "InvalidParameter",
            Self::MissingSignature
            | Self::UnsupportedAlgorithm
            | Self::MalformedSignature(_)
            | Self::UnsignedPath
            | Self::MissingSignatureField(_)
            | Self::HeaderNotSigned(_)
            | Self::MissingSignedHeader(_)
            | Self::ContentHashMismatch
            | Self::UnexpectedHost(_)
            | Self::SignatureMismatch => "IncompleteSignature",
        }
    }

    /// The HTTP status of [`code`](Self::code).
    pub fn http_status(&self) -> u16 {
        match self {
            Self::UnknownAccessKey(_) => 404,
            _ => 400,
        }
    }
}

/// Verifies OpenAPI request signatures of either algorithm.
#[derive(Debug, Clone)]
pub struct Verifier {
    max_clock_skew: Duration,
    expected_hosts: ExpectedHosts,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            expected_hosts: ExpectedHosts::default(),
        }
    }
}

impl Verifier {
    /// A verifier with Alibaba's ±15 minute window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts timestamps up to `max_clock_skew` away from `now`, either way.
    #[must_use]
    pub fn with_max_clock_skew(mut self, max_clock_skew: Duration) -> Self {
        self.max_clock_skew = max_clock_skew.abs();
        self
    }

    /// Refuses ACS3 requests whose signed `host` is not one of `hosts` (the HMAC-SHA1 RPC
    /// signature does not sign the host, so it has nothing to check).
    #[must_use]
    pub fn with_expected_hosts(mut self, hosts: ExpectedHosts) -> Self {
        self.expected_hosts = hosts;
        self
    }

    /// The largest accepted distance between the request's timestamp and the clock.
    pub fn max_clock_skew(&self) -> Duration {
        self.max_clock_skew
    }

    /// Verifies whichever signature [`detect`] finds.
    pub fn verify<C>(
        &self,
        request: &RequestParts<'_>,
        credentials: C,
        now: OffsetDateTime,
    ) -> Result<Verified, AcsSignatureError>
    where
        C: CredentialLookup,
    {
        match detect(request) {
            Some(Algorithm::Acs3HmacSha256) => self.verify_acs3(request, credentials, now),
            Some(Algorithm::RpcHmacSha1) => self.verify_rpc(request, credentials, now),
            None => Err(AcsSignatureError::MissingSignature),
        }
    }

    /// Verifies an ACS3-HMAC-SHA256 request.
    pub fn verify_acs3<C>(
        &self,
        request: &RequestParts<'_>,
        credentials: C,
        now: OffsetDateTime,
    ) -> Result<Verified, AcsSignatureError>
    where
        C: CredentialLookup,
    {
        if !self.expected_hosts.is_empty() {
            let mut hosts = request.header_values("host");
            match (hosts.next(), hosts.next()) {
                (Some(host), None) if self.expected_hosts.allows(host) => {}
                (Some(host), None) => {
                    return Err(AcsSignatureError::UnexpectedHost(
                        host.chars()
                            .take(64)
                            .filter(char::is_ascii_graphic)
                            .collect(),
                    ));
                }
                _ => return Err(AcsSignatureError::MissingSignatureField("host")),
            }
        }
        v3::verify(request, credentials, now, self.max_clock_skew)
    }

    /// Verifies an HMAC-SHA1 RPC request.
    pub fn verify_rpc<C>(
        &self,
        request: &RequestParts<'_>,
        credentials: C,
        now: OffsetDateTime,
    ) -> Result<Verified, AcsSignatureError>
    where
        C: CredentialLookup,
    {
        rpc::verify(request, credentials, now, self.max_clock_skew)
    }
}

const TIMESTAMP: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// Parses `YYYY-MM-DDThh:mm:ssZ` (exactly that shape) and checks it against `now`.
fn check_timestamp(
    value: &str,
    now: OffsetDateTime,
    max_clock_skew: Duration,
) -> Result<OffsetDateTime, AcsSignatureError> {
    let shape_ok = value.len() == 20
        && value.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    if !shape_ok {
        return Err(AcsSignatureError::MalformedTimestamp);
    }
    let timestamp = PrimitiveDateTime::parse(value, TIMESTAMP)
        .map_err(|_| AcsSignatureError::MalformedTimestamp)?
        .assume_utc();
    let skew = timestamp - now;
    if skew.abs() > max_clock_skew {
        return Err(AcsSignatureError::ClockSkew {
            skew_seconds: skew.whole_seconds(),
        });
    }
    Ok(timestamp)
}

/// Formats `YYYY-MM-DDThh:mm:ssZ` in UTC.
fn format_timestamp(time: OffsetDateTime) -> Result<String, AcsSignatureError> {
    let utc = time.to_offset(UtcOffset::UTC);
    if !(0..=9999).contains(&utc.year()) {
        return Err(AcsSignatureError::InvalidSigningRequest(
            "time out of range",
        ));
    }
    utc.format(TIMESTAMP)
        .map_err(|_| AcsSignatureError::InvalidSigningRequest("time out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn timestamps_are_strict_and_windowed() {
        let now = datetime!(2026-11-23 14:58:52 UTC);
        let window = DEFAULT_MAX_CLOCK_SKEW;
        assert_eq!(
            check_timestamp("2026-11-23T14:58:52Z", now, window).unwrap(),
            now
        );
        assert_eq!(format_timestamp(now).unwrap(), "2026-11-23T14:58:52Z");
        assert!(check_timestamp("2026-11-23T15:13:52Z", now, window).is_ok());
        assert_eq!(
            check_timestamp("2026-11-23T15:13:53Z", now, window),
            Err(AcsSignatureError::ClockSkew { skew_seconds: 901 })
        );
        for bad in [
            "2026-11-23T14:58:52",
            "2026-11-23 14:58:52Z",
            "2026-11-23T14:58:52.000Z",
            "2026-11-23T14:58:52+00:00",
            "2026-13-23T14:58:52Z",
            "20261123T145852Z",
        ] {
            assert_eq!(
                check_timestamp(bad, now, window),
                Err(AcsSignatureError::MalformedTimestamp),
                "{bad}"
            );
        }
    }

    #[test]
    fn codes_and_statuses() {
        use AcsSignatureError as E;
        assert_eq!(
            (
                E::SignatureMismatch.code(),
                E::SignatureMismatch.http_status()
            ),
            ("IncompleteSignature", 400)
        );
        let unknown = E::UnknownAccessKey("LTAI".into());
        assert_eq!(
            (unknown.code(), unknown.http_status()),
            ("InvalidAccessKeyId.NotFound", 404)
        );
        assert_eq!(
            E::ClockSkew { skew_seconds: 1000 }.code(),
            "IllegalTimestamp"
        );
        assert_eq!(E::MalformedTimestamp.code(), "IllegalTimestamp");
        assert_eq!(E::NonceReused.code(), "SignatureNonceUsed");
        assert_eq!(E::ContentHashMismatch.code(), "IncompleteSignature");
    }

    #[test]
    fn detects_the_algorithm() {
        let acs3 = vec![(
            "Authorization".to_owned(),
            "ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host,Signature=00".to_owned(),
        )];
        let request = |target, headers, body| RequestParts {
            method: "POST",
            target,
            headers,
            body,
        };
        assert_eq!(
            detect(&request("/", &acs3, b"")),
            Some(Algorithm::Acs3HmacSha256)
        );
        assert_eq!(
            detect(&request("/?A=1&Signature=x", &[], b"")),
            Some(Algorithm::RpcHmacSha1)
        );
        assert_eq!(
            detect(&request("/", &[], b"A=1&Signature=x")),
            Some(Algorithm::RpcHmacSha1)
        );
        assert_eq!(
            detect(&request("/?SignatureNonce=1&XSignature=2", &[], b"")),
            None
        );
        assert_eq!(detect(&request("/", &[], b"")), None);
    }
}
