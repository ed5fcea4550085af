//! ACS3-HMAC-SHA256 (Alibaba signature V3), as `alibabacloud-kms20160120` / Tea OpenAPI sends it.

use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use super::params::{canonical_query, encode_parameters, form_pairs, printable};
use super::{AcsSignatureError, Algorithm, Verified, check_timestamp, format_timestamp};
use crate::http::{
    Credential, CredentialLookup, RequestParts, canonical_path, hmac_sha256, sha256_hex,
};

pub(crate) const ALGORITHM: &str = "ACS3-HMAC-SHA256";
const DATE: &str = "x-acs-date";
const NONCE: &str = "x-acs-signature-nonce";
const CONTENT_SHA256: &str = "x-acs-content-sha256";
const ACTION: &str = "x-acs-action";
const VERSION: &str = "x-acs-version";
/// Headers every accepted request must sign (besides every `x-acs-*` and `content-type` it has).
const REQUIRED_SIGNED_HEADERS: [&str; 4] = ["host", DATE, NONCE, CONTENT_SHA256];

/// A parsed `Authorization: ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…`.
struct Authorization<'a> {
    access_key_id: &'a str,
    /// Lower-case, sorted, unique.
    signed_headers: Vec<&'a str>,
    signature: [u8; 32],
}

impl<'a> Authorization<'a> {
    fn parse(value: &'a str) -> Result<Self, AcsSignatureError> {
        use AcsSignatureError::MalformedSignature as Bad;
        let (algorithm, params) = value.trim().split_once(' ').ok_or(Bad("no parameters"))?;
        if algorithm != ALGORITHM {
            return Err(AcsSignatureError::UnsupportedAlgorithm);
        }
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for param in params.split(',') {
            let (name, field) = param
                .trim()
                .split_once('=')
                .ok_or(Bad("parameter without '='"))?;
            let slot = match name {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => return Err(Bad("unknown parameter")),
            };
            if slot.replace(field).is_some() {
                return Err(Bad("repeated parameter"));
            }
        }
        let access_key_id = credential.ok_or(Bad("missing Credential"))?;
        if access_key_id.is_empty()
            || access_key_id.len() > 128
            || !access_key_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Bad("invalid AccessKey id"));
        }
        let signed_headers: Vec<&str> = signed_headers
            .ok_or(Bad("missing SignedHeaders"))?
            .split(';')
            .collect();
        let valid_name = |name: &&str| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !signed_headers.iter().all(valid_name) {
            return Err(Bad("invalid SignedHeaders entry"));
        }
        if !signed_headers.windows(2).all(|w| w[0] < w[1]) {
            return Err(Bad("SignedHeaders not sorted and unique"));
        }
        let signature = signature.ok_or(Bad("missing Signature"))?;
        let mut signature_bytes = [0u8; 32];
        if signature.len() != 64
            || !signature
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            || hex::decode_to_slice(signature, &mut signature_bytes).is_err()
        {
            return Err(Bad("Signature is not 64 lower-case hex digits"));
        }
        Ok(Self {
            access_key_id,
            signed_headers,
            signature: signature_bytes,
        })
    }
}

/// The one value of a header the signature relies on; absent, empty or repeated is refused.
fn single<'a>(
    request: &RequestParts<'a>,
    name: &'static str,
) -> Result<&'a str, AcsSignatureError> {
    match request.single_header(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value.trim()),
        _ => Err(AcsSignatureError::MissingSignatureField(name)),
    }
}

