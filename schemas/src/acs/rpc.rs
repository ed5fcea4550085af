//! The RPC signature (HMAC-SHA1, `SignatureVersion=1.0`), as `aliyun-python-sdk-kms` sends it.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use super::params::{api_parameters, canonical_query, percent_encode, printable};
use super::{AcsSignatureError, Algorithm, Verified, check_timestamp, format_timestamp};
use crate::http::{Credential, CredentialLookup, RequestParts};

pub(crate) const SIGNATURE_METHOD: &str = "HMAC-SHA1";
const SIGNATURE_VERSION: &str = "1.0";

/// `Base64(HMAC-SHA1(secret + "&", METHOD & %2F & percentEncode(canonicalized query)))`, raw,
/// over every pair except `Signature`.
fn signature<'a>(
    secret: &str,
    method: &str,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> [u8; 20] {
    let canonical = canonical_query(pairs.into_iter().filter(|(name, _)| *name != "Signature"));
    let string_to_sign = format!("{method}&%2F&{}", percent_encode(&canonical));
    let key = Zeroizing::new(format!("{secret}&"));
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key.as_bytes()) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac.update(string_to_sign.as_bytes());
    mac.finalize().into_bytes().into()
}

pub(crate) fn verify<C>(
    request: &RequestParts<'_>,
    credentials: C,
    now: OffsetDateTime,
    max_clock_skew: Duration,
) -> Result<Verified, AcsSignatureError>
where
    C: CredentialLookup,
{
    // The signature covers the path only as `%2F`: refuse any other path.
    if !matches!(request.path(), "/" | "") {
        return Err(AcsSignatureError::UnsignedPath);
    }
    // Repeated names are refused here: they would make "the" value of a parameter ambiguous.
    let params = api_parameters(request)?;
    let get = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let required =
        |name: &'static str| get(name).ok_or(AcsSignatureError::MissingSignatureField(name));

    let provided = get("Signature").ok_or(AcsSignatureError::MissingSignature)?;
    if required("SignatureMethod")? != SIGNATURE_METHOD
        || required("SignatureVersion")? != SIGNATURE_VERSION
    {
        return Err(AcsSignatureError::UnsupportedAlgorithm);
    }
    let access_key_id = required("AccessKeyId")?;
    let nonce = required("SignatureNonce")?;
    let timestamp = check_timestamp(
        get("Timestamp").ok_or(AcsSignatureError::MissingTimestamp)?,
        now,
        max_clock_skew,
    )?;
    let provided: [u8; 20] = crate::b64::decode(provided)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(AcsSignatureError::MalformedSignature(
            "Signature is not Base64 of 20 bytes",
        ))?;

    let Some(secret) = credentials.secret(access_key_id) else {
        // A parameter of any length and content: the message repeats a short, printable form.
        return Err(AcsSignatureError::UnknownAccessKey(printable(
            access_key_id,
        )));
    };
    let expected = Zeroizing::new(signature(
        secret.expose(),
        request.method,
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ));
    if !bool::from(expected.ct_eq(&provided)) {
        return Err(AcsSignatureError::SignatureMismatch);
    }
    Ok(Verified {
        access_key_id: access_key_id.to_owned(),
        nonce: nonce.to_owned(),
        timestamp,
        action: get("Action").map(str::to_owned),
        version: get("Version").map(str::to_owned),
        algorithm: Algorithm::RpcHmacSha1,
    })
}

/// An OpenAPI call to sign with the RPC signature.
#[derive(Debug, Clone, Copy)]
pub struct RpcRequest<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// `Action`, e.g. `Encrypt`.
    pub action: &'a str,
    /// `Version`, e.g. `2016-01-20`.
    pub version: &'a str,
    /// The API's own parameters (and e.g. `Format`, `RegionId`), not encoded.
    pub params: &'a [(&'a str, &'a str)],
    /// `SignatureNonce`: unique per request.
    pub nonce: &'a str,
}

