//! Alibaba OpenAPI signatures against requests captured from the official Python SDKs
//! (`shared/vectors/kms-openapi-signatures.json`: 5 ACS3-HMAC-SHA256, 3 HMAC-SHA1 RPC): each
//! verifies as captured, and each single-byte change to a signed part is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use schemas::acs::{
    Acs3Request, AcsSignatureError, Algorithm, RpcRequest, Verified, Verifier, api_parameters,
    detect, encode_parameters, sign_acs3, sign_rpc,
};
use schemas::http::{Credential, RequestParts, Secret};
use serde::Deserialize;
use time::macros::{datetime, format_description};
use time::{Duration, OffsetDateTime, PrimitiveDateTime};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/kms-openapi-signatures.json"
);

#[derive(Deserialize)]
struct Vectors {
    access_key_id: String,
    access_key_secret: String,
    requests: Vec<VectorRequest>,
}

#[derive(Deserialize)]
struct VectorRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body_base64: String,
    sdk: String,
    action: String,
}

#[derive(Clone)]
struct Case {
    name: String,
    algorithm: Algorithm,
    action: String,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    now: OffsetDateTime,
}

impl Case {
    fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            method: &self.method,
            target: &self.target,
            headers: &self.headers,
            body: &self.body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn set_header(&mut self, name: &str, value: &str) {
        let slot = self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        slot.unwrap_or_else(|| panic!("{}: no header {name}", self.name))
            .1 = value.to_owned();
    }

    /// The raw (still encoded) value of query parameter `name`.
    fn raw_param(&self, name: &str) -> &str {
        let query = self.target.split_once('?').map_or("", |(_, q)| q);
        query
            .split('&')
            .find_map(|pair| {
                pair.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('='))
            })
            .unwrap_or_else(|| panic!("{}: no parameter {name}", self.name))
    }

    fn set_raw_param(&mut self, name: &str, raw_value: &str) {
        let (path, query) = self.target.split_once('?').expect("query");
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((n, _)) if n == name => format!("{n}={raw_value}"),
                _ => pair.to_owned(),
            })
            .collect();
        self.target = format!("{path}?{}", pairs.join("&"));
    }

    fn param_names(&self) -> Vec<String> {
        let query = self.target.split_once('?').map_or("", |(_, q)| q);
        query
            .split('&')
            .map(|pair| pair.split('=').next().unwrap_or_default().to_owned())
            .collect()
    }

    fn signed_headers(&self) -> Vec<String> {
        let authorization = self.header("authorization").expect("ACS3 Authorization");
        let list = authorization
            .split("SignedHeaders=")
            .nth(1)
            .expect("SignedHeaders");
        list.split(',')
            .next()
            .unwrap_or_default()
            .split(';')
            .map(str::to_owned)
            .collect()
    }
}

fn load() -> (Vectors, Vec<Case>) {
    let text = std::fs::read_to_string(VECTORS)
        .unwrap_or_else(|e| panic!("cannot read the OpenAPI signature vectors at {VECTORS}: {e}"));
    let vectors: Vectors =
        serde_json::from_str(&text).expect("kms-openapi-signatures.json does not parse");
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    let cases: Vec<Case> = vectors
        .requests
        .iter()
        .map(|r| {
            let algorithm = if r.sdk.contains("ACS3-HMAC-SHA256") {
                Algorithm::Acs3HmacSha256
            } else {
                Algorithm::RpcHmacSha1
            };
            let mut case = Case {
                name: format!("{} {}", r.sdk, r.action),
                algorithm,
                action: r.action.clone(),
                method: r.method.clone(),
                target: r.target.clone(),
                headers: r.headers.clone(),
                body: schemas::b64::decode(&r.body_base64).expect("body_base64"),
                now: OffsetDateTime::UNIX_EPOCH,
            };
            let timestamp = match algorithm {
                Algorithm::Acs3HmacSha256 => {
                    case.header("x-acs-date").expect("x-acs-date").to_owned()
                }
                _ => case.raw_param("Timestamp").replace("%3A", ":"),
            };
            case.now = PrimitiveDateTime::parse(&timestamp, format)
                .expect("timestamp")
                .assume_utc();
            case
        })
        .collect();
    let acs3 = cases
        .iter()
        .filter(|c| c.algorithm == Algorithm::Acs3HmacSha256)
        .count();
    assert_eq!(
        (acs3, cases.len() - acs3),
        (5, 3),
        "expected 5 ACS3 and 3 RPC captured requests"
    );
    (vectors, cases)
}

