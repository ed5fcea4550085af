//! A protocol-neutral view of an HTTP request, and the secret type request signatures use.
//!
//! Servers build a [`RequestParts`] from whatever framework they run on; the signature
//! verifiers ([`crate::sigv4`], [`crate::acs`]) only ever see this view.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// One request as received: nothing normalised, nothing decoded.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// The method, e.g. `POST`.
    pub method: &'a str,
    /// Raw path and optional `?query`, exactly as on the wire (origin form).
    pub target: &'a str,
    /// Headers as received: any case, possibly repeated. Over HTTP/2 the caller puts the
    /// `:authority` here as `host`.
    pub headers: &'a [(String, String)],
    /// The exact body bytes.
    pub body: &'a [u8],
}

impl<'a> RequestParts<'a> {
    /// The raw path: the target up to the first `?`.
    pub fn path(&self) -> &'a str {
        self.split_target().0
    }

    /// The raw query: what follows the first `?` (empty when there is none).
    pub fn query(&self) -> &'a str {
        self.split_target().1
    }

    /// `(path, query)`; the query is empty when the target has no `?`.
    pub fn split_target(&self) -> (&'a str, &'a str) {
        self.target.split_once('?').unwrap_or((self.target, ""))
    }

    /// Every value of the header `name` (compared case-insensitively), in order.
    pub fn header_values<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        let headers: &'a [(String, String)] = self.headers;
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name` when it occurs exactly once; `Err(count)` when it is absent (0) or
    /// repeated, so that callers can refuse ambiguous security-relevant headers.
    pub fn single_header(&self, name: &str) -> Result<&'a str, usize> {
        let mut values = self.header_values(name);
        match (values.next(), values.next()) {
            (Some(value), None) => Ok(value),
            (None, _) => Err(0),
            (Some(_), Some(_)) => Err(2 + values.count()),
        }
    }
}

/// A signing secret (SigV4 secret access key, Alibaba AccessKey secret).
///
/// `Debug` prints `[redacted]`; the memory is zeroed on drop.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Zeroizing::new(secret.into()))
    }

    /// The secret itself; keep the borrow short and never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Constant-time in the content (the length may show).
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Self::new(secret)
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Self::new(secret)
    }
}

/// An access key id and its secret, as a client holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The public half, sent with every request.
    pub access_key_id: String,
    /// The secret half.
    pub secret: Secret,
}

impl Credential {
    /// A credential pair.
    pub fn new(access_key_id: impl Into<String>, secret: impl Into<Secret>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret: secret.into(),
        }
    }
}

/// Where a verifier finds the secret of an access key id, asked once per request so that the
/// owner can hold several credentials per tenant and reload them at any time.
///
/// Any `Fn(&str) -> Option<Secret>` is one, so a closure (or a reference to one) will do:
/// `verifier.verify(&parts, |ak: &str| store.secret(ak), now)`.
pub trait CredentialLookup {
    /// The current secret of `access_key_id`, or `None` when the id is unknown.
    fn secret(&self, access_key_id: &str) -> Option<Secret>;
}

impl<F> CredentialLookup for F
where
    F: Fn(&str) -> Option<Secret>,
{
    fn secret(&self, access_key_id: &str) -> Option<Secret> {
        self(access_key_id)
    }
}

/// Characters RFC 3986 leaves unreserved: `A-Z a-z 0-9 - . _ ~`.
pub(crate) fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodes everything but the unreserved characters, with upper-case hex
/// (AWS `UriEncode`, Alibaba `percentEncode`: space → `%20`, `*` → `%2A`, `~` kept).
pub(crate) fn rfc3986_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len());
    for &byte in input {
        push_encoded(&mut out, byte, is_unreserved);
    }
    out
}

/// Pushes `byte` as-is when `keep` says so, else as `%XX` with upper-case hex.
pub(crate) fn push_encoded(out: &mut String, byte: u8, keep: impl Fn(u8) -> bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if keep(byte) {
        out.push(char::from(byte));
    } else {
        out.push('%');
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
}

/// Canonical form of a raw path for signing: unreserved characters, `/` and well-formed `%XX`
/// escapes are kept as sent (never decoded, so never double-decoded); any other byte is
/// percent-encoded. An empty path is `/`.
pub(crate) fn canonical_path(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_owned();
    }
    let bytes = raw_path.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let escape = byte == b'%'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        if escape {
            out.push_str(&raw_path[i..i + 3]);
            i += 3;
        } else {
            push_encoded(&mut out, byte, |b| is_unreserved(b) || b == b'/');
            i += 1;
        }
    }
    out
}

/// HMAC-SHA256 of `data` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Lower-case hex SHA-256 of `data`.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(target: &'a str, headers: &'a [(String, String)]) -> RequestParts<'a> {
        RequestParts {
            method: "POST",
            target,
            headers,
            body: b"",
        }
    }

    #[test]
    fn splits_target() {
        let p = parts("/a/b?x=1&y=2?z", &[]);
        assert_eq!(p.split_target(), ("/a/b", "x=1&y=2?z"));
        assert_eq!(parts("/a", &[]).split_target(), ("/a", ""));
        assert_eq!(parts("/?", &[]).query(), "");
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_counts_repeats() {
        let headers = vec![
            ("Host".to_owned(), "h".to_owned()),
            ("X-A".to_owned(), "1".to_owned()),
            ("x-a".to_owned(), "2".to_owned()),
        ];
        let p = parts("/", &headers);
        assert_eq!(p.single_header("host"), Ok("h"));
        assert_eq!(p.header_values("X-a").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(p.single_header("x-a"), Err(2));
        assert_eq!(p.single_header("missing"), Err(0));
    }

    #[test]
    fn secret_debug_is_redacted() {
        let credential = Credential::new("AK", "very-secret");
        let printed = format!("{credential:?}");
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(printed.contains("[redacted]"), "{printed}");
        assert_eq!(credential.secret.expose(), "very-secret");
        assert_eq!(credential.secret, Secret::from("very-secret"));
        assert_ne!(credential.secret, Secret::from("very-secreT"));
    }

    #[test]
    fn rfc3986_encoding() {
        assert_eq!(rfc3986_encode(b"a b+c*d~e/f"), "a%20b%2Bc%2Ad~e%2Ff");
        assert_eq!(rfc3986_encode("日".as_bytes()), "%E6%97%A5");
        assert_eq!(rfc3986_encode(b"AZaz09-._~"), "AZaz09-._~");
    }

    #[test]
    fn canonical_path_keeps_escapes_and_encodes_the_rest() {
        assert_eq!(canonical_path(""), "/");
        assert_eq!(
            canonical_path("/kms/xks/v1/keys/k-1_a.b~/encrypt"),
            "/kms/xks/v1/keys/k-1_a.b~/encrypt"
        );
        assert_eq!(canonical_path("/a%2Fb%2fc"), "/a%2Fb%2fc");
        assert_eq!(canonical_path("/a b*%zz"), "/a%20b%2A%25zz");
    }
}

/// The host names a server answers to, for signatures that sign the `host` header (ACS3,
/// SigV4): a request signed for another host (`evil.example`) is refused. An entry without a
/// port matches that name on any port; an entry with one matches exactly. Names compare
/// case-insensitively. Empty: every host is accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpectedHosts(Vec<String>);

impl ExpectedHosts {
    /// Checks and keeps the names; the error names the bad one.
    pub fn new<I, S>(names: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut hosts = Vec::new();
        for name in names {
            let name = name.as_ref();
            let ok = !name.is_empty()
                && name.len() <= 255
                && name.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                });
            if !ok {
                return Err(format!(
                    "{name:?} is not a host name, IP address or host:port"
                ));
            }
            hosts.push(name.to_ascii_lowercase());
        }
        Ok(Self(hosts))
    }

    /// Whether no restriction is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a request's `host` value is one of the names (always, when none is set).
    pub fn allows(&self, host: &str) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let host = host.to_ascii_lowercase();
        let name = strip_port(&host);
        self.0.iter().any(|expected| {
            *expected == host || (strip_port(expected) == expected && expected == name)
        })
    }
}

/// `host` without a trailing `:port` (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i)
            if !host[i..].contains(']') && (host.starts_with('[') || !host[..i].contains(':')) =>
        {
            &host[..i]
        }
        _ => host,
    }
}

#[cfg(test)]
mod host_tests {
    use super::*;

    #[test]
    fn expected_hosts() {
        let any = ExpectedHosts::default();
        assert!(any.allows("evil.example"));
        let hosts = ExpectedHosts::new(["kms.example.com", "127.0.0.1:8080", "[::1]"]).unwrap();
        for ok in [
            "kms.example.com",
            "KMS.example.com:443",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:9",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "kms.example.com.evil",
            "127.0.0.1",
            "127.0.0.1:8081",
            "",
            "[::2]",
        ] {
            assert!(!hosts.allows(bad), "{bad}");
        }
        assert!(ExpectedHosts::new(["a b"]).is_err());
        assert!(ExpectedHosts::new([""]).is_err());
    }
}