/// Signs `request` at `now` and returns every parameter to send, `Signature` last, in the order
/// the Python SDK uses. Send them with [`super::encode_parameters`] as the query string or as a
/// form body.
pub fn sign_rpc(
    credential: &Credential,
    request: &RpcRequest<'_>,
    now: OffsetDateTime,
) -> Result<Vec<(String, String)>, AcsSignatureError> {
    let common = [
        "Action",
        "Version",
        "AccessKeyId",
        "Timestamp",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
    ];
    if request.params.iter().any(|(name, _)| common.contains(name)) {
        return Err(AcsSignatureError::InvalidSigningRequest(
            "params repeat a common parameter",
        ));
    }
    // The verifier refuses a repeated name (its value would be ambiguous): do not sign one.
    let mut names: Vec<&str> = request.params.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    if names.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(AcsSignatureError::InvalidSigningRequest(
            "params repeat a parameter",
        ));
    }
    if [
        request.method,
        request.action,
        request.version,
        request.nonce,
    ]
    .iter()
    .any(|v| v.is_empty())
        || credential.access_key_id.is_empty()
    {
        return Err(AcsSignatureError::InvalidSigningRequest(
            "empty common parameter",
        ));
    }
    let timestamp = format_timestamp(now)?;
    let mut pairs: Vec<(String, String)> = request
        .params
        .iter()
        .map(|&(k, v)| (k, v))
        .chain([
            ("Version", request.version),
            ("Action", request.action),
            ("Timestamp", timestamp.as_str()),
            ("SignatureMethod", SIGNATURE_METHOD),
            ("SignatureVersion", SIGNATURE_VERSION),
            ("SignatureNonce", request.nonce),
            ("AccessKeyId", credential.access_key_id.as_str()),
        ])
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let raw = signature(
        credential.secret.expose(),
        request.method,
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    pairs.push(("Signature".to_owned(), crate::b64::encode(raw)));
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzzing (`acs_verify`): an unknown `AccessKeyId` parameter was repeated whole in the
    /// error, however long, control characters included.
    #[test]
    fn fuzz_unknown_access_key_message_is_short_and_printable() {
        let access_key_id = format!("LTAI\n{}", "4".repeat(300));
        let query = crate::acs::encode_parameters([
            ("AccessKeyId", access_key_id.as_str()),
            ("Action", "Encrypt"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", "n"),
            ("Timestamp", "2026-11-23T14:58:52Z"),
            ("Signature", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        ]);
        let target = format!("/?{query}");
        let request = RequestParts {
            method: "POST",
            target: &target,
            headers: &[],
            body: b"",
        };
        let now = time::macros::datetime!(2026-11-23 14:58:52 UTC);
        let lookup = |_: &str| None;
        let Err(AcsSignatureError::UnknownAccessKey(shown)) =
            verify(&request, lookup, now, Duration::minutes(15))
        else {
            panic!("expected UnknownAccessKey");
        };
        assert_eq!(shown.len(), 64);
        assert!(shown.starts_with("LTAI?4"), "{shown}");
    }

    /// Fuzzing (`acs_sign_verify`): `sign_rpc` signed a repeated parameter name, which the
    /// verifier then refused as `DuplicateParameter`.
    #[test]
    fn fuzz_sign_rpc_refuses_repeated_parameters() {
        let credential = Credential::new("AK", "secret");
        let request = RpcRequest {
            method: "POST",
            action: "Encrypt",
            version: "2016-01-20",
            params: &[("Format", "JSON"), ("KeyId", "k"), ("Format", "XML")],
            nonce: "n",
        };
        let now = time::macros::datetime!(2026-11-23 14:58:52 UTC);
        assert_eq!(
            sign_rpc(&credential, &request, now),
            Err(AcsSignatureError::InvalidSigningRequest(
                "params repeat a parameter"
            ))
        );
        let once = RpcRequest {
            params: &[("Format", "JSON"), ("KeyId", "k")],
            ..request
        };
        assert!(sign_rpc(&credential, &once, now).is_ok());
    }

    /// The worked example of Alibaba's RPC signature documentation (ECS DescribeRegions).
    #[test]
    fn alibaba_documentation_example() {
        let pairs = [
            ("Format", "XML"),
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Version", "2014-05-26"),
        ];
        let raw = signature("testsecret", "GET", pairs);
        assert_eq!(crate::b64::encode(raw), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
    }
}
