//! The SigV4 canonical request, string to sign, signing key and `Authorization` header syntax.

use percent_encoding::percent_decode_str;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};
use zeroize::Zeroizing;

use super::{ALGORITHM, SigV4Error};
use crate::http::{RequestParts, canonical_path, hmac_sha256, rfc3986_encode, sha256_hex};

const SCOPE_TERMINATOR: &str = "aws4_request";
const AMZ_DATE: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");
/// Longest header name an error message repeats.
const MAX_NAME_IN_ERROR: usize = 64;

/// Longest access key id we accept (AWS: 16 to 128 characters).
const MAX_ACCESS_KEY_ID_LEN: usize = 128;

/// A parsed `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization {
    pub access_key_id: String,
    pub scope_date: String,
    pub region: String,
    pub service: String,
    /// Lower-case, sorted, unique.
    pub signed_headers: Vec<String>,
    pub signature: [u8; 32],
}

impl Authorization {
    pub(crate) fn parse(value: &str) -> Result<Self, SigV4Error> {
        use SigV4Error::MalformedAuthorization as Bad;
        let value = value.trim();
        let (algorithm, params) = value.split_once(' ').ok_or(Bad("no parameters"))?;
        if algorithm != ALGORITHM {
            return Err(SigV4Error::UnsupportedAlgorithm);
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
        let credential = credential.ok_or(Bad("missing Credential"))?;
        let signed_headers = signed_headers.ok_or(Bad("missing SignedHeaders"))?;
        let signature = signature.ok_or(Bad("missing Signature"))?;

        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key_id, scope_date, region, service, terminator] = scope[..] else {
            return Err(Bad("Credential is not AK/date/region/service/aws4_request"));
        };
        if terminator != SCOPE_TERMINATOR {
            return Err(Bad("Credential scope does not end with aws4_request"));
        }
        if access_key_id.is_empty()
            || access_key_id.len() > MAX_ACCESS_KEY_ID_LEN
            || !access_key_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Bad("invalid access key id"));
        }
        if scope_date.len() != 8 || !scope_date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Bad("Credential scope date is not YYYYMMDD"));
        }
        if !is_scope_token(region) || !is_scope_token(service) {
            return Err(Bad("invalid region or service in Credential scope"));
        }

        let signed_headers: Vec<String> = signed_headers.split(';').map(str::to_owned).collect();
        if !signed_headers.iter().all(|name| is_header_name(name)) {
            return Err(Bad("invalid SignedHeaders entry"));
        }
        if !signed_headers.windows(2).all(|w| w[0] < w[1]) {
            return Err(Bad("SignedHeaders not sorted and unique"));
        }

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
            access_key_id: access_key_id.to_owned(),
            scope_date: scope_date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            signed_headers,
            signature: signature_bytes,
        })
    }
}

