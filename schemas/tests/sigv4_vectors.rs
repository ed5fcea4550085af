//! SigV4 against requests captured from curl 7.88 `--aws-sigv4` (`shared/vectors/xki-sigv4.json`):
//! each verifies as captured, and each single-byte change to a signed part is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::cell::RefCell;

use schemas::http::{Credential, RequestParts, Secret};
use schemas::sigv4::{SigV4Error, Signer, Verifier};
use serde::Deserialize;
use time::{Duration, OffsetDateTime, PrimitiveDateTime};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/xki-sigv4.json"
);

#[derive(Deserialize)]
struct Vectors {
    access_key_id: String,
    secret_access_key: String,
    requests: Vec<VectorRequest>,
}

#[derive(Deserialize)]
struct VectorRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body_base64: String,
    region: String,
}

/// One captured request, owned so that a test can change any part of it.
#[derive(Clone)]
struct Case {
    name: String,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    region: String,
    /// The clock the verifier reads: the request's own x-amz-date unless a test moves it.
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

    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{}: no header {name}", self.name))
    }

    fn set_header(&mut self, name: &str, value: &str) {
        let slot = self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .unwrap_or_else(|| panic!("{}: no header {name}", self.name));
        slot.1 = value.to_owned();
    }

    fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

fn load() -> (Vectors, Vec<Case>) {
    let text = std::fs::read_to_string(VECTORS)
        .unwrap_or_else(|e| panic!("cannot read the SigV4 vectors at {VECTORS}: {e}"));
    let vectors: Vectors = serde_json::from_str(&text).expect("xki-sigv4.json does not parse");
    assert_eq!(
        vectors.requests.len(),
        3,
        "expected the 3 captured curl requests"
    );
    let amz_date = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let cases = vectors
        .requests
        .iter()
        .map(|r| {
            let mut case = Case {
                name: format!("{} {}", r.method, r.target),
                method: r.method.clone(),
                target: r.target.clone(),
                headers: r.headers.clone(),
                body: schemas::b64::decode(&r.body_base64).expect("body_base64"),
                region: r.region.clone(),
                now: OffsetDateTime::UNIX_EPOCH,
            };
            case.now = PrimitiveDateTime::parse(case.header("x-amz-date"), amz_date)
                .expect("x-amz-date")
                .assume_utc();
            case
        })
        .collect();
    (vectors, cases)
}

fn lookup(vectors: &Vectors) -> impl Fn(&str) -> Option<Secret> + '_ {
    |access_key_id| {
        (access_key_id == vectors.access_key_id).then(|| Secret::new(&*vectors.secret_access_key))
    }
}

fn verify(vectors: &Vectors, case: &Case) -> Result<schemas::sigv4::Verified, SigV4Error> {
    Verifier::new([case.region.as_str()]).verify(&case.parts(), lookup(vectors), case.now)
}

/// Replaces the byte at `index` of `text` with a different character of the same class.
fn change_byte(text: &str, index: usize) -> String {
    let mut bytes = text.as_bytes().to_vec();
    bytes[index] = match bytes[index] {
        b'0'..=b'8' | b'a'..=b'y' | b'A'..=b'Y' => bytes[index] + 1,
        b'9' => b'0',
        b'z' => b'a',
        b'Z' => b'A',
        other => panic!(
            "test wants to change {:?} at {index} of {text:?}",
            char::from(other)
        ),
    };
    String::from_utf8(bytes).expect("ascii")
}

fn assert_mismatch(vectors: &Vectors, case: &Case, what: &str) {
    assert_eq!(
        verify(vectors, case),
        Err(SigV4Error::SignatureMismatch),
        "{}: changing {what} must break the signature",
        case.name
    );
}

#[test]
fn captured_requests_verify() {
    let (vectors, cases) = load();
    for case in &cases {
        let verified = verify(&vectors, case)
            .unwrap_or_else(|e| panic!("{}: captured request refused: {e}", case.name));
        assert_eq!(verified.access_key_id, vectors.access_key_id);
        assert_eq!(verified.region, case.region);
        assert_eq!(verified.service, "kms-xks-proxy");
        assert_eq!(verified.request_time, case.now);
        assert_eq!(
            verified.signed_headers,
            ["content-type", "host", "x-amz-date"]
        );
    }
}