fn lookup(vectors: &Vectors) -> impl Fn(&str) -> Option<Secret> + '_ {
    |ak| (ak == vectors.access_key_id).then(|| Secret::new(&*vectors.access_key_secret))
}

fn verify(vectors: &Vectors, case: &Case) -> Result<Verified, AcsSignatureError> {
    Verifier::new().verify(&case.parts(), lookup(vectors), case.now)
}

/// Replaces the alphanumeric byte at `index` with a different alphanumeric byte.
fn change_byte(text: &str, index: usize) -> String {
    let mut bytes = text.as_bytes().to_vec();
    bytes[index] = match bytes[index] {
        b'0'..=b'8' | b'a'..=b'y' | b'A'..=b'Y' => bytes[index] + 1,
        b'9' => b'0',
        b'z' => b'a',
        b'Z' => b'A',
        other => panic!("cannot change {:?} in {text:?}", char::from(other)),
    };
    String::from_utf8(bytes).expect("ascii")
}

/// Changes the first alphanumeric byte outside a `%XX` escape, or appends one to an empty value.
fn change_one_byte(text: &str) -> String {
    let bytes = text.as_bytes();
    let in_escape = |i: usize| (1..=2).any(|back| i >= back && bytes[i - back] == b'%');
    match (0..bytes.len()).find(|&i| bytes[i].is_ascii_alphanumeric() && !in_escape(i)) {
        Some(index) => change_byte(text, index),
        None => format!("{text}x"),
    }
}

#[test]
fn captured_requests_verify() {
    let (vectors, cases) = load();
    for case in &cases {
        assert_eq!(detect(&case.parts()), Some(case.algorithm), "{}", case.name);
        let verified = verify(&vectors, case)
            .unwrap_or_else(|e| panic!("{}: captured request refused: {e}", case.name));
        assert_eq!(verified.algorithm, case.algorithm);
        assert_eq!(verified.access_key_id, vectors.access_key_id);
        assert_eq!(
            verified.action.as_deref(),
            Some(case.action.as_str()),
            "{}",
            case.name
        );
        assert_eq!(verified.version.as_deref(), Some("2016-01-20"));
        assert_eq!(verified.timestamp, case.now);
        let nonce = match case.algorithm {
            Algorithm::Acs3HmacSha256 => case.header("x-acs-signature-nonce").unwrap(),
            _ => case.raw_param("SignatureNonce"),
        };
        assert_eq!(verified.nonce, nonce);
    }
}