/// Region and service names: `[A-Za-z0-9_-]`, 1 to 64 characters.
pub(crate) fn is_scope_token(token: &str) -> bool {
    (1..=64).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A lower-case HTTP header name (RFC 9110 `token`).
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

/// Parses `YYYYMMDDTHHMMSSZ` (exactly that shape) as a UTC time.
pub(crate) fn parse_amz_date(value: &str) -> Result<OffsetDateTime, SigV4Error> {
    let shape_ok = value.len() == 16
        && value.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    if !shape_ok {
        return Err(SigV4Error::MalformedDate);
    }
    PrimitiveDateTime::parse(value, AMZ_DATE)
        .map(PrimitiveDateTime::assume_utc)
        .map_err(|_| SigV4Error::MalformedDate)
}

/// Formats a time as `YYYYMMDDTHHMMSSZ` in UTC.
pub(crate) fn format_amz_date(time: OffsetDateTime) -> Result<String, SigV4Error> {
    let utc = time.to_offset(UtcOffset::UTC);
    if !(0..=9999).contains(&utc.year()) {
        return Err(SigV4Error::InvalidSigningRequest("time out of range"));
    }
    utc.format(AMZ_DATE)
        .map_err(|_| SigV4Error::InvalidSigningRequest("time out of range"))
}

/// The canonical request of `request` over `signed_headers` (lower-case, sorted, unique).
pub(crate) fn canonical_request(
    request: &RequestParts<'_>,
    signed_headers: &[String],
) -> Result<String, SigV4Error> {
    let (path, query) = request.split_target();
    let mut out = String::with_capacity(256 + request.target.len());
    out.push_str(request.method);
    out.push('\n');
    out.push_str(&canonical_path(path));
    out.push('\n');
    out.push_str(&canonical_query(query));
    out.push('\n');
    for name in signed_headers {
        out.push_str(name);
        out.push(':');
        let mut values = request.header_values(name).peekable();
        if values.peek().is_none() {
            // The name is a client's token of any length: keep the message short.
            return Err(SigV4Error::MissingSignedHeader(
                name.chars().take(MAX_NAME_IN_ERROR).collect(),
            ));
        }
        for (i, value) in values.enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_header_value(&mut out, value);
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(&sha256_hex(request.body));
    Ok(out)
}

/// Trims the value and collapses every inner run of spaces and tabs into one space.
fn push_header_value(out: &mut String, value: &str) {
    let mut words = value.split([' ', '\t']).filter(|w| !w.is_empty());
    if let Some(first) = words.next() {
        out.push_str(first);
    }
    for word in words {
        out.push(' ');
        out.push_str(word);
    }
}

/// Sorted `key=value` pairs, each side decoded once (`%XX` only; `+` stays a plus) and
/// re-encoded per RFC 3986.
pub(crate) fn canonical_query(raw_query: &str) -> String {
    let reencode = |s: &str| rfc3986_encode(&percent_decode_str(s).collect::<Vec<u8>>());
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (reencode(key), reencode(value))
        })
        .collect();
    pairs.sort();
    let mut out = String::with_capacity(raw_query.len() + 8);
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// `AWS4-HMAC-SHA256\n<amz-date>\n<date>/<region>/<service>/aws4_request\n<hex sha256>`.
pub(crate) fn string_to_sign(
    amz_date: &str,
    scope_date: &str,
    region: &str,
    service: &str,
    canonical_request: &str,
) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope_date}/{region}/{service}/{SCOPE_TERMINATOR}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The signing key: HMAC-SHA256 chained over date, region, service and `aws4_request`,
/// starting from `"AWS4" + secret`.
pub(crate) fn signing_key(
    secret: &str,
    scope_date: &str,
    region: &str,
    service: &str,
) -> Zeroizing<[u8; 32]> {
    let seed = Zeroizing::new(format!("AWS4{secret}"));
    let k_date = Zeroizing::new(hmac_sha256(seed.as_bytes(), scope_date.as_bytes()));
    let k_region = Zeroizing::new(hmac_sha256(&*k_date, region.as_bytes()));
    let k_service = Zeroizing::new(hmac_sha256(&*k_region, service.as_bytes()));
    Zeroizing::new(hmac_sha256(&*k_service, SCOPE_TERMINATOR.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKID/20261123/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=357cf729f237c549f723d1b7a79a1c94522e1eb49fde34775b376531ca359f5c";

    #[test]
    fn parses_authorization() {
        let auth = Authorization::parse(AUTH).unwrap();
        assert_eq!(auth.access_key_id, "AKID");
        assert_eq!(auth.scope_date, "20261123");
        assert_eq!(auth.region, "us-east-1");
        assert_eq!(auth.service, "kms-xks-proxy");
        assert_eq!(auth.signed_headers, ["content-type", "host", "x-amz-date"]);
        assert_eq!(auth.signature[0], 0x35);
        // No spaces after commas and any parameter order are fine too.
        let compact = "AWS4-HMAC-SHA256 Signature=357cf729f237c549f723d1b7a79a1c94522e1eb49fde34775b376531ca359f5c,SignedHeaders=host;x-amz-date,Credential=AKID/20261123/us-east-1/kms-xks-proxy/aws4_request";
        assert_eq!(
            Authorization::parse(compact).unwrap().signed_headers,
            ["host", "x-amz-date"]
        );
    }

    /// Fuzzing (`sigv4_verify`): a missing signed header's name was repeated whole in the error,
    /// however long the `SignedHeaders` entry was.
    #[test]
    fn fuzz_missing_signed_header_message_is_short() {
        let long = format!("content{}type", "z".repeat(4000));
        let headers = vec![("host".to_owned(), "h".to_owned())];
        let request = RequestParts {
            method: "POST",
            target: "/",
            headers: &headers,
            body: b"",
        };
        let Err(SigV4Error::MissingSignedHeader(name)) =
            canonical_request(&request, &[long.clone(), "host".to_owned()])
        else {
            panic!("expected MissingSignedHeader");
        };
        assert_eq!(name, long[..MAX_NAME_IN_ERROR]);
    }

    #[test]
    fn rejects_malformed_authorization() {
        let sig = "357cf729f237c549f723d1b7a79a1c94522e1eb49fde34775b376531ca359f5c";
        let cred = "Credential=AKID/20261123/us-east-1/kms-xks-proxy/aws4_request";
        assert_eq!(
            Authorization::parse(&format!("AWS4-HMAC-SHA512 {cred}")),
            Err(SigV4Error::UnsupportedAlgorithm)
        );
        for bad in [
            String::new(),
            "AWS4-HMAC-SHA256".to_owned(),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date"),
            format!(
                "AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date, Signature={sig}, Signature={sig}"
            ),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=x-amz-date;host, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;host;x-amz-date, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=Host;x-amz-date, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;;x-amz-date, Signature={sig}"),
            format!(
                "AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date, Signature={}",
                sig.to_uppercase()
            ),
            format!(
                "AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date, Signature={}",
                &sig[1..]
            ),
            format!(
                "AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date, Signature={sig}, Extra=1"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKID/20261123/us-east-1/kms-xks-proxy/aws4_reques, SignedHeaders=host;x-amz-date, Signature={sig}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKID/2026112/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKID/20261123/us east/kms-xks-proxy/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=/20261123/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=A/K/20261123/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"
            ),
        ] {
            assert!(
                matches!(
                    Authorization::parse(&bad),
                    Err(SigV4Error::MalformedAuthorization(_))
                ),
                "{bad:?} -> {:?}",
                Authorization::parse(&bad)
            );
        }
    }

    #[test]
    fn amz_date_is_strict() {
        let t = parse_amz_date("20261123T145900Z").unwrap();
        assert_eq!(format_amz_date(t).unwrap(), "20261123T145900Z");
        for bad in [
            "20261123T145900",
            "20261123T145900z",
            "2026-11-23T14:59:00Z",
            "20261323T145900Z",
            "20261123T245900Z",
            "+2026112T145900Z",
            " 20261123T145900Z",
        ] {
            assert_eq!(parse_amz_date(bad), Err(SigV4Error::MalformedDate), "{bad}");
        }
    }

    #[test]
    fn canonical_query_sorts_and_reencodes() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("b=2&a=1&a=0&c"), "a=0&a=1&b=2&c=");
        assert_eq!(
            canonical_query("k=a%20b+c%2a~&x=%7E"),
            "k=a%20b%2Bc%2A~&x=~"
        );
        assert_eq!(canonical_query("k=%E6%97%A5&&"), "k=%E6%97%A5");
    }

    #[test]
    fn canonical_headers_trim_collapse_and_join() {
        let headers = vec![
            ("Host".to_owned(), "  example.com ".to_owned()),
            ("X-Amz-Date".to_owned(), "20261123T145900Z".to_owned()),
            ("x-multi".to_owned(), " a   b\t c ".to_owned()),
            ("X-Multi".to_owned(), "d".to_owned()),
        ];
        let request = RequestParts {
            method: "POST",
            target: "/p",
            headers: &headers,
            body: b"",
        };
        let signed: Vec<String> = ["host", "x-amz-date", "x-multi"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let canonical = canonical_request(&request, &signed).unwrap();
        let expected = "POST\n/p\n\nhost:example.com\nx-amz-date:20261123T145900Z\nx-multi:a b c,d\n\nhost;x-amz-date;x-multi\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(canonical, expected);
        let missing = vec!["host".to_owned(), "x-absent".to_owned()];
        assert_eq!(
            canonical_request(&request, &missing),
            Err(SigV4Error::MissingSignedHeader("x-absent".to_owned()))
        );
    }

    /// The worked example of the AWS SigV4 documentation (IAM ListUsers, GET with query).
    #[test]
    fn aws_documentation_example() {
        let headers = vec![
            ("Host".to_owned(), "iam.amazonaws.com".to_owned()),
            (
                "Content-Type".to_owned(),
                "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
            ),
            ("X-Amz-Date".to_owned(), "20150830T123600Z".to_owned()),
        ];
        let request = RequestParts {
            method: "GET",
            target: "/?Action=ListUsers&Version=2010-05-08",
            headers: &headers,
            body: b"",
        };
        let signed: Vec<String> = ["content-type", "host", "x-amz-date"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let canonical = canonical_request(&request, &signed).unwrap();
        assert_eq!(
            sha256_hex(canonical.as_bytes()),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let sts = string_to_sign(
            "20150830T123600Z",
            "20150830",
            "us-east-1",
            "iam",
            &canonical,
        );
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(*key),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
        assert_eq!(
            hex::encode(hmac_sha256(&*key, sts.as_bytes())),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }
}