#[test]
fn unsigned_headers_may_change() {
    let (vectors, cases) = load();
    for mut case in cases {
        case.set_header("user-agent", "something/else");
        case.set_header("accept", "application/json");
        case.headers
            .push(("X-Forwarded-For".to_owned(), "10.0.0.1".to_owned()));
        assert!(
            verify(&vectors, &case).is_ok(),
            "{}: unsigned headers are not covered",
            case.name
        );
    }
}

#[test]
fn one_byte_of_the_path_breaks_the_signature() {
    let (vectors, cases) = load();
    for case in &cases {
        // Both ends and the middle of the path.
        for index in [1, case.target.len() / 2, case.target.len() - 1] {
            let mut changed = case.clone();
            changed.target = change_byte(&case.target, index);
            assert_mismatch(&vectors, &changed, &format!("path byte {index}"));
        }
    }
}

#[test]
fn one_byte_of_each_signed_header_breaks_the_signature() {
    let (vectors, cases) = load();
    for case in &cases {
        let mut changed = case.clone();
        changed.set_header("content-type", "application/jsoo");
        assert_mismatch(&vectors, &changed, "content-type");

        let mut changed = case.clone();
        changed.set_header("host", "127.0.0.1:18998");
        assert_mismatch(&vectors, &changed, "host");

        // Move the clock with the date, so that the skew check is not what refuses it.
        let mut changed = case.clone();
        changed.set_header("x-amz-date", "20261123T145901Z");
        changed.now = case.now + Duration::seconds(1);
        assert_mismatch(&vectors, &changed, "x-amz-date");
    }
}

#[test]
fn one_byte_of_the_body_breaks_the_signature() {
    let (vectors, cases) = load();
    for case in &cases {
        for index in [0, case.body.len() / 2, case.body.len() - 1] {
            let mut changed = case.clone();
            changed.body[index] ^= 0x01;
            assert_mismatch(&vectors, &changed, &format!("body byte {index}"));
        }
        let mut longer = case.clone();
        longer.body.push(b' ');
        assert_mismatch(&vectors, &longer, "a trailing body byte");
    }
}

#[test]
fn one_byte_of_the_secret_breaks_the_signature() {
    let (vectors, cases) = load();
    let wrong_secret = change_byte(&vectors.secret_access_key, 0);
    let wrong = |ak: &str| (ak == vectors.access_key_id).then(|| Secret::new(&*wrong_secret));
    for case in &cases {
        let result = Verifier::new([case.region.as_str()]).verify(&case.parts(), wrong, case.now);
        assert_eq!(
            result,
            Err(SigV4Error::SignatureMismatch),
            "{}: wrong secret accepted",
            case.name
        );
    }
}

#[test]
fn host_and_date_must_be_signed() {
    let (vectors, cases) = load();
    for case in &cases {
        for (list, required) in [
            ("content-type;x-amz-date", "host"),
            ("content-type;host", "x-amz-date"),
        ] {
            let mut changed = case.clone();
            let authorization = case.header("authorization").replace(
                "SignedHeaders=content-type;host;x-amz-date",
                &format!("SignedHeaders={list}"),
            );
            changed.set_header("authorization", &authorization);
            assert_eq!(
                verify(&vectors, &changed),
                Err(SigV4Error::RequiredHeaderNotSigned(required)),
                "{}: {required} left out of SignedHeaders must be refused",
                case.name
            );
        }
    }
}