/// `METHOD\nURI\nQUERY\nHEADERS\nSIGNED\nPAYLOAD`; each canonical header is `name:value\n` with
/// the value trimmed (repeats joined with `,`).
pub(crate) fn canonical_request(
    request: &RequestParts<'_>,
    signed_headers: &[&str],
    hashed_payload: &str,
) -> Result<String, AcsSignatureError> {
    let (path, query) = request.split_target();
    let pairs = form_pairs(query)?;
    let mut out = String::with_capacity(512 + request.target.len());
    out.push_str(request.method);
    out.push('\n');
    out.push_str(&canonical_path(path));
    out.push('\n');
    out.push_str(&canonical_query(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ));
    out.push('\n');
    for &name in signed_headers {
        let mut values = request.header_values(name).peekable();
        if values.peek().is_none() {
            return Err(AcsSignatureError::MissingSignedHeader(printable(name)));
        }
        out.push_str(name);
        out.push(':');
        for (i, value) in values.enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(value.trim());
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(hashed_payload);
    Ok(out)
}

/// `hex(HMAC-SHA256(secret, "ACS3-HMAC-SHA256\n" + hex(sha256(canonical request))))`, raw.
fn signature(secret: &str, canonical_request: &str) -> [u8; 32] {
    let string_to_sign = format!("{ALGORITHM}\n{}", sha256_hex(canonical_request.as_bytes()));
    hmac_sha256(secret.as_bytes(), string_to_sign.as_bytes())
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
    let authorization = match request.single_header("authorization") {
        Ok(value) => Authorization::parse(value)?,
        Err(0) => return Err(AcsSignatureError::MissingSignature),
        Err(_) => {
            return Err(AcsSignatureError::MalformedSignature(
                "repeated Authorization",
            ));
        }
    };
    let is_signed = |name: &str| authorization.signed_headers.binary_search(&name).is_ok();
    for required in REQUIRED_SIGNED_HEADERS {
        if !is_signed(required) {
            return Err(AcsSignatureError::HeaderNotSigned(required.to_owned()));
        }
    }
    // Everything Alibaba gives meaning to must be signed: every x-acs-* header and the body type.
    for (name, _) in request.headers {
        let lower = name.to_ascii_lowercase();
        if (lower.starts_with("x-acs-") || lower == "content-type") && !is_signed(&lower) {
            return Err(AcsSignatureError::HeaderNotSigned(printable(&lower)));
        }
    }
    let action = single(request, ACTION)?;
    let version = single(request, VERSION)?;
    let nonce = single(request, NONCE)?;
    let timestamp = match request.single_header(DATE) {
        Ok(value) => check_timestamp(value.trim(), now, max_clock_skew)?,
        Err(0) => return Err(AcsSignatureError::MissingTimestamp),
        Err(_) => return Err(AcsSignatureError::MalformedTimestamp),
    };
    let hashed_payload = sha256_hex(request.body);
    if single(request, CONTENT_SHA256)? != hashed_payload {
        return Err(AcsSignatureError::ContentHashMismatch);
    }
    let canonical = canonical_request(request, &authorization.signed_headers, &hashed_payload)?;

    let Some(secret) = credentials.secret(authorization.access_key_id) else {
        return Err(AcsSignatureError::UnknownAccessKey(
            authorization.access_key_id.to_owned(),
        ));
    };
    let expected = Zeroizing::new(signature(secret.expose(), &canonical));
    if !bool::from(expected.ct_eq(&authorization.signature)) {
        return Err(AcsSignatureError::SignatureMismatch);
    }
    Ok(Verified {
        access_key_id: authorization.access_key_id.to_owned(),
        nonce: nonce.to_owned(),
        timestamp,
        action: Some(action.to_owned()),
        version: Some(version.to_owned()),
        algorithm: Algorithm::Acs3HmacSha256,
    })
}

/// An OpenAPI call to sign with ACS3-HMAC-SHA256.
#[derive(Debug, Clone, Copy)]
pub struct Acs3Request<'a> {
    /// `POST` for the Tea SDKs.
    pub method: &'a str,
    /// The `host` header (endpoint, with port if not the default).
    pub host: &'a str,
    /// The raw path, `/` for RPC-style APIs.
    pub path: &'a str,
    /// `x-acs-action`, e.g. `Encrypt`.
    pub action: &'a str,
    /// `x-acs-version`, e.g. `2016-01-20`.
    pub version: &'a str,
    /// Query parameters, not encoded.
    pub query: &'a [(&'a str, &'a str)],
    /// The exact body; with a form body, also set `content_type`.
    pub body: &'a [u8],
    /// `content-type`, signed when present.
    pub content_type: Option<&'a str>,
    /// `x-acs-signature-nonce`: unique per request (the SDKs use 32 random hex digits).
    pub nonce: &'a str,
}

/// A request ready to send: the target (path and encoded query) and every header to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// Path and `?query`, as on the wire.
    pub target: String,
    /// Headers (lower-case names) including `authorization`.
    pub headers: Vec<(String, String)>,
}