#[test]
fn parameters_decode_like_the_sdks_encoded_them() {
    let (_, cases) = load();
    let params = |action: &str, algorithm: Algorithm| {
        let case = cases
            .iter()
            .find(|c| c.action == action && c.algorithm == algorithm)
            .unwrap();
        api_parameters(&case.parts()).unwrap()
    };
    // Tea puts `+` for a space in the URL; the RPC SDK `%20`. Both decode to the same text.
    let description = "vector key: 日本語 & symbols +/=";
    assert_eq!(
        params("CreateKey", Algorithm::Acs3HmacSha256)["Description"],
        description
    );
    assert_eq!(
        params("CreateKey", Algorithm::RpcHmacSha1)["Description"],
        description
    );
    assert_eq!(
        params("Encrypt", Algorithm::Acs3HmacSha256)["EncryptionContext"],
        r#"{"purpose":"test","tenant":"a b/c"}"#
    );
    let rpc = params("Encrypt", Algorithm::RpcHmacSha1);
    assert_eq!(rpc["EncryptionContext"], r#"{"purpose": "test"}"#);
    assert_eq!(rpc["Plaintext"], "aGVsbG8gd29ybGQ=");
    assert_eq!(rpc["SignatureType"], "");
    assert_eq!(
        params("GenerateDataKey", Algorithm::Acs3HmacSha256)["KeyId"],
        "alias/my-app"
    );
}

#[test]
fn one_byte_of_the_target_breaks_the_signature() {
    let (vectors, cases) = load();
    for case in &cases {
        // Every alphanumeric byte of the query: names, values, escapes, the signature itself.
        for (index, byte) in case.target.bytes().enumerate() {
            if !byte.is_ascii_alphanumeric() {
                continue;
            }
            let mut changed = case.clone();
            changed.target = change_byte(&case.target, index);
            assert!(
                verify(&vectors, &changed).is_err(),
                "{}: target changed at byte {index} ({:?}) was accepted",
                case.name,
                &changed.target
            );
        }
        // The path.
        let mut changed = case.clone();
        changed.target = format!("/x{}", case.target);
        let expected = match case.algorithm {
            Algorithm::Acs3HmacSha256 => AcsSignatureError::SignatureMismatch,
            _ => AcsSignatureError::UnsignedPath,
        };
        assert_eq!(
            verify(&vectors, &changed),
            Err(expected),
            "{}: path changed",
            case.name
        );
    }
}

#[test]
fn one_byte_of_each_signed_header_breaks_an_acs3_signature() {
    let (vectors, cases) = load();
    for case in cases
        .iter()
        .filter(|c| c.algorithm == Algorithm::Acs3HmacSha256)
    {
        let signed = case.signed_headers();
        assert!(signed.len() >= 9, "{}: {signed:?}", case.name);
        for name in &signed {
            let mut changed = case.clone();
            let value = case.header(name).unwrap();
            changed.set_header(name, &change_one_byte(value));
            let expected = match name.as_str() {
                "x-acs-content-sha256" => AcsSignatureError::ContentHashMismatch,
                "x-acs-date" => {
                    // Move the clock by the same second so that the window is not the reason.
                    let seconds = &value[17..19];
                    let moved: i64 = seconds.parse::<i64>().unwrap() % 10;
                    changed.set_header(
                        name,
                        &format!("{}{}{}", &value[..18], (moved + 1) % 10, &value[19..]),
                    );
                    changed.now = case.now + Duration::seconds(if moved == 9 { -9 } else { 1 });
                    AcsSignatureError::SignatureMismatch
                }
                _ => AcsSignatureError::SignatureMismatch,
            };
            assert_eq!(
                verify(&vectors, &changed),
                Err(expected),
                "{}: signed header {name} changed",
                case.name
            );
        }
    }
}

#[test]
fn one_byte_of_each_signed_parameter_breaks_an_rpc_signature() {
    let (vectors, cases) = load();
    let any_key = |_: &str| Some(Secret::new(&*vectors.access_key_secret));
    for case in cases
        .iter()
        .filter(|c| c.algorithm == Algorithm::RpcHmacSha1)
    {
        for name in case.param_names().iter().filter(|n| *n != "Signature") {
            let mut changed = case.clone();
            let value = case.raw_param(name);
            changed.set_raw_param(name, &change_one_byte(value));
            let expected = match name.as_str() {
                "SignatureMethod" | "SignatureVersion" => AcsSignatureError::UnsupportedAlgorithm,
                "Timestamp" => {
                    // 2026-11-23T14%3A58%3A52Z: move the last second digit and the clock with it.
                    let at = value.len() - 2;
                    changed.set_raw_param(name, &format!("{}3{}", &value[..at], &value[at + 1..]));
                    changed.now = case.now + Duration::seconds(1);
                    AcsSignatureError::SignatureMismatch
                }
                _ => AcsSignatureError::SignatureMismatch,
            };
            // A lookup that knows every id, so that a changed AccessKeyId reaches the signature.
            let result = Verifier::new().verify(&changed.parts(), any_key, changed.now);
            assert_eq!(
                result,
                Err(expected),
                "{}: signed parameter {name} changed",
                case.name
            );
        }
        // The same parameters moved to a form body still verify: the signature covers values,
        // not where they travel.
        let (_, query) = case.target.split_once('?').unwrap();
        let mut moved = case.clone();
        moved.target = "/".to_owned();
        moved.body = query.as_bytes().to_vec();
        assert!(
            verify(&vectors, &moved).is_ok(),
            "{}: parameters in the body",
            case.name
        );
    }
}

#[test]
fn one_extra_byte_of_body_is_refused() {
    let (vectors, cases) = load();
    for case in &cases {
        let mut changed = case.clone();
        changed.body.push(b'x');
        let expected = match case.algorithm {
            Algorithm::Acs3HmacSha256 => AcsSignatureError::ContentHashMismatch,
            _ => AcsSignatureError::SignatureMismatch,
        };
        assert_eq!(
            verify(&vectors, &changed),
            Err(expected),
            "{}: extra body byte",
            case.name
        );
        if case.algorithm == Algorithm::Acs3HmacSha256 {
            // Updating x-acs-content-sha256 too does not help: that header is signed.
            let hash = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881";
            changed.set_header("x-acs-content-sha256", hash);
            assert_eq!(
                verify(&vectors, &changed),
                Err(AcsSignatureError::SignatureMismatch),
                "{}",
                case.name
            );
        }
    }
}

#[test]
fn one_byte_of_the_secret_breaks_the_signature() {
    let (vectors, cases) = load();
    let secret = change_byte(&vectors.access_key_secret, 5);
    let wrong = |ak: &str| (ak == vectors.access_key_id).then(|| Secret::new(&*secret));
    for case in &cases {
        assert_eq!(
            Verifier::new().verify(&case.parts(), wrong, case.now),
            Err(AcsSignatureError::SignatureMismatch),
            "{}: wrong secret accepted",
            case.name
        );
    }
}

#[test]
fn unsigned_parts_are_not_trusted_and_may_change() {
    let (vectors, cases) = load();
    for case in &cases {
        let mut changed = case.clone();
        changed.set_header("accept-encoding", "gzip");
        changed.set_header("content-length", "0");
        if case.algorithm == Algorithm::RpcHmacSha1 {
            // The RPC SDK sends x-acs-action unsigned: the verified action is the signed one.
            changed.set_header("x-acs-action", "ScheduleKeyDeletion");
        }
        let verified = verify(&vectors, &changed).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(verified.action.as_deref(), Some(case.action.as_str()));
        if case.algorithm == Algorithm::Acs3HmacSha256 {
            // An x-acs-* header outside SignedHeaders is refused, not ignored.
            changed
                .headers
                .push(("x-acs-security-token".into(), "t".into()));
            assert_eq!(
                verify(&vectors, &changed),
                Err(AcsSignatureError::HeaderNotSigned(
                    "x-acs-security-token".into()
                ))
            );
        }
    }
}

#[test]
fn acs3_required_headers_must_be_signed() {
    let (vectors, cases) = load();
    let case = cases
        .iter()
        .find(|c| c.algorithm == Algorithm::Acs3HmacSha256)
        .unwrap();
    let authorization = case.header("authorization").unwrap();
    for required in [
        "host",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-content-sha256",
    ] {
        let mut changed = case.clone();
        changed.set_header(
            "authorization",
            &authorization.replace(&format!(";{required};"), ";"),
        );
        assert_eq!(
            verify(&vectors, &changed),
            Err(AcsSignatureError::HeaderNotSigned(required.into())),
            "{required} left out of SignedHeaders"
        );
    }
}

#[test]
fn clock_skew_window_is_fifteen_minutes() {
    let (vectors, cases) = load();
    for case in &cases {
        for minutes in [-16i64, 16] {
            let mut moved = case.clone();
            moved.now = case.now + Duration::minutes(minutes);
            let error = verify(&vectors, &moved).unwrap_err();
            assert!(
                matches!(error, AcsSignatureError::ClockSkew { .. }),
                "{}: {minutes:+} min: {error}",
                case.name
            );
            assert_eq!(
                (error.code(), error.http_status()),
                ("IllegalTimestamp", 400)
            );
        }
        for minutes in [-14i64, 14] {
            let mut moved = case.clone();
            moved.now = case.now + Duration::minutes(minutes);
            assert!(
                verify(&vectors, &moved).is_ok(),
                "{}: {minutes:+} min is inside the window",
                case.name
            );
        }
        let strict = Verifier::new().with_max_clock_skew(Duration::minutes(5));
        let result = strict.verify(
            &case.parts(),
            lookup(&vectors),
            case.now + Duration::minutes(6),
        );
        assert_eq!(
            result,
            Err(AcsSignatureError::ClockSkew { skew_seconds: -360 })
        );
    }
}

#[test]
fn unknown_access_key_is_refused() {
    let (_, cases) = load();
    let nobody = |_: &str| None::<Secret>;
    for case in &cases {
        let error = Verifier::new()
            .verify(&case.parts(), nobody, case.now)
            .unwrap_err();
        assert_eq!(
            error,
            AcsSignatureError::UnknownAccessKey("LTAI5tVectorAccessKey01".into())
        );
        assert_eq!(
            (error.code(), error.http_status()),
            ("InvalidAccessKeyId.NotFound", 404)
        );
    }
}

#[test]
fn unsigned_request_is_refused() {
    let (vectors, cases) = load();
    let mut case = cases[0].clone();
    case.headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
    assert_eq!(
        verify(&vectors, &case),
        Err(AcsSignatureError::MissingSignature)
    );
}

/// Values the encoders must get right: space, `+`, `/`, `*`, `~`, `=`, `&`, `%` and non-ASCII.
const AWKWARD: &str = "a b+c/d*e~f=g&h%i 日本語 ü";

fn client() -> Credential {
    Credential::new("LTAI5tRoundTrip", "RoundTripSecret0123456789abcdef")
}

#[test]
fn acs3_signer_round_trips() {
    let credential = client();
    let lookup = |ak: &str| (ak == "LTAI5tRoundTrip").then(|| client().secret);
    let now = datetime!(2026-11-23 14:58:52 UTC);
    let query = [
        ("KeyId", "alias/my-app"),
        ("EncryptionContext", AWKWARD),
        ("Empty", ""),
    ];
    let form_body = encode_parameters([("Plaintext", AWKWARD)]).replace("%20", "+");
    let form = Some("application/x-www-form-urlencoded");
    for (body, content_type) in [("", None), (form_body.as_str(), form)] {
        let request = Acs3Request {
            method: "POST",
            host: "kms.cn-hangzhou.aliyuncs.com",
            path: "/",
            action: "Encrypt",
            version: "2016-01-20",
            query: &query,
            body: body.as_bytes(),
            content_type,
            nonce: "0123456789abcdef0123456789abcdef",
        };
        let signed = sign_acs3(&credential, &request, now).unwrap();
        let parts = RequestParts {
            method: "POST",
            target: &signed.target,
            headers: &signed.headers,
            body: body.as_bytes(),
        };
        let verified = Verifier::new().verify(&parts, lookup, now).unwrap();
        assert_eq!(verified.algorithm, Algorithm::Acs3HmacSha256);
        assert_eq!(verified.nonce, request.nonce);
        let params = api_parameters(&parts).unwrap();
        assert_eq!(params["EncryptionContext"], AWKWARD);
        assert_eq!(params["Empty"], "");
        if !body.is_empty() {
            assert_eq!(params["Plaintext"], AWKWARD);
        }
        // What Tea puts on the wire (`+` for a space) verifies the same.
        let tea_target = signed.target.replace("%20", "+");
        let tea = RequestParts {
            target: &tea_target,
            ..parts
        };
        assert!(
            Verifier::new().verify(&tea, lookup, now).is_ok(),
            "+ for space"
        );
        // And the signature covers the awkward value.
        let changed_target = signed.target.replace("%2A", "%2B");
        let changed = RequestParts {
            target: &changed_target,
            ..parts
        };
        assert_eq!(
            Verifier::new().verify(&changed, lookup, now),
            Err(AcsSignatureError::SignatureMismatch)
        );
    }
}

#[test]
fn rpc_signer_reproduces_the_python_sdk() {
    let (vectors, cases) = load();
    let credential = Credential::new(&*vectors.access_key_id, &*vectors.access_key_secret);
    let common = [
        "Version",
        "Action",
        "Timestamp",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "AccessKeyId",
        "Signature",
    ];
    for case in cases
        .iter()
        .filter(|c| c.algorithm == Algorithm::RpcHmacSha1)
    {
        let params = api_parameters(&case.parts()).unwrap();
        let own: Vec<(&str, &str)> = params
            .iter()
            .filter(|(k, _)| !common.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let request = RpcRequest {
            method: &case.method,
            action: &params["Action"],
            version: &params["Version"],
            params: &own,
            nonce: &params["SignatureNonce"],
        };
        let signed = sign_rpc(&credential, &request, case.now).unwrap();
        let signature = signed
            .iter()
            .find(|(k, _)| k == "Signature")
            .map(|(_, v)| v.as_str());
        assert_eq!(
            signature,
            Some(params["Signature"].as_str()),
            "{}: signer differs from the SDK",
            case.name
        );
    }
}

#[test]
fn rpc_signer_round_trips() {
    let credential = client();
    let lookup = |ak: &str| (ak == "LTAI5tRoundTrip").then(|| client().secret);
    let now = datetime!(2026-11-23 14:58:52 UTC);
    let own = [
        ("KeyId", "alias/my-app"),
        ("EncryptionContext", AWKWARD),
        ("Format", "JSON"),
        ("Empty", ""),
    ];
    for method in ["GET", "POST"] {
        let request = RpcRequest {
            method,
            action: "Encrypt",
            version: "2016-01-20",
            params: &own,
            nonce: "n-1",
        };
        let signed = sign_rpc(&credential, &request, now).unwrap();
        let encoded = encode_parameters(signed.iter().map(|(k, v)| (k, v)));
        let form = [(
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        )];
        let in_query = format!("/?{encoded}");
        let plus_for_space = in_query.replace("%20", "+");
        for (target, headers, body) in [
            (in_query.as_str(), &[][..], ""),
            (plus_for_space.as_str(), &[][..], ""),
            ("/", &form[..], encoded.as_str()),
        ] {
            let parts = RequestParts {
                method,
                target,
                headers,
                body: body.as_bytes(),
            };
            let verified = Verifier::new()
                .verify(&parts, lookup, now)
                .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
            assert_eq!(verified.algorithm, Algorithm::RpcHmacSha1);
            assert_eq!(verified.action.as_deref(), Some("Encrypt"));
            assert_eq!(verified.nonce, "n-1");
            assert_eq!(
                api_parameters(&parts).unwrap()["EncryptionContext"],
                AWKWARD
            );
        }
        // The method is signed.
        let other = if method == "GET" { "POST" } else { "GET" };
        let target = format!("/?{encoded}");
        let parts = RequestParts {
            method: other,
            target: &target,
            headers: &[],
            body: b"",
        };
        assert_eq!(
            Verifier::new().verify(&parts, lookup, now),
            Err(AcsSignatureError::SignatureMismatch)
        );
    }
    let repeated = [("Action", "Decrypt")];
    let request = RpcRequest {
        method: "GET",
        action: "Encrypt",
        version: "2016-01-20",
        params: &repeated,
        nonce: "n",
    };
    assert!(matches!(
        sign_rpc(&credential, &request, now),
        Err(AcsSignatureError::InvalidSigningRequest(_))
    ));
}

#[test]
fn errors_are_printable_and_never_leak_the_secret() {
    let (vectors, cases) = load();
    for case in &cases {
        let mut changed = case.clone();
        changed.body.push(b'x');
        let error = verify(&vectors, &changed).unwrap_err();
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{text}");
            assert!(!text.contains(&vectors.access_key_secret), "{text}");
        }
    }
    assert!(!format!("{:?}", client()).contains("RoundTripSecret"));
}