#[test]
fn signed_header_missing_from_request_is_refused() {
    let (vectors, cases) = load();
    let mut case = cases[0].clone();
    case.remove_header("content-type");
    assert_eq!(
        verify(&vectors, &case),
        Err(SigV4Error::MissingSignedHeader("content-type".into()))
    );
    let mut case = cases[0].clone();
    case.remove_header("authorization");
    assert_eq!(
        verify(&vectors, &case),
        Err(SigV4Error::MissingAuthorization)
    );
    let mut case = cases[0].clone();
    case.headers
        .push(("x-amz-date".into(), "20261123T145900Z".into()));
    assert_eq!(
        verify(&vectors, &case),
        Err(SigV4Error::MalformedDate),
        "a repeated date is ambiguous"
    );
}

#[test]
fn clock_skew_window_is_five_minutes_either_way() {
    let (vectors, cases) = load();
    for case in &cases {
        for minutes in [-6i64, 6] {
            let mut moved = case.clone();
            moved.now = case.now + Duration::minutes(minutes);
            assert!(
                matches!(verify(&vectors, &moved), Err(SigV4Error::ClockSkew { .. })),
                "{}: server clock {minutes:+} min from the request must be refused",
                case.name
            );
        }
        for seconds in [-300i64, -240, 240, 300] {
            let mut moved = case.clone();
            moved.now = case.now + Duration::seconds(seconds);
            assert!(
                verify(&vectors, &moved).is_ok(),
                "{}: server clock {seconds:+} s from the request is within the window",
                case.name
            );
        }
    }
    // The window is configurable.
    let mut moved = cases[0].clone();
    moved.now += Duration::minutes(4);
    let strict = Verifier::new([moved.region.as_str()]).with_max_clock_skew(Duration::minutes(3));
    assert_eq!(
        strict.verify(&moved.parts(), lookup(&vectors), moved.now),
        Err(SigV4Error::ClockSkew { skew_seconds: -240 })
    );
}

#[test]
fn scope_is_checked() {
    let (vectors, cases) = load();
    for case in &cases {
        let other = Verifier::new(["us-west-2"]);
        assert_eq!(
            other.verify(&case.parts(), lookup(&vectors), case.now),
            Err(SigV4Error::RegionNotAllowed(case.region.clone())),
            "{}: region outside the allowed set",
            case.name
        );
        let other = Verifier::new([case.region.as_str()]).with_service("kms");
        assert_eq!(
            other.verify(&case.parts(), lookup(&vectors), case.now),
            Err(SigV4Error::WrongService("kms-xks-proxy".into()))
        );
    }
    // A date that moves to the next day no longer matches the credential scope.
    let mut next_day = cases[0].clone();
    next_day.set_header("x-amz-date", "20261124T145900Z");
    next_day.now += Duration::days(1);
    assert_eq!(
        verify(&vectors, &next_day),
        Err(SigV4Error::CredentialScopeMismatch)
    );
}

#[test]
fn unknown_access_key_is_refused() {
    let (vectors, cases) = load();
    let nobody = |_: &str| None::<Secret>;
    for case in &cases {
        let result = Verifier::new([case.region.as_str()]).verify(&case.parts(), nobody, case.now);
        assert_eq!(
            result,
            Err(SigV4Error::UnknownAccessKey(vectors.access_key_id.clone()))
        );
    }
}

#[test]
fn signer_reproduces_curl_and_round_trips() {
    let (vectors, cases) = load();
    for case in &cases {
        let credential = Credential::new(&*vectors.access_key_id, &*vectors.secret_access_key);
        let signer = Signer::new(credential, &*case.region, "kms-xks-proxy");
        let mut unsigned = case.clone();
        unsigned.remove_header("authorization");
        unsigned.remove_header("x-amz-date");
        let signed = signer
            .sign(&unsigned.parts(), &["content-type"], case.now)
            .unwrap();
        assert_eq!(signed.x_amz_date, case.header("x-amz-date"));
        assert_eq!(
            signed.authorization,
            case.header("authorization"),
            "{}: signer differs from curl",
            case.name
        );

        // KMS's own header set, host;x-amz-date, verifies too.
        let signed = signer.sign(&unsigned.parts(), &[], case.now).unwrap();
        unsigned
            .headers
            .push(("X-Amz-Date".into(), signed.x_amz_date));
        unsigned
            .headers
            .push(("Authorization".into(), signed.authorization));
        let verified = verify(&vectors, &unsigned).unwrap();
        assert_eq!(verified.signed_headers, ["host", "x-amz-date"]);
        unsigned.set_header("content-type", "text/plain");
        assert!(
            verify(&vectors, &unsigned).is_ok(),
            "content-type is not signed in this variant"
        );
    }
}