/// Signs `request` at `now` as the Tea SDK does, over `host`, `content-type` (if any) and every
/// `x-acs-*` header.
pub fn sign_acs3(
    credential: &Credential,
    request: &Acs3Request<'_>,
    now: OffsetDateTime,
) -> Result<SignedRequest, AcsSignatureError> {
    let text_fields = [request.host, request.action, request.version, request.nonce];
    let header_safe = |v: &str| !v.trim().is_empty() && !v.bytes().any(|b| b.is_ascii_control());
    if !text_fields
        .iter()
        .chain(&request.content_type)
        .all(|v| header_safe(v))
        || !request.path.starts_with('/')
        || request.path.contains('?')
    {
        return Err(AcsSignatureError::InvalidSigningRequest(
            "empty or control characters",
        ));
    }
    let query = encode_parameters(request.query.iter().copied());
    let target = if query.is_empty() {
        request.path.to_owned()
    } else {
        format!("{}?{query}", request.path)
    };
    let mut headers: Vec<(String, String)> = [
        ("host", request.host.to_owned()),
        (ACTION, request.action.to_owned()),
        (VERSION, request.version.to_owned()),
        (DATE, format_timestamp(now)?),
        (NONCE, request.nonce.to_owned()),
        (CONTENT_SHA256, sha256_hex(request.body)),
    ]
    .into_iter()
    .chain(
        request
            .content_type
            .map(|ct| ("content-type", ct.to_owned())),
    )
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    headers.sort();
    let signed_headers: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
    let parts = RequestParts {
        method: request.method,
        target: &target,
        headers: &headers,
        body: request.body,
    };
    let canonical = canonical_request(&parts, &signed_headers, &sha256_hex(request.body))?;
    let signature = hex::encode(signature(credential.secret.expose(), &canonical));
    let authorization = format!(
        "{ALGORITHM} Credential={},SignedHeaders={},Signature={signature}",
        credential.access_key_id,
        signed_headers.join(";"),
    );
    headers.push(("authorization".to_owned(), authorization));
    Ok(SignedRequest { target, headers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_authorization() {
        let sig = "f0a9d0eecf14f9f8d88e84c7a42cf8448d36f03f3767aa5aa10f198f0fae01d0";
        let value = format!(
            "ACS3-HMAC-SHA256 Credential=LTAI5t,SignedHeaders=host;x-acs-date,Signature={sig}"
        );
        let auth = Authorization::parse(&value).unwrap();
        assert_eq!(auth.access_key_id, "LTAI5t");
        assert_eq!(auth.signed_headers, ["host", "x-acs-date"]);
        for bad in [
            format!(
                "ACS3-HMAC-SHA256 Credential=LTAI5t,SignedHeaders=x-acs-date;host,Signature={sig}"
            ),
            format!("ACS3-HMAC-SHA256 Credential=LTAI5t,SignedHeaders=Host,Signature={sig}"),
            format!("ACS3-HMAC-SHA256 Credential=,SignedHeaders=host,Signature={sig}"),
            format!(
                "ACS3-HMAC-SHA256 Credential=LTAI5t,SignedHeaders=host,Signature={}",
                &sig[2..]
            ),
            "ACS3-HMAC-SHA256 Credential=LTAI5t,SignedHeaders=host".to_owned(),
            "ACS3-HMAC-SHA256".to_owned(),
        ] {
            assert!(
                matches!(
                    Authorization::parse(&bad),
                    Err(AcsSignatureError::MalformedSignature(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Authorization::parse("ACS3-HMAC-SM3 Credential=LTAI5t"),
            Err(AcsSignatureError::UnsupportedAlgorithm)
        ));
    }

    #[test]
    fn canonical_request_layout() {
        let headers = vec![
            ("Host".to_owned(), " kms.example.com ".to_owned()),
            ("x-acs-action".to_owned(), "Encrypt".to_owned()),
        ];
        let request = RequestParts {
            method: "POST",
            target: "/?b=x+y&a=%2F*",
            headers: &headers,
            body: b"",
        };
        let canonical = canonical_request(&request, &["host", "x-acs-action"], "e3b0").unwrap();
        assert_eq!(
            canonical,
            "POST\n/\na=%2F%2A&b=x%20y\nhost:kms.example.com\nx-acs-action:Encrypt\n\nhost;x-acs-action\ne3b0"
        );
    }
}