#[test]
fn signing_key_cache_follows_secret_changes() {
    let (vectors, cases) = load();
    let current = RefCell::new(vectors.secret_access_key.clone());
    let rotating =
        |ak: &str| (ak == vectors.access_key_id).then(|| Secret::new(current.borrow().clone()));
    // One verifier for every call: the second verify of the same scope hits the cache.
    let verifier = Verifier::new(["us-east-1", "eu-west-1"]);
    for case in &cases {
        assert!(
            verifier.verify(&case.parts(), rotating, case.now).is_ok(),
            "{}: first",
            case.name
        );
        assert!(
            verifier.verify(&case.parts(), rotating, case.now).is_ok(),
            "{}: cached",
            case.name
        );
    }
    *current.borrow_mut() = "AnotherSecretForTheSameAccessKeyId0123456789+/".to_owned();
    for case in &cases {
        assert_eq!(
            verifier.verify(&case.parts(), rotating, case.now),
            Err(SigV4Error::SignatureMismatch),
            "{}: a key derived from the old secret was served after the secret changed",
            case.name
        );
    }
    *current.borrow_mut() = vectors.secret_access_key.clone();
    assert!(
        verifier
            .verify(&cases[0].parts(), rotating, cases[0].now)
            .is_ok(),
        "back to the old secret"
    );
}

#[test]
fn errors_never_print_secrets_or_signatures() {
    let (vectors, cases) = load();
    let case = &cases[0];
    let signature = case
        .header("authorization")
        .rsplit('=')
        .next()
        .unwrap()
        .to_owned();
    let mut changed = case.clone();
    changed.body.push(b'x');
    let error = verify(&vectors, &changed).unwrap_err();
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(
            text.is_ascii()
                && !text.contains(&vectors.secret_access_key)
                && !text.contains(&signature),
            "{text}"
        );
    }
    let credential = Credential::new(&*vectors.access_key_id, &*vectors.secret_access_key);
    let printed = format!(
        "{:?}",
        Signer::new(credential, "us-east-1", "kms-xks-proxy")
    );
    assert!(!printed.contains(&vectors.secret_access_key), "{printed}");
}

/// `check_headers` (what a server runs before reading a body) accepts what `verify` accepts
/// and refuses, without the body, what `verify` refuses for a header or scope reason.
#[test]
fn header_checks_need_no_body_and_refuse_what_verify_refuses() {
    let (vectors, cases) = load();
    let check = |case: &Case, lookup: &dyn Fn(&str) -> Option<Secret>| {
        let parts = RequestParts {
            body: &[],
            ..case.parts()
        };
        Verifier::new([case.region.as_str()]).check_headers(&parts, lookup, case.now)
    };
    let known = lookup(&vectors);
    for case in &cases {
        assert_eq!(check(case, &known), Ok(()), "{}", case.name);
        assert_eq!(
            check(case, &|_| None),
            Err(SigV4Error::UnknownAccessKey(vectors.access_key_id.clone()))
        );
        let mut late = case.clone();
        late.now += Duration::minutes(6);
        assert!(matches!(
            check(&late, &known),
            Err(SigV4Error::ClockSkew { .. })
        ));
        let mut unsigned = case.clone();
        unsigned.remove_header("authorization");
        assert_eq!(
            check(&unsigned, &known),
            Err(SigV4Error::MissingAuthorization)
        );
        // A wrong body is for `verify` alone: the header checks cannot see it.
        let mut tampered = case.clone();
        tampered.body.push(b' ');
        assert_eq!(check(&tampered, &known), Ok(()));
        assert_mismatch(&vectors, &tampered, "the body");
    }
}
